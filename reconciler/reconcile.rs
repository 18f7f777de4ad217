//! One code path for `diff`, `apply` and (later) `run`: observe → plan → execute.
//!
//! `diff` is [`diff_pipeline`]: observe and plan. `apply` is [`apply_pipeline`]:
//! the same, then the first planned step, then observe and plan again, until the plan
//! is empty, a step fails, or the plan only waits. Re-planning after every step means
//! each action is decided on fresh observations, never on a stale snapshot.
//!
//! Over 600 lines with the tests of apply's stop rules against a catalogue in memory
//! (about two fifths of it).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::drivers::Drivers;
use crate::errors::error_chain;
use crate::execute::{ExecuteError, StepDetail, execute_restore_step, execute_step};
use crate::observe::{observe, observe_restore};
use crate::observed::{Observed, RestoreObserved, TakenBackup};
use crate::plan::{
    PipelineStep, Plan, PlanContext, PlannedStep, RestoreStep, Step, plan, plan_restore,
};
use crate::spec::{BackupPipeline, Resource, RestoreTarget};

/// A safety net against a plan that never converges: a full refresh is at most a
/// few steps (backup, deletes, recover, sync), so this many means a bug.
pub const MAX_STEPS_PER_APPLY: usize = 32;

/// What was observed of one document, by kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
// A handful exist per pass: boxing would buy nothing but indirection.
#[allow(clippy::large_enum_variant)]
pub enum Observations {
    /// A backup pipeline's barman, volume, starport and mirrors.
    BackupPipeline(Observed),
    /// A restore target's source, volume and consumers.
    RestoreTarget(RestoreObserved),
}

/// Observes and plans one document of any kind. `taken` is the caller's journal:
/// the base backup it took most recently for this pipeline, if any.
pub async fn diff_pipeline(
    resource: &Resource,
    drivers: &Drivers,
    cx: &PlanContext,
    taken: Option<&TakenBackup>,
) -> (Observations, Plan) {
    observe_and_plan(resource, drivers, cx, taken)
        .await
        .into_untyped()
}

/// How many documents a pass observes at once. Each look starts a few processes
/// (barman, `du`-like walks, ssh to a mirror); pipelines sharing a barman server
/// wait for one catalogue anyway, so more would only crowd a small host.
pub const OBSERVE_AT_ONCE: usize = 8;

/// Observes and plans many documents at once (at most [`OBSERVE_AT_ONCE`]), each
/// with its journal entry, and answers in the order given: the output of a pass
/// does not depend on which look finished first. `diff`, `apply` and each pass of
/// `run` start here; with [`Drivers::for_one_pass`] a barman server is asked once.
pub async fn diff_all<'a>(
    resources: impl IntoIterator<Item = (&'a Resource, Option<&'a TakenBackup>)>,
    drivers: &Drivers,
    cx: &PlanContext,
) -> Vec<(Observations, Plan)> {
    use futures_util::StreamExt;
    futures_util::stream::iter(resources)
        .map(|(resource, taken)| diff_pipeline(resource, drivers, cx, taken))
        .buffered(OBSERVE_AT_ONCE)
        .collect()
        .await
}

/// What was observed of one document and the plan made from it, typed by kind:
/// a step reaches only the executor of its own kind.
// One exists at a time, for one pass: boxing would buy nothing but indirection.
#[allow(clippy::large_enum_variant)]
enum Planned<'a> {
    BackupPipeline {
        pipeline: &'a BackupPipeline,
        observed: Observed,
        plan: Plan<PipelineStep>,
    },
    RestoreTarget {
        target: &'a RestoreTarget,
        observed: RestoreObserved,
        plan: Plan<RestoreStep>,
    },
}

/// The first step of a [`Planned`], with what its executor needs.
enum NextStep<'a> {
    BackupPipeline {
        pipeline: &'a BackupPipeline,
        observed: &'a Observed,
        planned: &'a PlannedStep<PipelineStep>,
    },
    RestoreTarget {
        target: &'a RestoreTarget,
        observed: &'a RestoreObserved,
        planned: &'a PlannedStep<RestoreStep>,
    },
}

async fn observe_and_plan<'a>(
    resource: &'a Resource,
    drivers: &Drivers,
    cx: &PlanContext,
    taken: Option<&TakenBackup>,
) -> Planned<'a> {
    match resource {
        Resource::BackupPipeline(pipeline) => {
            let mut observed = observe(pipeline, drivers).await;
            observed.last_backup_taken = taken.cloned();
            let plan = plan(pipeline, &observed, cx);
            Planned::BackupPipeline {
                pipeline,
                observed,
                plan,
            }
        }
        Resource::RestoreTarget(target) => {
            let observed = observe_restore(target, drivers).await;
            let plan = plan_restore(target, &observed, cx);
            Planned::RestoreTarget {
                target,
                observed,
                plan,
            }
        }
    }
}

