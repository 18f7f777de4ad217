//! What wakes the loop: spec files changing, SIGHUP, the periodic resync, deadlines.
//!
//! Triggers carry no data: each only says "look again", and every pass re-reads the
//! specs and re-observes, so there is one code path whatever woke it. File events
//! come from notify (with notify-debouncer-full collapsing renames and the bursts a
//! `git checkout` makes), then [`coalesce`] turns any burst that is left into a single
//! wake-up once the files have been quiet for a moment.

use std::path::PathBuf;
use std::time::Duration;

use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

/// How long the files must be quiet before a change triggers a pass. Short, so an
/// edit is acted on within a second; long enough to let an editor's save (write,
/// rename, chmod) or a `git pull` finish.
pub const SPEC_QUIET_PERIOD: Duration = Duration::from_millis(100);

/// notify-debouncer-full's window. Its thread wakes at this rate even when nothing
/// changes, so it is the main idle cost of `run`: 100 ms is 10 wake-ups a second
/// (12.5 ms, its default tick for a 50 ms window, was 80).
const DEBOUNCE_WINDOW: Duration = Duration::from_millis(100);

/// Watches spec paths; dropping it stops the watch.
pub struct SpecWatcher {
    _debouncer: Debouncer<notify_debouncer_full::notify::RecommendedWatcher, RecommendedCache>,
}

/// Why the spec paths could not be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {}", path.display())]
pub struct WatchError {
    /// The path.
    pub path: PathBuf,
    /// notify's error.
    #[source]
    pub source: notify_debouncer_full::notify::Error,
}

impl SpecWatcher {
    /// Sends `()` on `events` whenever something under `paths` changes. A file is
    /// watched through its directory, so that an editor replacing it (or git
    /// swapping it) is still seen.
    pub fn start(paths: &[PathBuf], events: mpsc::UnboundedSender<()>) -> Result<Self, WatchError> {
        let mut debouncer = new_debouncer(
            DEBOUNCE_WINDOW,
            Some(DEBOUNCE_WINDOW),
            move |result: DebounceEventResult| {
                // Reading the specs (which every pass does) is an access event too;
                // counting it would make each pass trigger the next.
                let changed = result.is_ok_and(|batch| {
                    batch
                        .iter()
                        .any(|e| !matches!(e.event.kind, EventKind::Access(_)))
                });
                if changed {
                    let _ = events.send(());
                }
            },
        )
        .map_err(|source| WatchError {
            path: PathBuf::new(),
            source,
        })?;
        for path in paths {
            let watched = if path.is_file() {
                path.parent()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."))
            } else {
                path.clone()
            };
            debouncer
                .watch(&watched, RecursiveMode::Recursive)
                .map_err(|source| WatchError {
                    path: watched.clone(),
                    source,
                })?;
        }
        Ok(Self {
            _debouncer: debouncer,
        })
    }
}

/// Forwards one `()` per burst of `input`: after an event, waits until `quiet` has
/// passed with no further event, then sends. Ends when `input` closes.
pub async fn coalesce(
    mut input: mpsc::UnboundedReceiver<()>,
    output: mpsc::UnboundedSender<()>,
    quiet: Duration,
) {
    while input.recv().await.is_some() {
        loop {
            // Cancel-safe: recv() loses nothing when the timeout fires first.
            match tokio::time::timeout(quiet, input.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => {
                    let _ = output.send(());
                    return;
                }
                Err(_) => break,
            }
        }
        if output.send(()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_becomes_one_wake_up_after_the_quiet_period() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (out_tx, mut out) = mpsc::unbounded_channel();
        tokio::spawn(coalesce(rx, out_tx, Duration::from_millis(200)));
        for _ in 0..5 {
            tx.send(()).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // 150 ms after the last event: still quiet-waiting.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(out.try_recv().is_err());
        tokio::time::sleep(Duration::from_millis(101)).await;
        assert_eq!(out.try_recv(), Ok(()));
        assert!(out.try_recv().is_err(), "only one wake-up for the burst");
        // A later, separate change wakes again.
        tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(out.try_recv(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_of_changes_still_wakes_once_it_stops() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (out_tx, mut out) = mpsc::unbounded_channel();
        tokio::spawn(coalesce(rx, out_tx, Duration::from_millis(200)));
        for _ in 0..20 {
            tx.send(()).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(out.try_recv().is_err());
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(out.try_recv(), Ok(()));
    }
}
