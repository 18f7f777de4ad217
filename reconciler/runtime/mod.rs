//! `reconciler run`: reconcile continuously, and say what is going on.
//!
//! The loop wakes on a spec change, SIGHUP, a pipeline's next deadline, a retry
//! after a failure, or the periodic resync ([`schedule`]). Each wake is a pass: it
//! re-reads the specs and re-observes every pipeline (triggers carry no data), plans,
//! records status and metrics, and hands pipelines with steps to do to a worker. A
//! worker runs the same code as `apply` ([`crate::reconcile::apply_pipeline`]), so
//! there is one code path. At most one worker runs per pipeline, at most
//! `max_parallel` in all; while one runs for hours, the loop keeps observing,
//! serving `/metrics` and noticing spec changes.
//!
//! Failures back off per pipeline ([`backoff`]); barman being busy is a wait, not a
//! failure; an invalid spec waits for the file to change. On shutdown no new step
//! starts, running ones are cancelled (a replay stops its postgres cleanly and leaves
//! the marker invalid), and the loop exits within a bound.
//!
//! It is long (about 800 lines) because the loop, the workers and the status record
//! share the per-pipeline bookkeeping; the parts without it (backoff, schedule,
//! triggers, status files, metrics, HTTP, systemd) are modules of their own.

pub mod backoff;
pub mod crd_status;
pub mod http;
pub mod journal;
pub mod lock;
pub mod metrics;
pub mod notify;
pub mod schedule;
pub mod status;
pub mod trigger;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::backoff::RetryBackoff;
use self::lock::{LockError, StateLock};
use self::metrics::Metrics;
use self::schedule::{Scheduler, Wake};
use self::status::{
    InProgress, PipelineStatus, git_commit, merge_conditions, spec_digest, write_status,
};
use crate::clock::context_now;
use crate::drivers::Drivers;
use crate::fleet::{FleetConfig, FleetError, Ownership};
use crate::observed::TakenBackup;
use crate::plan::stalled::waiting_since;
use crate::plan::{
    ConditionStatus, ConditionType, Plan, PlannedStep, StallHistory, stalled_condition,
};
use crate::reconcile::{
    ApplyReport, Progress, StepOutcome, StepRecord, apply_pipeline, diff_all, taken_in,
};
use crate::spec::{LoadedResource, load_specs};

/// How `run` is configured.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Spec files or directories.
    pub specs: Vec<PathBuf>,
    /// Where status and the lock live.
    pub state_dir: PathBuf,
    /// Where `/metrics`, `/healthz` and `/status` are served.
    pub listen: SocketAddr,
    /// Look at everything at least this often.
    pub resync: Duration,
    /// At most this many pipelines work at once.
    pub max_parallel: usize,
    /// After SIGTERM, wait at most this long for running steps to stop.
    pub shutdown_timeout: Duration,
    /// `/healthz` fails once no pass completed for this long; default [`stall_limit`].
    pub stall_after: Option<Duration>,
}

/// How long a pass may be missing before `/healthz` says the loop stalled.
pub fn stall_limit(resync: Duration) -> Duration {
    resync * 3 + Duration::from_secs(60)
}

