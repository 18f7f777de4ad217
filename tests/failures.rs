//! What an operator sees when something really fails: each row sets up a real
//! failure (a real ssh to a real sshd, a name that cannot resolve, a refused
//! port, barman without its configuration) and asserts that `reconciler diff`
//! prints the cause in the words of the tool that met it, with exit statuses as
//! plain numbers. The Docker rows (a stopped barman container, containers
//! mounting the volume) are in `tests/docker.rs`, which has the engine harness.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// One failure: the spec's extra lines, the condition that must show it, and
/// what its line in `diff` must say.
struct Row {
    name: &'static str,
    /// Spec lines appended under `starport:` (mirrors) or at the end of `spec:`.
    mirror: Option<String>,
    wal_streaming: bool,
    condition: &'static str,
    status: &'static str,
    shows: Vec<String>,
}

fn mirror(host: &str, port: &str, identity: &Path, known_hosts: &Path) -> String {
    format!(
        "    mirrors:
    - name: offsite
      ssh:
        host: {host}
        user: root
        port: {port}
        identityFile: {identity}
        knownHostsFile: {known_hosts}
      root: /srv/offsite
      timeout: 1m
",
        identity = identity.display(),
        known_hosts = known_hosts.display()
    )
}

/// Writes the row's spec under `root` (barman's configuration is a file that does
/// not exist unless `barman_conf` says otherwise) and returns the specs directory.
fn write_spec(root: &Path, row: &Row) -> PathBuf {
    let specs = root.join(row.name).join("specs");
    let nightly = root.join(row.name).join("nightly");
    let starport = root.join(row.name).join("starport");
    for dir in [&specs, &nightly, &starport] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut spec = format!(
        "apiVersion: reconciler.montagu/v1alpha1
kind: BackupPipeline
metadata:
  name: {name}
spec:
  barman:
    server: failures
    config: {conf}
  baseBackup:
    maxAge: 30d
  retention: {{keep: 2}}
  recoveredVolume:
    path: {volume}
    maxAge: 24h
    replay:
      postgresBin: {pgbin}
  starport:
    root: {starport}
    target: barman_to_starport
{mirror}",
        name = row.name,
        conf = root.join(row.name).join("no-such-barman.conf").display(),
        volume = nightly.join("db_volume").display(),
        pgbin = common::PGBIN,
        starport = starport.display(),
        mirror = row.mirror.as_deref().unwrap_or(""),
    );
    if row.wal_streaming {
        spec.push_str("  walStreaming: {}\n");
    }
    std::fs::write(specs.join("pipeline.yaml"), spec).unwrap();
    specs
}

#[test]
fn diff_shows_why_each_real_failure_happened() {
    common::ensure_installed();
    let root = tempfile::Builder::new()
        .prefix("reconciler-failures-")
        .tempdir()
        .unwrap();
    let sshd = common::Sshd::up(root.path().join("sshd"));
    let key = sshd.dir.join("id_ed25519");
    let known_hosts = sshd.dir.join("known_hosts");
    let missing_key = sshd.dir.join("no_such_key");
    let free = common::free_port().to_string();

    let rows = vec![
        Row {
            name: "missing-identity",
            mirror: Some(mirror("127.0.0.1", &sshd.port, &missing_key, &known_hosts)),
            wal_streaming: false,
            condition: "MirrorInSync",
            status: "Unknown",
            shows: vec![
                format!("Identity file {} not accessible", missing_key.display()),
                "Permission denied (publickey)".into(),
                "rsync failed (exit code ".into(),
            ],
        },
        Row {
            name: "unresolvable-host",
            mirror: Some(mirror("mirror.invalid", &sshd.port, &key, &known_hosts)),
            wal_streaming: false,
            condition: "MirrorInSync",
            status: "Unknown",
            shows: vec![
                "Could not resolve hostname mirror.invalid".into(),
                "rsync failed (exit code ".into(),
            ],
        },
        Row {
            name: "refused-port",
            mirror: Some(mirror("127.0.0.1", &free, &key, &known_hosts)),
            wal_streaming: false,
            condition: "MirrorInSync",
            status: "Unknown",
            shows: vec![
                format!("connect to host 127.0.0.1 port {free}: Connection refused"),
                "rsync failed (exit code ".into(),
            ],
        },
        Row {
            name: "barman-config-missing",
            mirror: None,
            wal_streaming: true,
            condition: "WalStreaming",
            status: "Unknown",
            shows: vec!["does not exist".into(), "no-such-barman.conf".into()],
        },
    ];

    let mut failures = Vec::new();
    for row in &rows {
        let specs = write_spec(root.path(), row);
        let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .args(["diff", "--specs"])
            .arg(&specs)
            .env("RECONCILER_LOG", "warn")
            .output()
            .expect("run reconciler");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("--- {}: exit {}\n{text}", row.name, out.status);
        let line = text
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|w| w.split('[').next() == Some(row.condition))
            })
            .unwrap_or_default();
        let mut problems = Vec::new();
        if out.status.code() != Some(2) {
            problems.push(format!(
                "exit {} (want 2: something is Unknown)",
                out.status
            ));
        }
        if !line.split_whitespace().any(|w| w == row.status) {
            problems.push(format!("{} is not {}", row.condition, row.status));
        }
        for words in &row.shows {
            if !line.contains(words.as_str()) {
                problems.push(format!("{} does not say `{words}`", row.condition));
            }
        }
        if text.contains("Some(") {
            problems.push("an exit code printed as Some(…)".into());
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}\n  {line}", row.name, problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
