//! A test hook: stop at a named point until shutdown, so tests can interrupt the
//! reconciler at an exact moment (SIGTERM during replay, SIGKILL mid-step).
//!
//! Compiled in only with the `failpoints` cargo feature, which the tests turn on
//! (the crate is its own dev-dependency with that feature): without it
//! [`pause_point!`] expands to nothing, so a release build carries neither the
//! points nor their names. With it, a point is inert unless `RECONCILER_PAUSE_AT`
//! names it. When it does, the process logs `paused at <point>` and waits for
//! shutdown (or to be killed) right there; after a shutdown the caller gives up the
//! step. When `RECONCILER_RESUME_WHEN` names a file, the process also goes on once
//! that file exists (and removes it, so the next pause waits again), so a test can
//! change the world at that exact moment and watch what the reconciler makes of it.

/// Pauses at the named point if `RECONCILER_PAUSE_AT` names it (only with the
/// `failpoints` feature; nothing at all without it). Awaits, so it belongs in an
/// async fn.
///
/// - `pause_point!(point, &cancel)` returns early with `?` when a shutdown ends the
///   pause (the enclosing function's error must come from [`Interrupted`]);
/// - `pause_point!(point, &cancel, else { … })` runs the block instead (it may
///   `return`; `else {}` goes on, for callers that notice the shutdown themselves).
#[cfg(feature = "failpoints")]
macro_rules! pause_point {
    ($point:expr, $cancel:expr) => {
        $crate::drivers::pause::pause($point, $cancel).await?
    };
    ($point:expr, $cancel:expr, else $interrupted:block) => {
        if $crate::drivers::pause::pause($point, $cancel).await.is_err() $interrupted
    };
}

/// Without the `failpoints` feature a pause point is nothing: its arguments are not
/// even evaluated.
#[cfg(not(feature = "failpoints"))]
macro_rules! pause_point {
    ($($ignored:tt)*) => {};
}

pub(crate) use pause_point;

#[cfg(feature = "failpoints")]
use tokio_util::sync::CancellationToken;

/// The environment variable naming the point to pause at.
#[cfg(feature = "failpoints")]
pub const PAUSE_ENV: &str = "RECONCILER_PAUSE_AT";

/// The environment variable naming the file whose creation ends a pause.
#[cfg(feature = "failpoints")]
pub const RESUME_ENV: &str = "RECONCILER_RESUME_WHEN";

/// A shutdown arrived while paused: the step must not go on.
#[cfg(feature = "failpoints")]
#[derive(Debug, thiserror::Error)]
#[error("interrupted by shutdown at {point}")]
pub struct Interrupted {
    /// The pause point.
    pub point: String,
}

/// Pauses here if `RECONCILER_PAUSE_AT` is `point`, until `cancel` fires; then
/// returns [`Interrupted`] so the step stops where it is. Goes on instead once the
/// file `RECONCILER_RESUME_WHEN` names exists. Called through [`pause_point!`].
#[cfg(feature = "failpoints")]
pub async fn pause(point: &str, cancel: &CancellationToken) -> Result<(), Interrupted> {
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
#[cfg(feature = "failpoints")]
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
