//! Observed state: plain-data snapshots of barman, the recovered volume, the
//! starport and its mirrors, and of restore targets, taken once per pass.
//!
//! The types here hold no handles, do no I/O and import no driver: drivers return
//! them, [`crate::observe`] assembles them, the planner reads them. Whatever could
//! not be observed is recorded as [`Observation::Unavailable`] with the reason,
//! never guessed: the planner then reports the matching condition as `Unknown`
//! and waits rather than act blind. "Absent" (no marker, no starport copy) is
//! ordinary data, not an error.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

mod orphans;
mod restore;

pub use orphans::{StartedBy, WriteArea, WritingProcess};

pub use restore::{
    ConsumerState, RestoreMarker, RestoreObserved, RestoreState, RestoreVolumeState,
};

/// A fact that was either observed or could not be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "observation", rename_all = "camelCase")]
pub enum Observation<T> {
    /// The fact.
    Observed {
        /// Its value.
        value: T,
    },
    /// It could not be observed.
    Unavailable {
        /// Why, for the operator.
        reason: String,
    },
}

impl<T> Observation<T> {
    /// The value, when observed.
    pub fn value(&self) -> Option<&T> {
        match self {
            Observation::Observed { value } => Some(value),
            Observation::Unavailable { .. } => None,
        }
    }

    /// Wraps an observed value.
    pub fn observed(value: T) -> Self {
        Observation::Observed { value }
    }

    /// Records why a fact could not be observed, with the whole error chain.
    pub fn unavailable(error: &(dyn std::error::Error + 'static)) -> Self {
        Observation::Unavailable {
            reason: crate::errors::error_chain(error),
        }
    }
}

/// Everything observed about one pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// barman's catalogue of backups for the pipeline's server.
    pub barman: Observation<BarmanState>,
    /// The recovered volume.
    pub volume: Observation<VolumeState>,
    /// The starport copy, when the pipeline has one.
    pub starport: Option<Observation<StarportState>>,
    /// This host's identity (`/etc/machine-id`), which starport metadata records so
    /// two hosts never write one target.
    pub machine_id: Option<String>,
    /// WAL streaming as `barman check` sees it, when the pipeline watches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<Observation<WalHealth>>,
    /// Each mirror of the starport, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorObservation>,
    /// The base backup this reconciler itself took most recently for the
    /// pipeline, from its own journal (the current `apply`, or `run`'s memory):
    /// the one witness that can tell a backup just taken from one that only looks
    /// old because clocks disagree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_taken: Option<TakenBackup>,
    /// The live processes that write into the volume or the starport, from one
    /// scan per pass; `None` when nobody looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writers: Option<Observation<Vec<WritingProcess>>>,
}

/// A base backup this reconciler took, and when it ended by this host's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TakenBackup {
    /// barman's id of the backup.
    pub id: String,
    /// When `barman backup` returned, by this host's clock.
    pub finished_at: Timestamp,
}

/// What a mirror holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorObservation {
    /// The mirror's name.
    pub name: String,
    /// Its metadata, as for the starport.
    pub state: Observation<StarportState>,
}

/// The `barman -f json check` items that say whether WAL streams. `None` for an
/// item barman did not report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalHealth {
    /// `receive_wal_running`.
    pub receive_wal_running: Option<CheckItem>,
    /// `replication_slot`.
    pub replication_slot: Option<CheckItem>,
    /// `postgresql`: barman reaches the primary (when it does not, barman omits
    /// `postgresql_streaming`).
    pub postgresql: Option<CheckItem>,
    /// `postgresql_streaming`: the primary serves the replication connection.
    pub postgresql_streaming: Option<CheckItem>,
    /// `archiver_errors`.
    pub archiver_errors: Option<CheckItem>,
    /// `wal_maximum_age` (meaningful when barman's `last_wal_maximum_age` is set).
    pub wal_maximum_age: Option<CheckItem>,
}

/// One item of `barman check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckItem {
    /// `OK`.
    pub ok: bool,
    /// barman's hint, possibly empty.
    pub hint: String,
}

