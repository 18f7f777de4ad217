//! End-to-end: the reconciler binary against real barman 3.4, a real PostgreSQL 15
//! primary streaming to it, real rsync and a real replay postgres.

mod common;

use std::process::Command;

use common::{
    PGBIN, TestPipeline, actions, cluster_state, condition, copy_of, first, query_cluster,
    reconciler_json,
};
use serde_json::Value;

#[test]
fn an_empty_pipeline_converges_and_stays_converged() {
    let p = TestPipeline::new("it_converge", "{keep: 2, minimumRedundancy: 1}");
    common::primary().sql("insert into rows(note) values ('it_converge: before backup')");

    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 1, "drift before the first apply");
    let pipeline = first(&report);
    assert_eq!(
        actions(&pipeline["steps"]),
        vec!["takeBaseBackup", "recoverVolume", "syncStarport"]
    );
    for kind in [
        "BaseBackupFresh",
        "RetentionSatisfied",
        "VolumeFresh",
        "StarportInSync",
        "Ready",
    ] {
        let c = condition(pipeline, kind);
        assert!(
            c["status"].is_string() && c["reason"].is_string() && c["message"].is_string(),
            "{c}"
        );
    }
    assert_eq!(condition(pipeline, "BaseBackupFresh")["reason"], "NoBackup");
    assert_eq!(
        condition(pipeline, "VolumeFresh")["reason"],
        "VolumeMissing"
    );
    assert_eq!(condition(pipeline, "Ready")["status"], "False");

    let (code, report) = p.apply_json();
    assert_eq!(code, 0, "apply converges: {report:#}");
    let executed = &report["pipelines"][0]["steps"];
    assert_eq!(
        actions(executed),
        vec!["takeBaseBackup", "recoverVolume", "syncStarport"]
    );
    assert!(
        executed
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["outcome"] == "done")
    );

    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 0, "no drift after apply");
    assert!(
        first(&report)["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "True")
    );

    // A second apply right after convergence executes nothing.
    let (code, report) = p.apply_json();
    assert_eq!(code, 0);
    assert_eq!(report["pipelines"][0]["steps"], Value::Array(vec![]));

    // The marker and the starport metadata agree, and the legacy marker exists.
    let marker = p.marker().expect("marker written");
    let metadata = p.starport_metadata().expect("starport metadata written");
    assert_eq!(marker["generation"], metadata["generation"]);
    assert!(metadata["last_backup"].is_string() && metadata["instance_guid"].is_string());
    assert!(p.volume.join(".barman-last-restore").exists());
    assert_eq!(p.backups().len(), 1);

    // The volume holds a standby stopped cleanly in recovery (so that the next
    // refresh can replay only new WAL), with no standby.signal left.
    assert_eq!(cluster_state(&p.volume), "shut down in recovery");
    assert!(!p.volume.join("standby.signal").exists());
    // The starport copy starts as a primary with no step of its own and serves
    // the primary's rows.
    let copy = copy_of(&p.starport_data());
    let (rows, log) = query_cluster(
        copy.path(),
        "select pg_is_in_recovery(), note from rows where note like 'it_converge:%'",
    );
    assert_eq!(rows, "f|it_converge: before backup", "{log}");

    // Evaluated a month later, everything has drifted: backup, volume and starport.
    let (code, report) = p.diff_json(&["--at", &later(&metadata, 31)]);
    assert_eq!(code, 1);
    let pipeline = first(&report);
    assert_eq!(condition(pipeline, "BaseBackupFresh")["reason"], "Stale");
    assert_eq!(
        actions(&pipeline["steps"]),
        vec!["takeBaseBackup", "recoverVolume", "syncStarport"]
    );
}

/// `days` after the metadata's recovery time, as RFC 3339.
fn later(metadata: &Value, days: i64) -> String {
    let recovered: jiff::Timestamp = metadata["recovered_at"].as_str().unwrap().parse().unwrap();
    recovered
        .checked_add(jiff::SignedDuration::from_hours(24 * days))
        .unwrap()
        .to_string()
}

