//! Where a command runs, kept apart from what it runs.
//!
//! Drivers build a [`CommandLine`] (always an argv, never a shell string) and hand it
//! to a [`CommandRunner`]. [`LocalProcess`] runs it on this host; other placements
//! (exec into a container, a short-lived container) implement the same trait. A
//! runner reports the exit status and output; what a non-zero status means is the
//! calling driver's business.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// How long a command gets to exit after SIGTERM before it is killed.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(10);

/// An OS account to run a command as (numeric: resolved once, up front).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// A command as an argv plus the conditions to run it in.
#[derive(Debug, Clone)]
pub struct CommandLine {
    /// The program (a path, or a name looked up in `PATH`).
    pub program: PathBuf,
    /// Its arguments, each passed as is.
    pub args: Vec<OsString>,
    /// Run as this account instead of the caller's.
    pub run_as: Option<RunAs>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Stop it (SIGTERM, then SIGKILL) after this long.
    pub timeout: Duration,
    /// What a shutdown of the reconciler does to it.
    pub on_cancel: OnCancel,
    /// A test hook: the pause point (see [`super::pause`]) reached once the command
    /// runs, to interrupt the reconciler in the middle of it.
    #[cfg(feature = "failpoints")]
    pub pause_at: Option<&'static str>,
}

/// What happens to a running command when the reconciler is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCancel {
    /// Stop it: SIGTERM to its process group, SIGKILL after a grace period.
    #[default]
    Terminate,
    /// Leave it running on its own (a barman base backup finishes by itself and is
    /// seen as STARTED, then DONE, by the next start).
    LeaveRunning,
}

impl CommandLine {
    /// A command with no arguments and a timeout.
    pub fn new(program: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            run_as: None,
            env: Vec::new(),
            timeout,
            on_cancel: OnCancel::Terminate,
            #[cfg(feature = "failpoints")]
            pause_at: None,
        }
        // Whatever it forks inherits the mark: a process a killed reconciler left
        // is told from an operator's by it (see `super::orphans`).
        .env(super::orphans::RUN_ENV, super::orphans::run_mark())
    }

    /// Names the pause point reached while the command runs (only with the
    /// `failpoints` feature: without it the name is dropped here).
    #[must_use]
    #[cfg(feature = "failpoints")]
    pub fn pause_at(mut self, point: &'static str) -> Self {
        self.pause_at = Some(point);
        self
    }

    /// Without the `failpoints` feature there is no pause point: the name is
    /// dropped, and the optimiser drops the literal with it.
    #[must_use]
    #[cfg(not(feature = "failpoints"))]
    #[inline(always)]
    pub fn pause_at(self, _point: &'static str) -> Self {
        self
    }

    /// Sets what a shutdown does to the command.
    #[must_use]
    pub fn on_cancel(mut self, on_cancel: OnCancel) -> Self {
        self.on_cancel = on_cancel;
        self
    }

    /// Appends one argument.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs as another account.
    #[must_use]
    pub fn run_as(mut self, account: Option<RunAs>) -> Self {
        self.run_as = account;
        self
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }
}

impl fmt::Display for CommandLine {
    /// For logs only: arguments are quoted for reading, never for a shell.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.program.display())?;
        for arg in &self.args {
            let arg = arg.to_string_lossy();
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
                write!(f, " {arg:?}")?;
            } else {
                write!(f, " {arg}")?;
            }
        }
        Ok(())
    }
}

/// What a finished command left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// How many of a failed command's last lines its message keeps.
pub const WORDS_LINES: usize = 5;
/// How long one of those lines may be before it is cut (in characters).
pub const WORDS_LINE_CHARS: usize = 300;

impl CommandOutput {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// How it ended, in words: `exit code 12`, `killed by signal 9`.
    pub fn status_text(&self) -> String {
        exit_text(self.code, self.signal)
    }

    /// What the command said about why it failed, for error messages: the last
    /// [`WORDS_LINES`] non-blank lines of stderr (or, when it is silent, of stdout),
    /// each trimmed, repeats dropped, a line longer than [`WORDS_LINE_CHARS`] cut
    /// with `…`, joined with ` / `. ssh's own line ("Could not resolve hostname",
    /// "Identity file … not accessible") comes before rsync's summary and is kept.
    pub fn last_words(&self) -> String {
        meaningful_lines(&self.stderr)
            .or_else(|| meaningful_lines(&self.stdout))
            .unwrap_or_else(|| "no output".to_string())
    }
}

/// `exit code 12`, `killed by signal 9`, or `no exit status` when neither is known.
pub fn exit_text(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "no exit status".to_string(),
    }
}

