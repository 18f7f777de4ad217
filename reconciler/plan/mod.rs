//! The planner: the only place that decides what to do.
//!
//! [`plan`] is a pure function of (spec, observed, context): no I/O, no clock, no
//! randomness. `now` and the local time zone arrive in [`PlanContext`], so the same
//! inputs always give the same plan, and `diff --at` can ask what will have drifted
//! by Friday. The drivers and the executor carry out steps and decide nothing.
//!
//! A plan is ordered: a base backup the volume needs comes before the recovery; the
//! retention deletes that the new backup makes due come after it, so they run only
//! once it is DONE; the starport sync comes after the recovery it copies.
//!
//! This file holds only what the sections share: [`plan`] calling them in order,
//! the [`Planner`] they push conditions, steps and waits into, [`PlanContext`],
//! [`Plan`], and the helpers every section uses (deadlines, dates from the future,
//! human durations). Each concern decides in a file of its own: [`backup`]
//! (base backup), [`retention`], [`volume`], [`starport`] (and mirrors), [`wal`]
//! (WAL streaming), [`restore`] (restore targets), [`stalled`], [`orphans`]
//! (processes writing where a step would). Nothing here may
//! do I/O, read the clock, or decide for a section.

mod backup;
mod condition;
pub mod liveness;
mod orphans;
mod reason;
mod render;
mod restore;
pub mod retention;
pub mod skew;
pub mod stalled;
mod starport;
mod step;
mod volume;
mod wal;

use jiff::{Timestamp, tz::TimeZone};
use serde::{Deserialize, Serialize};

use crate::observed::Observed;
use crate::spec::BackupPipeline;

pub use backup::window_opens;
pub use condition::{Condition, ConditionStatus, ConditionType};
pub use reason::Reason;
pub use render::render_text;
pub use restore::plan_restore;
pub use stalled::{StallHistory, stalled_condition};
pub use step::{BackupRef, GenerationRef, PipelineStep, PlannedStep, RestoreStep, Step};

use self::condition::{condition, ready_condition};

/// How far in the future a barman end time or a marker may be before it counts as
/// clock skew rather than noise: generous for NTP jitter between hosts, small
/// against the hour-to-month ages the spec deals in.
pub const CLOCK_SKEW_TOLERANCE_SECONDS: i64 = 300;

/// What the planner needs besides spec and observations.
#[derive(Debug, Clone)]
pub struct PlanContext {
    /// The instant to plan for (the real now, or `diff --at`).
    pub now: Timestamp,
    /// The zone of start windows that name none.
    pub local_time_zone: TimeZone,
}

/// The planner's answer for one document: `Plan<PipelineStep>` for a
/// `BackupPipeline`, `Plan<RestoreStep>` for a `RestoreTarget`, `Plan` (of
/// [`Step`]) where either may come.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan<S = Step> {
    /// The pipeline.
    pub pipeline: String,
    /// The conditions, always in the same order (`WalStreaming` only when the
    /// pipeline watches it), `Ready` last.
    pub conditions: Vec<Condition>,
    /// The steps to converge, in order.
    pub steps: Vec<PlannedStep<S>>,
    /// What the plan waits on instead of acting.
    pub waiting_on: Vec<String>,
    /// Those of `waiting_on` that end by the clock (a start window): a schedule,
    /// never a stall.
    #[serde(skip)]
    pub scheduled: Vec<String>,
    /// The earliest instant something will drift or a wait will end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_deadline: Option<Deadline>,
}

impl<S: Into<Step>> Plan<S> {
    /// The same plan, its steps as steps of either kind.
    pub fn into_any(self) -> Plan {
        Plan {
            pipeline: self.pipeline,
            conditions: self.conditions,
            steps: self.steps.into_iter().map(PlannedStep::into_any).collect(),
            waiting_on: self.waiting_on,
            scheduled: self.scheduled,
            next_deadline: self.next_deadline,
        }
    }
}

impl<S> Plan<S> {
    /// True when every condition holds: nothing to do, nothing to wait for.
    pub fn is_converged(&self) -> bool {
        self.steps.is_empty()
            && self.waiting_on.is_empty()
            && self
                .conditions
                .iter()
                .all(|c| c.status == ConditionStatus::True)
    }

