//! [`ShortLivedContainer`]: each command in a container made for it and removed
//! after it, for a tool that must see a volume where the host has no such tool.
//! The container is always removed, whatever the command did.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bollard::query_parameters::LogsOptionsBuilder;

use super::super::command::{CommandError, CommandLine, CommandOutput, CommandRunner};
use super::{
    ContainerMount, ContainerSpec, DockerEngine, DockerError, argv, collect, env, placement_error,
    user,
};

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