/// The last [`WORDS_LINES`] distinct non-blank lines of `text`, in order, trimmed
/// and cut; `None` when there are none.
fn meaningful_lines(text: &str) -> Option<String> {
    let mut kept: Vec<String> = Vec::new();
    for line in text.lines().rev() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let line = match line.char_indices().nth(WORDS_LINE_CHARS) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line.to_string(),
        };
        if kept.contains(&line) {
            continue;
        }
        kept.push(line);
        if kept.len() == WORDS_LINES {
            break;
        }
    }
    kept.reverse();
    (!kept.is_empty()).then(|| kept.join(" / "))
}

/// Why a command could not be run to completion.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It could not be started.
    #[error("cannot start `{program}`")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// It ran past its timeout and was stopped.
    #[error("`{command}` did not finish within {}s and was stopped", timeout.as_secs())]
    TimedOut {
        /// The command.
        command: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The reconciler is shutting down; the command was stopped or left running.
    #[error("`{program}` interrupted by shutdown")]
    Cancelled {
        /// The program.
        program: String,
    },
    /// Where it runs (a container) could not run it.
    #[error("cannot run `{program}` where it is placed")]
    Placement {
        /// The program.
        program: String,
        /// Why (the Docker engine's error).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Waiting for it failed.
    #[error("lost track of `{program}`")]
    Wait {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Runs commands somewhere.
#[async_trait]
pub trait CommandRunner: Send + Sync + fmt::Debug {
    /// Runs `command` to completion (or its timeout) and returns its output.
    async fn run(&self, command: &CommandLine) -> Result<CommandOutput, CommandError>;
}

/// Runs commands as child processes of this one.
#[derive(Debug, Clone, Default)]
pub struct LocalProcess {
    cancel: CancellationToken,
}

impl LocalProcess {
    /// Commands that stop (or are left running) when `cancel` fires.
    pub fn new(cancel: CancellationToken) -> Self {
        Self { cancel }
    }

    /// A tokio command for `command`, in its own process group so that a timeout can
    /// stop the whole tree (barman's pg_basebackup, rsync's receiver).
    pub fn prepare(command: &CommandLine) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&command.program);
        cmd.args(&command.args)
            .stdin(Stdio::null())
            // A command left running at shutdown must survive its handle being dropped.
            .kill_on_drop(command.on_cancel == OnCancel::Terminate)
            .process_group(0);
        for (k, v) in &command.env {
            cmd.env(k, v);
        }
        if let Some(account) = command.run_as {
            // std drops root's supplementary groups when it changes the uid.
            cmd.uid(account.uid).gid(account.gid);
        }
        cmd
    }
}

/// If the reconciler is killed outright (SIGKILL, OOM), a command it would have
/// stopped at shutdown goes too, instead of racing the next start on the same files.
/// The signal reaches the command itself, not what it forked (the kernel clears it
/// on fork): barman's own rsync sees its parent gone and its pipe closed, and under
/// systemd the service's control group goes as a whole. (The signal follows the
/// spawning thread; tokio's worker threads live as long as the runtime.) Not used
/// for the replay postgres: a next start finds and stops that one cleanly.
fn die_with_the_reconciler(cmd: &mut tokio::process::Command, on_cancel: OnCancel) {
    if on_cancel != OnCancel::Terminate {
        return;
    }
    // SAFETY: the closure runs between fork and exec and only calls prctl, which is
    // async-signal-safe and allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

/// Kills a command's process group when dropped before the command was reaped.
struct KillGroupOnDrop(Option<u32>);

impl KillGroupOnDrop {
    /// The command was reaped: its pid may be reused, so never signal it again.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Sends SIGTERM to a process group, waits up to [`TERMINATE_GRACE`], then SIGKILL.
pub async fn terminate_group(child: &mut tokio::process::Child) {
    let Some(pid) = child.id() else { return };
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(TERMINATE_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

#[async_trait]
impl CommandRunner for LocalProcess {
    async fn run(&self, command: &CommandLine) -> Result<CommandOutput, CommandError> {
        let program = command.program.display().to_string();
        if self.cancel.is_cancelled() {
            return Err(CommandError::Cancelled { program });
        }
        tracing::debug!(command = %command, "running");
        let mut cmd = Self::prepare(command);
        die_with_the_reconciler(&mut cmd, command.on_cancel);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| CommandError::Spawn {
                program: program.clone(),
                source,
            })?;
        // If this future is dropped (a shutdown gave up waiting), the whole group
        // goes, not just the direct child that `kill_on_drop` would reach.
        let mut group_guard = KillGroupOnDrop(
            (command.on_cancel == OnCancel::Terminate)
                .then(|| child.id())
                .flatten(),
        );
        #[cfg(feature = "failpoints")]
        if let Some(point) = command.pause_at
            && super::pause::pause(point, &self.cancel).await.is_err()
        {
            if command.on_cancel == OnCancel::Terminate {
                terminate_group(&mut child).await;
                group_guard.disarm();
            }
            return Err(CommandError::Cancelled { program });
        }
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let read_all = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let read_out = async {
                if let Some(s) = stdout.as_mut() {
                    let _ = s.read_to_end(&mut out).await;
                }
            };
            let read_err = async {
                if let Some(s) = stderr.as_mut() {
                    let _ = s.read_to_end(&mut err).await;
                }
            };
            tokio::join!(read_out, read_err);
            (out, err)
        };
        let finished = tokio::select! {
            finished = tokio::time::timeout(command.timeout, async {
                let (out, err) = read_all.await;
                let status = child.wait().await;
                (out, err, status)
            }) => finished,
            () = self.cancel.cancelled() => {
                if command.on_cancel == OnCancel::Terminate {
                    terminate_group(&mut child).await;
                    group_guard.disarm();
                } else {
                    tracing::warn!(command = %command, "left running at shutdown");
                }
                return Err(CommandError::Cancelled { program });
            }
        };
        match finished {
            Ok((out, err, status)) => {
                // Exited and reaped: its pid may be reused, so never signal it again.
                group_guard.disarm();
                let status = status.map_err(|source| CommandError::Wait { program, source })?;
                Ok(CommandOutput {
                    code: status.code(),
                    signal: std::os::unix::process::ExitStatusExt::signal(&status),
                    stdout: String::from_utf8_lossy(&out).into_owned(),
                    stderr: String::from_utf8_lossy(&err).into_owned(),
                })
            }
            Err(_) => {
                terminate_group(&mut child).await;
                group_guard.disarm();
                Err(CommandError::TimedOut {
                    command: command.to_string(),
                    timeout: command.timeout,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(code: Option<i32>, signal: Option<i32>, stderr: &str) -> CommandOutput {
        CommandOutput {
            code,
            signal,
            stdout: String::new(),
            stderr: stderr.to_string(),
        }
    }

    #[test]
    fn last_words_keep_the_lines_that_say_why() {
        // rsync over ssh with a missing key, as rsync 3.2 and OpenSSH 9 print it.
        let out = failed(
            Some(255),
            None,
            "Warning: Identity file /k not accessible: No such file or directory.\n\
             root@127.0.0.1: Permission denied (publickey).\n\
             rsync: connection unexpectedly closed (0 bytes received so far) [Receiver]\n\
             rsync error: unexplained error (code 255) at io.c(285) [Receiver=3.2.7]\n",
        );
        let words = out.last_words();
        assert!(
            words.starts_with("Warning: Identity file /k not accessible"),
            "{words}"
        );
        assert!(words.contains("Permission denied (publickey)"), "{words}");
        assert!(words.ends_with("[Receiver=3.2.7]"), "{words}");
        assert_eq!(out.status_text(), "exit code 255");
    }

    #[test]
    fn last_words_are_bounded_deduplicated_and_cut() {
        let mut text = String::new();
        for i in 0..20 {
            text.push_str(&format!("line {i}\n\n"));
        }
        text.push_str("again\n  again  \n");
        text.push_str(&"x".repeat(1000));
        let words = failed(Some(1), None, &text).last_words();
        let lines: Vec<&str> = words.split(" / ").collect();
        assert_eq!(lines.len(), WORDS_LINES, "{words}");
        assert_eq!(
            lines[..4],
            ["line 17", "line 18", "line 19", "again"],
            "{words}"
        );
        assert_eq!(lines[4].chars().count(), WORDS_LINE_CHARS + 1);
        assert!(lines[4].ends_with('…'));
        assert!(!words.contains("line 16"));
    }

    #[test]
    fn a_silent_stderr_falls_back_to_stdout_and_then_says_so() {
        let mut out = failed(None, Some(9), " \n");
        assert_eq!(out.last_words(), "no output");
        assert_eq!(out.status_text(), "killed by signal 9");
        out.stdout = "the answer\n".into();
        assert_eq!(out.last_words(), "the answer");
        assert_eq!(exit_text(None, None), "no exit status");
    }

    #[tokio::test]
    async fn a_killed_command_reports_its_signal() {
        let out = LocalProcess::default()
            .run(
                &CommandLine::new("sh", Duration::from_secs(30))
                    .args(["-c", "echo dying >&2; kill -9 $$"]),
            )
            .await
            .unwrap();
        assert_eq!((out.code, out.signal), (None, Some(9)));
        assert_eq!(out.status_text(), "killed by signal 9");
        assert_eq!(out.last_words(), "dying");
    }
}
