//! WAL replay by a short-lived postgres: a child process of the reconciler, or a
//! container made for the replay and removed after it.
//!
//! The volume is replayed as a standby (the executor puts `standby.signal` there
//! first) from the WAL in its `pg_wal`, with no restore_command and no primary: the
//! driver starts `postgres` directly (not via `pg_ctl`, whose `-o` options go
//! through a shell) on a private socket directory with no TCP listener, waits until
//! `pg_last_wal_replay_lsn()` reaches the end of the newest segment it was given
//! (or, inside that segment, stops moving: its last record continues in a segment
//! not archived yet), stops it with a fast shutdown, and confirms with
//! `pg_controldata` that the cluster state is `shut down in recovery`. A standby
//! never leaves recovery, so it never writes WAL of its own: the next refresh can
//! replay the primary's next segments on top of it. Whatever happens, the postgres
//! it started is stopped before it returns.
//!
//! The sequence ([`replay_on`]) is written once, on top of [`ReplayServer`]: start a
//! postgres, ask it whether recovery ended, stop it cleanly, read pg_controldata.
//! Its two placements: [`HostServer`], a child process on a private socket
//! directory, probed by `psql` here; [`ContainerServer`], a container whose
//! entrypoint is `postgres` itself with the same flags (whatever the image would
//! start), probed by `psql` exec'd into it, stopped by the container's stop with
//! SIGINT as its stop signal, and read by `pg_controldata` in a short-lived
//! container of the same image. This driver never writes the volume's marker (the
//! executor does, after it returned Ok) and never chooses its placement.
//!
//! Just over 600 lines: the one replay sequence, its two placements (this host, a
//! container) and their tests stay together so that the sequence is read once.

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
use super::wal_segment::{Segment, format_lsn, parse_lsn};
use crate::observed::StrayReplay;
use crate::spec::{HumanDuration, RecoveredVolumeSpec, ReplaySpec};

pub use super::postgres_process::SOCKET_DIR_PREFIX;
/// The port only names the socket file; nothing listens on TCP.
const REPLAY_PORT: &str = "5432";
/// How often replay progress is probed while a replay is young: most nightly
/// replays end within seconds, and each probe is one short `psql`.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// How often once it ran [`PROBE_PATIENCE`]: a replay that long (up to an hour at
/// production size) loses nothing by a second's later notice, and saves probes.
const SLOW_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// When probing slows down.
const PROBE_PATIENCE: Duration = Duration::from_secs(30);

/// The wait before the next probe, `running` into the replay.
fn probe_interval(running: Duration) -> Duration {
    if running < PROBE_PATIENCE {
        PROBE_INTERVAL
    } else {
        SLOW_PROBE_INTERVAL
    }
}
/// How long replay must stand still inside the newest segment before it counts as
/// done: the startup process reads a segment in far less, and rescans `pg_wal`
/// every 5 s (`wal_retrieve_retry_interval`) once it has nothing more to read.
const STALL_PERIOD: Duration = Duration::from_secs(12);

/// What a finished replay reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOutcome {
    /// `pg_last_wal_replay_lsn()` when replay was done.
    pub replayed_to_lsn: String,
    /// pg_controldata's "Time of latest checkpoint" after the clean stop.
    pub checkpoint_time: Option<String>,
    /// pg_controldata's "Latest checkpoint's TimeLineID" after the clean stop.
    pub timeline: Option<u32>,
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
    /// The replay postgres is out of recovery: the volume was started without
    /// `standby.signal`, and has forked from the primary's history.
    #[error("postgres left recovery during a standby replay; the volume must be recovered again")]
    Promoted,
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

