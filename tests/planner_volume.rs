//! Table-driven tests of the pure planner: the recovered volume and the starport,
//! in the simulated world of `planner/world.rs`.

#[path = "planner/world.rs"]
mod world;

use world::*;

#[test]
fn a_lost_marker_recovers_the_newest_backup_and_resyncs() {
    let world = World::converged().volume_state(VolumeState::Unmarked {
        reason: "no marker".into(),
        in_use: false,
        foreign: false,
        stray_replay: None,
        users: vec![],
    });
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert_eq!(
        steps(&plan),
        vec![
            PipelineStep::RecoverVolume {
                backup: BackupRef::Existing("20261120T000000".into())
            },
            PipelineStep::SyncStarport {
                generation: GenerationRef::FromRecovery
            },
        ]
    );
    assert_eq!(
        plan.condition(ConditionType::VolumeFresh).unwrap().reason,
        "NoValidMarker"
    );
}

#[test]
fn a_stale_starport_is_synced_from_the_current_generation() {
    let world = World::converged().starport(synced("g0", MACHINE));
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert_eq!(
        steps(&plan),
        vec![PipelineStep::SyncStarport {
            generation: GenerationRef::Existing("g1".into())
        }]
    );
    let no_meta = World::converged().starport(StarportState::NoMetadata {
        reason: "no metadata.json".into(),
    });
    assert_eq!(steps(&plan_at(&no_meta, NOW)).len(), 1);
}

#[test]
fn a_starport_written_by_another_host_is_left_alone() {
    let world = World::converged().starport(synced("g0", "machine-b"));
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert!(steps(&plan).is_empty());
    assert_eq!(
        plan.condition(ConditionType::StarportInSync)
            .unwrap()
            .reason,
        "OwnedByAnotherHost"
    );
    assert!(plan.waiting_on[0].contains("machine-b"));
}

#[test]
fn a_volume_in_use_or_holding_foreign_files_is_never_overwritten() {
    for (state, reason) in [
        (
            VolumeState::Unmarked {
                reason: "no marker".into(),
                in_use: true,
                foreign: false,
                stray_replay: None,
                users: vec![],
            },
            "NoValidMarker",
        ),
        (
            VolumeState::Unmarked {
                reason: "foreign".into(),
                in_use: false,
                foreign: true,
                stray_replay: None,
                users: vec![],
            },
            "ForeignData",
        ),
    ] {
        let world = World::converged().volume_state(state);
        let plan = plan(&pipeline(), &world.observed, &cx(NOW));
        assert!(
            !steps(&plan)
                .iter()
                .any(|s| matches!(s, PipelineStep::RecoverVolume { .. })),
            "{reason}"
        );
        assert_eq!(
            plan.condition(ConditionType::VolumeFresh).unwrap().reason,
            reason
        );
        assert!(!plan.waiting_on.is_empty());
    }
}

/// The converged pipeline with its volume a Docker named volume.
fn docker_volume_pipeline() -> BackupPipeline {
    let mut p = pipeline();
    p.spec.recovered_volume.path = None;
    p.spec.recovered_volume.docker_volume =
        Some(serde_saphyr::from_str("montagu_db_volume").expect("a volume name"));
    p
}

fn container(name: &str, read_write: bool) -> VolumeUser {
    VolumeUser::Container {
        name: name.to_string(),
        read_write,
    }
}

