//! The catch-up refresh of the recovered volume: the volume, left as a standby at
//! rest by its last refresh, replays only the WAL barman archived since.
//!
//! A fixed sequence whose order is the safety argument: the marker goes first;
//! each segment lands in `pg_wal` whole (fetched into a staging directory, then
//! renamed); postgres replays as a standby (`standby.signal` present) and stops in
//! recovery; `standby.signal` goes; the marker is written last. Whatever stops it
//! halfway leaves the volume unmarked, so the next plan recovers it in full. It
//! decides nothing: the planner chose the catch-up from the marker and the catalogue.

use jiff::Timestamp;

use super::rest_as_standby::{Pauses, replay_and_mark};
use super::wal_target::close_current_segment;
use super::{ExecuteError, StepDetail};
use crate::drivers::Drivers;
use crate::drivers::pause::pause_point;
use crate::drivers::placement::Placement;
use crate::drivers::wal_segment::{Segment, history_file};
use crate::observed::{Observed, VolumeState};
use crate::spec::BackupPipeline;

/// Carries out `CatchUpVolume`.
pub(super) async fn catch_up_volume(
    pipeline: &BackupPipeline,
    backup_id: &str,
    after_segment: &str,
    timeline: u32,
    observed: &Observed,
    drivers: &Drivers,
    clock: &(dyn Fn() -> Timestamp + Send + Sync),
) -> Result<StepDetail, ExecuteError> {
    let volume = &pipeline.spec.recovered_volume;
    let barman = &pipeline.spec.barman;
    let after = Segment::parse(after_segment)
        .filter(|s| s.timeline == timeline)
        .ok_or_else(|| {
            ExecuteError::Changed(format!(
                "the marker's segment {after_segment} is not a WAL segment of timeline {timeline}"
            ))
        })?;
    let owner = drivers
        .barman
        .account(barman, volume.owner.as_str())
        .await?;
    // As for a full recovery: the newest segment then ends with a WAL switch,
    // where the replay below can tell it is done. Closed beside the checks and
    // the invalidation, not before them: it is needed only when fetching.
    let (target, prepared) = tokio::join!(close_current_segment(pipeline, drivers), async {
        let path = drivers
            .volume
            .locate(volume)
            .await?
            .ok_or_else(|| ExecuteError::Changed("the volume is gone".into()))?;
        // Checked again here, not only at observation: a consumer may have started since.
        match drivers
            .volume
            .inspect(volume, &Placement::of_barman(barman).containers())
            .await?
        {
            VolumeState::Marked {
                marker,
                in_use: false,
                users,
            } if users.is_empty() && marker.backup_id == backup_id => {}
            _ => {
                return Err(ExecuteError::Changed(format!(
                    "the volume no longer holds backup {backup_id} unused and marked"
                )));
            }
        }
        // The marker goes first: from here until the end the data is not to be used.
        drivers.volume.invalidate_marker(&path).await?;
        pause_point!("catchup:invalidated", &drivers.cancel);
        // A new timeline (a promoted primary) forks history after some point of
        // ours: the volume cannot follow it, only a full recovery can.
        if !drivers
            .barman
            .list_wal(barman, &history_file(timeline + 1), 1)
            .await?
            .is_empty()
        {
            return Err(ExecuteError::TimelineChanged {
                timeline,
                next: timeline + 1,
            });
        }
        Ok(path)
    });
    let path = prepared?;
    let path = path.as_path();
    let rested = replay_and_mark(
        pipeline,
        backup_id,
        path,
        after,
        target,
        owner,
        observed,
        drivers,
        clock,
        Pauses {
            fetching: "catchup:fetching",
            stopped: "catchup:stopped",
        },
    )
    .await?;
    Ok(format!(
        "caught up backup {backup_id}: fetched {} WAL segments ({} bytes) after {after}, replayed through {} to {}, generation {}",
        rested.fetched.len(),
        rested.fetched.len() as u64 * crate::drivers::wal_segment::SEGMENT_BYTES,
        rested.through,
        rested.replayed_to_lsn,
        rested.generation
    ))
}
