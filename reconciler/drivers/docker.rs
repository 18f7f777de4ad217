//! The Docker engine, reached through its API (bollard): where a command runs when
//! it runs in a container, and the facts about containers and volumes the other
//! drivers need.
//!
//! Two placements implement [`CommandRunner`]: [`DockerExec`] runs an argv in a
//! running container (`docker exec`), [`ShortLivedContainer`] in a container made
//! for that one command and removed after it. What runs is the calling driver's
//! business, exactly as with [`super::command::LocalProcess`]. Nothing here decides
//! anything; an engine that does not answer is an error the observer turns into
//! `Unknown`.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::command::{CommandError, CommandLine, CommandOutput, CommandRunner, TERMINATE_GRACE};

/// The label every container and volume the reconciler creates carries: the
/// pipeline it belongs to.
pub const PIPELINE_LABEL: &str = "reconciler.montagu/pipeline";
/// The label saying what a reconciler-made container is for (`replay`, `tool`).
pub const ROLE_LABEL: &str = "reconciler.montagu/role";

/// Why the Docker engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// No engine answers at `DOCKER_HOST` (or the default socket).
    #[error("the Docker engine does not answer (DOCKER_HOST or /var/run/docker.sock)")]
    Unreachable(#[source] bollard::errors::Error),
    /// The engine refused or failed a request.
    #[error("docker: cannot {what}")]
    Api {
        /// What was asked.
        what: String,
        /// The engine's answer.
        #[source]
        source: bollard::errors::Error,
    },
    /// The container does not exist.
    #[error("container `{name}` does not exist")]
    NoSuchContainer {
        /// Its name.
        name: String,
    },
    /// `DOCKER_HOST` names an engine on another host: its volumes' mount points and
    /// its processes are not this host's.
    #[error(
        "DOCKER_HOST `{host}` is not a local unix socket; the reconciler must run beside the engine"
    )]
    NotLocal {
        /// The address.
        host: String,
    },
    /// A container of the name the reconciler needs exists and is not its own.
    #[error("container `{name}` exists and was not made by the reconciler; remove or rename it")]
    NameTaken {
        /// The name.
        name: String,
    },
    /// The volume does not exist.
    #[error("volume `{name}` does not exist")]
    NoSuchVolume {
        /// Its name.
        name: String,
    },
    /// The container exists but does not run.
    #[error("container `{name}` is not running (it is {state})")]
    NotRunning {
        /// Its name.
        name: String,
        /// Its state (`exited`, `created`, …).
        state: String,
    },
}

impl DockerError {
    fn api(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Self {
        let what = what.into();
        move |source| DockerError::Api { what, source }
    }
}

/// True for the engine's 404 answer.
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// True for the engine's 304 answer (already started, already stopped).
fn is_not_modified(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

/// Where the engine listens when `DOCKER_HOST` says nothing.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// A container that mounts a volume or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountingContainer {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Whether it can write into what it mounts.
    pub read_write: bool,
}

/// What a container may mount.
#[derive(Debug, Clone, Copy)]
pub enum Mounted<'a> {
    /// A named volume.
    Volume(&'a str),
    /// A directory of this host, bind-mounted.
    Directory(&'a std::path::Path),
}

impl fmt::Display for Mounted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mounted::Volume(name) => write!(f, "Docker volume {name}"),
            Mounted::Directory(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Whether a bind mount of `source` lets a container write into `dir`: it is the
/// directory, inside it, or a directory holding it, by path components.
fn bind_covers(source: &std::path::Path, dir: &std::path::Path) -> bool {
    source.starts_with(dir) || dir.starts_with(source)
}

/// How long resolving one path may take: a bind source on a hung network mount
/// must not hang the reconciler.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// `path` with its symlinks resolved, as far as it exists: the deepest existing
/// ancestor is resolved and the rest appended, so a directory not created yet
/// under a symlinked parent still compares with binds of the real parent. The
/// path as written when it can't be resolved in time.
async fn resolved(path: &std::path::Path) -> std::path::PathBuf {
    let path = path.to_path_buf();
    let resolve = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            for ancestor in path.ancestors() {
                if let Ok(real) = std::fs::canonicalize(ancestor) {
                    let rest = path
                        .strip_prefix(ancestor)
                        .unwrap_or(std::path::Path::new(""));
                    return Some(if rest.as_os_str().is_empty() {
                        real
                    } else {
                        real.join(rest)
                    });
                }
            }
            None
        }
    });
    match tokio::time::timeout(RESOLVE_TIMEOUT, resolve).await {
        Ok(Ok(Some(real))) => real,
        _ => path,
    }
}