/// barman's view of the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct BarmanState {
    /// Every backup barman lists, in any order.
    pub backups: Vec<Backup>,
    /// Whether a `barman backup` is alive, looked at only when an entry is
    /// STARTED (a live backup and one killed mid-copy list alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<Observation<BackupActivity>>,
}

impl BarmanState {
    /// A catalogue with nothing known about running backups.
    pub fn new(backups: Vec<Backup>) -> Self {
        Self {
            backups,
            activity: None,
        }
    }
}

/// barman's own evidence that a base backup is running on a server: its per-server
/// backup lock (held for the whole of `barman backup`, released by the kernel when
/// the process dies) and the `pg_basebackup` that copies into a backup directory
/// (which can outlive a killed barman for a few seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupActivity {
    /// Some process holds `.<server>-backup.lock` in barman's lock directory.
    pub lock_held: bool,
    /// The backup ids a running `pg_basebackup` writes into.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copying: Vec<String>,
    /// The entries that were already STARTED in the catalogue read before the
    /// lock was looked at (the observed catalogue is read after it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub started_before: Vec<String>,
}

/// One entry of `barman list-backups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    /// barman's id, a local timestamp such as `20261123T183633`.
    pub id: String,
    /// Its status.
    pub status: BackupStatus,
    /// When it ended (DONE backups only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Timestamp>,
    /// Its size including the WAL it needs, in bytes (DONE backups only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

/// A backup's status as barman reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BackupStatus {
    /// Complete and usable.
    Done,
    /// Running now (or interrupted without barman noticing yet).
    Started,
    /// Copied, waiting for the WAL needed to make it consistent.
    WaitingForWals,
    /// Failed; it only makes `barman check` fail until deleted.
    Failed,
    /// Anything else barman may report (EMPTY, SYNCING, …): never used, never deleted.
    Other(String),
}

impl BackupStatus {
    /// Maps barman's status text.
    pub fn from_barman(text: &str) -> Self {
        match text {
            "DONE" => Self::Done,
            "STARTED" => Self::Started,
            "WAITING_FOR_WALS" => Self::WaitingForWals,
            "FAILED" => Self::Failed,
            other => Self::Other(other.to_string()),
        }
    }
}

/// The recovered volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "state",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum VolumeState {
    /// The directory does not exist.
    Missing,
    /// The directory exists but carries no valid marker: its data must not be used.
    Unmarked {
        /// Why the marker is not valid (absent, unreadable, corrupt).
        reason: String,
        /// Something can write to it: a container mounts it read-write, or a live
        /// postgres runs on it (`postmaster.pid`). Who is in `users`.
        #[serde(alias = "in_use")]
        in_use: bool,
        /// It holds files that are not a PostgreSQL data directory: never overwritten.
        #[serde(default)]
        foreign: bool,
        /// A replay postgres that an interrupted reconciler left running on it.
        #[serde(
            default,
            alias = "stray_replay",
            skip_serializing_if = "Option::is_none"
        )]
        stray_replay: Option<StrayReplay>,
        /// What uses it, read-only users included.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        users: Vec<VolumeUser>,
    },
    /// The directory carries a valid marker.
    Marked {
        /// The marker.
        marker: VolumeMarker,
        /// Something can write to it (see `Unmarked`); who is in `users`.
        #[serde(alias = "in_use")]
        in_use: bool,
        /// What uses it, read-only users included.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        users: Vec<VolumeUser>,
    },
}

/// Something that uses a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum VolumeUser {
    /// A running container that mounts it.
    Container {
        /// The container's name.
        name: String,
        /// Whether it mounts it read-write (else read-only: it cannot change the data).
        read_write: bool,
    },
    /// A live postgres that its `postmaster.pid` names.
    Postgres {
        /// The pid, when the file could be read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<i32>,
    },
}

impl VolumeUser {
    /// Whether it can change the data.
    pub fn can_write(&self) -> bool {
        match self {
            VolumeUser::Container { read_write, .. } => *read_write,
            VolumeUser::Postgres { .. } => true,
        }
    }

