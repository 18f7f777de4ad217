//! Retry delays after a failed pass: exponential with jitter, reset on success.
//!
//! Built on backon's exponential builder; kept as an iterator so the delays can be
//! tested without time passing (kube-runtime does the same).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// First retry after a failure: soon, in case it was a blip.
pub const MIN_RETRY_DELAY: Duration = Duration::from_secs(10);
/// Never wait longer than this between attempts: a broken pipeline keeps being
/// tried (and reported) at least this often.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(15 * 60);

/// Per-pipeline retry state.
#[derive(Debug)]
pub struct RetryBackoff {
    builder: ExponentialBuilder,
    current: ExponentialBackoff,
    failures: u32,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self::new(MIN_RETRY_DELAY, MAX_RETRY_DELAY)
    }
}

impl RetryBackoff {
    /// Delays from `min`, doubling, up to `max`, with jitter, forever.
    pub fn new(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self {
            current: builder.build(),
            builder,
            failures: 0,
        }
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn failed(&mut self) -> Duration {
        self.failures += 1;
        self.current.next().unwrap_or(MAX_RETRY_DELAY)
    }

    /// Records a success: the next failure starts from the shortest delay again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.current = self.builder.build();
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset_on_success() {
        let mut backoff = RetryBackoff::new(Duration::from_secs(10), Duration::from_secs(80));
        let delays: Vec<Duration> = (0..6).map(|_| backoff.failed()).collect();
        // Jitter adds up to one base delay on top: 10..20, 20..40, 40..80, then capped.
        assert!(
            delays[0] >= Duration::from_secs(10) && delays[0] <= Duration::from_secs(20),
            "{delays:?}"
        );
        assert!(
            delays[1] >= Duration::from_secs(20) && delays[1] <= Duration::from_secs(40),
            "{delays:?}"
        );
        assert!(delays[2] >= Duration::from_secs(40), "{delays:?}");
        assert!(
            delays[5] >= Duration::from_secs(80) && delays[5] <= Duration::from_secs(160),
            "{delays:?}"
        );
        assert_eq!(backoff.failures(), 6);
        backoff.succeeded();
        assert_eq!(backoff.failures(), 0);
        let first = backoff.failed();
        assert!(
            first <= Duration::from_secs(20),
            "reset to the first delay, got {first:?}"
        );
    }
}
