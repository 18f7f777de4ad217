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

pub mod clock;
pub mod liveness;
mod render;
mod restore;
pub mod retention;
pub mod stalled;

use jiff::{Timestamp, ToSpan, tz::TimeZone};
use serde::{Deserialize, Serialize};

use crate::observed::{
    Backup, BackupStatus, Observation, Observed, StarportState, StrayReplay, VolumeState,
    VolumeUser,
};
use crate::spec::{BackupPipeline, StartWindow};

pub use render::render_text;
pub use restore::plan_restore;
pub use stalled::{StallHistory, stalled_condition};

use self::liveness::{Liveness, lock_held, unfinished};

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

/// The planner's answer for one pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The pipeline.
    pub pipeline: String,
    /// The conditions, always in the same order (`WalStreaming` only when the
    /// pipeline watches it), `Ready` last.
    pub conditions: Vec<Condition>,
    /// The steps to converge, in order.
    pub steps: Vec<PlannedStep>,
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

impl Plan {
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

/// One step with the reason it is needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStep {
    /// What to do.
    pub step: Step,
    /// Why.
    pub reason: String,
}

/// An action the executor can carry out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Step {
    /// `barman backup --wait`.
    TakeBaseBackup,
    /// `barman delete` one backup.
    DeleteBackup {
        /// The backup.
        #[serde(rename = "backupId")]
        backup_id: String,
    },
    /// Invalidate the marker, `barman recover` into the volume, replay WAL, write the marker.
    RecoverVolume {
        /// The backup to recover.
        backup: BackupRef,
    },
    /// Stop a replay postgres an interrupted run left on the volume (fast shutdown).
    StopStrayReplay {
        /// The process or container.
        #[serde(flatten)]
        replay: StrayReplay,
    },
    /// Invalidate starport metadata, rsync the volume, write metadata.
    SyncStarport {
        /// The volume generation to copy.
        generation: GenerationRef,
    },
    /// `barman cron`: starts receive-wal when it is not running.
    RunBarmanCron,
    /// Drop and re-create the replication slot (only when the spec opts in).
    ResetReplicationSlot,
    /// Invalidate the mirror's metadata, rsync the starport copy to it over ssh,
    /// write its metadata.
    SyncMirror {
        /// The mirror.
        mirror: String,
        /// The starport generation to copy.
        generation: String,
    },
    /// Mark the restore target's volume `restoring`, stop the listed consumers,
    /// `rsync -a --delete` the starport copy into it, mark it `restored`.
    RestoreVolume {
        /// The starport generation to restore.
        generation: String,
        /// Running consumer containers to stop first (opted in by the spec).
        #[serde(
            rename = "stopConsumers",
            default,
            skip_serializing_if = "Vec::is_empty"
        )]
        stop_consumers: Vec<String>,
    },
    /// Start again the consumer containers a restore stopped, then clear the
    /// marker's record of them.
    StartConsumers {
        /// The containers to start (those that exist and are stopped).
        containers: Vec<String>,
    },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::TakeBaseBackup => write!(f, "take a base backup"),
            Step::DeleteBackup { backup_id } => write!(f, "delete backup {backup_id}"),
            Step::RecoverVolume { backup } => {
                write!(f, "recover {backup} into the volume and replay WAL")
            }
            Step::SyncStarport { generation } => {
                write!(f, "sync the starport copy to {generation}")
            }
            Step::StopStrayReplay { replay } => {
                write!(f, "stop the stray replay postgres ({replay})")
            }
            Step::RunBarmanCron => write!(f, "run barman cron"),
            Step::SyncMirror { mirror, generation } => {
                write!(f, "sync mirror {mirror} to generation {generation}")
            }
            Step::ResetReplicationSlot => write!(f, "reset the replication slot"),
            Step::RestoreVolume {
                generation,
                stop_consumers,
            } => {
                write!(f, "restore generation {generation} into the volume")?;
                if !stop_consumers.is_empty() {
                    write!(f, " (stopping {} meanwhile)", stop_consumers.join(", "))?;
                }
                Ok(())
            }
            Step::StartConsumers { containers } if containers.is_empty() => {
                write!(f, "forget the consumers recorded as stopped")
            }
            Step::StartConsumers { containers } => {
                write!(f, "start {} again", containers.join(", "))
            }
        }
    }
}

/// Which backup a recovery uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "camelCase")]
pub enum BackupRef {
    /// An existing DONE backup.
    Existing(String),
    /// The backup an earlier step of the same plan takes.
    NewBackup,
}

impl std::fmt::Display for BackupRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupRef::Existing(id) => write!(f, "backup {id}"),
            BackupRef::NewBackup => write!(f, "the new backup"),
        }
    }
}

/// Which volume generation a sync copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "generation", rename_all = "camelCase")]
pub enum GenerationRef {
    /// The generation the volume holds now.
    Existing(String),
    /// The generation an earlier recovery step of the same plan produces.
    FromRecovery,
}