/// Replays a volume as a standby through the newest WAL segment in its `pg_wal`.
#[async_trait]
pub trait ReplayDriver: Send + Sync + std::fmt::Debug {
    /// Replays the volume (its files at `data_dir` on this host, `standby.signal`
    /// in place) as `owner`, where `volume.replay` places it, until segment
    /// `through` is replayed; postgres is stopped (`shut down in recovery`) when it
    /// returns Ok, and stopped anyway when it returns an error.
    async fn replay(
        &self,
        pipeline: &str,
        volume: &RecoveredVolumeSpec,
        data_dir: &Path,
        owner: RunAs,
        through: Segment,
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
    placer: Placer,
}

impl LocalReplay {
    /// Replay whose postgres and tools run where `placer` places them, abandoned
    /// (cleanly) when its cancellation fires.
    pub fn new(placer: Placer) -> Self {
        Self { placer }
    }
}

/// The replay's server flags after `-D`: the spec's settings first, then the fixed
/// ones, so that no setting in the spec can override them (postgres keeps the last
/// value given): no TCP listener, no archiving, logs to stderr; a hot standby (so
/// that replay progress can be asked) with no primary to follow and no
/// restore_command: it replays what is in `pg_wal`, whatever
/// `postgresql.auto.conf` came with the backup.
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
        "-c",
        "hot_standby=on",
        "-c",
        "primary_conninfo=",
        "-c",
        "restore_command=",
    ] {
        flags.push(flag.to_string());
    }
    flags
}

/// `psql` asking how far the standby replayed: an LSN, or `promoted` should it
/// have left recovery.
fn probe_command(spec: &ReplaySpec, socket_dir: &str, owner: RunAs) -> CommandLine {
    CommandLine::new(spec.postgres_bin.as_path().join("psql"), Duration::from_secs(30))
        .args(["-X", "-A", "-t", "-q", "-h", socket_dir, "-p", REPLAY_PORT, "-U"])
        .arg(spec.database_user.as_str())
        .args(["-d", "template1", "-c"])
        .arg("select case when pg_is_in_recovery() then coalesce(pg_last_wal_replay_lsn()::text, 'nothing replayed yet') else 'promoted' end")
        .env("PGCONNECT_TIMEOUT", "5")
        .run_as(Some(owner))
}

/// Reads pg_controldata's verdict on a stopped standby: the checkpoint time and
/// the timeline.
async fn confirm_at_rest(
    tools: &dyn CommandRunner,
    spec: &ReplaySpec,
    data_dir: &Path,
    owner: RunAs,
) -> Result<(Option<String>, Option<u32>), ReplayError> {
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
    if !standby_is_at_rest(&out.stdout) {
        return Err(ReplayError::UncleanStop {
            detail: format!(
                "pg_controldata reports cluster state {:?}, not \"shut down in recovery\"",
                state.unwrap_or("unreadable")
            ),
        });
    }
    Ok((
        controldata_field(&out.stdout, "Time of latest checkpoint").map(String::from),
        controldata_field(&out.stdout, "Latest checkpoint's TimeLineID")
            .and_then(|t| t.parse().ok()),
    ))
}

/// A postgres started for a replay, wherever it runs: what the replay sequence
/// ([`replay_on`]) needs of it. Two placements implement it: [`HostServer`] and
/// [`ContainerServer`].
#[async_trait]
trait ReplayServer: Send + Sync {
    /// [`ReplayError::Exited`] once the server exited on its own.
    async fn check_running(&mut self) -> Result<(), ReplayError>;
    /// Stops it with a fast shutdown; [`ReplayError::UncleanStop`] when that did not
    /// complete in time (it is then stopped harder). Never leaves it running.
    async fn stop(&mut self) -> Result<(), ReplayError>;
    /// Where `psql` reaches the server.
    fn probe_runner(&self) -> Arc<dyn CommandRunner>;
    /// The socket directory, as the probe sees it.
    fn socket_dir(&self) -> &str;
    /// Where `pg_controldata` runs, once the server stopped.
    fn tools(&self) -> Arc<dyn CommandRunner>;
    /// The data directory, as those tools see it.
    fn data_dir(&self) -> &Path;
}