impl Planned<'_> {
    fn into_untyped(self) -> (Observations, Plan) {
        match self {
            Planned::BackupPipeline { observed, plan, .. } => {
                (Observations::BackupPipeline(observed), plan.into_any())
            }
            Planned::RestoreTarget { observed, plan, .. } => {
                (Observations::RestoreTarget(observed), plan.into_any())
            }
        }
    }

    fn next_step(&self) -> Option<NextStep<'_>> {
        match self {
            Planned::BackupPipeline {
                pipeline,
                observed,
                plan,
            } => plan.steps.first().map(|planned| NextStep::BackupPipeline {
                pipeline,
                observed,
                planned,
            }),
            Planned::RestoreTarget {
                target,
                observed,
                plan,
            } => plan.steps.first().map(|planned| NextStep::RestoreTarget {
                target,
                observed,
                planned,
            }),
        }
    }
}

impl NextStep<'_> {
    /// The step and its reason, as a step of either kind.
    fn planned(&self) -> PlannedStep {
        match self {
            NextStep::BackupPipeline { planned, .. } => (*planned).clone().into_any(),
            NextStep::RestoreTarget { planned, .. } => (*planned).clone().into_any(),
        }
    }

    async fn execute(
        self,
        drivers: &Drivers,
        clock: &(dyn Fn() -> Timestamp + Send + Sync),
    ) -> Result<StepDetail, ExecuteError> {
        match self {
            NextStep::BackupPipeline {
                pipeline,
                observed,
                planned,
            } => execute_step(pipeline, &planned.step, observed, drivers, clock).await,
            NextStep::RestoreTarget {
                target,
                observed,
                planned,
            } => execute_restore_step(target, &planned.step, observed, drivers, clock).await,
        }
    }
}

/// Takes the work lock of the document's volume.
async fn lock_volume(
    resource: &Resource,
    drivers: &Drivers,
) -> Result<crate::drivers::volume::VolumeLock, crate::drivers::volume::VolumeError> {
    match resource {
        Resource::BackupPipeline(pipeline) => {
            drivers.volume.lock(&pipeline.spec.recovered_volume).await
        }
        Resource::RestoreTarget(target) => drivers.restore_volume.lock(&target.spec.volume).await,
    }
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
    /// `done`, `busy` (someone else holds barman's lock), `interrupted` (by a
    /// shutdown) or `failed`.
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
    /// Stopped by a shutdown of the reconciler; not a failure: the next start
    /// finds the work undone (marker invalid) and plans it again.
    Interrupted,
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
    /// Why no step could start although the plan had some (another process holds
    /// the volume's lock): a wait, not a failure.
    pub blocked: Option<String>,
    /// A failure not tied to one step (the run itself crashed).
    pub failure: Option<String>,
}

impl ApplyReport {
    /// The report of a run that ended as `plan` says, after `steps`.
    pub fn ended(pipeline: String, steps: Vec<StepRecord>, plan: Plan) -> Self {
        Self {
            pipeline,
            steps,
            converged: plan.is_converged(),
            final_plan: plan,
            blocked: None,
            failure: None,
        }
    }

    /// The report of a run that ended without reporting (its task panicked).
    pub fn crashed(pipeline: String, why: &str) -> Self {
        Self {
            final_plan: Plan {
                pipeline: pipeline.clone(),
                conditions: Vec::new(),
                steps: Vec::new(),
                waiting_on: vec![why.to_string()],
                scheduled: Vec::new(),
                next_deadline: None,
            },
            pipeline,
            steps: Vec::new(),
            converged: false,
            blocked: None,
            failure: Some(why.to_string()),
        }
    }
}

/// The id of the base backup a step record says it took.
pub fn taken_backup_id(step: &Step, detail: &str) -> Option<String> {
    match step {
        Step::Pipeline(PipelineStep::TakeBaseBackup) => {
            crate::execute::backup_taken(detail).map(String::from)
        }
        _ => None,
    }
}