impl std::fmt::Display for GenerationRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GenerationRef::Existing(g) => write!(f, "generation {g}"),
            GenerationRef::FromRecovery => write!(f, "the recovered generation"),
        }
    }
}

/// A condition, in the Kubernetes style.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Which one.
    #[serde(rename = "type")]
    pub kind: ConditionType,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// A CamelCase word, stable for alerting.
    pub reason: String,
    /// A sentence for a human.
    pub message: String,
    /// What the condition is about when a pipeline has several of its type (the
    /// mirror's name for `MirrorInSync`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl Condition {
    /// `MirrorInSync[offsite]`, or just the type.
    pub fn label(&self) -> String {
        match &self.subject {
            Some(subject) => format!("{}[{subject}]", self.kind),
            None => self.kind.to_string(),
        }
    }
}

/// The conditions: a `BackupPipeline` reports those from `BaseBackupFresh` to
/// `MirrorInSync`, a `RestoreTarget` `SourceComplete` and `VolumeRestored`; both
/// end with `Ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConditionType {
    /// The newest DONE backup is younger than `baseBackup.maxAge`.
    BaseBackupFresh,
    /// No obsolete or FAILED backups are left.
    RetentionSatisfied,
    /// The volume holds a marked, replayed recovery younger than `recoveredVolume.maxAge`.
    VolumeFresh,
    /// The starport copy holds the volume's generation.
    StarportInSync,
    /// receive-wal runs, its slot is active and the primary streams (only for a
    /// pipeline with `walStreaming`).
    WalStreaming,
    /// A mirror holds the starport's generation (one per mirror, `subject` names it).
    MirrorInSync,
    /// A restore target's starport copy is complete and younger than its `maxAge`.
    SourceComplete,
    /// A restore target's volume holds the starport's generation, completely.
    VolumeRestored,
    /// Present (and `True`) only while the document cannot get on without
    /// somebody: steps failed several times in a row, or a wait outlasted
    /// `stalledAfter`. Set by `run`, which remembers earlier passes.
    Stalled,
    /// All of the above.
    Ready,
}

impl std::fmt::Display for ConditionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    /// Holds.
    True,
    /// Does not hold.
    False,
    /// Could not be determined.
    Unknown,
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

fn condition(
    kind: ConditionType,
    status: ConditionStatus,
    reason: &str,
    message: String,
) -> Condition {
    Condition {
        kind,
        status,
        reason: reason.to_string(),
        message,
        subject: None,
    }
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
    plan: Plan,
}

impl Planner<'_> {
    fn step(&mut self, step: Step, reason: String) {
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
        if at <= self.cx.now {
            return;
        }
        let earlier = self.plan.next_deadline.as_ref().is_none_or(|d| at < d.at);
        if earlier {
            self.plan.next_deadline = Some(Deadline { at, what });
        }
    }

    fn is_from_the_future(&self, t: Timestamp) -> bool {
        t.as_second() > self.cx.now.as_second() + CLOCK_SKEW_TOLERANCE_SECONDS
    }
}

/// What the base-backup section decided, for the sections after it.
struct BackupOutcome {
    /// The newest DONE backup, if barman was observed.
    newest_done: Option<Backup>,
    /// A TakeBaseBackup step was planned.
    new_backup_planned: bool,
    /// A base backup is needed but neither taken nor running yet (window closed).
    stale_and_running: bool,
    /// The newest backup only looks stale because clocks disagree.
    clock_skew: bool,
    /// barman could be observed.
    barman_observed: bool,
}

/// Plans one pipeline. Pure: see the module docs.
pub fn plan(pipeline: &BackupPipeline, observed: &Observed, cx: &PlanContext) -> Plan {
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
    let wal_streaming = plan_wal_streaming(&mut planner);
    let backups = plan_base_backup(&mut planner);
    plan_retention(&mut planner, &backups);
    let recovery_planned = plan_volume(&mut planner, &backups);
    plan_starport(&mut planner, recovery_planned);
    plan_mirrors(&mut planner);
    planner.plan.conditions.extend(wal_streaming);
    let ready = ready_condition(&planner.plan.conditions);
    planner.plan.conditions.push(ready);
    planner.plan
}

fn done_backups_newest_first(backups: &[Backup]) -> Vec<Backup> {
    let mut done: Vec<Backup> = backups
        .iter()
        .filter(|b| b.status == BackupStatus::Done)
        .cloned()
        .collect();
    // barman ids are start timestamps (YYYYMMDDTHHMMSS) and sort as such; unlike the
    // end time they are always present, so a DONE entry missing its end time can
    // never be mistaken for the oldest.
    done.sort_by(|a, b| b.id.cmp(&a.id));
    done
}