    /// Who it is: `container consumer-1`, `the postgres with pid 42`.
    pub fn subject(&self) -> String {
        match self {
            VolumeUser::Container { name, .. } => format!("container {name}"),
            VolumeUser::Postgres { pid: Some(pid) } => format!("the postgres with pid {pid}"),
            VolumeUser::Postgres { pid: None } => "the postgres".to_string(),
        }
    }

    /// What it does to the volume at `location`, in words: `container consumer-1
    /// mounts Docker volume X read-write`, `a postgres (pid 42) runs on /v
    /// (postmaster.pid)`.
    pub fn describe(&self, location: &dyn std::fmt::Display) -> String {
        match self {
            VolumeUser::Container { name, read_write } => format!(
                "container {name} mounts {location} {}",
                if *read_write {
                    "read-write"
                } else {
                    "read-only"
                }
            ),
            VolumeUser::Postgres { pid: Some(pid) } => {
                format!("a postgres (pid {pid}) runs on {location} (postmaster.pid)")
            }
            VolumeUser::Postgres { pid: None } => {
                format!("a postgres runs on {location} (postmaster.pid)")
            }
        }
    }
}

/// A replay an interrupted reconciler left running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StrayReplay {
    /// A postgres process on this host (its socket is in a `reconciler-replay-*`
    /// directory and it works in the volume).
    Process {
        /// Its pid.
        pid: i32,
    },
    /// A replay container (labelled as the reconciler's) that mounts the volume.
    Container {
        /// Its name.
        container: String,
    },
}

impl std::fmt::Display for StrayReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StrayReplay::Process { pid } => write!(f, "pid {pid}"),
            StrayReplay::Container { container } => write!(f, "container {container}"),
        }
    }
}

/// Written into the volume only after replay finished and postgres stopped cleanly;
/// removed before anything touches the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeMarker {
    /// Identifies this recovery; the starport copy records the generation it holds.
    pub generation: String,
    /// The barman backup that was recovered.
    pub backup_id: String,
    /// When that backup ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_end_time: Option<Timestamp>,
    /// When the recovery finished (replayed and cleanly stopped).
    pub recovered_at: Timestamp,
    /// The WAL position replay reached (`pg_current_wal_lsn()` once out of recovery).
    pub replayed_to_lsn: String,
    /// The checkpoint time pg_controldata reported after the clean stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_time: Option<String>,
    /// The pipeline that wrote it.
    pub pipeline: String,
    /// Where the volume stands as a standby at rest (`shut down in recovery`, no
    /// `standby.signal`), from which the next refresh can replay only new WAL.
    /// Absent in markers written before catch-up existed: those volumes were
    /// promoted and can only be recovered in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<StandbyPoint>,
}

/// How far a volume left as a standby at rest has replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StandbyPoint {
    /// The timeline it replayed on.
    pub timeline: u32,
    /// The newest WAL segment it replayed entirely (`000000010000000000000045`);
    /// a catch-up fetches the segments after it.
    pub last_segment: String,
}

/// The starport copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum StarportState {
    /// No usable metadata: the copy (if any) must not be trusted.
    NoMetadata {
        /// Why (absent, unreadable, corrupt).
        reason: String,
    },
    /// Metadata present.
    Synced {
        /// The metadata.
        metadata: StarportMetadata,
    },
}

/// `<root>/<target>/meta/metadata.json`: bb8's fields plus the generation copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StarportMetadata {
    /// When the copy finished (ISO-8601 with offset), as bb8 writes it.
    pub last_backup: String,
    /// The machine-id of the host that wrote it.
    #[serde(default)]
    pub instance_guid: Option<String>,
    /// The volume generation the copy holds (absent in bb8-written metadata).
    #[serde(default)]
    pub generation: Option<String>,
    /// The backup the copied volume was recovered from.
    #[serde(default)]
    pub backup_id: Option<String>,
    /// When the copied volume was recovered.
    #[serde(default)]
    pub recovered_at: Option<Timestamp>,
}