/// The host directories containers' mounts write into, looked up once per listing.
#[derive(Default)]
struct DirectorySources {
    /// Local volumes by name: the directory they bind (`o=bind`, `device=`), if any.
    volumes: HashMap<String, Option<std::path::PathBuf>>,
    /// Paths already resolved.
    resolved: HashMap<std::path::PathBuf, std::path::PathBuf>,
}

impl DirectorySources {
    /// The host directory mount `m` writes into: a bind's source, or the device of
    /// a local volume created to bind one (compose's `driver_opts: {type: none,
    /// o: bind, device: …}`, which the engine reports as a volume).
    async fn source(
        &mut self,
        docker: &Docker,
        m: &bollard::models::MountPoint,
    ) -> Result<Option<std::path::PathBuf>, DockerError> {
        match m.typ.as_deref() {
            Some("bind") => Ok(m.source.as_deref().map(Into::into)),
            Some("volume") if m.driver.as_deref() == Some("local") => {
                let Some(name) = m.name.as_deref() else {
                    return Ok(None);
                };
                if !self.volumes.contains_key(name) {
                    let device = match docker.inspect_volume(name).await {
                        Ok(v) => bound_device(&v.options),
                        // Removed since the listing: it binds nothing now.
                        Err(e) if is_not_found(&e) => None,
                        Err(e) => {
                            return Err(DockerError::api(format!("inspect volume {name}"))(e));
                        }
                    };
                    self.volumes.insert(name.to_string(), device);
                }
                Ok(self.volumes[name].clone())
            }
            _ => Ok(None),
        }
    }

    /// Whether a mount of `source` writes into `dir`, as written or with the
    /// symlinks of both resolved.
    async fn covers(&mut self, source: &std::path::Path, dir: &std::path::Path) -> bool {
        if bind_covers(source, dir) {
            return true;
        }
        let source = self.resolve(source).await;
        let dir = self.resolve(dir).await;
        bind_covers(&source, &dir)
    }

    async fn resolve(&mut self, path: &std::path::Path) -> std::path::PathBuf {
        if let Some(real) = self.resolved.get(path) {
            return real.clone();
        }
        let real = resolved(path).await;
        self.resolved.insert(path.to_path_buf(), real.clone());
        real
    }
}

/// The directory a local volume's options bind, if they do.
fn bound_device(options: &HashMap<String, String>) -> Option<std::path::PathBuf> {
    let binds = options
        .get("o")
        .is_some_and(|o| o.split(',').any(|o| o == "bind" || o == "rbind"));
    binds
        .then(|| options.get("device").map(Into::into))
        .flatten()
}

/// A connection to the engine, made on first use and kept once it worked, so a
/// reconciler whose specs use no Docker never talks to one.
#[derive(Default)]
pub struct DockerEngine {
    client: OnceCell<Docker>,
}

impl fmt::Debug for DockerEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerEngine")
            .field("connected", &self.client.initialized())
            .finish()
    }
}

impl DockerEngine {
    /// The client; connects (honouring `DOCKER_HOST`) and agrees on an API version
    /// the first time.
    pub async fn client(&self) -> Result<&Docker, DockerError> {
        self.client
            .get_or_try_init(|| async {
                // Volumes are read through their mount points and execs signalled by
                // their pids: both only mean something on the engine's own host.
                if let Ok(host) = std::env::var("DOCKER_HOST")
                    && !host.is_empty()
                    && !host.starts_with("unix://")
                {
                    return Err(DockerError::NotLocal { host });
                }
                let docker = Docker::connect_with_defaults().map_err(DockerError::Unreachable)?;
                // The engine may be older than this client (Debian's 20.10 speaks 1.41).
                docker
                    .negotiate_version()
                    .await
                    .map_err(DockerError::Unreachable)
            })
            .await
    }

