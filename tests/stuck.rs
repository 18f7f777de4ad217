//! The planner never waits for ever and never churns: dead STARTED backups, clocks
//! that disagree, and the `Stalled` condition. Pure: plain data in, plan out (the
//! real barman cases are in `tests/pipeline.rs` and `tests/docker.rs`).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp, tz::TimeZone};
use reconciler::observed::{
    Backup, BackupActivity, BackupStatus, BarmanState, Observation, Observed, TakenBackup,
    VolumeState,
};
use reconciler::plan::{
    BackupRef, ConditionStatus, ConditionType, PipelineStep, Plan, PlanContext, StallHistory, plan,
    render_text, stalled_condition,
};
use reconciler::spec::BackupPipeline;

const NOW: &str = "2026-11-23T12:00:00Z";

fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn pipeline(extra: &str) -> BackupPipeline {
    serde_saphyr::from_str(&format!(
        r#"apiVersion: reconciler.montagu/v1alpha1
kind: BackupPipeline
metadata: {{name: montagu}}
spec:
  barman: {{server: montagu}}
  baseBackup: {{maxAge: 30d{extra}}}
  retention: {{keep: 3, minimumRedundancy: 1}}
  recoveredVolume:
    path: /srv/nightly/montagu_db_volume
    maxAge: 24h
    replay: {{postgresBin: /usr/lib/postgresql/15/bin}}
"#
    ))
    .expect("test pipeline parses")
}

fn cx() -> PlanContext {
    PlanContext {
        now: t(NOW),
        local_time_zone: TimeZone::UTC,
    }
}

fn done(id: &str, end: &str) -> Backup {
    Backup {
        id: id.to_string(),
        status: BackupStatus::Done,
        end_time: Some(t(end)),
        size_bytes: Some(1),
    }
}

fn started(id: &str) -> Backup {
    Backup {
        id: id.to_string(),
        status: BackupStatus::Started,
        end_time: None,
        size_bytes: None,
    }
}

/// The catalogue, with `activity` as a look that read the same STARTED entries
/// before it as after.
fn observed(backups: Vec<Backup>, activity: Option<Observation<BackupActivity>>) -> Observed {
    let started: Vec<String> = backups
        .iter()
        .filter(|b| b.status == BackupStatus::Started)
        .map(|b| b.id.clone())
        .collect();
    let activity = activity.map(|a| match a {
        Observation::Observed { value } => Observation::observed(BackupActivity {
            started_before: started.clone(),
            ..value
        }),
        other => other,
    });
    Observed {
        barman: Observation::observed(BarmanState { backups, activity }),
        volume: Observation::observed(VolumeState::Missing),
        starport: None,
        machine_id: Some("machine-a".to_string()),
        wal: None,
        mirrors: Vec::new(),
        last_backup_taken: None,
        writers: None,
    }
}

fn activity(lock_held: bool, copying: &[&str]) -> Option<Observation<BackupActivity>> {
    Some(Observation::observed(BackupActivity {
        lock_held,
        copying: copying.iter().map(|s| s.to_string()).collect(),
        started_before: Vec::new(),
    }))
}

fn condition(plan: &Plan<PipelineStep>, kind: ConditionType) -> (ConditionStatus, String, String) {
    let c = plan.condition(kind).expect("condition present");
    (c.status, c.reason.to_string(), c.message.clone())
}

fn steps(plan: &Plan<PipelineStep>) -> Vec<PipelineStep> {
    plan.steps.iter().map(|s| s.step.clone()).collect()
}

fn delete(id: &str) -> PipelineStep {
    PipelineStep::DeleteBackup {
        backup_id: id.to_string(),
    }
}

/// 40 days before NOW, so older than maxAge 30d.
const STALE_END: &str = "2026-10-14T12:00:00Z";

#[test]
fn a_dead_started_backup_is_deleted_and_a_new_backup_taken_instead_of_waiting_for_ever() {
    let world = observed(
        vec![
            done("20261014T110000", STALE_END),
            started("20261120T010000"),
        ],
        activity(false, &[]),
    );

    let plan = plan(&pipeline(""), &world, &cx());

    assert_eq!(
        steps(&plan)[..2],
        [delete("20261120T010000"), PipelineStep::TakeBaseBackup],
        "{plan:#?}"
    );
    let (status, reason, message) = condition(&plan, ConditionType::RetentionSatisfied);
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::False, "DeadBackups")
    );
    assert!(message.contains("20261120T010000"), "{message}");
    let (_, _, fresh) = condition(&plan, ConditionType::BaseBackupFresh);
    assert!(fresh.contains("died mid-copy"), "{fresh}");
    assert!(
        !plan.waiting_on.iter().any(|w| w.contains("to finish")),
        "{:?}",
        plan.waiting_on
    );
}

