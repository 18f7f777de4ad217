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
