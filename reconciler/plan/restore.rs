//! Planning a restore target: pure, like the rest of the planner.
//!
//! Two conditions: `SourceComplete` (the starport holds a complete generation no
//! older than `maxAge`) and `VolumeRestored` (the volume holds that generation,
//! completely). A restore is planned only from a complete starport copy, and only
//! while nothing runs on the volume: a listed consumer container is stopped first
//! when the spec opts in, anything else is waited for. Containers a restore stopped
//! are started again once the volume holds a complete copy.

use jiff::Timestamp;

use super::{
    ConditionStatus, ConditionType, Plan, PlanContext, PlannedStep, Reason, RestoreStep, condition,
    deadline, human_age, human_from_now, is_from_the_future, ready_condition,
};
use crate::observed::{
    ConsumerState, Observation, RestoreMarker, RestoreObserved, RestoreState, RestoreVolumeState,
    StarportState,
};
use crate::spec::{RestoreTarget, VolumeLocation};

/// The complete copy the starport offers.
struct SourceCopy {
    generation: String,
    recovered_at: Option<Timestamp>,
    /// `SourceComplete` is True: complete, dated and within `maxAge`.
    current: bool,
    /// Its date can be compared with the volume's: known, and not in the future.
    dated: bool,
}

impl SourceCopy {
    /// Whether this copy may replace the complete generation `held`. Never an
    /// older one: a starport pointed back at an old copy does not roll consumers
    /// back. A copy no later than the volume's (or undated) replaces it only when
    /// the starport is current: the starport names the generation to hold.
    fn may_replace(&self, held: &RestoreMarker) -> bool {
        if self.generation == held.generation || self.older_than(held) {
            return false;
        }
        match (self.recovered_at, held.recovered_at) {
            (Some(offered), Some(held)) if self.dated && offered > held => true,
            _ => self.current,
        }
    }

    /// True when it is older than the complete generation `held`.
    fn older_than(&self, held: &RestoreMarker) -> bool {
        matches!(
            (self.recovered_at, held.recovered_at),
            (Some(offered), Some(held)) if self.dated && offered < held
        )
    }
}

/// Plans one restore target. Pure: no I/O, no clock.
pub fn plan_restore(
    target: &RestoreTarget,
    observed: &RestoreObserved,
    cx: &PlanContext,
) -> Plan<RestoreStep> {
    let mut plan = Plan {
        pipeline: target.name().to_string(),
        conditions: Vec::new(),
        steps: Vec::new(),
        waiting_on: Vec::new(),
        scheduled: Vec::new(),
        next_deadline: None,
    };
    let source = plan_source(target, observed, cx, &mut plan);
    plan_volume(target, observed, source.as_ref(), cx, &mut plan);
    let ready = ready_condition(&plan.conditions);
    plan.conditions.push(ready);
    plan
}

/// How the operator knows the source: `user@host:/root/target` or `/root/target`.
fn source_name(target: &RestoreTarget) -> String {
    let source = &target.spec.source;
    let path = source.root.as_path().join(source.target.as_str());
    match &source.ssh {
        Some(ssh) => format!("{}@{}:{}", ssh.user, ssh.host, path.display()),
        None => path.display().to_string(),
    }
}

fn plan_source(
    target: &RestoreTarget,
    observed: &RestoreObserved,
    cx: &PlanContext,
    plan: &mut Plan<RestoreStep>,
) -> Option<SourceCopy> {
    use ConditionStatus::*;
    let name = source_name(target);
    let max_age = &target.spec.max_age;
    let metadata = match &observed.source {
        Observation::Unavailable { reason } => {
            plan.conditions.push(condition(
                ConditionType::SourceComplete,
                Unknown,
                Reason::SourceUnavailable,
                format!("the starport {name} could not be read: {reason}"),
            ));
            plan.waiting_on
                .push(format!("the starport {name} to answer ({reason})"));
            return None;
        }
        Observation::Observed {
            value: StarportState::NoMetadata { reason },
        } => {
            plan.conditions.push(condition(
                ConditionType::SourceComplete,
                False,
                Reason::NoCompleteCopy,
                format!(
                    "{name} holds no complete copy ({reason}): a sync is running or never finished"
                ),
            ));
            plan.waiting_on.push(format!(
                "the backup host to finish a copy in {name}: a copy without metadata is never restored"
            ));
            return None;
        }
        Observation::Observed {
            value: StarportState::Synced { metadata },
        } => metadata,
    };
    let mut copy = SourceCopy {
        generation: metadata.generation_key(),
        recovered_at: metadata.data_time(),
        current: false,
        dated: false,
    };
    let (status, reason, message) = match copy.recovered_at {
        None => (
            False,
            Reason::AgeUnknown,
            format!(
                "{name} holds generation {}, but its metadata gives no time to check against maxAge {max_age}",
                copy.generation
            ),
        ),
        Some(at) if is_from_the_future(at, cx.now) => (
            False,
            Reason::FromTheFuture,
            format!(
                "{name} says generation {} was recovered {}; check the clocks of both hosts",
                copy.generation,
                human_from_now(cx.now, at)
            ),
        ),
        Some(at) => {
            let expires = max_age.after(at);
            if cx.now < expires {
                deadline(
                    plan,
                    cx.now,
                    expires,
                    format!("the starport's generation turns older than {max_age}"),
                );
                (
                    True,
                    Reason::Complete,
                    format!(
                        "{name} holds generation {}, recovered {} (maxAge {max_age})",
                        copy.generation,
                        super::human_ago(at, cx.now)
                    ),
                )
            } else {
                (
                    False,
                    Reason::SourceStale,
                    format!(
                        "{name}'s newest generation {} was recovered {} ago, older than maxAge {max_age}",
                        copy.generation,
                        human_age(at, cx.now)
                    ),
                )
            }
        }
    };
    copy.current = status == True;
    copy.dated = copy.recovered_at.is_some() && reason != Reason::FromTheFuture;
    if status != True {
        plan.waiting_on.push(format!(
            "the backup host to publish a newer generation: {message}"
        ));
    }
    plan.conditions.push(condition(
        ConditionType::SourceComplete,
        status,
        reason,
        message,
    ));
    Some(copy)
}