/// On an idle primary the refresh neither waits out a timeout nor misses the last
/// write: the segment the switch closes stays in barman's `streaming/` directory
/// (barman's archiver keeps the newest complete segment back until the primary
/// writes into the next), so `barman recover` does not copy it; the refresh fetches
/// it from there with `get-wal` and replays it.
#[test]
fn on_an_idle_primary_the_refresh_holds_the_last_write_without_waiting() {
    let primary = common::idle_primary();
    let p = TestPipeline::on(primary, "it_idle", "{keep: 3}");
    let backup = p.take_backup();
    primary.sql("insert into rows(note) values ('it_idle: the last write')");

    let calls = p.root.join("idle-barman-calls");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["apply", "--output", "json", "--specs"])
        .arg(&p.specs)
        .env("PATH", counting_barman(&p.root, &calls))
        .env("RECONCILER_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = serde_json::from_slice(&out.stdout).expect("apply prints JSON");
    assert_eq!(out.status.code(), Some(0), "{report:#}\n{log}");
    let steps = &report["pipelines"][0]["steps"];
    assert_eq!(actions(steps), vec!["recoverVolume", "syncStarport"]);
    // One look before the first step, taken under the volume's lock, and one
    // after each step: barman's catalogue is read three times for two steps.
    let calls = std::fs::read_to_string(&calls).unwrap();
    let lists = calls.lines().filter(|l| l.contains("list-backups")).count();
    assert_eq!(lists, 3, "barman calls:\n{calls}");
    assert!(
        !log.contains("has not received the segment"),
        "the refresh waited for a segment barman had:\n{log}"
    );
    assert_eq!(p.marker().unwrap()["backupId"], backup.as_str());
    let copy = copy_of(&p.starport_data());
    let (rows, server_log) = query_cluster(
        copy.path(),
        "select count(*) from rows where note = 'it_idle: the last write'",
    );
    assert_eq!(
        rows, "1",
        "the starport copy misses the last write:\n{server_log}\n{log}"
    );

    // Converged, with another reconciler holding the volume's lock: nothing to
    // do, so nothing is in the way.
    let lock = reconciler::drivers::volume::lock_path(&p.volume);
    let held = std::fs::File::open(&lock).expect("the lock file beside the volume");
    held.try_lock().expect("nobody else holds it");
    let (code, report) = p.apply_json();
    assert_eq!(code, 0, "{report:#}");
    let pipeline = &report["pipelines"][0];
    assert_eq!(pipeline["steps"], Value::Array(vec![]));
    assert_eq!(pipeline["converged"], true, "{report:#}");
    assert!(pipeline["blocked"].is_null(), "{report:#}");
}

#[test]
fn wal_written_after_the_backup_is_replayed_into_the_volume() {
    let p = TestPipeline::new("it_replay", "{keep: 3}");
    let primary = common::primary();
    primary.sql("insert into rows(note) values ('it_replay: before backup')");
    let backup = p.take_backup();
    // Not archived yet: the recovery itself must close the segment and wait for it.
    primary.sql("insert into rows(note) values ('it_replay: after backup')");

    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 1);
    // The backup is fresh: only the volume and the starport need work.
    assert_eq!(
        actions(&first(&report)["steps"]),
        vec!["recoverVolume", "syncStarport"]
    );
    assert_eq!(
        first(&report)["steps"][0]["step"]["backup"]["id"],
        backup.as_str()
    );

    let (code, _) = p.apply_json();
    assert_eq!(code, 0);
    // The replay happened during apply: the volume is a standby stopped cleanly
    // in recovery (barman recover alone leaves the backup's "in production").
    assert_eq!(
        cluster_state(&p.volume),
        "shut down in recovery",
        "the volume was marked without being replayed"
    );
    let copy = copy_of(&p.volume);
    let (rows, log) = query_cluster(
        copy.path(),
        "select note from rows where note like 'it_replay:%' order by id",
    );
    assert!(
        log.contains("shut down in recovery"),
        "the copy did not start from a standby at rest:\n{log}"
    );
    assert_eq!(rows, "it_replay: before backup\nit_replay: after backup");
    assert_eq!(p.marker().unwrap()["backupId"], backup.as_str());
}

