//! A test hook: stop at a named point until shutdown, so tests can interrupt the
//! reconciler at an exact moment (SIGTERM during replay, SIGKILL mid-step).
//!
//! Inert unless `RECONCILER_PAUSE_AT` names the point; nothing in a deployment sets
//! it. When it does, the process logs `paused at <point>` and waits for shutdown
//! (or to be killed) right there; after a shutdown the caller gives up the step.
//! When `RECONCILER_RESUME_WHEN` names a file, the process also goes on once that
//! file exists (and removes it, so the next pause waits again), so a test can
//! change the world at that exact moment and watch what the reconciler makes of it.

use tokio_util::sync::CancellationToken;

/// The environment variable naming the point to pause at.
pub const PAUSE_ENV: &str = "RECONCILER_PAUSE_AT";

/// The environment variable naming the file whose creation ends a pause.
pub const RESUME_ENV: &str = "RECONCILER_RESUME_WHEN";

/// A shutdown arrived while paused: the step must not go on.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by shutdown at {point}")]
pub struct Interrupted {
    /// The pause point.
    pub point: String,
}

/// Pauses here if `RECONCILER_PAUSE_AT` is `point`, until `cancel` fires; then
/// returns [`Interrupted`] so the step stops where it is. Goes on instead once the
/// file `RECONCILER_RESUME_WHEN` names exists.
pub async fn pause_point(point: &str, cancel: &CancellationToken) -> Result<(), Interrupted> {
    if std::env::var(PAUSE_ENV).is_ok_and(|p| p == point) {
        tracing::warn!(point, "paused at {point} ({PAUSE_ENV})");
        let resume = std::env::var_os(RESUME_ENV).map(std::path::PathBuf::from);
        tokio::select! {
            () = cancel.cancelled() => {
                return Err(Interrupted {
                    point: point.to_string(),
                });
            }
            () = appears(resume) => {
                tracing::warn!(point, "resumed at {point} ({RESUME_ENV})");
            }
        }
    }
    Ok(())
}

/// Returns once `file` exists; never when there is none to wait for.
async fn appears(file: Option<std::path::PathBuf>) {
    let Some(file) = file else {
        return std::future::pending().await;
    };
    loop {
        match tokio::fs::remove_file(&file).await {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot take the resume file")
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
