//! Table-driven tests of the pure planner: base backups, retention and the start
//! window, in the simulated world of `planner/world.rs`.

#[path = "planner/world.rs"]
mod world;

use world::*;

#[test]
fn empty_world_takes_a_backup_then_recovers_then_syncs() {
    let plan = plan(&pipeline(), &World::empty().observed, &cx(NOW));
    assert_eq!(
        steps(&plan),
        vec![
            PipelineStep::TakeBaseBackup,
            PipelineStep::RecoverVolume {
                backup: BackupRef::NewBackup
            },
            PipelineStep::SyncStarport {
                generation: GenerationRef::FromRecovery
            },
        ]
    );
    assert_eq!(
        status(&plan, ConditionType::BaseBackupFresh),
        ConditionStatus::False
    );
    assert_eq!(
        plan.condition(ConditionType::BaseBackupFresh)
            .unwrap()
            .reason,
        "NoBackup"
    );
    assert_eq!(status(&plan, ConditionType::Ready), ConditionStatus::False);
    assert!(plan.steps.iter().all(|s| !s.reason.is_empty()));
}

#[test]
fn converged_world_plans_nothing_and_names_the_next_deadline() {
    let plan = plan(&pipeline(), &World::converged().observed, &cx(NOW));
    assert!(plan.is_converged(), "{plan:#?}");
    assert!(
        plan.conditions
            .iter()
            .all(|c| c.status == ConditionStatus::True)
    );
    assert_eq!(plan.conditions.len(), 5);
    let deadline = plan.next_deadline.expect("a deadline");
    // The volume (recovered 05:00) turns 24h old before the backup turns 30 days old.
    assert_eq!(deadline.at, t("2026-11-24T05:00:00Z"));
    assert!(deadline.what.contains("volume"), "{}", deadline.what);
}

#[test]
fn planning_at_a_later_instant_shows_future_drift() {
    let world = World::converged();
    let friday = plan(&pipeline(), &world.observed, &cx("2026-11-27T17:00:00Z"));
    assert_eq!(
        steps(&friday),
        vec![
            PipelineStep::RecoverVolume {
                backup: BackupRef::Existing("20261120T000000".into())
            },
            PipelineStep::SyncStarport {
                generation: GenerationRef::FromRecovery
            },
        ]
    );
    let in_a_month = plan(&pipeline(), &world.observed, &cx("2026-12-21T00:00:00Z"));
    assert_eq!(steps(&in_a_month)[0], PipelineStep::TakeBaseBackup);
    assert_eq!(
        in_a_month
            .condition(ConditionType::BaseBackupFresh)
            .unwrap()
            .reason,
        "Stale"
    );
}

#[test]
fn a_backup_beyond_keep_is_deleted_oldest_first() {
    let world = World::converged().backups(vec![
        done("20261120T000000", "2026-11-20T01:00:00Z"),
        done("20261101T000000", "2026-11-01T01:00:00Z"),
        done("20261001T000000", "2026-10-01T01:00:00Z"),
        done("20260901T000000", "2026-09-01T01:00:00Z"),
        done("20260801T000000", "2026-08-01T01:00:00Z"),
    ]);
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert_eq!(
        steps(&plan),
        vec![delete("20260801T000000"), delete("20260901T000000")]
    );
    assert_eq!(
        plan.condition(ConditionType::RetentionSatisfied)
            .unwrap()
            .reason,
        "ObsoleteBackups"
    );
}

#[test]
fn deletes_made_due_by_a_new_backup_come_after_it() {
    let world = World::converged()
        .backups(vec![
            done("20261001T000000", "2026-10-01T01:00:00Z"),
            done("20260901T000000", "2026-09-01T01:00:00Z"),
            done("20260801T000000", "2026-08-01T01:00:00Z"),
        ])
        .volume(marker("g1", "20261001T000000", "2026-11-23T05:00:00Z"));
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert_eq!(
        steps(&plan),
        vec![PipelineStep::TakeBaseBackup, delete("20260801T000000")]
    );
    assert!(
        plan.steps[1].reason.contains("once the new backup is DONE"),
        "{}",
        plan.steps[1].reason
    );
    // Retention holds today; it is the new backup that will make one obsolete.
    assert_eq!(
        status(&plan, ConditionType::RetentionSatisfied),
        ConditionStatus::True
    );
}