/// Why `run` could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state directory is locked by another instance.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The metrics address could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The spec paths could not be watched.
    #[error(transparent)]
    Watch(#[from] trigger::WatchError),
    /// The fleet could not be joined.
    #[error("cannot join the fleet")]
    Fleet(#[source] FleetError),
}

/// State shared with the HTTP endpoints.
#[derive(Debug)]
pub struct Shared {
    /// The metrics.
    pub metrics: Metrics,
    /// The latest status of every pipeline.
    pub statuses: Mutex<BTreeMap<String, PipelineStatus>>,
    last_pass: Mutex<tokio::time::Instant>,
    /// `/healthz` fails once no pass completed for this long.
    pub stall_after: Duration,
    /// Set while the last pass found no document at all: `/healthz` fails, loudly.
    pub no_specs: Mutex<Option<String>>,
    /// Fleet mode only: set while etcd cannot be reached (no step starts here);
    /// `/healthz` fails and says so.
    pub fleet_trouble: Mutex<Option<String>>,
}

impl Shared {
    /// Time since the loop last completed a pass.
    pub fn last_pass_age(&self) -> Duration {
        self.last_pass
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or(Duration::MAX)
    }

    fn update_status(
        &self,
        state_dir: &std::path::Path,
        name: &str,
        edit: impl FnOnce(&mut PipelineStatus),
    ) {
        let Ok(mut statuses) = self.statuses.lock() else {
            return;
        };
        let Some(status) = statuses.get_mut(name) else {
            return;
        };
        edit(status);
        status.updated_at = Timestamp::now();
        if let Err(e) = write_status(state_dir, status) {
            tracing::error!(pipeline = name, error = %e, "cannot write status");
        }
    }
}

/// How `last_error` starts while a pipeline's spec is invalid.
const INVALID_SPEC: &str = "invalid spec, waiting for the file to change";

/// Per-pipeline bookkeeping of the loop.
#[derive(Debug, Default)]
struct PipelineRuntime {
    backoff: RetryBackoff,
    working: bool,
    /// Do not start steps before this (backoff after a failure, or barman busy).
    not_before: Option<tokio::time::Instant>,
    /// The base backup this instance took last for the pipeline: the planner's
    /// witness against clocks that make a new backup look old at once.
    last_backup_taken: Option<TakenBackup>,
}

/// Reports a worker's steps into status and metrics as they happen.
struct WorkerProgress {
    shared: Arc<Shared>,
    state_dir: PathBuf,
}

impl Progress for WorkerProgress {
    fn step_started(&self, pipeline: &str, _index: usize, planned: &PlannedStep) {
        journal::started(pipeline, &planned.step.to_string());
        self.shared.update_status(&self.state_dir, pipeline, |s| {
            s.in_progress = Some(InProgress {
                step: planned.step.to_string(),
                reason: planned.reason.clone(),
                since: Timestamp::now(),
            });
        });
    }

    fn step_finished(&self, pipeline: &str, record: &StepRecord) {
        journal::finished(pipeline, &record.planned.step.to_string());
        self.shared.metrics.step(pipeline, record);
        self.shared.update_status(&self.state_dir, pipeline, |s| {
            s.in_progress = None;
            s.last_steps.push(record.clone());
        });
    }
}

/// Runs until `shutdown` is cancelled. `drivers.cancel` must be `shutdown` (or a
/// child of it) so running steps stop too.
pub async fn run(
    config: RunConfig,
    drivers: Drivers,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    run_in_fleet(config, None, drivers, shutdown).await
}

/// [`run`], and with `fleet` one of several instances: a step starts only for a
/// pipeline this instance owns ([`crate::fleet`]).
pub async fn run_in_fleet(
    config: RunConfig,
    fleet: Option<FleetConfig>,
    drivers: Drivers,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let _lock = StateLock::acquire(&config.state_dir)?;
    let listener = http::bind(config.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.listen,
            source,
        })?;
    let shared = Arc::new(Shared {
        metrics: if fleet.is_some() {
            Metrics::for_fleet()
        } else {
            Metrics::new()
        },
        statuses: Mutex::new(
            status::read_statuses(&config.state_dir)
                .unwrap_or_default()
                .into_iter()
                .map(|s| {
                    (
                        s.pipeline.clone(),
                        PipelineStatus {
                            in_progress: None,
                            ..s
                        },
                    )
                })
                .collect(),
        ),
        last_pass: Mutex::new(tokio::time::Instant::now()),
        stall_after: config
            .stall_after
            .unwrap_or_else(|| stall_limit(config.resync)),
        no_specs: Mutex::new(None),
        fleet_trouble: Mutex::new(None),
    });
    tracing::info!(listen = %config.listen, state_dir = %config.state_dir.display(), "reconciler running");
    let server = tokio::spawn(http::serve(listener, shared.clone(), shutdown.clone()));
    notify::spawn_watchdog(shared.clone(), shutdown.clone());
    let mut announced = false;

    // Spec changes → (debounced) triggers; SIGHUP too.
    let (raw_tx, raw_rx) = mpsc::unbounded_channel();
    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel();
    let _watcher = trigger::SpecWatcher::start(&config.specs, raw_tx)?;
    tokio::spawn(trigger::coalesce(
        raw_rx,
        wake_tx.clone(),
        trigger::SPEC_QUIET_PERIOD,
    ));
    spawn_sighup(wake_tx.clone());
    let fleet = match fleet {
        Some(f) => Some(
            crate::fleet::join(f, wake_tx.clone(), shutdown.clone())
                .await
                .map_err(RunError::Fleet)?,
        ),
        None => None,
    };

    let mut scheduler = Scheduler::new(config.resync);
    let mut pipelines: HashMap<String, PipelineRuntime> = HashMap::new();
    let mut workers: Workers = Workers::default();
    let permits = Arc::new(Semaphore::new(config.max_parallel.max(1)));
    let progress = Arc::new(WorkerProgress {
        shared: shared.clone(),
        state_dir: config.state_dir.clone(),
    });

    let mut wake = Wake::Triggered;
    loop {
        let span = tracing::info_span!("pass", wake = ?wake);
        async {
            pass(
                &config,
                &drivers,
                &shared,
                &mut scheduler,
                &mut pipelines,
                &mut workers,
                &permits,
                &progress,
                fleet.as_ref(),
            )
            .await;
        }
        .instrument(span)
        .await;
        scheduler.pass_done();
        if let Ok(mut t) = shared.last_pass.lock() {
            *t = tokio::time::Instant::now();
        }
        let summary = pass_summary(&shared);
        if announced {
            notify::status(&summary);
        } else {
            // Ready once /metrics answers and every pipeline has been looked at.
            notify::ready(&summary);
            announced = true;
        }
        wake = tokio::select! {
            // A shutdown wins over anything else that is ready at the same time.
            biased;
            () = shutdown.cancelled() => Wake::Shutdown,
            // Cancel-safe: a finished worker stays in the set until joined.
            Some(joined) = workers.set.join_next_with_id(), if !workers.set.is_empty() => {
                let (name, report) = workers.finished(joined);
                worker_finished(&config, &shared, &mut pipelines, &name, &report);
                Wake::Triggered
            }
            w = scheduler.wait(&mut wake_rx, &shutdown) => w,
        };
        if wake == Wake::Shutdown {
            break;
        }
    }

    notify::stopping();
    tracing::info!(
        running = workers.set.len(),
        "shutting down: no new steps; cancelling running ones"
    );
    let drained = tokio::time::timeout(config.shutdown_timeout, async {
        while let Some(joined) = workers.set.join_next_with_id().await {
            let (name, report) = workers.finished(joined);
            worker_finished(&config, &shared, &mut pipelines, &name, &report);
        }
    })
    .await;
    if drained.is_err() {
        tracing::error!(
            timeout_secs = config.shutdown_timeout.as_secs(),
            "steps still running at the shutdown timeout; abandoning them"
        );
        // Dropping a step's future kills its local commands' process groups and
        // its exec'd commands' process trees.
        workers.set.abort_all();
        while workers.set.join_next().await.is_some() {}
    }
    let _ = server.await;
    tracing::info!("reconciler stopped");
    Ok(())
}

