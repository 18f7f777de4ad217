//! WAL replay by a short-lived postgres: a child process of the reconciler, or a
//! container made for the replay and removed after it.
//!
//! barman recovers without a recovery target, so postgres replays the copied WAL as
//! crash recovery on its first start. The driver starts `postgres` directly (not via
//! `pg_ctl`, whose `-o` options go through a shell) on a private socket directory with
//! no TCP listener, waits until `select pg_is_in_recovery()` answers false, stops it
//! with a fast shutdown, and confirms with `pg_controldata` that the cluster state is
//! `shut down`. Whatever happens, the postgres it started is stopped before it returns.
//! In a container the steps are the same: the entrypoint is `postgres` itself with
//! the same flags (whatever the image would start), the probe is `psql` exec'd into
//! it, the stop is the container's stop with SIGINT as its stop signal, and
//! `pg_controldata` runs in a short-lived container of the same image.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::command::{CommandError, CommandLine, CommandRunner, LocalProcess, RunAs};
use super::docker::{ContainerSpec, DockerEngine, DockerError};
use super::placement::{Placement, Placer, ReplayContainer, ReplayPlacement};
use super::postgres_process::stop_child;
use crate::observed::StrayReplay;
use crate::spec::{RecoveredVolumeSpec, ReplaySpec};