fn plan_base_backup(p: &mut Planner<'_>) -> BackupOutcome {
    use ConditionStatus::*;
    let spec = &p.pipeline.spec.base_backup;
    let state = match &p.observed.barman {
        Observation::Unavailable { reason } => {
            p.plan.conditions.push(condition(
                ConditionType::BaseBackupFresh,
                Unknown,
                "BarmanUnavailable",
                format!("barman could not be observed: {reason}"),
            ));
            p.wait(format!("barman to answer ({reason})"));
            return BackupOutcome {
                newest_done: None,
                new_backup_planned: false,
                stale_and_running: false,
                clock_skew: false,
                barman_observed: false,
            };
        }
        Observation::Observed { value } => value,
    };
    let done = done_backups_newest_first(&state.backups);
    let unfinished = unfinished(state);
    let newest_done = done.first().cloned();
    let max_age = spec.max_age;
    let dead: Vec<&str> = unfinished
        .iter()
        .filter(|u| u.liveness == Liveness::Dead)
        .map(|u| u.backup.id.as_str())
        .collect();

    let (fresh, reason, message) = match &newest_done {
        None => (false, "NoBackup", "barman has no DONE backup".to_string()),
        Some(Backup {
            id, end_time: None, ..
        }) => (
            false,
            "EndTimeUnknown",
            format!("newest DONE backup {id} has no end time"),
        ),
        Some(Backup {
            id,
            end_time: Some(end),
            ..
        }) if p.is_from_the_future(*end) => (
            false,
            "BackupFromTheFuture",
            format!(
                "newest DONE backup {id} ends {}; check the clocks of this host and barman's",
                human_from_now(p.cx.now, *end)
            ),
        ),
        Some(Backup {
            id,
            end_time: Some(end),
            ..
        }) => {
            let expires = max_age.after(*end);
            let skew = clock::skew_of_stale_backup(
                id,
                *end,
                max_age,
                p.observed.last_backup_taken.as_ref(),
                &p.cx.local_time_zone,
                p.cx.now,
            );
            if p.cx.now >= expires
                && let Some(skew) = skew
            {
                (false, "ClockSkew", skew)
            } else if p.cx.now < expires {
                p.deadline(
                    expires,
                    format!("base backup {id} turns older than {max_age}"),
                );
                (
                    true,
                    "Fresh",
                    format!(
                        "newest DONE backup {id} ended {} (maxAge {max_age})",
                        human_ago(*end, p.cx.now)
                    ),
                )
            } else {
                (
                    false,
                    "Stale",
                    format!(
                        "newest DONE backup {id} ended {} ago, older than maxAge {max_age}",
                        human_age(*end, p.cx.now)
                    ),
                )
            }
        }
    };
    let message =
        if fresh || dead.is_empty() || unfinished.iter().any(|u| u.liveness != Liveness::Dead) {
            message
        } else {
            // Said here, not only under retention: the dead entry is why no backup
            // has come, and what the plan clears first.
            format!(
                "{message}; backup {} died mid-copy and is cleaned up",
                dead.join(", ")
            )
        };
    p.plan.conditions.push(condition(
        ConditionType::BaseBackupFresh,
        if fresh { True } else { False },
        reason,
        message.clone(),
    ));
    let mut outcome = BackupOutcome {
        newest_done,
        new_backup_planned: false,
        stale_and_running: false,
        clock_skew: reason == "ClockSkew",
        barman_observed: true,
    };
    if fresh {
        return outcome;
    }
    if reason == "BackupFromTheFuture" {
        p.wait("the clocks to agree: a backup ends in the future".to_string());
        return outcome;
    }
    if reason == "ClockSkew" {
        // Another backup would look just as old: taking one would only churn.
        p.wait(format!(
            "the clocks to agree before another base backup is taken ({message})"
        ));
        return outcome;
    }
    if let Some(run) = unfinished.iter().find(|u| u.liveness != Liveness::Dead) {
        outcome.stale_and_running = true;
        let status = format!("{:?}", run.backup.status);
        p.wait(match &run.liveness {
            Liveness::Unknown(why) => format!(
                "backup {} to finish (status {status}; whether a barman backup still runs it could not be told: {why})",
                run.backup.id
            ),
            _ => format!("backup {} to finish (status {status})", run.backup.id),
        });
        return outcome;
    }

    if let Some(window) = &spec.start_window {
        let zone = window
            .time_zone
            .as_ref()
            .map_or_else(|| p.cx.local_time_zone.clone(), |z| z.zone().clone());
        if let Some(opens) = window_opens(window, &zone, p.cx.now) {
            p.scheduled_wait(
                format!(
                    "the base backup start window {}–{} ({message})",
                    window.start, window.end
                ),
                opens,
                "the base backup start window opens".to_string(),
            );
            return outcome;
        }
    }
    outcome.new_backup_planned = true;
    p.step(Step::TakeBaseBackup, message);
    outcome
}