/// One line for `systemctl status`: how many documents are ready, stalled, working.
fn pass_summary(shared: &Shared) -> String {
    if let Some(why) = shared.no_specs.lock().ok().and_then(|n| n.clone()) {
        return why;
    }
    let Ok(statuses) = shared.statuses.lock() else {
        return String::new();
    };
    let has = |s: &PipelineStatus, kind: ConditionType, status: ConditionStatus| {
        s.conditions
            .iter()
            .any(|c| c.condition.kind == kind && c.condition.status == status)
    };
    let ready = statuses
        .values()
        .filter(|s| has(s, ConditionType::Ready, ConditionStatus::True))
        .count();
    let stalled = statuses
        .values()
        .filter(|s| has(s, ConditionType::Stalled, ConditionStatus::True))
        .count();
    let working = statuses
        .values()
        .filter(|s| s.in_progress.is_some())
        .count();
    format!(
        "{ready}/{} ready, {stalled} stalled, {working} working",
        statuses.len()
    )
}

fn spawn_sighup(wake: mpsc::UnboundedSender<()>) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reconciling now");
            if wake.send(()).is_err() {
                return;
            }
        }
    });
}

/// The running workers, and which pipeline each works on (so that a worker that
/// panicked still releases its pipeline).
#[derive(Default)]
struct Workers {
    set: JoinSet<(String, ApplyReport)>,
    names: HashMap<tokio::task::Id, String>,
}