/// The newest base backup a run's records say was taken, with when it ended.
pub fn taken_in(steps: &[StepRecord]) -> Option<TakenBackup> {
    steps.iter().rev().find_map(|s| {
        let id = (s.outcome == StepOutcome::Done)
            .then(|| taken_backup_id(&s.planned.step, &s.detail))??;
        let seconds = jiff::SignedDuration::from_secs_f64(s.seconds.max(0.0));
        Some(TakenBackup {
            id,
            finished_at: s.started_at.checked_add(seconds).unwrap_or(s.started_at),
        })
    })
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
/// the specs before the next). Starts no step once `drivers.cancel` fired.
/// `taken` is the base backup the caller took last for this pipeline (`run`
/// remembers it across passes); backups taken here are added to that journal.
pub async fn apply_pipeline(
    pipeline: &Resource,
    drivers: &Drivers,
    context: &(dyn Fn() -> PlanContext + Send + Sync),
    progress: &dyn Progress,
    max_steps: usize,
    taken: Option<TakenBackup>,
) -> ApplyReport {
    let name = pipeline.name().to_string();
    let clock = || context().now;
    let mut steps = Vec::new();
    let mut taken = taken;
    // Held for the whole run: one reconciler at a time works on a volume.
    let _lock = match lock_volume(pipeline, drivers).await {
        Ok(lock) => lock,
        Err(e) => {
            let (_, mut plan) = diff_pipeline(pipeline, drivers, &context(), taken.as_ref()).await;
            if plan.steps.is_empty() {
                // Nothing to do: whoever holds the lock is not in the way.
                return ApplyReport::ended(name, steps, plan);
            }
            let reason = error_chain(&e);
            tracing::warn!(pipeline = %name, reason = %reason, "not working on this pipeline now");
            plan.waiting_on.push(reason.clone());
            return ApplyReport {
                pipeline: name,
                steps,
                converged: false,
                final_plan: plan,
                blocked: Some(reason),
                failure: None,
            };
        }
    };
    let limit = max_steps.min(MAX_STEPS_PER_APPLY);
    loop {
        let planned_now = observe_and_plan(pipeline, drivers, &context(), taken.as_ref()).await;
        let stop = steps.len() >= limit
            || drivers.cancel.is_cancelled()
            || steps
                .last()
                .is_some_and(|s: &StepRecord| s.outcome != StepOutcome::Done);
        let next = planned_now.next_step().filter(|_| !stop);
        let Some(next) = next else {
            if steps.len() >= MAX_STEPS_PER_APPLY {
                tracing::error!(pipeline = %name, "gave up after {MAX_STEPS_PER_APPLY} steps without converging");
            }
            let (_, plan) = planned_now.into_untyped();
            return ApplyReport::ended(name, steps, plan);
        };
        let planned = next.planned();
        progress.step_started(&name, steps.len(), &planned);
        let started_at = clock();
        let timer = std::time::Instant::now();
        let span = tracing::info_span!("step", pipeline = %name, step = %planned.step);
        let result = {
            let _guard = span.enter();
            tracing::info!(reason = %planned.reason, "starting");
            drop(_guard);
            next.execute(drivers, &clock).await
        };
        let (outcome, detail) = match result {
            Ok(detail) => (StepOutcome::Done, detail),
            Err(e) if e.is_busy() => (StepOutcome::Busy, error_chain(&e)),
            // Whatever the error says, a step cut short by a shutdown did not fail.
            Err(e) if drivers.cancel.is_cancelled() => (StepOutcome::Interrupted, error_chain(&e)),
            Err(e) => (StepOutcome::Failed, error_chain(&e)),
        };
        if outcome == StepOutcome::Done
            && let Some(id) = taken_backup_id(&planned.step, &detail)
        {
            taken = Some(TakenBackup {
                id,
                finished_at: clock(),
            });
        }
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
            StepOutcome::Interrupted => {
                tracing::warn!(pipeline = %name, step = %record.planned.step, detail = %record.detail, "step interrupted by shutdown")
            }
            StepOutcome::Failed => {
                tracing::error!(pipeline = %name, step = %record.planned.step, error = %record.detail, "step failed")
            }
        }
        progress.step_finished(&name, &record);
        steps.push(record);
    }
}

#[cfg(test)]
mod tests {
    //! The stop rules of [`apply_pipeline`], with barman replaced by a catalogue in
    //! memory (the real thing is driven by `tests/pipeline.rs`).

    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::drivers::barman::{BarmanDriver, BarmanError};
    use crate::observed::{Backup, BackupStatus};
    use crate::spec::BarmanSpec;

