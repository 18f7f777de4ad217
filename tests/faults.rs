//! Fault injection against real barman, PostgreSQL and rsync: each fault shows the
//! operator a condition and a reason, deletes nothing, marks nothing fresh, and the
//! pipeline converges once the fault is gone.

mod common;

use common::{TestPipeline, actions, condition, first};
use serde_json::Value;

fn step_outcomes(report: &Value) -> Vec<(String, String)> {
    report["pipelines"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"]["action"].as_str().unwrap().to_string(),
                s["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn last_detail(report: &Value) -> String {
    report["pipelines"][0]["steps"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn volume_and_replay_faults_never_leave_a_marked_volume() {
    let p = TestPipeline::new("fault_volume", "{keep: 2}");
    assert_eq!(p.apply_json().0, 0);
    let backups = p.backups();

    // A corrupted marker is no marker: the volume is recovered again.
    std::fs::write(
        p.volume.join(".reconciler-volume.json"),
        "{\"generation\": 12, trunc",
    )
    .unwrap();
    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 1);
    let volume = condition(first(&report), "VolumeFresh");
    assert_eq!(volume["reason"], "NoValidMarker");
    assert!(
        volume["message"]
            .as_str()
            .unwrap()
            .contains("marker corrupt"),
        "{volume}"
    );

    // Replay that never ends (its probe can never log in) is abandoned at its timeout:
    // postgres stopped, no marker.
    p.edit_spec(
        "      timeout: 5m\n      stopTimeout",
        "      timeout: 4s\n      databaseUser: nobody_here\n      stopTimeout",
    );
    let (code, report) = p.apply_json();
    assert_eq!(code, 1);
    assert_eq!(
        step_outcomes(&report),
        vec![("recoverVolume".to_string(), "failed".to_string())]
    );
    assert!(
        last_detail(&report).contains("replay did not finish within 4s"),
        "{}",
        last_detail(&report)
    );
    assert!(p.marker().is_none());
    assert!(
        !p.volume.join("postmaster.pid").exists(),
        "postgres left running after a replay timeout"
    );

    // A replay postgres that cannot start fails the step with its own words.
    p.edit_spec(
        "      databaseUser: nobody_here\n",
        "      databaseUser: postgres\n      settings: {shared_buffers: 999TB}\n",
    );
    let (code, report) = p.apply_json();
    assert_eq!(code, 1);
    assert!(
        last_detail(&report).contains("postgres exited during replay"),
        "{}",
        last_detail(&report)
    );
    assert!(p.marker().is_none());

    // Nothing was deleted on the way, and once the faults are gone it converges.
    assert_eq!(p.backups(), backups);
    p.edit_spec("      settings: {shared_buffers: 999TB}\n", "");
    p.edit_spec("timeout: 4s", "timeout: 5m");
    assert_eq!(p.apply_json().0, 0);
    assert!(p.marker().is_some());
}

/// A replay postgres that replayed everything but was then stopped without a
/// restartpoint (an immediate shutdown behind the reconciler's back, as a crash or
/// an operator would) exits all the same; only pg_controldata's `in archive
/// recovery` (not `shut down in recovery`) tells. The step fails, no marker is
/// written, and the next apply recovers again.
#[test]
fn a_replay_stopped_without_a_clean_shutdown_leaves_no_marker() {
    let p = TestPipeline::new("fault_unclean_stop", "{keep: 2}");
    p.take_backup();
    let log = p.root.join("unclean-stop.log");
    let resume = p.root.join("resume");
    let resume_env = resume.display().to_string();
    let mut child = common::apply_until_paused(
        &p.specs,
        "replay:finished",
        &log,
        &[("RECONCILER_RESUME_WHEN", resume_env.as_str())],
        || format!("backups {:?}", p.backups()),
    );
    let pid_file = std::fs::read_to_string(p.volume.join("postmaster.pid")).unwrap();
    let socket_dir = std::path::PathBuf::from(pid_file.lines().nth(4).unwrap().trim());
    let stopped = std::process::Command::new("runuser")
        .args(["-u", "barman", "--"])
        .arg(format!("{}/pg_ctl", common::PGBIN))
        .arg("-D")
        .arg(&p.volume)
        .args(["-m", "immediate", "-w", "stop"])
        .current_dir("/")
        .status()
        .unwrap();
    assert!(stopped.success());
    assert_eq!(common::cluster_state(&p.volume), "in archive recovery");
    std::fs::write(&resume, "").unwrap();
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("did not shut down cleanly") && text.contains("in archive recovery"),
        "{text}"
    );
    assert!(
        p.marker().is_none(),
        "a marker on an uncleanly stopped cluster"
    );
    assert!(!socket_dir.exists(), "{} left behind", socket_dir.display());
    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 1);
    assert_eq!(condition(first(&report), "VolumeFresh")["status"], "False");

    // Nothing stands in the way of the next recovery.
    let (code, report) = p.apply_json();
    assert_eq!(code, 0, "{report:#}");
    assert!(p.marker().is_some());
    assert_eq!(common::cluster_state(&p.volume), "shut down in recovery");
}

#[test]
fn starport_barman_and_clock_faults_are_reported_not_acted_on() {
    let p = TestPipeline::new("fault_starport", "{keep: 2}");
    assert_eq!(p.apply_json().0, 0);
    let marker = p.marker().unwrap();
    let backups = p.backups();

    // The starport cannot be written (its data directory is a file): the sync fails,
    // the metadata stays invalidated, the volume is untouched.
    let mut metadata = p.starport_metadata().unwrap();
    metadata["generation"] = Value::from("older");
    std::fs::write(
        p.starport_metadata_path(),
        serde_json::to_vec(&metadata).unwrap(),
    )
    .unwrap();
    let data = p.starport_data();
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::write(&data, "not a directory").unwrap();
    let (code, report) = p.apply_json();
    assert_eq!(code, 1);
    assert_eq!(
        step_outcomes(&report),
        vec![("syncStarport".to_string(), "failed".to_string())]
    );
    assert!(
        p.starport_metadata().is_none(),
        "metadata written over a failed copy"
    );
    assert_eq!(p.marker().unwrap(), marker);
    let (_, report) = p.diff_json(&[]);
    assert_eq!(
        condition(first(&report), "StarportInSync")["reason"],
        "NoMetadata"
    );
    std::fs::remove_file(&data).unwrap();
    assert_eq!(p.apply_json().0, 0);

    // A clock behind barman's (evaluated at an instant before the backup ended):
    // nothing is planned, retention is Unknown.
    let (code, report) = p.diff_json(&["--at", "2020-01-01T00:00:00Z"]);
    assert_eq!(code, 2);
    let pipeline = first(&report);
    assert_eq!(
        condition(pipeline, "BaseBackupFresh")["reason"],
        "BackupFromTheFuture"
    );
    assert_eq!(
        condition(pipeline, "RetentionSatisfied")["status"],
        "Unknown"
    );
    assert!(
        actions(&pipeline["steps"])
            .iter()
            .all(|a| a != "takeBaseBackup" && !a.starts_with("deleteBackup"))
    );

    // barman failing (here: a server it does not know): Unknown, nothing executed.
    p.edit_spec(&format!("server: {}", p.name), "server: not_configured");
    let (code, report) = p.apply_json();
    assert_eq!(code, 2);
    assert_eq!(report["pipelines"][0]["steps"], Value::Array(vec![]));
    assert_eq!(
        condition(&report["pipelines"][0]["finalPlan"], "BaseBackupFresh")["reason"],
        "BarmanUnavailable"
    );
    assert_eq!(p.backups(), backups);
}

#[test]
fn a_primary_barman_cannot_reach_fails_the_backup_and_deletes_nothing() {
    let p = TestPipeline::new("fault_primary", "{keep: 1}");
    assert_eq!(p.apply_json().0, 0);
    let backups = p.backups();
    // barman's view of the primary goes dark: its conninfo points at a closed port.
    let conf = std::fs::read_to_string(&p.barman_conf).unwrap();
    let dark = regex_free_replace_port(&conf);
    std::fs::write(&p.barman_conf, &dark).unwrap();
    p.write_spec("{keep: 1}", "1s");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (code, report) = p.apply_json();
    assert_eq!(code, 1);
    assert_eq!(
        step_outcomes(&report),
        vec![("takeBaseBackup".to_string(), "failed".to_string())],
        "with keep 1, the old backup would be obsolete only after a new one is DONE"
    );
    assert_eq!(p.backups().iter().filter(|(_, s)| s == "DONE").count(), 1);
    assert!(
        p.backups().iter().any(|b| *b == backups[0]),
        "the only DONE backup was deleted"
    );
    std::fs::write(&p.barman_conf, conf).unwrap();
    p.write_spec("{keep: 1}", "30d");
}

/// The barman config with `conninfo`'s port replaced by one nothing listens on.
fn regex_free_replace_port(conf: &str) -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    conf.lines()
        .map(|line| {
            if line.starts_with("conninfo") {
                line.split(' ')
                    .map(|word| {
                        if word.starts_with("port=") {
                            format!("port={closed}")
                        } else {
                            word.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn a_backup_already_running_is_waited_for_not_a_failure() {
    let p = TestPipeline::new("fault_busy", "{keep: 3}");
    assert_eq!(p.apply_json().0, 0);
    p.write_spec("{keep: 3}", "1s");
    std::thread::sleep(std::time::Duration::from_secs(2));
    // Someone (an operator, barman's own cron) starts a backup at the same moment.
    let conf = p.barman_conf.clone();
    let name = p.name.clone();
    let other = std::thread::spawn(move || {
        std::process::Command::new("barman")
            .arg("-c")
            .arg(conf)
            .args(["backup", &name, "--wait", "--wait-timeout", "120"])
            .output()
            .unwrap()
    });
    // barman writes backup.info with status=STARTED as it begins; look at its
    // catalogue directly (a list-backups call is slower than a small backup).
    let base = p.root.join("home").join(&p.name).join("base");
    let started = || {
        std::fs::read_dir(&base)
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| {
                std::fs::read_to_string(entry.path().join("backup.info"))
                    .is_ok_and(|info| info.contains("status=STARTED"))
            })
    };
    let start = std::time::Instant::now();
    while !started() {
        assert!(
            !other.is_finished() || started(),
            "the other backup ended before it was seen running"
        );
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the other backup never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (code, report) = p.apply_json();
    let steps = report["pipelines"][0]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        steps.iter().all(|s| s["outcome"] != "failed"),
        "nothing failed: {steps:#?}"
    );
    let waiting = report["pipelines"][0]["finalPlan"]["waitingOn"].to_string();
    if steps.is_empty() && code == 0 {
        // The other backup ended while barman was being looked at (a STARTED
        // entry is read twice, around a look at barman's lock): its DONE backup
        // is fresh, so there was nothing to do.
        assert_eq!(report["pipelines"][0]["converged"], true, "{report:#}");
    } else if steps.is_empty() {
        // The usual case: it saw the backup running and waits for it (exit 1).
        assert_eq!(code, 1, "{report:#}");
        assert!(waiting.contains("to finish"), "{waiting}");
    } else {
        // The other backup ended before this run looked at barman (barman is quick
        // on a tiny database): there was nothing to wait for, so it went on; a step
        // that met barman's lock is `busy`, never `failed` (checked above).
        assert_ne!(code, 2, "{report:#}");
    }
    assert!(other.join().unwrap().status.success());
    p.write_spec("{keep: 3}", "30d");
    assert_eq!(p.apply_json().0, 0);
}