#[test]
fn failed_backups_are_deleted() {
    let world = World::converged().backups(vec![
        with_status("20261121T000000", BackupStatus::Failed),
        done("20261120T000000", "2026-11-20T01:00:00Z"),
    ]);
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert_eq!(steps(&plan), vec![delete("20261121T000000")]);
    assert_eq!(
        plan.condition(ConditionType::RetentionSatisfied)
            .unwrap()
            .reason,
        "FailedBackups"
    );
}

#[test]
fn a_running_backup_means_wait_not_a_second_backup_nor_deletes() {
    let world = World::converged().backups(vec![
        with_status("20261123T110000", BackupStatus::Started),
        with_status("20261122T000000", BackupStatus::Failed),
        done("20261001T000000", "2026-10-01T01:00:00Z"),
    ]);
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert!(!steps(&plan).contains(&PipelineStep::TakeBaseBackup));
    assert!(
        !steps(&plan)
            .iter()
            .any(|s| matches!(s, PipelineStep::DeleteBackup { .. }))
    );
    assert!(
        plan.waiting_on
            .iter()
            .any(|w| w.contains("20261123T110000")),
        "{:?}",
        plan.waiting_on
    );
}

#[test]
fn barman_unavailable_is_unknown_and_touches_nothing_of_barmans() {
    let world = World::converged().barman_down();
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert!(steps(&plan).is_empty());
    assert_eq!(
        status(&plan, ConditionType::BaseBackupFresh),
        ConditionStatus::Unknown
    );
    assert_eq!(
        status(&plan, ConditionType::RetentionSatisfied),
        ConditionStatus::Unknown
    );
    assert_eq!(
        status(&plan, ConditionType::VolumeFresh),
        ConditionStatus::True
    );
    assert_eq!(
        status(&plan, ConditionType::Ready),
        ConditionStatus::Unknown
    );
    // A stale volume can't be recovered without barman either.
    let later = plan_at(&world, "2026-11-25T00:00:00Z");
    assert!(steps(&later).is_empty(), "{:?}", steps(&later));
}

#[test]
fn a_closed_start_window_waits_until_it_opens() {
    let windowed = pipeline_with(
        "{keep: 3}",
        ", startWindow: {start: \"00:00\", end: \"06:00\", timeZone: Europe/London}",
    );
    let world = World::empty();
    let closed = plan(&windowed, &world.observed, &cx("2026-11-23T12:00:00Z"));
    assert!(!steps(&closed).contains(&PipelineStep::TakeBaseBackup));
    assert!(closed.waiting_on.iter().any(|w| w.contains("start window")));
    assert_eq!(closed.next_deadline.unwrap().at, t("2026-11-24T00:00:00Z"));
    let open = plan(&windowed, &world.observed, &cx("2026-11-24T03:00:00Z"));
    assert_eq!(steps(&open)[0], PipelineStep::TakeBaseBackup);
    // In summer, London's midnight is 23:00 UTC.
    let summer = plan(&windowed, &world.observed, &cx("2026-07-01T12:00:00Z"));
    assert_eq!(summer.next_deadline.unwrap().at, t("2026-07-01T23:00:00Z"));
}

#[test]
fn a_backup_from_the_future_deletes_nothing_and_waits() {
    let world = World::converged().backups(vec![
        done("20261201T000000", "2026-12-01T00:00:00Z"),
        done("20261120T000000", "2026-11-20T01:00:00Z"),
        done("20261101T000000", "2026-11-01T01:00:00Z"),
        done("20261001T000000", "2026-10-01T01:00:00Z"),
        done("20260901T000000", "2026-09-01T01:00:00Z"),
    ]);
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert!(steps(&plan).is_empty(), "{:?}", steps(&plan));
    assert_eq!(
        plan.condition(ConditionType::BaseBackupFresh)
            .unwrap()
            .reason,
        "BackupFromTheFuture"
    );
    assert_eq!(
        status(&plan, ConditionType::RetentionSatisfied),
        ConditionStatus::Unknown
    );
}

