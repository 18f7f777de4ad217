//! Convergence: applying a plan's steps to the simulated world of
//! `planner/world.rs` (as the executor would) yields a converged plan, all at
//! once or one step at a time as `apply` runs.

#[path = "planner/world.rs"]
mod world;

use world::*;

/// Every scenario above, driven to convergence: apply all the steps of a plan,
/// plan again: nothing left to do.
#[test]
fn applying_a_plan_converges_every_actionable_scenario() {
    let scenarios = vec![
        ("empty", World::empty(), NOW),
        ("converged", World::converged(), NOW),
        (
            "stale everything",
            World::converged(),
            "2026-12-25T00:00:00Z",
        ),
        ("volume stale", World::converged(), "2026-11-24T06:00:00Z"),
        (
            "extra backups",
            World::converged().backups(vec![
                done("20261120T000000", "2026-11-20T01:00:00Z"),
                done("20261101T000000", "2026-11-01T01:00:00Z"),
                done("20261001T000000", "2026-10-01T01:00:00Z"),
                done("20260901T000000", "2026-09-01T01:00:00Z"),
            ]),
            NOW,
        ),
        (
            "failed backup",
            World::converged().backups(vec![
                with_status("20261121T000000", BackupStatus::Failed),
                done("20261120T000000", "2026-11-20T01:00:00Z"),
            ]),
            NOW,
        ),
        (
            "lost marker",
            World::converged().volume_state(VolumeState::Unmarked {
                reason: "x".into(),
                in_use: false,
                foreign: false,
                stray_replay: None,
                users: vec![],
            }),
            NOW,
        ),
        (
            "stale starport",
            World::converged().starport(synced("g0", MACHINE)),
            NOW,
        ),
    ];
    for (name, mut world, now) in scenarios {
        let context = cx(now);
        let first = plan(&pipeline(), &world.observed, &context);
        for planned in &first.steps {
            world.apply(&planned.step, context.now);
        }
        let after = plan(&pipeline(), &world.observed, &context);
        assert!(
            after.is_converged(),
            "{name}: not converged after applying {:?}: {after:#?}",
            steps(&first)
        );
    }
}

/// The way `apply` really runs: one step, then observe and plan again.
#[test]
fn step_by_step_replanning_converges_in_as_many_steps_as_planned() {
    let mut world = World::converged().backups(vec![
        done("20261001T000000", "2026-10-01T01:00:00Z"),
        done("20260901T000000", "2026-09-01T01:00:00Z"),
        done("20260801T000000", "2026-08-01T01:00:00Z"),
    ]);
    let mut now = t("2026-11-24T12:00:00Z");
    let planned = plan(&pipeline(), &world.observed, &cx("2026-11-24T12:00:00Z"))
        .steps
        .len();
    let mut executed = 0;
    loop {
        let p = plan(
            &pipeline(),
            &world.observed,
            &PlanContext {
                now,
                local_time_zone: TimeZone::UTC,
            },
        );
        let Some(first) = p.steps.first() else {
            assert!(p.is_converged(), "{p:#?}");
            break;
        };
        world.apply(&first.step, now);
        executed += 1;
        now = now.checked_add(1.minute()).unwrap();
        assert!(executed <= 10, "does not converge");
    }
    assert_eq!(executed, planned);
}