impl Workers {
    /// The pipeline and report of a joined worker; a panic becomes a failed run.
    fn finished(
        &mut self,
        joined: Result<(tokio::task::Id, (String, ApplyReport)), tokio::task::JoinError>,
    ) -> (String, ApplyReport) {
        match joined {
            Ok((id, result)) => {
                self.names.remove(&id);
                result
            }
            Err(e) => {
                let name = self.names.remove(&e.id()).unwrap_or_default();
                let why = if e.is_panic() {
                    "the worker panicked (a bug: please report it)"
                } else {
                    "the worker was cancelled"
                };
                tracing::error!(pipeline = %name, error = %e, "{why}");
                (name.clone(), ApplyReport::crashed(name, why))
            }
        }
    }
}

/// One pass: load, observe, plan, record; start workers where there is work.
#[allow(clippy::too_many_arguments)]
async fn pass(
    config: &RunConfig,
    drivers: &Drivers,
    shared: &Arc<Shared>,
    scheduler: &mut Scheduler,
    pipelines: &mut HashMap<String, PipelineRuntime>,
    workers: &mut Workers,
    permits: &Arc<Semaphore>,
    progress: &Arc<WorkerProgress>,
    fleet: Option<&Ownership>,
) {
    let specs = load_specs(&config.specs);
    // Said as soon as the pass has read the edit, before it observes anything.
    log_spec_changes(shared, &specs.resources);
    if let Ok(mut no_specs) = shared.no_specs.lock() {
        *no_specs = specs.nothing_found.then(|| {
            specs
                .problems
                .first()
                .map(|p| p.message.clone())
                .unwrap_or_default()
        });
    }
    for problem in &specs.problems {
        if specs.nothing_found {
            tracing::error!(problem = %problem, "nothing to reconcile: /healthz fails until specs appear");
        } else {
            tracing::error!(problem = %problem, "invalid spec: its pipeline waits until the file changes");
        }
    }
    let names: Vec<String> = specs
        .resources
        .iter()
        .map(|p| p.resource.name().to_string())
        .collect();
    forget_removed(config, shared, pipelines, &names, &specs.problems);
    if let Some(fleet) = fleet {
        fleet_pass(fleet, shared, &specs.resources);
    }
    scheduler.retain(&names);
    let commit = config.specs.first().and_then(|p| git_commit(p));
    let cx = context_now();
    // Observation only: workers execute with `drivers`, uncached.
    let pass = drivers.for_one_pass();

    // Every pipeline's journal first, so that all of them are observed at once.
    let journals: Vec<Option<TakenBackup>> = specs
        .resources
        .iter()
        .map(|loaded| {
            let name = loaded.resource.name().to_string();
            let runtime = pipelines
                .entry(name.clone())
                .or_insert_with(|| PipelineRuntime {
                    // After a restart, the journal is the status the last instance wrote.
                    last_backup_taken: shared
                        .statuses
                        .lock()
                        .ok()
                        .and_then(|s| s.get(&name).and_then(|s| taken_in(&s.last_steps))),
                    ..Default::default()
                });
            runtime.last_backup_taken.clone()
        })
        .collect();
    let looks = diff_all(
        specs
            .resources
            .iter()
            .zip(&journals)
            .map(|(loaded, taken)| (&loaded.resource, taken.as_ref())),
        &pass,
        &cx,
    )
    .await;

    for (loaded, (observed, mut plan)) in specs.resources.into_iter().zip(looks) {
        let name = loaded.resource.name().to_string();
        let runtime = pipelines.entry(name.clone()).or_default();
        let since = judge_stall(shared, &loaded, runtime.working, &mut plan, cx.now);
        // Fleet mode: a step waits until this instance owns the pipeline.
        let fleet_wait = fleet.and_then(|f| f.wait_reason(&name));
        if let Some(why) = &fleet_wait
            && !plan.steps.is_empty()
        {
            plan.waiting_on.push(why.clone());
        }
        shared
            .metrics
            .observe(&loaded.resource, &observed, &plan, cx.now);
        record_plan(
            config,
            shared,
            &loaded,
            &plan,
            since,
            commit.clone(),
            cx.now,
        );
        if let Some(fleet) = fleet {
            publish_status(fleet, shared, &name).await;
        }

        if let Some(deadline) = &plan.next_deadline {
            let wait = (deadline.at.as_millisecond() - cx.now.as_millisecond()).max(0) as u64;
            // A second late, so the deadline has passed when the pass looks.
            scheduler.due_at(
                &name,
                tokio::time::Instant::now() + Duration::from_millis(wait) + Duration::from_secs(1),
            );
        }
        if runtime.working
            || plan.steps.is_empty()
            || drivers.cancel.is_cancelled()
            || fleet_wait.is_some()
        {
            continue;
        }
        if let Some(at) = runtime.not_before
            && at > tokio::time::Instant::now()
        {
            scheduler.due_at(&name, at);
            continue;
        }
        // Taken here, not in the worker: a worker never waits for a slot holding a
        // spec that may be stale by then. Without a slot, a later pass (at the
        // latest the one after a worker finishes) picks the pipeline up.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(pipeline = %name, "all worker slots busy; waiting for one");
            continue;
        };
        let mut drivers = drivers.clone();
        if let Some(fleet) = fleet {
            // The claim is etcd's word that this instance still owns the pipeline;
            // its token stops the step where a shutdown would if ownership is lost.
            match fleet
                .claim_step(&name, &plan.steps[0].step.to_string())
                .await
            {
                Ok(fence) => drivers.cancel = fence,
                Err(why) => {
                    tracing::info!(pipeline = %name, reason = %why, "step not started");
                    continue;
                }
            }
        }
        let fleet = fleet.cloned();
        runtime.working = true;
        runtime.not_before = None;
        let progress = progress.clone();
        let taken = runtime.last_backup_taken.clone();
        let pipeline = loaded.resource;
        let span = tracing::info_span!(parent: None, "worker", pipeline = %name);
        let handle = workers.set.spawn(
            async move {
                let _permit = permit;
                // One step, then back to the loop, which re-reads the specs first.
                let report = apply_pipeline(
                    &pipeline,
                    &drivers,
                    &context_now,
                    progress.as_ref(),
                    1,
                    taken,
                )
                .await;
                if let Some(fleet) = fleet {
                    fleet.step_ended(pipeline.name().as_str());
                }
                (pipeline.name().to_string(), report)
            }
            .instrument(span),
        );
        workers.names.insert(handle.id(), name);
    }
    shared
        .metrics
        .pass_completed(cx.now, specs.problems.len(), names.len());
}

