//! Real test environment for integration tests: one PostgreSQL primary per test
//! binary, one private barman server (own config, home and replication slot)
//! per test, both set up by `scripts/testenv`. Nothing here imitates barman or
//! PostgreSQL: the reconciler binary under test talks to the real ones.
//!
//! The primary is started on first use and torn down by a reaper process once the
//! test binary exits. Each barman server is torn down when its [`TestPipeline`]
//! drops, including after a failed assertion.

#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

pub const PGBIN: &str = "/usr/lib/postgresql/15/bin";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn testenv() -> Command {
    Command::new(repo().join("scripts/testenv"))
}

/// Runs `cmd`, failing the test with its stderr when it fails; its stdout, trimmed.
pub fn run_checked(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Installs barman, rsync and PostgreSQL when missing (once per test binary).
pub fn ensure_installed() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let mut c = testenv();
        c.arg("install");
        run_checked(c, "testenv install");
    });
}

/// The shared primary of this test binary.
pub struct Primary {
    pub dir: PathBuf,
}

pub fn primary() -> &'static Primary {
    static PRIMARY: OnceLock<Primary> = OnceLock::new();
    PRIMARY.get_or_init(|| start_primary("", None, true))
}

/// A primary of this test binary that writes nothing unless a test does: after a
/// switch, barman keeps its newest complete segment in `streaming/` (barman-facts
/// P1), as on a quiet production night.
pub fn idle_primary() -> &'static Primary {
    static PRIMARY: OnceLock<Primary> = OnceLock::new();
    PRIMARY.get_or_init(|| start_primary("-idle", None, false))
}

