//! Table-driven tests of the pure planner: processes writing where a step would
//! (a killed reconciler's rsync or barman, an operator's rsync), in the simulated
//! world of `planner/world.rs`.

#[path = "planner/world.rs"]
mod world;

use world::*;

fn writer(pid: i32, program: &str, area: WriteArea, started_by: StartedBy) -> WritingProcess {
    let path = match area {
        WriteArea::Volume => "/srv/nightly/montagu_db_volume/.reconciler-staging-3-77",
        WriteArea::Starport => "/srv/starport/barman_to_starport/data/montagu_db_volume/",
    };
    WritingProcess {
        pid,
        start_ticks: 1234,
        started_at: t("2026-11-23T11:58:00Z"),
        program: program.to_string(),
        path: path.to_string(),
        area,
        container: None,
        started_by,
    }
}

fn dead_reconciler() -> StartedBy {
    StartedBy::Reconciler {
        pid: 77,
        alive: false,
    }
}

fn unmarked() -> VolumeState {
    VolumeState::Unmarked {
        reason: "an interrupted recovery left its staging directory".into(),
        in_use: false,
        foreign: false,
        stray_replay: None,
        users: vec![],
    }
}

/// Runs plan → apply until nothing is left to do (or 10 rounds).
fn converge(mut world: World) -> (World, Vec<PipelineStep>) {
    let mut done = Vec::new();
    for _ in 0..10 {
        let plan = plan(&pipeline(), &world.observed, &cx(NOW));
        let Some(first) = plan.steps.first() else {
            return (world, done);
        };
        world.apply(&first.step, t(NOW));
        done.push(first.step.clone());
    }
    panic!("no convergence: {done:?}");
}

#[test]
fn a_killed_reconcilers_recover_is_stopped_before_the_volume_is_recovered_again() {
    let rsync = writer(4242, "rsync", WriteArea::Volume, dead_reconciler());
    let world = World::converged()
        .volume_state(unmarked())
        .writer(rsync.clone());
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert_eq!(
        steps(&plan),
        vec![PipelineStep::StopOrphan {
            process: rsync.clone()
        }]
    );
    let reason = &plan.steps[0].reason;
    assert!(
        reason.contains(
            "rsync (pid 4242) writing into /srv/nightly/montagu_db_volume/.reconciler-staging-3-77"
        ) && reason.contains("reconciler pid 77, which no longer runs"),
        "{reason}"
    );
    let volume = plan.condition(ConditionType::VolumeFresh).unwrap();
    assert_eq!(volume.reason, "OrphanedProcess");
    assert!(
        volume.message.contains("rsync (pid 4242)"),
        "{}",
        volume.message
    );
    // Stopped, the next plan recovers and syncs as usual.
    let (_, done) = converge(world);
    assert_eq!(done[0], PipelineStep::StopOrphan { process: rsync });
    assert!(
        matches!(done[1], PipelineStep::RecoverVolume { .. }),
        "{done:?}"
    );
    assert!(
        matches!(done[2], PipelineStep::SyncStarport { .. }),
        "{done:?}"
    );
}

#[test]
fn a_killed_reconcilers_rsync_is_stopped_before_the_starport_is_synced_again() {
    let rsync = writer(5151, "rsync", WriteArea::Starport, dead_reconciler());
    let world = World::converged()
        .starport(StarportState::NoMetadata {
            reason: "no metadata.json".into(),
        })
        .writer(rsync.clone());
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert_eq!(
        steps(&plan),
        vec![PipelineStep::StopOrphan {
            process: rsync.clone()
        }]
    );
    assert_eq!(
        plan.condition(ConditionType::StarportInSync)
            .unwrap()
            .reason,
        "OrphanedProcess"
    );
    // The volume is fresh: a starport writer does not touch its condition.
    assert_eq!(
        status(&plan, ConditionType::VolumeFresh),
        ConditionStatus::True
    );
    let (_, done) = converge(world);
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(
        matches!(done[1], PipelineStep::SyncStarport { .. }),
        "{done:?}"
    );
}

#[test]
fn an_operators_rsync_is_waited_for_by_name_and_never_signalled() {
    let rsync = writer(6000, "rsync", WriteArea::Starport, StartedBy::Unknown);
    let world = World::converged()
        .starport(synced("g0", MACHINE))
        .writer(rsync);
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert!(steps(&plan).is_empty(), "{:?}", steps(&plan));
    assert_eq!(
        plan.waiting_on,
        vec![
            "rsync (pid 6000) writing into /srv/starport/barman_to_starport/data/montagu_db_volume/ (not started by a reconciler) to finish; the reconciler never writes where another process writes"
                .to_string()
        ]
    );
    let c = plan.condition(ConditionType::StarportInSync).unwrap();
    assert_eq!(c.reason, "ProcessWriting");
    assert_eq!(c.status, ConditionStatus::False);
}

#[test]
fn a_live_reconcilers_work_is_waited_for_not_stopped() {
    let barman = writer(
        7000,
        "barman",
        WriteArea::Volume,
        StartedBy::Reconciler {
            pid: 88,
            alive: true,
        },
    );
    let world = World::converged().volume_state(unmarked()).writer(barman);
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert!(steps(&plan).is_empty(), "{:?}", steps(&plan));
    assert!(
        plan.waiting_on[0].contains("started by reconciler pid 88, which still runs"),
        "{:?}",
        plan.waiting_on
    );
    assert_eq!(
        plan.condition(ConditionType::VolumeFresh).unwrap().reason,
        "ProcessWriting"
    );
}

#[test]
fn when_writers_cannot_be_listed_nothing_is_written_blind() {
    let mut world = World::converged().volume_state(unmarked());
    world.observed.writers = Some(Observation::Unavailable {
        reason: "python3: not found".into(),
    });
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert!(steps(&plan).is_empty(), "{:?}", steps(&plan));
    assert_eq!(
        plan.condition(ConditionType::VolumeFresh).unwrap().reason,
        "ProcessesUnknown"
    );
    assert!(
        plan.waiting_on[0].contains("to be listable (python3: not found)"),
        "{:?}",
        plan.waiting_on
    );
}

#[test]
fn a_reader_elsewhere_or_a_converged_pipeline_is_left_alone() {
    // Nothing is to be written: a process writing there is no reason to act.
    let world = World::converged().writer(writer(9, "rsync", WriteArea::Volume, dead_reconciler()));
    let plan = plan(&pipeline(), &world.observed, &cx(NOW));
    assert!(
        plan.steps.is_empty() && plan.waiting_on.is_empty(),
        "{plan:#?}"
    );
}
