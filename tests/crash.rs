//! Crash injection: `reconciler apply` is SIGKILLed at every step boundary, while
//! each external command of a step runs (barman backup, delete and recover; rsync),
//! during replay, and between the phases of recovery and sync (stopped there by the
//! `RECONCILER_PAUSE_AT` hook), then run again. Whatever the moment, nothing claims more than it holds, nothing
//! is lost, and the second run converges and leaves no process behind.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestPipeline, query_cluster};
use serde_json::Value;

/// Brings the pipeline into a state whose plan runs the step being crashed.
#[derive(Clone, Copy, Debug)]
enum Setup {
    /// The base backup is stale: takeBaseBackup.
    StaleBackup,
    /// Two backups beyond keep: deleteBackup.
    ExtraBackups,
    /// The marker is gone: recoverVolume, then syncStarport.
    LostMarker,
    /// The volume is older than its maxAge, on the newest backup, with WAL written
    /// since: catchUpVolume, then syncStarport.
    StaleVolume,
    /// The starport holds an older copy, of another generation and with other
    /// data: syncStarport.
    StaleStarport,
}

/// A starport copy the test made stale: its generation, and a snapshot of its data.
struct StaleCopy {
    generation: Value,
    snapshot: PathBuf,
}

fn prepare(p: &TestPipeline, setup: Setup) -> Option<StaleCopy> {
    match setup {
        Setup::StaleBackup => {
            p.write_spec("{keep: 2}", "2s");
            std::thread::sleep(Duration::from_secs(3));
        }
        Setup::ExtraBackups => {
            p.take_backup();
            p.take_backup();
        }
        Setup::LostMarker => {
            std::fs::remove_file(p.volume.join(".reconciler-volume.json")).unwrap();
        }
        Setup::StaleVolume => {
            p.edit_spec(
                "    maxAge: 24h\n    recoverTimeout",
                "    maxAge: 1s\n    recoverTimeout",
            );
            std::thread::sleep(Duration::from_millis(1500));
        }
        Setup::StaleStarport => {
            // An older recovery's copy differs from the volume in its data, not
            // only in its name: a changed file and one the volume no longer has.
            let data = p.starport_data();
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.auto.conf"))
                .unwrap();
            conf.write_all(b"# as an older recovery left it\n").unwrap();
            std::fs::write(data.join("left-by-an-older-recovery"), "older\n").unwrap();
            let generation = Value::from("an-older-generation");
            let mut metadata = p.starport_metadata().unwrap();
            metadata["generation"] = generation.clone();
            std::fs::write(
                p.starport_metadata_path(),
                serde_json::to_vec(&metadata).unwrap(),
            )
            .unwrap();
            assert!(!starport_matches_volume(p));
            let snapshot = p.root.join("older-starport-copy");
            let copied = Command::new("cp")
                .arg("-a")
                .arg(&data)
                .arg(&snapshot)
                .status()
                .unwrap();
            assert!(copied.success());
            return Some(StaleCopy {
                generation,
                snapshot,
            });
        }
    }
    None
}

fn newest_done(p: &TestPipeline) -> Option<String> {
    p.backups()
        .into_iter()
        .find(|(_, s)| s == "DONE")
        .map(|(id, _)| id)
}

/// `rsync --dry-run` lists no difference between the volume and its starport copy.
fn starport_matches_volume(p: &TestPipeline) -> bool {
    starport_matches(p, &p.volume)
}

/// `rsync --dry-run` lists no difference between `source` and the starport copy.
fn starport_matches(p: &TestPipeline, source: &Path) -> bool {
    let out = Command::new("rsync")
        .args([
            "-a",
            "--delete",
            "--dry-run",
            "--itemize-changes",
            "--exclude=/.reconciler-staging*",
        ])
        .arg(format!("{}/", source.display()))
        .arg(format!("{}/", p.starport_data().display()))
        .output()
        .unwrap();
    out.status.success() && out.stdout.is_empty()
}

/// Processes whose command line mentions `root`, other than barman's own receive-wal.
fn processes_under(root: &Path) -> Vec<String> {
    let needle = root.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie =
            std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|s| s.contains(") Z "));
        if cmdline.contains(&needle)
            && !cmdline.contains("receive-wal")
            && !cmdline.contains("pg_receivewal")
            && !zombie
        {
            found.push(cmdline);
        }
    }
    found
}