fn plan_volume(
    target: &RestoreTarget,
    observed: &RestoreObserved,
    source: Option<&SourceCopy>,
    cx: &PlanContext,
    plan: &mut Plan<RestoreStep>,
) {
    use ConditionStatus::*;
    let location = target.spec.volume.location();
    let state = match &observed.volume {
        Observation::Unavailable { reason } => {
            plan.conditions.push(condition(
                ConditionType::VolumeRestored,
                Unknown,
                Reason::VolumeUnavailable,
                format!("the volume could not be inspected: {reason}"),
            ));
            plan.waiting_on
                .push(format!("the volume to be readable ({reason})"));
            return;
        }
        Observation::Observed { value } => value,
    };
    let (marker, used_by, postmaster_running) = match state {
        RestoreVolumeState::Missing => (None, &[][..], false),
        RestoreVolumeState::Present { foreign: true, .. } => {
            plan.conditions.push(condition(
                ConditionType::VolumeRestored,
                False,
                Reason::ForeignData,
                format!("{location} holds files that are not a PostgreSQL data directory"),
            ));
            plan.waiting_on.push(format!(
                "{location} to be emptied or pointed elsewhere: the reconciler replaces only a PostgreSQL data directory or an empty volume"
            ));
            return;
        }
        RestoreVolumeState::Present {
            marker,
            used_by,
            postmaster_running,
            ..
        } => (marker.as_ref(), &used_by[..], *postmaster_running),
    };
    let (status, reason, message) = match (state, marker, source) {
        (RestoreVolumeState::Missing, _, _) => (
            False,
            Reason::VolumeMissing,
            format!("{location} does not exist"),
        ),
        (_, None, _) => {
            let why = match state {
                RestoreVolumeState::Present {
                    no_marker_reason: Some(why),
                    ..
                } => why.as_str(),
                _ => "no marker",
            };
            (
                False,
                Reason::NoValidMarker,
                format!("{location} holds no restored copy ({why})"),
            )
        }
        (_, Some(m), _) if m.state == RestoreState::Restoring => (
            False,
            Reason::RestoreInterrupted,
            format!(
                "a restore of generation {} into {location} did not finish: its data is incomplete",
                m.generation
            ),
        ),
        (_, Some(m), Some(copy)) if copy.older_than(m) => (
            True,
            Reason::Restored,
            format!(
                "{location} holds generation {}, newer than the starport's {}: never replaced by older data",
                m.generation, copy.generation
            ),
        ),
        (_, Some(m), Some(copy)) if m.generation != copy.generation => (
            False,
            Reason::OutOfDate,
            format!(
                "{location} holds generation {}, the starport {}",
                m.generation, copy.generation
            ),
        ),
        (_, Some(m), copy) => (
            True,
            Reason::Restored,
            format!(
                "{location} holds generation {}{}{}",
                m.generation,
                m.restored_at.map_or(String::new(), |at| format!(
                    ", restored {}",
                    super::human_ago(at, cx.now)
                )),
                if copy.is_none() {
                    "; the starport offers no complete copy to compare with"
                } else {
                    ""
                }
            ),
        ),
    };
    plan.conditions.push(condition(
        ConditionType::VolumeRestored,
        status,
        reason,
        message.clone(),
    ));
    let nothing_to_start = marker.is_none_or(|m| m.consumers_to_start.is_empty());
    if status == True && nothing_to_start {
        return;
    }
    let consumers = match &observed.consumers {
        Observation::Observed { value } => value,
        Observation::Unavailable { reason } => {
            plan.waiting_on.push(format!(
                "the Docker engine to report the consumer containers ({reason})"
            ));
            return;
        }
    };
    if status == True {
        plan_restarts(marker, consumers, plan);
        return;
    }
    let Some(copy) = source else {
        plan.waiting_on
            .push("a complete starport copy to restore from".to_string());
        settle_owed(marker, consumers, &location, plan);
        return;
    };
    // A complete generation in place is replaced only by a newer, trustworthy one;
    // plan_source already says what the starport lacks.
    if let Some(held) = marker.filter(|m| m.state == RestoreState::Restored)
        && !copy.may_replace(held)
    {
        if copy.current {
            plan.waiting_on.push(format!(
                "a starport generation recovered after {}'s ({}) to replace it",
                held.generation,
                held.recovered_at
                    .map_or("an unknown time".to_string(), |at| at.to_string())
            ));
        }
        settle_owed(marker, consumers, &location, plan);
        return;
    }
    let listed = &target.spec.consumers;
    let unlisted: Vec<&str> = used_by
        .iter()
        .filter(|c| !listed.containers.iter().any(|l| l.as_str() == c.as_str()))
        .map(String::as_str)
        .collect();
    // Only listed containers are ever stopped; one only owed a start is not.
    let running: Vec<String> = consumers
        .iter()
        .filter(|c| c.is_running())
        .filter(|c| listed.containers.iter().any(|l| l.as_str() == c.container))
        .map(|c| c.container.clone())
        .collect();
    if !unlisted.is_empty() {
        // A bind of a directory holding the volume counts too: say so, or a
        // container mounting `/srv` looks unrelated to `/srv/db`.
        let mounts = match location {
            VolumeLocation::Directory(_) => {
                format!("mounting {location} or a directory holding it")
            }
            _ => format!("running on {location}"),
        };
        plan.waiting_on.push(format!(
            "{} to stop: {mounts} but not listed in consumers.containers, so never stopped by the reconciler",
            containers(&unlisted)
        ));
        settle_owed(marker, consumers, &location, plan);
    } else if postmaster_running {
        plan.waiting_on.push(format!(
            "the postgres running on {location} (postmaster.pid) to stop: a volume is never restored under a running server"
        ));
        settle_owed(marker, consumers, &location, plan);
    } else if !running.is_empty() && !listed.stop_for_restore {
        plan.waiting_on.push(format!(
            "consumer {} to stop: restoring under a running database would corrupt it (consumers.stopForRestore: true lets the reconciler stop it and start it again)",
            containers(&running)
        ));
        settle_owed(marker, consumers, &location, plan);
    } else {
        let reason = if running.is_empty() {
            message
        } else {
            format!(
                "{message}; {} is stopped for the restore and started again after it",
                containers(&running)
            )
        };
        plan.steps.push(PlannedStep {
            step: RestoreStep::RestoreVolume {
                generation: copy.generation.clone(),
                stop_consumers: running,
            },
            reason,
        });
    }
}

