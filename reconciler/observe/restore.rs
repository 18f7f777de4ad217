//! Observed state of a restore target: its starport source, its volume and the
//! containers that use it. Plain data, filled through the drivers by
//! [`observe_restore`]; what could not be seen is recorded with the reason.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Observation, StarportMetadata, StarportState};
use crate::drivers::Drivers;
use crate::spec::RestoreTarget;

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

/// Observes one restore target. Never fails: what can't be seen is recorded as
/// unavailable.
pub async fn observe_restore(target: &RestoreTarget, drivers: &Drivers) -> RestoreObserved {
    let _ = crate::drivers::pause::pause_point("observe", &drivers.cancel).await;
    let spec = &target.spec;
    let source = match drivers.restore_source.inspect(&spec.source).await {
        Ok(state) => Observation::observed(state),
        Err(e) => Observation::unavailable(&e),
    };
    let volume = match drivers.restore_volume.inspect(&spec.volume).await {
        Ok(state) => Observation::observed(state),
        Err(e) => Observation::unavailable(&e),
    };
    // The listed containers, and any a restore stopped and still owes a start even
    // if the spec no longer lists it: that debt outlives an edit of the spec.
    let mut names: Vec<String> = spec
        .consumers
        .containers
        .iter()
        .map(ToString::to_string)
        .collect();
    if let Observation::Observed {
        value:
            RestoreVolumeState::Present {
                marker: Some(marker),
                ..
            },
    } = &volume
    {
        for owed in &marker.consumers_to_start {
            if !names.contains(owed) {
                names.push(owed.clone());
            }
        }
    }
    let consumers = if names.is_empty() {
        Observation::observed(Vec::new())
    } else {
        let mut states = Vec::new();
        let mut failure = None;
        for container in &names {
            match drivers.consumers.state(container.as_str()).await {
                Ok(state) => states.push(ConsumerState {
                    container: container.to_string(),
                    state,
                }),
                Err(e) => {
                    failure = Some(Observation::unavailable(&e));
                    break;
                }
            }
        }
        failure.unwrap_or(Observation::observed(states))
    };
    RestoreObserved {
        source,
        volume,
        consumers,
    }
}