/// The promises that hold at any moment, crash or not.
fn check_invariants(
    p: &TestPipeline,
    newest_before: &Option<String>,
    stale: Option<&StaleCopy>,
    when: &str,
) {
    // Starport metadata naming the older generation still names that copy, untouched.
    if let (Some(metadata), Some(stale)) = (p.starport_metadata(), stale)
        && metadata["generation"] == stale.generation
    {
        assert!(
            starport_matches(p, &stale.snapshot),
            "{when}: metadata claims generation {} but the copy is no longer that",
            stale.generation
        );
    }
    // A marker is only ever on a complete, cleanly stopped cluster.
    if let Some(marker) = p.marker() {
        assert!(
            !std::fs::read_dir(&p.volume).unwrap().flatten().any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with(".reconciler-staging")),
            "{when}: marker beside a staging directory"
        );
        let state = common::cluster_state(&p.volume);
        assert_eq!(
            state, "shut down in recovery",
            "{when}: marked volume is not a standby stopped cleanly in recovery"
        );
        assert!(
            !p.volume.join("standby.signal").exists(),
            "{when}: marked volume holds standby.signal"
        );
        // Starport metadata that names the volume's generation names a complete copy.
        if let Some(metadata) = p.starport_metadata()
            && metadata["generation"] == marker["generation"]
        {
            assert!(
                starport_matches_volume(p),
                "{when}: metadata claims generation {} but the copy differs",
                marker["generation"]
            );
        }
    }
    // No backup lost: the newest DONE backup of before is still there unless
    // retention (keep: 2) let it go for two newer DONE ones, and at least the floor
    // of one DONE backup. Backup ids are timestamps: later sorts after.
    let backups = p.backups();
    if let Some(id) = newest_before {
        let kept = backups.iter().any(|(b, s)| b == id && s == "DONE");
        let newer_done = backups
            .iter()
            .filter(|(b, s)| b.as_str() > id.as_str() && s == "DONE")
            .count();
        assert!(
            kept || newer_done >= 2,
            "{when}: backup {id} lost: {backups:?}"
        );
    }
    assert!(
        backups.iter().any(|(_, s)| s == "DONE"),
        "{when}: no DONE backup left"
    );
}

