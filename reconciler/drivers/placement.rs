//! Where each command runs, resolved from the spec in one place: a process of this
//! host, an exec into a running container, or a container made for the command.
//!
//! [`Placement`] is the value; [`Placement::of_barman`] and [`ReplayPlacement::of`]
//! are the only places that read a spec to decide "host or container", and
//! [`Placer`] (built once, in [`super::Drivers::local`]) the only place that turns
//! a placement into a [`CommandRunner`]. Drivers build argvs and hand them to the
//! runner they are given; they never look at the spec to find out where they run.
//! Nothing here runs a command.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::command::{CommandRunner, LocalProcess};
use super::docker::{
    ContainerMount, DockerEngine, DockerExec, PIPELINE_LABEL, ROLE_LABEL, ShortLivedContainer,
};
use crate::spec::{BarmanSpec, RecoveredVolumeSpec, VolumeLocation};

/// Where a command runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// A child process of the reconciler, on this host.
    Host,
    /// `docker exec` into a running container.
    Exec {
        /// The container.
        container: String,
    },
    /// A container made for each command and removed after it.
    OneShot {
        /// The image (never pulled).
        image: String,
        /// The container's name.
        name: String,
        /// What it mounts.
        mounts: Vec<ContainerMount>,
        /// Its labels (pipeline, role).
        labels: HashMap<String, String>,
    },
}

impl Placement {
    /// Where barman runs: in `barman.container` when it names one, else here.
    pub fn of_barman(barman: &BarmanSpec) -> Self {
        match &barman.container {
            Some(container) => Placement::Exec {
                container: container.to_string(),
            },
            None => Placement::Host,
        }
    }

    /// The running containers this placement works in: the volume they mount is
    /// mounted for the pipeline's own commands, not by a user of the volume.
    pub fn containers(&self) -> Vec<String> {
        match self {
            Placement::Exec { container } => vec![container.clone()],
            Placement::Host | Placement::OneShot { .. } => Vec::new(),
        }
    }
}

/// The labels of a container the reconciler makes for `pipeline`, for `role`.
pub fn labels(pipeline: &str, role: &str) -> HashMap<String, String> {
    HashMap::from([
        (PIPELINE_LABEL.to_string(), pipeline.to_string()),
        (ROLE_LABEL.to_string(), role.to_string()),
    ])
}

/// Where a WAL replay's postgres runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayPlacement {
    /// A child process of the reconciler, on the volume's files on this host; its
    /// tools (psql, pg_controldata) run here too.
    Host,
    /// A container made for the replay and removed after it.
    Container(Box<ReplayContainer>),
}

/// A replay container, resolved from the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayContainer {
    /// Its name (`reconciler-replay-<pipeline>`), how a stray one is found again.
    pub name: String,
    /// The image.
    pub image: String,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    /// Where the volume appears inside it (PGDATA).
    pub data_dir: String,
    /// The volume, mounted read-write.
    pub mount: ContainerMount,
    /// Its labels (pipeline, role `replay`).
    pub labels: HashMap<String, String>,
    /// Where pg_controldata runs once the server stopped: a one-shot container of
    /// the same image with the volume mounted read-only.
    pub tools: Placement,
}

/// The spec names no volume (only possible when it bypassed the loader).
#[derive(Debug, thiserror::Error)]
#[error("recoveredVolume has neither `path` nor `dockerVolume`")]
pub struct NoVolume;

impl ReplayPlacement {
    /// Where the replay of `pipeline`'s volume runs: in a container when
    /// `volume.replay.container` asks for one, else here.
    pub fn of(pipeline: &str, volume: &RecoveredVolumeSpec) -> Result<Self, NoVolume> {
        let Some(container) = &volume.replay.container else {
            return Ok(ReplayPlacement::Host);
        };
        let target = container.mount_path.as_path().display().to_string();
        let mount = |read_only| match volume.location() {
            VolumeLocation::Docker(name) => Ok(ContainerMount::Volume {
                name: name.to_string(),
                target: target.clone(),
                read_only,
            }),
            VolumeLocation::Directory(path) => Ok(ContainerMount::Bind {
                source: path.to_string(),
                target: target.clone(),
                read_only,
            }),
            VolumeLocation::Unset => Err(NoVolume),
        };
        let image = container.image.as_str().to_string();
        Ok(ReplayPlacement::Container(Box::new(ReplayContainer {
            name: format!("reconciler-replay-{pipeline}"),
            image: image.clone(),
            env: container
                .env
                .iter()
                .map(|(k, v)| format!("{}={}", k.as_str(), v.as_str()))
                .collect(),
            data_dir: target.clone(),
            mount: mount(false)?,
            labels: labels(pipeline, "replay"),
            tools: Placement::OneShot {
                image,
                name: format!("reconciler-controldata-{pipeline}"),
                mounts: vec![mount(true)?],
                labels: labels(pipeline, "tool"),
            },
        })))
    }
}

/// Turns a [`Placement`] into the runner that runs commands there. One per
/// reconciler: every runner it makes stops (or leaves running) its commands when
/// `cancel` fires.
#[derive(Debug, Clone)]
pub struct Placer {
    host: Arc<dyn CommandRunner>,
    docker: Arc<DockerEngine>,
    cancel: CancellationToken,
}

impl Placer {
    /// Host commands as children of this process, containers through `docker`.
    pub fn new(docker: Arc<DockerEngine>, cancel: CancellationToken) -> Self {
        Self {
            host: Arc::new(LocalProcess::new(cancel.clone())),
            docker,
            cancel,
        }
    }

    /// The runner for `placement`.
    pub fn runner(&self, placement: &Placement) -> Arc<dyn CommandRunner> {
        match placement {
            Placement::Host => self.host.clone(),
            Placement::Exec { container } => Arc::new(DockerExec::new(
                self.docker.clone(),
                container.as_str(),
                self.cancel.clone(),
            )),
            Placement::OneShot {
                image,
                name,
                mounts,
                labels,
            } => Arc::new(ShortLivedContainer::new(
                self.docker.clone(),
                image.as_str(),
                mounts.clone(),
                name.as_str(),
                labels.clone(),
            )),
        }
    }

    /// The engine containers are made and driven through.
    pub fn docker(&self) -> &Arc<DockerEngine> {
        &self.docker
    }

    /// Fires when the reconciler is asked to stop.
    pub fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }
}
