//! Table-driven tests of the pure planner for the `RestoreTarget` kind, and their
//! convergence, in the simulated world of `planner/world.rs`.

#[path = "planner/world.rs"]
mod world;

use world::*;

mod restore_target {
    use super::*;
    use reconciler::observed::{
        ConsumerState, RestoreMarker, RestoreObserved, RestoreState, RestoreVolumeState,
    };
    use reconciler::plan::plan_restore;
    use reconciler::spec::RestoreTarget;

    const NOW: &str = "2026-11-24T12:00:00Z";

    fn target(stop_for_restore: bool) -> RestoreTarget {
        serde_saphyr::from_str(&format!(
            r#"apiVersion: reconciler.montagu/v1alpha1
kind: RestoreTarget
metadata: {{name: science}}
spec:
  source: {{root: /srv/starport, target: barman_to_starport, volumeName: montagu_db_volume}}
  volume: {{dockerVolume: montagu_db_volume}}
  maxAge: 48h
  consumers: {{containers: [montagu-db], stopForRestore: {stop_for_restore}}}
"#
        ))
        .expect("test restore target parses")
    }

    fn published(generation: &str, recovered_at: &str) -> Observation<StarportState> {
        Observation::observed(StarportState::Synced {
            metadata: StarportMetadata {
                last_backup: "2026-11-24T06:00:00+00:00".to_string(),
                instance_guid: Some(MACHINE.to_string()),
                generation: Some(generation.to_string()),
                backup_id: Some("20261124T010000".to_string()),
                recovered_at: Some(t(recovered_at)),
            },
        })
    }

    /// Generation `gN` was recovered at 05:00 on November 22+N: g2 is the newest
    /// the starport offers by default.
    fn recovered(generation: &str) -> Timestamp {
        let n: i64 = generation[1..].parse().expect("generations are named gN");
        t("2026-11-22T05:00:00Z") + jiff::SignedDuration::from_hours(24 * n)
    }

    fn restored(generation: &str, to_start: &[&str]) -> RestoreMarker {
        RestoreMarker {
            state: RestoreState::Restored,
            generation: generation.to_string(),
            recovered_at: Some(recovered(generation)),
            restored_at: Some(t("2026-11-24T07:00:00Z")),
            consumers_to_start: to_start.iter().map(|s| s.to_string()).collect(),
            target: "science".to_string(),
        }
    }

    fn volume(marker: Option<RestoreMarker>, used_by: &[&str]) -> Observation<RestoreVolumeState> {
        Observation::observed(RestoreVolumeState::Present {
            no_marker_reason: marker.is_none().then(|| "no marker".to_string()),
            marker,
            foreign: false,
            used_by: used_by.iter().map(|s| s.to_string()).collect(),
            postmaster_running: false,
        })
    }

    fn consumer(state: Option<&str>) -> Observation<Vec<ConsumerState>> {
        Observation::observed(vec![ConsumerState {
            container: "montagu-db".to_string(),
            state: state.map(String::from),
        }])
    }

    fn world(
        volume: Observation<RestoreVolumeState>,
        consumers: Observation<Vec<ConsumerState>>,
    ) -> RestoreObserved {
        RestoreObserved {
            source: published("g2", "2026-11-24T05:00:00Z"),
            volume,
            consumers,
        }
    }

