//! Prometheus metrics, in the text exposition format.
//!
//! Every age is exported beside its allowed maximum, so an alert is one comparison
//! (`reconciler_volume_age_seconds > reconciler_volume_max_age_seconds`). Beside the
//! ages, the instants they count from are exported as timestamps
//! (`reconciler_last_backup_end_timestamp_seconds`, …): an age is as old as the last
//! pass, while `time() - timestamp` keeps growing in Prometheus when the loop
//! stalls, so alerts on timestamps do not freeze. Values are refreshed from each
//! pass's observation; nothing here observes anything itself. A series whose fact
//! cannot be observed is removed rather than left at its last value.
//!
//! About a third of its length is tests; the rest is one family per metric with its
//! rule for dropping a series, kept together so that every family is registered,
//! fed and forgotten in one place.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::observed::{
    BackupStatus, Observed, RestoreObserved, RestoreState, RestoreVolumeState, StarportState,
    VolumeState,
};
use crate::plan::{ConditionStatus, Plan};
use crate::reconcile::{Observations, StepOutcome, StepRecord};
use crate::spec::{BackupPipeline, Resource, RestoreTarget};

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PipelineLabel {
    pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackupLabels {
    pipeline: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    pipeline: String,
    #[prometheus(flatten)]
    condition: ConditionKey,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionKey {
    r#type: String,
    /// The mirror, for `MirrorInSync`; empty otherwise.
    subject: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    pipeline: String,
    r#type: String,
    /// The mirror, for `MirrorInSync`; empty otherwise.
    subject: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MirrorLabels {
    pipeline: String,
    mirror: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

/// The git commit this binary was built from (`build.rs`), or "unknown".
pub const GIT_COMMIT: &str = env!("RECONCILER_COMMIT");

fn epoch_seconds(at: Timestamp) -> f64 {
    at.as_millisecond() as f64 / 1000.0
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    pipeline: String,
    action: String,
    outcome: String,
}

fn step_histogram() -> Histogram {
    // 0.5 s .. ~36 h: from a delete to a multi-hour base backup.
    Histogram::new(exponential_buckets(0.5, 4.0, 10))
}

/// The reconciler's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    backup_age: Family<PipelineLabel, FloatGauge>,
    backup_max_age: Family<PipelineLabel, FloatGauge>,
    volume_age: Family<PipelineLabel, FloatGauge>,
    volume_max_age: Family<PipelineLabel, FloatGauge>,
    starport_age: Family<PipelineLabel, FloatGauge>,
    starport_max_age: Family<PipelineLabel, FloatGauge>,
    restore_age: Family<PipelineLabel, FloatGauge>,
    restore_max_age: Family<PipelineLabel, FloatGauge>,
    last_backup_end: Family<PipelineLabel, FloatGauge>,
    last_recovery: Family<PipelineLabel, FloatGauge>,
    starport_last_sync: Family<PipelineLabel, FloatGauge>,
    mirror_last_sync: Family<MirrorLabels, FloatGauge>,
    last_restore: Family<PipelineLabel, FloatGauge>,
    build_info: Family<BuildLabels, Gauge>,
    backups: Family<BackupLabels, Gauge>,
    condition: Family<ConditionLabels, Gauge>,
    condition_reason: Family<ReasonLabels, Gauge>,
    stalled: Family<PipelineLabel, Gauge>,
    documents: Gauge,
    steps: Family<StepLabels, Counter>,
    step_seconds: Family<StepLabels, Histogram, fn() -> Histogram>,
    last_converged: Family<PipelineLabel, FloatGauge>,
    failures: Family<PipelineLabel, Gauge>,
    last_pass: FloatGauge,
    spec_problems: Gauge,
    fleet_owned: Gauge,
    fleet_etcd_up: Gauge,
    /// Label sets of the families keyed by more than the pipeline, so that a removed
    /// pipeline's series can all be dropped.
    seen: Mutex<SeenLabels>,
}

#[derive(Debug, Default)]
struct SeenLabels {
    conditions: HashSet<ConditionLabels>,
    reasons: HashSet<ReasonLabels>,
    steps: HashSet<StepLabels>,
    mirrors: HashSet<MirrorLabels>,
}

/// The statuses `reconciler_backups` counts.
const BACKUP_STATUSES: [(BackupStatus, &str); 4] = [
    (BackupStatus::Done, "done"),
    (BackupStatus::Failed, "failed"),
    (BackupStatus::Started, "started"),
    (BackupStatus::WaitingForWals, "waiting_for_wals"),
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        Self::build(false)
    }

    /// Every metric, and those of fleet mode (`run --fleet`).
    pub fn for_fleet() -> Self {
        Self::build(true)
    }

    fn build(fleet: bool) -> Self {
        let mut registry = Registry::default();
        let m = Self {
            backup_age: Family::default(),
            backup_max_age: Family::default(),
            volume_age: Family::default(),
            volume_max_age: Family::default(),
            starport_age: Family::default(),
            starport_max_age: Family::default(),
            restore_age: Family::default(),
            restore_max_age: Family::default(),
            last_backup_end: Family::default(),
            last_recovery: Family::default(),
            starport_last_sync: Family::default(),
            mirror_last_sync: Family::default(),
            last_restore: Family::default(),
            build_info: Family::default(),
            backups: Family::default(),
            condition: Family::default(),
            condition_reason: Family::default(),
            stalled: Family::default(),
            documents: Gauge::default(),
            steps: Family::default(),
            step_seconds: Family::new_with_constructor(step_histogram as fn() -> Histogram),
            last_converged: Family::default(),
            failures: Family::default(),
            last_pass: FloatGauge::default(),
            spec_problems: Gauge::default(),
            fleet_owned: Gauge::default(),
            fleet_etcd_up: Gauge::default(),
            seen: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "reconciler_base_backup_age_seconds",
            "Age of the newest DONE base backup (since its end)",
            m.backup_age.clone(),
        );
        registry.register(
            "reconciler_base_backup_max_age_seconds",
            "baseBackup.maxAge",
            m.backup_max_age.clone(),
        );
        registry.register("reconciler_volume_age_seconds", "Age of the recovered volume (since its recovery finished); absent when it holds no valid recovery", m.volume_age.clone());
        registry.register(
            "reconciler_volume_max_age_seconds",
            "recoveredVolume.maxAge",
            m.volume_max_age.clone(),
        );
        registry.register(
            "reconciler_starport_age_seconds",
            "Age of the data in the starport copy (since the recovery it copies finished)",
            m.starport_age.clone(),
        );
        registry.register(
            "reconciler_starport_max_age_seconds",
            "The oldest the starport's data may be: recoveredVolume.maxAge",
            m.starport_max_age.clone(),
        );
        registry.register(
            "reconciler_restore_age_seconds",
            "Age of the data a restore target's volume holds (since the backup host recovered it); absent when it holds no complete restore",
            m.restore_age.clone(),
        );
        registry.register(
            "reconciler_restore_max_age_seconds",
            "A restore target's maxAge",
            m.restore_max_age.clone(),
        );
        registry.register(
            "reconciler_backups",
            "Backups barman lists, by status",
            m.backups.clone(),
        );
        registry.register(
            "reconciler_condition",
            "1 for each condition's current status, 0 for the others",
            m.condition.clone(),
        );
        registry.register(
            "reconciler_steps",
            "Steps executed, by action and outcome",
            m.steps.clone(),
        );
        registry.register(
            "reconciler_step_duration_seconds",
            "Step durations, by action and outcome",
            m.step_seconds.clone(),
        );
        registry.register(
            "reconciler_last_converged_timestamp_seconds",
            "Last time every condition of the pipeline held",
            m.last_converged.clone(),
        );
        registry.register(
            "reconciler_consecutive_failures",
            "Failed runs since the last success",
            m.failures.clone(),
        );
        registry.register(
            "reconciler_last_pass_timestamp_seconds",
            "When the loop last completed a pass",
            m.last_pass.clone(),
        );
        if fleet {
            registry.register(
                "reconciler_fleet_owned_pipelines",
                "Fleet mode: pipelines this instance owns (holds the etcd ownership key of, under a valid lease)",
                m.fleet_owned.clone(),
            );
            registry.register(
                "reconciler_fleet_etcd_up",
                "Fleet mode: 1 while etcd answers and this instance's lease is valid; 0 means no step starts here",
                m.fleet_etcd_up.clone(),
            );
        }
        registry.register(
            "reconciler_spec_problems",
            "Spec problems found by the last pass",
            m.spec_problems.clone(),
        );
        registry.register(
            "reconciler_condition_reason",
            "1 for each condition's current reason (ClockSkew, DeadBackups, …); a reason that no longer applies has no series",
            m.condition_reason.clone(),
        );
        registry.register(
            "reconciler_stalled",
            "1 while the pipeline is Stalled (steps failed repeatedly, or a wait outlasted stalledAfter)",
            m.stalled.clone(),
        );
        registry.register(
            "reconciler_documents",
            "Documents (BackupPipeline, RestoreTarget) the last pass loaded; 0 means nothing is reconciled",
            m.documents.clone(),
        );
        registry.register(
            "reconciler_last_backup_end_timestamp_seconds",
            "When the newest DONE base backup ended (seconds since the epoch); absent when barman cannot be read or lists none",
            m.last_backup_end.clone(),
        );
        registry.register(
            "reconciler_last_recovery_timestamp_seconds",
            "When the recovery the volume holds finished (its marker); absent when it holds no valid recovery",
            m.last_recovery.clone(),
        );
        registry.register(
            "reconciler_starport_last_sync_timestamp_seconds",
            "When the starport copy was last completed (its metadata); absent while it has no usable metadata",
            m.starport_last_sync.clone(),
        );
        registry.register(
            "reconciler_mirror_last_sync_timestamp_seconds",
            "When a mirror's copy was last completed (its metadata); absent while it cannot be read or has no usable metadata",
            m.mirror_last_sync.clone(),
        );
        registry.register(
            "reconciler_last_restore_timestamp_seconds",
            "A restore target: when the restore its volume holds finished; absent while it holds no complete restore",
            m.last_restore.clone(),
        );
        registry.register(
            "reconciler_build_info",
            "1, labelled with the version and the git commit of this build",
            m.build_info.clone(),
        );
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                commit: GIT_COMMIT.to_string(),
            })
            .set(1);
        Self { registry, ..m }
    }

    /// Refreshes a document's gauges from one observation and plan.
    pub fn observe(
        &self,
        resource: &Resource,
        observed: &Observations,
        plan: &Plan,
        now: Timestamp,
    ) {
        match (resource, observed) {
            (Resource::BackupPipeline(p), Observations::BackupPipeline(o)) => {
                self.observe_pipeline(p, o, plan, now);
            }
            (Resource::RestoreTarget(t), Observations::RestoreTarget(o)) => {
                self.observe_restore(t, o, plan, now);
            }
            _ => {}
        }
    }

    fn observe_restore(
        &self,
        target: &RestoreTarget,
        observed: &RestoreObserved,
        plan: &Plan,
        now: Timestamp,
    ) {
        let label = PipelineLabel {
            pipeline: target.name().to_string(),
        };
        self.restore_max_age
            .get_or_create(&label)
            .set(target.spec.max_age.to_std().as_secs_f64());
        let restored = match observed.volume.value() {
            Some(RestoreVolumeState::Present {
                marker: Some(marker),
                ..
            }) if marker.state == RestoreState::Restored => Some(marker),
            _ => None,
        };
        match restored.and_then(|m| m.restored_at) {
            Some(at) => {
                self.last_restore
                    .get_or_create(&label)
                    .set(epoch_seconds(at));
            }
            None => {
                self.last_restore.remove(&label);
            }
        }
        let data_time = restored.and_then(|m| m.recovered_at);
        match data_time {
            Some(at) => {
                let age = (now.as_millisecond() - at.as_millisecond()) as f64 / 1000.0;
                self.restore_age.get_or_create(&label).set(age);
            }
            None => {
                self.restore_age.remove(&label);
            }
        }
        self.conditions(plan, &label, now);
    }

    fn observe_pipeline(
        &self,
        pipeline: &BackupPipeline,
        observed: &Observed,
        plan: &Plan,
        now: Timestamp,
    ) {
        let label = PipelineLabel {
            pipeline: pipeline.name().to_string(),
        };
        let max = |d: crate::spec::HumanDuration| d.to_std().as_secs_f64();
        self.backup_max_age
            .get_or_create(&label)
            .set(max(pipeline.spec.base_backup.max_age));
        self.volume_max_age
            .get_or_create(&label)
            .set(max(pipeline.spec.recovered_volume.max_age));

        self.backups(observed, &label, now);
        self.volume_or_starport(pipeline, observed, &label, now);
        self.conditions(plan, &label, now);
    }

    fn backups(&self, observed: &Observed, label: &PipelineLabel, now: Timestamp) {
        let seconds =
            |from: Timestamp| (now.as_millisecond() - from.as_millisecond()) as f64 / 1000.0;
        let Some(state) = observed.barman.value() else {
            // Unobservable: an age frozen at its last value would look healthy. The
            // condition series says Unknown instead.
            self.backup_age.remove(label);
            self.last_backup_end.remove(label);
            self.forget_backup_counts(&label.pipeline);
            return;
        };
        let newest = state
            .backups
            .iter()
            .filter(|b| b.status == BackupStatus::Done)
            .filter_map(|b| b.end_time)
            .max();
        match newest {
            Some(end) => {
                self.backup_age.get_or_create(label).set(seconds(end));
                self.last_backup_end
                    .get_or_create(label)
                    .set(epoch_seconds(end));
            }
            None => {
                self.backup_age.remove(label);
                self.last_backup_end.remove(label);
            }
        }
        for (status, name) in BACKUP_STATUSES {
            let count = state.backups.iter().filter(|b| b.status == status).count();
            self.backups
                .get_or_create(&BackupLabels {
                    pipeline: label.pipeline.clone(),
                    status: name.to_string(),
                })
                .set(count as i64);
        }
    }

    fn volume_or_starport(
        &self,
        pipeline: &BackupPipeline,
        observed: &Observed,
        label: &PipelineLabel,
        now: Timestamp,
    ) {
        let seconds =
            |from: Timestamp| (now.as_millisecond() - from.as_millisecond()) as f64 / 1000.0;
        let max = |d: crate::spec::HumanDuration| d.to_std().as_secs_f64();
        match observed.volume.value() {
            Some(VolumeState::Marked { marker, .. }) => {
                self.volume_age
                    .get_or_create(label)
                    .set(seconds(marker.recovered_at));
                self.last_recovery
                    .get_or_create(label)
                    .set(epoch_seconds(marker.recovered_at));
            }
            _ => {
                self.volume_age.remove(label);
                self.last_recovery.remove(label);
            }
        }
        let synced_at = |state: Option<&StarportState>| match state {
            Some(StarportState::Synced { metadata }) => {
                metadata.last_backup.parse::<Timestamp>().ok()
            }
            _ => None,
        };
        match synced_at(observed.starport.as_ref().and_then(|s| s.value())) {
            Some(at) => {
                self.starport_last_sync
                    .get_or_create(label)
                    .set(epoch_seconds(at));
            }
            None => {
                self.starport_last_sync.remove(label);
            }
        }
        self.mirrors(observed, label, synced_at);
        if pipeline.spec.starport.is_some() {
            self.starport_max_age
                .get_or_create(label)
                .set(max(pipeline.spec.recovered_volume.max_age));
            match observed.starport.as_ref().and_then(|s| s.value()) {
                Some(StarportState::Synced { metadata }) => match metadata.recovered_at {
                    Some(at) => {
                        self.starport_age.get_or_create(label).set(seconds(at));
                    }
                    None => {
                        self.starport_age.remove(label);
                    }
                },
                _ => {
                    self.starport_age.remove(label);
                }
            }
        } else {
            // The starport was taken out of the spec.
            self.starport_age.remove(label);
            self.starport_max_age.remove(label);
        }
    }

    fn mirrors(
        &self,
        observed: &Observed,
        label: &PipelineLabel,
        synced_at: impl Fn(Option<&StarportState>) -> Option<Timestamp>,
    ) {
        let current: Vec<(MirrorLabels, Option<Timestamp>)> = observed
            .mirrors
            .iter()
            .map(|m| {
                let labels = MirrorLabels {
                    pipeline: label.pipeline.clone(),
                    mirror: m.name.clone(),
                };
                (labels, synced_at(m.state.value()))
            })
            .collect();
        if let Ok(mut seen) = self.seen.lock() {
            // A mirror taken out of the spec, unreadable or without metadata has
            // no series.
            seen.mirrors.retain(|labels| {
                let keep = labels.pipeline != label.pipeline
                    || current.iter().any(|(l, at)| l == labels && at.is_some());
                if !keep {
                    self.mirror_last_sync.remove(labels);
                }
                keep
            });
            for (labels, at) in current {
                if let Some(at) = at {
                    self.mirror_last_sync
                        .get_or_create(&labels)
                        .set(epoch_seconds(at));
                    seen.mirrors.insert(labels);
                }
            }
        }
    }

    fn conditions(&self, plan: &Plan, label: &PipelineLabel, now: Timestamp) {
        let stalled = plan
            .conditions
            .iter()
            .any(|c| c.kind == crate::plan::ConditionType::Stalled);
        self.stalled.get_or_create(label).set(i64::from(stalled));
        let present = |kind: &str, subject: &str| {
            plan.conditions.iter().any(|c| {
                c.kind.to_string() == kind && c.subject.as_deref().unwrap_or("") == subject
            })
        };
        let current_reason = |labels: &ReasonLabels| {
            plan.conditions.iter().any(|c| {
                c.kind.to_string() == labels.r#type
                    && c.subject.as_deref().unwrap_or("") == labels.subject
                    && c.reason == labels.reason.as_str()
            })
        };
        if let Ok(mut seen) = self.seen.lock() {
            // A condition that went away (Stalled, a removed mirror) leaves no series
            // frozen at its last value; nor does a reason that no longer applies.
            seen.conditions.retain(|labels| {
                let keep = labels.pipeline != label.pipeline
                    || present(&labels.condition.r#type, &labels.condition.subject);
                if !keep {
                    self.condition.remove(labels);
                }
                keep
            });
            seen.reasons.retain(|labels| {
                let keep = labels.pipeline != label.pipeline || current_reason(labels);
                if !keep {
                    self.condition_reason.remove(labels);
                }
                keep
            });
        }
        for c in &plan.conditions {
            let reason = ReasonLabels {
                pipeline: label.pipeline.clone(),
                r#type: c.kind.to_string(),
                subject: c.subject.clone().unwrap_or_default(),
                reason: c.reason.to_string(),
            };
            self.condition_reason.get_or_create(&reason).set(1);
            if let Ok(mut seen) = self.seen.lock() {
                seen.reasons.insert(reason);
            }
            for status in [
                ConditionStatus::True,
                ConditionStatus::False,
                ConditionStatus::Unknown,
            ] {
                let labels = ConditionLabels {
                    pipeline: label.pipeline.clone(),
                    condition: ConditionKey {
                        r#type: c.kind.to_string(),
                        subject: c.subject.clone().unwrap_or_default(),
                        status: format!("{status:?}"),
                    },
                };
                self.condition
                    .get_or_create(&labels)
                    .set(i64::from(c.status == status));
                if let Ok(mut seen) = self.seen.lock() {
                    seen.conditions.insert(labels);
                }
            }
        }
        if plan.is_converged() {
            self.last_converged
                .get_or_create(label)
                .set(now.as_millisecond() as f64 / 1000.0);
        }
    }

    /// Counts a finished step.
    pub fn step(&self, pipeline: &str, record: &StepRecord) {
        let action = serde_json::to_value(&record.planned.step)
            .ok()
            .and_then(|v| v.get("action").and_then(|a| a.as_str()).map(String::from))
            .unwrap_or_default();
        let outcome = match record.outcome {
            StepOutcome::Done => "done",
            StepOutcome::Busy => "busy",
            StepOutcome::Interrupted => "interrupted",
            StepOutcome::Failed => "failed",
        };
        let labels = StepLabels {
            pipeline: pipeline.to_string(),
            action,
            outcome: outcome.to_string(),
        };
        self.steps.get_or_create(&labels).inc();
        self.step_seconds
            .get_or_create(&labels)
            .observe(record.seconds);
        if let Ok(mut seen) = self.seen.lock() {
            seen.steps.insert(labels);
        }
    }

    /// Records a pipeline's consecutive failures.
    pub fn failures(&self, pipeline: &str, count: u32) {
        self.failures
            .get_or_create(&PipelineLabel {
                pipeline: pipeline.to_string(),
            })
            .set(i64::from(count));
    }

    /// A pass of the loop completed.
    pub fn pass_completed(&self, now: Timestamp, spec_problems: usize, documents: usize) {
        self.last_pass.set(now.as_millisecond() as f64 / 1000.0);
        self.spec_problems.set(spec_problems as i64);
        self.documents.set(documents as i64);
    }

    /// Drops the series of a pipeline that no longer exists.
    pub fn forget(&self, pipeline: &str) {
        let label = PipelineLabel {
            pipeline: pipeline.to_string(),
        };
        for family in [
            &self.backup_age,
            &self.backup_max_age,
            &self.volume_age,
            &self.volume_max_age,
            &self.starport_age,
            &self.starport_max_age,
            &self.restore_age,
            &self.restore_max_age,
            &self.last_converged,
            &self.last_backup_end,
            &self.last_recovery,
            &self.starport_last_sync,
            &self.last_restore,
        ] {
            family.remove(&label);
        }
        self.failures.remove(&label);
        self.stalled.remove(&label);
        self.forget_backup_counts(pipeline);
        if let Ok(mut seen) = self.seen.lock() {
            seen.conditions.retain(|labels| {
                let keep = labels.pipeline != pipeline;
                if !keep {
                    self.condition.remove(labels);
                }
                keep
            });
            seen.reasons.retain(|labels| {
                let keep = labels.pipeline != pipeline;
                if !keep {
                    self.condition_reason.remove(labels);
                }
                keep
            });
            seen.steps.retain(|labels| {
                let keep = labels.pipeline != pipeline;
                if !keep {
                    self.steps.remove(labels);
                    self.step_seconds.remove(labels);
                }
                keep
            });
            seen.mirrors.retain(|labels| {
                let keep = labels.pipeline != pipeline;
                if !keep {
                    self.mirror_last_sync.remove(labels);
                }
                keep
            });
        }
    }

    fn forget_backup_counts(&self, pipeline: &str) {
        for (_, status) in BACKUP_STATUSES {
            self.backups.remove(&BackupLabels {
                pipeline: pipeline.to_string(),
                status: status.to_string(),
            });
        }
    }

    /// Fleet mode: how many pipelines this instance owns, and whether etcd answers.
    pub fn fleet(&self, owned: usize, etcd_up: bool) {
        self.fleet_owned.set(owned as i64);
        self.fleet_etcd_up.set(i64::from(etcd_up));
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::{Backup, BarmanState, Observation};
    use crate::plan::{PlanContext, plan};
    use crate::reconcile::StepRecord;

    fn pipeline(name: &str) -> BackupPipeline {
        serde_saphyr::from_str(&format!(
            r#"apiVersion: reconciler.montagu/v1alpha1
kind: BackupPipeline
metadata: {{name: {name}}}
spec:
  barman: {{server: {name}}}
  baseBackup: {{maxAge: 30d}}
  retention: {{keep: 2, minimumRedundancy: 1}}
  recoveredVolume:
    path: /srv/nightly/{name}
    maxAge: 24h
    replay: {{postgresBin: /usr/lib/postgresql/15/bin}}
  starport: {{root: /srv/starport, target: {name}}}
"#
        ))
        .expect("test pipeline parses")
    }

    fn now() -> Timestamp {
        "2026-11-24T12:00:00Z".parse().expect("timestamp")
    }

    fn observed(barman: Option<Vec<Backup>>) -> Observed {
        let barman = match barman {
            Some(backups) => Observation::observed(BarmanState::new(backups)),
            None => Observation::unavailable(&std::io::Error::other("barman exited 1")),
        };
        Observed {
            barman,
            volume: Observation::observed(VolumeState::Missing),
            starport: Some(Observation::observed(StarportState::NoMetadata {
                reason: "absent".to_string(),
            })),
            machine_id: Some("m".to_string()),

            wal: None,
            mirrors: Vec::new(),
            last_backup_taken: None,
            writers: None,
        }
    }

    fn one_done_backup() -> Vec<Backup> {
        vec![Backup {
            id: "20261124T100000".to_string(),
            status: BackupStatus::Done,
            end_time: Some("2026-11-24T10:00:00Z".parse().expect("timestamp")),
            size_bytes: Some(1),
        }]
    }

    fn feed(metrics: &Metrics, pipeline: &BackupPipeline, observed: &Observed) {
        let cx = PlanContext {
            now: now(),
            local_time_zone: jiff::tz::TimeZone::UTC,
        };
        let plan = plan(pipeline, observed, &cx).into_any();
        metrics.observe(
            &Resource::BackupPipeline(pipeline.clone()),
            &Observations::BackupPipeline(observed.clone()),
            &plan,
            now(),
        );
        if let Some(step) = plan.steps.first() {
            metrics.step(
                pipeline.name().as_str(),
                &StepRecord {
                    planned: step.clone(),
                    started_at: now(),
                    seconds: 1.0,
                    outcome: StepOutcome::Done,
                    detail: String::new(),
                },
            );
        }
        metrics.failures(pipeline.name().as_str(), 0);
    }

    fn lines_for(metrics: &Metrics, pipeline: &str) -> Vec<String> {
        let needle = format!("pipeline=\"{pipeline}\"");
        metrics
            .encode()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(String::from)
            .collect()
    }

    #[test]
    fn a_condition_or_reason_that_goes_away_leaves_no_series_behind() {
        let metrics = Metrics::new();
        let pipeline = pipeline("montagu");
        let observed = observed(Some(one_done_backup()));
        let cx = PlanContext {
            now: now(),
            local_time_zone: jiff::tz::TimeZone::UTC,
        };
        let resource = Resource::BackupPipeline(pipeline.clone());
        let observations = Observations::BackupPipeline(observed.clone());
        let mut stalled = plan(&pipeline, &observed, &cx).into_any();
        stalled.conditions.insert(
            0,
            crate::plan::Condition {
                kind: crate::plan::ConditionType::Stalled,
                status: crate::plan::ConditionStatus::True,
                reason: crate::plan::Reason::WaitingTooLong,
                message: String::new(),
                subject: None,
            },
        );
        metrics.observe(&resource, &observations, &stalled, now());
        let text = metrics.encode();
        assert!(
            text.contains(r#"reconciler_stalled{pipeline="montagu"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"reason="WaitingTooLong""#), "{text}");

        let calm = plan(&pipeline, &observed, &cx).into_any();
        metrics.observe(&resource, &observations, &calm, now());
        let text = metrics.encode();
        assert!(
            text.contains(r#"reconciler_stalled{pipeline="montagu"} 0"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"type="Stalled""#),
            "no frozen Stalled series:\n{text}"
        );
        assert!(!text.contains("WaitingTooLong"), "no stale reason:\n{text}");
    }

    #[test]
    fn a_removed_pipeline_leaves_no_series_behind() {
        let metrics = Metrics::new();
        let (gone, kept) = (pipeline("gone"), pipeline("kept"));
        feed(&metrics, &gone, &observed(Some(one_done_backup())));
        feed(&metrics, &kept, &observed(Some(one_done_backup())));
        let before = lines_for(&metrics, "gone");
        for family in [
            "reconciler_backups{",
            "reconciler_condition{",
            "reconciler_steps_total{",
            "reconciler_step_duration_seconds_count{",
            "reconciler_base_backup_age_seconds{",
        ] {
            assert!(
                before.iter().any(|l| l.starts_with(family)),
                "{family} missing before forget: {before:#?}"
            );
        }

        metrics.forget("gone");

        assert_eq!(lines_for(&metrics, "gone"), Vec::<String>::new());
        assert!(!lines_for(&metrics, "kept").is_empty());
    }

    /// The value of the series starting with `series` (name and labels), if any.
    fn value(metrics: &Metrics, series: &str) -> Option<f64> {
        metrics
            .encode()
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    fn epoch(at: &str) -> f64 {
        at.parse::<Timestamp>().expect("timestamp").as_second() as f64
    }

    fn synced(last_backup: &str) -> Observation<StarportState> {
        Observation::observed(StarportState::Synced {
            metadata: crate::observed::StarportMetadata {
                last_backup: last_backup.to_string(),
                instance_guid: Some("m".to_string()),
                generation: Some("g1".to_string()),
                backup_id: Some("20261124T100000".to_string()),
                recovered_at: Some("2026-11-24T11:00:00Z".parse().expect("timestamp")),
            },
        })
    }

    #[test]
    fn last_success_timestamps_are_exported_and_dropped_when_unobservable() {
        let metrics = Metrics::new();
        let p = pipeline("montagu");
        let mut o = observed(Some(one_done_backup()));
        o.volume = Observation::observed(VolumeState::Marked {
            marker: crate::observed::VolumeMarker {
                generation: "g1".to_string(),
                backup_id: "20261124T100000".to_string(),
                backup_end_time: Some("2026-11-24T10:00:00Z".parse().expect("timestamp")),
                recovered_at: "2026-11-24T11:00:00Z".parse().expect("timestamp"),
                replayed_to_lsn: "0/3000000".to_string(),
                checkpoint_time: None,
                pipeline: "montagu".to_string(),
                standby: None,
            },
            in_use: false,
            users: Vec::new(),
        });
        o.starport = Some(synced("2026-11-24T11:05:00+00:00"));
        o.mirrors = vec![
            crate::observed::MirrorObservation {
                name: "offsite".to_string(),
                state: synced("2026-11-24T11:10:00+00:00"),
            },
            crate::observed::MirrorObservation {
                name: "unread".to_string(),
                state: Observation::unavailable(&std::io::Error::other("ssh failed")),
            },
        ];
        feed(&metrics, &p, &o);

        let series = [
            (
                r#"reconciler_last_backup_end_timestamp_seconds{pipeline="montagu"}"#,
                "2026-11-24T10:00:00Z",
            ),
            (
                r#"reconciler_last_recovery_timestamp_seconds{pipeline="montagu"}"#,
                "2026-11-24T11:00:00Z",
            ),
            (
                r#"reconciler_starport_last_sync_timestamp_seconds{pipeline="montagu"}"#,
                "2026-11-24T11:05:00Z",
            ),
            (
                r#"reconciler_mirror_last_sync_timestamp_seconds{pipeline="montagu",mirror="offsite"}"#,
                "2026-11-24T11:10:00Z",
            ),
        ];
        for (name, at) in series {
            assert_eq!(
                value(&metrics, name),
                Some(epoch(at)),
                "{}",
                metrics.encode()
            );
        }
        assert!(
            !metrics.encode().contains(r#"mirror="unread""#),
            "an unreadable mirror has no timestamp:\n{}",
            metrics.encode()
        );

        // Nothing can be read any more: no timestamp stays frozen at its last value.
        o.barman = Observation::unavailable(&std::io::Error::other("barman exited 1"));
        o.volume = Observation::unavailable(&std::io::Error::other("permission denied"));
        o.starport = Some(Observation::unavailable(&std::io::Error::other("gone")));
        o.mirrors[0].state = Observation::unavailable(&std::io::Error::other("ssh failed"));
        feed(&metrics, &p, &o);
        for (name, _) in series {
            assert_eq!(value(&metrics, name), None, "{}", metrics.encode());
        }

        // Back again, then the pipeline is removed: nothing of it is left.
        feed(&metrics, &p, &observed(Some(one_done_backup())));
        assert!(value(&metrics, series[0].0).is_some());
        metrics.forget("montagu");
        assert_eq!(lines_for(&metrics, "montagu"), Vec::<String>::new());
    }

    #[test]
    fn a_restore_target_exports_when_its_restore_finished_while_it_is_complete() {
        let target: RestoreTarget = serde_saphyr::from_str(
            "apiVersion: reconciler.montagu/v1alpha1
kind: RestoreTarget
metadata: {name: science}
spec:
  source: {root: /srv/starport, target: barman_to_starport, volumeName: montagu_db_volume}
  volume: {path: /srv/consumer/montagu_db_volume}
  maxAge: 24h
",
        )
        .expect("test restore target parses");
        let metrics = Metrics::new();
        let marker = |state| crate::observed::RestoreMarker {
            state,
            generation: "g1".to_string(),
            recovered_at: Some("2026-11-24T11:00:00Z".parse().expect("timestamp")),
            restored_at: Some("2026-11-24T11:30:00Z".parse().expect("timestamp")),
            consumers_to_start: Vec::new(),
            target: "science".to_string(),
        };
        let observed = |marker| RestoreObserved {
            source: synced("2026-11-24T11:05:00+00:00"),
            volume: Observation::observed(RestoreVolumeState::Present {
                marker,
                no_marker_reason: None,
                foreign: false,
                used_by: Vec::new(),
                postmaster_running: false,
            }),
            consumers: Observation::observed(Vec::new()),
        };
        let feed = |o: RestoreObserved| {
            metrics.observe(
                &Resource::RestoreTarget(target.clone()),
                &Observations::RestoreTarget(o),
                &Plan {
                    pipeline: "science".to_string(),
                    conditions: Vec::new(),
                    steps: Vec::new(),
                    waiting_on: Vec::new(),
                    scheduled: Vec::new(),
                    next_deadline: None,
                },
                now(),
            );
        };
        let series = r#"reconciler_last_restore_timestamp_seconds{pipeline="science"}"#;

        feed(observed(Some(marker(RestoreState::Restored))));
        assert_eq!(
            value(&metrics, series),
            Some(epoch("2026-11-24T11:30:00Z")),
            "{}",
            metrics.encode()
        );

        // A restore under way: the volume holds no complete restore.
        feed(observed(Some(marker(RestoreState::Restoring))));
        assert_eq!(value(&metrics, series), None, "{}", metrics.encode());
    }

    #[test]
    fn build_info_names_the_version_and_commit() {
        let line = format!(
            r#"reconciler_build_info{{version="{}",commit="{}"}} 1"#,
            env!("CARGO_PKG_VERSION"),
            GIT_COMMIT
        );
        assert!(!GIT_COMMIT.is_empty());
        assert!(Metrics::new().encode().contains(&line), "{line}");
    }

    #[test]
    fn an_unobservable_barman_drops_the_backup_age_instead_of_freezing_it() {
        let metrics = Metrics::new();
        let p = pipeline("montagu");
        feed(&metrics, &p, &observed(Some(one_done_backup())));
        let has = |prefix: &str| {
            lines_for(&metrics, "montagu")
                .iter()
                .any(|l| l.starts_with(prefix))
        };
        assert!(has("reconciler_base_backup_age_seconds{"));

        feed(&metrics, &p, &observed(None));

        assert!(!has("reconciler_base_backup_age_seconds{"));
        assert!(!has("reconciler_backups{"));
        let unknown = lines_for(&metrics, "montagu").into_iter().any(|l| {
            l.starts_with("reconciler_condition{")
                && l.contains("type=\"BaseBackupFresh\"")
                && l.contains("status=\"Unknown\"")
                && l.ends_with(" 1")
        });
        assert!(unknown, "{:#?}", lines_for(&metrics, "montagu"));
    }
}
