//! systemd's service protocol (`Type=notify`): `READY=1` once `/metrics` answers
//! and the first pass is done, `WATCHDOG=1` while the loop keeps passing,
//! `STOPPING=1` on shutdown, and a `STATUS=` line a `systemctl status` shows.
//!
//! Without `NOTIFY_SOCKET` (not under systemd) every call does nothing. The
//! watchdog is fed only while the loop is healthy by the same rule as `/healthz`,
//! so systemd restarts a reconciler whose loop hangs; it decides nothing else.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use super::Shared;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// The service is up.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A one-line status for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// The service is stopping: steps are being cancelled.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Feeds systemd's watchdog (`WatchdogSec=`) at half its period while the loop
/// has passed within its stall limit; stops feeding it when the loop hangs.
pub fn spawn_watchdog(shared: Arc<Shared>, shutdown: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (period / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let age = shared.last_pass_age();
            if age <= shared.stall_after {
                send(&[NotifyState::Watchdog]);
            } else {
                tracing::error!(
                    last_pass_secs = age.as_secs(),
                    "the loop has not passed within its limit; not feeding systemd's watchdog"
                );
            }
        }
    });
}
