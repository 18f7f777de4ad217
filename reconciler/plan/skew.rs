//! Clocks that disagree, told from the data itself. Pure.
//!
//! Three clocks meet in a backup's age: the primary's (barman records
//! `pg_backup_stop()`'s `now()` as the end time), barman's host's (the backup id is
//! its local time at the start) and this host's (`now`). When the primary runs far
//! behind, a backup taken a minute ago ends "40 days ago": without this check each
//! pass would take another two-hour backup and delete an older one, for ever.
//!
//! Two witnesses, either enough:
//! - the reconciler's own journal: it took this very backup recently by its own
//!   clock, yet the end time says it is older than `maxAge`;
//! - barman's id: the backup started within `maxAge` by barman's clock, yet ended
//!   before that by the primary's. The id carries no zone, so it is read in the
//!   local zone and only trusted beyond [`ZONE_SLACK_SECONDS`].

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::{CLOCK_SKEW_TOLERANCE_SECONDS, human_seconds};
use crate::observed::TakenBackup;
use crate::spec::HumanDuration;

/// Local offsets span UTC−12 to UTC+14: a barman id read in the wrong zone is
/// off by at most this much.
pub const ZONE_SLACK_SECONDS: i64 = 26 * 3600;

/// When barman's id says a backup started (`YYYYMMDDTHHMMSS`, barman's local
/// time), read in `zone`.
pub fn id_start(id: &str, zone: &TimeZone) -> Option<Timestamp> {
    let civil = DateTime::strptime("%Y%m%dT%H%M%S", id).ok()?;
    civil
        .to_zoned_datetime(zone.clone())
        .ok()
        .map(|z| z.timestamp())
}

/// Why a stale-looking newest backup is in fact a clock disagreement, in words
/// that name the clocks and the amount; `None` when it is simply stale.
pub fn skew_of_stale_backup(
    id: &str,
    end: Timestamp,
    max_age: HumanDuration,
    taken: Option<&TakenBackup>,
    zone: &TimeZone,
    now: Timestamp,
) -> Option<String> {
    let started = id_start(id, zone);
    let fresh_by = |t: Timestamp, slack: i64| {
        now.as_second() - t.as_second() + slack < max_age_seconds(max_age)
    };
    let behind = |taken: &TakenBackup| taken.finished_at.as_second() - end.as_second();
    // barman returns some time after the end (it waits for the last WAL): only a
    // gap beyond the tolerance is a disagreement of clocks, whatever maxAge says.
    if let Some(taken) = taken.filter(|t| t.id == id)
        && fresh_by(taken.finished_at, 0)
        && behind(taken) > CLOCK_SKEW_TOLERANCE_SECONDS
    {
        let behind = behind(taken);
        let barman_agrees_with_us = started.is_some_and(|s| {
            (taken.finished_at.as_second() - s.as_second()).abs() < ZONE_SLACK_SECONDS
        });
        let barman_agrees_with_primary =
            started.is_some_and(|s| (s.as_second() - end.as_second()).abs() < ZONE_SLACK_SECONDS);
        let which = if barman_agrees_with_us {
            format!(
                "the primary's clock is {} behind this host's and barman's",
                human_seconds(behind)
            )
        } else if barman_agrees_with_primary {
            format!(
                "this host's clock is {} ahead of barman's and the primary's",
                human_seconds(behind)
            )
        } else {
            format!(
                "this host's, barman's and the primary's clocks disagree (this host is {} ahead of the primary)",
                human_seconds(behind)
            )
        };
        return Some(format!(
            "backup {id} was taken by this reconciler at {} (this host's clock) but ended at {} by the primary's clock: {which}",
            taken.finished_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            end.strftime("%Y-%m-%d %H:%M:%S UTC"),
        ));
    }
    let started = started?;
    if fresh_by(started, ZONE_SLACK_SECONDS)
        && started.as_second() - end.as_second() > CLOCK_SKEW_TOLERANCE_SECONDS
    {
        return Some(format!(
            "backup {id} started at {} by barman's clock but ended at {} by the primary's: the primary's clock is about {} behind barman's",
            started.strftime("%Y-%m-%d %H:%M"),
            end.strftime("%Y-%m-%d %H:%M:%S UTC"),
            human_seconds(started.as_second() - end.as_second())
        ));
    }
    None
}

fn max_age_seconds(max_age: HumanDuration) -> i64 {
    SignedDuration::try_from(max_age.to_std())
        .map(|d| d.as_secs())
        .unwrap_or(i64::MAX)
}
