//! Processes writing where the reconciler would, with real barman, rsync and
//! PostgreSQL 15. `reconciler apply` is SIGKILLed while an rsync its direct child
//! forked copies into the starport; that grandchild outlives it (only direct
//! children die with the reconciler). The next `apply` must stop it before
//! anything writes there again, and converge. An operator's rsync is waited for
//! and never signalled. (A `barman recover` left running in barman's container is
//! in `tests/docker.rs`: on this host barman's rsync dies of a broken pipe soon
//! after barman itself.)

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::TestPipeline;
use serde_json::Value;

/// Live rsync processes whose last argument (where they write) lies under `dir`.
fn rsyncs_writing_into(dir: &Path) -> Vec<i32> {
    let dir = dir.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let zombie =
            std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|s| s.contains(") Z "));
        if !zombie
            && args.first().is_some_and(|a| a.ends_with("rsync"))
            && args.last().is_some_and(|a| a.starts_with(&dir))
        {
            found.push(pid);
        }
    }
    found
}

fn actions(report: &Value) -> Vec<String> {
    report["pipelines"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"]["action"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// SIGKILLs `apply` at `point` once an rsync writes into `dir`, and returns the
/// rsync pids left alive after the kill.
fn kill_while_rsync_writes(
    p: &TestPipeline,
    point: &str,
    dir: &Path,
    env: &[(&str, &str)],
) -> Vec<i32> {
    let log = p
        .root
        .join(format!("orphan-{}.log", point.replace(':', "-")));
    let mut child = common::apply_until_paused(&p.specs, point, &log, env, || {
        format!("backups {:?}", p.backups())
    });
    let start = Instant::now();
    while rsyncs_writing_into(dir).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no rsync into {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let left = rsyncs_writing_into(dir);
    assert!(
        !left.is_empty(),
        "the rsync into {} died with the reconciler: nothing to test",
        dir.display()
    );
    left
}

/// The second run stopped the orphans before its own write, and converged.
fn check_second_run(p: &TestPipeline, orphans: &[i32], dir: &Path, write: &str) {
    let (code, report, log) = p.apply_json_with_log();
    let done = actions(&report);
    let stop = done.iter().position(|a| a == "stopOrphan");
    let write_at = done.iter().position(|a| a == write);
    assert!(
        matches!((stop, write_at), (Some(s), Some(w)) if s < w),
        "the orphan is stopped before {write}: {done:?}\n{log}"
    );
    assert!(
        log.contains("stopped a process left by a killed reconciler"),
        "{log}"
    );
    assert_eq!(code, 0, "{report:#}");
    let still: Vec<i32> = rsyncs_writing_into(dir)
        .into_iter()
        .filter(|pid| orphans.contains(pid))
        .collect();
    assert!(still.is_empty(), "orphans still alive: {still:?}");
    let marker = p.marker().expect("converged volume is marked");
    assert_eq!(
        p.starport_metadata().unwrap()["generation"],
        marker["generation"]
    );
    // At rest as a standby, ready for the next catch-up.
    assert_eq!(common::cluster_state(&p.volume), "shut down in recovery");
}

#[test]
fn an_orphaned_rsync_into_the_starport_is_stopped_before_the_next_sync() {
    let p = TestPipeline::new("orphan_starport", "{keep: 2, minimumRedundancy: 1}");
    let (code, _) = p.apply_json();
    assert_eq!(code, 0, "initial convergence");
    // A full copy again: no metadata, no data.
    std::fs::remove_file(p.starport_metadata_path()).unwrap();
    std::fs::remove_dir_all(p.starport_data()).unwrap();
    // rsync behind a wrapper (as a site's `nice`/`ionice` wrapper would be), slowed
    // down: the wrapper dies with the reconciler, the rsync it forked does not.
    let shim = p.root.join("shim");
    std::fs::create_dir_all(&shim).unwrap();
    let rsync = shim.join("rsync");
    std::fs::write(
        &rsync,
        "#!/bin/sh\n/usr/bin/rsync --bwlimit=500 \"$@\" &\nwait $!\n",
    )
    .unwrap();
    std::fs::set_permissions(&rsync, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap());
    let target = p.starport.join("barman_to_starport");
    let orphans = kill_while_rsync_writes(&p, "sync:running", &target, &[("PATH", &path)]);
    check_second_run(&p, &orphans, &target, "syncStarport");
}

#[test]
fn an_operators_rsync_into_the_starport_is_waited_for_by_name_and_left_alone() {
    let p = TestPipeline::new("orphan_operator", "{keep: 2, minimumRedundancy: 1}");
    let (code, _) = p.apply_json();
    assert_eq!(code, 0, "initial convergence");
    std::fs::remove_file(p.starport_metadata_path()).unwrap();
    // An operator copies something into the starport by hand: no reconciler's mark.
    let source = p.root.join("by-hand");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("big"), vec![1u8; 64 << 20]).unwrap();
    let target = p.starport.join("barman_to_starport").join("by-hand");
    let mut rsync = std::process::Command::new("rsync")
        .args(["-a", "--bwlimit=500"])
        .arg(format!("{}/", source.display()))
        .arg(format!("{}/", target.display()))
        .env_remove("RECONCILER_RUN")
        .spawn()
        .unwrap();
    let start = Instant::now();
    while rsyncs_writing_into(&target).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the rsync never ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, report) = common::reconciler_json(&p.specs, &["diff"], &[]);
    assert_eq!(code, 1, "{report:#}");
    let pipeline = &report["pipelines"][0];
    assert_eq!(pipeline["steps"], Value::Array(vec![]), "{report:#}");
    let waiting = pipeline["waitingOn"].to_string();
    assert!(
        waiting.contains(&format!("rsync (pid {})", rsync.id()))
            && waiting.contains("not started by a reconciler"),
        "{waiting}"
    );
    let reasons = pipeline["conditions"].to_string();
    assert!(reasons.contains("ProcessWriting"), "{reasons}");
    assert!(rsync.try_wait().unwrap().is_none(), "never signalled");
    rsync.kill().unwrap();
    rsync.wait().unwrap();
}
