//! The end both refreshes share, full recovery and catch-up alike: fetch the WAL
//! up to the segment the switch closed, replay it as a standby, stop it in
//! recovery, take `standby.signal` away, and only then write the marker.
//!
//! The caller has already invalidated the marker and put the data in place. It
//! carries out; it decides nothing about which refresh to run.

use std::path::Path;

use jiff::Timestamp;

use super::wal_target::fetch_segments;
use super::{ExecuteError, generation_id};
use crate::drivers::Drivers;
use crate::drivers::command::RunAs;
use crate::drivers::pause::pause_point;
use crate::drivers::wal_segment::Segment;
use crate::observed::{Observed, StandbyPoint, VolumeMarker};
use crate::spec::BackupPipeline;

/// The pause points of one kind of refresh.
pub(super) struct Pauses {
    /// After each fetched segment.
    pub fetching: &'static str,
    /// After the replay stopped, before the marker.
    pub stopped: &'static str,
}

/// What the refresh ended with, for its detail line.
pub(super) struct Rested {
    /// The segments fetched from barman.
    pub fetched: Vec<Segment>,
    /// The newest segment replayed.
    pub through: Segment,
    /// `pg_last_wal_replay_lsn()` at the end.
    pub replayed_to_lsn: String,
    /// The marker's generation.
    pub generation: String,
}

/// Fetches the segments after `after` (through `target`), replays through the
/// newest, stops in recovery and marks the volume at `path` as holding
/// `backup_id`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn replay_and_mark(
    pipeline: &BackupPipeline,
    backup_id: &str,
    path: &Path,
    after: Segment,
    target: Option<Segment>,
    owner: RunAs,
    observed: &Observed,
    drivers: &Drivers,
    clock: &(dyn Fn() -> Timestamp + Send + Sync),
    pauses: Pauses,
) -> Result<Rested, ExecuteError> {
    #[cfg(not(feature = "failpoints"))]
    let _ = pauses.stopped;
    let volume = &pipeline.spec.recovered_volume;
    let fetched = fetch_segments(
        pipeline,
        path,
        after,
        target,
        owner,
        drivers,
        pauses.fetching,
    )
    .await?;
    let through = fetched.last().copied().unwrap_or(after);
    // Replayed as a standby, not as crash recovery: a volume that once leaves
    // recovery writes WAL of its own (an end-of-recovery checkpoint) where the
    // primary wrote other WAL, and can never replay the primary's again
    // (refresh-facts: "invalid resource manager ID in primary checkpoint record",
    // then PANIC). Stopped in recovery, it can: the next refresh catches up.
    drivers.volume.set_standby_signal(path, true, owner).await?;
    let replayed = drivers
        .replay
        .replay(pipeline.name().as_str(), volume, path, owner, through)
        .await?;
    pause_point!(pauses.stopped, &drivers.cancel);
    // At rest without the signal: a copy of the volume starts as a primary.
    drivers
        .volume
        .set_standby_signal(path, false, owner)
        .await?;
    let recovered_at = clock();
    let backup_end_time = observed
        .barman
        .value()
        .and_then(|b| b.backups.iter().find(|b| b.id == backup_id))
        .and_then(|b| b.end_time);
    let marker = VolumeMarker {
        generation: generation_id(backup_id, recovered_at),
        backup_id: backup_id.to_string(),
        backup_end_time,
        recovered_at,
        replayed_to_lsn: replayed.replayed_to_lsn.clone(),
        checkpoint_time: replayed.checkpoint_time,
        pipeline: pipeline.name().to_string(),
        standby: Some(StandbyPoint {
            timeline: replayed.timeline.unwrap_or(through.timeline),
            last_segment: through.to_string(),
        }),
    };
    // Only now, replayed and stopped in recovery, does the volume become valid.
    drivers.volume.write_marker(path, &marker, owner).await?;
    Ok(Rested {
        fetched,
        through,
        replayed_to_lsn: replayed.replayed_to_lsn,
        generation: marker.generation,
    })
}
