//! Property tests over everything that reads untrusted text or must hold for any
//! world: spec parsing, barman's JSON, and the planner's safety promises. None may
//! panic; the planner may never delete the newest DONE backup or go below the floor.
//!
//! The case count comes from `PROPTEST_CASES` (proptest's own variable); CI runs
//! the defaults below. The full run (over 100,000 cases of parsing):
//!
//! ```sh
//! PROPTEST_CASES=50000 cargo test --release --test fuzz
//! ```

use std::path::Path;

use jiff::{Timestamp, tz::TimeZone};
use proptest::prelude::*;
use reconciler::drivers::barman::{parse_backup_result, parse_delete_result, parse_list_backups};
use reconciler::drivers::command::CommandOutput;
use reconciler::observed::{
    Backup, BackupStatus, BarmanState, Observation, Observed, StarportState, VolumeState,
};
use reconciler::plan::{PipelineStep, PlanContext, plan};
use reconciler::spec::load::load_text;

const VALID: &str = "apiVersion: reconciler.montagu/v1alpha1
kind: BackupPipeline
metadata:
  name: montagu
spec:
  barman: {server: montagu, config: /etc/barman.conf}
  baseBackup: {maxAge: 30d, startWindow: {start: \"00:00\", end: \"06:00\", timeZone: Europe/London}}
  retention: {keep: 3, minimumRedundancy: 1}
  recoveredVolume:
    path: /srv/nightly/montagu_db_volume
    maxAge: 24h
    replay: {postgresBin: /usr/lib/postgresql/15/bin, timeout: 1h, settings: {shared_buffers: 2GB}}
  starport: {root: /srv/starport, target: barman_to_starport}
";

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/barman-3.4")
            .join(name),
    )
    .unwrap()
}

/// A text with random edits: characters inserted, removed or replaced at random places.
fn mutated(base: String) -> impl Strategy<Value = String> {
    let len = base.chars().count();
    prop::collection::vec(
        (
            0..=len,
            0u8..3,
            any::<char>(),
            prop::sample::select(vec![
                '-', ':', '{', '}', '[', ']', '&', '*', '!', '\n', ' ', '#', '"', '\'', '|', '>',
            ]),
        ),
        1..8,
    )
    .prop_map(move |edits| {
        let mut chars: Vec<char> = base.chars().collect();
        for (at, kind, any_char, yaml_char) in edits {
            let at = at.min(chars.len());
            let c = if any_char.is_ascii() {
                any_char
            } else {
                yaml_char
            };
            match kind {
                0 => chars.insert(at, c),
                1 if at < chars.len() => {
                    chars.remove(at);
                }
                _ if at < chars.len() => chars[at] = c,
                _ => chars.push(c),
            }
        }
        chars.into_iter().collect()
    })
}

fn load(text: &str) {
    let (mut pipelines, mut problems) = (Vec::new(), Vec::new());
    load_text(Path::new("fuzz.yaml"), text, &mut pipelines, &mut problems);
    for problem in &problems {
        assert!(problem.line >= 1 && problem.column >= 1, "{problem}");
        assert!(!problem.message.is_empty());
    }
}

proptest! {
    #![proptest_config(cases(20_000))]

    #[test]
    fn spec_parsing_never_panics_on_edited_specs(text in mutated(VALID.to_string())) {
        load(&text);
    }

    #[test]
    fn spec_parsing_never_panics_on_arbitrary_text(text in "\\PC{0,300}") {
        load(&text);
    }

    #[test]
    fn list_backups_parsing_never_panics(text in mutated(fixture("list-backups-with-failed.json"))) {
        let _ = parse_list_backups("montagu", &text);
    }

    #[test]
    fn backup_and_delete_results_never_panic(text in mutated(fixture("backup-wait.json")), code in -1i32..3) {
        let out = CommandOutput { code: Some(code), signal: None, stdout: text.clone(), stderr: text };
        let _ = parse_backup_result(&out);
        let _ = parse_delete_result("20261123T183849", &out);
    }
}

/// Arbitrary JSON, for the barman parsers: any shape at all must give an answer.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        prop::sample::select(vec![
            "DONE",
            "FAILED",
            "STARTED",
            "montagu",
            "backup_id",
            "1795459022",
            "",
            "-1e999"
        ])
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "montagu",
                    "backup_id",
                    "status",
                    "end_time_timestamp",
                    "size_bytes",
                    "_ERROR",
                    "_WARNING",
                    "error"
                ])
                .prop_map(String::from),
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(cases(20_000))]

    #[test]
    fn barman_parsers_answer_any_json(value in json_value(), code in 0i32..2) {
        let text = value.to_string();
        let _ = parse_list_backups("montagu", &text);
        let out = CommandOutput { code: Some(code), signal: None, stdout: text, stderr: String::new() };
        let _ = parse_backup_result(&out);
        let _ = parse_delete_result("x", &out);
    }
}

