//! Observed state of a restore target: its starport source, its volume and the
//! containers that use it. Plain data, filled through the drivers by
//! [`crate::observe::observe_restore`]; what could not be seen is recorded with
//! the reason.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Observation, StarportMetadata, StarportState};

/// Everything observed about one restore target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreObserved {
    /// The starport copy restored from: its metadata.
    pub source: Observation<StarportState>,
    /// The volume restored into.
    pub volume: Observation<RestoreVolumeState>,
    /// Each container listed as a consumer, in spec order, then any other the
    /// volume's marker records as stopped by a restore.
    pub consumers: Observation<Vec<ConsumerState>>,
}

/// The volume a restore target restores into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum RestoreVolumeState {
    /// The directory or Docker volume does not exist.
    Missing,
    /// It exists.
    Present {
        /// Its marker; `None` when there is none or it cannot be read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        marker: Option<RestoreMarker>,
        /// Why there is no usable marker.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        no_marker_reason: Option<String>,
        /// It holds files that are not a PostgreSQL data directory: never overwritten.
        foreign: bool,
        /// Running containers that mount it (a Docker volume), listed or not.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        used_by: Vec<String>,
        /// A postgres on this host runs on it (`postmaster.pid` names a live process).
        postmaster_running: bool,
    },
}

/// `<volume>/.reconciler-restore.json`. While a restore runs it says `restoring`
/// (the data is not to be trusted); only once the copy is complete does it say
/// `restored`. It also remembers the consumers a restore stopped, so that they are
/// started again even if the reconciler was interrupted in between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreMarker {
    /// Whether the data is complete.
    pub state: RestoreState,
    /// The starport generation restored (or being restored).
    pub generation: String,
    /// When the backup host recovered that generation, when its metadata says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_at: Option<Timestamp>,
    /// When the restore finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_at: Option<Timestamp>,
    /// Containers a restore stopped that are still to be started again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers_to_start: Vec<String>,
    /// The restore target that wrote it.
    pub target: String,
}

/// Whether a restored volume's data is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RestoreState {
    /// A restore started and has not finished: the data is not to be used.
    Restoring,
    /// The data is a complete copy of `generation`.
    Restored,
}

/// A consumer container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerState {
    /// Its name.
    pub container: String,
    /// Its state as the engine reports it (`running`, `exited`, …); `None` when no
    /// such container exists.
    pub state: Option<String>,
}

impl ConsumerState {
    /// True while it runs (or is about to: restarting, paused).
    pub fn is_running(&self) -> bool {
        matches!(
            self.state.as_deref(),
            Some("running" | "restarting" | "paused")
        )
    }
}

impl StarportMetadata {
    /// What identifies the copy: the generation the reconciler records, or for a
    /// copy bb8 wrote, its `last_backup` time.
    pub fn generation_key(&self) -> String {
        self.generation
            .clone()
            .unwrap_or_else(|| self.last_backup.clone())
    }

    /// How old the copied data is: when its volume was recovered, else when the copy
    /// was made.
    pub fn data_time(&self) -> Option<Timestamp> {
        self.recovered_at.or_else(|| self.last_backup.parse().ok())
    }
}