    /// A barman whose backups succeed at once and whose recoveries fail.
    #[derive(Debug, Default)]
    struct CatalogueInMemory {
        backups: Mutex<Vec<Backup>>,
        recoveries: Mutex<u32>,
        /// Days this host's clock runs ahead of barman's and the primary's.
        days_behind: i64,
        taken: Mutex<u32>,
        /// STARTED entries turn DONE once the catalogue was listed this often.
        finish_after_lists: Option<u32>,
        lists: Mutex<u32>,
        deleted: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl BarmanDriver for CatalogueInMemory {
        async fn list_backups(&self, _: &BarmanSpec) -> Result<Vec<Backup>, BarmanError> {
            let mut lists = self.lists.lock().unwrap();
            *lists += 1;
            let mut backups = self.backups.lock().unwrap();
            if self.finish_after_lists.is_some_and(|n| *lists > n) {
                for b in backups
                    .iter_mut()
                    .filter(|b| b.status == BackupStatus::Started)
                {
                    b.status = BackupStatus::Done;
                    b.end_time = Some(now());
                }
            }
            Ok(backups.clone())
        }
        async fn backup_activity(
            &self,
            _: &BarmanSpec,
        ) -> Result<crate::observed::BackupActivity, BarmanError> {
            Ok(crate::observed::BackupActivity::default())
        }
        async fn take_backup(&self, _: &BarmanSpec, _: Duration) -> Result<String, BarmanError> {
            let mut taken = self.taken.lock().unwrap();
            *taken += 1;
            let their_now = now() - jiff::SignedDuration::from_hours(24 * self.days_behind)
                + jiff::SignedDuration::from_secs(i64::from(*taken));
            let id = their_now.strftime("%Y%m%dT%H%M%S").to_string();
            self.backups.lock().unwrap().push(Backup {
                id: id.clone(),
                status: BackupStatus::Done,
                end_time: Some(their_now),
                size_bytes: Some(1),
            });
            Ok(id)
        }
        async fn account(
            &self,
            _: &BarmanSpec,
            _: &str,
        ) -> Result<crate::drivers::command::RunAs, BarmanError> {
            Ok(crate::drivers::command::RunAs { uid: 0, gid: 0 })
        }
        async fn wal_health(
            &self,
            _: &BarmanSpec,
        ) -> Result<crate::observed::WalHealth, BarmanError> {
            Err(BarmanError::Failed {
                action: "check",
                message: "not in this test".to_string(),
            })
        }
        async fn cron(&self, _: &BarmanSpec, _: Duration) -> Result<(), BarmanError> {
            Ok(())
        }
        async fn reset_slot(&self, _: &BarmanSpec) -> Result<(), BarmanError> {
            Ok(())
        }
        async fn delete_backup(&self, _: &BarmanSpec, id: &str) -> Result<(), BarmanError> {
            self.deleted.lock().unwrap().push(id.to_string());
            self.backups.lock().unwrap().retain(|b| b.id != id);
            Ok(())
        }
        async fn switch_wal(&self, _: &BarmanSpec) -> Result<Option<String>, BarmanError> {
            Ok(None)
        }
        async fn recover(
            &self,
            _: &BarmanSpec,
            _: &str,
            _: &Path,
            _: Duration,
        ) -> Result<(), BarmanError> {
            *self.recoveries.lock().unwrap() += 1;
            Err(BarmanError::Failed {
                action: "recover",
                message: "not in this test".to_string(),
            })
        }
    }

    struct Silent;
    impl Progress for Silent {
        fn step_started(&self, _: &str, _: usize, _: &PlannedStep) {}
        fn step_finished(&self, _: &str, _: &StepRecord) {}
    }

    fn now() -> Timestamp {
        "2026-11-24T12:00:00Z".parse().unwrap()
    }

    fn context() -> PlanContext {
        PlanContext {
            now: now(),
            local_time_zone: jiff::tz::TimeZone::UTC,
        }
    }

    fn setup() -> (tempfile::TempDir, Resource, Drivers, Arc<CatalogueInMemory>) {
        let dir = tempfile::tempdir().unwrap();
        let pipeline: crate::spec::BackupPipeline = serde_saphyr::from_str(&format!(
            r#"apiVersion: reconciler.montagu/v1alpha1
kind: BackupPipeline
metadata: {{name: montagu}}
spec:
  barman: {{server: montagu}}
  baseBackup: {{maxAge: 30d}}
  retention: {{keep: 2, minimumRedundancy: 1}}
  recoveredVolume:
    path: {}/volume
    maxAge: 24h
    owner: root
    replay: {{postgresBin: /usr/lib/postgresql/15/bin}}
"#,
            dir.path().display()
        ))
        .unwrap();
        let barman = Arc::new(CatalogueInMemory::default());
        let drivers = Drivers {
            barman: barman.clone(),
            ..Drivers::local(CancellationToken::new())
        };
        (dir, Resource::BackupPipeline(pipeline), drivers, barman)
    }

