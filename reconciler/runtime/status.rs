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
use crate::plan::{Condition, Plan};
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
            Ok(status) => statuses.push(status),
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

/// A table for people.
pub fn render_table(statuses: &[PipelineStatus], now: Timestamp) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<8} {:<10} {:<10} {:<10} {:<10} {:<28} NEXT",
        "PIPELINE", "READY", "BACKUP", "RETENTION", "VOLUME", "STARPORT", "ACTIVITY"
    );
    for s in statuses {
        let status_of = |kind: &str| {
            s.conditions
                .iter()
                .find(|c| c.condition.kind.to_string() == kind)
                .map_or("-".to_string(), |c| format!("{:?}", c.condition.status))
        };
        let activity = match (&s.in_progress, s.waiting_on.first(), &s.last_error) {
            (Some(p), _, _) => format!("running: {}", p.step),
            (None, _, Some(e)) => format!("failed: {e}"),
            (None, Some(w), None) => format!("waiting: {w}"),
            (None, None, None) if s.pending_steps.is_empty() => "idle".to_string(),
            (None, None, None) => format!("pending: {}", s.pending_steps.join(", ")),
        };
        let activity: String = activity.chars().take(28).collect();
        let next = s.next_reconcile_at.map_or("-".to_string(), |t| {
            format!("in {}", crate::plan::human_age(now, t))
        });
        let _ = writeln!(
            out,
            "{:<16} {:<8} {:<10} {:<10} {:<10} {:<10} {:<28} {next}",
            s.pipeline,
            status_of("Ready"),
            status_of("BaseBackupFresh"),
            status_of("RetentionSatisfied"),
            status_of("VolumeFresh"),
            status_of("StarportInSync"),
            activity
        );
    }
    for s in statuses {
        for c in s
            .conditions
            .iter()
            .filter(|c| c.condition.status != crate::plan::ConditionStatus::True)
        {
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
