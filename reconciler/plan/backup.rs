//! Planning the base backup: the `BaseBackupFresh` condition, the wait for a
//! running backup or a start window, and the `TakeBaseBackup` step. Pure: no I/O,
//! no clock (the start window is judged against the context's `now`).

use jiff::{Timestamp, ToSpan, tz::TimeZone};

use super::liveness::{Liveness, unfinished};
use super::{
    ConditionStatus, ConditionType, PipelineStep, Planner, Reason, condition, human_age, human_ago,
    human_from_now, skew,
};
use crate::observed::{Backup, BackupStatus, Observation};
use crate::spec::StartWindow;

/// What the base-backup section decided, for the sections after it.
pub(super) struct BackupOutcome {
    /// The newest DONE backup, if barman was observed.
    pub(super) newest_done: Option<Backup>,
    /// A TakeBaseBackup step was planned.
    pub(super) new_backup_planned: bool,
    /// A base backup is needed but neither taken nor running yet (window closed).
    pub(super) stale_and_running: bool,
    /// The newest backup only looks stale because clocks disagree.
    pub(super) clock_skew: bool,
    /// barman could be observed.
    pub(super) barman_observed: bool,
}
pub(super) fn done_backups_newest_first(backups: &[Backup]) -> Vec<Backup> {
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

pub(super) fn plan_base_backup(p: &mut Planner<'_>) -> BackupOutcome {
    use ConditionStatus::*;
    let spec = &p.pipeline.spec.base_backup;
    let state = match &p.observed.barman {
        Observation::Unavailable { reason } => {
            p.plan.conditions.push(condition(
                ConditionType::BaseBackupFresh,
                Unknown,
                Reason::BarmanUnavailable,
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
        None => (
            false,
            Reason::NoBackup,
            "barman has no DONE backup".to_string(),
        ),
        Some(Backup {
            id, end_time: None, ..
        }) => (
            false,
            Reason::EndTimeUnknown,
            format!("newest DONE backup {id} has no end time"),
        ),
        Some(Backup {
            id,
            end_time: Some(end),
            ..
        }) if p.is_from_the_future(*end) => (
            false,
            Reason::BackupFromTheFuture,
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
            let skew = skew::skew_of_stale_backup(
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
                (false, Reason::ClockSkew, skew)
            } else if p.cx.now < expires {
                p.deadline(
                    expires,
                    format!("base backup {id} turns older than {max_age}"),
                );
                (
                    true,
                    Reason::Fresh,
                    format!(
                        "newest DONE backup {id} ended {} (maxAge {max_age})",
                        human_ago(*end, p.cx.now)
                    ),
                )
            } else {
                (
                    false,
                    Reason::Stale,
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
        reason.clone(),
        message.clone(),
    ));
    let mut outcome = BackupOutcome {
        newest_done,
        new_backup_planned: false,
        stale_and_running: false,
        clock_skew: reason == Reason::ClockSkew,
        barman_observed: true,
    };
    if fresh {
        return outcome;
    }
    if reason == Reason::BackupFromTheFuture {
        p.wait("the clocks to agree: a backup ends in the future".to_string());
        return outcome;
    }
    if reason == Reason::ClockSkew {
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
    p.step(PipelineStep::TakeBaseBackup, message);
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
