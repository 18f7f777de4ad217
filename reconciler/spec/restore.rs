//! Desired state of a consumer host: the `RestoreTarget` kind.
//!
//! A restore target is a volume (a directory or a Docker named volume) that must
//! hold the newest complete generation a starport target publishes, restored with
//! `rsync -a --delete` from the starport on this host or over ssh. The types here
//! are the kind's single source of truth, like [`super::BackupPipeline`]'s; this
//! module performs no I/O.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    AbsolutePath, ApiVersion, DataPath, HumanDuration, Metadata, ObjectName, PipelineName,
    SpecSection, SshSpec, VolumeLocation, duration,
};

/// The `kind` of a `RestoreTarget` document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestoreTargetKind {
    /// The only value: `RestoreTarget`.
    RestoreTarget,
}

/// A volume on a consumer host (science, uat) that holds the starport's newest
/// complete generation, no older than `maxAge`, for the databases that use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "RestoreTarget", example = example_restore_target())]
pub struct RestoreTarget {
    /// Always `reconciler.montagu/v1alpha1`.
    pub api_version: ApiVersion,
    /// Always `RestoreTarget`.
    pub kind: RestoreTargetKind,
    /// Identifies the restore target (unique among all documents).
    pub metadata: Metadata,
    /// The desired state.
    pub spec: RestoreTargetSpec,
}

/// What the volume must hold and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RestoreTargetSpec {
    /// The starport target restored from.
    pub source: RestoreSourceSpec,
    /// The volume restored into.
    pub volume: RestoreVolumeSpec,
    /// The oldest the restored data may be, measured from when the backup host
    /// recovered it (the starport metadata's `recovered_at`, else `last_backup`).
    pub max_age: HumanDuration,
    /// The containers that use the volume. While one runs, nothing is restored.
    #[serde(default)]
    pub consumers: ConsumersSpec,
    /// How long `run` lets the target wait on the same thing before it reports it
    /// `Stalled`. Default 6h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_after: Option<HumanDuration>,
}

/// A starport target in bb8's layout: `<root>/<target>/data/<volumeName>/` and
/// `<root>/<target>/meta/metadata.json`. Only a copy whose metadata says it is
/// complete is restored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RestoreSourceSpec {
    /// The starport directory: on this host, or on `ssh.host` when `ssh` is set.
    #[schemars(example = &"/srv/starport")]
    pub root: AbsolutePath,
    /// The target (bucket) name, e.g. `barman_to_starport`.
    pub target: ObjectName,
    /// The copy under `data/`, e.g. `montagu_db_volume`.
    pub volume_name: ObjectName,
    /// Reach the starport over ssh (rsync's `user@host:path`) instead of locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSpec>,
    /// How long one restore (the rsync of the data) may take.
    #[serde(default = "default_restore_timeout")]
    pub timeout: HumanDuration,
}

fn default_restore_timeout() -> HumanDuration {
    duration("6h")
}

/// The volume restored into. Give exactly one of `path` and `dockerVolume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["path"]}, {"required": ["dockerVolume"]}]))]
pub struct RestoreVolumeSpec {
    /// A directory on this host (its parent must exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<DataPath>,
    /// A Docker named volume, created when absent, read and written through its
    /// mount point on this host (so the reconciler runs beside the engine, as root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"montagu_db_volume")]
    pub docker_volume: Option<ObjectName>,
}

impl RestoreVolumeSpec {
    /// Where the volume lives (the loader made sure exactly one field is set).
    pub fn location(&self) -> VolumeLocation<'_> {
        match (&self.path, &self.docker_volume) {
            (Some(path), _) => VolumeLocation::Directory(path),
            (None, Some(name)) => VolumeLocation::Docker(name),
            (None, None) => VolumeLocation::Unset,
        }
    }
}

/// The containers that use the volume: restoring under a running database would
/// corrupt it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConsumersSpec {
    /// Docker containers that use the volume, e.g. `montagu-db`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ObjectName>,
    /// Let the reconciler stop the running `containers` for a restore and start
    /// them again after it. Off by default: the plan reports them and waits until
    /// an operator stops them.
    #[serde(default)]
    pub stop_for_restore: bool,
    /// How long a container may take to stop (its stop signal, then SIGKILL).
    #[serde(default = "default_consumer_stop_timeout")]
    pub stop_timeout: HumanDuration,
}

fn default_consumer_stop_timeout() -> HumanDuration {
    duration("2m")
}

impl Default for ConsumersSpec {
    fn default() -> Self {
        Self {
            containers: Vec::new(),
            stop_for_restore: false,
            stop_timeout: default_consumer_stop_timeout(),
        }
    }
}

impl RestoreTarget {
    /// The target's name.
    pub fn name(&self) -> &PipelineName {
        &self.metadata.name
    }

    /// Checks the combinations the field types alone cannot.
    pub fn check_placement(&self) -> Result<(), (SpecSection, String)> {
        let spec = &self.spec;
        match (&spec.volume.path, &spec.volume.docker_volume) {
            (Some(_), Some(_)) => {
                return Err((
                    SpecSection::Volume,
                    "volume sets both `path` and `dockerVolume`; choose one".into(),
                ));
            }
            (None, None) => {
                return Err((
                    SpecSection::Volume,
                    "volume needs `path: /a/directory` or `dockerVolume: NAME`".into(),
                ));
            }
            _ => {}
        }
        if let Some(ssh) = &spec.source.ssh {
            ssh.check_paths().map_err(|m| (SpecSection::Source, m))?;
        } else if let VolumeLocation::Directory(path) = spec.volume.location() {
            let target = spec.source.root.as_path().join(spec.source.target.as_str());
            if path.as_path().starts_with(&target) || target.starts_with(path.as_path()) {
                return Err((
                    SpecSection::Volume,
                    format!(
                        "volume.path {path} and the starport target {} overlap; restore into a directory outside the starport",
                        target.display()
                    ),
                ));
            }
        }
        let containers = &spec.consumers.containers;
        for (i, c) in containers.iter().enumerate() {
            if containers[..i].contains(c) {
                return Err((
                    SpecSection::Consumers,
                    format!("container `{c}` is listed twice"),
                ));
            }
        }
        Ok(())
    }
}

fn example_restore_target() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": super::API_VERSION,
        "kind": "RestoreTarget",
        "metadata": {"name": "science"},
        "spec": {
            "source": {
                "root": "/srv/starport",
                "target": "barman_to_starport",
                "volumeName": "montagu_db_volume",
                "ssh": {
                    "host": "annex.montagu.dide.ic.ac.uk",
                    "user": "starport",
                    "identityFile": "/etc/reconciler/id_ed25519",
                    "knownHostsFile": "/etc/reconciler/known_hosts"
                }
            },
            "volume": {"dockerVolume": "montagu_db_volume"},
            "maxAge": "48h",
            "consumers": {"containers": ["montagu-db"], "stopForRestore": false}
        }
    })
}

/// The JSON Schema of a `RestoreTarget` document, as checked in under `schemas/`.
pub fn restore_target_schema() -> serde_json::Value {
    schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<RestoreTarget>()
        .to_value()
}
