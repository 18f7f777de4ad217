//! Prometheus metrics, in the text exposition format.
//!
//! Every age is exported beside its allowed maximum, so an alert is one comparison
//! (`reconciler_volume_age_seconds > reconciler_volume_max_age_seconds`). Values are
//! refreshed from each pass's observation; nothing here observes anything itself.

use std::sync::atomic::AtomicU64;

use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::observe::{BackupStatus, Observed, StarportState, VolumeState};
use crate::plan::{ConditionStatus, Plan};
use crate::reconcile::{StepOutcome, StepRecord};
use crate::spec::BackupPipeline;

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
    status: String,
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
    backups: Family<BackupLabels, Gauge>,
    condition: Family<ConditionLabels, Gauge>,
    steps: Family<StepLabels, Counter>,
    step_seconds: Family<StepLabels, Histogram, fn() -> Histogram>,
    last_converged: Family<PipelineLabel, FloatGauge>,
    failures: Family<PipelineLabel, Gauge>,
    last_pass: FloatGauge,
    spec_problems: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            backup_age: Family::default(),
            backup_max_age: Family::default(),
            volume_age: Family::default(),
            volume_max_age: Family::default(),
            starport_age: Family::default(),
            starport_max_age: Family::default(),
            backups: Family::default(),
            condition: Family::default(),
            steps: Family::default(),
            step_seconds: Family::new_with_constructor(step_histogram as fn() -> Histogram),
            last_converged: Family::default(),
            failures: Family::default(),
            last_pass: FloatGauge::default(),
            spec_problems: Gauge::default(),
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
        registry.register(
            "reconciler_spec_problems",
            "Spec problems found by the last pass",
            m.spec_problems.clone(),
        );
        Self { registry, ..m }
    }

    /// Refreshes a pipeline's gauges from one observation and plan.
    pub fn observe(
        &self,
        pipeline: &BackupPipeline,
        observed: &Observed,
        plan: &Plan,
        now: Timestamp,
    ) {
        let label = PipelineLabel {
            pipeline: pipeline.name().to_string(),
        };
        let seconds =
            |from: Timestamp| (now.as_millisecond() - from.as_millisecond()) as f64 / 1000.0;
        let max = |d: crate::spec::HumanDuration| d.to_std().as_secs_f64();
        self.backup_max_age
            .get_or_create(&label)
            .set(max(pipeline.spec.base_backup.max_age));
        self.volume_max_age
            .get_or_create(&label)
            .set(max(pipeline.spec.recovered_volume.max_age));

        if let Some(state) = observed.barman.value() {
            let newest = state
                .backups
                .iter()
                .filter(|b| b.status == BackupStatus::Done)
                .filter_map(|b| b.end_time)
                .max();
            match newest {
                Some(end) => {
                    self.backup_age.get_or_create(&label).set(seconds(end));
                }
                None => {
                    self.backup_age.remove(&label);
                }
            }
            for (status, name) in [
                (BackupStatus::Done, "done"),
                (BackupStatus::Failed, "failed"),
                (BackupStatus::Started, "started"),
                (BackupStatus::WaitingForWals, "waiting_for_wals"),
            ] {
                let count = state.backups.iter().filter(|b| b.status == status).count();
                self.backups
                    .get_or_create(&BackupLabels {
                        pipeline: label.pipeline.clone(),
                        status: name.to_string(),
                    })
                    .set(count as i64);
            }
        }
        match observed.volume.value() {
            Some(VolumeState::Marked { marker, .. }) => {
                self.volume_age
                    .get_or_create(&label)
                    .set(seconds(marker.recovered_at));
            }
            Some(_) => {
                self.volume_age.remove(&label);
            }
            None => {}
        }
        if pipeline.spec.starport.is_some() {
            self.starport_max_age
                .get_or_create(&label)
                .set(max(pipeline.spec.recovered_volume.max_age));
            match observed.starport.as_ref().and_then(|s| s.value()) {
                Some(StarportState::Synced { metadata }) => match metadata.recovered_at {
                    Some(at) => {
                        self.starport_age.get_or_create(&label).set(seconds(at));
                    }
                    None => {
                        self.starport_age.remove(&label);
                    }
                },
                Some(StarportState::NoMetadata { .. }) => {
                    self.starport_age.remove(&label);
                }
                None => {}
            }
        }
        for c in &plan.conditions {
            for status in [
                ConditionStatus::True,
                ConditionStatus::False,
                ConditionStatus::Unknown,
            ] {
                self.condition
                    .get_or_create(&ConditionLabels {
                        pipeline: label.pipeline.clone(),
                        condition: ConditionKey {
                            r#type: c.kind.to_string(),
                            status: format!("{status:?}"),
                        },
                    })
                    .set(i64::from(c.status == status));
            }
        }
        if plan.is_converged() {
            self.last_converged
                .get_or_create(&label)
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
    pub fn pass_completed(&self, now: Timestamp, spec_problems: usize) {
        self.last_pass.set(now.as_millisecond() as f64 / 1000.0);
        self.spec_problems.set(spec_problems as i64);
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
            &self.last_converged,
        ] {
            family.remove(&label);
        }
        self.failures.remove(&label);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