    /// The condition of the given type.
    pub fn condition(&self, kind: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }
}
/// When to look again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deadline {
    /// The instant.
    pub at: Timestamp,
    /// What happens then.
    pub what: String,
}
/// Human age of an interval, rounded to what matters: `3d 4h`, `2h 5m`, `40s`.
pub fn human_age(from: Timestamp, to: Timestamp) -> String {
    let seconds = to.as_second() - from.as_second();
    if seconds < 0 {
        return format!("{} in the future", human_seconds(-seconds));
    }
    human_seconds(seconds)
}

/// `3d 4h ago`, or `just now` for an instant up to the clock tolerance ahead
/// (clocks of two hosts a few seconds apart), never "in the future ago".
pub fn human_ago(at: Timestamp, now: Timestamp) -> String {
    if at > now {
        "just now".to_string()
    } else {
        format!("{} ago", human_age(at, now))
    }
}

/// How far ahead of `now` instant `at` lies, for dates from the future:
/// `2d 1h from now` (`0s from now` when it is not ahead).
pub fn human_from_now(now: Timestamp, at: Timestamp) -> String {
    format!(
        "{} from now",
        human_seconds((at.as_second() - now.as_second()).max(0))
    )
}

/// Human length of `s` seconds: `3d 4h`, `2h 5m`, `40s`.
pub fn human_seconds(s: i64) -> String {
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3_600, (s % 3_600) / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// Collects the plan while the sections below decide.
struct Planner<'a> {
    pipeline: &'a BackupPipeline,
    observed: &'a Observed,
    cx: &'a PlanContext,
    plan: Plan<PipelineStep>,
}

impl Planner<'_> {
    fn step(&mut self, step: PipelineStep, reason: String) {
        self.plan.steps.push(PlannedStep { step, reason });
    }

    fn wait(&mut self, what: String) {
        self.plan.waiting_on.push(what);
    }

    /// A wait that ends at `until` by the clock alone.
    fn scheduled_wait(&mut self, what: String, until: Timestamp, deadline: String) {
        self.plan.scheduled.push(what.clone());
        self.wait(what);
        self.deadline(until, deadline);
    }

    fn deadline(&mut self, at: Timestamp, what: String) {
        deadline(&mut self.plan, self.cx.now, at, what);
    }

    fn is_from_the_future(&self, t: Timestamp) -> bool {
        is_from_the_future(t, self.cx.now)
    }
}

/// Records `at` as the plan's next deadline when it lies after `now` and before
/// the one recorded (the earliest wins).
fn deadline<S>(plan: &mut Plan<S>, now: Timestamp, at: Timestamp, what: String) {
    if at <= now {
        return;
    }
    let earlier = plan.next_deadline.as_ref().is_none_or(|d| at < d.at);
    if earlier {
        plan.next_deadline = Some(Deadline { at, what });
    }
}

/// True when `t` lies further ahead of `now` than [`CLOCK_SKEW_TOLERANCE_SECONDS`]:
/// a date from the future, not the noise of two hosts' clocks.
fn is_from_the_future(t: Timestamp, now: Timestamp) -> bool {
    t.as_second() > now.as_second() + CLOCK_SKEW_TOLERANCE_SECONDS
}

/// Plans one pipeline. Pure: see the module docs.
pub fn plan(
    pipeline: &BackupPipeline,
    observed: &Observed,
    cx: &PlanContext,
) -> Plan<PipelineStep> {
    let mut planner = Planner {
        pipeline,
        observed,
        cx,
        plan: Plan {
            pipeline: pipeline.name().to_string(),
            conditions: Vec::new(),
            steps: Vec::new(),
            waiting_on: Vec::new(),
            scheduled: Vec::new(),
            next_deadline: None,
        },
    };
    // Streaming repairs come first: a backup or a recovery waits for WAL that only
    // a running receive-wal delivers. Its condition is listed after the others.
    let wal_streaming = wal::plan_wal_streaming(&mut planner);
    let backups = backup::plan_base_backup(&mut planner);
    retention::plan_retention(&mut planner, &backups);
    let recovery_planned = volume::plan_volume(&mut planner, &backups);
    starport::plan_starport(&mut planner, recovery_planned);
    starport::plan_mirrors(&mut planner);
    planner.plan.conditions.extend(wal_streaming);
    let ready = ready_condition(&planner.plan.conditions);
    planner.plan.conditions.push(ready);
    planner.plan
}
