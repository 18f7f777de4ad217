//! The simulated world the planner tests share: an observed-state builder
//! ([`World`]), a step applied to it as the executor would ([`World::apply`]),
//! and the pipelines, backups, markers and checks the tables are written with.

#![allow(dead_code, unused_imports)]

pub use jiff::{Timestamp, ToSpan, tz::TimeZone};
pub use reconciler::observed::{
    Backup, BackupStatus, BarmanState, CheckItem, MirrorObservation, Observation, Observed,
    StandbyPoint, StarportMetadata, StarportState, StartedBy, StrayReplay, VolumeMarker,
    VolumeState, VolumeUser, WalHealth, WriteArea, WritingProcess,
};
pub use reconciler::plan::{
    BackupRef, ConditionStatus, ConditionType, GenerationRef, PipelineStep, Plan, PlanContext,
    RestoreStep, plan,
};
pub use reconciler::spec::BackupPipeline;

pub const MACHINE: &str = "machine-a";

pub fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

/// A pipeline from YAML, with `extra` lines spliced into its spec (indented by 2).
pub fn pipeline_with(retention: &str, base_backup_extra: &str) -> BackupPipeline {
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

pub fn pipeline() -> BackupPipeline {
    pipeline_with("{keep: 3, minimumRedundancy: 1}", "")
}

pub fn cx(now: &str) -> PlanContext {
    PlanContext {
        now: t(now),
        local_time_zone: TimeZone::UTC,
    }
}

pub fn done(id: &str, end: &str) -> Backup {
    Backup {
        id: id.to_string(),
        status: BackupStatus::Done,
        end_time: Some(t(end)),
        size_bytes: Some(1),
    }
}

pub fn with_status(id: &str, status: BackupStatus) -> Backup {
    Backup {
        id: id.to_string(),
        status,
        end_time: None,
        size_bytes: None,
    }
}

pub fn marker(generation: &str, backup_id: &str, recovered_at: &str) -> VolumeMarker {
    VolumeMarker {
        generation: generation.to_string(),
        backup_id: backup_id.to_string(),
        backup_end_time: None,
        recovered_at: t(recovered_at),
        replayed_to_lsn: "0/3000000".to_string(),
        checkpoint_time: None,
        pipeline: "montagu".to_string(),
        standby: None,
    }
}

/// A marker of a volume left as a standby at rest, replayed through `last_segment`.
pub fn standby_marker(
    generation: &str,
    backup_id: &str,
    recovered_at: &str,
    last_segment: &str,
) -> VolumeMarker {
    VolumeMarker {
        standby: Some(StandbyPoint {
            timeline: 1,
            last_segment: last_segment.to_string(),
        }),
        ..marker(generation, backup_id, recovered_at)
    }
}

pub fn synced(generation: &str, host: &str) -> StarportState {
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
pub struct World {
    pub observed: Observed,
}

impl World {
    pub fn empty() -> Self {
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
                writers: None,
            },
        }
    }

    /// Backup 20261120T000000 (3 days before 2026-11-23), volume and starport fresh.
    pub fn converged() -> Self {
        Self::empty()
            .backups(vec![done("20261120T000000", "2026-11-20T01:00:00Z")])
            .volume(marker("g1", "20261120T000000", "2026-11-23T05:00:00Z"))
            .starport(synced("g1", MACHINE))
    }

    /// A live process writing into the volume or the starport.
    pub fn writer(mut self, writer: WritingProcess) -> Self {
        match &mut self.observed.writers {
            Some(Observation::Observed { value }) => value.push(writer),
            _ => self.observed.writers = Some(Observation::observed(vec![writer])),
        }
        self
    }

    pub fn backups(mut self, backups: Vec<Backup>) -> Self {
        self.observed.barman = Observation::observed(BarmanState::new(backups));
        self
    }

    pub fn volume(mut self, marker: VolumeMarker) -> Self {
        self.observed.volume = Observation::observed(VolumeState::Marked {
            marker,
            in_use: false,
            users: vec![],
        });
        self
    }

    pub fn volume_state(mut self, state: VolumeState) -> Self {
        self.observed.volume = Observation::observed(state);
        self
    }

    pub fn starport(mut self, state: StarportState) -> Self {
        self.observed.starport = Some(Observation::observed(state));
        self
    }

    pub fn barman_down(mut self) -> Self {
        self.observed.barman = Observation::Unavailable {
            reason: "barman: command not found".into(),
        };
        self
    }

    pub fn wal(mut self, health: WalHealth) -> Self {
        self.observed.wal = Some(Observation::observed(health));
        self
    }

    /// Carries out a step the way the real executor would, on the simulated world.
    pub fn apply(&mut self, step: &PipelineStep, now: Timestamp) {
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
                        standby: Some(StandbyPoint {
                            timeline: 1,
                            last_segment: "000000010000000000000005".into(),
                        }),
                    },
                    in_use: false,
                    users: vec![],
                });
            }
            PipelineStep::CatchUpVolume { backup_id, .. } => {
                let Some(VolumeState::Marked { marker, .. }) = o.volume.value() else {
                    panic!("catch-up planned without a marked volume: {:?}", o.volume);
                };
                assert_eq!(&marker.backup_id, backup_id);
                let mut marker = marker.clone();
                marker.generation = format!("{backup_id}-{}", now.as_second());
                marker.recovered_at = now;
                o.volume = Observation::observed(VolumeState::Marked {
                    marker,
                    in_use: false,
                    users: vec![],
                });
            }
            PipelineStep::StopOrphan { process } => match &mut o.writers {
                Some(Observation::Observed { value }) => {
                    let before = value.len();
                    value.retain(|w| w != process);
                    assert_eq!(
                        before,
                        value.len() + 1,
                        "stopped a process not seen: {process}"
                    );
                }
                other => panic!("stopping {process} with writers {other:?}"),
            },
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

