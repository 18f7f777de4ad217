//! A test hook: stop at a named point until shutdown, so tests can interrupt the
//! reconciler at an exact moment (SIGTERM during replay, SIGKILL mid-step).
//!
//! Inert unless `RECONCILER_PAUSE_AT` names the point; nothing in a deployment sets
//! it. When it does, the process logs `paused at <point>` and waits for shutdown
//! (or to be killed) right there.

use tokio_util::sync::CancellationToken;

/// The environment variable naming the point to pause at.
pub const PAUSE_ENV: &str = "RECONCILER_PAUSE_AT";

/// Pauses here if `RECONCILER_PAUSE_AT` is `point`, until `cancel` fires.
pub async fn pause_point(point: &str, cancel: &CancellationToken) {
    if std::env::var(PAUSE_ENV).is_ok_and(|p| p == point) {
        tracing::warn!(point, "paused at {point} ({PAUSE_ENV})");
        cancel.cancelled().await;
    }
}