    /// The state of a container (`running`, `exited`, …), `None` when absent.
    pub async fn container_state(&self, name: &str) -> Result<Option<String>, DockerError> {
        let docker = self.client().await?;
        match docker.inspect_container(name, None).await {
            Ok(c) => Ok(Some(
                c.state
                    .and_then(|s| s.status)
                    .map_or_else(|| "unknown".to_string(), |s| s.to_string()),
            )),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(DockerError::api(format!("inspect container {name}"))(e)),
        }
    }

    /// Fails unless the container runs.
    pub async fn require_running(&self, name: &str) -> Result<(), DockerError> {
        match self.container_state(name).await? {
            Some(state) if state == "running" => Ok(()),
            Some(state) => Err(DockerError::NotRunning {
                name: name.to_string(),
                state,
            }),
            None => Err(DockerError::NoSuchContainer {
                name: name.to_string(),
            }),
        }
    }

    /// Whether this host has an engine to ask: `DOCKER_HOST` names one, or the
    /// default socket exists. Asked on each use, so an engine installed or started
    /// later is seen; one named but not usable from here (`tcp://`) is asked all the
    /// same, and its error says why, rather than being taken for "no containers".
    pub fn configured() -> bool {
        match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.is_empty() => true,
            _ => std::path::Path::new(DEFAULT_SOCKET).exists(),
        }
    }

    /// Names of the running containers that mount volume `volume`, with their labels.
    pub async fn containers_using(
        &self,
        volume: &str,
    ) -> Result<Vec<MountingContainer>, DockerError> {
        self.containers_mounting(Mounted::Volume(volume), false)
            .await
    }

    /// Names of the running containers that mount `what`.
    pub async fn running_containers_mounting(
        &self,
        what: Mounted<'_>,
    ) -> Result<Vec<String>, DockerError> {
        Ok(self
            .containers_mounting(what, false)
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect())
    }

    /// The containers that mount `what`, running or not, that may have started
    /// after `since`, each said in words (`container X started at T`). One whose
    /// start time can't be read, or that was removed before it could be asked,
    /// counts: what it wrote is there all the same.
    pub async fn containers_started_since(
        &self,
        what: Mounted<'_>,
        since: jiff::Timestamp,
    ) -> Result<Vec<String>, DockerError> {
        let docker = self.client().await?;
        let mut started = Vec::new();
        for MountingContainer { name, .. } in self.containers_mounting(what, true).await? {
            let started_at = match docker.inspect_container(&name, None).await {
                Ok(c) => c.state.and_then(|s| s.started_at),
                Err(e) if is_not_found(&e) => {
                    started.push(format!(
                        "container {name}, removed before it could be asked when it started"
                    ));
                    continue;
                }
                Err(e) => return Err(DockerError::api(format!("inspect container {name}"))(e)),
            };
            let raw = started_at.unwrap_or_default();
            match raw.parse::<jiff::Timestamp>() {
                // Never started: year 1.
                Ok(at) if at <= since => {}
                Ok(at) => started.push(format!("container {name} started at {at}")),
                Err(_) => started.push(format!(
                    "container {name}, whose start time the engine gives as `{raw}`"
                )),
            }
        }
        Ok(started)
    }

    async fn containers_mounting(
        &self,
        what: Mounted<'_>,
        all: bool,
    ) -> Result<Vec<MountingContainer>, DockerError> {
        let docker = self.client().await?;
        // The engine filters by volume; bind mounts are matched here.
        let filters = match what {
            Mounted::Volume(volume) => HashMap::from([("volume", vec![volume.to_string()])]),
            Mounted::Directory(_) => HashMap::new(),
        };
        let list = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(all)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(DockerError::api(format!(
                "list the containers using {what}"
            )))?;
        let mut found = Vec::new();
        let mut directories = DirectorySources::default();
        for c in list {
            let mounts = match what {
                Mounted::Volume(_) => true,
                Mounted::Directory(dir) => {
                    let mut writes_into = false;
                    for m in c.mounts.iter().flatten().filter(|m| m.rw != Some(false)) {
                        if let Some(source) = directories.source(docker, m).await?
                            && directories.covers(&source, dir).await
                        {
                            writes_into = true;
                            break;
                        }
                    }
                    writes_into
                }
            };
            if mounts {
                // Only writable binds of a directory are counted. A volume mounted
                // only read-only (every mount of it says so) cannot be changed by
                // the container; one the engine does not describe counts as written.
                let read_write = match what {
                    Mounted::Volume(volume) => {
                        let of_volume: Vec<_> = c
                            .mounts
                            .iter()
                            .flatten()
                            .filter(|m| m.name.as_deref() == Some(volume))
                            .collect();
                        of_volume.is_empty() || of_volume.iter().any(|m| m.rw != Some(false))
                    }
                    Mounted::Directory(_) => true,
                };
                let name = c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .or(c.id)
                    .unwrap_or_default();
                found.push(MountingContainer {
                    name,
                    labels: c.labels.unwrap_or_default(),
                    read_write,
                });
            }
        }
        Ok(found)
    }

    /// Stops a container (its stop signal, then SIGKILL after `timeout`) and removes
    /// it. An absent container is fine. Returns its exit code when it had one.
    pub async fn stop_and_remove(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<i64>, DockerError> {
        let stopped = self.stop_request(name, timeout).await?;
        if let Err(e) = &stopped
            && is_not_found(e)
        {
            return Ok(None);
        }
        let code = self
            .client()
            .await?
            .inspect_container(name, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.exit_code);
        // Removed whatever the stop said: never left running.
        let removed = self.remove(name).await;
        stopped.map_err(DockerError::api(format!("stop container {name}")))?;
        removed?;
        Ok(code)
    }

    /// Stops a container (its stop signal, then SIGKILL after `timeout`) and leaves
    /// it in place, to be started again. A stopped one is fine.
    pub async fn stop(&self, name: &str, timeout: Duration) -> Result<(), DockerError> {
        self.stop_request(name, timeout)
            .await?
            .or_else(|e| if is_not_modified(&e) { Ok(()) } else { Err(e) })
            .map_err(DockerError::api(format!("stop container {name}")))
    }

    /// Asks the engine to stop a container: its stop signal, then SIGKILL after
    /// `timeout`. The outer error is the client's; the inner one the engine's answer.
    async fn stop_request(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Result<(), bollard::errors::Error>, DockerError> {
        // The engine answers a stop only once the container stopped: the request may
        // take the whole stop timeout, longer than the client's default limit.
        let docker = self
            .client()
            .await?
            .clone()
            .with_timeout(timeout + Duration::from_secs(60));
        let seconds = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        Ok(docker
            .stop_container(
                name,
                Some(StopContainerOptionsBuilder::new().t(seconds).build()),
            )
            .await)
    }

    /// Starts an existing container. A running one is fine.
    pub async fn start_existing(&self, name: &str) -> Result<(), DockerError> {
        let docker = self.client().await?;
        docker
            .start_container(name, None)
            .await
            .or_else(|e| if is_not_modified(&e) { Ok(()) } else { Err(e) })
            .map_err(DockerError::api(format!("start container {name}")))
    }

    /// Removes a container, killing it if it still runs. An absent one is fine.
    pub async fn remove(&self, name: &str) -> Result<(), DockerError> {
        let docker = self.client().await?;
        match docker
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(DockerError::api(format!("remove container {name}"))(e)),
        }
    }

    /// The last lines a container wrote, for error messages.
    pub async fn log_tail(&self, name: &str, lines: usize) -> String {
        let Ok(docker) = self.client().await else {
            return String::new();
        };
        let mut stream = docker.logs(
            name,
            Some(
                LogsOptionsBuilder::new()
                    .stdout(true)
                    .stderr(true)
                    .tail(&lines.to_string())
                    .build(),
            ),
        );
        let mut text = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

/// The argv of a command as the engine wants it (UTF-8 strings).
fn argv(command: &CommandLine) -> Vec<String> {
    std::iter::once(command.program.to_string_lossy().into_owned())
        .chain(
            command
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned()),
        )
        .collect()
}

fn env(command: &CommandLine) -> Vec<String> {
    command
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

fn user(command: &CommandLine) -> Option<String> {
    command.run_as.map(|a| format!("{}:{}", a.uid, a.gid))
}

fn placement_error(program: &str, source: DockerError) -> CommandError {
    CommandError::Placement {
        program: program.to_string(),
        source: Box::new(source),
    }
}

/// Collects an attached output stream into stdout and stderr.
async fn collect(
    mut output: impl futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
) -> Result<(Vec<u8>, Vec<u8>), bollard::errors::Error> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(chunk) = output.next().await {
        match chunk? {
            LogOutput::StdErr { message } => err.extend_from_slice(&message),
            other => out.extend_from_slice(&other.into_bytes()),
        }
    }
    Ok((out, err))
}

/// `pid` and every process below it, parents first, read from /proc.
fn process_tree(pid: i32) -> Vec<i32> {
    let mut tree = vec![pid];
    let mut next = 0;
    while next < tree.len() {
        let parent = tree[next];
        next += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            tree.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    tree
}

fn signal_tree(pid: i32, signal: Signal) {
    for member in process_tree(pid) {
        let _ = kill(Pid::from_raw(member), signal);
    }
}

/// The host pid of a running exec (the engine runs beside us: see `client`).
async fn exec_pid(docker: &Docker, exec_id: &str) -> Option<i32> {
    let info = docker.inspect_exec(exec_id).await.ok()?;
    (info.running == Some(true))
        .then_some(info.pid)
        .flatten()
        .filter(|p| *p > 0)
        .and_then(|p| i32::try_from(p).ok())
}

/// Kills an exec's whole process tree if its future is dropped before it ended
/// (a shutdown that gave up waiting), as a local command's process group is.
struct KillTreeOnDrop(Option<i32>);

impl Drop for KillTreeOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            signal_tree(pid, Signal::SIGKILL);
        }
    }
}

