//! WAL replay by a short-lived local postgres.
//!
//! barman recovers without a recovery target, so postgres replays the copied WAL as
//! crash recovery on its first start. The driver starts `postgres` directly (not via
//! `pg_ctl`, whose `-o` options go through a shell) on a private socket directory with
//! no TCP listener, waits until `select pg_is_in_recovery()` answers false, stops it
//! with a fast shutdown, and confirms with `pg_controldata` that the cluster state is
//! `shut down`. Whatever happens, the postgres it started is stopped before it returns.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use super::command::{CommandError, CommandLine, CommandRunner, LocalProcess, RunAs};
use crate::spec::ReplaySpec;

/// The replay's private socket directory starts with this, which is how a replay
/// left running by a killed reconciler is recognised on the next start.
pub const SOCKET_DIR_PREFIX: &str = "reconciler-replay-";
/// The port only names the socket file; nothing listens on TCP.
const REPLAY_PORT: &str = "5432";
/// How often replay progress is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How long an immediate shutdown may take after a fast one overran.
const IMMEDIATE_STOP_WAIT: Duration = Duration::from_secs(60);

/// What a finished replay reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOutcome {
    /// `pg_current_wal_lsn()` once recovery ended.
    pub replayed_to_lsn: String,
    /// pg_controldata's "Time of latest checkpoint" after the clean stop.
    pub checkpoint_time: Option<String>,
}

/// What can go wrong during replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Setting up (socket directory, log) failed.
    #[error("cannot prepare the replay of {}", data_dir.display())]
    Prepare {
        /// The data directory.
        data_dir: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// postgres could not be started.
    #[error("cannot start postgres on {}", data_dir.display())]
    Start {
        /// The data directory.
        data_dir: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// postgres exited during replay.
    #[error("postgres exited during replay ({status}); its log ends with: {log_tail}")]
    Exited {
        /// How it exited.
        status: String,
        /// The end of its log.
        log_tail: String,
    },
    /// Replay did not finish in time.
    #[error("replay did not finish within {}s; last probe: {last_probe}", timeout.as_secs())]
    TimedOut {
        /// The limit.
        timeout: Duration,
        /// What the last probe saw.
        last_probe: String,
    },
    /// postgres did not shut down cleanly.
    #[error("postgres did not shut down cleanly: {detail}")]
    UncleanStop {
        /// What was seen.
        detail: String,
    },
    /// The reconciler is shutting down; postgres was stopped cleanly.
    #[error("replay interrupted by shutdown; postgres was stopped and the volume stays unmarked")]
    Cancelled,
    /// A helper command (psql, pg_controldata) failed to run.
    #[error("running a postgres tool failed")]
    Tool(#[source] CommandError),
}

/// Replays a recovered data directory until postgres has left recovery.
#[async_trait]
pub trait ReplayDriver: Send + Sync + std::fmt::Debug {
    /// Replays `data_dir` as `owner`; postgres is stopped cleanly when it returns Ok,
    /// and stopped anyway when it returns an error.
    async fn replay(
        &self,
        data_dir: &Path,
        owner: RunAs,
        spec: &ReplaySpec,
    ) -> Result<ReplayOutcome, ReplayError>;
}

/// Runs postgres as a child process of the reconciler.
#[derive(Debug, Clone)]
pub struct LocalReplay {
    tools: Arc<dyn CommandRunner>,
    cancel: CancellationToken,
}

impl LocalReplay {
    /// Replay whose helper tools run through `tools`, abandoned (cleanly) when
    /// `cancel` fires.
    pub fn new(tools: Arc<dyn CommandRunner>, cancel: CancellationToken) -> Self {
        Self { tools, cancel }
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    let tail = lines[start..].join(" | ");
    if tail.is_empty() {
        "(empty log)".to_string()
    } else {
        tail
    }
}

/// Stops a postgres child: SIGINT (fast shutdown) and wait, else SIGQUIT (immediate).
/// Returns whether the fast shutdown completed in time.
async fn stop_postgres(child: &mut tokio::process::Child, fast_wait: Duration) -> bool {
    let Some(pid) = child.id() else { return true };
    let pid = Pid::from_raw(pid as i32);
    let _ = kill(pid, Signal::SIGINT);
    if tokio::time::timeout(fast_wait, child.wait()).await.is_ok() {
        return true;
    }
    let _ = kill(pid, Signal::SIGQUIT);
    if tokio::time::timeout(IMMEDIATE_STOP_WAIT, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    false
}

/// Reads one `Name: value` line of pg_controldata's output.
pub fn controldata_field<'a>(output: &'a str, name: &str) -> Option<&'a str> {
    output.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim())
    })
}

