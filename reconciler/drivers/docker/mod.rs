//! The Docker engine, reached through its API (bollard): where a command runs when
//! it runs in a container, and the facts about containers and volumes the other
//! drivers need.
//!
//! - [`engine`]: the connection and the container lifecycle (create, start, stop,
//!   remove, exit code, logs).
//! - [`mounts`]: which containers mount a volume or write into a directory.
//! - [`exec`]: [`DockerExec`], a [`CommandRunner`](super::command::CommandRunner)
//!   that runs an argv in a running container (`docker exec`) and stops its whole
//!   process tree.
//! - [`one_shot`]: [`ShortLivedContainer`], a runner that makes a container for one
//!   command and removes it after.
//!
//! What runs is the calling driver's business, exactly as with
//! [`super::command::LocalProcess`]. Nothing here decides anything; an engine that
//! does not answer is an error the observer turns into `Unknown`.

mod engine;
mod exec;
mod mounts;
mod one_shot;

use bollard::container::LogOutput;
use futures_util::StreamExt;

use super::command::{CommandError, CommandLine};

pub use engine::{ContainerMount, ContainerSpec, DockerEngine};
pub use exec::DockerExec;
pub use mounts::{Mounted, MountingContainer};
pub use one_shot::ShortLivedContainer;

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
    pub(super) fn api(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Self {
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
pub(super) fn is_not_modified(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

/// The argv of a command as the engine wants it (UTF-8 strings).
pub(super) fn argv(command: &CommandLine) -> Vec<String> {
    std::iter::once(command.program.to_string_lossy().into_owned())
        .chain(
            command
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned()),
        )
        .collect()
}

pub(super) fn env(command: &CommandLine) -> Vec<String> {
    command
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

pub(super) fn user(command: &CommandLine) -> Option<String> {
    command.run_as.map(|a| format!("{}:{}", a.uid, a.gid))
}

pub(super) fn placement_error(program: &str, source: DockerError) -> CommandError {
    CommandError::Placement {
        program: program.to_string(),
        source: Box::new(source),
    }
}

/// Collects an attached output stream into stdout and stderr.
pub(super) async fn collect(
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
