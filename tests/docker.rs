//! The pipeline where it really lives: barman in a long-lived container streaming
//! from a real primary, the recovered database in a Docker named volume, WAL replay
//! in a container. Everything is real: a Docker engine (the machine's, or a private
//! `dockerd` that `scripts/dockerenv` starts when none answers), an image built
//! locally without any registry (debootstrap + `docker import`, cached by tag),
//! barman 3.4, PostgreSQL 15 and rsync.
//!
//! Each test owns uniquely named containers and volumes, removed when it ends, also
//! after a failed assertion.
//!
//! One file for one harness: every test here shares the engine, the locally built
//! image and a barman container per test, which a split would set up once per
//! binary; hence its length.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const PGBIN: &str = "/usr/lib/postgresql/15/bin";

/// The engine and the image, shared by the tests of this binary.
struct DockerEnv {
    host: String,
    image: String,
    /// `uid:gid` of the barman account inside the image.
    barman_user: String,
}

fn dockerenv(args: &[&str]) -> String {
    let out = Command::new(common::repo().join("scripts/dockerenv"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/dockerenv");
    assert!(out.status.success(), "dockerenv {args:?} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn env() -> &'static DockerEnv {
    static ENV: OnceLock<DockerEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let host = dockerenv(&["engine"]);
        // Every command below gets the engine's address in its own environment.
        let image = Command::new(common::repo().join("scripts/dockerenv"))
            .arg("image")
            .env("DOCKER_HOST", &host)
            .stderr(Stdio::inherit())
            .output()
            .expect("build the test image");
        assert!(image.status.success(), "building the test image failed");
        let image = String::from_utf8_lossy(&image.stdout).trim().to_string();
        let ids = Command::new(common::repo().join("scripts/dockerenv"))
            .args(["image-ids", &image])
            .env("DOCKER_HOST", &host)
            .output()
            .expect("image ids");
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        assert_eq!(ids.len(), 4, "image-ids: {ids:?}");
        DockerEnv {
            host,
            image,
            barman_user: format!("{}:{}", ids[0], ids[1]),
        }
    })
}

/// `docker ARGS…` against the test engine.
fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", &env().host)
        .output()
        .expect("run docker")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One pipeline in the production layout: a barman container (named volume at
/// /var/lib/barman, the recovered volume at /nightly) streaming from the shared
/// primary, a replay image, a starport directory and a spec.
struct DockerPipeline {
    name: String,
    server: String,
    barman_container: String,
    barman_data: String,
    db_volume: String,
    root: PathBuf,
    specs: PathBuf,
    starport: PathBuf,
}

impl DockerPipeline {
    /// `tag`: lowercase letters and digits, unique in this binary.
    fn new(tag: &str) -> Self {
        let env = env();
        let primary = common::primary();
        let port = primary_port(&primary.dir);
        let unique = format!("{tag}{}", std::process::id());
        let p = DockerPipeline {
            name: format!("dk-{unique}"),
            server: format!("dk_{unique}"),
            barman_container: format!("reconciler-test-barman-{unique}"),
            barman_data: format!("reconciler_test_barman_{unique}"),
            db_volume: format!("reconciler_test_db_{unique}"),
            root: PathBuf::from(format!("/tmp/reconciler-docker-{unique}")),
            specs: PathBuf::from(format!("/tmp/reconciler-docker-{unique}/specs")),
            starport: PathBuf::from(format!("/tmp/reconciler-docker-{unique}/starport")),
        };
        std::fs::create_dir_all(&p.specs).unwrap();
        std::fs::create_dir_all(&p.starport).unwrap();
        let conf = p.root.join("barman.conf");
        std::fs::write(
            &conf,
            format!(
                "[barman]
barman_user = barman
barman_home = /var/lib/barman
log_file = /var/lib/barman/barman.log
log_level = INFO

[{server}]
description = reconciler docker test
conninfo = host=127.0.0.1 port={port} user=barman dbname=postgres
streaming_conninfo = host=127.0.0.1 port={port} user=streaming_barman
backup_method = postgres
archiver = off
streaming_archiver = on
slot_name = {server}
create_slot = auto
immediate_checkpoint = true
minimum_redundancy = 1
path_prefix = {PGBIN}
",
                server = p.server
            ),
        )
        .unwrap();
        let label = format!("reconciler-test={unique}");
        for volume in [&p.barman_data, &p.db_volume] {
            docker_ok(&["volume", "create", "--label", &label, volume]);
        }
        // barman's production container: receive-wal as its main process, the
        // recovered volume mounted at /nightly. Host network: the primary listens
        // on loopback.
        docker_ok(&[
            "run",
            "-d",
            "--name",
            &p.barman_container,
            "--label",
            &label,
            "--network",
            "host",
            "-v",
            &format!("{}:/var/lib/barman", p.barman_data),
            "-v",
            &format!("{}:/nightly", p.db_volume),
            "-v",
            &format!("{}:/etc/barman.conf:ro", conf.display()),
            &env.image,
            "barman",
            "-c",
            "/etc/barman.conf",
            "receive-wal",
            &p.server,
        ]);
        p.wait_streaming();
        // barman takes no backup before its WAL archive holds a segment (its check
        // `wal_archive`): archive the first one, as `testenv barman-up` does.
        docker_ok(&[
            "exec",
            &p.barman_container,
            "barman",
            "-c",
            "/etc/barman.conf",
            "switch-wal",
            "--force",
            "--archive",
            "--archive-timeout",
            "60",
            &p.server,
        ]);
        p.write_spec("30d");
        p
    }

    fn wait_streaming(&self) {
        let start = Instant::now();
        loop {
            let active = common::primary().sql(&format!(
                "select count(*) from pg_replication_slots where slot_name = '{}' and active",
                self.server
            ));
            if active.trim() == "1" {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "receive-wal in {} never streamed: {}",
                self.barman_container,
                String::from_utf8_lossy(&docker(&["logs", &self.barman_container]).stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn write_spec(&self, backup_max_age: &str) {
        std::fs::write(
            self.specs.join("pipeline.yaml"),
            format!(
                "apiVersion: reconciler.montagu/v1alpha1
kind: BackupPipeline
metadata:
  name: {name}
spec:
  barman:
    server: {server}
    config: /etc/barman.conf
    container: {container}
  baseBackup:
    maxAge: {backup_max_age}
    timeout: 5m
  retention: {{keep: 2}}
  recoveredVolume:
    dockerVolume: {volume}
    barmanPath: /nightly
    maxAge: 24h
    recoverTimeout: 5m
    replay:
      postgresBin: {PGBIN}
      timeout: 5m
      stopTimeout: 2m
      container:
        image: {image}
        mountPath: /pgdata
  starport:
    root: {starport}
    target: barman_to_starport
    timeout: 5m
",
                name = self.name,
                server = self.server,
                container = self.barman_container,
                volume = self.db_volume,
                image = env().image,
                starport = self.starport.display(),
            ),
        )
        .unwrap();
    }

    fn reconciler(&self, args: &[&str]) -> (i32, Value, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .args(args)
            .args(["--output", "json", "--specs"])
            .arg(&self.specs)
            .env("DOCKER_HOST", &env().host)
            .env("RECONCILER_LOG", "info")
            .output()
            .expect("run reconciler");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!(
            "$ reconciler {args:?} -> {}\n{}\n{stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), value, stderr)
    }

    fn condition(report: &Value, kind: &str) -> (String, String, String) {
        let c = report["pipelines"][0]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {report:#}"))
            .clone();
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        (s("status"), s("reason"), s("message"))
    }

    /// The volume's files on this host.
    fn mountpoint(&self) -> PathBuf {
        PathBuf::from(docker_ok(&[
            "volume",
            "inspect",
            "--format",
            "{{.Mountpoint}}",
            &self.db_volume,
        ]))
    }

    /// Containers the reconciler made for this pipeline (replay, tools).
    fn reconciler_containers(&self) -> String {
        docker_ok(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=reconciler.montagu/pipeline={}", self.name),
            "--format",
            "{{.Names}}",
        ])
    }

    /// Starts postgres in a container on the recovered volume, as a consumer
    /// would, and runs `sql` once it answers. Returns the rows and the log.
    fn query_volume(&self, sql: &str) -> (String, String) {
        let name = format!("{}-check", self.barman_container);
        let _cleanup = RemoveContainer(name.clone());
        start_postgres_on(&name, &self.db_volume);
        query_postgres_in(&name, sql)
    }
}

/// Starts a container running postgres on `volume` (PGDATA, as barman's account
/// in the image): a consumer database as production runs it.
fn start_postgres_on(name: &str, volume: &str) {
    let env = env();
    run_detached(
        name,
        &[
            "--user",
            &env.barman_user,
            "-v",
            &format!("{volume}:/pgdata"),
            &env.image,
            "postgres",
            "-D",
            "/pgdata",
            "-k",
            "/tmp",
            "-p",
            "5432",
            "-c",
            "listen_addresses=",
            "-c",
            "archive_mode=off",
        ],
    );
}

/// `docker run -d --name NAME --network none ARGS…`: the tests' containers need
/// no network.
fn run_detached(name: &str, args: &[&str]) {
    let mut run = vec!["run", "-d", "--name", name, "--network", "none"];
    run.extend_from_slice(args);
    docker_ok(&run);
}

/// Runs `sql` in the postgres container `name` once it answers; returns the rows
/// and the container's log.
fn query_postgres_in(name: &str, sql: &str) -> (String, String) {
    let env = env();
    let start = Instant::now();
    loop {
        let out = docker(&[
            "exec",
            "--user",
            &env.barman_user,
            name,
            "psql",
            "-X",
            "-A",
            "-t",
            "-h",
            "/tmp",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ]);
        if out.status.success() {
            let log = docker(&["logs", name]);
            return (
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
                String::from_utf8_lossy(&log.stderr).into_owned(),
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "postgres in {name} never answered: {}",
            String::from_utf8_lossy(&docker(&["logs", name]).stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn primary_port(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("env"))
        .expect("primary env")
        .lines()
        .find_map(|l| l.strip_prefix("PRIMARY_PORT="))
        .expect("PRIMARY_PORT")
        .trim()
        .to_string()
}

struct RemoveContainer(String);

impl Drop for RemoveContainer {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

impl Drop for DockerPipeline {
    fn drop(&mut self) {
        // receive-wal stops on SIGTERM (never SIGKILL it: barman-facts P9).
        let _ = docker(&["stop", "-t", "20", &self.barman_container]);
        let _ = docker(&["rm", "-f", &self.barman_container]);
        let leftovers = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=reconciler.montagu/pipeline={}", self.name),
        ]);
        for id in String::from_utf8_lossy(&leftovers.stdout).split_whitespace() {
            let _ = docker(&["rm", "-f", id]);
        }
        for volume in [&self.barman_data, &self.db_volume] {
            let _ = docker(&["volume", "rm", "-f", volume]);
        }
        // The slot would make the primary keep WAL forever.
        let _ = Command::new(common::repo().join("scripts/testenv"))
            .arg("psql")
            .arg(&common::primary().dir)
            .arg("-c")
            .arg(format!(
                "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = '{}' and not active",
                self.server
            ))
            .output();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[test]
fn the_production_layout_converges_and_replays_wal_in_containers() {
    let p = DockerPipeline::new("e2e");
    let primary = common::primary();
    let note = |n: &str| format!("{}: {n}", p.name);
    primary.sql(&format!(
        "insert into rows(note) values ('{}')",
        note("before the backup")
    ));

    // From nothing: a backup by exec into barman's container, recovery into the
    // Docker volume, replay in a container, the starport synced from the volume.
    let (code, report, _) = p.reconciler(&["apply"]);
    assert_eq!(code, 0, "first apply converges: {report:#}");
    let actions: Vec<String> = report["pipelines"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"]["action"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        actions,
        ["takeBaseBackup", "recoverVolume", "syncStarport"],
        "{report:#}"
    );
    let marker: Value = serde_json::from_slice(
        &std::fs::read(p.mountpoint().join(".reconciler-volume.json")).unwrap(),
    )
    .unwrap();
    let metadata: Value = serde_json::from_slice(
        &std::fs::read(p.starport.join("barman_to_starport/meta/metadata.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(metadata["generation"], marker["generation"]);
    assert!(
        p.starport
            .join(format!(
                "barman_to_starport/data/{}/PG_VERSION",
                p.db_volume
            ))
            .exists()
    );
    assert_eq!(
        p.reconciler_containers(),
        "",
        "the replay and tool containers are removed"
    );
    let (code, _, _) = p.reconciler(&["diff"]);
    assert_eq!(code, 0, "converged");

    // Rows written after the backup reach the volume only through WAL replay.
    primary.sql(&format!(
        "insert into rows(note) values ('{}')",
        note("after the backup")
    ));
    std::fs::remove_file(p.mountpoint().join(".reconciler-volume.json")).unwrap();
    let (code, report, _) = p.reconciler(&["diff"]);
    assert_eq!(code, 1, "{report:#}");
    let (status, reason, message) = DockerPipeline::condition(&report, "VolumeFresh");
    assert_eq!(status, "False");
    assert!(message.contains("no marker"), "{reason}: {message}");

    let (code, report, _) = p.reconciler(&["apply"]);
    assert_eq!(code, 0, "second apply converges: {report:#}");
    assert_eq!(p.reconciler_containers(), "");

    let (rows, log) = p.query_volume(&format!(
        "select count(*) from rows where note in ('{}', '{}')",
        note("before the backup"),
        note("after the backup")
    ));
    assert_eq!(rows, "2", "both rows are on the recovered volume");
    assert!(
        log.contains("shut down in recovery"),
        "the marked volume was not a standby at rest when started:\n{log}"
    );
}

#[test]
fn diff_says_why_when_the_container_stops_or_the_volume_is_missing() {
    let p = DockerPipeline::new("diff");
    // The volume does not exist: the plan recovers into a new one.
    let text = std::fs::read_to_string(p.specs.join("pipeline.yaml")).unwrap();
    let missing = format!("{}_missing", p.db_volume);
    std::fs::write(
        p.specs.join("pipeline.yaml"),
        text.replace(
            &format!("dockerVolume: {}", p.db_volume),
            &format!("dockerVolume: {missing}"),
        ),
    )
    .unwrap();
    let (code, report, _) = p.reconciler(&["diff"]);
    assert_eq!(code, 1, "{report:#}");
    let (status, reason, message) = DockerPipeline::condition(&report, "VolumeFresh");
    assert_eq!(status, "False");
    assert!(
        message.contains(&missing) && message.contains("does not exist"),
        "{reason}: {message}"
    );
    let steps = report["pipelines"][0]["steps"].to_string();
    assert!(steps.contains("recoverVolume"), "{steps}");
    // A diff never creates anything.
    assert!(!docker(&["volume", "inspect", &missing]).status.success());

    // barman's container stopped: what barman holds is Unknown, with the reason,
    // and nothing is planned on a blind guess.
    docker_ok(&["stop", "-t", "20", &p.barman_container]);
    let (code, report, _) = p.reconciler(&["diff"]);
    assert_eq!(code, 2, "unknown state is exit 2: {report:#}");
    let (status, _, message) = DockerPipeline::condition(&report, "BaseBackupFresh");
    assert_eq!(status, "Unknown");
    assert!(
        message.contains(&p.barman_container) && message.contains("not running"),
        "{message}"
    );
    assert_eq!(report["pipelines"][0]["steps"], Value::Array(vec![]));
}

#[test]
fn a_replay_container_left_by_a_killed_reconciler_is_stopped_and_redone() {
    let p = DockerPipeline::new("stray");
    // A row of its own, so the check below does not rest on other tests' rows
    // having been written before this backup.
    common::primary().sql(&format!(
        "insert into rows(note) values ('{}: before the backup')",
        p.name
    ));
    let (code, report, _) = p.reconciler(&["apply"]);
    assert_eq!(code, 0, "{report:#}");
    std::fs::remove_file(p.mountpoint().join(".reconciler-volume.json")).unwrap();

    // SIGKILL during replay: the replay container outlives the reconciler.
    let log = p.root.join("killed.log");
    let mut child = common::apply_until_paused(
        &p.specs,
        "replay",
        &log,
        &[("DOCKER_HOST", env().host.as_str())],
        String::new,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let stray = format!("reconciler-replay-{}", p.name);
    assert_eq!(
        p.reconciler_containers(),
        stray,
        "the replay container outlived it"
    );
    assert!(
        !p.mountpoint().join(".reconciler-volume.json").exists(),
        "no marker while the replay runs"
    );

    // The next run sees it, stops it cleanly first, then recovers again.
    let (code, report, _) = p.reconciler(&["diff"]);
    assert_eq!(code, 1, "{report:#}");
    let first = &report["pipelines"][0]["steps"][0]["step"];
    assert_eq!(first["action"], "stopStrayReplay", "{report:#}");
    assert_eq!(first["container"], stray.as_str());

    let (code, report, _) = p.reconciler(&["apply"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(p.reconciler_containers(), "", "nothing left running");
    let (rows, _) = p.query_volume("select count(*) > 0 from rows");
    assert_eq!(rows, "t");
}

#[test]
fn an_unreachable_docker_engine_is_unknown_not_a_guess() {
    let p = DockerPipeline::new("nodocker");
    let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["diff", "--output", "json", "--specs"])
        .arg(&p.specs)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "unknown is exit 2");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for kind in ["BaseBackupFresh", "VolumeFresh"] {
        let (status, _, message) = DockerPipeline::condition(&report, kind);
        assert_eq!(status, "Unknown", "{kind}: {message}");
        assert!(
            message.contains("Docker engine does not answer"),
            "{kind}: {message}"
        );
    }
    assert_eq!(report["pipelines"][0]["steps"], Value::Array(vec![]));
}

struct RemoveVolume(String);

impl Drop for RemoveVolume {
    fn drop(&mut self) {
        let _ = docker(&["volume", "rm", "-f", &self.0]);
    }
}

#[test]
fn a_running_consumer_blocks_the_restore_until_the_spec_lets_it_be_stopped() {
    let p = DockerPipeline::new("consumer");
    let primary = common::primary();
    let note = format!("{}: for the consumer", p.name);
    primary.sql(&format!("insert into rows(note) values ('{note}')"));
    let (code, report, _) = p.reconciler(&["apply"]);
    assert_eq!(code, 0, "the backup side converges: {report:#}");

    // A consumer host: its own Docker volume, restored from the starport, used by
    // a postgres container.
    let restored = format!("{}_restored", p.db_volume);
    let _volume = RemoveVolume(restored.clone());
    let consumer = format!("{}-consumer", p.barman_container);
    let _consumer = RemoveContainer(consumer.clone());
    let specs = p.root.join("consumer-specs");
    std::fs::create_dir_all(&specs).unwrap();
    let write_spec = |stop_for_restore: bool| {
        std::fs::write(
            specs.join("science.yaml"),
            format!(
                "apiVersion: reconciler.montagu/v1alpha1
kind: RestoreTarget
metadata:
  name: science-{name}
spec:
  source:
    root: {starport}
    target: barman_to_starport
    volumeName: {volume}
    timeout: 5m
  volume:
    dockerVolume: {restored}
  maxAge: 24h
  consumers:
    containers: [{consumer}]
    stopForRestore: {stop_for_restore}
    stopTimeout: 1m
",
                name = p.name,
                starport = p.starport.display(),
                volume = p.db_volume,
            ),
        )
        .unwrap();
    };
    write_spec(false);

    // Nothing runs on the volume yet: restored at once, then the consumer starts
    // on it and serves the primary's row.
    let (code, report) =
        common::reconciler_json(&specs, &["diff"], &[("DOCKER_HOST", env().host.clone())]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["pipelines"][0]["kind"], "RestoreTarget");
    let (status, reason, _) = DockerPipeline::condition(&report, "VolumeRestored");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "VolumeMissing")
    );
    let (code, report) =
        common::reconciler_json(&specs, &["apply"], &[("DOCKER_HOST", env().host.clone())]);
    assert_eq!(code, 0, "{report:#}");
    start_postgres_on(&consumer, &restored);
    let (rows, _) = query_postgres_in(
        &consumer,
        &format!("select count(*) from rows where note = '{note}'"),
    );
    assert_eq!(rows, "1", "the restored volume serves the primary's row");

    // The backup host publishes a new generation while the consumer runs.
    let later = format!("{}: after the first restore", p.name);
    primary.sql(&format!("insert into rows(note) values ('{later}')"));
    std::fs::remove_file(p.mountpoint().join(".reconciler-volume.json")).unwrap();
    let (code, report, _) = p.reconciler(&["apply"]);
    assert_eq!(code, 0, "{report:#}");

    let (code, report) =
        common::reconciler_json(&specs, &["diff"], &[("DOCKER_HOST", env().host.clone())]);
    assert_eq!(code, 1, "{report:#}");
    let (status, reason, _) = DockerPipeline::condition(&report, "VolumeRestored");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "OutOfDate"));
    assert_eq!(report["pipelines"][0]["steps"], Value::Array(vec![]));
    let waits = report["pipelines"][0]["waitingOn"].to_string();
    assert!(
        waits.contains(&consumer) && waits.contains("stopForRestore"),
        "diff names the consumer it waits on: {waits}"
    );
    let (code, report) =
        common::reconciler_json(&specs, &["apply"], &[("DOCKER_HOST", env().host.clone())]);
    assert_eq!(code, 1, "apply waits too: {report:#}");
    assert_eq!(report["pipelines"][0]["steps"], Value::Array(vec![]));
    let (rows, _) = query_postgres_in(&consumer, "select count(*) from rows");
    assert_ne!(rows, "", "the consumer was left alone and still serves");

    // Opted in, but the restore is stopped (SIGTERM) after the consumer was
    // stopped and before anything was copied: the consumer is started again and
    // the volume keeps its complete previous generation.
    write_spec(true);
    let marker_path = Path::new(&docker_ok(&[
        "volume",
        "inspect",
        "--format",
        "{{.Mountpoint}}",
        &restored,
    ]))
    .join(".reconciler-restore.json");
    let before: Value = serde_json::from_slice(&std::fs::read(&marker_path).unwrap()).unwrap();
    let log = p.root.join("restore-interrupted.log");
    let mut child = common::apply_until_paused(
        &specs,
        "restore:consumersStopped",
        &log,
        &[("DOCKER_HOST", env().host.as_str())],
        String::new,
    );
    assert_eq!(
        docker_ok(&["inspect", "--format", "{{.State.Status}}", &consumer]),
        "exited",
        "stopped for the restore"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "an interrupted apply is not a success");
    assert_eq!(
        docker_ok(&["inspect", "--format", "{{.State.Status}}", &consumer]),
        "running",
        "started again: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let after: Value = serde_json::from_slice(&std::fs::read(&marker_path).unwrap()).unwrap();
    assert_eq!(after, before, "the previous marker is back");
    let (rows, _) = query_postgres_in(&consumer, "select count(*) from rows");
    assert_ne!(rows, "", "the consumer serves its previous copy");

    // Opted in, but the consumer is started by hand once the copy is done, and
    // stopped again before the restore looks: what it wrote is mixed with the
    // copy, so the volume is not marked restored.
    let (failure, log) = apply_used_after_copy(&specs, &p.root, || {
        docker_ok(&["start", &consumer]);
        docker_ok(&["stop", &consumer]);
    });
    assert!(
        failure.contains("was used while it was being restored")
            && failure.contains(&format!("container {consumer} started at")),
        "the failure names the volume's user:\n{log}"
    );
    let marker: Value = serde_json::from_slice(&std::fs::read(&marker_path).unwrap()).unwrap();
    assert_eq!(
        marker["state"], "restoring",
        "never marked restored: {marker:#}"
    );
    // Started by hand once more: the next restore has a running consumer to stop.
    docker_ok(&["start", &consumer]);

    // Opted in: stopped, restored, started again, serving the new row.
    let (code, report) =
        common::reconciler_json(&specs, &["apply"], &[("DOCKER_HOST", env().host.clone())]);
    assert_eq!(code, 0, "{report:#}");
    let actions = common::actions(&report["pipelines"][0]["steps"]);
    assert_eq!(actions, ["restoreVolume", "startConsumers"], "{report:#}");
    assert_eq!(
        report["pipelines"][0]["steps"][0]["step"]["stopConsumers"][0],
        consumer.as_str()
    );
    assert_eq!(
        docker_ok(&["inspect", "--format", "{{.State.Status}}", &consumer]),
        "running"
    );
    let (rows, log) = query_postgres_in(
        &consumer,
        &format!("select count(*) from rows where note in ('{note}', '{later}')"),
    );
    assert_eq!(rows, "2", "the consumer serves the new generation");
    assert!(
        log.contains("database system was shut down"),
        "the consumer started on a cleanly shut down copy:\n{log}"
    );
    let mountpoint = docker_ok(&[
        "volume",
        "inspect",
        "--format",
        "{{.Mountpoint}}",
        &restored,
    ]);
    let marker: Value = serde_json::from_slice(
        &std::fs::read(Path::new(&mountpoint).join(".reconciler-restore.json")).unwrap(),
    )
    .unwrap();
    let metadata: Value = serde_json::from_slice(
        &std::fs::read(p.starport.join("barman_to_starport/meta/metadata.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(marker["state"], "restored");
    assert_eq!(marker["generation"], metadata["generation"]);
    assert_eq!(
        marker["consumersToStart"],
        Value::Null,
        "the record is cleared"
    );
    let (code, report) =
        common::reconciler_json(&specs, &["diff"], &[("DOCKER_HOST", env().host.clone())]);
    assert_eq!(code, 0, "{report:#}");
}

/// Runs `apply` on `specs` until its restore has copied, does `meanwhile`, lets it
/// go on, and returns the line saying why the step failed (it must fail) with the
/// whole log. `dir` holds the log and the file that resumes the apply.
fn apply_used_after_copy(specs: &Path, dir: &Path, meanwhile: impl FnOnce()) -> (String, String) {
    let resume = dir.join("resume-after-copy");
    let log = dir.join("restore-used-after-copy.log");
    let child = common::apply_until_paused(
        specs,
        "restore:copied",
        &log,
        &[
            ("DOCKER_HOST", env().host.as_str()),
            ("RECONCILER_RESUME_WHEN", resume.to_str().unwrap()),
        ],
        String::new,
    );
    meanwhile();
    std::fs::write(&resume, "").unwrap();
    let out = child.wait_with_output().unwrap();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!out.status.success(), "the restore failed:\n{log}");
    let failure = log
        .lines()
        .find(|l| l.contains("step failed"))
        .unwrap_or_default()
        .to_string();
    (failure, log)
}

/// A complete starport copy, as a backup host publishes it (its contents do not
/// matter to these tests), of generation `g-dir`, and the spec of a consumer host's
/// directory restore target in `root`: returns (specs directory, target directory).
fn directory_target(root: &Path) -> (PathBuf, PathBuf) {
    let copy = root.join("starport/barman_to_starport");
    std::fs::create_dir_all(copy.join("data/db_volume/base")).unwrap();
    std::fs::create_dir_all(copy.join("meta")).unwrap();
    std::fs::write(copy.join("data/db_volume/PG_VERSION"), "15\n").unwrap();
    let now = jiff::Timestamp::now().to_string();
    std::fs::write(
        copy.join("meta/metadata.json"),
        serde_json::json!({"last_backup": now, "generation": "g-dir", "recovered_at": now})
            .to_string(),
    )
    .unwrap();
    let restored = root.join("consumer/db");
    std::fs::create_dir_all(&restored).unwrap();
    let specs = root.join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    std::fs::write(
        specs.join("target.yaml"),
        format!(
            "apiVersion: reconciler.montagu/v1alpha1
kind: RestoreTarget
metadata:
  name: consumer-dir
spec:
  source:
    root: {starport}
    target: barman_to_starport
    volumeName: db_volume
  volume:
    path: {restored}
  maxAge: 24h
",
            starport = root.join("starport").display(),
            restored = restored.display(),
        ),
    )
    .unwrap();
    (specs, restored)
}

/// Runs a container `name` that sleeps with `mount` (`-v` syntax) and no network.
fn run_sleeper(name: &str, mount: &str) {
    run_detached(
        name,
        &[
            "-v",
            mount,
            "--entrypoint",
            "/bin/sleep",
            &env().image,
            "600",
        ],
    );
}

/// Asserts that `diff` on the one restore target in `specs` plans nothing and
/// waits for unlisted container `container` to stop.
fn diff_waits_for(specs: &Path, container: &str) {
    let (code, report) =
        common::reconciler_json(specs, &["diff"], &[("DOCKER_HOST", env().host.clone())]);
    assert_eq!(code, 1, "{report:#}");
    let target = &report["pipelines"][0];
    assert_eq!(target["steps"], Value::Array(vec![]), "{report:#}");
    let waits = target["waitingOn"].to_string();
    assert!(
        waits.contains(container) && waits.contains("not listed"),
        "diff names the container that writes into the directory: {waits}"
    );
}

#[test]
fn a_container_bind_mounting_a_directory_target_blocks_its_restore() {
    let root = tempfile::tempdir().unwrap();
    let (specs, restored) = directory_target(root.path());
    let engine = [("DOCKER_HOST", env().host.clone())];

    // The container mounts the directory holding the volume: never restored under it.
    let user = format!("reconciler-test-bind-{}", std::process::id());
    let _user = RemoveContainer(user.clone());
    let parent = restored.parent().unwrap().display().to_string();
    run_sleeper(&user, &format!("{parent}:/srv/consumer"));
    diff_waits_for(&specs, &user);
    let (code, report) = common::reconciler_json(&specs, &["apply"], &engine);
    assert_eq!(code, 1, "{report:#}");
    assert!(!restored.join("PG_VERSION").exists(), "nothing was copied");

    docker_ok(&["rm", "-f", &user]);

    // A local volume made to bind the directory (compose's `driver_opts: {type:
    // none, o: bind, device: …}`) is reported by the engine as a volume, but a
    // container mounting it writes into the directory all the same.
    let bound = format!("reconciler-test-bound-{}", std::process::id());
    let _bound = RemoveVolume(bound.clone());
    docker_ok(&[
        "volume",
        "create",
        "--driver",
        "local",
        "--opt",
        "type=none",
        "--opt",
        "o=bind",
        "--opt",
        &format!("device={}", restored.display()),
        &bound,
    ]);
    let compose_user = format!("reconciler-test-bound-user-{}", std::process::id());
    let _compose_user = RemoveContainer(compose_user.clone());
    run_sleeper(&compose_user, &format!("{bound}:/var/lib/postgresql/data"));
    diff_waits_for(&specs, &compose_user);
    docker_ok(&["rm", "-f", &compose_user]);

    // Gone: restored.
    let (code, report) = common::reconciler_json(&specs, &["apply"], &engine);
    assert_eq!(code, 0, "{report:#}");
    let marker: Value =
        serde_json::from_slice(&std::fs::read(restored.join(".reconciler-restore.json")).unwrap())
            .unwrap();
    assert_eq!(
        (marker["state"].as_str(), marker["generation"].as_str()),
        (Some("restored"), Some("g-dir"))
    );
    assert!(restored.join("PG_VERSION").exists());
}

#[test]
fn a_write_into_a_directory_target_during_its_copy_keeps_it_unrestored() {
    let root = tempfile::tempdir().unwrap();
    let (specs, restored) = directory_target(root.path());
    let marker = || -> Value {
        serde_json::from_slice(&std::fs::read(restored.join(".reconciler-restore.json")).unwrap())
            .unwrap()
    };

    // A process of the consumer host, not a container, writes into the copy once
    // it is done: no engine and no postmaster.pid can tell, the copy itself does.
    let (failure, log) = apply_used_after_copy(&specs, root.path(), || {
        std::fs::write(restored.join("base/written-by-a-consumer"), "rows").unwrap();
    });
    assert!(
        failure.contains("was used while it was being restored")
            && failure.contains("differs from the starport copy in")
            && failure.contains("written-by-a-consumer"),
        "the failure says what differs:\n{log}"
    );
    assert_eq!(marker()["state"], "restoring", "never marked restored");

    // The next apply copies again, over the stray file, and marks it restored.
    let engine = [("DOCKER_HOST", env().host.clone())];
    let (code, report) = common::reconciler_json(&specs, &["apply"], &engine);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        (marker()["state"].as_str(), marker()["generation"].as_str()),
        (Some("restored"), Some("g-dir"))
    );
    assert!(!restored.join("base/written-by-a-consumer").exists());
    let (code, report) = common::reconciler_json(&specs, &["diff"], &engine);
    assert_eq!(code, 0, "{report:#}");
}

/// barman's container restarted in the middle of a base backup (a host reboot, a
/// redeploy): the STARTED entry is dead by barman's own evidence, looked at
/// inside the container, and the pipeline goes on instead of waiting for ever.
#[test]
fn a_backup_cut_off_by_a_barman_container_restart_is_cleaned_and_the_pipeline_converges() {
    let p = DockerPipeline::new("restart");
    let conf = p.root.join("barman.conf");
    let original = std::fs::read_to_string(&conf).unwrap();
    // Slow enough to be cut off mid-copy. Written in place: the container
    // bind-mounts this very file.
    std::fs::write(&conf, format!("{original}bandwidth_limit = 2000\n")).unwrap();
    let barman = |args: &[&str]| -> Value {
        let mut argv = vec![
            "exec",
            &p.barman_container,
            "barman",
            "-c",
            "/etc/barman.conf",
            "-f",
            "json",
        ];
        argv.extend_from_slice(args);
        serde_json::from_str(&docker_ok(&argv)).unwrap_or(Value::Null)
    };
    let started = || -> Option<String> {
        barman(&["list-backups", &p.server])[&p.server]
            .as_array()?
            .iter()
            .find(|b| b["status"] == "STARTED")
            .and_then(|b| b["backup_id"].as_str().map(String::from))
    };
    docker_ok(&[
        "exec",
        "-d",
        &p.barman_container,
        "barman",
        "-c",
        "/etc/barman.conf",
        "backup",
        &p.server,
    ]);
    let start = Instant::now();
    let id = loop {
        if let Some(id) = started() {
            break id;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no backup started"
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // While it runs, it is waited for, inside the container's own view.
    let (code, report, _) = p.reconciler(&["diff"]);
    assert_eq!(code, 1, "{report:#}");
    assert!(
        report["pipelines"][0]["waitingOn"]
            .to_string()
            .contains(&format!("backup {id} to finish")),
        "{report:#}"
    );

    docker_ok(&["restart", "-t", "2", &p.barman_container]);
    p.wait_streaming();
    assert_eq!(
        started().as_deref(),
        Some(id.as_str()),
        "the entry outlives the restart"
    );

    let (code, report, _) = p.reconciler(&["diff"]);
    assert_eq!(code, 1, "{report:#}");
    let (status, reason, message) = DockerPipeline::condition(&report, "RetentionSatisfied");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "DeadBackups"),
        "{message}"
    );
    assert!(message.contains(&id), "{message}");
    assert!(
        report["pipelines"][0]["steps"].to_string().contains(&id),
        "{report:#}"
    );

    std::fs::write(&conf, &original).unwrap();
    let (code, report, _) = p.reconciler(&["apply"]);
    assert_eq!(code, 0, "converges: {report:#}");
    assert_eq!(started(), None, "no STARTED entry is left");
}

/// What `diff` (text) prints for the pipeline in `specs`, with its exit code.
fn diff_text(specs: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["diff", "--specs"])
        .arg(specs)
        .env("DOCKER_HOST", &env().host)
        .env("RECONCILER_LOG", "warn")
        .output()
        .expect("run reconciler");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("$ reconciler diff -> {}\n{text}", out.status);
    (out.status.code().unwrap_or(-1), text)
}

/// A row: its name, a container and its mount (none: stop barman's container),
/// what VolumeFresh's line must say, what no line may say.
type UsersRow<'a> = (&'a str, Option<(&'a str, String)>, Vec<String>, Vec<String>);

#[test]
fn diff_names_who_uses_the_volume_and_why_barman_cannot_answer() {
    let p = DockerPipeline::new("users");
    // A fresh recovery as far as the marker says (no postgres ever ran on it).
    let marker = serde_json::json!({
        "generation": "g-test",
        "backupId": "20261120T000000",
        "recoveredAt": jiff::Timestamp::now().to_string(),
        "replayedToLsn": "0/3000000",
        "pipeline": p.name,
    });
    let mountpoint = p.mountpoint();
    std::fs::write(
        mountpoint.join(".reconciler-volume.json"),
        serde_json::to_vec(&marker).unwrap(),
    )
    .unwrap();
    assert!(!mountpoint.join("postmaster.pid").exists());
    let writer = format!("{}-consumer-rw", p.barman_container);
    let reader = format!("{}-consumer-ro", p.barman_container);
    let volume = format!("Docker volume {}", p.db_volume);

    let rows: Vec<UsersRow> = vec![
        (
            "a container mounting the volume read-write",
            Some((&writer, format!("{}:/data", p.db_volume))),
            vec![
                "False".into(),
                "VolumeInUse".into(),
                format!("container {writer} mounts {volume} read-write"),
            ],
            vec!["postmaster.pid".into(), "a postgres runs".into()],
        ),
        (
            "a container mounting the volume read-only",
            Some((&reader, format!("{}:/data:ro", p.db_volume))),
            vec!["True".into(), "Fresh".into()],
            vec!["VolumeInUse".into(), "postmaster.pid".into()],
        ),
        (
            "the barman container stopped",
            None,
            vec![],
            vec!["Some(".into()],
        ),
    ];
    let mut failures = Vec::new();
    for (row, container, shows, never) in rows {
        let _cleanup = container.as_ref().map(|(name, mount)| {
            run_sleeper(name, mount);
            RemoveContainer(name.to_string())
        });
        if container.is_none() {
            docker_ok(&["stop", "-t", "20", &p.barman_container]);
        }
        let (code, text) = diff_text(&p.specs);
        let line = |kind: &str| {
            text.lines()
                .find(|l| l.split_whitespace().nth(1) == Some(kind))
                .unwrap_or_default()
                .to_string()
        };
        let mut problems = Vec::new();
        let volume_line = line("VolumeFresh");
        for words in &shows {
            if !volume_line.contains(words.as_str()) {
                problems.push(format!("VolumeFresh does not say `{words}`: {volume_line}"));
            }
        }
        for words in &never {
            if text.contains(words.as_str()) {
                problems.push(format!("diff says `{words}`"));
            }
        }
        match container {
            Some((name, _)) if row.contains("read-write") => {
                let waits: Vec<&str> = text.lines().filter(|l| l.contains("waiting for")).collect();
                if !waits.iter().any(|w| {
                    w.contains(&format!("container {name} to stop")) && w.contains("read-write")
                }) {
                    problems.push(format!("no wait names {name}: {waits:?}"));
                }
                if code != 1 {
                    problems.push(format!("exit {code}, want 1"));
                }
            }
            Some((name, _)) => {
                if text.contains(&format!("container {name} to stop")) {
                    problems.push("a read-only reader is waited for on a fresh volume".into());
                }
            }
            None => {
                let barman = line("BaseBackupFresh");
                if !(barman.contains("Unknown")
                    && barman.contains(&p.barman_container)
                    && barman.contains("not running"))
                {
                    problems.push(format!("BaseBackupFresh does not say why: {barman}"));
                }
                if code != 2 {
                    problems.push(format!("exit {code}, want 2"));
                }
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{row}: {}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// What `docker top` lists in barman's container that runs `barman recover` or
/// its rsync.
fn recovering_in(container: &str) -> Vec<String> {
    docker_ok(&["top", container, "-o", "pid,args"])
        .lines()
        .filter(|l| l.contains(" recover ") || (l.contains("rsync") && l.contains("/nightly")))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_barman_recover_left_running_in_its_container_by_a_killed_reconciler_is_stopped_first() {
    let p = DockerPipeline::new("orphan");
    common::primary().sql(&format!(
        "insert into rows(note) values ('{}: before the backup')",
        p.name
    ));
    let (code, report, _) = p.reconciler(&["apply"]);
    assert_eq!(code, 0, "{report:#}");
    std::fs::remove_file(p.mountpoint().join(".reconciler-volume.json")).unwrap();
    // barman's rsync, slowed down: the recovery still copies when the reconciler dies.
    let conf = p.root.join("barman.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("{text}bandwidth_limit = 500\n")).unwrap();

    // SIGKILL while barman recovers: the exec'd `barman recover` belongs to the
    // container, not to the reconciler, and goes on writing into /nightly.
    let log = p.root.join("killed-recover.log");
    let mut child = common::apply_until_paused(
        &p.specs,
        "recover:running",
        &log,
        &[("DOCKER_HOST", env().host.as_str())],
        String::new,
    );
    let start = Instant::now();
    while recovering_in(&p.barman_container).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "barman recover never ran"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let orphans = recovering_in(&p.barman_container);
    assert!(
        !orphans.is_empty(),
        "barman recover died with the reconciler"
    );
    // The next recovery itself runs at full speed; the orphan keeps its limit.
    std::fs::write(&conf, text).unwrap();

    // The next run names it and stops it before anything writes into the volume.
    let (code, report, _) = p.reconciler(&["diff"]);
    assert_eq!(code, 1, "{report:#}");
    let steps = report["pipelines"][0]["steps"].as_array().unwrap();
    assert!(
        !steps.is_empty() && steps.iter().all(|s| s["step"]["action"] == "stopOrphan"),
        "only stops until the orphans are gone: {report:#}"
    );
    assert_eq!(
        steps[0]["step"]["process"]["container"],
        p.barman_container.as_str()
    );
    let (_, reason, message) = DockerPipeline::condition(&report, "VolumeFresh");
    assert_eq!(reason, "OrphanedProcess", "{message}");
    assert!(
        message.contains("/nightly/.reconciler-staging"),
        "{message}"
    );

    let (code, report, _) = p.reconciler(&["apply"]);
    assert_eq!(code, 0, "{report:#}");
    let actions: Vec<&str> = report["pipelines"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"]["action"].as_str().unwrap_or_default())
        .collect();
    let recover = actions.iter().position(|a| *a == "recoverVolume");
    let stop = actions.iter().position(|a| *a == "stopOrphan");
    assert!(
        matches!((stop, recover), (Some(s), Some(r)) if s < r),
        "{actions:?}"
    );
    assert!(
        recovering_in(&p.barman_container).is_empty(),
        "nothing of the killed run recovers any more"
    );
    let (rows, _) = p.query_volume(&format!(
        "select count(*) from rows where note = '{}: before the backup'",
        p.name
    ));
    assert_eq!(rows, "1");
}
