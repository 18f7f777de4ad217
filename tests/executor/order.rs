//! Each step is a fixed sequence whose order is the safety argument: the journal
//! of the fake world shows the order, and the world at each moment shows what a
//! crash there would leave.

use reconciler::observed::RestoreState;
use reconciler::plan::{PipelineStep, Step};
use reconciler::reconcile::StepOutcome;

use super::{Drift, Test, check_converged, check_invariants, newest_done};

#[tokio::test]
async fn a_recovery_invalidates_the_marker_first_and_marks_only_after_a_clean_replay() {
    let t = Test::converged().await;
    Drift::StaleOldVolume.apply(&mut t.world.state());
    t.world.during("barman.recover", |s| {
        assert!(s.volume.marker.is_none(), "barman recovers under a marker");
    });
    t.world.during("replay.replay", |s| {
        assert!(s.volume.marker.is_none(), "replay runs under a marker");
    });

    let report = t.apply(&t.pipeline).await;

    assert!(report.converged, "{report:#?}");
    let invalidated = t.position("volume.invalidate_marker", "");
    let recovered = t.position("barman.recover", "");
    let promoted = t.position("volume.promote_staging", "");
    let replayed = t.position("replay.replay", "");
    let marked = t.position("volume.write_marker", "");
    assert!(
        invalidated < recovered && recovered < promoted && promoted < replayed,
        "{}",
        t.journal_text()
    );
    assert!(
        replayed < marked,
        "marker before replay: {}",
        t.journal_text()
    );
    let s = t.world.state();
    assert!(!s.volume.postgres_running);
    check_invariants(&s, &newest_done(&s), "after the recovery");
}

/// The catch-up's order: marker gone before any WAL is fetched, each segment in
/// `pg_wal` before postgres starts as a standby, the signal gone and only then the
/// marker; no `barman recover`.
#[tokio::test]
async fn a_catch_up_invalidates_the_marker_first_and_marks_only_after_the_standby_stopped() {
    let t = Test::converged().await;
    Drift::StaleVolume.apply(&mut t.world.state());
    t.world.during("barman.fetch_wal", |s| {
        assert!(s.volume.marker.is_none(), "WAL fetched under a marker");
    });
    t.world.during("replay.replay", |s| {
        assert!(s.volume.marker.is_none(), "replay runs under a marker");
    });

    let closes = segment(t.world.state().wal_end + 1);

    let report = t.apply(&t.pipeline).await;

    assert!(report.converged, "{report:#?}");
    let journal = t.journal_text();
    let caught_up = t
        .world
        .journal()
        .iter()
        .position(|c| c.op == "barman.list_wal" && c.detail.ends_with(".history"))
        .expect(&journal);
    let order = [
        t.position("barman.switch_wal", &closes),
        t.position("volume.invalidate_marker", ""),
        caught_up,
        t.position("volume.install_segment", &closes),
        t.position("volume.set_standby_signal", "true"),
        t.position("replay.replay", &format!("through {closes}")),
        t.position("volume.set_standby_signal", "false"),
        t.position("volume.write_marker", ""),
    ];
    assert!(order.is_sorted(), "{order:?}: {journal}");
    assert!(!t.called("barman.recover"), "{journal}");
    let s = t.world.state();
    assert_eq!(
        s.volume
            .marker
            .as_ref()
            .and_then(|m| m.standby.as_ref())
            .map(|p| p.last_segment.as_str()),
        Some(closes.as_str())
    );
    check_invariants(&s, &newest_done(&s), "after the catch-up");
}

/// The name of segment `number` of timeline 1.
fn segment(number: u64) -> String {
    reconciler::drivers::wal_segment::Segment {
        timeline: 1,
        number,
    }
    .to_string()
}

/// A full recovery replays through the segment the switch closed, which barman's
/// archive does not hold yet: `get-wal` fetches it after `barman recover`.
#[tokio::test]
async fn a_full_recovery_replays_through_the_segment_the_switch_closed() {
    let t = Test::converged().await;
    Drift::StaleOldVolume.apply(&mut t.world.state());
    let closes = segment(t.world.state().wal_end + 1);

    let report = t.apply(&t.pipeline).await;

    assert!(report.converged, "{report:#?}");
    let journal = t.journal_text();
    let order = [
        t.position("barman.switch_wal", &closes),
        t.position("volume.invalidate_marker", ""),
        t.position("barman.recover", ""),
        t.position("volume.install_segment", &segment(4)),
        t.position("volume.install_segment", &closes),
        t.position("replay.replay", &format!("through {closes}")),
        t.position("volume.write_marker", ""),
    ];
    assert!(order.is_sorted(), "{order:?}: {journal}");
}

