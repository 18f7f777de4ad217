//! A run cut at each pause point of production code (the fake call standing there
//! never returns, and the `apply` future is dropped: nothing after it runs), then
//! the promises `tests/crash.rs` checks after a SIGKILL, and a second `apply` on
//! the same world that converges.

use super::fake::CRASH_POINTS;
use super::{Drift, Test, check_converged, check_invariants, newest_done};

/// Whether the point is in a restore target's run.
fn in_restore(point: &str) -> bool {
    point.starts_with("restore:") || matches!(point, "step:restoreVolume" | "step:startConsumers")
}

async fn crash_at(point: &str, drift: Drift) {
    let t = Test::converged().await;
    drift.apply(&mut t.world.state());
    let resource = if in_restore(point) {
        // The pipeline publishes a new generation; the crash is in its restore.
        assert!(t.apply(&t.pipeline).await.converged);
        &t.target
    } else {
        &t.pipeline
    };
    let newest_before = newest_done(&t.world.state());
    t.world.crash_at(point);

    tokio::select! {
        () = t.world.crashed() => {}
        report = t.apply(resource) => {
            panic!("the run never reached {point}: {report:#?}\njournal: {}", t.journal_text())
        }
    }
    check_invariants(
        &t.world.state(),
        &newest_before,
        &format!("after a crash at {point}"),
    );
    if point == "backup:running" {
        // barman is left to finish a base backup on its own.
        t.world.state().finish_running_backups();
    }

    t.converge().await;
    let s = t.world.state();
    let when = format!("after recovering from a crash at {point}");
    check_invariants(&s, &newest_before, &when);
    check_converged(&s, &when);
}

macro_rules! crash_tests {
    ($($name:ident: $point:literal, $drift:ident;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                crash_at($point, Drift::$drift).await;
            }
        )*

        /// Every point a test above cuts a run at.
        const TESTED: &[&str] = &[$($point),*];
    };
}

crash_tests! {
    crash_while_observing: "observe", LostMarker;
    crash_before_a_base_backup: "step:takeBaseBackup", StaleBackup;
    crash_during_a_base_backup: "backup:running", StaleBackup;
    crash_before_a_delete: "step:deleteBackup", ExtraBackups;
    crash_during_a_delete: "delete:running", ExtraBackups;
    crash_before_a_recovery: "step:recoverVolume", StaleOldVolume;
    crash_during_barman_recover: "recover:running", StaleOldVolume;
    crash_between_barman_recover_and_moving_the_data_in_place: "recover:staged", StaleOldVolume;
    crash_during_the_wal_fetch_after_barman_recover: "recover:fetching", StaleOldVolume;
    crash_during_replay: "replay", StaleOldVolume;
    crash_after_replay_before_postgres_stopped: "replay:finished", StaleOldVolume;
    crash_between_the_replay_stop_and_the_marker: "recover:stopped", StaleOldVolume;
    crash_before_a_catch_up: "step:catchUpVolume", StaleVolume;
    crash_after_the_catch_up_invalidated_the_marker: "catchup:invalidated", StaleVolume;
    crash_during_the_wal_fetch: "catchup:fetching", StaleVolume;
    crash_between_the_catch_up_stop_and_the_marker: "catchup:stopped", StaleVolume;
    crash_before_stopping_a_stray_replay: "step:stopStrayReplay", StrayReplay;
    crash_before_a_sync: "step:syncStarport", StaleStarport;
    crash_after_invalidating_the_starport_before_rsync: "sync:invalidated", StaleStarport;
    crash_during_rsync: "sync:running", StaleStarport;
    crash_between_rsync_and_the_metadata_write: "sync:copied", StaleStarport;
    crash_before_a_mirror_sync: "step:syncMirror", StaleMirror;
    crash_after_invalidating_the_mirror_before_rsync: "mirror:invalidated", StaleMirror;
    crash_during_the_mirror_rsync: "mirror:running", StaleMirror;
    crash_before_a_restore: "step:restoreVolume", LostMarker;
    crash_after_stopping_the_consumers: "restore:consumersStopped", LostMarker;
    crash_during_the_restore_copy: "restore:running", LostMarker;
    crash_after_the_restore_copy: "restore:copied", LostMarker;
    crash_before_starting_consumers: "step:startConsumers", ConsumerOwed;
}

/// Every `pause_point!("…")` and `.pause_at("…")` in production code is a crash
/// point the fake knows and a test above cuts a run at; `step:<action>` points
/// are listed in the fake by hand.
#[test]
fn every_pause_point_in_production_is_crashed_at() {
    let mut names = Vec::new();
    for entry in walkdir::WalkDir::new(concat!(env!("CARGO_MANIFEST_DIR"), "/reconciler")) {
        let entry = entry.expect("readable source tree");
        if entry.path().extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("readable source");
        for needle in ["pause_point!(\"", ".pause_at(\""] {
            for (at, _) in text.match_indices(needle) {
                let rest = &text[at + needle.len()..];
                let name = &rest[..rest.find('"').expect("closing quote")];
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    names.dedup();
    assert!(names.len() >= 10, "found only {names:?}");
    for name in &names {
        assert!(
            CRASH_POINTS.iter().any(|(p, _)| p == name),
            "the fake has no crash point {name}"
        );
        assert!(TESTED.contains(&name.as_str()), "no crash test at {name}");
    }
}