/// When `now` is outside the window, the next instant it opens; `None` when inside.
pub fn window_opens(window: &StartWindow, zone: &TimeZone, now: Timestamp) -> Option<Timestamp> {
    let local = now.to_zoned_datetime(zone.clone());
    let time = local.time();
    let (start, end) = (window.start.time(), window.end.time());
    let inside = if start <= end {
        start <= time && time < end
    } else {
        // Wraps past midnight, e.g. 22:00–04:00.
        time >= start || time < end
    };
    if inside || start == end {
        return None;
    }
    let today = local.date();
    let candidate = today
        .to_datetime(start)
        .to_zoned_datetime(zone.clone())
        .ok()?;
    let opens = if candidate.timestamp() > now {
        candidate
    } else {
        today
            .checked_add(1.day())
            .ok()?
            .to_datetime(start)
            .to_zoned_datetime(zone.clone())
            .ok()?
    };
    Some(opens.timestamp())
}

fn plan_retention(p: &mut Planner<'_>, outcome: &BackupOutcome) {
    use ConditionStatus::*;
    let Some(state) = p.observed.barman.value() else {
        p.plan.conditions.push(condition(
            ConditionType::RetentionSatisfied,
            Unknown,
            "BarmanUnavailable",
            "barman could not be observed".to_string(),
        ));
        return;
    };
    let retention = &p.pipeline.spec.retention;
    let done = done_backups_newest_first(&state.backups);
    let failed: Vec<&Backup> = state
        .backups
        .iter()
        .filter(|b| b.status == BackupStatus::Failed)
        .collect();
    let unfinished = unfinished(state);
    let dead: Vec<&Backup> = unfinished
        .iter()
        .filter(|u| u.liveness == Liveness::Dead)
        .map(|u| u.backup)
        .collect();
    let future = done
        .iter()
        .any(|b| b.end_time.is_some_and(|t| p.is_from_the_future(t)));
    // Ages are not to be trusted while clocks disagree: nothing is judged
    // obsolete by them. FAILED and dead entries need no clock.
    let clocks_disagree = future || outcome.clock_skew;
    let now_verdict = retention::obsolete(&done, retention, p.cx.now);
    let obsolete_now = if clocks_disagree {
        Vec::new()
    } else {
        now_verdict.obsolete.clone()
    };

    let (status, reason, message) = if !dead.is_empty() {
        let ids: Vec<&str> = dead.iter().map(|b| b.id.as_str()).collect();
        (
            False,
            "DeadBackups",
            format!(
                "{} STARTED but no barman backup runs {} (its lock is free, no pg_basebackup writes it): it died mid-copy and is deleted",
                ids.join(", "),
                if ids.len() == 1 { "it" } else { "them" }
            ),
        )
    } else if future {
        (
            Unknown,
            "BackupFromTheFuture",
            "a DONE backup ends in the future; retention waits for the clocks to agree".to_string(),
        )
    } else if outcome.clock_skew {
        (
            Unknown,
            "ClockSkew",
            "the primary's and this host's clocks disagree (see BaseBackupFresh); retention waits for them to agree".to_string(),
        )
    } else if obsolete_now.is_empty() && failed.is_empty() {
        (
            True,
            "Satisfied",
            format!("{} DONE backups kept ({})", done.len(), now_verdict.rule),
        )
    } else {
        let mut parts = Vec::new();
        if !obsolete_now.is_empty() {
            parts.push(format!(
                "{} obsolete ({})",
                obsolete_now.len(),
                now_verdict.rule
            ));
        }
        if !failed.is_empty() {
            parts.push(format!("{} FAILED", failed.len()));
        }
        let reason = if obsolete_now.is_empty() {
            "FailedBackups"
        } else {
            "ObsoleteBackups"
        };
        (
            False,
            reason,
            format!(
                "{} backups to delete: {}",
                obsolete_now.len() + failed.len(),
                parts.join(", ")
            ),
        )
    };
    p.plan.conditions.push(condition(
        ConditionType::RetentionSatisfied,
        status,
        reason,
        message,
    ));
    if let Some(at) = now_verdict.next_change
        && !clocks_disagree
    {
        p.deadline(at, "a backup leaves the recovery window".to_string());
    }

    // With a new backup planned, project it into the list: the deletes it makes due are
    // planned after it and run only once it is DONE (the executor stops at a failure).
    let projected_obsolete = if clocks_disagree {
        Vec::new()
    } else if outcome.new_backup_planned {
        let mut projected = vec![Backup {
            id: "(new)".to_string(),
            status: BackupStatus::Done,
            end_time: Some(p.cx.now),
            size_bytes: None,
        }];
        projected.extend(done.iter().cloned());
        retention::obsolete(&projected, retention, p.cx.now).obsolete
    } else {
        obsolete_now
    };
    let pending_deletes = failed.len() + dead.len() + projected_obsolete.len();
    if pending_deletes == 0 {
        return;
    }
    // Deleting while a backup runs could race barman's own bookkeeping (and barman
    // refuses to delete a running backup only when it is the oldest); the backup
    // that runs may also be the one that makes an older one obsolete.
    if let Some(run) = unfinished.iter().find(|u| u.liveness != Liveness::Dead) {
        p.wait(format!(
            "backup {} to finish before deleting any backup",
            run.backup.id
        ));
        return;
    }
    if lock_held(state) {
        p.wait(format!(
            "barman's backup lock of {} to be released before deleting any backup",
            p.pipeline.spec.barman.server
        ));
        return;
    }
    // Dead and FAILED entries and what is obsolete today go first: they need nothing
    // new and must not wait behind a backup that may fail. What only the new backup
    // makes obsolete goes after it, so it runs once that backup is DONE.
    let mut first = Vec::new();
    let dead_reason = |id: &str| {
        format!(
            "backup {id} is STARTED but dead: no barman backup holds the server's backup lock and no pg_basebackup writes it, so nothing will ever finish it"
        )
    };
    for backup in dead {
        let step = Step::DeleteBackup {
            backup_id: backup.id.clone(),
        };
        if !done.is_empty() {
            first.push(PlannedStep {
                step,
                reason: dead_reason(&backup.id),
            });
        } else if outcome.new_backup_planned {
            // barman deletes every archived WAL with the last backup it lists, and
            // takes no backup with an empty WAL archive: the new one comes first
            // (barman backs up beside a dead entry).
            p.step(
                step,
                format!(
                    "{}; deleted once the new backup is DONE, as deleting the only entry first would empty barman's WAL archive",
                    dead_reason(&backup.id)
                ),
            );
        } else {
            p.wait(format!(
                "a DONE backup before deleting dead backup {} (deleting the only entry would empty barman's WAL archive)",
                backup.id
            ));
        }
    }
    for backup in failed {
        first.push(PlannedStep {
            step: Step::DeleteBackup {
                backup_id: backup.id.clone(),
            },
            reason: format!(
                "backup {} is FAILED; FAILED backups make `barman check` fail",
                backup.id
            ),
        });
    }
    let obsolete_today = |id: &str| now_verdict_contains(&done, retention, p.cx.now, id);
    for (backup, why) in projected_obsolete.iter().rev() {
        if obsolete_today(&backup.id) {
            first.push(PlannedStep {
                step: Step::DeleteBackup {
                    backup_id: backup.id.clone(),
                },
                reason: format!("backup {} is obsolete: {why}", backup.id),
            });
        } else {
            p.step(
                Step::DeleteBackup {
                    backup_id: backup.id.clone(),
                },
                format!(
                    "backup {} is obsolete once the new backup is DONE: {why}",
                    backup.id
                ),
            );
        }
    }
    p.plan.steps.splice(0..0, first);
}