/// Runs commands in a running container, as `docker exec` does.
#[derive(Debug, Clone)]
pub struct DockerExec {
    engine: std::sync::Arc<DockerEngine>,
    container: String,
    cancel: CancellationToken,
}

impl DockerExec {
    /// Commands in `container`, stopped when `cancel` fires.
    pub fn new(
        engine: std::sync::Arc<DockerEngine>,
        container: impl Into<String>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            engine,
            container: container.into(),
            cancel,
        }
    }
}

/// Stops an exec'd command and everything it started (barman's rsync, say) by
/// their pids on this host, since the engine has no API to stop an exec: SIGTERM,
/// then SIGKILL after [`TERMINATE_GRACE`]. Only while the engine says it runs, so a
/// pid reused after it ended is never signalled.
async fn terminate_exec(docker: &Docker, exec_id: &str) {
    let Some(pid) = exec_pid(docker, exec_id).await else {
        return;
    };
    signal_tree(pid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + TERMINATE_GRACE;
    while tokio::time::Instant::now() < deadline {
        if exec_pid(docker, exec_id).await.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if exec_pid(docker, exec_id).await.is_some() {
        signal_tree(pid, Signal::SIGKILL);
    }
}

#[async_trait]
impl CommandRunner for DockerExec {
    async fn run(&self, command: &CommandLine) -> Result<CommandOutput, CommandError> {
        let program = command.program.display().to_string();
        if self.cancel.is_cancelled() {
            return Err(CommandError::Cancelled { program });
        }
        tracing::debug!(container = %self.container, command = %command, "running in container");
        let docker = self
            .engine
            .client()
            .await
            .map_err(|e| placement_error(&program, e))?;
        self.engine
            .require_running(&self.container)
            .await
            .map_err(|e| placement_error(&program, e))?;
        let exec = docker
            .create_exec(
                &self.container,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(argv(command)),
                    env: Some(env(command)),
                    user: user(command),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                placement_error(
                    &program,
                    DockerError::api(format!("exec in {}", self.container))(e),
                )
            })?;
        let started = docker.start_exec(&exec.id, None).await.map_err(|e| {
            placement_error(
                &program,
                DockerError::api(format!("exec in {}", self.container))(e),
            )
        })?;
        let StartExecResults::Attached { output, .. } = started else {
            return Err(CommandError::Wait {
                program,
                source: std::io::Error::other("the engine detached the exec"),
            });
        };
        let mut tree_guard = KillTreeOnDrop(
            if command.on_cancel == super::command::OnCancel::Terminate {
                exec_pid(docker, &exec.id).await
            } else {
                None
            },
        );
        #[cfg(feature = "failpoints")]
        if let Some(point) = command.pause_at
            && super::pause::pause(point, &self.cancel).await.is_err()
        {
            if command.on_cancel == super::command::OnCancel::Terminate {
                terminate_exec(docker, &exec.id).await;
            }
            tree_guard.0 = None;
            return Err(CommandError::Cancelled { program });
        }
        let finished = tokio::select! {
            finished = tokio::time::timeout(command.timeout, collect(output)) => finished,
            () = self.cancel.cancelled() => {
                if command.on_cancel == super::command::OnCancel::Terminate {
                    terminate_exec(docker, &exec.id).await;
                } else {
                    tracing::warn!(command = %command, "left running at shutdown");
                }
                tree_guard.0 = None;
                return Err(CommandError::Cancelled { program });
            }
        };
        let (out, err) = match finished {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                terminate_exec(docker, &exec.id).await;
                tree_guard.0 = None;
                return Err(CommandError::Wait {
                    program,
                    source: std::io::Error::other(e),
                });
            }
            Err(_) => {
                terminate_exec(docker, &exec.id).await;
                tree_guard.0 = None;
                return Err(CommandError::TimedOut {
                    command: command.to_string(),
                    timeout: command.timeout,
                });
            }
        };
        // The stream ends when the process closes its output; its exit code may take
        // a moment longer to be recorded.
        let mut code = None;
        for _ in 0..50 {
            let info = docker
                .inspect_exec(&exec.id)
                .await
                .map_err(|e| placement_error(&program, DockerError::api("inspect an exec")(e)))?;
            if info.running != Some(true) {
                code = info.exit_code;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Ended (or, with no code after 5 s, left to the engine): never signal it.
        tree_guard.0 = None;
        Ok(CommandOutput {
            code: code.and_then(|c| i32::try_from(c).ok()),
            signal: None,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        })
    }
}

/// A mount for a container the reconciler creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerMount {
    /// A named volume.
    Volume {
        /// The volume.
        name: String,
        /// Where it appears in the container.
        target: String,
        /// Mounted read-only.
        read_only: bool,
    },
    /// A host directory.
    Bind {
        /// The host directory.
        source: String,
        /// Where it appears in the container.
        target: String,
        /// Mounted read-only.
        read_only: bool,
    },
}

impl ContainerMount {
    fn to_api(&self) -> Mount {
        let (typ, source, target, read_only) = match self {
            ContainerMount::Volume {
                name,
                target,
                read_only,
            } => (MountType::VOLUME, name, target, read_only),
            ContainerMount::Bind {
                source,
                target,
                read_only,
            } => (MountType::BIND, source, target, read_only),
        };
        Mount {
            typ: Some(typ),
            source: Some(source.clone()),
            target: Some(target.clone()),
            read_only: Some(*read_only),
            ..Default::default()
        }
    }
}

/// How to create a container for the reconciler: no network, labelled, never
/// restarted.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Its name.
    pub name: String,
    /// The image (never pulled).
    pub image: String,
    /// The argv run as its entrypoint.
    pub argv: Vec<String>,
    /// `uid:gid`.
    pub user: Option<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    /// Its mounts.
    pub mounts: Vec<ContainerMount>,
    /// Labels (pipeline, role).
    pub labels: HashMap<String, String>,
    /// The signal `stop` sends first.
    pub stop_signal: Option<String>,
}

