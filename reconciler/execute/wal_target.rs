//! The WAL a refresh replays through: the primary's current segment is closed
//! just before, and every segment up to it is fetched into the volume's `pg_wal`.
//!
//! barman's own `switch-wal --archive` waits for *any* new segment when the
//! primary wrote nothing since its last switch, its whole timeout on an idle
//! primary, and its streaming archiver keeps the newest complete segment back in
//! `streaming/` until WAL of the next one arrives (barman-facts P1). `get-wal`
//! serves segments from `streaming/` as well as from the archive, so: switch
//! without `--archive`, wait only when a segment was closed and only until
//! `get-wal` sees that one (normally at once), and fetch the segments the
//! archive does not hold yet. A gap before the closed segment fails the step,
//! rather than marking fresh a volume that misses writes.
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

/// Closes the primary's current segment and waits until barman can serve it:
/// the segment a refresh must replay through, or `None` when there was nothing
/// to close (an idle primary: no wait at all) or it did not arrive in time
/// (said in the log; the refresh replays what barman has, still consistent).
pub(super) async fn close_current_segment(
    pipeline: &BackupPipeline,
    drivers: &Drivers,
) -> Option<Segment> {
    let barman = &pipeline.spec.barman;
    let closed = match drivers.barman.switch_wal(barman).await {
        Ok(Some(name)) => Segment::parse(&name)?,
        Ok(None) => {
            tracing::debug!("no WAL written since the last switch: nothing to wait for");
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %crate::errors::error_chain(&e), "could not close the current WAL segment; the refresh replays what barman holds");
            return None;
        }
    };
    let name = closed.to_string();
    let started = tokio::time::Instant::now();
    loop {
        match drivers.barman.list_wal(barman, &name, 1).await {
            Ok(names) if names.contains(&name) => {
                tracing::debug!(segment = %name, waited_ms = started.elapsed().as_millis() as u64, "barman holds the closed segment");
                return Some(closed);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %crate::errors::error_chain(&e), segment = %name, "cannot ask barman for the closed segment; the refresh replays what barman holds");
                return None;
            }
        }
        if started.elapsed() >= CLOSED_SEGMENT_WAIT {
            tracing::warn!(segment = %name, waited_s = CLOSED_SEGMENT_WAIT.as_secs(), "barman has not received the segment the switch closed; the refresh replays what barman holds (is WAL streaming?)");
            return None;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = drivers.cancel.cancelled() => return None,
        }
    }
}

/// Fetches every segment barman holds after `after` on its timeline, in order,
/// into `pg_wal` (each whole: fetched into a staging directory, then renamed),
/// and returns them. With a `target`, a segment missing before it is a gap and
/// fails the step. `pause` names the pause point after each segment.
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
    let volume = &pipeline.spec.recovered_volume;
    let barman = &pipeline.spec.barman;
    let staging = drivers.volume.prepare_wal_fetch(path, owner).await?;
    let destination = barman_view(volume, path, &staging);
    let mut fetched = Vec::new();
    let mut next = after.next();
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
        match batch.last() {
            Some(last) if batch.len() as u32 >= PEEK_BATCH => next = last.next(),
            _ => break,
        }
    }
    drivers.volume.finish_wal_fetch(path).await?;
    let through = fetched.last().copied().unwrap_or(after);
    if let Some(target) = target.filter(|t| t.timeline == after.timeline && *t > through) {
        return Err(ExecuteError::WalGap {
            missing: through.next().to_string(),
            closed: target.to_string(),
        });
    }
    Ok(fetched)
}
