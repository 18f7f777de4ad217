//! Per-pipeline status, written atomically to the state directory after every pass
//! and step, and read back by `reconciler status`.
//!
//! Conditions keep the Kubernetes fields: `lastTransitionTime` changes only when a
//! condition's status changes, and `observedGeneration` says which spec version the
//! condition was computed from (it counts changes of the spec's digest).

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::drivers::fsutil::write_atomically;
use crate::plan::{Condition, ConditionType, Plan};
use crate::reconcile::StepRecord;
use crate::spec::Resource;

/// Where status files live inside the state directory.
pub const STATUS_DIR: &str = "status";

/// A condition as status records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCondition {
    /// The condition.
    #[serde(flatten)]
    pub condition: Condition,
    /// When its status last changed.
    pub last_transition_time: Timestamp,
    /// The spec generation it was computed from.
    pub observed_generation: u64,
}

/// The step running now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InProgress {
    /// The step, in words.
    pub step: String,
    /// Why.
    pub reason: String,
    /// Since when.
    pub since: Timestamp,
}

/// Everything `reconciler status` shows for one pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    /// The pipeline.
    pub pipeline: String,
    /// The document's kind (`BackupPipeline`, `RestoreTarget`).
    #[serde(default)]
    pub kind: String,
    /// `file:line` of its spec.
    pub source: String,
    /// SHA-256 of the spec as loaded (canonical JSON).
    pub spec_digest: String,
    /// Counts spec changes: 1 for the first spec seen, +1 each time the digest changes.
    pub generation: u64,
    /// The git commit the spec files were checked out at, when they are in a git work tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// The conditions.
    pub conditions: Vec<StatusCondition>,
    /// What the last plan waits on.
    #[serde(default)]
    pub waiting_on: Vec<String>,
    /// Since when each of those waits has lasted (scheduled ones left out): what
    /// `Stalled` is judged on, kept across restarts.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub waiting_since: std::collections::BTreeMap<String, Timestamp>,
    /// The steps the last plan still has to take.
    #[serde(default)]
    pub pending_steps: Vec<String>,
    /// The step running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<InProgress>,
    /// The steps of the last run, with outcomes.
    #[serde(default)]
    pub last_steps: Vec<StepRecord>,
    /// When the last run of steps ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_finished_at: Option<Timestamp>,
    /// Failed runs since the last success.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The last error, when the last run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Last time every condition held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_converged_at: Option<Timestamp>,
    /// When the pipeline will be looked at next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_reconcile_at: Option<Timestamp>,
    /// When this status was written.
    pub updated_at: Timestamp,
}

/// The kind of a status written before kinds were recorded, told by its conditions.
fn kind_of_conditions(conditions: &[StatusCondition]) -> &'static str {
    let restore = conditions.iter().any(|c| {
        matches!(
            c.condition.kind,
            ConditionType::SourceComplete | ConditionType::VolumeRestored
        )
    });
    if restore {
        "RestoreTarget"
    } else {
        "BackupPipeline"
    }
}

/// The digest of a document's spec.
pub fn spec_digest(pipeline: &Resource) -> String {
    let json = serde_json::to_vec(pipeline).unwrap_or_default();
    let digest = Sha256::digest(&json);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Carries `lastTransitionTime` over from `previous` where a status did not change.
pub fn merge_conditions(
    previous: Option<&[StatusCondition]>,
    plan: &Plan,
    generation: u64,
    now: Timestamp,
) -> Vec<StatusCondition> {
    plan.conditions
        .iter()
        .map(|c| {
            let unchanged = previous
                .and_then(|p| {
                    p.iter().find(|old| {
                        old.condition.kind == c.kind && old.condition.subject == c.subject
                    })
                })
                .filter(|old| old.condition.status == c.status);
            StatusCondition {
                condition: c.clone(),
                last_transition_time: unchanged.map_or(now, |old| old.last_transition_time),
                observed_generation: generation,
            }
        })
        .collect()
}

/// The file a pipeline's status lives in.
pub fn status_path(state_dir: &Path, pipeline: &str) -> PathBuf {
    state_dir.join(STATUS_DIR).join(format!("{pipeline}.json"))
}

/// Writes a status atomically.
pub fn write_status(state_dir: &Path, status: &PipelineStatus) -> std::io::Result<()> {
    let dir = state_dir.join(STATUS_DIR);
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    write_atomically(
        &status_path(state_dir, &status.pipeline),
        &json,
        0o644,
        None,
    )
}

/// Reads every status in the state directory, sorted by pipeline.
pub fn read_statuses(state_dir: &Path) -> std::io::Result<Vec<PipelineStatus>> {
    let dir = state_dir.join(STATUS_DIR);
    let mut statuses = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(statuses),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        match serde_json::from_str::<PipelineStatus>(&text) {
            Ok(mut status) => {
                if status.kind.is_empty() {
                    status.kind = kind_of_conditions(&status.conditions).to_string();
                }
                statuses.push(status)
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring unreadable status file")
            }
        }
    }
    statuses.sort_by(|a, b| a.pipeline.cmp(&b.pipeline));
    Ok(statuses)
}

