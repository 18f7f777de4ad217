//! The `status` of the two custom resources: plain data, the conditions as the
//! reconciler reports them (`plan::Condition` with the `lastTransitionTime` and
//! `observedGeneration` that `runtime::status` adds) and the instants the printer
//! columns show as ages.
//!
//! It mirrors those types field for field instead of reusing them because the
//! spec layer sits below the planner, and because a CRD's schema is a contract
//! with the API server: `type` and `reason` are strings here, so a new condition
//! or reason does not need a new CRD before a controller may report it. Nothing
//! here decides which condition holds; a controller fills it from a pass.

use jiff::Timestamp;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// One condition, in the Kubernetes shape (`metav1.Condition`) plus `subject`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceCondition {
    /// The condition type, e.g. `BaseBackupFresh`, `VolumeFresh`, `Ready`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: ResourceConditionStatus,
    /// A CamelCase word, stable for alerting (listed in docs/outputs.md).
    pub reason: String,
    /// A sentence for a human.
    pub message: String,
    /// What the condition is about when there are several of its type (the
    /// mirror's name for `MirrorInSync`). Several conditions may share a type,
    /// so the list is replaced whole, never merged by type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When its status last changed.
    #[schemars(schema_with = "date_time")]
    pub last_transition_time: Timestamp,
    /// The `metadata.generation` it was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ResourceConditionStatus {
    /// Holds.
    True,
    /// Does not hold.
    False,
    /// Could not be determined.
    Unknown,
}

/// What a controller reports for a `BackupPipeline`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPipelineStatus {
    /// The `metadata.generation` of the spec the last pass planned from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The conditions, in the planner's order, `Ready` last.
    #[serde(default)]
    pub conditions: Vec<ResourceCondition>,
    /// When the newest DONE base backup ended (the `Backup` column's age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub newest_backup_finished_at: Option<Timestamp>,
    /// When the volume's current recovery was made (the `Volume` column's age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub volume_recovered_at: Option<Timestamp>,
    /// What the last plan waits on instead of acting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_on: Vec<String>,
    /// When the pipeline will be looked at next: the planner's next deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub next_reconcile_at: Option<Timestamp>,
}

/// What a controller reports for a `RestoreTarget`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTargetStatus {
    /// The `metadata.generation` of the spec the last pass planned from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The conditions, in the planner's order, `Ready` last.
    #[serde(default)]
    pub conditions: Vec<ResourceCondition>,
    /// When the backup host recovered the starport's newest complete generation
    /// (the `Source` column's age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub source_recovered_at: Option<Timestamp>,
    /// When the volume was last restored (the `Restored` column's age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub volume_restored_at: Option<Timestamp>,
    /// What the last plan waits on instead of acting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_on: Vec<String>,
    /// When the target will be looked at next: the planner's next deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub next_reconcile_at: Option<Timestamp>,
}

/// An RFC 3339 instant, as jiff writes a `Timestamp` and as a `date` printer
/// column reads it.
fn date_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "format": "date-time"})
}
