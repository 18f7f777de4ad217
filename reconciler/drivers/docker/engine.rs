//! The engine itself: the connection (made on first use, local engines only) and
//! the lifecycle of the containers the reconciler creates or drives (create and
//! start, stop, remove, exit code, log tail). It never decides whether a
//! container should run; callers say so.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::sync::OnceCell;

use super::{DockerError, PIPELINE_LABEL, ROLE_LABEL, is_not_found, is_not_modified};

/// Where the engine listens when `DOCKER_HOST` says nothing.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

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