/// Fleet mode, once per pass: campaign for the documents placement allows, and
/// tell `/healthz` and the metrics how the fleet stands.
fn fleet_pass(fleet: &Ownership, shared: &Shared, documents: &[LoadedResource]) {
    let wanted: Vec<(String, Option<Vec<String>>)> = documents
        .iter()
        .map(|l| (l.resource.name().to_string(), l.resource.placement_hosts()))
        .collect();
    fleet.want(&wanted);
    let health = fleet.health();
    shared.metrics.fleet(health.owned, health.etcd_up);
    if let Ok(mut trouble) = shared.fleet_trouble.lock() {
        *trouble = health.trouble;
    }
}

/// Fleet mode: the owner publishes what it just recorded to etcd (a guarded
/// write; a non-owner publishes nothing).
async fn publish_status(fleet: &Ownership, shared: &Shared, name: &str) {
    let status = shared
        .statuses
        .lock()
        .ok()
        .and_then(|s| s.get(name).and_then(|s| serde_json::to_value(s).ok()));
    if let Some(status) = status {
        fleet.publish(name, &status).await;
    }
}

/// Adds `Stalled` to `plan` when its history says so (never while a step of
/// this instance runs: the step has its own timeout); returns since when each of
/// the plan's waits has lasted.
fn judge_stall(
    shared: &Shared,
    loaded: &LoadedResource,
    working: bool,
    plan: &mut Plan,
    now: Timestamp,
) -> BTreeMap<String, Timestamp> {
    let name = loaded.resource.name().as_str();
    let previous = shared
        .statuses
        .lock()
        .ok()
        .and_then(|s| s.get(name).cloned());
    let since = waiting_since(
        &previous
            .as_ref()
            .map(|p| p.waiting_since.clone())
            .unwrap_or_default(),
        plan,
        now,
    );
    if working {
        return since;
    }
    let history = StallHistory {
        consecutive_failures: previous.as_ref().map_or(0, |p| p.consecutive_failures),
        last_error: previous.as_ref().and_then(|p| p.last_error.clone()),
        waiting_since: since.clone(),
    };
    if let Some(stalled) = stalled_condition(plan, &history, loaded.resource.stalled_after(), now) {
        let at = plan
            .conditions
            .iter()
            .position(|c| c.kind == ConditionType::Ready)
            .unwrap_or(plan.conditions.len());
        plan.conditions.insert(at, stalled);
    }
    since
}

