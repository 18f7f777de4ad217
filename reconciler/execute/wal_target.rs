//! The WAL a refresh replays through: the primary's current segment is closed as
//! the refresh starts (beside the recovery or the catch-up's checks), and every
//! segment up to it is fetched into the volume's `pg_wal`.
//!
//! barman's own `switch-wal --archive` waits for *any* new segment when the
//! primary wrote nothing since its last switch, its whole timeout on an idle
//! primary, and its streaming archiver keeps the newest complete segment back in
//! `streaming/` until WAL of the next one arrives (barman-facts P1). `get-wal`
//! serves segments from `streaming/` as well as from the archive, so: switch
//! without `--archive`, and when fetching, wait only when a segment was closed
//! and barman cannot serve it yet (by then it normally can: the recovery or the
//! catch-up's preparation ran meanwhile). A gap before the closed segment fails
//! the step, rather than marking fresh a volume that misses writes.
//!
//! It carries out; it decides nothing about which refresh to run.

use std::path::Path;
use std::time::Duration;

use super::{ExecuteError, barman_view};
use crate::drivers::Drivers;
use crate::drivers::command::RunAs;
use crate::drivers::pause::pause_point;
use crate::drivers::wal_segment::Segment;
use crate::spec::BackupPipeline;

/// How long a refresh waits for barman to receive the segment the switch closed.
/// A closed segment is complete on the primary: pg_receivewal normally has it
/// within a second; longer means streaming lags or is down, and the refresh goes
/// on with what barman has.
pub const CLOSED_SEGMENT_WAIT: Duration = Duration::from_secs(30);

/// How often the wait asks barman.
const POLL: Duration = Duration::from_millis(100);

/// How many names one `get-wal --peek` asks for; more are asked until fewer come.
const PEEK_BATCH: u32 = 256;

/// Closes the primary's current segment: the segment a refresh must replay
/// through, or `None` when there was nothing to close (an idle primary: nothing
/// to wait for) or the switch failed (said in the log; the refresh replays what
/// barman holds, still consistent). Does not wait for barman to receive it:
/// [`fetch_segments`] does, only if it must.
pub(super) async fn close_current_segment(
    pipeline: &BackupPipeline,
    drivers: &Drivers,
) -> Option<Segment> {
    match drivers.barman.switch_wal(&pipeline.spec.barman).await {
        Ok(Some(name)) => Segment::parse(&name),
        Ok(None) => {
            tracing::debug!("no WAL written since the last switch: nothing to wait for");
            None
        }
        Err(e) => {
            tracing::warn!(error = %crate::errors::error_chain(&e), "could not close the current WAL segment; the refresh replays what barman holds");
            None
        }
    }
}

/// Fetches every segment barman holds after `after` on its timeline, in order,
/// into `pg_wal` (each whole: fetched into a staging directory, then renamed),
/// and returns them. With a `target` (the segment the switch closed), it asks
/// nothing when `after` already reaches it, and otherwise waits up to
/// [`CLOSED_SEGMENT_WAIT`] for barman to receive the segments up to it: a
/// segment missing before one barman holds is a gap and fails the step; the
/// target itself still missing means streaming lags, said in the log, and the
/// refresh replays what barman has. `pause` names the pause point after each
/// segment.
pub(super) async fn fetch_segments(
    pipeline: &BackupPipeline,
    path: &Path,
    after: Segment,
    target: Option<Segment>,
    owner: RunAs,
    drivers: &Drivers,
    pause: &'static str,
) -> Result<Vec<Segment>, ExecuteError> {
    #[cfg(not(feature = "failpoints"))]
    let _ = pause;
    // A target on another timeline says nothing about this one.
    let target = target.filter(|t| t.timeline == after.timeline);
    if target.is_some_and(|t| after >= t) {
        return Ok(Vec::new());
    }
    let volume = &pipeline.spec.recovered_volume;
    let barman = &pipeline.spec.barman;
    let staging = drivers.volume.prepare_wal_fetch(path, owner).await?;
    let destination = barman_view(volume, path, &staging);
    let mut fetched = Vec::new();
    let mut next = after.next();
    let started = tokio::time::Instant::now();
    loop {
        let names = drivers
            .barman
            .list_wal(barman, &next.to_string(), PEEK_BATCH)
            .await?;
        let batch: Vec<Segment> = names
            .iter()
            .filter_map(|n| Segment::parse(n))
            // --peek lists consecutive names from `next`; anything else is not ours.
            .take_while(|s| s.timeline == after.timeline)
            .collect();
        for segment in &batch {
            let name = segment.to_string();
            drivers
                .barman
                .fetch_wal(barman, &name, &destination)
                .await?;
            drivers.volume.install_segment(path, &name, owner).await?;
            fetched.push(*segment);
            pause_point!(pause, &drivers.cancel);
        }
        if let Some(last) = batch.last() {
            next = last.next();
            if batch.len() as u32 >= PEEK_BATCH {
                continue;
            }
        }
        let through = fetched.last().copied().unwrap_or(after);
        let Some(target) = target.filter(|t| *t > through) else {
            break;
        };
        if started.elapsed() >= CLOSED_SEGMENT_WAIT {
            let name = target.to_string();
            if drivers
                .barman
                .list_wal(barman, &name, 1)
                .await?
                .contains(&name)
            {
                return Err(ExecuteError::WalGap {
                    missing: through.next().to_string(),
                    closed: name,
                });
            }
            tracing::warn!(segment = %name, waited_s = CLOSED_SEGMENT_WAIT.as_secs(), through = %through, "barman has not received the segment the switch closed; the refresh replays what barman holds (is WAL streaming?)");
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            // The step's next part (the replay) notices the shutdown.
            _ = drivers.cancel.cancelled() => break,
        }
    }
    drivers.volume.finish_wal_fetch(path).await?;
    Ok(fetched)
}