/// A second primary of this test binary whose clock runs `offset` off (libfaketime,
/// e.g. `-40d`): its `now()`, and so barman's end times, lie.
pub fn faked_primary(offset: &'static str) -> &'static Primary {
    static PRIMARY: OnceLock<Primary> = OnceLock::new();
    PRIMARY.get_or_init(|| start_primary("-faked", Some(offset), true))
}

fn start_primary(suffix: &str, faketime: Option<&str>, busy: bool) -> Primary {
    {
        ensure_installed();
        let dir = PathBuf::from(format!("/tmp/reconciler-it-{}{suffix}", std::process::id()));
        let mut up = testenv();
        up.arg("primary-up").arg(&dir);
        if let Some(offset) = faketime {
            up.env("PRIMARY_FAKETIME", offset);
        }
        run_checked(up, "testenv primary-up");
        // Tear down after this process, whatever way it ends. The reaper outlives
        // us on purpose, so it is never waited for.
        #[allow(clippy::zombie_processes)]
        Command::new(repo().join("scripts/testenv"))
            .arg("reap-after")
            .arg(std::process::id().to_string())
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the reaper");
        let primary = Primary { dir };
        if busy {
            primary.keep_busy();
        }
        primary
    }
}

impl Primary {
    /// Keeps a trickle of WAL flowing, as a production primary always has: barman
    /// archives the newest segment only once the next one starts, so on an idle
    /// test server `switch-wal --archive` would wait 13-23 s (barman-facts P1).
    fn keep_busy(&self) {
        let env = std::fs::read_to_string(self.dir.join("env")).expect("primary env");
        let port = env
            .lines()
            .find_map(|l| l.strip_prefix("PRIMARY_PORT="))
            .expect("PRIMARY_PORT")
            .trim()
            .to_string();
        std::thread::spawn(move || {
            loop {
                let _ = Command::new(format!("{PGBIN}/psql"))
                    .args([
                        "-X",
                        "-q",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port,
                        "-U",
                        "postgres",
                        "-d",
                        "postgres",
                        "-c",
                    ])
                    .arg("select pg_logical_emit_message(false, 'it', 'keep busy')")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        });
    }

    /// Runs SQL on the primary, returns the output rows.
    pub fn sql(&self, sql: &str) -> String {
        let mut c = testenv();
        c.arg("psql").arg(&self.dir).arg("-c").arg(sql);
        run_checked(c, &format!("psql {sql}"))
    }
}

use std::os::unix::process::CommandExt;

/// One pipeline under test: a barman server streaming from the shared primary, a
/// directory for the recovered volume, a starport, and a spec file.
pub struct TestPipeline {
    pub name: String,
    /// The primary its barman streams from.
    pub primary_dir: PathBuf,
    pub root: PathBuf,
    pub barman_conf: PathBuf,
    pub volume: PathBuf,
    pub starport: PathBuf,
    pub specs: PathBuf,
}

impl TestPipeline {
    /// `name`: lowercase letters, digits, `_`; unique per test binary.
    pub fn new(name: &str, retention: &str) -> Self {
        Self::on(primary(), name, retention)
    }

    /// A pipeline whose barman streams from `primary`.
    pub fn on(primary: &Primary, name: &str, retention: &str) -> Self {
        let root = primary.dir.join("servers").join(name);
        let mut up = testenv();
        up.arg("barman-up").arg(&primary.dir).arg(&root).arg(name);
        let barman_conf = PathBuf::from(run_checked(up, "testenv barman-up"));
        let nightly = root.join("nightly");
        let starport = root.join("starport");
        let specs = root.join("specs");
        for dir in [&nightly, &starport, &specs] {
            std::fs::create_dir_all(dir).unwrap();
        }
        // barman (as its own user) recovers into a staging directory in the volume.
        run_checked(
            {
                let mut c = Command::new("chown");
                c.arg("barman:barman").arg(&nightly);
                c
            },
            "chown nightly",
        );
        let pipeline = TestPipeline {
            name: name.to_string(),
            primary_dir: primary.dir.clone(),
            volume: nightly.join(format!("{name}_db_volume")),
            root,
            barman_conf,
            starport,
            specs,
        };
        pipeline.write_spec(retention, "30d");
        pipeline
    }

    /// (Re)writes the pipeline's spec.
    pub fn write_spec(&self, retention: &str, backup_max_age: &str) {
        let spec = format!(
            "apiVersion: reconciler.montagu/v1alpha1
kind: BackupPipeline
metadata:
  name: {pipeline}
spec:
  barman:
    server: {name}
    config: {conf}
  baseBackup:
    maxAge: {backup_max_age}
    timeout: 5m
  retention: {retention}
  recoveredVolume:
    path: {volume}
    maxAge: 24h
    recoverTimeout: 5m
    replay:
      postgresBin: {PGBIN}
      timeout: 5m
      stopTimeout: 2m
  starport:
    root: {starport}
    target: barman_to_starport
    timeout: 5m
",
            pipeline = self.name.replace('_', "-"),
            name = self.name,
            conf = self.barman_conf.display(),
            volume = self.volume.display(),
            starport = self.starport.display(),
        );
        std::fs::write(self.specs.join("pipeline.yaml"), spec).unwrap();
    }

    /// Replaces `from` with `to` in the spec file (which must contain it).
    pub fn edit_spec(&self, from: &str, to: &str) {
        let path = self.specs.join("pipeline.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "`{from}` not in the spec:\n{text}");
        std::fs::write(&path, text.replace(from, to)).unwrap();
    }

    /// Runs the reconciler binary with `--specs` pointing at this pipeline's spec.
    pub fn reconciler(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_reconciler"));
        cmd.args(args)
            .arg("--specs")
            .arg(&self.specs)
            .env("RECONCILER_LOG", "info");
        let out = cmd.output().expect("run reconciler");
        eprintln!(
            "$ reconciler {} -> {}\n--- stdout\n{}--- stderr\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `reconciler diff --output json`, parsed; with its exit code.
    pub fn diff_json(&self, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["diff", "--output", "json"];
        args.extend_from_slice(extra);
        let out = self.reconciler(&args);
        let value = serde_json::from_slice(&out.stdout).expect("diff prints JSON");
        (out.status.code().unwrap_or(-1), value)
    }

    /// `reconciler apply --output json`, parsed; with its exit code.
    pub fn apply_json(&self) -> (i32, Value) {
        let out = self.reconciler(&["apply", "--output", "json"]);
        let value = serde_json::from_slice(&out.stdout).expect("apply prints JSON");
        (out.status.code().unwrap_or(-1), value)
    }

    /// `reconciler apply --output json`, parsed; with its exit code and its log.
    pub fn apply_json_with_log(&self) -> (i32, Value, String) {
        let out = self.reconciler(&["apply", "--output", "json"]);
        let value = serde_json::from_slice(&out.stdout).expect("apply prints JSON");
        (
            out.status.code().unwrap_or(-1),
            value,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `barman -c CONF -f json ARGS…` and parses its output.
    pub fn barman(&self, args: &[&str]) -> Value {
        let out = Command::new("barman")
            .arg("-c")
            .arg(&self.barman_conf)
            .args(["-f", "json"])
            .args(args)
            .output()
            .expect("run barman");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "barman {args:?}: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Takes a backup directly with barman (test setup, not the reconciler).
    pub fn take_backup(&self) -> String {
        let v = self.barman(&["backup", &self.name, "--wait", "--wait-timeout", "120"]);
        assert_eq!(v["status"], "DONE", "{v}");
        // Backup ids have a resolution of one second (barman-facts P12), and a tiny
        // backup takes less: a second one started in the same second would reuse
        // the id. Let the second turn first.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        v["backup_id"].as_str().unwrap().to_string()
    }

    /// Backup ids and statuses, newest first.
    pub fn backups(&self) -> Vec<(String, String)> {
        let v = self.barman(&["list-backups", &self.name]);
        v[&self.name]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["backup_id"].as_str().unwrap().to_string(),
                    b["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Closes the current WAL segment and waits until barman archived it.
    pub fn switch_wal(&self) {
        let mut c = testenv();
        c.arg("switch-wal")
            .arg(&self.primary_dir)
            .arg(&self.root)
            .arg(&self.name);
        run_checked(c, "testenv switch-wal");
    }

    pub fn marker(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.volume.join(".reconciler-volume.json")).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }

    pub fn starport_metadata_path(&self) -> PathBuf {
        self.starport.join("barman_to_starport/meta/metadata.json")
    }

    pub fn starport_data(&self) -> PathBuf {
        self.starport
            .join("barman_to_starport/data")
            .join(self.volume.file_name().unwrap())
    }

    pub fn starport_metadata(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.starport_metadata_path()).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }
}

impl Drop for TestPipeline {
    fn drop(&mut self) {
        let status = testenv()
            .arg("barman-down")
            .arg(&self.primary_dir)
            .arg(&self.root)
            .stdout(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("barman-down {} failed: {status:?}", self.root.display());
        }
    }
}

/// `reconciler ARGS --output json --specs DIR` with extra environment, parsed
/// (`null` when stdout holds no JSON), with its exit code.
pub fn reconciler_json(specs: &Path, args: &[&str], envs: &[(&str, String)]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(args)
        .args(["--output", "json", "--specs"])
        .arg(specs)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .env("RECONCILER_LOG", "info")
        .output()
        .expect("run reconciler");
    eprintln!(
        "$ reconciler {args:?} -> {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), value)
}

/// Steps of a plan or report, as `action` strings.
pub fn actions(steps: &Value) -> Vec<String> {
    steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let step = &s["step"];
            let action = step["action"].as_str().unwrap().to_string();
            match step.get("backupId").and_then(Value::as_str) {
                Some(id) => format!("{action}:{id}"),
                None => action,
            }
        })
        .collect()
}

/// The first pipeline of a diff report.
pub fn first(report: &Value) -> &Value {
    &report["pipelines"][0]
}

pub fn condition<'a>(pipeline: &'a Value, kind: &str) -> &'a Value {
    pipeline["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no condition {kind}"))
}

/// Starts postgres on a data directory (as its owner), runs `sql`, stops it.
/// Returns the query output and the server log.
pub fn query_cluster(data: &Path, sql: &str) -> (String, String) {
    let sock = tempfile::Builder::new()
        .prefix("it-sock-")
        .tempdir()
        .unwrap();
    run_checked(
        {
            let mut c = Command::new("chown");
            c.arg("barman:barman").arg(sock.path());
            c
        },
        "chown socket dir",
    );
    let log = sock.path().join("log");
    let runuser = |args: &[&std::ffi::OsStr]| {
        let mut c = Command::new("runuser");
        c.args(["-u", "barman", "--"]).args(args).current_dir("/");
        c
    };
    let pg_ctl = format!("{PGBIN}/pg_ctl");
    let opts = format!(
        "-c listen_addresses='' -k {} -p 5432",
        sock.path().display()
    );
    run_checked(
        runuser(&[
            pg_ctl.as_ref(),
            "-D".as_ref(),
            data.as_os_str(),
            "-l".as_ref(),
            log.as_os_str(),
            "-w".as_ref(),
            "-t".as_ref(),
            "120".as_ref(),
            "-o".as_ref(),
            opts.as_ref(),
            "start".as_ref(),
        ]),
        "pg_ctl start",
    );
    let psql = format!("{PGBIN}/psql");
    let out = runuser(&[
        psql.as_ref(),
        "-X".as_ref(),
        "-At".as_ref(),
        "-h".as_ref(),
        sock.path().as_os_str(),
        "-p".as_ref(),
        "5432".as_ref(),
        "-U".as_ref(),
        "postgres".as_ref(),
        "-d".as_ref(),
        "postgres".as_ref(),
        "-c".as_ref(),
        sql.as_ref(),
    ])
    .output()
    .unwrap();
    let _ = runuser(&[
        pg_ctl.as_ref(),
        "-D".as_ref(),
        data.as_os_str(),
        "-m".as_ref(),
        "fast".as_ref(),
        "-w".as_ref(),
        "stop".as_ref(),
    ])
    .status();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "query failed: {}\n{log_text}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        log_text,
    )
}

/// A throwaway copy of a data directory, owned by barman, so that starting postgres
/// on it changes nothing under test.
pub fn copy_of(data: &Path) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("it-copy-")
        .tempdir()
        .unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", data.display()))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let owned = Command::new("chown")
        .args(["-R", "barman:barman"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(owned.success());
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    dir
}

/// pg_controldata's "Database cluster state" of a data directory.
pub fn cluster_state(data: &Path) -> String {
    let out = Command::new(format!("{PGBIN}/pg_controldata"))
        .arg(data)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Database cluster state:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The replay socket directories (`-k …/reconciler-replay-…`) a reconciler log
/// names.
pub fn replay_socket_dirs(log: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = log
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .filter(|w| w.starts_with('/') && w.contains("/reconciler-replay-"))
        .map(PathBuf::from)
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

impl TestPipeline {
    /// The socket directory the volume's postmaster.pid names (its 5th line).
    pub fn postmaster_socket_dir(&self) -> Option<PathBuf> {
        let text = std::fs::read_to_string(self.volume.join("postmaster.pid")).ok()?;
        Some(PathBuf::from(text.lines().nth(4)?.trim()))
    }

    /// The pid in the volume's postmaster.pid, once postgres has written it.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.volume.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

/// Starts `reconciler apply --specs SPECS` with the `RECONCILER_PAUSE_AT` hook set
/// to `point` (plus `env`), and returns once it logged that it paused there, for
/// the caller to kill it. `context` is added to the failure message.
pub fn apply_until_paused(
    specs: &Path,
    point: &str,
    log: &Path,
    env: &[(&str, &str)],
    context: impl Fn() -> String,
) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["apply", "--specs"])
        .arg(specs)
        .envs(env.iter().copied())
        .env("RECONCILER_PAUSE_AT", point)
        .env("RECONCILER_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(&format!("paused at {point}"))
    {
        let exited = child.try_wait().unwrap();
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120) && exited.is_none(),
            "never reached {point} (exit: {exited:?}); {}:\n{}",
            context(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

/// An ssh server on loopback (`testenv sshd-up`), stopped when dropped.
pub struct Sshd {
    pub dir: PathBuf,
    pub port: String,
}

impl Sshd {
    pub fn up(dir: PathBuf) -> Self {
        let out = Command::new(repo().join("scripts/testenv"))
            .arg("sshd-up")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sshd-up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Sshd { dir, port }
    }

    pub fn down(&self) {
        let _ = Command::new(repo().join("scripts/testenv"))
            .arg("sshd-down")
            .arg(&self.dir)
            .output();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free loopback port (bound, then released): for a server to start on, or to
/// stand for a port nothing listens on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