fn now_verdict_contains(
    done: &[Backup],
    retention: &crate::spec::RetentionSpec,
    now: Timestamp,
    id: &str,
) -> bool {
    retention::obsolete(done, retention, now)
        .obsolete
        .iter()
        .any(|(b, _)| b.id == id)
}

/// Returns whether a recovery step was planned.
fn plan_volume(p: &mut Planner<'_>, backups: &BackupOutcome) -> bool {
    use ConditionStatus::*;
    let spec = &p.pipeline.spec.recovered_volume;
    let state = match &p.observed.volume {
        Observation::Unavailable { reason } => {
            p.plan.conditions.push(condition(
                ConditionType::VolumeFresh,
                Unknown,
                "VolumeUnavailable",
                format!("the volume could not be inspected: {reason}"),
            ));
            p.wait(format!("the volume to be readable ({reason})"));
            return false;
        }
        Observation::Observed { value } => value,
    };
    let location = spec.location();
    let no_users = Vec::new();
    let users = match state {
        VolumeState::Unmarked { users, .. } | VolumeState::Marked { users, .. } => users,
        VolumeState::Missing => &no_users,
    };
    let (reason, message, in_use) = match state {
        VolumeState::Missing => (
            "VolumeMissing",
            format!("{} does not exist", spec.location()),
            false,
        ),
        VolumeState::Unmarked {
            reason,
            foreign: true,
            ..
        } => {
            p.plan.conditions.push(condition(
                ConditionType::VolumeFresh,
                False,
                "ForeignData",
                format!("{} {reason}", spec.location()),
            ));
            p.wait(format!(
                "{} to be emptied or pointed elsewhere: the reconciler never overwrites data it did not recover",
                spec.location()
            ));
            return false;
        }
        VolumeState::Unmarked { reason, in_use, .. } => (
            "NoValidMarker",
            format!(
                "{} holds no valid recovery marker ({reason})",
                spec.location()
            ),
            *in_use || !users.is_empty(),
        ),
        VolumeState::Marked {
            marker,
            in_use: true,
            ..
        } => (
            "VolumeInUse",
            format!(
                "{}, so it no longer holds recovery {} as marked",
                writers(users, &location),
                marker.generation
            ),
            true,
        ),
        // Read-only users cannot change the data: the marker still holds.
        VolumeState::Marked { marker, .. } => {
            let expires = spec.max_age.after(marker.recovered_at);
            if p.is_from_the_future(marker.recovered_at) {
                (
                    "MarkerFromTheFuture",
                    format!(
                        "the marker says the recovery finished {}; check this host's clock",
                        human_from_now(p.cx.now, marker.recovered_at)
                    ),
                    !users.is_empty(),
                )
            } else if p.cx.now < expires {
                p.plan.conditions.push(condition(
                    ConditionType::VolumeFresh,
                    True,
                    "Fresh",
                    format!(
                        "backup {} recovered and replayed to {} {} (maxAge {})",
                        marker.backup_id,
                        marker.replayed_to_lsn,
                        human_ago(marker.recovered_at, p.cx.now),
                        spec.max_age
                    ),
                ));
                p.deadline(
                    expires,
                    format!("the recovered volume turns older than {}", spec.max_age),
                );
                return false;
            } else {
                (
                    "Stale",
                    format!(
                        "backup {} was recovered {} ago, older than maxAge {}",
                        marker.backup_id,
                        human_age(marker.recovered_at, p.cx.now),
                        spec.max_age
                    ),
                    !users.is_empty(),
                )
            }
        }
    };
    p.plan.conditions.push(condition(
        ConditionType::VolumeFresh,
        False,
        reason,
        message.clone(),
    ));
    if let VolumeState::Unmarked {
        stray_replay: Some(replay),
        ..
    } = state
    {
        // Restart safety: our own replay, orphaned when a reconciler was killed. The
        // marker was invalidated before it started, so nothing relies on the data.
        p.step(
            Step::StopStrayReplay {
                replay: replay.clone(),
            },
            format!(
                "a replay postgres ({replay}) left by an interrupted run still runs on {}",
                spec.location()
            ),
        );
    } else if in_use {
        p.wait(users_to_stop(users, &location));
        return false;
    }
    let source = if backups.new_backup_planned {
        BackupRef::NewBackup
    } else if !backups.barman_observed {
        return false;
    } else if backups.stale_and_running {
        // Recovering the stale backup now would be redone as soon as the running one ends.
        return false;
    } else if let Some(newest) = &backups.newest_done {
        BackupRef::Existing(newest.id.clone())
    } else {
        p.wait("a DONE backup to recover from".to_string());
        return false;
    };
    p.step(Step::RecoverVolume { backup: source }, message);
    true
}