#[test]
fn who_uses_the_volume_is_named_and_only_a_writer_makes_it_stale() {
    let pipeline = docker_volume_pipeline();
    let fresh = marker("g1", "20261120T000000", "2026-11-23T05:00:00Z");
    let stale = marker("g1", "20261120T000000", "2026-11-21T05:00:00Z");
    let on_volume = |marker: &VolumeMarker, users: Vec<VolumeUser>| {
        World::converged().volume_state(VolumeState::Marked {
            marker: marker.clone(),
            in_use: users.iter().any(VolumeUser::can_write),
            users,
        })
    };
    // A container mounting it read-write: in use, named, waited for; never recovered.
    let world = on_volume(&fresh, vec![container("consumer-1", true)]);
    let planned = plan(&pipeline, &world.observed, &cx(NOW));
    let c = planned.condition(ConditionType::VolumeFresh).unwrap();
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::False, "VolumeInUse")
    );
    assert!(
        c.message.starts_with(
            "container consumer-1 mounts Docker volume montagu_db_volume read-write, so"
        ),
        "{}",
        c.message
    );
    assert!(!c.message.contains("postmaster.pid"), "{}", c.message);
    assert!(steps(&planned).is_empty(), "{:?}", steps(&planned));
    assert!(
        planned.waiting_on.iter().any(|w| w.starts_with("container consumer-1 to stop (container consumer-1 mounts Docker volume montagu_db_volume read-write)")),
        "{:?}",
        planned.waiting_on
    );
    assert_eq!(
        status(&planned, ConditionType::Ready),
        ConditionStatus::False
    );

    // Read-only: it cannot change the data, so a fresh volume stays fresh.
    let world = on_volume(&fresh, vec![container("reader", false)]);
    let planned = plan(&pipeline, &world.observed, &cx(NOW));
    assert_eq!(
        status(&planned, ConditionType::VolumeFresh),
        ConditionStatus::True
    );
    assert_eq!(
        status(&planned, ConditionType::Ready),
        ConditionStatus::True
    );
    assert!(steps(&planned).is_empty());
    assert!(planned.waiting_on.is_empty(), "{:?}", planned.waiting_on);

    // ...but a stale one is not emptied from under it: the recovery waits, naming it.
    let world = on_volume(&stale, vec![container("reader", false)]);
    let planned = plan(&pipeline, &world.observed, &cx(NOW));
    let c = planned.condition(ConditionType::VolumeFresh).unwrap();
    assert_eq!(c.reason, "Stale");
    assert!(
        !steps(&planned)
            .iter()
            .any(|s| matches!(s, PipelineStep::RecoverVolume { .. })),
        "{:?}",
        steps(&planned)
    );
    assert!(
        planned.waiting_on.iter().any(
            |w| w.contains("container reader mounts Docker volume montagu_db_volume read-only")
        ),
        "{:?}",
        planned.waiting_on
    );

    // A live postgres on a directory is named by its pid.
    let world = World::converged().volume_state(VolumeState::Marked {
        marker: fresh.clone(),
        in_use: true,
        users: vec![VolumeUser::Postgres { pid: Some(4242) }],
    });
    let planned = plan(
        &pipeline_with("{keep: 3, minimumRedundancy: 1}", ""),
        &world.observed,
        &cx(NOW),
    );
    let c = planned.condition(ConditionType::VolumeFresh).unwrap();
    assert_eq!(c.reason, "VolumeInUse");
    assert!(
        c.message.starts_with(
            "a postgres (pid 4242) runs on /srv/nightly/montagu_db_volume (postmaster.pid)"
        ),
        "{}",
        c.message
    );
}

#[test]
fn the_volume_observation_is_camel_case_and_old_records_still_read() {
    let state = VolumeState::Marked {
        marker: marker("g1", "20261120T000000", "2026-11-23T05:00:00Z"),
        in_use: true,
        users: vec![container("consumer-1", true)],
    };
    let json = serde_json::to_value(&state).unwrap();
    assert_eq!(json["inUse"], true, "{json}");
    assert!(json.get("in_use").is_none(), "{json}");
    assert_eq!(
        json["users"][0],
        serde_json::json!({"kind": "container", "name": "consumer-1", "readWrite": true})
    );
    // A status file written before: snake_case, no users.
    let old: VolumeState = serde_json::from_value(serde_json::json!({
        "state": "unmarked", "reason": "no marker", "in_use": true,
        "stray_replay": {"pid": 42}
    }))
    .unwrap();
    assert_eq!(
        old,
        VolumeState::Unmarked {
            reason: "no marker".into(),
            in_use: true,
            foreign: false,
            stray_replay: Some(StrayReplay::Process { pid: 42 }),
            users: vec![],
        }
    );
}

#[test]
fn a_replay_left_running_by_a_killed_run_is_stopped_then_redone() {
    let world = World::converged().volume_state(VolumeState::Unmarked {
        reason: "an interrupted recovery left its staging directory".into(),
        in_use: true,
        foreign: false,
        stray_replay: Some(StrayReplay::Process { pid: 4242 }),
        users: vec![],
    });
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert_eq!(
        steps(&plan),
        vec![
            PipelineStep::StopStrayReplay {
                replay: StrayReplay::Process { pid: 4242 },
            },
            PipelineStep::RecoverVolume {
                backup: BackupRef::Existing("20261120T000000".into())
            },
            PipelineStep::SyncStarport {
                generation: GenerationRef::FromRecovery
            },
        ]
    );
}

#[test]
fn a_volume_a_postgres_runs_on_is_neither_fresh_nor_copied() {
    let world = World::converged()
        .volume_state(VolumeState::Marked {
            marker: marker("g1", "20261120T000000", "2026-11-23T05:00:00Z"),
            in_use: true,
            users: vec![],
        })
        .starport(synced("g0", MACHINE));
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert!(steps(&plan).is_empty(), "{:?}", steps(&plan));
    assert_eq!(
        plan.condition(ConditionType::VolumeFresh).unwrap().reason,
        "VolumeInUse"
    );
}