    fn restore(generation: &str, stop: &[&str]) -> RestoreStep {
        RestoreStep::RestoreVolume {
            generation: generation.to_string(),
            stop_consumers: stop.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Applies a step to the observed world as the executor would.
    fn apply(o: &mut RestoreObserved, step: &RestoreStep) {
        let to_start = match o.volume.value() {
            Some(RestoreVolumeState::Present {
                marker: Some(m), ..
            }) => m.consumers_to_start.clone(),
            _ => Vec::new(),
        };
        let consumers = match &mut o.consumers {
            Observation::Observed { value } => value,
            Observation::Unavailable { .. } => panic!("acted without seeing the consumers"),
        };
        match step {
            RestoreStep::RestoreVolume {
                generation,
                stop_consumers,
            } => {
                let mut to_start = to_start;
                for c in consumers.iter_mut() {
                    if stop_consumers.contains(&c.container) {
                        c.state = Some("exited".into());
                        to_start.push(c.container.clone());
                    }
                }
                assert!(
                    !consumers.iter().any(ConsumerState::is_running),
                    "restored under a running consumer"
                );
                let mut marker = restored(generation, &[]);
                marker.consumers_to_start = to_start;
                o.volume = volume(Some(marker), &[]);
            }
            RestoreStep::StartConsumers { containers } => {
                for c in consumers.iter_mut() {
                    if containers.contains(&c.container) {
                        c.state = Some("running".into());
                    }
                }
                if let Observation::Observed {
                    value:
                        RestoreVolumeState::Present {
                            marker: Some(m), ..
                        },
                } = &mut o.volume
                {
                    m.consumers_to_start.clear();
                }
            }
        }
    }

    #[test]
    fn a_new_consumer_volume_is_restored_from_the_complete_copy() {
        let o = world(
            Observation::observed(RestoreVolumeState::Missing),
            consumer(None),
        );
        let plan = plan_restore(&target(false), &o, &cx(NOW));
        assert_eq!(steps(&plan), vec![restore("g2", &[])]);
        assert_eq!(
            status(&plan, ConditionType::SourceComplete),
            ConditionStatus::True
        );
        let (s, reason, _) = condition_of(&plan, ConditionType::VolumeRestored);
        assert_eq!(
            (s, reason.as_str()),
            (ConditionStatus::False, "VolumeMissing")
        );
        assert_eq!(
            plan.next_deadline.as_ref().map(|d| d.at),
            Some(t("2026-11-26T05:00:00Z")),
            "the source turns stale 48h after its recovery"
        );
    }

    #[test]
    fn a_half_synced_starport_is_never_restored() {
        let mut o = world(
            volume(Some(restored("g1", &[])), &[]),
            consumer(Some("running")),
        );
        o.source = Observation::observed(StarportState::NoMetadata {
            reason: "no metadata.json".into(),
        });
        let plan = plan_restore(&target(true), &o, &cx(NOW));
        assert!(plan.steps.is_empty(), "{:#?}", plan.steps);
        let (s, reason, _) = condition_of(&plan, ConditionType::SourceComplete);
        assert_eq!(
            (s, reason.as_str()),
            (ConditionStatus::False, "NoCompleteCopy")
        );
        assert!(
            plan.waiting_on.iter().any(|w| w.contains("never restored")),
            "{:?}",
            plan.waiting_on
        );
        assert!(!plan.is_converged());
    }

    #[test]
    fn a_running_consumer_makes_the_restore_wait_unless_the_spec_opts_in() {
        let o = world(
            volume(Some(restored("g1", &[])), &["montagu-db"]),
            consumer(Some("running")),
        );

        let waiting = plan_restore(&target(false), &o, &cx(NOW));
        assert!(waiting.steps.is_empty(), "{:#?}", waiting.steps);
        let (s, reason, message) = condition_of(&waiting, ConditionType::VolumeRestored);
        assert_eq!(
            (s, reason.as_str()),
            (ConditionStatus::False, "OutOfDate"),
            "{message}"
        );
        assert!(
            waiting
                .waiting_on
                .iter()
                .any(|w| w.contains("container montagu-db") && w.contains("stopForRestore")),
            "{:?}",
            waiting.waiting_on
        );

        let opted_in = plan_restore(&target(true), &o, &cx(NOW));
        assert_eq!(steps(&opted_in), vec![restore("g2", &["montagu-db"])]);
        assert!(opted_in.steps[0].reason.contains("started again"));
    }

    #[test]
    fn a_container_not_listed_as_consumer_is_never_stopped() {
        let o = world(volume(None, &["someone-else"]), consumer(Some("exited")));
        let plan = plan_restore(&target(true), &o, &cx(NOW));
        assert!(plan.steps.is_empty(), "{:#?}", plan.steps);
        assert!(
            plan.waiting_on
                .iter()
                .any(|w| w.contains("someone-else") && w.contains("not listed")),
            "{:?}",
            plan.waiting_on
        );
    }

    #[test]
    fn an_interrupted_restore_is_redone_and_its_stopped_consumers_restarted() {
        let mut interrupted = restored("g2", &["montagu-db"]);
        interrupted.state = RestoreState::Restoring;
        let mut o = world(volume(Some(interrupted), &[]), consumer(Some("exited")));
        let plan = plan_restore(&target(true), &o, &cx(NOW));
        let (_, reason, _) = condition_of(&plan, ConditionType::VolumeRestored);
        assert_eq!(reason, "RestoreInterrupted");
        assert_eq!(steps(&plan), vec![restore("g2", &[])]);

        apply(&mut o, &plan.steps[0].step);
        let plan = plan_restore(&target(true), &o, &cx(NOW));
        assert_eq!(
            steps(&plan),
            vec![RestoreStep::StartConsumers {
                containers: vec!["montagu-db".into()]
            }],
            "the consumer the interrupted restore stopped is started again"
        );
        apply(&mut o, &plan.steps[0].step);
        assert!(plan_restore(&target(true), &o, &cx(NOW)).is_converged());
    }

    #[test]
    fn a_stale_starport_is_reported_not_restored_again() {
        let mut o = world(
            volume(Some(restored("g2", &[])), &[]),
            consumer(Some("running")),
        );
        o.source = published("g2", "2026-11-20T05:00:00Z");
        let plan = plan_restore(&target(true), &o, &cx(NOW));
        assert!(plan.steps.is_empty(), "{:#?}", plan.steps);
        let (s, reason, message) = condition_of(&plan, ConditionType::SourceComplete);
        assert_eq!(
            (s, reason.as_str()),
            (ConditionStatus::False, "SourceStale")
        );
        assert!(message.contains("4d 7h ago"), "{message}");
        assert_eq!(
            status(&plan, ConditionType::VolumeRestored),
            ConditionStatus::True
        );
        assert_eq!(status(&plan, ConditionType::Ready), ConditionStatus::False);
        assert!(plan.waiting_on.iter().any(|w| w.contains("backup host")));
    }

    #[test]
    fn consumers_are_never_rolled_back_to_an_older_or_untrusted_copy() {
        // The starport went back to g1 (say, pointed at an old copy): g2 stays.
        let mut o = world(
            volume(Some(restored("g2", &[])), &[]),
            consumer(Some("exited")),
        );
        o.source = published("g1", "2026-11-23T05:00:00Z");
        let plan = plan_restore(&target(true), &o, &cx(NOW));
        assert!(plan.steps.is_empty(), "{:#?}", plan.steps);
        let (s, _, message) = condition_of(&plan, ConditionType::VolumeRestored);
        assert_eq!(s, ConditionStatus::True, "{message}");
        assert!(
            message.contains("never replaced by older data"),
            "{message}"
        );

        // A copy dated in the future says the clocks are wrong: no replacement.
        o.source = published("g3", "2026-11-25T05:00:00Z");
        let plan = plan_restore(&target(true), &o, &cx(NOW));
        assert!(plan.steps.is_empty(), "{:#?}", plan.steps);
        let (_, reason, message) = condition_of(&plan, ConditionType::SourceComplete);
        assert_eq!(reason, "FromTheFuture");
        assert!(message.contains("recovered 17h 0m from now;"), "{message}");

        // Older than maxAge but newer than what the volume holds: an improvement.
        let mut o = world(
            volume(Some(restored("g1", &[])), &[]),
            consumer(Some("exited")),
        );
        o.source = published("g0", "2026-11-22T05:00:00Z");
        assert!(plan_restore(&target(true), &o, &cx(NOW)).steps.is_empty());
        let mut late = restored("g1", &[]);
        late.recovered_at = Some(t("2026-11-10T05:00:00Z"));
        o.volume = volume(Some(late), &[]);
        let plan = plan_restore(&target(true), &o, &cx(NOW));
        assert_eq!(
            condition_of(&plan, ConditionType::SourceComplete).1,
            "SourceStale"
        );
        assert_eq!(steps(&plan), vec![restore("g0", &[])]);
    }

    #[test]
    fn consumers_owed_a_start_wait_for_a_complete_copy_and_are_named_meanwhile() {
        let mut interrupted = restored("g2", &["montagu-db"]);
        interrupted.state = RestoreState::Restoring;
        let mut o = world(volume(Some(interrupted), &[]), consumer(Some("exited")));
        o.source = Observation::Unavailable {
            reason: "ssh: connection refused".into(),
        };
        let plan = plan_restore(&target(true), &o, &cx(NOW));
        assert!(plan.steps.is_empty(), "never started on a half copy");
        assert!(
            plan.waiting_on
                .iter()
                .any(|w| w.contains("container montagu-db") && w.contains("unfinished restore")),
            "{:?}",
            plan.waiting_on
        );

        // On a complete copy (a restore that copied nothing could not start it
        // again) it is started while the restore waits.
        o.volume = volume(Some(restored("g1", &["montagu-db"])), &[]);
        let plan = plan_restore(&target(true), &o, &cx(NOW));
        assert_eq!(
            steps(&plan),
            vec![RestoreStep::StartConsumers {
                containers: vec!["montagu-db".into()]
            }]
        );
    }

    #[test]
    fn a_consumer_owed_a_start_is_started_even_once_no_longer_listed() {
        // The spec was edited after a restore stopped `old-db`; observation still
        // reports it because the marker records it.
        let mut o = world(
            volume(Some(restored("g2", &["old-db"])), &[]),
            Observation::observed(vec![
                ConsumerState {
                    container: "montagu-db".to_string(),
                    state: Some("running".into()),
                },
                ConsumerState {
                    container: "old-db".to_string(),
                    state: Some("exited".into()),
                },
            ]),
        );
        let plan = plan_restore(&target(true), &o, &cx(NOW));
        assert_eq!(
            steps(&plan),
            vec![RestoreStep::StartConsumers {
                containers: vec!["old-db".into()]
            }]
        );
        // And a running unlisted one is never stopped by a restore.
        o.source = published("g3", "2026-11-24T06:00:00Z");
        if let Observation::Observed { value } = &mut o.consumers {
            value[1].state = Some("running".into());
        }
        let plan = plan_restore(&target(true), &o, &cx(NOW));
        assert_eq!(steps(&plan), vec![restore("g3", &["montagu-db"])]);
    }

    #[test]
    fn what_cannot_be_seen_is_unknown_and_nothing_is_done() {
        let mut o = world(
            Observation::observed(RestoreVolumeState::Missing),
            consumer(None),
        );
        o.source = Observation::Unavailable {
            reason: "ssh: connect refused".into(),
        };
        let plan = plan_restore(&target(true), &o, &cx(NOW));
        assert!(plan.steps.is_empty());
        assert_eq!(
            status(&plan, ConditionType::SourceComplete),
            ConditionStatus::Unknown
        );
        assert_eq!(
            status(&plan, ConditionType::Ready),
            ConditionStatus::Unknown
        );

        let o = world(
            Observation::observed(RestoreVolumeState::Missing),
            Observation::Unavailable {
                reason: "the Docker engine does not answer".into(),
            },
        );
        let plan = plan_restore(&target(true), &o, &cx(NOW));
        assert!(
            plan.steps.is_empty(),
            "never restore without seeing the consumers"
        );
        assert!(
            plan.waiting_on.iter().any(|w| w.contains("Docker engine")),
            "{:?}",
            plan.waiting_on
        );

        // A volume that holds the copy needs nothing from the engine.
        let o = world(
            volume(Some(restored("g2", &[])), &[]),
            Observation::Unavailable {
                reason: "the Docker engine does not answer".into(),
            },
        );
        assert!(plan_restore(&target(true), &o, &cx(NOW)).is_converged());
    }

    #[test]
    fn foreign_data_is_never_overwritten() {
        let o = world(
            Observation::observed(RestoreVolumeState::Present {
                marker: None,
                no_marker_reason: Some("no marker".into()),
                foreign: true,
                used_by: Vec::new(),
                postmaster_running: false,
            }),
            consumer(Some("exited")),
        );
        let plan = plan_restore(&target(true), &o, &cx(NOW));
        assert!(plan.steps.is_empty());
        let (_, reason, _) = condition_of(&plan, ConditionType::VolumeRestored);
        assert_eq!(reason, "ForeignData");
    }

    #[test]
    fn every_start_converges_within_three_steps() {
        let markers = [
            None,
            Some(restored("g1", &[])),
            Some(restored("g2", &["montagu-db"])),
            Some(RestoreMarker {
                state: RestoreState::Restoring,
                ..restored("g1", &["montagu-db"])
            }),
        ];
        for marker in markers {
            for state in [None, Some("running"), Some("exited")] {
                let users: &[&str] = if state == Some("running") {
                    &["montagu-db"]
                } else {
                    &[]
                };
                let mut o = world(volume(marker.clone(), users), consumer(state));
                let mut taken = Vec::new();
                for _ in 0..3 {
                    let plan = plan_restore(&target(true), &o, &cx(NOW));
                    let Some(step) = plan.steps.first() else {
                        break;
                    };
                    taken.push(step.step.clone());
                    apply(&mut o, &step.step);
                    if let Observation::Observed {
                        value: RestoreVolumeState::Present { used_by, .. },
                    } = &mut o.volume
                    {
                        used_by.clear();
                    }
                }
                let plan = plan_restore(&target(true), &o, &cx(NOW));
                assert!(
                    plan.is_converged(),
                    "from {marker:?} / {state:?} after {taken:?}: {plan:#?}"
                );
                if state == Some("running") {
                    assert!(
                        o.consumers.value().unwrap()[0].is_running(),
                        "a consumer that ran runs again"
                    );
                }
            }
        }
    }
}