/// Who can write to a volume, in words (for an observation that names no one, as
/// one recorded before users were: a postgres, from its postmaster.pid).
fn writers(users: &[VolumeUser], location: &dyn std::fmt::Display) -> String {
    let named: Vec<String> = users
        .iter()
        .filter(|u| u.can_write())
        .map(|u| u.describe(location))
        .collect();
    if named.is_empty() {
        format!("a postgres runs on {location} (postmaster.pid)")
    } else {
        named.join("; ")
    }
}

/// The wait for a volume's users to go, naming each and how it uses the volume.
fn users_to_stop(users: &[VolumeUser], location: &dyn std::fmt::Display) -> String {
    if users.is_empty() {
        return format!(
            "the postgres running on {location} to stop (postmaster.pid present); the volume is never overwritten while something uses it"
        );
    }
    let subjects: Vec<String> = users.iter().map(VolumeUser::subject).collect();
    let described: Vec<String> = users.iter().map(|u| u.describe(location)).collect();
    format!(
        "{} to stop ({}); the volume is never overwritten while something uses it",
        subjects.join(", "),
        described.join("; ")
    )
}

fn plan_starport(p: &mut Planner<'_>, recovery_planned: bool) {
    use ConditionStatus::*;
    let Some(spec) = &p.pipeline.spec.starport else {
        p.plan.conditions.push(condition(
            ConditionType::StarportInSync,
            True,
            "NotConfigured",
            "the pipeline has no starport".to_string(),
        ));
        return;
    };
    let target = format!("{}/{}", spec.root, spec.target);
    let state = match &p.observed.starport {
        Some(Observation::Observed { value }) => value,
        Some(Observation::Unavailable { reason }) => {
            p.plan.conditions.push(condition(
                ConditionType::StarportInSync,
                Unknown,
                "StarportUnavailable",
                format!("the starport could not be inspected: {reason}"),
            ));
            p.wait(format!("the starport to be readable ({reason})"));
            return;
        }
        None => {
            p.plan.conditions.push(condition(
                ConditionType::StarportInSync,
                Unknown,
                "NotObserved",
                "the starport was not observed".to_string(),
            ));
            return;
        }
    };
    // A volume a postgres runs on is changing under its marker: never copied.
    let volume_generation = match p.observed.volume.value() {
        Some(VolumeState::Marked {
            marker,
            in_use: false,
            ..
        }) => Some(marker.generation.clone()),
        _ => None,
    };
    let (status, reason, message) = match state {
        StarportState::NoMetadata { reason } => (
            False,
            "NoMetadata",
            format!("{target} has no valid metadata ({reason})"),
        ),
        StarportState::Synced { metadata } => {
            if let Some(theirs) = &metadata.instance_guid
                && p.observed.machine_id.as_ref() != Some(theirs)
            {
                let ours = p
                    .observed
                    .machine_id
                    .as_deref()
                    .unwrap_or("unknown (no /etc/machine-id)");
                p.plan.conditions.push(condition(
                    ConditionType::StarportInSync,
                    False,
                    "OwnedByAnotherHost",
                    format!("{target} was written by host {theirs}, this host is {ours}"),
                ));
                p.wait(format!(
                        "{target} to be released by host {theirs}: remove its meta/metadata.json to hand it to this host"
                    ));
                return;
            }
            match (&metadata.generation, &volume_generation) {
                (Some(theirs), Some(ours)) if theirs == ours && !recovery_planned => (
                    True,
                    "InSync",
                    format!(
                        "{target} holds generation {ours} (copied {})",
                        metadata.last_backup
                    ),
                ),
                (theirs, _) => (
                    False,
                    "OutOfSync",
                    format!(
                        "{target} holds generation {}, the volume {}",
                        theirs.as_deref().unwrap_or("(none)"),
                        volume_generation.as_deref().unwrap_or("has none")
                    ),
                ),
            }
        }
    };
    p.plan.conditions.push(condition(
        ConditionType::StarportInSync,
        status,
        reason,
        message.clone(),
    ));
    if status == True {
        return;
    }
    if recovery_planned {
        p.step(
            Step::SyncStarport {
                generation: GenerationRef::FromRecovery,
            },
            format!("{message}; it follows the volume once recovered"),
        );
    } else if let Some(generation) = volume_generation {
        p.step(
            Step::SyncStarport {
                generation: GenerationRef::Existing(generation),
            },
            message,
        );
    } else {
        p.wait("a valid recovered volume to copy to the starport".to_string());
    }
}