/// One log line per condition that changed status or reason (or went away):
/// info when it holds, warn when it does not or cannot be told.
fn log_transitions(name: &str, previous: Option<&[status::StatusCondition]>, plan: &Plan) {
    let previous = previous.unwrap_or_default();
    for c in &plan.conditions {
        let old = previous
            .iter()
            .find(|o| o.condition.kind == c.kind && o.condition.subject == c.subject);
        let changed =
            old.is_none_or(|o| o.condition.status != c.status || o.condition.reason != c.reason);
        if !changed {
            continue;
        }
        let from = old.map_or("absent".to_string(), |o| {
            format!("{:?} {}", o.condition.status, o.condition.reason)
        });
        let stalled_alarm = c.kind == ConditionType::Stalled;
        if c.status == ConditionStatus::True && !stalled_alarm {
            tracing::info!(pipeline = name, condition = %c.label(), status = ?c.status, reason = %c.reason, from = %from, message = %c.message, "condition changed");
        } else {
            tracing::warn!(pipeline = name, condition = %c.label(), status = ?c.status, reason = %c.reason, from = %from, message = %c.message, "condition changed");
        }
    }
    for o in previous {
        let gone = !plan
            .conditions
            .iter()
            .any(|c| c.kind == o.condition.kind && c.subject == o.condition.subject);
        if gone {
            tracing::info!(pipeline = name, condition = %o.condition.label(), from = %format!("{:?} {}", o.condition.status, o.condition.reason), "condition cleared");
        }
    }
}

/// Logs "spec changed" for each document whose spec differs from the one the last
/// pass recorded (its generation is counted by [`record_plan`]).
fn log_spec_changes(shared: &Shared, resources: &[LoadedResource]) {
    let Ok(statuses) = shared.statuses.lock() else {
        return;
    };
    for loaded in resources {
        let name = loaded.resource.name().as_str();
        if let Some(previous) = statuses.get(name)
            && previous.spec_digest != spec_digest(&loaded.resource)
        {
            tracing::info!(pipeline = %name, generation = previous.generation + 1, "spec changed");
        }
    }
}

