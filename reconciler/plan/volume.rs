//! Planning the recovered volume: the `VolumeFresh` condition, stopping a stray
//! replay, and the `RecoverVolume` step. Pure: it never plans a recovery over data
//! it did not recover, nor while anything can write to the volume.

use super::backup::BackupOutcome;
use super::{
    BackupRef, ConditionStatus, ConditionType, PipelineStep, Planner, Reason, condition, human_age,
    human_ago, human_from_now,
};
use crate::observed::{
    Observation, StandbyPoint, VolumeMarker, VolumeState, VolumeUser, WriteArea,
};

/// Returns whether a recovery step was planned.
pub(super) fn plan_volume(p: &mut Planner<'_>, backups: &BackupOutcome) -> bool {
    use ConditionStatus::*;
    let spec = &p.pipeline.spec.recovered_volume;
    let state = match &p.observed.volume {
        Observation::Unavailable { reason } => {
            p.plan.conditions.push(condition(
                ConditionType::VolumeFresh,
                Unknown,
                Reason::VolumeUnavailable,
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
            Reason::VolumeMissing,
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
                Reason::ForeignData,
                format!("{} {reason}", spec.location()),
            ));
            p.wait(format!(
                "{} to be emptied or pointed elsewhere: the reconciler never overwrites data it did not recover",
                spec.location()
            ));
            return false;
        }
        VolumeState::Unmarked { reason, in_use, .. } => (
            Reason::NoValidMarker,
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
            Reason::VolumeInUse,
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
                    Reason::MarkerFromTheFuture,
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
                    Reason::Fresh,
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
                    Reason::Stale,
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
            PipelineStep::StopStrayReplay {
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
    // Restart safety: never recover beside a process still writing there.
    if super::orphans::writers_block(p, &[WriteArea::Volume], ConditionType::VolumeFresh) {
        return false;
    }
    let marker = match state {
        VolumeState::Marked { marker, .. } => Some(marker),
        _ => None,
    };
    match refresh_kind(marker, &source, backups) {
        Refresh::CatchUp { marker, standby } => p.step(
            PipelineStep::CatchUpVolume {
                backup_id: marker.backup_id.clone(),
                after_segment: standby.last_segment.clone(),
                timeline: standby.timeline,
            },
            format!(
                "catch up: replay WAL from {} (after segment {}) on the volume recovered from backup {}; {message}",
                marker.replayed_to_lsn, standby.last_segment, marker.backup_id
            ),
        ),
        Refresh::Full { why } => p.step(
            PipelineStep::RecoverVolume { backup: source },
            format!("full recovery: {why}; {message}"),
        ),
    }
    true
}

/// How the volume is refreshed, and why.
enum Refresh<'a> {
    /// Only the WAL archived since the volume's last replay.
    CatchUp {
        marker: &'a VolumeMarker,
        standby: &'a StandbyPoint,
    },
    /// `barman recover` and a replay from the backup.
    Full { why: String },
}

/// A catch-up only while the volume still holds the newest DONE backup and was left
/// as a standby at rest; any new DONE backup is recovered in full, which is the
/// restore drill proving that backup restorable.
fn refresh_kind<'a>(
    marker: Option<&'a VolumeMarker>,
    source: &BackupRef,
    backups: &BackupOutcome,
) -> Refresh<'a> {
    let Some(marker) = marker else {
        return Refresh::Full {
            why: "the volume holds no valid marker to catch up from".to_string(),
        };
    };
    let newest = match source {
        BackupRef::NewBackup => {
            return Refresh::Full {
                why: format!(
                    "a new base backup is taken first, newer than the volume's {} (restore drill)",
                    marker.backup_id
                ),
            };
        }
        BackupRef::Existing(id) => id,
    };
    if *newest != marker.backup_id {
        let done_at = backups
            .newest_done
            .as_ref()
            .and_then(|b| b.end_time)
            .map_or(String::new(), |t| format!(" (DONE at {t})"));
        return Refresh::Full {
            why: format!(
                "backup {newest}{done_at} is newer than the volume's {} (restore drill)",
                marker.backup_id
            ),
        };
    }
    match &marker.standby {
        Some(standby) => Refresh::CatchUp { marker, standby },
        None => Refresh::Full {
            why: format!(
                "the volume recovered from backup {} was not left as a standby at rest, so it cannot replay new WAL",
                marker.backup_id
            ),
        },
    }
}

/// Who can write to a volume, in words (for an observation that names no one, as
/// one recorded before users were: a postgres, from its postmaster.pid).
pub(super) fn writers(users: &[VolumeUser], location: &dyn std::fmt::Display) -> String {
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
pub(super) fn users_to_stop(users: &[VolumeUser], location: &dyn std::fmt::Display) -> String {
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