impl DockerEngine {
    /// Creates and starts a container. A leftover container of the same name (from
    /// a reconciler that was killed) is removed first.
    pub async fn start(&self, spec: &ContainerSpec) -> Result<(), DockerError> {
        let docker = self.client().await?;
        // A container of that name is ours to clear only if it carries our labels.
        match docker.inspect_container(&spec.name, None).await {
            Ok(existing) => {
                let labels = existing.config.and_then(|c| c.labels).unwrap_or_default();
                let ours = [PIPELINE_LABEL, ROLE_LABEL]
                    .iter()
                    .all(|l| labels.get(*l) == spec.labels.get(*l));
                if !ours {
                    return Err(DockerError::NameTaken {
                        name: spec.name.clone(),
                    });
                }
                // Left by an interrupted run: stopped with its own stop signal first.
                self.stop_and_remove(&spec.name, Duration::from_secs(60))
                    .await?;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(DockerError::api(format!("inspect container {}", spec.name))(e));
            }
        }
        let (entrypoint, cmd) = spec
            .argv
            .split_first()
            .map(|(p, rest)| (vec![p.clone()], rest.to_vec()))
            .unwrap_or_default();
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: Some(entrypoint),
            cmd: Some(cmd),
            user: spec.user.clone(),
            env: Some(spec.env.clone()),
            labels: Some(spec.labels.clone()),
            stop_signal: spec.stop_signal.clone(),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                mounts: Some(spec.mounts.iter().map(ContainerMount::to_api).collect()),
                network_mode: Some("none".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        docker
            .create_container(
                Some(
                    CreateContainerOptionsBuilder::new()
                        .name(&spec.name)
                        .build(),
                ),
                body,
            )
            .await
            .map_err(DockerError::api(format!(
                "create container {} from image {}",
                spec.name, spec.image
            )))?;
        if let Err(e) = docker.start_container(&spec.name, None).await {
            let _ = self.remove(&spec.name).await;
            return Err(DockerError::api(format!("start container {}", spec.name))(
                e,
            ));
        }
        Ok(())
    }

    /// Whether a container runs, and its exit code once it stopped.
    pub async fn exit_code(&self, name: &str) -> Result<Option<i64>, DockerError> {
        let docker = self.client().await?;
        let info = docker
            .inspect_container(name, None)
            .await
            .map_err(DockerError::api(format!("inspect container {name}")))?;
        let state = info.state.unwrap_or_default();
        Ok(if state.running == Some(true) {
            None
        } else {
            Some(state.exit_code.unwrap_or(-1))
        })
    }
}

/// Runs each command in a container made for it and removed after it: for a tool
/// that must see a volume (pg_controldata) where the host has no such tool.
#[derive(Debug, Clone)]
pub struct ShortLivedContainer {
    engine: std::sync::Arc<DockerEngine>,
    image: String,
    mounts: Vec<ContainerMount>,
    name: String,
    labels: HashMap<String, String>,
}

impl ShortLivedContainer {
    /// Commands in containers named `name` from `image` with `mounts`.
    pub fn new(
        engine: std::sync::Arc<DockerEngine>,
        image: impl Into<String>,
        mounts: Vec<ContainerMount>,
        name: impl Into<String>,
        labels: HashMap<String, String>,
    ) -> Self {
        Self {
            engine,
            image: image.into(),
            mounts,
            name: name.into(),
            labels,
        }
    }
}

#[async_trait]
impl CommandRunner for ShortLivedContainer {
    async fn run(&self, command: &CommandLine) -> Result<CommandOutput, CommandError> {
        let program = command.program.display().to_string();
        let spec = ContainerSpec {
            name: self.name.clone(),
            image: self.image.clone(),
            argv: argv(command),
            user: user(command),
            env: env(command),
            mounts: self.mounts.clone(),
            labels: self.labels.clone(),
            stop_signal: None,
        };
        self.engine
            .start(&spec)
            .await
            .map_err(|e| placement_error(&program, e))?;
        let result = async {
            let deadline = tokio::time::Instant::now() + command.timeout;
            let code = loop {
                if let Some(code) = self.engine.exit_code(&self.name).await? {
                    break Some(code);
                }
                if tokio::time::Instant::now() >= deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let docker = self.engine.client().await?;
            let (out, err) = collect(docker.logs(
                &self.name,
                Some(LogsOptionsBuilder::new().stdout(true).stderr(true).build()),
            ))
            .await
            .map_err(DockerError::api(format!(
                "read the output of {}",
                self.name
            )))?;
            Ok::<_, DockerError>((code, out, err))
        }
        .await;
        let _ = self.engine.remove(&self.name).await;
        match result {
            Ok((Some(code), out, err)) => Ok(CommandOutput {
                code: i32::try_from(code).ok(),
                signal: None,
                stdout: String::from_utf8_lossy(&out).into_owned(),
                stderr: String::from_utf8_lossy(&err).into_owned(),
            }),
            Ok((None, _, _)) => Err(CommandError::TimedOut {
                command: command.to_string(),
                timeout: command.timeout,
            }),
            Err(e) => Err(placement_error(&program, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DirectorySources, bind_covers, bound_device, resolved};
    use std::collections::HashMap;
    use std::path::Path;

    #[test]
    fn a_bind_covers_its_directory_what_is_inside_and_what_holds_it() {
        let dir = Path::new("/srv/consumer/db");
        assert!(bind_covers(Path::new("/srv/consumer/db"), dir));
        assert!(bind_covers(Path::new("/srv/consumer/db/pg_wal"), dir));
        assert!(bind_covers(Path::new("/srv/consumer"), dir));
        // Path components, not string prefixes.
        assert!(!bind_covers(Path::new("/srv/consumer/db2"), dir));
        assert!(!bind_covers(Path::new("/srv/consumer/d"), dir));
        assert!(!bind_covers(Path::new("/srv/other"), dir));
    }

    #[tokio::test]
    async fn a_bind_through_a_symlink_is_recognised() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("disk/db");
        std::fs::create_dir_all(&real).unwrap();
        let link = root.path().join("data");
        std::os::unix::fs::symlink(root.path().join("disk"), &link).unwrap();
        let mut sources = DirectorySources::default();
        assert!(sources.covers(&link.join("db"), &real).await);
        assert!(sources.covers(&link, &real).await);
        assert!(sources.covers(&real, &link.join("db")).await);
        assert!(!sources.covers(&link.join("other"), &real).await);
        // Not created yet: its existing ancestors are resolved.
        let later = link.join("db/not-yet");
        assert_eq!(
            resolved(&later).await,
            real.canonicalize().unwrap().join("not-yet")
        );
        assert!(sources.covers(&root.path().join("disk"), &later).await);
    }

    #[test]
    fn a_local_volume_binds_a_directory_only_when_its_options_say_so() {
        let options = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            bound_device(&options(&[
                ("type", "none"),
                ("o", "bind"),
                ("device", "/srv/db")
            ])),
            Some("/srv/db".into())
        );
        assert_eq!(
            bound_device(&options(&[("o", "rbind,ro"), ("device", "/srv/db")])),
            Some("/srv/db".into())
        );
        // An NFS volume's device is not a directory of this host.
        assert_eq!(
            bound_device(&options(&[
                ("type", "nfs"),
                ("o", "addr=10.0.0.1"),
                ("device", ":/db")
            ])),
            None
        );
        assert_eq!(bound_device(&options(&[])), None);
    }
}
