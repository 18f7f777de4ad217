//! When the loop wakes next: the earliest of the periodic resync, a pipeline's next
//! deadline (its volume turns 24 h old at 05:10 → look at 05:10), and a retry after
//! a failure; or at once when a trigger (spec change, SIGHUP) arrives.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why the loop woke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// Specs changed, or SIGHUP.
    Triggered,
    /// A pipeline's deadline (or retry time) came.
    Due(String),
    /// The periodic resync.
    Resync,
    /// Shutdown was requested.
    Shutdown,
}

/// The loop's timers.
#[derive(Debug)]
pub struct Scheduler {
    resync: Duration,
    last_pass: Instant,
    due: BTreeMap<String, Instant>,
}

impl Scheduler {
    /// A scheduler that resyncs every `resync`, counting from now.
    pub fn new(resync: Duration) -> Self {
        Self {
            resync,
            last_pass: Instant::now(),
            due: BTreeMap::new(),
        }
    }

    /// A full pass just ran: the resync period restarts.
    pub fn pass_done(&mut self) {
        self.last_pass = Instant::now();
    }

    /// The pipeline wants a pass at `at` (its next deadline, or a retry); the earlier
    /// of this and any time already set wins until it fires.
    pub fn due_at(&mut self, pipeline: &str, at: Instant) {
        let entry = self.due.entry(pipeline.to_string()).or_insert(at);
        if at < *entry {
            *entry = at;
        }
    }

    /// Forgets a pipeline's time (it is being worked on, or is gone).
    pub fn clear(&mut self, pipeline: &str) {
        self.due.remove(pipeline);
    }

    /// Forgets every pipeline not in `keep`.
    pub fn retain(&mut self, keep: &[String]) {
        self.due.retain(|name, _| keep.contains(name));
    }

    /// The next instant to wake without a trigger, and why.
    pub fn next(&self) -> (Instant, Wake) {
        let resync = (self.last_pass + self.resync, Wake::Resync);
        self.due
            .iter()
            .map(|(name, at)| (*at, Wake::Due(name.clone())))
            .chain(std::iter::once(resync))
            .min_by_key(|(at, _)| *at)
            .unwrap_or((self.last_pass + self.resync, Wake::Resync))
    }

    /// Waits for the next reason to run a pass. A due pipeline's time is consumed.
    pub async fn wait(
        &mut self,
        triggers: &mut mpsc::UnboundedReceiver<()>,
        shutdown: &CancellationToken,
    ) -> Wake {
        let (at, why) = self.next();
        tokio::select! {
            biased;
            // Cancel-safe: cancelled() can be polled again.
            () = shutdown.cancelled() => Wake::Shutdown,
            // Cancel-safe: a message not received stays in the channel.
            message = triggers.recv() => match message {
                Some(()) => {
                    // Collapse a backlog: one pass reads everything anyway.
                    while triggers.try_recv().is_ok() {}
                    Wake::Triggered
                }
                None => {
                    // No more triggers can come: keep going on timers alone.
                    tokio::time::sleep_until(at).await;
                    self.fire(&why);
                    why
                }
            },
            () = tokio::time::sleep_until(at) => {
                self.fire(&why);
                why
            }
        }
    }

    fn fire(&mut self, why: &Wake) {
        if let Wake::Due(name) = why {
            self.due.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(
        resync_secs: u64,
    ) -> (
        Scheduler,
        mpsc::UnboundedSender<()>,
        mpsc::UnboundedReceiver<()>,
        CancellationToken,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Scheduler::new(Duration::from_secs(resync_secs)),
            tx,
            rx,
            CancellationToken::new(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn with_nothing_due_the_loop_resyncs_periodically() {
        let (mut s, _tx, mut rx, stop) = setup(300);
        let start = Instant::now();
        assert_eq!(s.wait(&mut rx, &stop).await, Wake::Resync);
        assert_eq!(start.elapsed(), Duration::from_secs(300));
        s.pass_done();
        assert_eq!(s.wait(&mut rx, &stop).await, Wake::Resync);
        assert_eq!(start.elapsed(), Duration::from_secs(600));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_before_the_resync_wakes_the_loop_at_the_deadline() {
        let (mut s, _tx, mut rx, stop) = setup(300);
        let start = Instant::now();
        s.due_at("montagu", start + Duration::from_secs(90));
        s.due_at("montagu", start + Duration::from_secs(200)); // a later time does not push it back
        assert_eq!(s.wait(&mut rx, &stop).await, Wake::Due("montagu".into()));
        assert_eq!(start.elapsed(), Duration::from_secs(90));
        // Consumed: next comes the resync.
        assert_eq!(s.wait(&mut rx, &stop).await, Wake::Resync);
        assert_eq!(start.elapsed(), Duration::from_secs(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_wakes_at_once_and_a_backlog_is_one_wake() {
        let (mut s, tx, mut rx, stop) = setup(300);
        let start = Instant::now();
        s.due_at("montagu", start + Duration::from_secs(90));
        tx.send(()).unwrap();
        tx.send(()).unwrap();
        assert_eq!(s.wait(&mut rx, &stop).await, Wake::Triggered);
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The backlog was drained; the deadline is still pending.
        assert_eq!(s.wait(&mut rx, &stop).await, Wake::Due("montagu".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_wins_over_everything() {
        let (mut s, tx, mut rx, stop) = setup(300);
        tx.send(()).unwrap();
        stop.cancel();
        assert_eq!(s.wait(&mut rx, &stop).await, Wake::Shutdown);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_backoff_is_just_another_due_time() {
        let (mut s, _tx, mut rx, stop) = setup(300);
        let mut backoff = super::super::backoff::RetryBackoff::new(
            Duration::from_secs(10),
            Duration::from_secs(60),
        );
        let start = Instant::now();
        let delay = backoff.failed();
        s.due_at("montagu", Instant::now() + delay);
        assert_eq!(s.wait(&mut rx, &stop).await, Wake::Due("montagu".into()));
        // The timer wheel rounds up to the millisecond.
        assert!(start.elapsed() >= delay && start.elapsed() <= delay + Duration::from_millis(1));
        s.pass_done();
        let second = backoff.failed();
        assert!(second > delay || second >= Duration::from_secs(20));
        backoff.succeeded();
        assert!(backoff.failed() <= Duration::from_secs(20));
    }
}