fn record_plan(
    config: &RunConfig,
    shared: &Shared,
    loaded: &LoadedResource,
    plan: &Plan,
    waiting_since: BTreeMap<String, Timestamp>,
    commit: Option<String>,
    now: Timestamp,
) {
    let name = loaded.resource.name().to_string();
    let digest = spec_digest(&loaded.resource);
    let Ok(mut statuses) = shared.statuses.lock() else {
        return;
    };
    let previous = statuses.get(&name);
    let generation = match previous {
        Some(p) if p.spec_digest == digest => p.generation,
        Some(p) => p.generation + 1,
        None => 1,
    };
    log_transitions(&name, previous.map(|p| p.conditions.as_slice()), plan);
    let conditions = merge_conditions(
        previous.map(|p| p.conditions.as_slice()),
        plan,
        generation,
        now,
    );
    let status = PipelineStatus {
        pipeline: name.clone(),
        kind: loaded.resource.kind().to_string(),
        source: format!("{}:{}", loaded.file.display(), loaded.line),
        spec_digest: digest,
        generation,
        git_commit: commit,
        conditions,
        waiting_on: plan.waiting_on.clone(),
        waiting_since,
        pending_steps: plan.steps.iter().map(|s| s.step.to_string()).collect(),
        in_progress: previous.and_then(|p| p.in_progress.clone()),
        last_steps: previous.map(|p| p.last_steps.clone()).unwrap_or_default(),
        last_run_finished_at: previous.and_then(|p| p.last_run_finished_at),
        consecutive_failures: previous.map_or(0, |p| p.consecutive_failures),
        // The spec is valid again: a complaint about it no longer applies.
        last_error: previous
            .and_then(|p| p.last_error.clone())
            .filter(|e| !e.starts_with(INVALID_SPEC)),
        last_converged_at: if plan.is_converged() {
            Some(now)
        } else {
            previous.and_then(|p| p.last_converged_at)
        },
        next_reconcile_at: Some(
            plan.next_deadline
                .as_ref()
                .map(|d| d.at)
                .into_iter()
                .chain(std::iter::once(
                    now + jiff::SignedDuration::try_from(config.resync).unwrap_or_default(),
                ))
                .min()
                .unwrap_or(now),
        ),
        updated_at: now,
    };
    if let Err(e) = write_status(&config.state_dir, &status) {
        tracing::error!(pipeline = %name, error = %e, "cannot write status");
    }
    statuses.insert(name, status);
}

fn worker_finished(
    config: &RunConfig,
    shared: &Shared,
    pipelines: &mut HashMap<String, PipelineRuntime>,
    name: &str,
    report: &ApplyReport,
) {
    let runtime = pipelines.entry(name.to_string()).or_default();
    runtime.working = false;
    if let Some(taken) = taken_in(&report.steps) {
        runtime.last_backup_taken = Some(taken);
    }
    let failed = report
        .steps
        .iter()
        .find(|s| s.outcome == StepOutcome::Failed);
    let busy = report.blocked.is_some()
        || report
            .steps
            .last()
            .is_some_and(|s| s.outcome == StepOutcome::Busy);
    let error = failed
        .map(|s| format!("{}: {}", s.planned.step, s.detail))
        .or_else(|| report.failure.clone());
    if let Some(error) = &error {
        let delay = runtime.backoff.failed();
        runtime.not_before = Some(tokio::time::Instant::now() + delay);
        tracing::warn!(pipeline = name, retry_in_secs = delay.as_secs(), error = %error, "run failed; backing off");
    } else if busy {
        // barman's lock or the volume's is taken (a backup already runs, another
        // process works on the volume): look again soon, no penalty.
        runtime.not_before = Some(tokio::time::Instant::now() + backoff::MIN_RETRY_DELAY);
    } else if report
        .steps
        .last()
        .is_some_and(|s| s.outcome == StepOutcome::Interrupted)
    {
        // Shutting down: neither a failure nor a success.
    } else {
        runtime.backoff.succeeded();
    }
    let failures = runtime.backoff.failures();
    let still_specified = shared.statuses.lock().is_ok_and(|s| s.contains_key(name));
    if !still_specified {
        // Removed from the specs while the step ran: no series to bring back.
        return;
    }
    shared.metrics.failures(name, failures);
    shared.update_status(&config.state_dir, name, |s| {
        s.in_progress = None;
        s.last_steps = report.steps.clone();
        s.last_run_finished_at = Some(Timestamp::now());
        s.consecutive_failures = failures;
        s.last_error = error.clone();
    });
}

