//! Table-driven tests of the pure planner: WAL streaming and the starport's
//! mirrors, in the simulated world of `planner/world.rs`.

#[path = "planner/world.rs"]
mod world;

use world::*;

#[test]
fn a_mirror_follows_the_starport_once_it_holds_a_complete_generation() {
    use ConditionStatus::*;
    let no_copy = || {
        Observation::observed(StarportState::NoMetadata {
            reason: "no metadata.json".into(),
        })
    };
    // Converged starport, empty mirror: sync it.
    let world = mirror_holding(World::converged(), no_copy());
    let p = plan(&with_mirror(), &world.observed, &cx(NOW));
    assert_eq!(
        steps(&p),
        [PipelineStep::SyncMirror {
            mirror: "offsite".into(),
            generation: "g1".into()
        }]
    );
    let c = condition_of(&p, ConditionType::MirrorInSync);
    assert_eq!((c.0, c.1.as_str()), (False, "OutOfSync"), "{}", c.2);
    // In sync: nothing to do.
    let world = mirror_holding(
        World::converged(),
        Observation::observed(synced("g1", MACHINE)),
    );
    let p = plan(&with_mirror(), &world.observed, &cx(NOW));
    assert!(p.is_converged(), "{p:#?}");
    // The starport is behind: the mirror waits for it, never copies a stale or
    // half-synced starport.
    let world = mirror_holding(
        World::converged().starport(synced("g0", MACHINE)),
        Observation::observed(synced("g0", MACHINE)),
    );
    let p = plan(&with_mirror(), &world.observed, &cx(NOW));
    assert!(
        !steps(&p)
            .iter()
            .any(|s| matches!(s, PipelineStep::SyncMirror { .. }))
    );
    assert_eq!(
        condition_of(&p, ConditionType::MirrorInSync).1,
        "WaitingForStarport"
    );
    // Unreachable: Unknown, and the plan says what it waits for.
    let world = mirror_holding(
        World::converged(),
        Observation::Unavailable {
            reason: "ssh: connect to host backup.example.org port 22: Connection refused".into(),
        },
    );
    let p = plan(&with_mirror(), &world.observed, &cx(NOW));
    assert_eq!(condition_of(&p, ConditionType::MirrorInSync).0, Unknown);
    assert!(p.waiting_on.iter().any(|w| w.contains("offsite")));
    assert!(p.steps.is_empty());
}

#[test]
fn from_nothing_the_mirror_is_synced_last_replanning_after_each_step() {
    let mut world = mirror_holding(
        World::empty(),
        Observation::observed(StarportState::NoMetadata {
            reason: "no metadata.json".into(),
        }),
    );
    let mut executed = Vec::new();
    for _ in 0..10 {
        let p = plan(&with_mirror(), &world.observed, &cx(NOW));
        let Some(first) = p.steps.first() else {
            assert!(p.is_converged(), "{p:#?}");
            break;
        };
        world.apply(&first.step, t(NOW));
        executed.push(first.step.clone());
    }
    assert!(
        matches!(executed.last(), Some(PipelineStep::SyncMirror { .. })),
        "{executed:?}"
    );
    assert_eq!(
        executed.len(),
        4,
        "backup, recover, sync, mirror: {executed:?}"
    );
}

#[test]
fn wal_streaming_is_a_condition_only_when_the_spec_watches_it() {
    let world = World::converged();
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert!(
        plan.conditions
            .iter()
            .all(|c| c.kind != ConditionType::WalStreaming)
    );
    let world = World::converged().wal(streaming());
    let plan = reconciler::plan::plan(&watching_wal(false), &world.observed, &cx(NOW));
    assert_eq!(
        condition_of(&plan, ConditionType::WalStreaming).0,
        ConditionStatus::True
    );
    assert!(plan.is_converged(), "{plan:#?}");
}

