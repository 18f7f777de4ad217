//! The Kubernetes face of the two kinds: CustomResourceDefinitions for
//! `BackupPipeline` and `RestoreTarget`, generated from the same spec types the
//! YAML loader reads, so a field added to a spec appears in its CRD too.
//!
//! Each CRD's `spec` is the kind's spec type itself ([`BackupPipelineSpec`],
//! [`RestoreTargetSpec`]), wrapped in a transparent newtype only because the
//! derive names the generated root type after the wrapper; the JSON Schema of the
//! wrapper is the spec type's, byte for byte. The group and version are the ones
//! every spec document already declares (`reconciler.montagu/v1alpha1`), so a
//! checked-in document is a custom resource as written. `schemas/crd-*.yaml` is
//! this module's output, checked in and guarded by `tests/crd.rs`.
//!
//! This module only describes: it talks to no API server and decides nothing.

use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::crd_status::{BackupPipelineStatus, RestoreTargetStatus};
use super::{BackupPipelineSpec, RestoreTargetSpec};

/// The API group, the part of [`super::API_VERSION`] before the slash.
pub const GROUP: &str = "reconciler.montagu";

/// The API version, the part of [`super::API_VERSION`] after the slash.
pub const VERSION: &str = "v1alpha1";

/// The desired state: the `spec` of a `BackupPipeline` spec file, unchanged.
// Each `printcolumn(..)` repeats `type_ = ..`, which clippy takes for one
// attribute given twice.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
#[kube(
    group = "reconciler.montagu",
    version = "v1alpha1",
    kind = "BackupPipeline",
    root = "BackupPipelineResource",
    plural = "backuppipelines",
    shortname = "bp",
    category = "reconciler",
    namespaced,
    status = "BackupPipelineStatus",
    doc = "A backup pipeline: barman base backups and their retention, a volume holding the newest backup recovered and replayed, its starport copy and mirrors.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether every condition holds"
    ),
    printcolumn(
        name = "Backup",
        type_ = "date",
        json_path = ".status.newestBackupFinishedAt",
        description = "Age of the newest DONE base backup"
    ),
    printcolumn(
        name = "Volume",
        type_ = "date",
        json_path = ".status.volumeRecoveredAt",
        description = "Age of the recovered volume's recovery"
    ),
    printcolumn(
        name = "Waiting",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#,
        description = "What does not hold yet",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct BackupPipelineResourceSpec(pub BackupPipelineSpec);

/// The desired state: the `spec` of a `RestoreTarget` spec file, unchanged.
// Each `printcolumn(..)` repeats `type_ = ..`, which clippy takes for one
// attribute given twice.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
#[kube(
    group = "reconciler.montagu",
    version = "v1alpha1",
    kind = "RestoreTarget",
    root = "RestoreTargetResource",
    plural = "restoretargets",
    shortname = "rt",
    category = "reconciler",
    namespaced,
    status = "RestoreTargetStatus",
    doc = "A volume on a consumer host that holds the starport's newest complete generation, restored while the databases that use it are stopped.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether every condition holds"
    ),
    printcolumn(
        name = "Source",
        type_ = "date",
        json_path = ".status.sourceRecoveredAt",
        description = "Age of the starport's newest complete generation"
    ),
    printcolumn(
        name = "Restored",
        type_ = "date",
        json_path = ".status.volumeRestoredAt",
        description = "When the volume was last restored"
    ),
    printcolumn(
        name = "Waiting",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#,
        description = "What does not hold yet",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct RestoreTargetResourceSpec(pub RestoreTargetSpec);

/// The kinds a CRD exists for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrdKind {
    /// `backuppipelines.reconciler.montagu`.
    BackupPipeline,
    /// `restoretargets.reconciler.montagu`.
    RestoreTarget,
}

impl CrdKind {
    /// Both, in the order `reconciler crd` prints them.
    pub const ALL: [CrdKind; 2] = [CrdKind::BackupPipeline, CrdKind::RestoreTarget];

    /// The file under `schemas/` that holds the kind's CRD.
    pub fn file_name(self) -> &'static str {
        match self {
            CrdKind::BackupPipeline => "crd-backuppipeline.yaml",
            CrdKind::RestoreTarget => "crd-restoretarget.yaml",
        }
    }
}

/// The kind's CustomResourceDefinition (apiextensions.k8s.io/v1) as JSON.
pub fn crd(kind: CrdKind) -> serde_json::Value {
    let crd = match kind {
        CrdKind::BackupPipeline => BackupPipelineResource::crd(),
        CrdKind::RestoreTarget => RestoreTargetResource::crd(),
    };
    // The CRD type serializes into JSON whatever it holds: a failure here would
    // be a bug in k8s-openapi, and `Null` makes the staleness test say so.
    serde_json::to_value(crd).unwrap_or_default()
}

/// The kind's CRD as the YAML document checked in under `schemas/` and printed
/// by `reconciler crd`.
pub fn crd_yaml(kind: CrdKind) -> Result<String, CrdYamlError> {
    serde_saphyr::to_string(&crd(kind)).map_err(|source| CrdYamlError { kind, source })
}

/// A CRD could not be written as YAML.
#[derive(Debug, thiserror::Error)]
#[error("writing the {kind:?} CRD as YAML")]
pub struct CrdYamlError {
    /// Which CRD.
    pub kind: CrdKind,
    /// Why.
    #[source]
    pub source: serde_saphyr::SerializeError,
}
