//! Which unfinished barman backups are alive, from barman's own evidence. Pure.
//!
//! `barman list-backups` shows a running backup and one whose `barman backup` was
//! killed mid-copy (OOM killer, reboot, a restarted barman container) alike:
//! STARTED, for ever. barman holds the server's backup lock for the whole backup
//! and creates the entry after taking it, so only the newest unfinished entry can
//! be the lock holder's; a `pg_basebackup` still writing into an entry's directory
//! keeps it alive too (it outlives a killed barman for seconds). Everything else
//! STARTED is dead: nothing will ever finish it, and waiting for it would stall
//! the pipeline for ever.

use crate::observed::{Backup, BackupActivity, BackupStatus, BarmanState, Observation};

/// What the planner makes of one unfinished entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Running (or, for WAITING_FOR_WALS, closed by barman cron): waited for.
    Live,
    /// Nothing runs it: cleaned with `barman delete` once the lock is free.
    Dead,
    /// Could not be told: waited for, never touched.
    Unknown(String),
}

/// An unfinished entry and what it is.
#[derive(Debug, Clone)]
pub struct Unfinished<'a> {
    /// The entry.
    pub backup: &'a Backup,
    /// Alive, dead or unknown.
    pub liveness: Liveness,
}

/// Every STARTED and WAITING_FOR_WALS entry, newest first, each judged.
pub fn unfinished(state: &BarmanState) -> Vec<Unfinished<'_>> {
    let mut entries: Vec<&Backup> = state
        .backups
        .iter()
        .filter(|b| {
            matches!(
                b.status,
                BackupStatus::Started | BackupStatus::WaitingForWals
            )
        })
        .collect();
    entries.sort_by(|a, b| b.id.cmp(&a.id));
    // The lock holder's entry: the newest one barman creates at the start of a
    // backup (EMPTY for a moment, then STARTED).
    let newest_starting = state
        .backups
        .iter()
        .filter(|b| b.status == BackupStatus::Started || is_empty(&b.status))
        .map(|b| b.id.as_str())
        .max();
    entries
        .into_iter()
        .map(|backup| Unfinished {
            backup,
            liveness: judge(backup, state.activity.as_ref(), newest_starting),
        })
        .collect()
}

fn is_empty(status: &BackupStatus) -> bool {
    matches!(status, BackupStatus::Other(s) if s == "EMPTY")
}

fn judge(
    backup: &Backup,
    activity: Option<&Observation<BackupActivity>>,
    newest_starting: Option<&str>,
) -> Liveness {
    if backup.status == BackupStatus::WaitingForWals {
        // Copied; barman cron closes it once its WAL arrives. Not a dead process.
        return Liveness::Live;
    }
    match activity {
        None => Liveness::Unknown("barman's backup lock was not looked at".to_string()),
        Some(Observation::Unavailable { reason }) => Liveness::Unknown(reason.clone()),
        Some(Observation::Observed { value }) => {
            let copying = value.copying.iter().any(|id| id == &backup.id);
            let holds_lock = value.lock_held && newest_starting == Some(backup.id.as_str());
            // STARTED only in the catalogue read after the lock was looked at: a
            // backup that began meanwhile, whose lock the look may have missed.
            let appeared_meanwhile = !value.started_before.contains(&backup.id);
            if copying || holds_lock || appeared_meanwhile {
                Liveness::Live
            } else {
                Liveness::Dead
            }
        }
    }
}

/// The server's backup lock is held: some `barman backup` runs now, so nothing
/// may be deleted (barman protects only the oldest entry from a delete).
pub fn lock_held(state: &BarmanState) -> bool {
    state
        .activity
        .as_ref()
        .and_then(|a| a.value())
        .is_some_and(|a| a.lock_held)
}