#[test]
fn wal_streaming_table() {
    use ConditionStatus::*;
    let stopped = WalHealth {
        receive_wal_running: Some(failed("See the Barman log file for more details")),
        replication_slot: Some(failed(
            "slot 'montagu' not active: is 'receive-wal' running?",
        )),
        ..streaming()
    };
    let broken_slot = WalHealth {
        replication_slot: Some(failed("replication slot 'montagu' doesn't exist")),
        ..streaming()
    };
    // As barman 3.4 reports it: `postgresql` FAILED, `postgresql_streaming` absent.
    let primary_down = WalHealth {
        postgresql: Some(failed("")),
        postgresql_streaming: None,
        receive_wal_running: Some(failed("")),
        ..streaming()
    };
    // (name, health, opt-in to slot resets, status, reason, steps, waits)
    type Case = (
        &'static str,
        WalHealth,
        bool,
        ConditionStatus,
        &'static str,
        Vec<PipelineStep>,
        bool,
    );
    let cases: Vec<Case> = vec![
        (
            "streaming",
            streaming(),
            false,
            True,
            "Streaming",
            vec![],
            false,
        ),
        (
            "receive-wal stopped: cron starts it",
            stopped,
            false,
            False,
            "ReceiveWalStopped",
            vec![PipelineStep::RunBarmanCron],
            false,
        ),
        (
            "broken slot, no opt-in: wait",
            broken_slot.clone(),
            false,
            False,
            "SlotBroken",
            vec![],
            true,
        ),
        (
            "broken slot, opt-in: reset then cron",
            broken_slot,
            true,
            False,
            "SlotBroken",
            vec![
                PipelineStep::ResetReplicationSlot,
                PipelineStep::RunBarmanCron,
            ],
            false,
        ),
        (
            "primary down: nothing barman can do",
            primary_down,
            false,
            False,
            "PrimaryNotStreaming",
            vec![],
            true,
        ),
        (
            "missing slot keeps receive-wal down: the slot first, not cron forever",
            WalHealth {
                receive_wal_running: Some(failed("")),
                replication_slot: Some(failed("replication slot 'montagu' doesn't exist")),
                ..streaming()
            },
            true,
            False,
            "SlotBroken",
            vec![
                PipelineStep::ResetReplicationSlot,
                PipelineStep::RunBarmanCron,
            ],
            false,
        ),
        (
            "archiver errors: reported",
            WalHealth {
                archiver_errors: Some(failed("duplicates: 1")),
                ..streaming()
            },
            false,
            False,
            "ArchiverErrors",
            vec![],
            true,
        ),
    ];
    for (name, health, reset, status, reason, expected_steps, waits) in cases {
        let world = World::converged().wal(health);
        let plan = reconciler::plan::plan(&watching_wal(reset), &world.observed, &cx(NOW));
        let (got_status, got_reason, message) = condition_of(&plan, ConditionType::WalStreaming);
        assert_eq!(
            (got_status, got_reason.as_str()),
            (status, reason),
            "{name}: {message}"
        );
        assert_eq!(steps(&plan), expected_steps, "{name}");
        assert_eq!(
            !plan.waiting_on.is_empty(),
            waits,
            "{name}: {:?}",
            plan.waiting_on
        );
        if status != True {
            assert_eq!(
                condition_of(&plan, ConditionType::Ready).0,
                False,
                "{name}: Ready must not hold"
            );
        }
    }
}

#[test]
fn wal_repairs_come_before_a_backup_that_needs_wal() {
    let world = World::empty().wal(WalHealth {
        receive_wal_running: Some(failed("")),
        ..streaming()
    });
    let plan = reconciler::plan::plan(&watching_wal(false), &world.observed, &cx(NOW));
    assert_eq!(
        steps(&plan)[..2],
        [PipelineStep::RunBarmanCron, PipelineStep::TakeBaseBackup],
        "{plan:#?}"
    );
    let mut world = world;
    for planned in &plan.steps {
        world.apply(&planned.step, t(NOW));
    }
    let after = reconciler::plan::plan(&watching_wal(false), &world.observed, &cx(NOW));
    assert!(after.is_converged(), "{after:#?}");
}

#[test]
fn an_unreachable_mirror_holds_up_nothing_but_itself() {
    // Retention has work to do and the starport is in sync, so a reachable but
    // empty mirror would be synced too.
    let busy = || {
        World::converged().backups(vec![
            done("20261120T000000", "2026-11-20T01:00:00Z"),
            done("20261115T000000", "2026-11-15T01:00:00Z"),
            done("20261110T000000", "2026-11-10T01:00:00Z"),
            done("20261105T000000", "2026-11-05T01:00:00Z"),
        ])
    };
    let empty_mirror = mirror_holding(
        busy(),
        Observation::observed(StarportState::NoMetadata {
            reason: "no metadata.json".into(),
        }),
    );
    let p = plan(&with_mirror(), &empty_mirror.observed, &cx(NOW));
    assert!(
        steps(&p)
            .iter()
            .any(|s| matches!(s, PipelineStep::SyncMirror { .. })),
        "{p:#?}"
    );

    let unreachable = mirror_holding(
        busy(),
        Observation::Unavailable {
            reason: "ssh: connect to host backup.example.org port 22: Connection refused".into(),
        },
    );
    let p = plan(&with_mirror(), &unreachable.observed, &cx(NOW));
    let without_mirror = plan(&pipeline(), &busy().observed, &cx(NOW));
    assert!(
        !without_mirror.steps.is_empty(),
        "the backup side has work: {without_mirror:#?}"
    );
    assert_eq!(
        p.steps, without_mirror.steps,
        "the backup side goes on while the off-site host is down"
    );
    assert_eq!(
        condition_of(&p, ConditionType::MirrorInSync).0,
        ConditionStatus::Unknown
    );
    assert!(
        p.waiting_on.iter().any(|w| w.contains("offsite")),
        "{:?}",
        p.waiting_on
    );
}
