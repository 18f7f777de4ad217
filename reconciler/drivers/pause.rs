//! A test hook: stop at a named point until shutdown, so tests can interrupt the
//! reconciler at an exact moment (SIGTERM during replay, SIGKILL mid-step).
//!
//! Inert unless `RECONCILER_PAUSE_AT` names the point; nothing in a deployment sets
//! it. When it does, the process logs `paused at <point>` and waits for shutdown
//! (or to be killed) right there; after a shutdown the caller gives up the step.

use tokio_util::sync::CancellationToken;

/// The environment variable naming the point to pause at.
pub const PAUSE_ENV: &str = "RECONCILER_PAUSE_AT";

/// A shutdown arrived while paused: the step must not go on.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by shutdown at {point}")]
pub struct Interrupted {
    /// The pause point.
    pub point: String,
}

/// Pauses here if `RECONCILER_PAUSE_AT` is `point`, until `cancel` fires; then
/// returns [`Interrupted`] so the step stops where it is.
pub async fn pause_point(point: &str, cancel: &CancellationToken) -> Result<(), Interrupted> {
    if std::env::var(PAUSE_ENV).is_ok_and(|p| p == point) {
        tracing::warn!(point, "paused at {point} ({PAUSE_ENV})");
        cancel.cancelled().await;
        return Err(Interrupted {
            point: point.to_string(),
        });
    }
    Ok(())
}