#[test]
fn dates_from_the_future_say_how_far_ahead_they_are() {
    // The marker says the recovery finished 2d 1h after NOW.
    let world = World::converged().volume(marker("g1", "20261120T000000", "2026-11-25T13:00:00Z"));
    let planned = plan(&pipeline(), &world.observed, &cx(NOW));
    let c = planned.condition(ConditionType::VolumeFresh).unwrap();
    assert_eq!(c.reason, "MarkerFromTheFuture");
    assert!(
        c.message.contains("the recovery finished 2d 1h from now;"),
        "{}",
        c.message
    );

    let world = World::converged().backups(vec![done("20261125T000000", "2026-11-25T14:30:00Z")]);
    let planned = plan(&pipeline(), &world.observed, &cx(NOW));
    let c = planned.condition(ConditionType::BaseBackupFresh).unwrap();
    assert_eq!(c.reason, "BackupFromTheFuture");
    assert!(c.message.contains("ends 2d 2h from now;"), "{}", c.message);
}

#[test]
fn a_recovery_window_keeps_what_recovery_to_its_start_needs() {
    let windowed = pipeline_with("{recoveryWindow: 3 months, minimumRedundancy: 1}", "");
    let world = World::converged().backups(vec![
        done("20261120T000000", "2026-11-20T01:00:00Z"),
        done("20260901T000000", "2026-09-01T01:00:00Z"), // inside (window starts 2026-08-23)
        done("20260801T000000", "2026-08-01T01:00:00Z"), // needed: recovery to 08-23 starts here
        done("20260701T000000", "2026-07-01T01:00:00Z"), // obsolete
        done("20260601T000000", "2026-06-01T01:00:00Z"), // obsolete
    ]);
    let plan = plan(&windowed, &world.observed, &cx(NOW));
    assert_eq!(
        steps(&plan),
        vec![delete("20260601T000000"), delete("20260701T000000")]
    );
    // When 2026-09-01 leaves the window, 2026-08-01 becomes obsolete.
    let deadlines = reconciler::plan::retention::obsolete(
        &world.observed.barman.value().unwrap().backups,
        &windowed.spec.retention,
        t(NOW),
    );
    assert_eq!(deadlines.next_change, Some(t("2026-12-01T01:00:00Z")));
}

#[test]
fn a_recovery_window_never_deletes_below_the_minimum_redundancy() {
    let windowed = pipeline_with("{recoveryWindow: 3 months, minimumRedundancy: 3}", "");
    // Only the newest backup is inside the window (it starts 2026-08-23); the window
    // alone needs it and the newest one before it, the floor one more.
    let backups = vec![
        done("20261120T000000", "2026-11-20T01:00:00Z"),
        done("20260801T000000", "2026-08-01T01:00:00Z"),
        done("20260701T000000", "2026-07-01T01:00:00Z"),
        done("20260601T000000", "2026-06-01T01:00:00Z"),
        done("20260501T000000", "2026-05-01T01:00:00Z"),
    ];
    let world = World::converged().backups(backups.clone());
    let plan = plan(&windowed, &world.observed, &cx(NOW));
    let deleted: Vec<PipelineStep> = steps(&plan)
        .into_iter()
        .filter(|s| matches!(s, PipelineStep::DeleteBackup { .. }))
        .collect();
    assert_eq!(
        deleted,
        vec![delete("20260501T000000"), delete("20260601T000000")],
        "the three newest DONE backups stay: {plan:#?}"
    );
    assert!(backups.len() - deleted.len() >= 3);
}