/// While no restore can run: containers a restore stopped are started again when
/// the volume holds a complete copy (an earlier restore that copied nothing and
/// could not start them); on a half-copied one they stay stopped, and the plan
/// says so.
fn settle_owed(
    marker: Option<&RestoreMarker>,
    consumers: &[ConsumerState],
    location: &impl std::fmt::Display,
    plan: &mut Plan<RestoreStep>,
) {
    let Some(marker) = marker.filter(|m| !m.consumers_to_start.is_empty()) else {
        return;
    };
    if marker.state == RestoreState::Restored {
        plan_restarts(Some(marker), consumers, plan);
        return;
    }
    let owed = &marker.consumers_to_start;
    plan.waiting_on.push(format!(
        "{} stopped by an unfinished restore of {location}: {} started again once the volume holds a complete copy",
        containers(owed),
        if owed.len() == 1 { "it is" } else { "they are" }
    ));
}

/// Starts again what a finished restore stopped.
fn plan_restarts(
    marker: Option<&RestoreMarker>,
    consumers: &[ConsumerState],
    plan: &mut Plan<RestoreStep>,
) {
    let Some(marker) = marker.filter(|m| !m.consumers_to_start.is_empty()) else {
        return;
    };
    // A container removed meanwhile cannot be started; one an operator started
    // already needs nothing. Either way the record is cleared.
    let stopped: Vec<String> = marker
        .consumers_to_start
        .iter()
        .filter(|name| {
            consumers
                .iter()
                .any(|c| &c.container == *name && c.state.is_some() && !c.is_running())
        })
        .cloned()
        .collect();
    let reason = format!(
        "{} {} stopped for the restore of generation {}",
        containers(&marker.consumers_to_start),
        if marker.consumers_to_start.len() == 1 {
            "was"
        } else {
            "were"
        },
        marker.generation
    );
    plan.steps.push(PlannedStep {
        step: RestoreStep::StartConsumers {
            containers: stopped,
        },
        reason,
    });
}

fn containers<S: AsRef<str>>(names: &[S]) -> String {
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    match names.as_slice() {
        [one] => format!("container {one}"),
        many => format!("containers {}", many.join(", ")),
    }
}
