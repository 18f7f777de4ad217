//! Table-driven tests of the pure planner, and convergence: applying a plan's steps
//! to the observed state (in a simulated world) yields a converged plan.

use jiff::{Timestamp, ToSpan, tz::TimeZone};
use reconciler::observed::{
    Backup, BackupStatus, BarmanState, CheckItem, MirrorObservation, Observation, Observed,
    StarportMetadata, StarportState, StrayReplay, VolumeMarker, VolumeState, VolumeUser, WalHealth,
};
use reconciler::plan::{
    BackupRef, ConditionStatus, ConditionType, GenerationRef, PipelineStep, Plan, PlanContext, plan,
};
use reconciler::spec::BackupPipeline;

const MACHINE: &str = "machine-a";

fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

/// A pipeline from YAML, with `extra` lines spliced into its spec (indented by 2).
fn pipeline_with(retention: &str, base_backup_extra: &str) -> BackupPipeline {
    let yaml = format!(
        r#"apiVersion: reconciler.montagu/v1alpha1
kind: BackupPipeline
metadata: {{name: montagu}}
spec:
  barman: {{server: montagu}}
  baseBackup: {{maxAge: 30d{base_backup_extra}}}
  retention: {retention}
  recoveredVolume:
    path: /srv/nightly/montagu_db_volume
    maxAge: 24h
    replay: {{postgresBin: /usr/lib/postgresql/15/bin}}
  starport: {{root: /srv/starport, target: barman_to_starport}}
"#
    );
    serde_saphyr::from_str(&yaml).expect("test pipeline parses")
}

fn pipeline() -> BackupPipeline {
    pipeline_with("{keep: 3, minimumRedundancy: 1}", "")
}

fn cx(now: &str) -> PlanContext {
    PlanContext {
        now: t(now),
        local_time_zone: TimeZone::UTC,
    }
}

fn done(id: &str, end: &str) -> Backup {
    Backup {
        id: id.to_string(),
        status: BackupStatus::Done,
        end_time: Some(t(end)),
        size_bytes: Some(1),
    }
}

fn with_status(id: &str, status: BackupStatus) -> Backup {
    Backup {
        id: id.to_string(),
        status,
        end_time: None,
        size_bytes: None,
    }
}

fn marker(generation: &str, backup_id: &str, recovered_at: &str) -> VolumeMarker {
    VolumeMarker {
        generation: generation.to_string(),
        backup_id: backup_id.to_string(),
        backup_end_time: None,
        recovered_at: t(recovered_at),
        replayed_to_lsn: "0/3000000".to_string(),
        checkpoint_time: None,
        pipeline: "montagu".to_string(),
    }
}

fn synced(generation: &str, host: &str) -> StarportState {
    StarportState::Synced {
        metadata: StarportMetadata {
            last_backup: "2026-11-23T06:00:00+00:00".to_string(),
            instance_guid: Some(host.to_string()),
            generation: Some(generation.to_string()),
            backup_id: None,
            recovered_at: None,
        },
    }
}

/// Observed-state builder.
#[derive(Clone)]
struct World {
    observed: Observed,
}

impl World {
    fn empty() -> Self {
        World {
            observed: Observed {
                barman: Observation::observed(BarmanState::default()),
                volume: Observation::observed(VolumeState::Missing),
                starport: Some(Observation::observed(StarportState::NoMetadata {
                    reason: "no metadata.json".into(),
                })),
                machine_id: Some(MACHINE.to_string()),

                wal: None,
                mirrors: Vec::new(),
                last_backup_taken: None,
            },
        }
    }

    /// Backup 20261120T000000 (3 days before 2026-11-23), volume and starport fresh.
    fn converged() -> Self {
        Self::empty()
            .backups(vec![done("20261120T000000", "2026-11-20T01:00:00Z")])
            .volume(marker("g1", "20261120T000000", "2026-11-23T05:00:00Z"))
            .starport(synced("g1", MACHINE))
    }