/// The replay, written once for every placement: wait until `through` is replayed
/// (or stop on shutdown, timeout or exit), stop postgres cleanly, and confirm with
/// `pg_controldata` that the cluster is `shut down in recovery`. The server is
/// stopped on every path out.
async fn replay_on(
    server: &mut dyn ReplayServer,
    spec: &ReplaySpec,
    owner: RunAs,
    through: Segment,
    cancel: &CancellationToken,
) -> Result<ReplayOutcome, ReplayError> {
    // A shutdown is noticed by the wait below, which stops postgres cleanly.
    super::pause::pause_point!("replay", cancel, else {});
    let replayed_to = match wait_until_replayed(server, spec, owner, through, cancel).await {
        Ok(lsn) => lsn,
        Err(e) => {
            let _ = server.stop().await;
            return Err(e);
        }
    };
    tracing::info!(lsn = %replayed_to, "replay through the newest segment done; stopping postgres");
    // A test hook: paused here, a test stops postgres behind our back.
    super::pause::pause_point!("replay:finished", cancel, else {
        let _ = server.stop().await;
        return Err(ReplayError::Cancelled);
    });
    server.stop().await?;
    let (checkpoint_time, timeline) =
        confirm_at_rest(server.tools().as_ref(), spec, server.data_dir(), owner).await?;
    Ok(ReplayOutcome {
        replayed_to_lsn: replayed_to,
        checkpoint_time,
        timeline,
    })
}

/// Probes the server until segment `through` is replayed and returns the LSN; the
/// caller stops it. Done at the segment's end (a segment closed by a WAL switch,
/// as barman's `switch-wal` leaves the newest), or when replay stands still inside
/// it for [`STALL_PERIOD`]: everything there is to read was read.
async fn wait_until_replayed(
    server: &mut dyn ReplayServer,
    spec: &ReplaySpec,
    owner: RunAs,
    through: Segment,
    cancel: &CancellationToken,
) -> Result<String, ReplayError> {
    let probe = probe_command(spec, server.socket_dir(), owner);
    let runner = server.probe_runner();
    let began = Instant::now();
    let deadline = began + spec.timeout.to_std();
    let mut last_probe = "not probed yet".to_string();
    let mut standing: Option<(u64, Instant)> = None;
    loop {
        server.check_running().await?;
        if cancel.is_cancelled() {
            return Err(ReplayError::Cancelled);
        }
        if Instant::now() >= deadline {
            return Err(ReplayError::TimedOut {
                timeout: spec.timeout.to_std(),
                last_probe,
            });
        }
        match runner.run(&probe).await {
            Ok(out) if out.success() && out.stdout.trim() == "promoted" => {
                return Err(ReplayError::Promoted);
            }
            Ok(out) if out.success() && parse_lsn(&out.stdout).is_some() => {
                let text = out.stdout.trim().to_string();
                let lsn = parse_lsn(&text).unwrap_or_default();
                if lsn >= through.end_lsn() {
                    return Ok(text);
                }
                match standing {
                    Some((at, since)) if at == lsn => {
                        if lsn >= through.start_lsn() && since.elapsed() >= STALL_PERIOD {
                            tracing::info!(lsn = %text, segment = %through, "replay stands still inside the newest segment: all archived WAL is replayed");
                            return Ok(text);
                        }
                    }
                    _ => standing = Some((lsn, Instant::now())),
                }
                last_probe = format!(
                    "replayed to {text}, waiting for {}",
                    format_lsn(through.end_lsn())
                );
            }
            Ok(out) if out.success() => last_probe = out.stdout.trim().to_string(),
            Ok(out) => last_probe = out.last_words(),
            Err(e) => last_probe = crate::errors::error_chain(&e),
        }
        tokio::select! {
            () = tokio::time::sleep(probe_interval(began.elapsed())) => {}
            () = cancel.cancelled() => {}
        }
    }
}

