//! Conditions in the Kubernetes style: their types, statuses and the `Ready`
//! summary of the others. Plain data: which condition holds is decided by the
//! planner's sections, never here.

use serde::{Deserialize, Serialize};

use super::Reason;

/// A condition, in the Kubernetes style.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Which one.
    #[serde(rename = "type")]
    pub kind: ConditionType,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// A CamelCase word, stable for alerting (serialized as the word).
    pub reason: Reason,
    /// A sentence for a human.
    pub message: String,
    /// What the condition is about when a pipeline has several of its type (the
    /// mirror's name for `MirrorInSync`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl Condition {
    /// `MirrorInSync[offsite]`, or just the type.
    pub fn label(&self) -> String {
        match &self.subject {
            Some(subject) => format!("{}[{subject}]", self.kind),
            None => self.kind.to_string(),
        }
    }
}

/// The conditions: a `BackupPipeline` reports those from `BaseBackupFresh` to
/// `MirrorInSync`, a `RestoreTarget` `SourceComplete` and `VolumeRestored`; both
/// end with `Ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConditionType {
    /// The newest DONE backup is younger than `baseBackup.maxAge`.
    BaseBackupFresh,
    /// No obsolete or FAILED backups are left.
    RetentionSatisfied,
    /// The volume holds a marked, replayed recovery younger than `recoveredVolume.maxAge`.
    VolumeFresh,
    /// The starport copy holds the volume's generation.
    StarportInSync,
    /// receive-wal runs, its slot is active and the primary streams (only for a
    /// pipeline with `walStreaming`).
    WalStreaming,
    /// A mirror holds the starport's generation (one per mirror, `subject` names it).
    MirrorInSync,
    /// A restore target's starport copy is complete and younger than its `maxAge`.
    SourceComplete,
    /// A restore target's volume holds the starport's generation, completely.
    VolumeRestored,
    /// Present (and `True`) only while the document cannot get on without
    /// somebody: steps failed several times in a row, or a wait outlasted
    /// `stalledAfter`. Set by `run`, which remembers earlier passes.
    Stalled,
    /// All of the above.
    Ready,
}

impl std::fmt::Display for ConditionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    /// Holds.
    True,
    /// Does not hold.
    False,
    /// Could not be determined.
    Unknown,
}
pub(super) fn condition(
    kind: ConditionType,
    status: ConditionStatus,
    reason: Reason,
    message: String,
) -> Condition {
    Condition {
        kind,
        status,
        reason,
        message,
        subject: None,
    }
}
pub(super) fn ready_condition(conditions: &[Condition]) -> Condition {
    use ConditionStatus::*;
    let not_true: Vec<&Condition> = conditions.iter().filter(|c| c.status != True).collect();
    if not_true.is_empty() {
        return condition(
            ConditionType::Ready,
            True,
            Reason::Converged,
            "every condition holds".to_string(),
        );
    }
    let status = if not_true.iter().any(|c| c.status == Unknown) {
        Unknown
    } else {
        False
    };
    let names: Vec<String> = not_true.iter().map(|c| c.kind.to_string()).collect();
    condition(
        ConditionType::Ready,
        status,
        Reason::NotConverged,
        format!("not holding: {}", names.join(", ")),
    )
}