    fn backups(mut self, backups: Vec<Backup>) -> Self {
        self.observed.barman = Observation::observed(BarmanState::new(backups));
        self
    }

    fn volume(mut self, marker: VolumeMarker) -> Self {
        self.observed.volume = Observation::observed(VolumeState::Marked {
            marker,
            in_use: false,
            users: vec![],
        });
        self
    }

    fn volume_state(mut self, state: VolumeState) -> Self {
        self.observed.volume = Observation::observed(state);
        self
    }

    fn starport(mut self, state: StarportState) -> Self {
        self.observed.starport = Some(Observation::observed(state));
        self
    }

    fn barman_down(mut self) -> Self {
        self.observed.barman = Observation::Unavailable {
            reason: "barman: command not found".into(),
        };
        self
    }

    fn wal(mut self, health: WalHealth) -> Self {
        self.observed.wal = Some(Observation::observed(health));
        self
    }

    /// Carries out a step the way the real executor would, on the simulated world.
    fn apply(&mut self, step: &PipelineStep, now: Timestamp) {
        let o = &mut self.observed;
        match step {
            PipelineStep::RunBarmanCron => {
                let health = match &mut o.wal {
                    Some(Observation::Observed { value }) => value,
                    other => panic!("cron planned without WAL health: {other:?}"),
                };
                health.receive_wal_running = Some(ok());
                // receive-wal re-activates its slot unless the slot itself is broken.
                return;
            }
            PipelineStep::ResetReplicationSlot => {
                let health = match &mut o.wal {
                    Some(Observation::Observed { value }) => value,
                    other => panic!("slot reset planned without WAL health: {other:?}"),
                };
                health.replication_slot = Some(ok());
                health.receive_wal_running = Some(failed("stopped for the slot reset"));
                return;
            }
            _ => {}
        }
        let backups = match &mut o.barman {
            Observation::Observed { value } => &mut value.backups,
            Observation::Unavailable { .. } => {
                panic!("a step was planned with barman unavailable: {step}")
            }
        };
        match step {
            PipelineStep::TakeBaseBackup => backups.push(Backup {
                id: now.strftime("%Y%m%dT%H%M%S").to_string(),
                status: BackupStatus::Done,
                end_time: Some(now),
                size_bytes: Some(1),
            }),
            PipelineStep::DeleteBackup { backup_id } => {
                let before = backups.len();
                backups.retain(|b| &b.id != backup_id);
                assert_eq!(
                    before,
                    backups.len() + 1,
                    "deleted a backup that does not exist: {backup_id}"
                );
            }
            PipelineStep::RecoverVolume { backup } => {
                let id = match backup {
                    BackupRef::Existing(id) => id.clone(),
                    BackupRef::NewBackup => backups
                        .iter()
                        .filter(|b| b.status == BackupStatus::Done)
                        .max_by_key(|b| b.end_time)
                        .expect("a new backup was taken first")
                        .id
                        .clone(),
                };
                assert!(
                    backups
                        .iter()
                        .any(|b| b.id == id && b.status == BackupStatus::Done)
                );
                let generation = format!("{id}-{}", now.as_second());
                o.volume = Observation::observed(VolumeState::Marked {
                    marker: VolumeMarker {
                        generation,
                        backup_id: id,
                        backup_end_time: None,
                        recovered_at: now,
                        replayed_to_lsn: "0/5000000".into(),
                        checkpoint_time: None,
                        pipeline: "montagu".into(),
                    },
                    in_use: false,
                    users: vec![],
                });
            }
            PipelineStep::StopStrayReplay { replay } => match &mut o.volume {
                Observation::Observed {
                    value:
                        VolumeState::Unmarked {
                            in_use,
                            stray_replay,
                            users,
                            ..
                        },
                } => {
                    assert_eq!(stray_replay.as_ref(), Some(replay));
                    *in_use = false;
                    *stray_replay = None;
                    users.clear();
                }
                other => panic!("stopping a stray replay on {other:?}"),
            },
            PipelineStep::SyncStarport { generation } => {
                let current = match o.volume.value() {
                    Some(VolumeState::Marked { marker, .. }) => marker.generation.clone(),
                    other => panic!("sync planned without a marked volume: {other:?}"),
                };
                if let GenerationRef::Existing(g) = generation {
                    assert_eq!(g, &current);
                }
                o.starport = Some(Observation::observed(synced(&current, MACHINE)));
            }
            PipelineStep::SyncMirror { mirror, generation } => {
                let starport = match o.starport.as_ref().and_then(|s| s.value()) {
                    Some(StarportState::Synced { metadata }) => metadata.generation.clone(),
                    other => panic!("mirror sync planned without a synced starport: {other:?}"),
                };
                assert_eq!(starport.as_deref(), Some(generation.as_str()));
                let m = o
                    .mirrors
                    .iter_mut()
                    .find(|m| &m.name == mirror)
                    .expect("the mirror was observed");
                m.state = Observation::observed(synced(generation, MACHINE));
            }
            PipelineStep::RunBarmanCron | PipelineStep::ResetReplicationSlot => {
                unreachable!("handled above")
            }
        }
    }
}

