//! One code path for `diff`, `apply` and (later) `run`: observe → plan → execute.
//!
//! `diff` is [`diff_pipeline`]: observe and plan. `apply` is [`apply_pipeline`]:
//! the same, then the first planned step, then observe and plan again, until the plan
//! is empty, a step fails, or the plan only waits. Re-planning after every step means
//! each action is decided on fresh observations, never on a stale snapshot.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::drivers::Drivers;
use crate::execute::execute_step;
use crate::observe::{Observed, error_chain, observe};
use crate::plan::{Plan, PlanContext, PlannedStep, plan};
use crate::spec::BackupPipeline;

/// A safety net against a plan that never converges: a full refresh is at most a
/// few steps (backup, deletes, recover, sync), so this many means a bug.
pub const MAX_STEPS_PER_APPLY: usize = 32;

/// Observes and plans one pipeline.
pub async fn diff_pipeline(
    pipeline: &BackupPipeline,
    drivers: &Drivers,
    cx: &PlanContext,
) -> (Observed, Plan) {
    let observed = observe(pipeline, drivers).await;
    let plan = plan(pipeline, &observed, cx);
    (observed, plan)
}

/// What happened to one executed step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// The step and its reason.
    #[serde(flatten)]
    pub planned: PlannedStep,
    /// When it started.
    pub started_at: Timestamp,
    /// How long it took, in seconds.
    pub seconds: f64,
    /// `done`, `busy` (someone else holds barman's lock) or `failed`.
    pub outcome: StepOutcome,
    /// What it did, or why it failed.
    pub detail: String,
}

/// A step's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StepOutcome {
    /// Completed.
    Done,
    /// Could not start because barman is busy; not a failure.
    Busy,
    /// Failed.
    Failed,
}

/// The result of `apply` for one pipeline.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    /// The pipeline.
    pub pipeline: String,
    /// The steps run, in order.
    pub steps: Vec<StepRecord>,
    /// The last plan made: empty when converged.
    pub final_plan: Plan,
    /// Every condition holds.
    pub converged: bool,
}

/// Receives progress while `apply` runs (a progress bar, a log).
pub trait Progress: Send + Sync {
    /// A step is about to start.
    fn step_started(&self, pipeline: &str, index: usize, planned: &PlannedStep);
    /// A step ended.
    fn step_finished(&self, pipeline: &str, record: &StepRecord);
}

/// Converges one pipeline as far as one pass can, running at most `max_steps`
/// steps (`apply` runs up to [`MAX_STEPS_PER_APPLY`]; `run` runs one, then re-reads
/// the specs before the next).
pub async fn apply_pipeline(
    pipeline: &BackupPipeline,
    drivers: &Drivers,
    context: &(dyn Fn() -> PlanContext + Send + Sync),
    progress: &dyn Progress,
    max_steps: usize,
) -> ApplyReport {
    let name = pipeline.name().to_string();
    let clock = || context().now;
    let mut steps = Vec::new();
    // Held for the whole run: one reconciler at a time works on a volume.
    let _lock = match drivers
        .volume
        .lock(pipeline.spec.recovered_volume.path.as_path())
        .await
    {
        Ok(lock) => lock,
        Err(e) => {
            let (_, mut plan) = diff_pipeline(pipeline, drivers, &context()).await;
            let reason = error_chain(&e);
            tracing::warn!(pipeline = %name, reason = %reason, "not working on this pipeline now");
            plan.waiting_on.push(reason);
            return ApplyReport {
                pipeline: name,
                steps,
                converged: false,
                final_plan: plan,
            };
        }
    };
    loop {
        let (observed, plan) = diff_pipeline(pipeline, drivers, &context()).await;
        let next = plan.steps.first().cloned();
        let stop = steps.len() >= MAX_STEPS_PER_APPLY
            || steps
                .last()
                .is_some_and(|s: &StepRecord| s.outcome != StepOutcome::Done);
        let Some(planned) = next.filter(|_| !stop) else {
            if steps.len() >= MAX_STEPS_PER_APPLY && max_steps >= MAX_STEPS_PER_APPLY {
                tracing::error!(pipeline = %name, "gave up after {MAX_STEPS_PER_APPLY} steps without converging");
            }
            return ApplyReport {
                pipeline: name,
                converged: plan.is_converged(),
                final_plan: plan,
                steps,
            };
        };
        progress.step_started(&name, steps.len(), &planned);
        let started_at = clock();
        let timer = std::time::Instant::now();
        let span = tracing::info_span!("step", pipeline = %name, step = %planned.step);
        let result = {
            let _guard = span.enter();
            tracing::info!(reason = %planned.reason, "starting");
            drop(_guard);
            execute_step(pipeline, &planned.step, &observed, drivers, &clock).await
        };
        let (outcome, detail) = match result {
            Ok(detail) => (StepOutcome::Done, detail),
            Err(e) if e.is_busy() => (StepOutcome::Busy, error_chain(&e)),
            Err(e) => (StepOutcome::Failed, error_chain(&e)),
        };
        let record = StepRecord {
            planned,
            started_at,
            seconds: timer.elapsed().as_secs_f64(),
            outcome,
            detail,
        };
        match outcome {
            StepOutcome::Done => {
                tracing::info!(pipeline = %name, step = %record.planned.step, seconds = record.seconds, detail = %record.detail, "step done")
            }
            StepOutcome::Busy => {
                tracing::warn!(pipeline = %name, step = %record.planned.step, detail = %record.detail, "barman busy; will look again")
            }
            StepOutcome::Failed => {
                tracing::error!(pipeline = %name, step = %record.planned.step, error = %record.detail, "step failed")
            }
        }
        progress.step_finished(&name, &record);
        steps.push(record);
    }
}