/// On an idle primary the switch closes nothing: no wait for a segment, and the
/// catch-up replays what barman holds.
#[tokio::test]
async fn on_an_idle_primary_the_catch_up_waits_for_no_segment() {
    let t = Test::converged().await;
    Drift::StaleVolume.apply(&mut t.world.state());
    let newest = {
        let mut s = t.world.state();
        s.primary_writes = false;
        segment(s.wal_end)
    };

    let report = t.apply(&t.pipeline).await;

    assert!(report.converged, "{report:#?}");
    let journal = t.journal_text();
    // The only segment names asked for are the catch-up's: after the marker's.
    let asked: Vec<String> = t
        .world
        .journal()
        .iter()
        .filter(|c| c.op == "barman.list_wal" && !c.detail.ends_with(".history"))
        .map(|c| c.detail.clone())
        .collect();
    assert_eq!(asked, [segment(t.world.state().wal_end + 1)], "{journal}");
    assert!(
        t.position("volume.invalidate_marker", "") < t.position("barman.list_wal", ""),
        "{journal}"
    );
    assert!(t.position("replay.replay", &format!("through {newest}")) > 0);
}

/// The segment the switch closed reaches barman a few looks later (streaming
/// lags): the catch-up waits for it and replays through it. (Time is paused.)
#[tokio::test(start_paused = true)]
async fn a_closed_segment_that_reaches_barman_late_is_waited_for() {
    let t = Test::converged().await;
    Drift::StaleVolume.apply(&mut t.world.state());
    t.world.state().wal_late = 3;

    let report = t.apply(&t.pipeline).await;

    assert!(report.converged, "{report:#?}");
    let closed = segment(t.world.state().wal_end);
    // Each panics, naming the journal, when the call is missing.
    t.position("barman.fetch_wal", &closed);
    t.position("replay.replay", &format!("through {closed}"));
}

/// The switch that closes the current segment runs beside the recovery (or the
/// catch-up's checks), not before it: its segment is needed only when fetching.
/// Here it answers only once `barman recover` (or the marker's invalidation) has
/// started, so a step that waited for it first would never end. (Time is paused.)
#[tokio::test(start_paused = true)]
async fn the_segment_switch_costs_no_time_of_its_own() {
    for (drift, meanwhile) in [
        (Drift::LostMarker, "barman.recover"),
        (Drift::StaleVolume, "volume.invalidate_marker"),
    ] {
        let t = Test::converged().await;
        drift.apply(&mut t.world.state());
        t.world.state().switch_after = Some(meanwhile);

        let report =
            tokio::time::timeout(std::time::Duration::from_secs(600), t.apply(&t.pipeline))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "waited for the switch before {meanwhile}:\n{}",
                        t.journal_text()
                    )
                });

        assert!(report.converged, "{report:#?}");
        let closed = segment(t.world.state().wal_end);
        t.position("barman.switch_wal", &closed);
        t.position("replay.replay", &format!("through {closed}"));
    }
}

/// When the closed segment never reaches barman (streaming is down), the wait
/// ends and the catch-up replays what barman holds, which is consistent; the
/// walStreaming condition says why. (Time is paused.)
#[tokio::test(start_paused = true)]
async fn a_closed_segment_that_never_reaches_barman_ends_the_wait() {
    let t = Test::converged().await;
    Drift::StaleVolume.apply(&mut t.world.state());
    t.world.state().wal_late = u32::MAX;

    let report = t.apply(&t.pipeline).await;

    assert!(report.converged, "{report:#?}");
    let closed = segment(t.world.state().wal_end);
    let before = segment(t.world.state().wal_end - 1);
    t.position("replay.replay", &format!("through {before}"));
    assert!(
        !t.world
            .journal()
            .iter()
            .any(|c| c.op == "barman.fetch_wal" && c.detail.contains(&closed)),
        "{}",
        t.journal_text()
    );
}

/// A segment barman lacks before the one the switch closed fails the catch-up: the
/// volume would miss writes, so it is left unmarked and the step says which.
/// (Time is paused: the wait for the missing segment passes at once.)
#[tokio::test(start_paused = true)]
async fn a_wal_gap_before_the_closed_segment_fails_the_catch_up_and_leaves_no_marker() {
    let t = Test::converged().await;
    Drift::StaleVolume.apply(&mut t.world.state());
    let missing = {
        let mut s = t.world.state();
        // Two segments are closed: the first of them never reached barman.
        s.wal_end += 1;
        s.wal_missing = Some(s.wal_end);
        segment(s.wal_end)
    };

    let report = t.apply(&t.pipeline).await;

    let catch_up = report
        .steps
        .iter()
        .find(|r| {
            matches!(
                r.planned.step,
                Step::Pipeline(PipelineStep::CatchUpVolume { .. })
            )
        })
        .expect("a catch-up ran");
    assert_eq!(catch_up.outcome, StepOutcome::Failed, "{report:#?}");
    assert!(catch_up.detail.contains(&missing), "{}", catch_up.detail);
    assert!(!t.called("replay.replay"), "{}", t.journal_text());
    assert!(t.world.state().volume.marker.is_none());
}