#[test]
fn the_only_entry_dead_is_deleted_after_a_new_backup_not_before() {
    // barman deletes every archived WAL with the last backup it lists, and then
    // refuses to back up: the new backup comes first.
    let world = observed(vec![started("20261120T010000")], activity(false, &[]));

    let plan = plan(&pipeline(""), &world, &cx());

    let steps = steps(&plan);
    assert_eq!(steps[0], PipelineStep::TakeBaseBackup, "{plan:#?}");
    assert!(steps[1..].contains(&delete("20261120T010000")), "{plan:#?}");

    // With the start window closed, the dead entry waits for a DONE backup.
    let closed = pipeline(", startWindow: {start: '01:00', end: '02:00', timeZone: UTC}");
    let plan = reconciler::plan::plan(&closed, &world, &cx());
    assert!(
        plan.steps
            .iter()
            .all(|s| s.step != delete("20261120T010000")),
        "{plan:#?}"
    );
    assert!(
        plan.waiting_on
            .iter()
            .any(|w| w.contains("a DONE backup before deleting dead backup 20261120T010000")),
        "{:?}",
        plan.waiting_on
    );
}

#[test]
fn a_live_backup_holding_barmans_lock_is_waited_for_and_never_touched() {
    let world = observed(
        vec![
            done("20261014T110000", STALE_END),
            started("20261123T100000"),
        ],
        activity(true, &[]),
    );

    let plan = plan(&pipeline(""), &world, &cx());

    assert!(
        steps(&plan).iter().all(|s| !matches!(
            s,
            PipelineStep::DeleteBackup { .. } | PipelineStep::TakeBaseBackup
        )),
        "{plan:#?}"
    );
    assert!(
        plan.waiting_on
            .iter()
            .any(|w| w.contains("backup 20261123T100000 to finish")),
        "{:?}",
        plan.waiting_on
    );
    let (status, reason, _) = condition(&plan, ConditionType::RetentionSatisfied);
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::True, "Satisfied")
    );
}

#[test]
fn a_pg_basebackup_still_copying_keeps_an_entry_alive_after_barman_died() {
    let world = observed(
        vec![
            done("20261014T110000", STALE_END),
            started("20261123T100000"),
        ],
        activity(false, &["20261123T100000"]),
    );

    let plan = plan(&pipeline(""), &world, &cx());

    assert!(plan.steps.is_empty(), "{plan:#?}");
    assert!(plan.waiting_on.iter().any(|w| w.contains("to finish")));
}

#[test]
fn a_dead_entry_beside_a_live_backup_waits_for_the_lock_to_be_free() {
    // Only the newest STARTED entry can hold the lock: the older one is dead,
    // but barman protects only the oldest entry from a delete, so nothing is
    // deleted while any backup runs.
    let world = observed(
        vec![
            done("20261014T110000", STALE_END),
            started("20261120T010000"),
            started("20261123T100000"),
        ],
        activity(true, &[]),
    );

    let plan = plan(&pipeline(""), &world, &cx());

    assert!(plan.steps.is_empty(), "{plan:#?}");
    let (_, reason, message) = condition(&plan, ConditionType::RetentionSatisfied);
    assert_eq!(reason, "DeadBackups");
    assert!(
        message.contains("20261120T010000") && !message.contains("20261123T100000"),
        "{message}"
    );
    assert!(
        plan.waiting_on
            .iter()
            .any(|w| w.contains("20261123T100000 to finish")),
        "{:?}",
        plan.waiting_on
    );
}

#[test]
fn an_entry_that_appeared_while_the_lock_was_looked_at_is_never_judged_dead() {
    // The catalogue read before the look had no STARTED entry; the one read after
    // has one, and the look saw no lock: a backup that began in between.
    let mut world = observed(
        vec![
            done("20261014T110000", STALE_END),
            started("20261123T115959"),
        ],
        activity(false, &[]),
    );
    if let Observation::Observed { value } = &mut world.barman
        && let Some(Observation::Observed { value: activity }) = &mut value.activity
    {
        activity.started_before.clear();
    }

    let plan = plan(&pipeline(""), &world, &cx());

    assert!(plan.steps.is_empty(), "{plan:#?}");
    assert!(
        plan.waiting_on
            .iter()
            .any(|w| w.contains("20261123T115959 to finish")),
        "{:?}",
        plan.waiting_on
    );
}