fn with_mirror() -> BackupPipeline {
    let mut p = pipeline();
    let mirror = serde_saphyr::from_str(
        "{name: offsite, ssh: {host: backup.example.org, user: montagu, identityFile: /root/.ssh/id_mirror}, root: /srv/starport}",
    )
    .unwrap();
    p.spec.starport.as_mut().unwrap().mirrors.push(mirror);
    p
}

fn mirror_holding(world: World, state: Observation<StarportState>) -> World {
    let mut world = world;
    world.observed.mirrors = vec![MirrorObservation {
        name: "offsite".into(),
        state,
    }];
    world
}

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

fn ok() -> CheckItem {
    CheckItem {
        ok: true,
        hint: String::new(),
    }
}

fn failed(hint: &str) -> CheckItem {
    CheckItem {
        ok: false,
        hint: hint.to_string(),
    }
}

fn streaming() -> WalHealth {
    WalHealth {
        receive_wal_running: Some(ok()),
        replication_slot: Some(ok()),
        postgresql: Some(ok()),
        postgresql_streaming: Some(ok()),
        archiver_errors: Some(ok()),
        wal_maximum_age: Some(ok()),
    }
}

fn watching_wal(reset_broken_slot: bool) -> BackupPipeline {
    let mut p = pipeline();
    p.spec.wal_streaming =
        Some(serde_saphyr::from_str(&format!("resetBrokenSlot: {reset_broken_slot}\n")).unwrap());
    p
}

fn condition_of<S: std::fmt::Debug>(
    plan: &Plan<S>,
    kind: ConditionType,
) -> (ConditionStatus, String, String) {
    let c = plan
        .conditions
        .iter()
        .find(|c| c.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} in {plan:#?}"));
    (c.status, c.reason.to_string(), c.message.clone())
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

fn steps<S: Clone>(plan: &Plan<S>) -> Vec<S> {
    plan.steps.iter().map(|s| s.step.clone()).collect()
}

fn status<S>(plan: &Plan<S>, kind: ConditionType) -> ConditionStatus {
    plan.condition(kind).expect("condition present").status
}

fn delete(id: &str) -> PipelineStep {
    PipelineStep::DeleteBackup {
        backup_id: id.to_string(),
    }
}

const NOW: &str = "2026-11-23T12:00:00Z";

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

fn plan_at(world: &World, now: &str) -> Plan<PipelineStep> {
    plan(&pipeline(), &world.observed, &cx(now))
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

// ---- RestoreTarget ----------------------------------------------------------

mod restore_target {
    use super::*;
    use reconciler::observed::{
        ConsumerState, RestoreMarker, RestoreObserved, RestoreState, RestoreVolumeState,
    };
    use reconciler::plan::{RestoreStep, plan_restore};
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
