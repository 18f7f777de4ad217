//! What wakes the loop: spec files changing, SIGHUP, the periodic resync, deadlines.
//!
//! Triggers carry no data: each only says "look again", and every pass re-reads the
//! specs and re-observes, so there is one code path whatever woke it. File events
//! come from notify's own watcher (inotify: the kernel wakes us, nothing polls), and
//! [`coalesce`] turns a burst (an editor's write, rename and chmod; a `git checkout`)
//! into a single wake-up once the files have been quiet for a moment. Nothing here
//! runs while the files do not change.
//!
//! It must not read or judge the specs: a pass does that.

use std::path::PathBuf;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long the files must be quiet before a change triggers a pass. Short, so an
/// edit is acted on at once; long enough to let an editor's save (write, rename,
/// chmod, a few milliseconds apart) or a `git pull` finish, so a pass does not read
/// a half-written file and then run again.
pub const SPEC_QUIET_PERIOD: Duration = Duration::from_millis(100);

/// Watches spec paths; dropping it stops the watch.
pub struct SpecWatcher {
    _watcher: RecommendedWatcher,
}

/// Why the spec paths could not be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {}", path.display())]
pub struct WatchError {
    /// The path.
    pub path: PathBuf,
    /// notify's error.
    #[source]
    pub source: notify::Error,
}

/// Whether an event from the watcher means the specs may have changed. Reading
/// the specs (which every pass does) is an access event too: counting it would
/// make each pass trigger the next. A failed watch counts, so a pass looks.
fn is_change(event: &notify::Result<notify::Event>) -> bool {
    match event {
        Ok(event) => !matches!(event.kind, EventKind::Access(_)),
        Err(_) => true,
    }
}

impl SpecWatcher {
    /// Sends `()` on `events` whenever something under `paths` changes. A file is
    /// watched through its directory, so that an editor replacing it (or git
    /// swapping it) is still seen.
    pub fn start(paths: &[PathBuf], events: mpsc::UnboundedSender<()>) -> Result<Self, WatchError> {
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if is_change(&event) {
                    let _ = events.send(());
                }
            })
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
            watcher
                .watch(&watched, RecursiveMode::Recursive)
                .map_err(|source| WatchError {
                    path: watched.clone(),
                    source,
                })?;
        }
        Ok(Self { _watcher: watcher })
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

    /// A spec directory with one file, watched, with `coalesce` behind the watcher;
    /// the directory is removed when the test ends.
    struct Watched {
        dir: PathBuf,
        out: mpsc::UnboundedReceiver<()>,
        _watcher: SpecWatcher,
    }

    impl Watched {
        fn start(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("reconciler-trigger-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("pipeline.yaml"), "a: 1\n").unwrap();
            let (tx, rx) = mpsc::unbounded_channel();
            let (out_tx, out) = mpsc::unbounded_channel();
            let watcher = SpecWatcher::start(std::slice::from_ref(&dir), tx).unwrap();
            tokio::spawn(coalesce(rx, out_tx, SPEC_QUIET_PERIOD));
            Watched {
                dir,
                out,
                _watcher: watcher,
            }
        }

        /// Wake-ups within `window` (real time: the events come from the kernel).
        async fn wake_ups_within(&mut self, window: Duration) -> usize {
            let mut n = 0;
            let until = tokio::time::Instant::now() + window;
            while let Ok(Some(())) = tokio::time::timeout_at(until, self.out.recv()).await {
                n += 1;
            }
            n
        }
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[tokio::test]
    async fn an_editor_saving_by_rename_over_wakes_the_loop_once() {
        let mut w = Watched::start("rename");
        // vim, and most editors with atomic saves: a new file, then rename over.
        let temporary = w.dir.join(".pipeline.yaml.swp");
        std::fs::write(&temporary, "a: 2\n").unwrap();
        // An editor's parts of one save are milliseconds apart, not all at once.
        tokio::time::sleep(Duration::from_millis(20)).await;
        std::fs::rename(&temporary, w.dir.join("pipeline.yaml")).unwrap();
        assert_eq!(w.wake_ups_within(Duration::from_secs(3)).await, 1);
    }

    #[tokio::test]
    async fn a_burst_of_writes_wakes_the_loop_once() {
        let mut w = Watched::start("burst");
        let path = w.dir.join("pipeline.yaml");
        for i in 0..5 {
            std::fs::write(&path, format!("a: {i}\n")).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(w.wake_ups_within(Duration::from_secs(3)).await, 1);
    }

    #[tokio::test]
    async fn reading_the_specs_wakes_nothing() {
        let mut w = Watched::start("read");
        // What every pass does: reading must not trigger the next pass.
        for _ in 0..3 {
            let _ = std::fs::read_to_string(w.dir.join("pipeline.yaml")).unwrap();
            let _ = std::fs::read_dir(&w.dir).unwrap().count();
        }
        assert_eq!(w.wake_ups_within(Duration::from_secs(1)).await, 0);
    }

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