#[test]
fn a_host_without_machine_id_never_takes_over_a_guarded_starport() {
    let mut world = World::converged().starport(synced("g0", MACHINE));
    world.observed.machine_id = None;
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert!(steps(&plan).is_empty());
    assert_eq!(
        plan.condition(ConditionType::StarportInSync)
            .unwrap()
            .reason,
        "OwnedByAnotherHost"
    );
}

/// A day after the last refresh, on the same backup: the volume was left as a
/// standby at rest, so only the WAL since is replayed, and the reason says so.
#[test]
fn a_stale_standby_volume_of_the_newest_backup_catches_up() {
    let mut world = World::converged().volume(standby_marker(
        "g1",
        "20261120T000000",
        "2026-11-22T05:00:00Z",
        "000000010000000000000045",
    ));
    let plan = plan_at(&world, NOW);
    assert_eq!(
        steps(&plan),
        vec![
            PipelineStep::CatchUpVolume {
                backup_id: "20261120T000000".into(),
                after_segment: "000000010000000000000045".into(),
                timeline: 1,
            },
            PipelineStep::SyncStarport {
                generation: GenerationRef::FromRecovery
            },
        ]
    );
    let reason = &plan.steps[0].reason;
    assert!(
        reason.starts_with(
            "catch up: replay WAL from 0/3000000 (after segment 000000010000000000000045) on the volume recovered from backup 20261120T000000"
        ),
        "{reason}"
    );
    // It converges: caught up, then synced, then nothing to do.
    for step in steps(&plan) {
        world.apply(&step, t(NOW));
        let again = plan_at(&world, NOW);
        if steps(&again).is_empty() {
            return;
        }
    }
    assert!(steps(&plan_at(&world, NOW)).is_empty());
}

/// A new DONE backup is the restore drill: it is recovered in full, never caught
/// up to, even though the volume could catch up on its own backup.
#[test]
fn a_new_done_backup_makes_the_refresh_a_full_recovery() {
    let world = World::converged()
        .backups(vec![
            done("20261120T000000", "2026-11-20T01:00:00Z"),
            done("20261122T000000", "2026-11-22T01:00:00Z"),
        ])
        .volume(standby_marker(
            "g1",
            "20261120T000000",
            "2026-11-22T05:00:00Z",
            "000000010000000000000045",
        ));
    let plan = plan_at(&world, NOW);
    assert_eq!(
        steps(&plan)[0],
        PipelineStep::RecoverVolume {
            backup: BackupRef::Existing("20261122T000000".into())
        }
    );
    let reason = &plan.steps[0].reason;
    assert!(
        reason.starts_with(
            "full recovery: backup 20261122T000000 (DONE at 2026-11-22T01:00:00Z) is newer than the volume's 20261120T000000 (restore drill)"
        ),
        "{reason}"
    );
}

/// A marker written before catch-up existed (no `standby`) belongs to a volume
/// that was promoted at its end: it can only be recovered in full.
#[test]
fn an_old_marker_without_standby_state_means_a_full_recovery() {
    let old_json = r#"{"generation":"g1","backupId":"20261120T000000","recoveredAt":"2026-11-22T05:00:00Z","replayedToLsn":"0/3000000","pipeline":"montagu"}"#;
    let old: VolumeMarker = serde_json::from_str(old_json).expect("an old marker reads");
    assert_eq!(old.standby, None);
    let world = World::converged().volume(old);
    let plan = plan_at(&world, NOW);
    assert_eq!(
        steps(&plan)[0],
        PipelineStep::RecoverVolume {
            backup: BackupRef::Existing("20261120T000000".into())
        }
    );
    assert!(
        plan.steps[0]
            .reason
            .contains("was not left as a standby at rest"),
        "{}",
        plan.steps[0].reason
    );
}

/// An unmarked volume (a catch-up interrupted after it removed the marker, or
/// one that found a new timeline) is recovered in full, never caught up.
#[test]
fn an_unmarked_volume_is_recovered_in_full_not_caught_up() {
    let world = World::converged().volume_state(VolumeState::Unmarked {
        reason: "no marker".into(),
        in_use: false,
        foreign: false,
        stray_replay: None,
        users: vec![],
    });
    let plan = plan_at(&world, NOW);
    assert!(
        plan.steps[0]
            .reason
            .starts_with("full recovery: the volume holds no valid marker"),
        "{}",
        plan.steps[0].reason
    );
}