#[test]
fn each_kind_of_drift_gets_exactly_the_steps_it_needs() {
    let p = TestPipeline::new("it_drift", "{keep: 2, minimumRedundancy: 1}");
    let (code, _) = p.apply_json();
    assert_eq!(code, 0);

    // Backups beyond keep: the oldest goes, nothing else happens.
    let oldest = p.backups().last().unwrap().0.clone();
    p.take_backup();
    p.take_backup();
    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 1);
    assert_eq!(
        actions(&first(&report)["steps"]),
        vec![format!("deleteBackup:{oldest}")]
    );
    assert_eq!(
        condition(first(&report), "RetentionSatisfied")["reason"],
        "ObsoleteBackups"
    );
    let (code, _) = p.apply_json();
    assert_eq!(code, 0);
    assert_eq!(p.backups().len(), 2);
    assert!(!p.backups().iter().any(|(id, _)| *id == oldest));

    // A FAILED backup (barman's catalogue entry of a backup whose copy failed) is deleted.
    let failed = make_failed_backup(&p);
    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 1);
    assert_eq!(
        actions(&first(&report)["steps"]),
        vec![format!("deleteBackup:{failed}")]
    );
    assert_eq!(
        condition(first(&report), "RetentionSatisfied")["reason"],
        "FailedBackups"
    );
    let (code, _) = p.apply_json();
    assert_eq!(code, 0);
    assert!(p.backups().iter().all(|(_, status)| status == "DONE"));

    // A deleted marker: recover the newest backup, then resync the starport.
    let newest = p.backups()[0].0.clone();
    std::fs::remove_file(p.volume.join(".reconciler-volume.json")).unwrap();
    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 1);
    assert_eq!(
        actions(&first(&report)["steps"]),
        vec!["recoverVolume", "syncStarport"]
    );
    assert_eq!(
        condition(first(&report), "VolumeFresh")["reason"],
        "NoValidMarker"
    );
    let (code, _) = p.apply_json();
    assert_eq!(code, 0);
    assert_eq!(p.marker().unwrap()["backupId"], newest.as_str());

    // A stale starport (its metadata names another generation): only a sync.
    let path = p.starport_metadata_path();
    let mut metadata = p.starport_metadata().unwrap();
    metadata["generation"] = Value::from("an-older-generation");
    std::fs::write(&path, serde_json::to_vec(&metadata).unwrap()).unwrap();
    std::fs::write(p.starport_data().join("stray-file"), "left over").unwrap();
    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 1);
    assert_eq!(actions(&first(&report)["steps"]), vec!["syncStarport"]);
    let (code, _) = p.apply_json();
    assert_eq!(code, 0);
    assert_eq!(
        p.starport_metadata().unwrap()["generation"],
        p.marker().unwrap()["generation"]
    );
    assert!(
        !p.starport_data().join("stray-file").exists(),
        "rsync --delete removed the stray file"
    );

    let (code, _) = p.diff_json(&[]);
    assert_eq!(code, 0);
}

/// Turns a copy of the newest backup's catalogue entry into a FAILED backup, the
/// state barman leaves when a copy fails (its `backup.info` says FAILED).
fn make_failed_backup(p: &TestPipeline) -> String {
    let newest = p.backups()[0].0.clone();
    let base = p.root.join("home").join(&p.name).join("base");
    let id = "20000101T000000".to_string();
    let target = base.join(&id);
    std::fs::create_dir(&target).unwrap();
    let info = std::fs::read_to_string(base.join(&newest).join("backup.info")).unwrap();
    let info: String = info
        .lines()
        .map(|l| match l.split_once('=') {
            Some(("backup_id", _)) => format!("backup_id={id}"),
            Some(("status", _)) => "status=FAILED".to_string(),
            Some(("error", _)) => "error=failure copying files (test)".to_string(),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(target.join("backup.info"), info + "\n").unwrap();
    let status = Command::new("chown")
        .args(["-R", "barman:barman"])
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        p.backups().iter().any(|(b, s)| *b == id && s == "FAILED"),
        "{:?}",
        p.backups()
    );
    id
}

/// Stops the receive-wal that `barman cron` started (it is not the one the test
/// environment owns by pid), so the server's teardown finds its slot inactive.
struct StopReceiveWal<'a>(&'a TestPipeline);