#[async_trait]
impl ReplayDriver for LocalReplay {
    async fn replay(
        &self,
        data_dir: &Path,
        owner: RunAs,
        spec: &ReplaySpec,
    ) -> Result<ReplayOutcome, ReplayError> {
        let prepare = |source| ReplayError::Prepare {
            data_dir: data_dir.to_path_buf(),
            source,
        };
        let socket_dir = tempfile::Builder::new()
            .prefix(SOCKET_DIR_PREFIX)
            .tempdir()
            .map_err(prepare)?;
        std::os::unix::fs::chown(socket_dir.path(), Some(owner.uid), Some(owner.gid))
            .map_err(prepare)?;
        let log_path = socket_dir.path().join("postgres.log");
        let log = std::fs::File::create(&log_path).map_err(prepare)?;
        let log_err = log.try_clone().map_err(prepare)?;
        let bin = spec.postgres_bin.as_path();

        let mut server = CommandLine::new(bin.join("postgres"), spec.timeout.to_std())
            .arg("-D")
            .arg(data_dir)
            .run_as(Some(owner));
        for (name, value) in &spec.settings {
            server = server
                .arg("-c")
                .arg(format!("{}={}", name.as_str(), value.as_str()));
        }
        // The fixed settings come last, so that no setting in the spec can override them
        // (postgres keeps the last value given): no TCP listener, no archiving.
        server = server
            .arg("-k")
            .arg(socket_dir.path())
            .args([
                "-p",
                REPLAY_PORT,
                "-c",
                "listen_addresses=",
                "-c",
                "archive_mode=off",
            ])
            .args([
                "-c",
                "logging_collector=off",
                "-c",
                "log_destination=stderr",
            ]);
        tracing::info!(command = %server, "starting postgres to replay WAL");
        let mut child = LocalProcess::prepare(&server)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|source| ReplayError::Start {
                data_dir: data_dir.to_path_buf(),
                source,
            })?;

        // A shutdown is noticed by the loop below, which stops postgres cleanly.
        let _ = super::pause::pause_point("replay", &self.cancel).await;
        let probe = CommandLine::new(bin.join("psql"), Duration::from_secs(30))
            .args(["-X", "-A", "-t", "-q", "-h"])
            .arg(socket_dir.path())
            .args(["-p", REPLAY_PORT, "-U"])
            .arg(spec.database_user.as_str())
            .args(["-d", "template1", "-c"])
            .arg("select case when pg_is_in_recovery() then 'in recovery' else pg_current_wal_lsn()::text end")
            .env("PGCONNECT_TIMEOUT", "5")
            .run_as(Some(owner));
        let deadline = Instant::now() + spec.timeout.to_std();
        let mut last_probe = "not probed yet".to_string();
        let replayed_to = loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(ReplayError::Exited {
                    status: status.to_string(),
                    log_tail: log_tail(&log_path),
                });
            }
            if self.cancel.is_cancelled() {
                stop_postgres(&mut child, spec.stop_timeout.to_std()).await;
                return Err(ReplayError::Cancelled);
            }
            if Instant::now() >= deadline {
                stop_postgres(&mut child, spec.stop_timeout.to_std()).await;
                return Err(ReplayError::TimedOut {
                    timeout: spec.timeout.to_std(),
                    last_probe,
                });
            }
            match self.tools.run(&probe).await {
                Ok(out) if out.success() && out.stdout.trim().contains('/') => {
                    break out.stdout.trim().to_string();
                }
                Ok(out) if out.success() => last_probe = out.stdout.trim().to_string(),
                Ok(out) => last_probe = out.last_words(),
                Err(e) => last_probe = e.to_string(),
            }
            tokio::select! {
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
                () = self.cancel.cancelled() => {}
            }
        };
        tracing::info!(lsn = %replayed_to, "replay finished; stopping postgres");
        if !stop_postgres(&mut child, spec.stop_timeout.to_std()).await {
            return Err(ReplayError::UncleanStop {
                detail: format!(
                    "fast shutdown took longer than {}; stopped immediately",
                    spec.stop_timeout
                ),
            });
        }
        let controldata = CommandLine::new(bin.join("pg_controldata"), Duration::from_secs(60))
            .arg(data_dir)
            .env("LC_ALL", "C")
            .run_as(Some(owner));
        let out = self
            .tools
            .run(&controldata)
            .await
            .map_err(ReplayError::Tool)?;
        let state = controldata_field(&out.stdout, "Database cluster state");
        if !out.success() || state != Some("shut down") {
            return Err(ReplayError::UncleanStop {
                detail: format!(
                    "pg_controldata reports cluster state {:?}",
                    state.unwrap_or("unreadable")
                ),
            });
        }
        Ok(ReplayOutcome {
            replayed_to_lsn: replayed_to,
            checkpoint_time: controldata_field(&out.stdout, "Time of latest checkpoint")
                .map(String::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controldata_fields_are_read_by_name() {
        let out = "pg_control version number:            1300\nDatabase cluster state:               shut down in recovery\nTime of latest checkpoint:            Mon Nov 23 18:38:36 2026\n";
        assert_eq!(
            controldata_field(out, "Database cluster state"),
            Some("shut down in recovery")
        );
        assert_eq!(
            controldata_field(out, "Time of latest checkpoint"),
            Some("Mon Nov 23 18:38:36 2026")
        );
        assert_eq!(controldata_field(out, "Missing"), None);
    }
}
