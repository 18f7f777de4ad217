//! Is a `barman backup` alive on a server? barman's own evidence, read where
//! barman runs (this host, or inside its container).
//!
//! barman holds `.<server>-backup.lock` in its lock directory (a BSD `flock`) for
//! the whole of `barman backup`, and the kernel releases it the moment the process
//! dies; the `pg_basebackup` it starts names the backup directory it writes and can
//! outlive a killed barman for seconds. A STARTED entry with neither is dead. The
//! look is passive: it reads `/proc/locks` and `/proc/*/cmdline` and never takes,
//! creates or touches the lock (an active test would make a backup starting at that
//! instant fail with "Another backup process is running", and `flock(1)` creates a
//! missing lock file as root, which breaks the next backup).
//!
//! This module reports; it does not decide what is dead (that is the planner's).

use serde::Deserialize;
use serde_json::Value;

use crate::observed::BackupActivity;

/// The probe, run by `python3` (barman's own interpreter, so it exists wherever
/// barman runs) with the lock file and the base backups directory as arguments.
/// A fixed program text: user data reaches it only as argv.
pub const PROBE: &str = r#"
import json, os, sys
lock, base = sys.argv[1], sys.argv[2].rstrip("/") + "/"
held = False
try:
    inode = str(os.stat(lock).st_ino)
except OSError:
    inode = None
if inode is not None:
    with open("/proc/locks") as f:
        for line in f:
            parts = line.split()
            # "1: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF"; waiters say "->".
            if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == inode:
                held = True
copying = set()
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            args = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        continue
    if not args or os.path.basename(args[0]) != "pg_basebackup":
        continue
    for i, a in enumerate(args):
        path = None
        if a.startswith("--pgdata="):
            path = a[len("--pgdata="):]
        elif a in ("-D", "--pgdata") and i + 1 < len(args):
            path = args[i + 1]
        elif a.startswith("-D") and len(a) > 2:
            path = a[2:]
        if path and path.startswith(base):
            copying.add(path[len(base):].split("/", 1)[0])
print(json.dumps({"lockHeld": held, "copying": sorted(copying)}))
"#;

/// Where barman keeps what the probe looks at, from `barman -f json show-server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BarmanPaths {
    /// `barman_lock_directory` (barman's default: `barman_home`).
    pub lock_directory: String,
    /// `basebackups_directory`.
    pub basebackups_directory: String,
}

impl BarmanPaths {
    /// The server's backup lock file.
    pub fn backup_lock(&self, server: &str) -> String {
        format!(
            "{}/.{server}-backup.lock",
            self.lock_directory.trim_end_matches('/')
        )
    }
}

/// Reads the two paths from `barman -f json show-server SERVER`.
/// An error is what was wrong with the output, for the caller to report.
pub fn parse_show_server(server: &str, json: &str) -> Result<BarmanPaths, String> {
    let value: Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON ({e}): {}", first_line(json)))?;
    let entry = value
        .get(server)
        .ok_or_else(|| format!("no entry for server {server}"))?;
    let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_string);
    let basebackups_directory =
        text("basebackups_directory").ok_or_else(|| "no basebackups_directory".to_string())?;
    let lock_directory = text("barman_lock_directory")
        .or_else(|| text("barman_home"))
        .ok_or_else(|| "no barman_lock_directory nor barman_home".to_string())?;
    Ok(BarmanPaths {
        lock_directory,
        basebackups_directory,
    })
}

/// Reads the probe's one line of JSON.
/// An error is what was wrong with the output, for the caller to report.
pub fn parse_probe(stdout: &str) -> Result<BackupActivity, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        lock_held: bool,
        copying: Vec<String>,
    }
    let answer: Answer =
        serde_json::from_str(stdout.trim()).map_err(|e| format!("{e}: {}", first_line(stdout)))?;
    Ok(BackupActivity {
        lock_held: answer.lock_held,
        copying: answer.copying,
        started_before: Vec::new(),
    })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_server_gives_the_lock_and_backup_directories() {
        let json = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/barman-3.4/show-server.json"
        ))
        .unwrap();
        let paths = parse_show_server("montagu", &json).unwrap();
        assert_eq!(paths.lock_directory, "/tmp/x/barman/home");
        assert_eq!(
            paths.basebackups_directory,
            "/tmp/x/barman/home/montagu/base"
        );
        assert_eq!(
            paths.backup_lock("montagu"),
            "/tmp/x/barman/home/.montagu-backup.lock"
        );
        assert!(parse_show_server("other", &json).is_err());
    }

    #[test]
    fn the_probe_answer_is_read_and_garbage_is_an_error() {
        let activity =
            parse_probe("{\"lockHeld\": true, \"copying\": [\"20261202T153933\"]}\n").unwrap();
        assert!(activity.lock_held);
        assert_eq!(activity.copying, vec!["20261202T153933".to_string()]);
        assert!(parse_probe("Traceback (most recent call last):").is_err());
    }

    /// The probe itself, against a lock this test holds and one it does not.
    #[test]
    fn the_probe_sees_a_held_flock_and_never_creates_a_missing_lock() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(".montagu-backup.lock");
        let base = dir.path().join("base");
        let run = |lock: &std::path::Path| {
            let out = std::process::Command::new("python3")
                .args(["-c", PROBE])
                .arg(lock)
                .arg(&base)
                .output()
                .expect("python3 runs");
            assert!(out.status.success(), "{out:?}");
            parse_probe(&String::from_utf8_lossy(&out.stdout)).unwrap()
        };
        assert!(!run(&lock).lock_held);
        assert!(!lock.exists(), "the probe must not create the lock file");

        let file = std::fs::File::create(&lock).unwrap();
        assert!(!run(&lock).lock_held, "a lock file nobody holds is free");
        let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .unwrap();
        assert!(run(&lock).lock_held, "a held flock is seen");
        drop(held);
        assert!(!run(&lock).lock_held, "released when its holder closes it");
    }
}