pub use super::postgres_process::SOCKET_DIR_PREFIX;
/// The port only names the socket file; nothing listens on TCP.
const REPLAY_PORT: &str = "5432";
/// How often replay progress is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

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
    /// The Docker engine failed to run the replay container.
    #[error("the replay container failed")]
    Container(#[source] DockerError),
    /// A stray replay could not be stopped.
    #[error("cannot stop the stray replay")]
    Stray(#[source] super::postgres_process::StillRunning),
    /// The spec names no volume (only possible when it bypassed the loader).
    #[error("recoveredVolume has neither `path` nor `dockerVolume`")]
    NoVolume,
}

/// Replays a recovered data directory until postgres has left recovery.
#[async_trait]
pub trait ReplayDriver: Send + Sync + std::fmt::Debug {
    /// Replays the volume (its files at `data_dir` on this host) as `owner`, where
    /// `volume.replay` places it; postgres is stopped cleanly when it returns Ok, and
    /// stopped anyway when it returns an error.
    async fn replay(
        &self,
        pipeline: &str,
        volume: &RecoveredVolumeSpec,
        data_dir: &Path,
        owner: RunAs,
    ) -> Result<ReplayOutcome, ReplayError>;

    /// Stops a replay an interrupted reconciler left running (fast shutdown, then
    /// immediate after `timeout`).
    async fn stop_stray(
        &self,
        stray: &StrayReplay,
        data_dir: &Path,
        timeout: Duration,
    ) -> Result<(), ReplayError>;
}

/// Runs postgres where [`ReplayPlacement::of`] places it: a child process of the
/// reconciler, or a container made for the replay.
#[derive(Debug, Clone)]
pub struct LocalReplay {
    tools: Arc<dyn CommandRunner>,
    docker: Arc<DockerEngine>,
    placer: Placer,
    cancel: CancellationToken,
}

impl LocalReplay {
    /// Replay whose postgres and tools run where `placer` places them, abandoned
    /// (cleanly) when its cancellation fires.
    pub fn new(placer: Placer) -> Self {
        Self {
            tools: placer.runner(&Placement::Host),
            docker: placer.docker().clone(),
            cancel: placer.cancel().clone(),
            placer,
        }
    }
}

/// The replay's server flags after `-D`: the spec's settings first, then the fixed
/// ones, so that no setting in the spec can override them (postgres keeps the last
/// value given): no TCP listener, no archiving, logs to stderr.
fn server_flags(spec: &ReplaySpec, socket_dir: &str) -> Vec<String> {
    let mut flags = Vec::new();
    for (name, value) in &spec.settings {
        flags.push("-c".to_string());
        flags.push(format!("{}={}", name.as_str(), value.as_str()));
    }
    for flag in [
        "-k",
        socket_dir,
        "-p",
        REPLAY_PORT,
        "-c",
        "listen_addresses=",
        "-c",
        "archive_mode=off",
        "-c",
        "logging_collector=off",
        "-c",
        "log_destination=stderr",
    ] {
        flags.push(flag.to_string());
    }
    flags
}

/// `psql` asking whether recovery ended: the LSN once it did, `in recovery` before.
fn probe_command(spec: &ReplaySpec, socket_dir: &str, owner: RunAs) -> CommandLine {
    CommandLine::new(spec.postgres_bin.as_path().join("psql"), Duration::from_secs(30))
        .args(["-X", "-A", "-t", "-q", "-h", socket_dir, "-p", REPLAY_PORT, "-U"])
        .arg(spec.database_user.as_str())
        .args(["-d", "template1", "-c"])
        .arg("select case when pg_is_in_recovery() then 'in recovery' else pg_current_wal_lsn()::text end")
        .env("PGCONNECT_TIMEOUT", "5")
        .run_as(Some(owner))
}

/// Reads pg_controldata's verdict on a stopped cluster.
async fn confirm_shut_down(
    tools: &dyn CommandRunner,
    spec: &ReplaySpec,
    data_dir: &Path,
    owner: RunAs,
) -> Result<Option<String>, ReplayError> {
    let controldata = CommandLine::new(
        spec.postgres_bin.as_path().join("pg_controldata"),
        Duration::from_secs(60),
    )
    .arg(data_dir)
    .env("LC_ALL", "C")
    .run_as(Some(owner));
    let out = tools.run(&controldata).await.map_err(ReplayError::Tool)?;
    let state = controldata_field(&out.stdout, "Database cluster state");
    if !out.success() {
        return Err(ReplayError::UncleanStop {
            detail: format!(
                "pg_controldata could not tell ({}): {}",
                out.status_text(),
                out.last_words()
            ),
        });
    }
    if !cluster_state_is_clean(&out.stdout) {
        return Err(ReplayError::UncleanStop {
            detail: format!(
                "pg_controldata reports cluster state {:?}",
                state.unwrap_or("unreadable")
            ),
        });
    }
    Ok(controldata_field(&out.stdout, "Time of latest checkpoint").map(String::from))
}

impl LocalReplay {
    async fn replay_in_container(
        &self,
        volume: &RecoveredVolumeSpec,
        container: &ReplayContainer,
        owner: RunAs,
    ) -> Result<ReplayOutcome, ReplayError> {
        let spec = &volume.replay;
        // The socket lives in the container's own /tmp: nothing outside reaches it.
        let socket_dir = "/tmp";
        let mut argv = vec![
            spec.postgres_bin
                .as_path()
                .join("postgres")
                .display()
                .to_string(),
            "-D".to_string(),
            container.data_dir.clone(),
        ];
        argv.extend(server_flags(spec, socket_dir));
        let name = container.name.clone();
        let server = ContainerSpec {
            name: name.clone(),
            image: container.image.clone(),
            argv,
            user: Some(format!("{}:{}", owner.uid, owner.gid)),
            env: container.env.clone(),
            mounts: vec![container.mount.clone()],
            labels: container.labels.clone(),
            // postgres' fast shutdown; Docker's default SIGTERM is the smart one,
            // which waits for clients.
            stop_signal: Some("SIGINT".to_string()),
        };
        tracing::info!(container = %name, image = %server.image, "starting a replay container");
        self.docker
            .start(&server)
            .await
            .map_err(ReplayError::Container)?;
        let stop_timeout = spec.stop_timeout.to_std();
        // A shutdown is noticed by the wait below, which leaves the stop to us.
        let _ = super::pause::pause_point("replay", &self.cancel).await;
        let replayed = self.wait_in_container(&name, spec, socket_dir, owner).await;
        // Whatever happened, the container goes: stopped cleanly if it still runs.
        let stopped = self.docker.stop_and_remove(&name, stop_timeout).await;
        let replayed_to = replayed?;
        match stopped {
            Ok(Some(0)) => {}
            Ok(code) => {
                return Err(ReplayError::UncleanStop {
                    detail: format!(
                        "the replay container ended with {} (fast shutdown took longer than {}?)",
                        code.map_or("no exit code".to_string(), |c| format!("exit code {c}")),
                        spec.stop_timeout
                    ),
                });
            }
            Err(e) => return Err(ReplayError::Container(e)),
        }
        let tools = self.placer.runner(&container.tools);
        let checkpoint_time =
            confirm_shut_down(tools.as_ref(), spec, Path::new(&container.data_dir), owner).await?;
        Ok(ReplayOutcome {
            replayed_to_lsn: replayed_to,
            checkpoint_time,
        })
    }

    /// Probes the replay container until recovery ended; the caller stops it.
    async fn wait_in_container(
        &self,
        name: &str,
        spec: &ReplaySpec,
        socket_dir: &str,
        owner: RunAs,
    ) -> Result<String, ReplayError> {
        let probe = probe_command(spec, socket_dir, owner);
        let inside = self.placer.runner(&Placement::Exec {
            container: name.to_string(),
        });
        let deadline = Instant::now() + spec.timeout.to_std();
        let mut last_probe = "not probed yet".to_string();
        loop {
            if let Some(code) = self
                .docker
                .exit_code(name)
                .await
                .map_err(ReplayError::Container)?
            {
                return Err(ReplayError::Exited {
                    status: format!("container exit code {code}"),
                    log_tail: self.docker.log_tail(name, 3).await,
                });
            }
            if self.cancel.is_cancelled() {
                return Err(ReplayError::Cancelled);
            }
            if Instant::now() >= deadline {
                return Err(ReplayError::TimedOut {
                    timeout: spec.timeout.to_std(),
                    last_probe,
                });
            }
            match inside.run(&probe).await {
                Ok(out) if out.success() && out.stdout.trim().contains('/') => {
                    return Ok(out.stdout.trim().to_string());
                }
                Ok(out) if out.success() => last_probe = out.stdout.trim().to_string(),
                Ok(out) => last_probe = out.last_words(),
                Err(e) => last_probe = crate::errors::error_chain(&e),
            }
            tokio::select! {
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
                () = self.cancel.cancelled() => {}
            }
        }
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

/// Whether pg_controldata's output says the cluster was shut down cleanly: exactly
/// `shut down`, not `shut down in recovery` (stopped before recovery ended), nor
/// `in production` or `in crash recovery` (killed, or stopped immediately).
pub fn cluster_state_is_clean(controldata_output: &str) -> bool {
    controldata_field(controldata_output, "Database cluster state") == Some("shut down")
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
        pipeline: &str,
        volume: &RecoveredVolumeSpec,
        data_dir: &Path,
        owner: RunAs,
    ) -> Result<ReplayOutcome, ReplayError> {
        let placement = ReplayPlacement::of(pipeline, volume).map_err(|_| ReplayError::NoVolume)?;
        if let ReplayPlacement::Container(container) = &placement {
            return self.replay_in_container(volume, container, owner).await;
        }
        let spec = &volume.replay;
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

        let socket = socket_dir.path().display().to_string();
        let server = CommandLine::new(bin.join("postgres"), spec.timeout.to_std())
            .arg("-D")
            .arg(data_dir)
            .args(server_flags(spec, &socket))
            .run_as(Some(owner));
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
        let probe = probe_command(spec, &socket, owner);
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
                stop_child(&mut child, spec.stop_timeout.to_std()).await;
                return Err(ReplayError::Cancelled);
            }
            if Instant::now() >= deadline {
                stop_child(&mut child, spec.stop_timeout.to_std()).await;
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
        // A test hook: paused here, a test stops postgres behind our back.
        if super::pause::pause_point("replay:finished", &self.cancel)
            .await
            .is_err()
        {
            stop_child(&mut child, spec.stop_timeout.to_std()).await;
            return Err(ReplayError::Cancelled);
        }
        if !stop_child(&mut child, spec.stop_timeout.to_std()).await {
            return Err(ReplayError::UncleanStop {
                detail: format!(
                    "fast shutdown took longer than {}; stopped immediately",
                    spec.stop_timeout
                ),
            });
        }
        let checkpoint_time = confirm_shut_down(self.tools.as_ref(), spec, data_dir, owner).await?;
        Ok(ReplayOutcome {
            replayed_to_lsn: replayed_to,
            checkpoint_time,
        })
    }

    async fn stop_stray(
        &self,
        stray: &StrayReplay,
        data_dir: &Path,
        timeout: Duration,
    ) -> Result<(), ReplayError> {
        match stray {
            StrayReplay::Process { pid } => {
                super::postgres_process::stop_stray_replay(data_dir, *pid, timeout)
                    .await
                    .map_err(ReplayError::Stray)
            }
            StrayReplay::Container { container } => self
                .docker
                .stop_and_remove(container, timeout)
                .await
                .map(|_| ())
                .map_err(ReplayError::Container),
        }
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

    #[test]
    fn only_a_clean_shut_down_counts() {
        let with_state = |state: &str| {
            format!(
                "pg_control version number:            1300\nDatabase cluster state:               {state}\nTime of latest checkpoint:            Mon Nov 23 18:38:36 2026\n"
            )
        };
        assert!(cluster_state_is_clean(&with_state("shut down")));
        for unclean in [
            "shut down in recovery",
            "in production",
            "in crash recovery",
            "in archive recovery",
            "shutting down",
        ] {
            assert!(!cluster_state_is_clean(&with_state(unclean)), "{unclean}");
        }
        assert!(!cluster_state_is_clean(
            "pg_controldata: could not open file"
        ));
        assert!(!cluster_state_is_clean(""));
    }
}