impl Drop for StopReceiveWal<'_> {
    fn drop(&mut self) {
        let _ = Command::new("barman")
            .arg("-c")
            .arg(&self.0.barman_conf)
            .args(["receive-wal", "--stop", &self.0.name])
            .output();
    }
}

fn slot_active(p: &TestPipeline) -> bool {
    common::primary().sql(&format!(
        "select count(*) from pg_replication_slots where slot_name = '{}' and active",
        p.name
    )) == "1"
}

#[test]
fn a_dead_receive_wal_makes_wal_streaming_false_until_barman_cron_restarts_it() {
    let p = TestPipeline::new("wal_health", "{keep: 3}");
    let spec = p.specs.join("pipeline.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(
        &spec,
        format!("{text}  walStreaming: {{cronTimeout: 2m}}\n"),
    )
    .unwrap();
    let _stop = StopReceiveWal(&p);
    let (code, report) = p.apply_json();
    assert_eq!(code, 0, "{report:#}");
    let (_, report) = p.diff_json(&[]);
    assert_eq!(
        condition(first(&report), "WalStreaming")["status"],
        "True",
        "{report:#}"
    );

    // receive-wal dies (SIGTERM, as an OOM kill or a container restart would end it).
    let pid = std::fs::read_to_string(p.root.join("receive-wal.pid")).unwrap();
    let pid = nix::unistd::Pid::from_raw(pid.trim().parse().unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let start = std::time::Instant::now();
    while slot_active(&p) {
        assert!(start.elapsed() < std::time::Duration::from_secs(30));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 1, "{report:#}");
    let wal = condition(first(&report), "WalStreaming");
    assert_eq!(wal["status"], "False", "{wal}");
    assert_eq!(wal["reason"], "ReceiveWalStopped", "{wal}");
    assert_eq!(condition(first(&report), "Ready")["status"], "False");
    assert_eq!(
        actions(&first(&report)["steps"]),
        ["runBarmanCron"],
        "{report:#}"
    );

    let (code, report) = p.apply_json();
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        actions(&first(&report)["steps"]),
        ["runBarmanCron"],
        "{report:#}"
    );
    assert!(slot_active(&p), "receive-wal streams into its slot again");
    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(condition(first(&report), "WalStreaming")["status"], "True");
}

/// rsync's list of what differs between two trees (empty: identical).
fn differences(from: &std::path::Path, to: &std::path::Path) -> String {
    let out = Command::new("rsync")
        .args(["-a", "--delete", "--dry-run", "--itemize-changes"])
        .arg(format!("{}/", from.display()))
        .arg(format!("{}/", to.display()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_off_site_mirror_follows_the_starport_over_ssh() {
    let p = TestPipeline::new("mirror", "{keep: 3}");
    let sshd = common::Sshd::up(p.root.join("sshd"));
    let mirror_root = p.root.join("offsite");
    let spec = p.specs.join("pipeline.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(
        &spec,
        format!(
            "{text}    mirrors:
    - name: offsite
      ssh:
        host: 127.0.0.1
        user: root
        port: {port}
        identityFile: {dir}/id_ed25519
        knownHostsFile: {dir}/known_hosts
      root: {root}
      timeout: 5m
",
            port = sshd.port,
            dir = sshd.dir.display(),
            root = mirror_root.display()
        ),
    )
    .unwrap();

    let (code, report) = p.apply_json();
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        actions(&first(&report)["steps"]).last().map(String::as_str),
        Some("syncMirror"),
        "the mirror is synced last: {report:#}"
    );
    let volume_name = format!("{}_db_volume", p.name);
    let local = p.starport.join("barman_to_starport");
    let remote = mirror_root.join("barman_to_starport");
    let metadata = |dir: &std::path::Path| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join("meta/metadata.json")).unwrap()).unwrap()
    };
    assert_eq!(
        metadata(&remote)["generation"],
        metadata(&local)["generation"]
    );
    assert_eq!(
        differences(
            &local.join("data").join(&volume_name),
            &remote.join("data").join(&volume_name)
        ),
        "",
        "the mirror holds exactly the starport's copy"
    );

    // A mirror holding another generation is brought back in line.
    let mut stale = metadata(&remote);
    stale["generation"] = Value::from("an-older-generation");
    std::fs::write(
        remote.join("meta/metadata.json"),
        serde_json::to_vec(&stale).unwrap(),
    )
    .unwrap();
    std::fs::write(remote.join("data").join(&volume_name).join("stray"), "x").unwrap();
    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 1, "{report:#}");
    let c = condition(first(&report), "MirrorInSync");
    assert_eq!(
        (c["status"].as_str(), c["subject"].as_str()),
        (Some("False"), Some("offsite")),
        "{c}"
    );
    assert_eq!(actions(&first(&report)["steps"]), ["syncMirror"]);
    let (code, report) = p.apply_json();
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        metadata(&remote)["generation"],
        metadata(&local)["generation"]
    );
    assert!(
        !remote
            .join("data")
            .join(&volume_name)
            .join("stray")
            .exists()
    );

    // The mirror's host is down: Unknown with ssh's reason, nothing acted on.
    sshd.down();
    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 2, "{report:#}");
    let c = condition(first(&report), "MirrorInSync");
    assert_eq!(c["status"], "Unknown", "{c}");
    assert!(c["message"].as_str().unwrap().contains("rsync"), "{c}");
    assert_eq!(first(&report)["steps"], Value::Array(vec![]));
}