/// The git commit of the work tree `path` is in, if any. Runs `git` as an argv.
pub fn git_commit(path: &Path) -> Option<String> {
    let dir = if path.is_file() { path.parent()? } else { path };
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}

/// A table for people: a row per document ending with the conditions that do not
/// hold (never clipped), then a line for each condition not `True`, `Ready`
/// included, with its reason and since when.
pub fn render_table(statuses: &[PipelineStatus], now: Timestamp) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let name_width = statuses
        .iter()
        .map(|s| s.pipeline.chars().count())
        .max()
        .unwrap_or(0)
        .max(20);
    let _ = writeln!(
        out,
        "{:<name_width$} {:<15} {:<7} {:<30} {:<10} NOT HOLDING",
        "NAME", "KIND", "READY", "ACTIVITY", "NEXT"
    );
    for s in statuses {
        let ready = s
            .conditions
            .iter()
            .find(|c| c.condition.kind == crate::plan::ConditionType::Ready)
            .map_or("-".to_string(), |c| format!("{:?}", c.condition.status));
        let not_holding: Vec<String> = s
            .conditions
            .iter()
            .filter(|c| c.condition.kind != crate::plan::ConditionType::Ready && is_trouble(c))
            .map(|c| format!("{}={:?}", c.condition.label(), c.condition.status))
            .collect();
        let not_holding = if not_holding.is_empty() {
            "-".to_string()
        } else {
            not_holding.join(",")
        };
        let stalled = s
            .conditions
            .iter()
            .find(|c| c.condition.kind == crate::plan::ConditionType::Stalled);
        let activity = match (&s.in_progress, s.waiting_on.first(), &s.last_error) {
            (Some(p), _, _) => format!("running: {}", p.step),
            (None, _, _) if stalled.is_some() => {
                format!(
                    "STALLED: {}",
                    stalled.map_or("", |c| c.condition.reason.as_str())
                )
            }
            (None, _, Some(e)) => format!("failed: {e}"),
            (None, Some(w), None) => format!("waiting: {w}"),
            (None, None, None) if s.pending_steps.is_empty() => "idle".to_string(),
            (None, None, None) => format!("pending: {}", s.pending_steps.join(", ")),
        };
        let next = match s.next_reconcile_at {
            None => "-".to_string(),
            Some(t) if t <= now => "due".to_string(),
            Some(t) => format!("in {}", crate::plan::human_age(now, t)),
        };
        let _ = writeln!(
            out,
            "{:<name_width$} {:<15} {:<7} {:<30} {next:<10} {not_holding}",
            s.pipeline,
            s.kind,
            ready,
            clip(&activity, 30),
        );
    }
    for s in statuses {
        for c in s.conditions.iter().filter(|c| is_trouble(c)) {
            let _ = writeln!(
                out,
                "{}: {} {:?} since {}: {}: {}",
                s.pipeline,
                c.condition.label(),
                c.condition.status,
                c.last_transition_time.strftime("%Y-%m-%d %H:%M:%S UTC"),
                c.condition.reason,
                c.condition.message
            );
        }
    }
    out
}

/// A condition worth an operator's eye: one that does not hold, or `Stalled`,
/// which is present only while it does.
fn is_trouble(c: &StatusCondition) -> bool {
    c.condition.status != crate::plan::ConditionStatus::True
        || c.condition.kind == crate::plan::ConditionType::Stalled
}

