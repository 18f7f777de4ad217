//! The steps a plan lists: what the executor may be asked to do, and the reason
//! the planner gives. Plain data with its `Display`: no decision is made here.

use serde::{Deserialize, Serialize};

use crate::observed::StrayReplay;

/// One step with the reason it is needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStep {
    /// What to do.
    pub step: Step,
    /// Why.
    pub reason: String,
}

/// An action the executor can carry out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Step {
    /// `barman backup --wait`.
    TakeBaseBackup,
    /// `barman delete` one backup.
    DeleteBackup {
        /// The backup.
        #[serde(rename = "backupId")]
        backup_id: String,
    },
    /// Invalidate the marker, `barman recover` into the volume, replay WAL, write the marker.
    RecoverVolume {
        /// The backup to recover.
        backup: BackupRef,
    },
    /// Stop a replay postgres an interrupted run left on the volume (fast shutdown).
    StopStrayReplay {
        /// The process or container.
        #[serde(flatten)]
        replay: StrayReplay,
    },
    /// Invalidate starport metadata, rsync the volume, write metadata.
    SyncStarport {
        /// The volume generation to copy.
        generation: GenerationRef,
    },
    /// `barman cron`: starts receive-wal when it is not running.
    RunBarmanCron,
    /// Drop and re-create the replication slot (only when the spec opts in).
    ResetReplicationSlot,
    /// Invalidate the mirror's metadata, rsync the starport copy to it over ssh,
    /// write its metadata.
    SyncMirror {
        /// The mirror.
        mirror: String,
        /// The starport generation to copy.
        generation: String,
    },
    /// Mark the restore target's volume `restoring`, stop the listed consumers,
    /// `rsync -a --delete` the starport copy into it, mark it `restored`.
    RestoreVolume {
        /// The starport generation to restore.
        generation: String,
        /// Running consumer containers to stop first (opted in by the spec).
        #[serde(
            rename = "stopConsumers",
            default,
            skip_serializing_if = "Vec::is_empty"
        )]
        stop_consumers: Vec<String>,
    },
    /// Start again the consumer containers a restore stopped, then clear the
    /// marker's record of them.
    StartConsumers {
        /// The containers to start (those that exist and are stopped).
        containers: Vec<String>,
    },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::TakeBaseBackup => write!(f, "take a base backup"),
            Step::DeleteBackup { backup_id } => write!(f, "delete backup {backup_id}"),
            Step::RecoverVolume { backup } => {
                write!(f, "recover {backup} into the volume and replay WAL")
            }
            Step::SyncStarport { generation } => {
                write!(f, "sync the starport copy to {generation}")
            }
            Step::StopStrayReplay { replay } => {
                write!(f, "stop the stray replay postgres ({replay})")
            }
            Step::RunBarmanCron => write!(f, "run barman cron"),
            Step::SyncMirror { mirror, generation } => {
                write!(f, "sync mirror {mirror} to generation {generation}")
            }
            Step::ResetReplicationSlot => write!(f, "reset the replication slot"),
            Step::RestoreVolume {
                generation,
                stop_consumers,
            } => {
                write!(f, "restore generation {generation} into the volume")?;
                if !stop_consumers.is_empty() {
                    write!(f, " (stopping {} meanwhile)", stop_consumers.join(", "))?;
                }
                Ok(())
            }
            Step::StartConsumers { containers } if containers.is_empty() => {
                write!(f, "forget the consumers recorded as stopped")
            }
            Step::StartConsumers { containers } => {
                write!(f, "start {} again", containers.join(", "))
            }
        }
    }
}

/// Which backup a recovery uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "camelCase")]
pub enum BackupRef {
    /// An existing DONE backup.
    Existing(String),
    /// The backup an earlier step of the same plan takes.
    NewBackup,
}

impl std::fmt::Display for BackupRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupRef::Existing(id) => write!(f, "backup {id}"),
            BackupRef::NewBackup => write!(f, "the new backup"),
        }
    }
}

/// Which volume generation a sync copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "generation", rename_all = "camelCase")]
pub enum GenerationRef {
    /// The generation the volume holds now.
    Existing(String),
    /// The generation an earlier recovery step of the same plan produces.
    FromRecovery,
}

impl std::fmt::Display for GenerationRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GenerationRef::Existing(g) => write!(f, "generation {g}"),
            GenerationRef::FromRecovery => write!(f, "the recovered generation"),
        }
    }
}
