//! What this host's processes say about a PostgreSQL data directory: who runs on
//! it (postmaster.pid, checked against the process it names), whether that is a
//! replay a killed reconciler left (recognised by its socket directory), and how a
//! postgres child or a stray replay is stopped.
//!
//! Only processes of this host's pid namespace are meaningful here: a postgres in a
//! container writes its own namespace's pid, which is why every pid read from a
//! file is checked against `/proc` before it counts, and why nothing is ever
//! signalled on the word of a pid file alone. It decides nothing about the volume.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::fsutil::blocking;

/// How long an immediate shutdown may take after a fast one overran.
pub const IMMEDIATE_STOP_WAIT: Duration = Duration::from_secs(60);

/// A stray replay did not stop.
#[derive(Debug, thiserror::Error)]
#[error("refusing to touch {}: a postgres runs on it (postmaster.pid)", path.display())]
pub struct StillRunning {
    /// The data directory.
    pub path: PathBuf,
}

/// The replay's private socket directory starts with this, which is how a replay
/// left running by a killed reconciler is recognised on the next start.
pub const SOCKET_DIR_PREFIX: &str = "reconciler-replay-";

/// True when `postmaster.pid` names a live postgres process. A pid file left by a
/// crash (its process gone) does not count: postgres itself ignores such a file.
/// Nor does one naming a process that neither works in the directory nor runs
/// postgres: a postgres in a container writes its own namespace's pid (often 1),
/// which on this host is someone else.
pub fn postmaster_running(data_dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return false;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        // Unreadable: assume the worst.
        return true;
    };
    let alive = match kill(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        Err(_) => true,
    };
    alive && (works_in(pid, data_dir) || is_postgres(pid))
}

/// Whether process `pid` runs a postgres binary. When its command line cannot be
/// read it is assumed to: a live server is never mistaken for a stale file.
fn is_postgres(pid: i32) -> bool {
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            let program = String::from_utf8_lossy(program);
            let name = program.rsplit('/').next().unwrap_or_default();
            // A retitled postgres process reads `postgres: 15/main: …`.
            program.starts_with("postgres")
                || name.starts_with("postgres")
                || name.starts_with("postmaster")
        }
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

/// The pid `data_dir`'s postmaster.pid names (its first line), when readable.
pub fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The pid of a live postgres on `data_dir` whose socket directory is one the
/// replay driver makes (`reconciler-replay-*`): a replay a killed reconciler left.
/// Line 1 of postmaster.pid is the pid, line 5 the first socket directory.
pub fn stray_replay(data_dir: &Path) -> Option<i32> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let pid = lines.first()?.trim().parse::<i32>().ok()?;
    let socket_dir = Path::new(lines.get(4)?.trim());
    let ours = socket_dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(SOCKET_DIR_PREFIX));
    (ours && postmaster_running(data_dir) && works_in(pid, data_dir)).then_some(pid)
}

/// True when process `pid` has `data_dir` as its working directory, as a postmaster
/// has: a stale postmaster.pid whose pid now belongs to another process is never
/// signalled. Unknowable (no /proc access) counts as false, so nothing is signalled.
fn works_in(pid: i32, data_dir: &Path) -> bool {
    let Ok(cwd) = fs::read_link(format!("/proc/{pid}/cwd")) else {
        return false;
    };
    fs::canonicalize(data_dir).is_ok_and(|dir| dir == cwd)
}

/// The socket directory `data_dir`'s postmaster.pid names (line 5), when it is
/// one the replay driver makes.
fn replay_socket_dir(data_dir: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let dir = PathBuf::from(text.lines().nth(4)?.trim());
    is_replay_socket_dir(&dir).then_some(dir)
}

fn is_replay_socket_dir(dir: &Path) -> bool {
    dir.is_absolute()
        && dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(SOCKET_DIR_PREFIX))
}

/// Removes a replay's socket directory (with the replay's log in it) once no live
/// postgres uses it: each socket's lock file (`.s.PGSQL.<port>.lock`) names its
/// postmaster on its first line, and one naming a live process, or unreadable,
/// keeps the directory. Anything but a real directory named `reconciler-replay-*`
/// is left alone. Returns whether it removed the directory.
pub fn remove_replay_socket_dir(dir: &Path) -> io::Result<bool> {
    if !is_replay_socket_dir(dir) {
        return Ok(false);
    }
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(".s.PGSQL.") && name.ends_with(".lock")) {
            continue;
        }
        let pid = fs::read_to_string(dir.join(name.as_ref()))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok());
        let gone =
            pid.is_some_and(|pid| kill(Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH));
        if !gone {
            return Ok(false);
        }
    }
    fs::remove_dir_all(dir)?;
    Ok(true)
}