fn backups() -> impl Strategy<Value = Vec<Backup>> {
    prop::collection::vec(
        (
            0u32..40,
            prop::sample::select(vec![
                "DONE",
                "DONE",
                "DONE",
                "FAILED",
                "STARTED",
                "WAITING_FOR_WALS",
                "EMPTY",
            ]),
            prop::option::weighted(0.9, 0i64..400),
        ),
        0..10,
    )
    .prop_map(|entries| {
        let mut seen = std::collections::BTreeSet::new();
        entries
            .into_iter()
            .filter(|(day, _, _)| seen.insert(*day))
            .map(|(day, status, end_offset_days)| {
                let start =
                    Timestamp::from_second(1_780_000_000 + i64::from(day) * 86_400 * 10).unwrap();
                Backup {
                    id: start.strftime("%Y%m%dT%H%M%S").to_string(),
                    status: BackupStatus::from_barman(status),
                    // Mostly a sane end time shortly after the start; sometimes absent.
                    end_time: (status == "DONE")
                        .then(|| {
                            end_offset_days.map(|o| start + jiff::SignedDuration::from_secs(o * 60))
                        })
                        .flatten(),
                    size_bytes: None,
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(cases(3_000))]

    /// Whatever barman holds and whatever the time, the plan never deletes the newest
    /// DONE backup before a newer one is taken, never goes below the floor, and never
    /// plans a delete while a backup runs.
    #[test]
    fn retention_promises_hold_for_any_catalogue(
        backups in backups(),
        keep in 1u32..5,
        floor in 1u32..5,
        window in prop::option::of(1u32..200),
        now_days in 0i64..600,
    ) {
        let floor = floor.min(keep);
        let retention = match window {
            Some(days) => format!("{{recoveryWindow: {days}d, minimumRedundancy: {floor}}}"),
            None => format!("{{keep: {keep}, minimumRedundancy: {floor}}}"),
        };
        let spec: reconciler::spec::BackupPipeline = serde_saphyr::from_str(&VALID.replace("{keep: 3, minimumRedundancy: 1}", &retention)).unwrap();
        let observed = Observed {
            barman: Observation::observed(BarmanState::new(backups.clone())),
            volume: Observation::observed(VolumeState::Missing),
            starport: Some(Observation::observed(StarportState::NoMetadata { reason: "none".into() })),
            machine_id: Some("m".into()),

            wal: None,
                mirrors: Vec::new(),
            last_backup_taken: None,
            writers: None,
        };
        let now = Timestamp::from_second(1_780_000_000 + now_days * 86_400).unwrap();
        let plan = plan(&spec, &observed, &PlanContext { now, local_time_zone: TimeZone::UTC });

        let mut done: Vec<&Backup> = backups.iter().filter(|b| b.status == BackupStatus::Done).collect();
        done.sort_by(|a, b| b.id.cmp(&a.id));
        let running = backups.iter().any(|b| matches!(b.status, BackupStatus::Started | BackupStatus::WaitingForWals));
        let take = plan.steps.iter().position(|s| s.step == PipelineStep::TakeBaseBackup);
        // Walk the steps in order: the DONE count may never drop below the floor (or
        // below what there was, when there were fewer), not even between a delete
        // and a later backup.
        let must_keep = (floor as usize).min(done.len());
        let mut count = done.len();
        for (i, s) in plan.steps.iter().enumerate() {
            if s.step == PipelineStep::TakeBaseBackup {
                count += 1;
                continue;
            }
            let PipelineStep::DeleteBackup { backup_id } = &s.step else { continue };
            prop_assert!(!running, "delete planned while a backup runs");
            let status = &backups.iter().find(|b| &b.id == backup_id).unwrap().status;
            if *status == BackupStatus::Failed {
                continue;
            }
            prop_assert_eq!(status, &BackupStatus::Done);
            if Some(backup_id) == done.first().map(|b| &b.id) {
                prop_assert!(take.is_some_and(|t| t < i), "newest deleted without a newer backup first");
            }
            prop_assert!(done.iter().find(|b| &b.id == backup_id).unwrap().end_time.is_some(), "deleted a backup of unknown age");
            count -= 1;
            prop_assert!(count >= must_keep, "below the floor after deleting {}: {} < {}", backup_id, count, must_keep);
        }
    }
}