#[tokio::test]
async fn a_sync_removes_the_starport_metadata_before_rsync_and_writes_it_after_checking_the_volume()
{
    let t = Test::converged().await;
    Drift::StaleStarport.apply(&mut t.world.state());
    t.world.during("starport.copy", |s| {
        assert!(s.starport.metadata.is_none(), "rsync under metadata");
    });

    let report = t.apply(&t.pipeline).await;

    assert!(report.converged, "{report:#?}");
    let invalidated = t.position("starport.invalidate_metadata", "");
    let copied = t.position("starport.copy", "");
    let written = t.position("starport.write_metadata", "");
    assert!(
        invalidated < copied && copied < written,
        "{}",
        t.journal_text()
    );
    let checked = t.world.journal()[copied..written]
        .iter()
        .any(|c| c.op == "volume.inspect");
    assert!(
        checked,
        "the volume is not looked at between rsync and the metadata: {}",
        t.journal_text()
    );
    check_converged(&t.world.state(), "after the sync");
}

#[tokio::test]
async fn a_volume_recovered_again_under_rsync_leaves_the_starport_without_metadata() {
    let t = Test::converged().await;
    Drift::StaleStarport.apply(&mut t.world.state());
    // Another recovery replaces the volume's data and marker while rsync runs.
    t.world.during("starport.copy", |s| {
        s.last_serial += 1;
        let serial = s.last_serial;
        let data = s.volume.data.as_mut().expect("volume data");
        data.serial = serial;
        let marker = s.volume.marker.as_mut().expect("marker");
        marker.generation = "recovered-meanwhile".to_string();
        s.generations.insert(marker.generation.clone(), serial);
    });

    let report = t.apply(&t.pipeline).await;

    let sync = report
        .steps
        .iter()
        .find(|r| {
            matches!(
                r.planned.step,
                Step::Pipeline(PipelineStep::SyncStarport { .. })
            )
        })
        .expect("a sync ran");
    assert_eq!(sync.outcome, StepOutcome::Failed, "{report:#?}");
    assert!(sync.detail.contains("generation"), "{}", sync.detail);
    assert!(!t.called("starport.write_metadata"), "{}", t.journal_text());
    let s = t.world.state();
    assert!(s.starport.metadata.is_none());
    check_invariants(
        &s,
        &newest_done(&s),
        "after a sync the volume changed under",
    );
}

#[tokio::test]
async fn a_mirror_loses_its_metadata_before_rsync_and_gets_it_after_checking_the_starport() {
    let t = Test::converged().await;
    Drift::StaleMirror.apply(&mut t.world.state());
    t.world.during("mirror.copy", |s| {
        assert!(
            s.mirrors["offsite"].metadata.is_none(),
            "rsync under the mirror's metadata"
        );
    });

    let report = t.apply(&t.pipeline).await;

    assert!(report.converged, "{report:#?}");
    let invalidated = t.position("mirror.invalidate_metadata", "offsite");
    let copied = t.position("mirror.copy", "offsite");
    let written = t.position("mirror.write_metadata", "offsite");
    assert!(
        invalidated < copied && copied < written,
        "{}",
        t.journal_text()
    );
    let checked = t.world.journal()[copied..written]
        .iter()
        .any(|c| c.op == "starport.inspect");
    assert!(checked, "{}", t.journal_text());
    check_converged(&t.world.state(), "after the mirror sync");
}

#[tokio::test]
async fn a_starport_synced_again_under_the_mirror_copy_leaves_the_mirror_without_metadata() {
    let t = Test::converged().await;
    Drift::StaleMirror.apply(&mut t.world.state());
    t.world.during("mirror.copy", |s| {
        // The local starport is being rewritten: its metadata goes, its data mixes.
        s.starport.metadata = None;
        s.starport.data = super::fake::Content::Partial;
    });

    let report = t.apply(&t.pipeline).await;

    let sync = report
        .steps
        .iter()
        .find(|r| {
            matches!(
                r.planned.step,
                Step::Pipeline(PipelineStep::SyncMirror { .. })
            )
        })
        .expect("a mirror sync ran");
    assert_eq!(sync.outcome, StepOutcome::Failed, "{report:#?}");
    assert!(!t.called("mirror.write_metadata"), "{}", t.journal_text());
    let s = t.world.state();
    assert!(s.mirrors["offsite"].metadata.is_none());
    check_invariants(&s, &newest_done(&s), "after a mirror sync");
}

