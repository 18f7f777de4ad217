//! A barman backup that died mid-copy never stalls the pipeline, and one that
//! runs is never touched: real barman, a real primary, real `pg_basebackup`.
//!
//! Backups are slowed with barman's own `bandwidth_limit` so that there is a
//! "mid-copy" to kill.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestPipeline, actions, condition, first};
use serde_json::Value;

use std::os::unix::process::CommandExt;

/// barman's `bandwidth_limit`, in kB/s: the test database (about 40 MB) then
/// takes some twenty seconds to copy.
const SLOW: u32 = 2000;

fn set_bandwidth_limit(p: &TestPipeline, kbps: Option<u32>) {
    let text = std::fs::read_to_string(&p.barman_conf).unwrap();
    let mut kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("bandwidth_limit"))
        .collect();
    let line = kbps.map(|k| format!("bandwidth_limit = {k}"));
    // The server's section is the file's last.
    if let Some(line) = &line {
        kept.push(line);
    }
    std::fs::write(&p.barman_conf, kept.join("\n") + "\n").unwrap();
}

/// `barman backup` as an operator would start it by hand, in its own process
/// group.
fn backup_by_hand(p: &TestPipeline) -> Child {
    Command::new("barman")
        .arg("-c")
        .arg(&p.barman_conf)
        .args(["backup", &p.name, "--wait", "--wait-timeout", "120"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start barman backup")
}

/// The pids of `pg_basebackup` processes writing into `backup_id`'s directory of
/// this pipeline's barman (ids are timestamps: two servers may share one).
fn copying(p: &TestPipeline, backup_id: &str) -> Vec<i32> {
    let needle = format!("{}/home/{}/base/{backup_id}/data", p.root.display(), p.name);
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<String> = c
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                args.first()
                    .is_some_and(|a| a.ends_with("/pg_basebackup") || a == "pg_basebackup")
                    && args.iter().any(|a| a.contains(&needle))
            })
        })
        .collect()
}

/// Waits until barman lists a STARTED backup with a `pg_basebackup` copying it.
fn wait_until_copying(p: &TestPipeline) -> String {
    let start = Instant::now();
    loop {
        let started = p
            .backups()
            .into_iter()
            .find(|(_, status)| status == "STARTED")
            .map(|(id, _)| id);
        if let Some(id) = started
            && !copying(p, &id).is_empty()
        {
            return id;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no backup started copying: {:?}",
            p.backups()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn wait_gone(pids: &[i32]) {
    let start = Instant::now();
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{pids:?} still run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn waits(report: &Value) -> String {
    first(report)["waitingOn"].to_string()
}

#[test]
fn a_barman_backup_killed_mid_copy_is_cleaned_and_the_pipeline_converges() {
    let p = TestPipeline::new("killed_backup", "{keep: 2, minimumRedundancy: 1}");
    set_bandwidth_limit(&p, Some(SLOW));
    let mut barman = backup_by_hand(&p);
    let id = wait_until_copying(&p);

    // The OOM killer takes barman's python process: its lock goes with it, but
    // the pg_basebackup it started keeps writing for a while.
    kill(barman.id() as i32);
    let _ = barman.wait();
    let orphans = copying(&p, &id);
    assert!(!orphans.is_empty(), "pg_basebackup outlives barman");
    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 1, "{report:#}");
    assert!(
        waits(&report).contains(&format!("backup {id} to finish")),
        "still copying, so still alive: {report:#}"
    );
    assert!(
        !actions(&first(&report)["steps"]).contains(&format!("deleteBackup:{id}")),
        "{report:#}"
    );

    // Then the copy dies too (a reboot): nothing will ever finish the entry.
    for pid in &orphans {
        kill(*pid);
    }
    wait_gone(&orphans);
    assert!(p.backups().contains(&(id.clone(), "STARTED".to_string())));
    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 1, "{report:#}");
    let retention = condition(first(&report), "RetentionSatisfied");
    assert_eq!(retention["reason"], "DeadBackups", "{report:#}");
    assert!(
        retention["message"].as_str().unwrap().contains(&id),
        "{retention}"
    );
    // barman would empty its WAL archive with the only entry it lists, and then
    // refuse a backup: with no DONE backup, the new one comes first.
    let steps = actions(&first(&report)["steps"]);
    assert_eq!(steps[0], "takeBaseBackup", "{report:#}");
    assert!(steps.contains(&format!("deleteBackup:{id}")), "{report:#}");

    set_bandwidth_limit(&p, None);
    let (code, report) = p.apply_json();
    assert_eq!(code, 0, "{report:#}");
    let backups = p.backups();
    assert!(
        backups.iter().all(|(_, status)| status == "DONE"),
        "{backups:?}"
    );
    assert!(!backups.iter().any(|(b, _)| b == &id), "{backups:?}");
    // barman itself is healthy afterwards: its check passes, so does a new backup.
    let check = p.barman(&["check", &p.name]);
    assert_eq!(
        check[&p.name]["failed_backups"]["status"], "OK",
        "{check:#}"
    );
}

#[test]
fn a_backup_running_by_hand_is_waited_for_and_never_touched() {
    let p = TestPipeline::new("live_backup", "{keep: 2, minimumRedundancy: 1}");
    set_bandwidth_limit(&p, Some(SLOW));
    let mut barman = backup_by_hand(&p);
    let id = wait_until_copying(&p);

    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 1, "{report:#}");
    assert!(
        waits(&report).contains(&format!("backup {id} to finish")),
        "{report:#}"
    );
    assert!(
        first(&report)["steps"].as_array().unwrap().is_empty(),
        "{report:#}"
    );

    // apply starts nothing beside it: no delete, no second backup.
    let (_, applied) = p.apply_json();
    assert!(
        first(&applied)["steps"].as_array().unwrap().is_empty(),
        "{applied:#}"
    );
    assert!(
        barman.try_wait().unwrap().is_none(),
        "the operator's backup still runs"
    );

    let status = barman.wait().unwrap();
    assert!(
        status.success(),
        "the operator's backup finished: {status:?}"
    );
    assert!(
        p.backups().contains(&(id.clone(), "DONE".to_string())),
        "{:?}",
        p.backups()
    );
    set_bandwidth_limit(&p, None);
}
