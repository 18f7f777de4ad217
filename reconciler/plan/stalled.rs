//! `Stalled`: a pipeline that cannot get on without somebody, in Flux's sense.
//! Pure: the history it judges comes from `run`'s memory of earlier passes.
//!
//! Two ways to be stuck: steps that failed several times in a row, and a wait on
//! the same thing for longer than the spec's `stalledAfter` (default
//! [`DEFAULT_STALLED_AFTER`]). A wait that ends by the clock (a start window) is a
//! schedule, not a stall. The condition is present only while the pipeline is
//! stalled, and then its status is `True`.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use super::{Condition, ConditionStatus, ConditionType, Plan, Reason, human_seconds};

pub use crate::spec::DEFAULT_STALLED_AFTER;

/// Failed runs in a row that make a pipeline stalled: one is a blip, two may be,
/// three with backoff in between are not.
pub const FAILURES_BEFORE_STALLED: u32 = 3;

/// What earlier passes saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StallHistory {
    /// Failed runs since the last success.
    pub consecutive_failures: u32,
    /// The last failure, in words.
    pub last_error: Option<String>,
    /// Since when each current wait has been waited on.
    pub waiting_since: BTreeMap<String, Timestamp>,
}

/// The waits of `plan` that can stall (not scheduled), each with the instant it
/// was first seen: carried over from `previous`, `now` for a new one.
pub fn waiting_since<S>(
    previous: &BTreeMap<String, Timestamp>,
    plan: &Plan<S>,
    now: Timestamp,
) -> BTreeMap<String, Timestamp> {
    plan.waiting_on
        .iter()
        .filter(|w| !plan.scheduled.contains(w))
        .map(|w| (w.clone(), previous.get(w).copied().unwrap_or(now)))
        .collect()
}

/// The `Stalled` condition, when the pipeline is stalled.
pub fn stalled_condition<S>(
    plan: &Plan<S>,
    history: &StallHistory,
    stalled_after: SignedDuration,
    now: Timestamp,
) -> Option<Condition> {
    let converged = plan.steps.is_empty()
        && plan.waiting_on.is_empty()
        && plan
            .conditions
            .iter()
            .filter(|c| c.kind != ConditionType::Ready)
            .all(|c| c.status == ConditionStatus::True);
    if converged {
        return None;
    }
    let stalled = |reason: Reason, message: String| Condition {
        kind: ConditionType::Stalled,
        status: ConditionStatus::True,
        reason,
        message,
        subject: None,
    };
    if history.consecutive_failures >= FAILURES_BEFORE_STALLED {
        return Some(stalled(
            Reason::RepeatedFailures,
            format!(
                "{} runs failed in a row; the last: {}",
                history.consecutive_failures,
                history.last_error.as_deref().unwrap_or("(not recorded)")
            ),
        ));
    }
    // The oldest wait; on a tie the first the plan lists, the one the others
    // follow from (barman before the volume that needs its backup).
    let longest = plan
        .waiting_on
        .iter()
        .filter(|what| !plan.scheduled.contains(what))
        .filter_map(|what| history.waiting_since.get_key_value(what))
        .fold(
            None,
            |oldest: Option<(&String, &Timestamp)>, (what, since)| match oldest {
                Some((_, o)) if o <= since => oldest,
                _ => Some((what, since)),
            },
        )?;
    let waited = now.as_second() - longest.1.as_second();
    if waited < stalled_after.as_secs() {
        return None;
    }
    Some(stalled(
        Reason::WaitingTooLong,
        format!(
            "waiting for {} since {} ({}, longer than stalledAfter {})",
            longest.0,
            longest.1.strftime("%Y-%m-%d %H:%M:%S UTC"),
            human_seconds(waited),
            human_seconds(stalled_after.as_secs())
        ),
    ))
}
