//! [`DockerExec`]: a command run in a running container, as `docker exec` does.
//! The engine has no API to stop an exec, so a timeout or a shutdown stops the
//! exec'd process and everything it started by their pids on this host (the
//! engine runs beside the reconciler), and only while the engine says it runs.

use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use super::super::command::{
    CommandError, CommandLine, CommandOutput, CommandRunner, OnCancel, TERMINATE_GRACE,
};
use super::{DockerEngine, DockerError, argv, collect, env, placement_error, user};

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
        let mut tree_guard = KillTreeOnDrop(if command.on_cancel == OnCancel::Terminate {
            exec_pid(docker, &exec.id).await
        } else {
            None
        });
        #[cfg(feature = "failpoints")]
        if let Some(point) = command.pause_at
            && super::super::pause::pause(point, &self.cancel)
                .await
                .is_err()
        {
            if command.on_cancel == OnCancel::Terminate {
                terminate_exec(docker, &exec.id).await;
            }
            tree_guard.0 = None;
            return Err(CommandError::Cancelled { program });
        }
        let finished = tokio::select! {
            finished = tokio::time::timeout(command.timeout, collect(output)) => finished,
            () = self.cancel.cancelled() => {
                if command.on_cancel == OnCancel::Terminate {
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
