//! Retention: which DONE backups are obsolete ([`obsolete`], a pure function of
//! the list and the spec), and the `RetentionSatisfied` condition with the
//! deletes it plans. Pure, like the rest of `plan`: no I/O, no clock; it never
//! deletes a backup that is running, the only entry, or judged by clocks that
//! disagree.
//!
//! Two promises hold whatever the spec says: the newest DONE backup is never
//! obsolete, and at least `minimumRedundancy` DONE backups are always kept. A
//! backup whose end time is unknown is kept: nothing is deleted on a guess.

use jiff::Timestamp;

use super::backup::{BackupOutcome, done_backups_newest_first};
use super::liveness::{Liveness, lock_held, unfinished};
use super::{
    ConditionStatus, ConditionType, PipelineStep, PlannedStep, Planner, Reason, condition,
};
use crate::observed::{Backup, BackupStatus};
use crate::spec::{RetentionPolicy, RetentionSpec};

/// The verdict on a list of DONE backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The obsolete backups, newest first, each with why.
    pub obsolete: Vec<(Backup, String)>,
    /// The rule, for messages: `keep 3`, `recovery window 3mo`.
    pub rule: String,
    /// When the verdict will next change by the mere passing of time.
    pub next_change: Option<Timestamp>,
}

/// Judges `done`, which must hold DONE backups only, newest first.
pub fn obsolete(done: &[Backup], retention: &RetentionSpec, now: Timestamp) -> Verdict {
    // The floor counts the newest backup, so the newest is never obsolete.
    let floor = retention.minimum_redundancy.max(1) as usize;
    let mut keep = vec![false; done.len()];
    let rule;
    let mut next_change = None;
    let why: String;
    match retention.policy {
        RetentionPolicy::Redundancy(n) => {
            rule = format!("keep {n}");
            why = format!("more than the {n} newest DONE backups are kept");
            for (i, backup) in done.iter().enumerate() {
                keep[i] = i < n as usize || backup.end_time.is_none();
            }
        }
        RetentionPolicy::RecoveryWindow(window) => {
            rule = format!("recovery window {window}");
            why = format!(
                "it ended before the {window} recovery window began and a newer backup covers the window's start"
            );
            let start = window.before(now);
            let mut anchor_found = false;
            let mut oldest_inside: Option<Timestamp> = None;
            for (i, backup) in done.iter().enumerate() {
                match backup.end_time {
                    None => keep[i] = true,
                    Some(end) if end >= start => {
                        keep[i] = true;
                        oldest_inside = Some(end);
                    }
                    Some(_) if !anchor_found => {
                        // The newest backup before the window: recovering to the
                        // window's first instant starts from it.
                        keep[i] = true;
                        anchor_found = true;
                    }
                    Some(_) => {}
                }
            }
            if anchor_found {
                // When the oldest backup inside the window leaves it, it becomes the
                // anchor and the current anchor becomes obsolete.
                next_change = oldest_inside.map(|end| window.after(end));
            }
        }
    }
    for k in keep.iter_mut().take(floor) {
        *k = true;
    }
    let obsolete = done
        .iter()
        .zip(keep)
        .filter(|(_, kept)| !kept)
        .map(|(backup, _)| (backup.clone(), why.clone()))
        .collect();
    Verdict {
        obsolete,
        rule,
        next_change,
    }
}

pub(super) fn plan_retention(p: &mut Planner<'_>, outcome: &BackupOutcome) {
    use ConditionStatus::*;
    let Some(state) = p.observed.barman.value() else {
        p.plan.conditions.push(condition(
            ConditionType::RetentionSatisfied,
            Unknown,
            Reason::BarmanUnavailable,
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
    let now_verdict = obsolete(&done, retention, p.cx.now);
    let obsolete_now = if clocks_disagree {
        Vec::new()
    } else {
        now_verdict.obsolete.clone()
    };

    let (status, reason, message) = if !dead.is_empty() {
        let ids: Vec<&str> = dead.iter().map(|b| b.id.as_str()).collect();
        (
            False,
            Reason::DeadBackups,
            format!(
                "{} STARTED but no barman backup runs {} (its lock is free, no pg_basebackup writes it): it died mid-copy and is deleted",
                ids.join(", "),
                if ids.len() == 1 { "it" } else { "them" }
            ),
        )
    } else if future {
        (
            Unknown,
            Reason::BackupFromTheFuture,
            "a DONE backup ends in the future; retention waits for the clocks to agree".to_string(),
        )
    } else if outcome.clock_skew {
        (
            Unknown,
            Reason::ClockSkew,
            "the primary's and this host's clocks disagree (see BaseBackupFresh); retention waits for them to agree".to_string(),
        )
    } else if obsolete_now.is_empty() && failed.is_empty() {
        (
            True,
            Reason::Satisfied,
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
            Reason::FailedBackups
        } else {
            Reason::ObsoleteBackups
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
        obsolete(&projected, retention, p.cx.now).obsolete
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
        let step = PipelineStep::DeleteBackup {
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
            step: PipelineStep::DeleteBackup {
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
                step: PipelineStep::DeleteBackup {
                    backup_id: backup.id.clone(),
                },
                reason: format!("backup {} is obsolete: {why}", backup.id),
            });
        } else {
            p.step(
                PipelineStep::DeleteBackup {
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

pub(super) fn now_verdict_contains(
    done: &[Backup],
    retention: &RetentionSpec,
    now: Timestamp,
    id: &str,
) -> bool {
    obsolete(done, retention, now)
        .obsolete
        .iter()
        .any(|(b, _)| b.id == id)
}