/// One `MirrorInSync` condition per mirror; a sync once the starport holds a
/// complete, current generation (the next plan, after a starport sync, sees it).
fn plan_mirrors(p: &mut Planner<'_>) {
    use ConditionStatus::*;
    let Some(starport) = &p.pipeline.spec.starport else {
        return;
    };
    let source = p
        .plan
        .condition(ConditionType::StarportInSync)
        .filter(|c| c.status == True)
        .and_then(
            |_| match p.observed.starport.as_ref().and_then(|s| s.value()) {
                Some(StarportState::Synced { metadata }) => metadata.generation.clone(),
                _ => None,
            },
        );
    for mirror in &starport.mirrors {
        let name = mirror.name.to_string();
        let observed = p
            .observed
            .mirrors
            .iter()
            .find(|m| m.name == name)
            .map(|m| &m.state);
        let (status, reason, message) = match (observed, &source) {
            (None, _) => (
                Unknown,
                "NotObserved",
                "the mirror was not looked at".to_string(),
            ),
            (Some(Observation::Unavailable { reason }), _) => {
                p.wait(format!("mirror {name} to answer ({reason})"));
                (
                    Unknown,
                    "MirrorUnavailable",
                    format!("the mirror could not be inspected: {reason}"),
                )
            }
            (Some(Observation::Observed { value }), source) => {
                let held = match value {
                    StarportState::Synced { metadata } => metadata.generation.clone(),
                    StarportState::NoMetadata { .. } => None,
                };
                match (held, source) {
                    (Some(held), Some(source)) if &held == source => (
                        True,
                        "InSync",
                        format!("holds the starport's generation {source}"),
                    ),
                    (held, Some(source)) => {
                        let what = held.map_or("no complete copy".to_string(), |g| {
                            format!("generation {g}")
                        });
                        p.step(
                            Step::SyncMirror {
                                mirror: name.clone(),
                                generation: source.clone(),
                            },
                            format!("mirror {name} holds {what}; the starport holds {source}"),
                        );
                        (
                            False,
                            "OutOfSync",
                            format!("holds {what}, the starport {source}"),
                        )
                    }
                    (_, None) => {
                        p.wait(format!(
                            "the starport to hold a complete generation before mirror {name} follows it"
                        ));
                        (
                            False,
                            "WaitingForStarport",
                            "the starport does not hold a complete, current generation yet"
                                .to_string(),
                        )
                    }
                }
            }
        };
        let mut c = condition(ConditionType::MirrorInSync, status, reason, message);
        c.subject = Some(name);
        p.plan.conditions.push(c);
    }
}