/// Stops a stray replay postgres: fast shutdown, then immediate after `timeout`;
/// then removes its socket directory. Only a postgres [`stray_replay`] still names
/// is signalled.
pub async fn stop_stray_replay(
    data_dir: &Path,
    pid: i32,
    timeout: Duration,
) -> Result<(), StillRunning> {
    let target = Pid::from_raw(pid);
    if stray_replay(data_dir) != Some(pid) {
        return Ok(());
    }
    // Read before the stop: a clean shutdown removes postmaster.pid.
    let socket_dir = replay_socket_dir(data_dir);
    for (signal, wait) in [
        (Signal::SIGINT, timeout),
        (Signal::SIGQUIT, IMMEDIATE_STOP_WAIT),
    ] {
        let _ = kill(target, signal);
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            if kill(target, None).is_err() {
                if let Some(dir) = socket_dir {
                    let removed = blocking({
                        let dir = dir.clone();
                        move || remove_replay_socket_dir(&dir)
                    })
                    .await;
                    match removed {
                        Ok(true) => {
                            tracing::info!(dir = %dir.display(), "removed the stray replay's socket directory")
                        }
                        Ok(false) => {
                            tracing::warn!(dir = %dir.display(), "kept the stray replay's socket directory: something still uses it")
                        }
                        Err(e) => {
                            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the stray replay's socket directory")
                        }
                    }
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Err(StillRunning {
        path: data_dir.to_path_buf(),
    })
}

/// Stops a postgres child: SIGINT (fast shutdown) and wait, else SIGQUIT (immediate).
/// Returns whether the fast shutdown completed in time.
pub async fn stop_child(child: &mut tokio::process::Child, fast_wait: Duration) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A postmaster.pid naming a live process that is not a postgres in this
    /// directory (the pid was reused after a crash) is not a stray replay.
    #[test]
    fn a_reused_pid_is_never_taken_for_a_stray_replay() {
        let dir = tempfile::tempdir().unwrap();
        let socket_dir = format!("/tmp/{}test", SOCKET_DIR_PREFIX);
        let pid_file =
            |pid: u32| format!("{pid}\n{}\n0\n5432\n{socket_dir}\n", dir.path().display());
        // This test process is alive, but works elsewhere.
        fs::write(
            dir.path().join("postmaster.pid"),
            pid_file(std::process::id()),
        )
        .unwrap();
        assert_eq!(stray_replay(dir.path()), None);
        // A live process working in the directory is one.
        let child = KillOnDrop::sleeping_in(dir.path());
        fs::write(dir.path().join("postmaster.pid"), pid_file(child.0.id())).unwrap();
        assert_eq!(stray_replay(dir.path()), Some(child.0.id() as i32));
    }

    /// A postgres in a container writes its own namespace's pid, often 1: on this
    /// host that is init, which must not count as a server on the directory.
    #[test]
    fn a_pid_file_naming_an_unrelated_live_process_is_not_a_running_server() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = |pid: u32| format!("{pid}\n{}\n0\n5432\n/tmp\n", dir.path().display());
        fs::write(dir.path().join("postmaster.pid"), pid_file(1)).unwrap();
        assert!(
            !postmaster_running(dir.path()),
            "pid 1 is not a postgres here"
        );
        // This test process is alive but neither postgres nor working there.
        fs::write(
            dir.path().join("postmaster.pid"),
            pid_file(std::process::id()),
        )
        .unwrap();
        assert!(!postmaster_running(dir.path()));
        // One working in the directory is taken for a server, whatever it runs.
        let child = KillOnDrop::sleeping_in(dir.path());
        fs::write(dir.path().join("postmaster.pid"), pid_file(child.0.id())).unwrap();
        assert!(postmaster_running(dir.path()));
    }

    /// A replay's socket directory goes only when its name is ours and no live
    /// postgres holds a socket lock in it.
    #[test]
    fn only_an_unused_replay_socket_directory_is_removed() {
        let parent = tempfile::tempdir().unwrap();
        let ours = parent.path().join(format!("{}test", SOCKET_DIR_PREFIX));
        fs::create_dir(&ours).unwrap();
        fs::write(ours.join("postgres.log"), "log").unwrap();
        let lock = ours.join(".s.PGSQL.5432.lock");
        // A lock naming a live process (this one) keeps it.
        fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
        assert!(!remove_replay_socket_dir(&ours).unwrap());
        assert!(ours.exists());
        // An unreadable lock keeps it too.
        fs::write(&lock, "garbage\n").unwrap();
        assert!(!remove_replay_socket_dir(&ours).unwrap());
        // A lock naming a process that is gone does not.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        fs::write(&lock, format!("{}\n", gone.id())).unwrap();
        assert!(remove_replay_socket_dir(&ours).unwrap());
        assert!(!ours.exists());
        // A directory of another name is never touched.
        let other = parent.path().join("someone-else");
        fs::create_dir(&other).unwrap();
        assert!(!remove_replay_socket_dir(&other).unwrap());
        assert!(other.exists());
    }

    /// A child process, killed when dropped.
    struct KillOnDrop(std::process::Child);

    impl KillOnDrop {
        /// A `sleep` whose working directory is `dir`, as a postgres's is its data.
        fn sleeping_in(dir: &Path) -> Self {
            let child = std::process::Command::new("sleep")
                .arg("30")
                .current_dir(dir)
                .spawn()
                .unwrap();
            Self(child)
        }
    }
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