    #[tokio::test]
    async fn stops_after_max_steps_even_when_more_are_planned() {
        let (_dir, pipeline, drivers, barman) = setup();

        let report = apply_pipeline(&pipeline, &drivers, &context, &Silent, 1, None).await;

        assert_eq!(report.steps.len(), 1, "{:#?}", report.steps);
        assert_eq!(report.steps[0].outcome, StepOutcome::Done);
        assert!(!report.final_plan.steps.is_empty(), "recovery still to do");
        assert_eq!(*barman.recoveries.lock().unwrap(), 0);
    }

    #[tokio::test]
    async fn a_backup_that_looks_stale_the_moment_it_is_taken_is_taken_once_not_for_ever() {
        // This host's clock runs 40 days ahead: each new backup looks 40 days old.
        let (_dir, pipeline, mut drivers, _) = setup();
        let barman = Arc::new(CatalogueInMemory {
            days_behind: 40,
            ..Default::default()
        });
        drivers.barman = barman.clone();

        let report = apply_pipeline(&pipeline, &drivers, &context, &Silent, 32, None).await;

        assert_eq!(*barman.taken.lock().unwrap(), 1, "{:#?}", report.steps);
        let fresh = report
            .final_plan
            .condition(crate::plan::ConditionType::BaseBackupFresh)
            .unwrap();
        assert_eq!(fresh.reason, "ClockSkew", "{fresh:#?}");
        assert!(fresh.message.contains("ahead"), "{}", fresh.message);

        // `run` hands its journal to the next pass: still no second backup.
        let taken = taken_in(&report.steps).expect("the journal names the backup");
        let again = apply_pipeline(&pipeline, &drivers, &context, &Silent, 32, Some(taken)).await;
        assert!(
            again
                .steps
                .iter()
                .all(|s| s.planned.step != PipelineStep::TakeBaseBackup),
            "{:#?}",
            again.steps
        );
        assert_eq!(*barman.taken.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn a_started_backup_that_finishes_after_the_plan_is_never_deleted() {
        // Planned as dead (STARTED in both lists, no lock seen), it turns DONE
        // before the delete: the executor's own look keeps it.
        let (_dir, pipeline, mut drivers, _) = setup();
        let barman = Arc::new(CatalogueInMemory {
            finish_after_lists: Some(2),
            ..Default::default()
        });
        barman.backups.lock().unwrap().extend([
            Backup {
                id: "20261124T100000".to_string(),
                status: BackupStatus::Done,
                end_time: Some(now() - jiff::SignedDuration::from_hours(1)),
                size_bytes: Some(1),
            },
            Backup {
                id: "20261124T110000".to_string(),
                status: BackupStatus::Started,
                end_time: None,
                size_bytes: None,
            },
        ]);
        drivers.barman = barman.clone();

        let report = apply_pipeline(&pipeline, &drivers, &context, &Silent, 1, None).await;

        assert_eq!(report.steps.len(), 1, "{:#?}", report.steps);
        assert_eq!(
            report.steps[0].planned.step,
            PipelineStep::DeleteBackup {
                backup_id: "20261124T110000".to_string()
            }
        );
        assert_eq!(report.steps[0].outcome, StepOutcome::Failed);
        assert!(
            report.steps[0].detail.contains("no longer STARTED"),
            "{}",
            report.steps[0].detail
        );
        assert!(barman.deleted.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn starts_nothing_after_a_shutdown() {
        let (_dir, pipeline, drivers, barman) = setup();
        drivers.cancel.cancel();

        let report = apply_pipeline(&pipeline, &drivers, &context, &Silent, 32, None).await;

        assert!(report.steps.is_empty(), "{:#?}", report.steps);
        assert!(barman.backups.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_volume_locked_elsewhere_is_reported_as_blocked() {
        let (_dir, pipeline, drivers, _barman) = setup();
        let _held = lock_volume(&pipeline, &drivers).await.unwrap();

        let report = apply_pipeline(&pipeline, &drivers, &context, &Silent, 32, None).await;

        assert!(report.steps.is_empty());
        let blocked = report.blocked.expect("blocked");
        assert!(blocked.contains("another reconciler"), "{blocked}");
        assert!(report.failure.is_none());
    }
}