#[test]
fn when_liveness_cannot_be_told_the_entry_is_waited_for_with_the_reason() {
    let world = observed(
        vec![
            done("20261014T110000", STALE_END),
            started("20261120T010000"),
        ],
        Some(Observation::Unavailable {
            reason: "container barman is not running".to_string(),
        }),
    );

    let plan = plan(&pipeline(""), &world, &cx());

    assert!(plan.steps.is_empty(), "{plan:#?}");
    assert!(
        plan.waiting_on
            .iter()
            .any(|w| w.contains("could not be told: container barman is not running")),
        "{:?}",
        plan.waiting_on
    );
}

#[test]
fn a_backup_barman_started_an_hour_ago_that_ends_40_days_ago_is_clock_skew_not_staleness() {
    // The primary's clock runs 40 days behind barman's: its end time is old
    // the moment it is written. Another backup would look just as old.
    let world = observed(vec![done("20261123T110000", "2026-10-14T11:30:00Z")], None);

    let plan = plan(&pipeline(""), &world, &cx());

    assert!(
        !steps(&plan).contains(&PipelineStep::TakeBaseBackup),
        "{plan:#?}"
    );
    let (status, reason, message) = condition(&plan, ConditionType::BaseBackupFresh);
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::False, "ClockSkew")
    );
    assert!(
        message.contains("primary's clock is about 39d 23h behind barman's"),
        "{message}"
    );
    let (status, reason, _) = condition(&plan, ConditionType::RetentionSatisfied);
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::Unknown, "ClockSkew")
    );
    assert!(
        plan.waiting_on
            .iter()
            .any(|w| w.contains("clocks to agree"))
    );
    // The backup is real: the volume is still recovered from it.
    assert!(
        steps(&plan).contains(&PipelineStep::RecoverVolume {
            backup: BackupRef::Existing("20261123T110000".to_string())
        }),
        "{plan:#?}"
    );
}

#[test]
fn a_backup_this_reconciler_just_took_that_looks_40_days_old_is_clock_skew() {
    // This host's clock runs 40 days ahead: barman's id and the end time agree
    // with each other, only the journal knows the backup is a minute old.
    let mut world = observed(vec![done("20261014T110000", STALE_END)], None);
    world.last_backup_taken = Some(TakenBackup {
        id: "20261014T110000".to_string(),
        finished_at: t(NOW) - SignedDuration::from_mins(1),
    });

    let plan = plan(&pipeline(""), &world, &cx());

    assert!(
        !steps(&plan).contains(&PipelineStep::TakeBaseBackup),
        "{plan:#?}"
    );
    let (_, reason, message) = condition(&plan, ConditionType::BaseBackupFresh);
    assert_eq!(reason, "ClockSkew");
    assert!(
        message.contains("this host's clock is 39d 23h ahead of barman's and the primary's"),
        "{message}"
    );
}

#[test]
fn a_backup_that_is_really_old_is_stale_whatever_the_journal_says() {
    // Taken by this reconciler, 40 days ago by every clock.
    let mut world = observed(vec![done("20261014T110000", STALE_END)], None);
    world.last_backup_taken = Some(TakenBackup {
        id: "20261014T110000".to_string(),
        finished_at: t(STALE_END),
    });

    let plan = plan(&pipeline(""), &world, &cx());

    let (_, reason, _) = condition(&plan, ConditionType::BaseBackupFresh);
    assert_eq!(reason, "Stale");
    assert_eq!(steps(&plan)[0], PipelineStep::TakeBaseBackup, "{plan:#?}");
}

#[test]
fn a_barman_id_in_another_time_zone_is_not_mistaken_for_skew() {
    // maxAge 1d: the id read in UTC says it started 20 h ago, the backup ended
    // 25 h ago: within any zone offset, so it is simply stale.
    let p = pipeline_with_max_age("1d");
    let world = observed(vec![done("20261122T160000", "2026-11-22T11:00:00Z")], None);

    let plan = plan(&p, &world, &cx());

    let (_, reason, _) = condition(&plan, ConditionType::BaseBackupFresh);
    assert_eq!(reason, "Stale");
    assert_eq!(steps(&plan)[0], PipelineStep::TakeBaseBackup);
}

fn pipeline_with_max_age(max_age: &str) -> BackupPipeline {
    let mut p = pipeline("");
    p.spec.base_backup.max_age = max_age.to_string().try_into().expect("duration");
    p
}

#[test]
fn an_unobservable_pipeline_is_unknown_in_the_diff_header_not_drifted() {
    let mut world = observed(Vec::new(), None);
    world.barman = Observation::Unavailable {
        reason: "barman is not installed".to_string(),
    };

    let plan = plan(&pipeline(""), &world, &cx());
    let text = render_text("pipeline", &plan, t(NOW));

    assert!(text.starts_with("pipeline montagu: unknown\n"), "{text}");
}