fn forget_removed(
    config: &RunConfig,
    shared: &Shared,
    pipelines: &mut HashMap<String, PipelineRuntime>,
    names: &[String],
    problems: &[crate::spec::SpecProblem],
) {
    // A pipeline whose spec is broken is not forgotten: its status stays, marked.
    let broken: Vec<&str> = problems
        .iter()
        .filter_map(|p| p.pipeline.as_deref())
        .collect();
    pipelines.retain(|name, runtime| {
        runtime.working || names.contains(name) || broken.contains(&name.as_str())
    });
    let Ok(mut statuses) = shared.statuses.lock() else {
        return;
    };
    statuses.retain(|name, status| {
        if names.contains(name) {
            return true;
        }
        if broken.contains(&name.as_str()) {
            let problem = problems
                .iter()
                .find(|p| p.pipeline.as_deref() == Some(name.as_str()))
                .map(|p| p.to_string())
                .unwrap_or_default();
            status.last_error = Some(format!("{INVALID_SPEC}: {problem}"));
            status.waiting_on = vec!["a valid spec".to_string()];
            let _ = write_status(&config.state_dir, status);
            return true;
        }
        shared.metrics.forget(name);
        let _ = std::fs::remove_file(status::status_path(&config.state_dir, name));
        tracing::info!(pipeline = %name, "pipeline removed from the specs");
        false
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(state_dir: &std::path::Path) -> RunConfig {
        RunConfig {
            specs: Vec::new(),
            state_dir: state_dir.to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            resync: Duration::from_secs(300),
            max_parallel: 1,
            shutdown_timeout: Duration::from_secs(1),
            stall_after: None,
        }
    }

    fn shared() -> Shared {
        Shared {
            metrics: Metrics::new(),
            statuses: Mutex::default(),
            last_pass: Mutex::new(tokio::time::Instant::now()),
            stall_after: Duration::from_secs(60),
            no_specs: Mutex::new(None),
            fleet_trouble: Mutex::new(None),
        }
    }

    fn empty_report(name: &str) -> ApplyReport {
        let mut report = ApplyReport::crashed(name.to_string(), "x");
        report.failure = None;
        report
    }

    #[tokio::test]
    async fn a_panicking_worker_releases_its_pipeline_as_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (config, shared) = (config(dir.path()), shared());
        let mut pipelines = HashMap::new();
        pipelines.insert(
            "montagu".to_string(),
            PipelineRuntime {
                working: true,
                ..Default::default()
            },
        );
        let mut workers = Workers::default();
        let handle = workers.set.spawn(async { panic!("a bug") });
        workers.names.insert(handle.id(), "montagu".to_string());

        let joined = workers.set.join_next_with_id().await.unwrap();
        let (name, report) = workers.finished(joined);
        worker_finished(&config, &shared, &mut pipelines, &name, &report);

        assert_eq!(name, "montagu");
        let runtime = &pipelines["montagu"];
        assert!(!runtime.working);
        assert_eq!(runtime.backoff.failures(), 1);
        assert!(runtime.not_before.is_some());
    }

    #[tokio::test]
    async fn a_blocked_run_waits_without_counting_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (config, shared) = (config(dir.path()), shared());
        let mut pipelines = HashMap::new();
        let mut report = empty_report("montagu");
        report.blocked = Some("another reconciler (pid 1) is working on /v".to_string());

        worker_finished(&config, &shared, &mut pipelines, "montagu", &report);

        let runtime = &pipelines["montagu"];
        assert_eq!(runtime.backoff.failures(), 0);
        let wait = runtime.not_before.expect("waits before trying again");
        assert!(wait > tokio::time::Instant::now());
    }
}