fn crash_at(name: &str, setup: Setup, point: &str) {
    let p = TestPipeline::new(name, "{keep: 2, minimumRedundancy: 1}");
    common::primary().sql(&format!(
        "insert into rows(note) values ('{name}: committed before the crash')"
    ));
    let (code, _) = p.apply_json();
    assert_eq!(code, 0, "initial convergence");
    if matches!(setup, Setup::StaleVolume) {
        common::primary().sql(&format!(
            "insert into rows(note) values ('{name}: written since the last refresh')"
        ));
    }
    let stale = prepare(&p, setup);
    let newest_before = newest_done(&p);
    let generation_before = p.marker().map(|m| m["generation"].clone());

    // Run until the pause point, then SIGKILL: no cleanup of any kind.
    let log = p
        .root
        .join(format!("crash-{}.log", point.replace(':', "-")));
    let mut child = common::apply_until_paused(&p.specs, point, &log, &[], || {
        format!("backups {:?}", p.backups())
    });
    // While the copy is not finished, the starport carries no metadata at all:
    // metadata written early (even just before rsync starts) is caught here,
    // whatever state the copy reaches before the kill.
    if matches!(point, "sync:invalidated" | "sync:running" | "sync:copied") {
        assert!(
            !p.starport_metadata_path().exists(),
            "paused at {point}: metadata claims a copy that is not finished: {:?}",
            p.starport_metadata()
        );
    }
    let mut replay_dirs = Vec::new();
    if point == "replay" {
        // Let the postgres write its pid file, so the crash leaves it really running.
        let pid_file = p.volume.join("postmaster.pid");
        // Line 5 (the socket directory) is written empty first and filled in a
        // moment later: wait for it, not just for the line.
        while !std::fs::read_to_string(&pid_file)
            .is_ok_and(|t| t.lines().nth(4).is_some_and(|l| !l.trim().is_empty()))
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let dir = p.postmaster_socket_dir().unwrap();
        assert!(dir.is_dir(), "{}", dir.display());
        replay_dirs.push(dir);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    check_invariants(
        &p,
        &newest_before,
        stale.as_ref(),
        &format!("after SIGKILL at {point}"),
    );
    if point == "backup:running" {
        // A base backup is left to finish on its own (RELIABILITY.md); the next
        // start waits for it. Let it end before running again.
        let start = Instant::now();
        while p
            .backups()
            .iter()
            .any(|(_, s)| s == "STARTED" || s == "WAITING_FOR_WALS")
        {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the backup left running never ended: {:?}",
                p.backups()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // Run again (spec back to normal): it converges from wherever the crash left it.
    if matches!(setup, Setup::StaleBackup) {
        p.write_spec("{keep: 2, minimumRedundancy: 1}", "30d");
    }
    if matches!(setup, Setup::StaleVolume) {
        p.edit_spec(
            "    maxAge: 1s\n    recoverTimeout",
            "    maxAge: 24h\n    recoverTimeout",
        );
    }
    let (code, report, log) = p.apply_json_with_log();
    assert_eq!(code, 0, "second run after a crash at {point}: {report:#}");
    check_invariants(
        &p,
        &newest_before,
        stale.as_ref(),
        &format!("after recovering from a crash at {point}"),
    );
    // No replay's socket directory is left: neither the crashed run's (a stray
    // replay) nor the second run's own.
    replay_dirs.extend(common::replay_socket_dirs(&log));
    if matches!(setup, Setup::LostMarker | Setup::StaleVolume) {
        assert!(
            replay_dirs.len() >= 2 || point != "replay",
            "{replay_dirs:?}"
        );
        assert!(
            !replay_dirs.is_empty() || point == "step:catchUpVolume",
            "the second run replayed: {log}"
        );
    }
    for dir in &replay_dirs {
        assert!(
            !dir.exists(),
            "replay socket directory {} left after a crash at {point}",
            dir.display()
        );
    }
    let marker = p.marker().expect("converged volume is marked");
    assert_eq!(
        p.starport_metadata().unwrap()["generation"],
        marker["generation"]
    );
    assert!(starport_matches_volume(&p));
    // A copy of the marked volume starts as a primary with no step of its own and
    // holds what was committed, the rows written for a catch-up included.
    let copy = common::copy_of(&p.volume);
    let (rows, server_log) = query_cluster(
        copy.path(),
        &format!(
            "select pg_is_in_recovery(), count(*) from rows where note in ('{name}: committed before the crash', '{name}: written since the last refresh')"
        ),
    );
    // Killed before it touched anything, a catch-up leaves the marker standing
    // (fresh again once maxAge is back to 24h); killed later, the volume is
    // unmarked and the second run recovers it in full, new rows included.
    let refreshed = generation_before.as_ref() != Some(&marker["generation"]);
    if matches!(setup, Setup::StaleVolume) {
        assert_eq!(refreshed, point != "step:catchUpVolume", "{log}");
    }
    let expected = if matches!(setup, Setup::StaleVolume) && refreshed {
        "f|2"
    } else {
        "f|1"
    };
    assert_eq!(rows, expected, "{server_log}");
    // Nothing of the crashed run is left running.
    let start = Instant::now();
    loop {
        let left = processes_under(&p.root);
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "left behind after a crash at {point}: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn crash_before_a_base_backup() {
    crash_at("crash_backup", Setup::StaleBackup, "step:takeBaseBackup");
}

#[test]
fn crash_during_a_base_backup() {
    crash_at("crash_backup_running", Setup::StaleBackup, "backup:running");
}

#[test]
fn crash_during_a_delete() {
    crash_at(
        "crash_delete_running",
        Setup::ExtraBackups,
        "delete:running",
    );
}

#[test]
fn crash_during_barman_recover() {
    crash_at(
        "crash_recover_running",
        Setup::LostMarker,
        "recover:running",
    );
}

#[test]
fn crash_during_rsync() {
    crash_at("crash_rsync_running", Setup::StaleStarport, "sync:running");
}

#[test]
fn crash_before_a_delete() {
    crash_at("crash_delete", Setup::ExtraBackups, "step:deleteBackup");
}

#[test]
fn crash_before_a_recovery() {
    crash_at(
        "crash_recover_start",
        Setup::LostMarker,
        "step:recoverVolume",
    );
}

#[test]
fn crash_between_barman_recover_and_moving_the_data_in_place() {
    crash_at("crash_recover_staged", Setup::LostMarker, "recover:staged");
}

#[test]
fn crash_during_replay() {
    crash_at("crash_replay", Setup::LostMarker, "replay");
}

#[test]
fn crash_before_a_sync() {
    crash_at(
        "crash_sync_start",
        Setup::StaleStarport,
        "step:syncStarport",
    );
}

#[test]
fn crash_after_invalidating_the_starport_before_rsync() {
    crash_at(
        "crash_sync_invalidated",
        Setup::StaleStarport,
        "sync:invalidated",
    );
}

#[test]
fn crash_between_rsync_and_the_metadata_write() {
    crash_at("crash_sync_copied", Setup::StaleStarport, "sync:copied");
}

#[test]
fn crash_before_a_catch_up() {
    crash_at(
        "crash_catchup_start",
        Setup::StaleVolume,
        "step:catchUpVolume",
    );
}

#[test]
fn crash_after_the_catch_up_invalidated_the_marker_before_fetching() {
    crash_at(
        "crash_catchup_invalidated",
        Setup::StaleVolume,
        "catchup:invalidated",
    );
}

#[test]
fn crash_during_the_wal_fetch() {
    crash_at(
        "crash_catchup_fetching",
        Setup::StaleVolume,
        "catchup:fetching",
    );
}

#[test]
fn crash_during_the_catch_up_replay() {
    crash_at("crash_catchup_replay", Setup::StaleVolume, "replay");
}

#[test]
fn crash_between_the_catch_up_stop_and_the_marker() {
    crash_at(
        "crash_catchup_stopped",
        Setup::StaleVolume,
        "catchup:stopped",
    );
}