pub fn with_mirror() -> BackupPipeline {
    let mut p = pipeline();
    let mirror = serde_saphyr::from_str(
        "{name: offsite, ssh: {host: backup.example.org, user: montagu, identityFile: /root/.ssh/id_mirror}, root: /srv/starport}",
    )
    .unwrap();
    p.spec.starport.as_mut().unwrap().mirrors.push(mirror);
    p
}

pub fn mirror_holding(world: World, state: Observation<StarportState>) -> World {
    let mut world = world;
    world.observed.mirrors = vec![MirrorObservation {
        name: "offsite".into(),
        state,
    }];
    world
}

pub fn ok() -> CheckItem {
    CheckItem {
        ok: true,
        hint: String::new(),
    }
}

pub fn failed(hint: &str) -> CheckItem {
    CheckItem {
        ok: false,
        hint: hint.to_string(),
    }
}

pub fn streaming() -> WalHealth {
    WalHealth {
        receive_wal_running: Some(ok()),
        replication_slot: Some(ok()),
        postgresql: Some(ok()),
        postgresql_streaming: Some(ok()),
        archiver_errors: Some(ok()),
        wal_maximum_age: Some(ok()),
    }
}

pub fn watching_wal(reset_broken_slot: bool) -> BackupPipeline {
    let mut p = pipeline();
    p.spec.wal_streaming =
        Some(serde_saphyr::from_str(&format!("resetBrokenSlot: {reset_broken_slot}\n")).unwrap());
    p
}

pub fn condition_of<S: std::fmt::Debug>(
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

pub fn steps<S: Clone>(plan: &Plan<S>) -> Vec<S> {
    plan.steps.iter().map(|s| s.step.clone()).collect()
}

pub fn status<S>(plan: &Plan<S>, kind: ConditionType) -> ConditionStatus {
    plan.condition(kind).expect("condition present").status
}

pub fn delete(id: &str) -> PipelineStep {
    PipelineStep::DeleteBackup {
        backup_id: id.to_string(),
    }
}

pub const NOW: &str = "2026-11-23T12:00:00Z";

pub fn plan_at(world: &World, now: &str) -> Plan<PipelineStep> {
    plan(&pipeline(), &world.observed, &cx(now))
}