#[test]
fn a_restore_target_pulls_the_complete_copy_over_ssh_and_postgres_serves_it() {
    let p = TestPipeline::new("restore", "{keep: 3}");
    let note = format!("{}: restored on a consumer", p.name);
    common::primary().sql(&format!("insert into rows(note) values ('{note}')"));
    let (code, report) = p.apply_json();
    assert_eq!(code, 0, "the backup host converges: {report:#}");

    // The consumer host reaches the starport only over ssh.
    let sshd = common::Sshd::up(p.root.join("sshd"));
    let consumer = p.root.join("consumer");
    let specs = consumer.join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    let restored = consumer.join("db");
    std::fs::write(
        specs.join("science.yaml"),
        format!(
            "apiVersion: reconciler.montagu/v1alpha1
kind: RestoreTarget
metadata:
  name: science
spec:
  source:
    root: {starport}
    target: barman_to_starport
    volumeName: {name}_db_volume
    timeout: 5m
    ssh:
      host: 127.0.0.1
      user: root
      port: {port}
      identityFile: {dir}/id_ed25519
      knownHostsFile: {dir}/known_hosts
  volume:
    path: {restored}
  maxAge: 24h
",
            starport = p.starport.display(),
            name = p.name,
            port = sshd.port,
            dir = sshd.dir.display(),
            restored = restored.display(),
        ),
    )
    .unwrap();

    let (code, report) = reconciler_json(&specs, &["diff"], &[]);
    assert_eq!(code, 1, "{report:#}");
    let target = first(&report);
    assert_eq!(target["kind"], "RestoreTarget");
    assert_eq!(condition(target, "SourceComplete")["status"], "True");
    assert_eq!(
        condition(target, "VolumeRestored")["reason"],
        "VolumeMissing"
    );
    assert_eq!(actions(&target["steps"]), ["restoreVolume"]);

    let (code, report) = reconciler_json(&specs, &["apply"], &[]);
    assert_eq!(code, 0, "{report:#}");
    let metadata = p.starport_metadata().expect("starport metadata");
    let marker: Value =
        serde_json::from_slice(&std::fs::read(restored.join(".reconciler-restore.json")).unwrap())
            .unwrap();
    assert_eq!(marker["state"], "restored");
    assert_eq!(marker["generation"], metadata["generation"]);
    assert!(
        !restored.join(".reconciler-volume.json").exists(),
        "the backup host's marker is not carried over"
    );
    let copy = copy_of(&restored);
    let (rows, log) = query_cluster(
        copy.path(),
        &format!("select count(*) from rows where note = '{note}'"),
    );
    assert_eq!(rows, "1", "postgres on the restored volume serves the row");
    // A copy of a standby at rest: it starts as a primary by itself.
    assert!(
        log.contains("shut down in recovery"),
        "restored a copy of a standby at rest:\n{log}"
    );
    let (code, report) = reconciler_json(&specs, &["diff"], &[]);
    assert_eq!(code, 0, "{report:#}");

    // A sync in progress on the backup host (no metadata): never restored from,
    // and diff says what it waits for.
    let metadata_path = p.starport_metadata_path();
    let saved = std::fs::read(&metadata_path).unwrap();
    let mut newer: Value = serde_json::from_slice(&saved).unwrap();
    newer["generation"] = Value::from("a-newer-generation");
    std::fs::remove_file(&metadata_path).unwrap();
    let (code, report) = reconciler_json(&specs, &["diff"], &[]);
    assert_eq!(code, 1, "{report:#}");
    let target = first(&report);
    assert_eq!(
        condition(target, "SourceComplete")["reason"],
        "NoCompleteCopy"
    );
    assert_eq!(condition(target, "VolumeRestored")["status"], "True");
    assert_eq!(actions(&target["steps"]), Vec::<String>::new());
    assert!(
        target["waitingOn"].to_string().contains("never restored"),
        "{target:#}"
    );
    // What an operator on the consumer host reads.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["diff", "--specs"])
        .arg(&specs)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("restore target science: drifted, waiting\n")
            && text.contains("NoCompleteCopy")
            && text.contains("  waiting for ")
            && text.contains("never restored"),
        "the text diff names the restore target, its drift and its wait:\n{text}"
    );

    // Published again as a newer generation: restored, the marker follows.
    std::fs::write(&metadata_path, serde_json::to_vec(&newer).unwrap()).unwrap();
    std::fs::write(restored.join("stray"), "x").unwrap();
    let (code, report) = reconciler_json(&specs, &["apply"], &[]);
    assert_eq!(code, 0, "{report:#}");
    let marker: Value =
        serde_json::from_slice(&std::fs::read(restored.join(".reconciler-restore.json")).unwrap())
            .unwrap();
    assert_eq!(marker["generation"], "a-newer-generation");
    assert!(!restored.join("stray").exists(), "rsync --delete");

    // SIGKILL while rsync restores: the marker says `restoring`, so nothing trusts
    // the half-copied data, and the next apply restores again.
    newer["generation"] = Value::from("the-newest-generation");
    std::fs::write(&metadata_path, serde_json::to_vec(&newer).unwrap()).unwrap();
    let log = consumer.join("killed.log");
    let mut child = common::apply_until_paused(&specs, "restore:running", &log, &[], String::new);
    child.kill().unwrap();
    child.wait().unwrap();
    let marker: Value =
        serde_json::from_slice(&std::fs::read(restored.join(".reconciler-restore.json")).unwrap())
            .unwrap();
    assert_eq!(marker["state"], "restoring", "{marker:#}");
    let (code, report) = reconciler_json(&specs, &["diff"], &[]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        condition(first(&report), "VolumeRestored")["reason"],
        "RestoreInterrupted"
    );
    let (code, report) = reconciler_json(&specs, &["apply"], &[]);
    assert_eq!(code, 0, "{report:#}");
    let (rows, _) = query_cluster(
        copy_of(&restored).path(),
        &format!("select count(*) from rows where note = '{note}'"),
    );
    assert_eq!(rows, "1");

    // The backup host is unreachable: Unknown with ssh's reason, nothing acted on.
    sshd.down();
    let (code, report) = reconciler_json(&specs, &["diff"], &[]);
    assert_eq!(code, 2, "{report:#}");
    let target = first(&report);
    assert_eq!(condition(target, "SourceComplete")["status"], "Unknown");
    assert_eq!(actions(&target["steps"]), Vec::<String>::new());
}