/// postgres as a child process of the reconciler, on a private socket directory
/// named `reconciler-replay-*` (how a stray one is recognised), logging into it.
struct HostServer {
    child: tokio::process::Child,
    /// Removed when the server is dropped.
    _socket_dir: tempfile::TempDir,
    socket: String,
    log_path: PathBuf,
    data_dir: PathBuf,
    tools: Arc<dyn CommandRunner>,
    stop_timeout: HumanDuration,
}

impl HostServer {
    async fn start(
        spec: &ReplaySpec,
        data_dir: &Path,
        owner: RunAs,
        tools: Arc<dyn CommandRunner>,
    ) -> Result<Self, ReplayError> {
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
        let socket = socket_dir.path().display().to_string();
        let server = CommandLine::new(
            spec.postgres_bin.as_path().join("postgres"),
            spec.timeout.to_std(),
        )
        .arg("-D")
        .arg(data_dir)
        .args(server_flags(spec, &socket))
        .run_as(Some(owner));
        tracing::info!(command = %server, "starting postgres to replay WAL");
        let child = LocalProcess::prepare(&server)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|source| ReplayError::Start {
                data_dir: data_dir.to_path_buf(),
                source,
            })?;
        Ok(Self {
            child,
            _socket_dir: socket_dir,
            socket,
            log_path,
            data_dir: data_dir.to_path_buf(),
            tools,
            stop_timeout: spec.stop_timeout,
        })
    }
}

#[async_trait]
impl ReplayServer for HostServer {
    async fn check_running(&mut self) -> Result<(), ReplayError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(ReplayError::Exited {
                status: status.to_string(),
                log_tail: log_tail(&self.log_path),
            }),
            _ => Ok(()),
        }
    }

    async fn stop(&mut self) -> Result<(), ReplayError> {
        if stop_child(&mut self.child, self.stop_timeout.to_std()).await {
            Ok(())
        } else {
            Err(ReplayError::UncleanStop {
                detail: format!(
                    "fast shutdown took longer than {}; stopped immediately",
                    self.stop_timeout
                ),
            })
        }
    }

    fn probe_runner(&self) -> Arc<dyn CommandRunner> {
        self.tools.clone()
    }

    fn socket_dir(&self) -> &str {
        &self.socket
    }

    fn tools(&self) -> Arc<dyn CommandRunner> {
        self.tools.clone()
    }

    fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// postgres as the entrypoint of a container made for the replay: probed by exec,
/// stopped by the container's stop (SIGINT, its stop signal, is the fast
/// shutdown) and removed, its data read by a one-shot container of the same image.
struct ContainerServer {
    docker: Arc<DockerEngine>,
    name: String,
    inside: Arc<dyn CommandRunner>,
    tools: Arc<dyn CommandRunner>,
    data_dir: PathBuf,
    stop_timeout: HumanDuration,
}

/// The socket lives in the container's own /tmp: nothing outside reaches it.
const CONTAINER_SOCKET_DIR: &str = "/tmp";

impl ContainerServer {
    async fn start(
        spec: &ReplaySpec,
        container: &ReplayContainer,
        owner: RunAs,
        placer: &Placer,
    ) -> Result<Self, ReplayError> {
        let mut argv = vec![
            spec.postgres_bin
                .as_path()
                .join("postgres")
                .display()
                .to_string(),
            "-D".to_string(),
            container.data_dir.clone(),
        ];
        argv.extend(server_flags(spec, CONTAINER_SOCKET_DIR));
        let server = ContainerSpec {
            name: container.name.clone(),
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
        tracing::info!(container = %server.name, image = %server.image, "starting a replay container");
        placer
            .docker()
            .start(&server)
            .await
            .map_err(ReplayError::Container)?;
        Ok(Self {
            docker: placer.docker().clone(),
            name: container.name.clone(),
            inside: placer.runner(&Placement::Exec {
                container: container.name.clone(),
            }),
            tools: placer.runner(&container.tools),
            data_dir: PathBuf::from(&container.data_dir),
            stop_timeout: spec.stop_timeout,
        })
    }
}

#[async_trait]
impl ReplayServer for ContainerServer {
    async fn check_running(&mut self) -> Result<(), ReplayError> {
        match self.docker.exit_code(&self.name).await {
            Ok(None) => Ok(()),
            Ok(Some(code)) => Err(ReplayError::Exited {
                status: format!("container exit code {code}"),
                log_tail: self.docker.log_tail(&self.name, 3).await,
            }),
            Err(e) => Err(ReplayError::Container(e)),
        }
    }