/// `text` cut to `width` characters, the cut marked.
fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut clipped: String = text.chars().take(width - 1).collect();
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ConditionStatus, ConditionType};

    const NOW: &str = "2026-11-25T10:00:00Z";

    fn condition(kind: ConditionType, status: ConditionStatus, reason: &str) -> StatusCondition {
        StatusCondition {
            condition: Condition {
                kind,
                status,
                reason: reason.into(),
                message: format!("{reason} happened"),
                subject: None,
            },
            last_transition_time: NOW.parse().unwrap(),
            observed_generation: 1,
        }
    }

    fn status(name: &str, kind: &str, conditions: Vec<StatusCondition>) -> PipelineStatus {
        let json = serde_json::json!({
            "pipeline": name,
            "kind": kind,
            "source": "specs/x.yaml:1",
            "specDigest": "00",
            "generation": 1,
            "conditions": [],
            "updatedAt": NOW,
        });
        PipelineStatus {
            conditions,
            ..serde_json::from_value(json).unwrap()
        }
    }

    #[test]
    fn the_table_shows_each_kind_with_the_conditions_that_do_not_hold() {
        use ConditionStatus::{False, True, Unknown};
        let now: Timestamp = NOW.parse().unwrap();
        let mut backup = status(
            "montagu",
            "BackupPipeline",
            vec![
                condition(ConditionType::BaseBackupFresh, True, "Fresh"),
                condition(ConditionType::Ready, True, "Converged"),
            ],
        );
        backup.next_reconcile_at = Some(now + jiff::SignedDuration::from_secs(9 * 3600));
        let mut restore = status(
            "montagu-science",
            "RestoreTarget",
            vec![
                condition(ConditionType::SourceComplete, False, "NoCompleteCopy"),
                condition(ConditionType::VolumeRestored, Unknown, "EngineDown"),
                condition(ConditionType::Ready, False, "NotConverged"),
            ],
        );
        restore.waiting_on = vec!["the backup host to finish a copy in annex".into()];
        restore.next_reconcile_at = Some(now - jiff::SignedDuration::from_secs(60));
        let table = render_table(&[backup, restore], now);
        let expected = [
            "NAME                 KIND            READY   ACTIVITY                       NEXT       NOT HOLDING",
            "montagu              BackupPipeline  True    idle                           in 9h 0m   -",
            "montagu-science      RestoreTarget   False   waiting: the backup host to f… due        SourceComplete=False,VolumeRestored=Unknown",
            "montagu-science: SourceComplete False since 2026-11-25 10:00:00 UTC: NoCompleteCopy: NoCompleteCopy happened",
            "montagu-science: VolumeRestored Unknown since 2026-11-25 10:00:00 UTC: EngineDown: EngineDown happened",
            "montagu-science: Ready False since 2026-11-25 10:00:00 UTC: NotConverged: NotConverged happened",
        ];
        assert_eq!(table.lines().collect::<Vec<_>>(), expected, "\n{table}");
    }

    #[test]
    fn a_long_name_widens_the_name_column() {
        let long = "a".repeat(40);
        let table = render_table(
            &[status(&long, "BackupPipeline", vec![])],
            NOW.parse().unwrap(),
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0].find("KIND"), Some(41), "\n{table}");
        assert_eq!(lines[1].find("BackupPipeline"), Some(41), "\n{table}");
    }

    #[test]
    fn a_status_file_without_a_kind_is_told_by_its_conditions() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join(STATUS_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, condition) in [("montagu", "VolumeFresh"), ("science", "VolumeRestored")] {
            let json = serde_json::json!({
                "pipeline": name,
                "source": "specs/x.yaml:1",
                "specDigest": "00",
                "generation": 3,
                "conditions": [{
                    "type": condition, "status": "True", "reason": "Fresh", "message": "",
                    "lastTransitionTime": NOW, "observedGeneration": 3,
                }],
                "updatedAt": NOW,
            });
            std::fs::write(dir.join(format!("{name}.json")), json.to_string()).unwrap();
        }
        let kinds: Vec<(String, String)> = read_statuses(state.path())
            .unwrap()
            .into_iter()
            .map(|s| (s.pipeline, s.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("montagu".to_string(), "BackupPipeline".to_string()),
                ("science".to_string(), "RestoreTarget".to_string())
            ]
        );
    }

    #[test]
    fn long_cells_are_clipped_visibly() {
        assert_eq!(clip("idle", 30), "idle");
        let clipped = clip(&"x".repeat(40), 30);
        assert_eq!(clipped.chars().count(), 30);
        assert!(clipped.ends_with('…'));
    }
}