/// A night passes for the recovered volume: its marker says it was recovered 25
/// hours ago (past its 24h maxAge), everything else in it unchanged.
fn age_the_volume(p: &TestPipeline) {
    let path = p.volume.join(".reconciler-volume.json");
    let mut marker: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let recovered: jiff::Timestamp = marker["recoveredAt"].as_str().unwrap().parse().unwrap();
    marker["recoveredAt"] = Value::from(
        recovered
            .checked_sub(jiff::SignedDuration::from_hours(25))
            .unwrap()
            .to_string(),
    );
    std::fs::write(&path, serde_json::to_vec_pretty(&marker).unwrap()).unwrap();
}

/// The bytes in `rsync sent X of Y bytes` of a sync step's detail.
/// The files in a data directory's `pg_wal` (not its subdirectories), by name,
/// with their sizes.
fn wal_files(data: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    std::fs::read_dir(data.join("pg_wal"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect()
}

fn rsync_sent(detail: &str) -> (u64, u64) {
    let words: Vec<&str> = detail.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "sent").expect(detail);
    (
        words[at + 1].parse().expect(detail),
        words[at + 3].parse().expect(detail),
    )
}

/// Night 1 recovers in full and leaves a standby at rest; night 2, on the same
/// backup, replays only the new WAL, writes a fraction of the volume to the
/// starport, and a consumer of the copy starts as a primary with night 2's rows;
/// a new backup then makes the next refresh a full recovery again (restore drill).
#[test]
fn a_second_refresh_catches_up_and_a_new_backup_makes_the_next_one_full() {
    let p = TestPipeline::new("it_delta", "{keep: 3}");
    let primary = common::primary();
    primary.sql("insert into rows(note) values ('it_delta: night 1')");
    let backup = p.take_backup();

    let (code, report) = p.apply_json();
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        actions(&report["pipelines"][0]["steps"]),
        vec!["recoverVolume", "syncStarport"]
    );
    // A standby at rest: stopped in recovery, with no signal file left behind.
    assert_eq!(cluster_state(&p.volume), "shut down in recovery");
    assert!(!p.volume.join("standby.signal").exists());
    let night1 = p.marker().unwrap();
    assert!(night1["standby"]["lastSegment"].is_string(), "{night1:#}");

    // A day of writes: enough WAL to span segments.
    primary.sql(
        "insert into rows(note) select 'it_delta: night 2 ' || g from generate_series(1, 20000) g",
    );
    primary.sql("insert into rows(note) values ('it_delta: night 2 end')");
    age_the_volume(&p);
    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 1);
    let planned = &first(&report)["steps"];
    assert_eq!(
        actions(planned),
        vec![
            format!("catchUpVolume:{backup}"),
            "syncStarport".to_string()
        ]
    );
    let reason = planned[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("catch up: replay WAL from ") && reason.contains(backup.as_str()),
        "{reason}"
    );
    let wal_before = wal_files(&p.starport_data());
    let (code, report) = p.apply_json();
    assert_eq!(code, 0, "{report:#}");
    let executed = &report["pipelines"][0]["steps"];
    assert_eq!(
        actions(executed),
        vec![
            format!("catchUpVolume:{backup}"),
            "syncStarport".to_string()
        ]
    );
    assert_eq!(cluster_state(&p.volume), "shut down in recovery");
    assert!(!p.volume.join("standby.signal").exists());
    let night2 = p.marker().unwrap();
    assert_eq!(night2["backupId"], backup.as_str());
    assert_ne!(night2["generation"], night1["generation"]);
    // The starport copy was updated, not rewritten: beside the WAL segments new
    // to it (whole files by nature, 16 MiB each, most of this small test volume),
    // rsync sent a fraction of the rest. (What block-level transfer saves inside
    // big changed files shows at scale: BENCHMARKS.md, section 9.)
    let (sent, total) = rsync_sent(executed[1]["detail"].as_str().unwrap());
    let wal_after = wal_files(&p.starport_data());
    let wal_total: u64 = wal_after.values().sum();
    let new_wal: u64 = wal_after
        .iter()
        .filter(|(name, _)| !wal_before.contains_key(*name))
        .map(|(_, size)| size)
        .sum();
    let rest = total - wal_total;
    assert!(
        sent.saturating_sub(new_wal) * 4 < rest,
        "the sync sent {sent} of {total} bytes, {new_wal} of them new WAL segments, \
         more than a quarter of the {rest} bytes outside pg_wal: {}",
        executed[1]["detail"]
    );

    // Never torn: the copy holds the WAL its start needs, and serves night 2 as a
    // primary with no step of its own.
    let copy = copy_of(&p.starport_data());
    let (rows, log) = query_cluster(
        copy.path(),
        "select pg_is_in_recovery(), count(*) filter (where note like 'it_delta: night 2 %'), max(note) filter (where note = 'it_delta: night 2 end') from rows",
    );
    // 20000 rows and the end row, which the pattern matches too.
    assert_eq!(rows, "f|20001|it_delta: night 2 end", "{log}");

    // A new DONE backup: the next refresh recovers it in full.
    let newer = p.take_backup();
    primary.sql("insert into rows(note) values ('it_delta: night 3')");
    age_the_volume(&p);
    let (_, report) = p.diff_json(&[]);
    let planned = &first(&report)["steps"];
    assert_eq!(actions(planned), vec!["recoverVolume", "syncStarport"]);
    let reason = planned[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("full recovery: backup {newer}"))
            && reason.contains("restore drill"),
        "{reason}"
    );
    let (code, report) = p.apply_json();
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(p.marker().unwrap()["backupId"], newer.as_str());
    assert_eq!(cluster_state(&p.volume), "shut down in recovery");
}