/// The `WalStreaming` condition, and the repair it needs: `barman cron` when
/// receive-wal is down (it starts it), a slot reset only when the spec opts in.
fn plan_wal_streaming(p: &mut Planner<'_>) -> Option<Condition> {
    use ConditionStatus::*;
    let spec = p.pipeline.spec.wal_streaming.as_ref()?;
    let health = match p.observed.wal.as_ref() {
        None => {
            return Some(condition(
                ConditionType::WalStreaming,
                Unknown,
                "NotObserved",
                "barman check was not run".to_string(),
            ));
        }
        Some(Observation::Unavailable { reason }) => {
            p.wait(format!("barman check to answer ({reason})"));
            return Some(condition(
                ConditionType::WalStreaming,
                Unknown,
                "BarmanUnavailable",
                format!("barman check could not be observed: {reason}"),
            ));
        }
        Some(Observation::Observed { value }) => value,
    };
    let failed = |item: &Option<crate::observed::CheckItem>| item.as_ref().is_some_and(|c| !c.ok);
    let hint = |item: &Option<crate::observed::CheckItem>| {
        item.as_ref()
            .map(|c| c.hint.clone())
            .filter(|h| !h.is_empty())
            .map_or(String::new(), |h| format!(" ({h})"))
    };
    let server = p.pipeline.spec.barman.server.to_string();
    // A slot that is merely inactive comes back with receive-wal; one that is missing
    // or broken keeps receive-wal from running at all, so it is looked at first.
    let slot_broken = failed(&health.replication_slot)
        && !health
            .replication_slot
            .as_ref()
            .is_some_and(|c| c.hint.contains("not active"));
    let (reason, message) = if failed(&health.postgresql) || failed(&health.postgresql_streaming) {
        // Nothing on barman's side can fix the primary or the network.
        let message = format!(
            "barman cannot stream from the primary{}{}",
            hint(&health.postgresql),
            hint(&health.postgresql_streaming)
        );
        p.wait(format!("the primary to accept streaming again: {message}"));
        ("PrimaryNotStreaming", message)
    } else if failed(&health.receive_wal_running) && !slot_broken {
        p.step(
            Step::RunBarmanCron,
            format!("receive-wal is not running for {server}; barman cron starts it"),
        );
        (
            "ReceiveWalStopped",
            format!(
                "receive-wal is not running{}",
                hint(&health.receive_wal_running)
            ),
        )
    } else if failed(&health.replication_slot) {
        let message = format!(
            "the replication slot is broken{}",
            hint(&health.replication_slot)
        );
        if spec.reset_broken_slot {
            p.step(
                Step::ResetReplicationSlot,
                format!("{message}; walStreaming.resetBrokenSlot allows a reset"),
            );
            p.step(
                Step::RunBarmanCron,
                "receive-wal was stopped for the slot reset; barman cron starts it".to_string(),
            );
        } else {
            p.wait(format!(
                "an operator to repair the replication slot of {server} (or walStreaming.resetBrokenSlot: true): {message}"
            ));
        }
        ("SlotBroken", message)
    } else if failed(&health.archiver_errors) {
        let message = format!(
            "barman reports archiver errors{}",
            hint(&health.archiver_errors)
        );
        p.wait(format!(
            "an operator to clear the archiver errors: {message}"
        ));
        ("ArchiverErrors", message)
    } else if failed(&health.wal_maximum_age) {
        let message = format!("no WAL received recently{}", hint(&health.wal_maximum_age));
        p.wait(format!("WAL to arrive: {message}"));
        ("WalTooOld", message)
    } else if health.receive_wal_running.is_none() {
        return Some(condition(
            ConditionType::WalStreaming,
            Unknown,
            "NotReported",
            "barman check did not report receive_wal_running (streaming_archiver off?)".to_string(),
        ));
    } else {
        return Some(condition(
            ConditionType::WalStreaming,
            True,
            "Streaming",
            "receive-wal runs, its replication slot is active".to_string(),
        ));
    };
    Some(condition(
        ConditionType::WalStreaming,
        False,
        reason,
        message,
    ))
}

fn ready_condition(conditions: &[Condition]) -> Condition {
    use ConditionStatus::*;
    let not_true: Vec<&Condition> = conditions.iter().filter(|c| c.status != True).collect();
    if not_true.is_empty() {
        return condition(
            ConditionType::Ready,
            True,
            "Converged",
            "every condition holds".to_string(),
        );
    }
    let status = if not_true.iter().any(|c| c.status == Unknown) {
        Unknown
    } else {
        False
    };
    let names: Vec<String> = not_true.iter().map(|c| c.kind.to_string()).collect();
    condition(
        ConditionType::Ready,
        status,
        "NotConverged",
        format!("not holding: {}", names.join(", ")),
    )
}
