//! Which DONE backups retention makes obsolete. Pure, like the rest of `plan`.
//!
//! Two promises hold whatever the spec says: the newest DONE backup is never
//! obsolete, and at least `minimumRedundancy` DONE backups are always kept. A
//! backup whose end time is unknown is kept: nothing is deleted on a guess.

use jiff::Timestamp;

use crate::observed::Backup;
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