fn waiting_plan(waits: &[&str], scheduled: &[&str]) -> Plan<PipelineStep> {
    let world = observed(vec![done("20261014T110000", STALE_END)], None);
    let mut plan = plan(&pipeline(""), &world, &cx());
    plan.steps.clear();
    plan.waiting_on = waits.iter().map(|w| w.to_string()).collect();
    plan.scheduled = scheduled.iter().map(|w| w.to_string()).collect();
    plan
}

fn since(what: &str, hours_ago: i64) -> BTreeMap<String, Timestamp> {
    BTreeMap::from([(
        what.to_string(),
        t(NOW) - SignedDuration::from_hours(hours_ago),
    )])
}

#[test]
fn a_wait_that_outlasts_stalled_after_makes_the_pipeline_stalled() {
    let wait = "backup 20261120T010000 to finish (status Started)";
    let plan = waiting_plan(&[wait], &[]);
    let bound = SignedDuration::from_hours(6);

    let young = StallHistory {
        waiting_since: since(wait, 5),
        ..Default::default()
    };
    assert_eq!(stalled_condition(&plan, &young, bound, t(NOW)), None);

    let old = StallHistory {
        waiting_since: since(wait, 7),
        ..Default::default()
    };
    let stalled = stalled_condition(&plan, &old, bound, t(NOW)).expect("stalled");
    assert_eq!(stalled.kind, ConditionType::Stalled);
    assert_eq!(stalled.status, ConditionStatus::True);
    assert_eq!(stalled.reason, "WaitingTooLong");
    assert!(
        stalled.message.contains(wait) && stalled.message.contains("7h"),
        "{}",
        stalled.message
    );
}

#[test]
fn a_start_window_is_a_schedule_not_a_stall() {
    let wait = "the base backup start window 01:00–05:00";
    let plan = waiting_plan(&[wait], &[wait]);
    let history = StallHistory {
        waiting_since: since(wait, 20),
        ..Default::default()
    };

    assert_eq!(
        stalled_condition(&plan, &history, SignedDuration::from_hours(6), t(NOW)),
        None
    );
}

#[test]
fn repeated_failures_make_the_pipeline_stalled_and_say_the_last_error() {
    let plan = waiting_plan(&[], &[]);
    let history = StallHistory {
        consecutive_failures: 3,
        last_error: Some("recover: barman recover failed: disk full".to_string()),
        ..Default::default()
    };

    let stalled =
        stalled_condition(&plan, &history, SignedDuration::from_hours(6), t(NOW)).expect("stalled");
    assert_eq!(stalled.reason, "RepeatedFailures");
    assert!(stalled.message.contains("disk full"), "{}", stalled.message);

    let two = StallHistory {
        consecutive_failures: 2,
        ..history
    };
    assert_eq!(
        stalled_condition(&plan, &two, SignedDuration::from_hours(6), t(NOW)),
        None
    );
}

#[test]
fn a_converged_pipeline_is_never_stalled() {
    let world = Observed {
        volume: Observation::observed(VolumeState::Missing),
        ..observed(vec![done("20261120T000000", "2026-11-20T01:00:00Z")], None)
    };
    let mut converged = plan(&pipeline(""), &world, &cx());
    converged.steps.clear();
    converged.waiting_on.clear();
    for c in &mut converged.conditions {
        c.status = ConditionStatus::True;
    }
    let history = StallHistory {
        consecutive_failures: 9,
        ..Default::default()
    };
    assert_eq!(
        stalled_condition(&converged, &history, SignedDuration::from_hours(6), t(NOW)),
        None
    );
}

/// No documents under `--specs` (an empty directory, or only `*.bak` files) is an
/// error, not a quiet green, for every command that reads specs.
#[test]
fn no_specs_at_all_is_an_error_for_validate_diff_and_apply() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.yaml.bak"),
        "kind: BackupPipeline\n",
    )
    .unwrap();
    for command in ["validate", "diff", "apply"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_reconciler"))
            .arg(command)
            .arg("--specs")
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "no specs found under {}, expected *.yaml files",
                dir.path().display()
            )),
            "{command}: {stderr}"
        );
    }
}

#[test]
fn a_backup_ending_seconds_ahead_of_this_clock_ended_just_now_not_in_the_future_ago() {
    let world = observed(vec![done("20261123T115900", "2026-11-23T12:00:02Z")], None);

    let plan = plan(&pipeline(""), &world, &cx());

    let (status, _, message) = condition(&plan, ConditionType::BaseBackupFresh);
    assert_eq!(status, ConditionStatus::True);
    assert!(message.contains("ended just now"), "{message}");
    assert!(!message.contains("future"), "{message}");
}