/// A `barman` first in PATH that appends its arguments to `log`, then runs the real one.
fn counting_barman(dir: &std::path::Path, log: &std::path::Path) -> String {
    let shim = dir.join("shim");
    std::fs::create_dir_all(&shim).unwrap();
    let script = shim.join("barman");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec /usr/bin/barman \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    format!("{}:{}", shim.display(), std::env::var("PATH").unwrap())
}

#[test]
fn pipelines_are_observed_at_once_with_one_barman_call_of_each_kind_per_server() {
    // Two barman servers, five pipelines on each, every look switched on that
    // needs barman: the catalogue and `check` (walStreaming). Beside them the pass
    // starts no interpreter: this host's processes are read in-process.
    let servers = [
        TestPipeline::new("atonce_a", "{keep: 1}"),
        TestPipeline::new("atonce_b", "{keep: 1}"),
    ];
    let dir = servers[0].root.join("many");
    let specs = dir.join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    let mut names = Vec::new();
    for (s, server) in servers.iter().enumerate() {
        for i in 0..5 {
            // Interleaved names, so sorting by name is not the order of the servers.
            let name = format!("p{i}-{s}");
            std::fs::write(
                specs.join(format!("{name}.yaml")),
                format!(
                    "apiVersion: reconciler.montagu/v1alpha1
kind: BackupPipeline
metadata: {{name: {name}}}
spec:
  barman: {{server: {server}, config: {conf}}}
  baseBackup: {{maxAge: 30d, timeout: 5m}}
  retention: {{keep: 1}}
  walStreaming: {{}}
  recoveredVolume:
    path: {volume}
    maxAge: 24h
    replay: {{postgresBin: {PGBIN}, timeout: 5m}}
",
                    server = server.name,
                    conf = server.barman_conf.display(),
                    volume = dir.join(&name).display(),
                ),
            )
            .unwrap();
            names.push(name);
        }
    }
    names.sort();
    let log = dir.join("barman-calls");
    let path = counting_barman(&dir, &log);
    // This host's processes are read in-process: a pass starts no interpreter
    // beside barman's own (barman's `#!/usr/bin/python3` never reaches PATH).
    let interpreter = dir.join("python-calls");
    let python = dir.join("shim").join("python3");
    std::fs::write(
        &python,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec /usr/bin/python3 \"$@\"\n",
            interpreter.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for _ in 0..2 {
        std::fs::write(&log, "").unwrap();
        std::fs::write(&interpreter, "").unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .args(["diff", "--output", "json", "--specs"])
            .arg(&specs)
            .env("PATH", &path)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        });
        let order: Vec<&str> = report["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["pipeline"].as_str().unwrap())
            .collect();
        assert_eq!(
            order, names,
            "the report is sorted by pipeline, whatever finished first"
        );
        let calls = std::fs::read_to_string(&log).unwrap();
        for server in &servers {
            for action in ["list-backups", "check"] {
                let n = calls
                    .lines()
                    .filter(|l| {
                        l.contains(&format!(" {action} "))
                            && l.ends_with(&format!(" {}", server.name))
                    })
                    .count();
                assert_eq!(n, 1, "`{action}` of {}: {calls}", server.name);
            }
        }
        assert_eq!(calls.lines().count(), 4, "{calls}");
        let started = std::fs::read_to_string(&interpreter).unwrap();
        assert_eq!(started, "", "python3 started by the pass");
    }
}