    async fn stop(&mut self) -> Result<(), ReplayError> {
        // Whatever happened, the container goes: stopped cleanly if it still runs.
        match self
            .docker
            .stop_and_remove(&self.name, self.stop_timeout.to_std())
            .await
        {
            Ok(Some(0)) => Ok(()),
            Ok(code) => Err(ReplayError::UncleanStop {
                detail: format!(
                    "the replay container ended with {} (fast shutdown took longer than {}?)",
                    code.map_or("no exit code".to_string(), |c| format!("exit code {c}")),
                    self.stop_timeout
                ),
            }),
            Err(e) => Err(ReplayError::Container(e)),
        }
    }

    fn probe_runner(&self) -> Arc<dyn CommandRunner> {
        self.inside.clone()
    }

    fn socket_dir(&self) -> &str {
        CONTAINER_SOCKET_DIR
    }

    fn tools(&self) -> Arc<dyn CommandRunner> {
        self.tools.clone()
    }

    fn data_dir(&self) -> &Path {
        &self.data_dir
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

/// Whether pg_controldata's output says a standby was stopped cleanly while in
/// recovery: exactly `shut down in recovery`. A `shut down` volume left recovery
/// and wrote WAL of its own, so it can no longer replay the primary's.
pub fn standby_is_at_rest(controldata_output: &str) -> bool {
    controldata_field(controldata_output, "Database cluster state") == Some("shut down in recovery")
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
        through: Segment,
    ) -> Result<ReplayOutcome, ReplayError> {
        let spec = &volume.replay;
        let placement = ReplayPlacement::of(pipeline, volume).map_err(|_| ReplayError::NoVolume)?;
        let mut server: Box<dyn ReplayServer> = match &placement {
            ReplayPlacement::Host => Box::new(
                HostServer::start(spec, data_dir, owner, self.placer.runner(&Placement::Host))
                    .await?,
            ),
            ReplayPlacement::Container(container) => {
                Box::new(ContainerServer::start(spec, container, owner, &self.placer).await?)
            }
        };
        replay_on(server.as_mut(), spec, owner, through, self.placer.cancel()).await
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
                .placer
                .docker()
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
    fn a_young_replay_is_probed_often_a_long_one_seldom() {
        assert_eq!(probe_interval(Duration::ZERO), Duration::from_millis(200));
        assert_eq!(
            probe_interval(Duration::from_secs(29)),
            Duration::from_millis(200)
        );
        assert_eq!(
            probe_interval(Duration::from_secs(30)),
            Duration::from_secs(1)
        );
        assert_eq!(
            probe_interval(Duration::from_secs(3600)),
            Duration::from_secs(1)
        );
    }

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

    /// Only a standby stopped cleanly in recovery can replay more WAL later; a
    /// `shut down` volume left recovery and wrote WAL of its own.
    #[test]
    fn only_a_standby_shut_down_in_recovery_is_at_rest() {
        let with_state = |state: &str| format!("Database cluster state:               {state}\n");
        assert!(standby_is_at_rest(&with_state("shut down in recovery")));
        for other in ["shut down", "in archive recovery", "in production", ""] {
            assert!(!standby_is_at_rest(&with_state(other)), "{other}");
        }
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