#[test]
fn the_floor_and_the_newest_backup_are_never_deleted() {
    let backups: Vec<Backup> = (1..=6)
        .map(|i| {
            done(
                &format!("2026110{i}T000000"),
                &format!("2026-11-0{i}T01:00:00Z"),
            )
        })
        .rev()
        .collect();
    for keep in 1..=6u32 {
        for floor in 1..=keep {
            for count in 1..=6usize {
                let case = format!("keep {keep} floor {floor} count {count}");
                let spec =
                    pipeline_with(&format!("{{keep: {keep}, minimumRedundancy: {floor}}}"), "");
                let world = World::converged().backups(backups[..count].to_vec());
                let deletes = |plan: &Plan<PipelineStep>| -> Vec<usize> {
                    plan.steps
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| matches!(s.step, PipelineStep::DeleteBackup { .. }))
                        .map(|(i, _)| i)
                        .collect()
                };
                // Backups fresh: the newest and the floor survive, whatever keep says.
                let fresh = plan(&spec, &world.observed, &cx(NOW));
                assert!(
                    !steps(&fresh).contains(&delete(&backups[0].id)),
                    "newest deleted: {case}"
                );
                assert!(
                    count - deletes(&fresh).len() >= (keep as usize).min(count),
                    "{case}"
                );
                // Backups stale: a new backup comes; what is obsolete today may go before
                // it, the current newest only after it (once it is DONE).
                let stale = plan(&spec, &world.observed, &cx("2026-12-25T00:00:00Z"));
                let take = steps(&stale)
                    .iter()
                    .position(|s| *s == PipelineStep::TakeBaseBackup)
                    .expect(&case);
                let before: Vec<usize> =
                    deletes(&stale).into_iter().filter(|i| *i < take).collect();
                assert!(
                    !steps(&stale)[..take].contains(&delete(&backups[0].id)),
                    "newest deleted before the new backup: {case}"
                );
                assert!(
                    count - before.len() >= (floor as usize).min(count),
                    "below floor before the new backup: {case}"
                );
                let remaining = count + 1 - deletes(&stale).len();
                assert!(
                    remaining >= (floor as usize).min(count + 1),
                    "below floor: {case}"
                );
            }
        }
    }
}

#[test]
fn a_done_backup_without_end_time_is_never_deleted_nor_taken_for_the_oldest() {
    let mut newest = done("20261120T000000", "2026-11-20T01:00:00Z");
    newest.end_time = None;
    let world = World::converged().backups(vec![
        done("20261101T000000", "2026-11-01T01:00:00Z"),
        newest,
    ]);
    let spec = pipeline_with("{keep: 1, minimumRedundancy: 1}", "");
    let plan = plan(&spec, &world.observed, &cx(NOW));
    assert!(
        !steps(&plan).contains(&delete("20261120T000000")),
        "{:?}",
        steps(&plan)
    );
    assert_eq!(
        plan.condition(ConditionType::BaseBackupFresh)
            .unwrap()
            .reason,
        "EndTimeUnknown"
    );
}

#[test]
fn failed_and_already_obsolete_backups_are_deleted_before_a_new_backup() {
    let world = World::converged().backups(vec![
        with_status("20261122T000000", BackupStatus::Failed),
        done("20261001T000000", "2026-10-01T01:00:00Z"),
        done("20260901T000000", "2026-09-01T01:00:00Z"),
        done("20260801T000000", "2026-08-01T01:00:00Z"),
        done("20260701T000000", "2026-07-01T01:00:00Z"),
    ]);
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert_eq!(
        steps(&plan)[..4],
        [
            delete("20261122T000000"),
            delete("20260701T000000"),
            PipelineStep::TakeBaseBackup,
            delete("20260801T000000")
        ]
    );
}

#[test]
fn planning_is_deterministic() {
    for world in [
        World::empty(),
        World::converged(),
        World::converged().barman_down(),
    ] {
        assert_eq!(plan_at(&world, NOW), plan_at(&world, NOW));
    }
}
