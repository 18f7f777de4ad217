//! The steps a plan lists: what the executor may be asked to do, and the reason
//! the planner gives. A `BackupPipeline`'s steps ([`PipelineStep`]) and a
//! `RestoreTarget`'s ([`RestoreStep`]) are types apart, so a step can only reach
//! the executor of its own kind; [`Step`] is either, for what handles both
//! (reports, status, metrics). Plain data with its `Display`: no decision is made
//! here.

use serde::{Deserialize, Serialize};

use crate::observed::{StrayReplay, WritingProcess};

/// One step with the reason it is needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStep<S = Step> {
    /// What to do.
    pub step: S,
    /// Why.
    pub reason: String,
}

impl<S: Into<Step>> PlannedStep<S> {
    /// The same step, as a step of either kind.
    pub fn into_any(self) -> PlannedStep {
        PlannedStep {
            step: self.step.into(),
            reason: self.reason,
        }
    }
}

/// A step of either kind: the JSON of each (`{"action": …}`) names its kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Step {
    /// A `BackupPipeline`'s.
    Pipeline(PipelineStep),
    /// A `RestoreTarget`'s.
    Restore(RestoreStep),
}

impl From<PipelineStep> for Step {
    fn from(step: PipelineStep) -> Self {
        Step::Pipeline(step)
    }
}

impl From<RestoreStep> for Step {
    fn from(step: RestoreStep) -> Self {
        Step::Restore(step)
    }
}

impl PartialEq<PipelineStep> for Step {
    fn eq(&self, other: &PipelineStep) -> bool {
        matches!(self, Step::Pipeline(step) if step == other)
    }
}

impl PartialEq<RestoreStep> for Step {
    fn eq(&self, other: &RestoreStep) -> bool {
        matches!(self, Step::Restore(step) if step == other)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Pipeline(step) => step.fmt(f),
            Step::Restore(step) => step.fmt(f),
        }
    }
}

/// An action the executor can carry out on a `BackupPipeline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum PipelineStep {
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
    /// Invalidate the marker, fetch the WAL archived after `after_segment` into the
    /// volume, replay it as a standby, stop, write the marker: the volume stays
    /// recovered from `backup_id` and costs only what changed.
    CatchUpVolume {
        /// The backup the volume was recovered from (and still is).
        #[serde(rename = "backupId")]
        backup_id: String,
        /// The newest segment the volume replayed; the catch-up starts after it.
        #[serde(rename = "afterSegment")]
        after_segment: String,
        /// The timeline the volume replayed on.
        timeline: u32,
    },
    /// Stop a replay postgres an interrupted run left on the volume (fast shutdown).
    StopStrayReplay {
        /// The process or container.
        #[serde(flatten)]
        replay: StrayReplay,
    },
    /// Stop a process a killed reconciler left writing into the volume or the
    /// starport: SIGTERM, SIGKILL after a grace period, to that pid only while it
    /// has the same start time.
    StopOrphan {
        /// The process.
        process: WritingProcess,
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
}

/// An action the executor can carry out on a `RestoreTarget`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum RestoreStep {
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

impl std::fmt::Display for PipelineStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PipelineStep::TakeBaseBackup => write!(f, "take a base backup"),
            PipelineStep::DeleteBackup { backup_id } => write!(f, "delete backup {backup_id}"),
            PipelineStep::RecoverVolume { backup } => {
                write!(f, "recover {backup} into the volume and replay WAL")
            }
            PipelineStep::CatchUpVolume {
                backup_id,
                after_segment,
                ..
            } => write!(
                f,
                "catch up the volume recovered from backup {backup_id}: replay the WAL archived after {after_segment}"
            ),
            PipelineStep::SyncStarport { generation } => {
                write!(f, "sync the starport copy to {generation}")
            }
            PipelineStep::StopStrayReplay { replay } => {
                write!(f, "stop the stray replay postgres ({replay})")
            }
            PipelineStep::StopOrphan { process } => {
                write!(f, "stop the orphaned {process}")
            }
            PipelineStep::RunBarmanCron => write!(f, "run barman cron"),
            PipelineStep::SyncMirror { mirror, generation } => {
                write!(f, "sync mirror {mirror} to generation {generation}")
            }
            PipelineStep::ResetReplicationSlot => write!(f, "reset the replication slot"),
        }
    }
}

impl std::fmt::Display for RestoreStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreStep::RestoreVolume {
                generation,
                stop_consumers,
            } => {
                write!(f, "restore generation {generation} into the volume")?;
                if !stop_consumers.is_empty() {
                    write!(f, " (stopping {} meanwhile)", stop_consumers.join(", "))?;
                }
                Ok(())
            }
            RestoreStep::StartConsumers { containers } if containers.is_empty() => {
                write!(f, "forget the consumers recorded as stopped")
            }
            RestoreStep::StartConsumers { containers } => {
                write!(f, "start {} again", containers.join(", "))
            }
        }
    }
}

/// Which backup a recovery uses: an existing one, or the one an earlier step of
/// the same plan takes. The same idea as [`GenerationRef`], kept a type of its
/// own: their JSON differs in the field (`id`, `generation`) and in the word for
/// the earlier step's result (`newBackup`, `fromRecovery`), which status files and
/// `diff --output json` readers already depend on.
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

/// Which volume generation a sync copies: the volume's, or the one an earlier
/// recovery step of the same plan produces (see [`BackupRef`] for why the two
/// are apart).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_of_either_kind_reads_back_as_its_kind_with_the_same_json() {
        let cases: [(Step, &str); 3] = [
            (
                PipelineStep::RecoverVolume {
                    backup: BackupRef::Existing("20261124T100000".to_string()),
                }
                .into(),
                r#"{"action":"recoverVolume","backup":{"kind":"existing","id":"20261124T100000"}}"#,
            ),
            (
                PipelineStep::TakeBaseBackup.into(),
                r#"{"action":"takeBaseBackup"}"#,
            ),
            (
                RestoreStep::StartConsumers {
                    containers: vec!["web".to_string()],
                }
                .into(),
                r#"{"action":"startConsumers","containers":["web"]}"#,
            ),
        ];
        for (step, json) in cases {
            assert_eq!(serde_json::to_string(&step).unwrap(), json);
            assert_eq!(serde_json::from_str::<Step>(json).unwrap(), step);
        }
    }
}