#[tokio::test]
async fn a_restore_marks_restoring_before_stopping_consumers_and_copying_and_restored_after() {
    let t = Test::converged().await;
    Drift::LostMarker.apply(&mut t.world.state());
    assert!(t.apply(&t.pipeline).await.converged);
    let generation = t.world.state().starport_generation().expect("a generation");
    t.world.state().journal.clear();
    t.world.during("restore_source.copy", |s| {
        let marker = s.restore_volume.marker.as_ref().expect("a marker");
        assert_eq!(
            marker.state,
            RestoreState::Restoring,
            "copy under `restored`"
        );
        assert!(
            s.consumers.values().all(|running| !running),
            "copy under a running consumer"
        );
    });

    let report = t.apply(&t.target).await;

    assert!(report.converged, "{report:#?}");
    let restoring = t.position("restore_volume.write_marker", "restoring");
    let stopped = t.position("consumers.stop", "montagu-db");
    let copied = t.position("restore_source.copy", "");
    let restored = t.position(
        "restore_volume.write_marker",
        &format!("restored {generation}"),
    );
    let started = t.position("consumers.start", "montagu-db");
    assert!(
        restoring < stopped && stopped < copied && copied < restored && restored < started,
        "{}",
        t.journal_text()
    );
    check_converged(&t.world.state(), "after the restore");
}

/// A stale backup with two DONE ones and keep 2: the plan takes a backup, then
/// deletes the oldest, which only the new backup makes due.
async fn due_after_a_new_backup() -> Test {
    let t = Test::converged().await;
    Drift::ExtraBackups.apply(&mut t.world.state());
    t.world.state().backups.remove(0);
    Drift::StaleBackup.apply(&mut t.world.state());
    assert_eq!(t.world.state().backups.len(), 2);
    t
}

#[tokio::test]
async fn deletes_made_due_by_a_new_backup_run_only_once_it_is_done() {
    let t = due_after_a_new_backup().await;
    let oldest = t.world.state().backups[0].id.clone();

    let report = t.apply(&t.pipeline).await;

    assert!(report.converged, "{report:#?}");
    let taken = t.position("barman.take_backup", "");
    let deleted = t.position("barman.delete_backup", &oldest);
    assert!(taken < deleted, "{}", t.journal_text());
}

#[tokio::test]
async fn a_failed_backup_stops_apply_before_any_delete() {
    let t = due_after_a_new_backup().await;
    let before = t.world.state().backups.clone();
    t.world.state().backup_fails = true;

    let report = t.apply(&t.pipeline).await;

    assert!(
        !t.called("barman.delete_backup"),
        "deleted after a failed backup: {}",
        t.journal_text()
    );
    assert_eq!(t.world.state().backups, before);
    assert_eq!(report.steps.len(), 1, "{report:#?}");
    assert_eq!(
        report.steps[0].planned.step,
        Step::Pipeline(PipelineStep::TakeBaseBackup)
    );
    assert_eq!(report.steps[0].outcome, StepOutcome::Failed);
}

#[tokio::test]
async fn nothing_starts_after_a_shutdown_during_a_step() {
    let t = Test::converged().await;
    Drift::StaleBackup.apply(&mut t.world.state());
    t.world.state().cancel_on = Some("barman.take_backup");

    let report = t.apply(&t.pipeline).await;

    let taken = t.position("barman.take_backup", "");
    let after: Vec<_> = t.world.journal()[taken + 1..]
        .iter()
        .filter(|c| !c.is_read())
        .cloned()
        .collect();
    assert!(after.is_empty(), "started after the shutdown: {after:?}");
    assert_eq!(report.steps.len(), 1, "{report:#?}");
}

#[tokio::test]
async fn nothing_starts_after_a_shutdown_before_apply() {
    let t = Test::converged().await;
    Drift::LostMarker.apply(&mut t.world.state());
    t.world.cancel.cancel();

    let mut reports = Vec::new();
    for resource in [&t.pipeline, &t.target] {
        reports.push(t.apply(resource).await);
    }
    let started: Vec<_> = t
        .world
        .journal()
        .into_iter()
        .filter(|c| !c.is_read())
        .collect();
    assert!(
        started.is_empty(),
        "started after the shutdown: {started:?}"
    );
    assert!(reports.iter().all(|r| r.steps.is_empty()), "{reports:#?}");
}
