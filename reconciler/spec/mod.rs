//! Desired state: the `BackupPipeline` and `RestoreTarget` kinds that operators
//! write in `specs/*.yaml`.
//!
//! The types here are the spec's single source of truth: the YAML loader
//! deserializes into them, and `schemas/` is generated from them. Field names are
//! part of the public contract (`apiVersion: reconciler.montagu/v1alpha1`): rename
//! nothing without a new API version. This module performs no I/O; loading lives
//! in [`load`].
//!
//! Its length (over 600 lines) is the doc comments: each is the JSON Schema's
//! description of its field, what an editor shows an operator; the validated
//! names live in [`names`], the value types in [`values`].

pub mod crd;
pub mod crd_status;
pub mod load;
pub mod names;
pub mod restore;
pub mod values;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use load::{LoadedResource, LoadedSpecs, SpecProblem, load_specs};
pub use names::{EnvName, ImageRef, SettingName, SettingValue, TimeZoneName};
pub use restore::{
    ConsumersSpec, RestoreSourceSpec, RestoreTarget, RestoreTargetSpec, RestoreVolumeSpec,
    restore_target_schema,
};
pub use values::{AbsolutePath, DataPath, HumanDuration, ObjectName, PipelineName, TimeOfDay};

/// How long one wait may last before `run` reports a document `Stalled`, when its
/// spec says nothing: longer than a 757 GiB base backup (about two hours) and its
/// replay, short enough that the morning shift hears of it.
pub const DEFAULT_STALLED_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_hours(6);

/// The API version every document must declare.
pub const API_VERSION: &str = "reconciler.montagu/v1alpha1";

/// The `apiVersion` of a document. Only one exists so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// The first, still evolving, version of the API.
    #[serde(rename = "reconciler.montagu/v1alpha1")]
    V1Alpha1,
}

/// The `kind` of a `BackupPipeline` document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackupPipelineKind {
    /// The only value: `BackupPipeline`.
    BackupPipeline,
}

/// A backup pipeline: barman base backups and their retention, a volume holding the
/// newest backup recovered with its WAL fully replayed, and a starport copy of that
/// volume for other hosts to restore from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(
    title = "BackupPipeline",
    example = example_pipeline(),
)]
pub struct BackupPipeline {
    /// Always `reconciler.montagu/v1alpha1`.
    pub api_version: ApiVersion,
    /// Always `BackupPipeline`.
    pub kind: BackupPipelineKind,
    /// Identifies the pipeline.
    pub metadata: Metadata,
    /// The desired state.
    pub spec: BackupPipelineSpec,
}

/// Identifies a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Unique across all spec files: names the pipeline in `diff`, status and metrics.
    pub name: PipelineName,
}

/// The four desired states of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackupPipelineSpec {
    /// How barman is reached.
    pub barman: BarmanSpec,
    /// How fresh the newest base backup must be, and when one may start.
    pub base_backup: BaseBackupSpec,
    /// Which backups to keep.
    pub retention: RetentionSpec,
    /// The volume that holds the newest backup, recovered and replayed.
    pub recovered_volume: RecoveredVolumeSpec,
    /// The starport copy of the recovered volume. Leave it out for a pipeline that
    /// ships nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starport: Option<StarportSpec>,
    /// WAL streaming health: receive-wal running, its replication slot active, the
    /// primary streaming. Leave it out to leave streaming to barman's own cron.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_streaming: Option<WalStreamingSpec>,
    /// How long `run` lets the pipeline wait on the same thing before it reports
    /// it `Stalled` (a start window does not count). Default 6h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_after: Option<HumanDuration>,
    /// Which reconciler instances may take this pipeline in fleet mode (`run
    /// --fleet`); leave it out to let any instance take it. Ignored by a single
    /// reconciler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementSpec>,
}

/// Where a pipeline may run when several reconcilers share the specs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlacementSpec {
    /// The instance names (`run --fleet-name`, default the host name) that may
    /// own the pipeline; no other instance campaigns for it.
    pub hosts: Vec<ObjectName>,
}

/// WAL streaming is a desired state too: `barman -f json check` must report
/// receive-wal running, the replication slot active and the primary streaming
/// (and, when barman's `last_wal_maximum_age` is set, WAL received recently).
/// When receive-wal is down the reconciler runs `barman cron`, which starts it,
/// instead of a separate every-minute cron job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WalStreamingSpec {
    /// How long `barman cron` may take.
    #[serde(default = "default_cron_timeout")]
    pub cron_timeout: HumanDuration,
    /// When receive-wal runs but its replication slot is broken (not active, or
    /// missing), drop and re-create it (`barman receive-wal --drop-slot`, then
    /// `--create-slot`). WAL the primary wrote while the slot was broken may be
    /// lost to barman: a new base backup is the way back to a full chain. Off by
    /// default: the plan reports the slot and waits.
    #[serde(default)]
    pub reset_broken_slot: bool,
}

fn default_cron_timeout() -> HumanDuration {
    duration("5m")
}

/// How barman is reached: `barman [-c CONFIG] … SERVER`, on this host or by exec
/// into the running container that holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BarmanSpec {
    /// The barman server name (a section of barman's configuration).
    pub server: ObjectName,
    /// barman's configuration file, passed as `barman -c CONFIG` (a path as barman
    /// sees it: inside `container` when that is set). Without it barman reads
    /// `~/.barman.conf`, `/etc/barman.conf` or `/etc/barman/barman.conf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<AbsolutePath>,
    /// The running Docker container barman lives in, e.g. `barman-montagu`: every
    /// barman command is run there through the Docker API (`docker exec`). Without
    /// it barman runs on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"barman-montagu")]
    pub container: Option<ObjectName>,
}

/// The newest DONE base backup must be no older than `maxAge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BaseBackupSpec {
    /// The oldest the newest DONE backup may be, measured from its end time.
    pub max_age: HumanDuration,
    /// When set, a backup starts only inside this daily window, so a multi-hour
    /// backup never starts in working hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_window: Option<StartWindow>,
    /// How long `barman backup --wait` may take before the reconciler gives up on it.
    #[serde(default = "default_backup_timeout")]
    pub timeout: HumanDuration,
}

fn default_backup_timeout() -> HumanDuration {
    duration("12h")
}

/// A daily window `[start, end)` in a time zone; `end` before `start` wraps past midnight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StartWindow {
    /// Opening time, `HH:MM`.
    pub start: TimeOfDay,
    /// Closing time, `HH:MM` (exclusive).
    pub end: TimeOfDay,
    /// IANA time zone of `start` and `end`, e.g. `Europe/London`. Defaults to the
    /// host's local time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<TimeZoneName>,
}

/// Which DONE backups to keep: either the newest `keep`, or every backup needed to
/// recover to any point in `recoveryWindow`; never fewer than `minimumRedundancy`.
/// FAILED backups are always deleted (they make `barman check` fail).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RetentionFields", into = "RetentionFields")]
pub struct RetentionSpec {
    /// The rule.
    pub policy: RetentionPolicy,
    /// The floor: never keep fewer DONE backups than this.
    pub minimum_redundancy: u32,
}

/// The retention rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionPolicy {
    /// Keep the newest N DONE backups (barman's `REDUNDANCY N`).
    Redundancy(u32),
    /// Keep what recovery to any point in the window needs (barman's `RECOVERY WINDOW OF …`).
    RecoveryWindow(HumanDuration),
}

/// `retention` as written in YAML.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["keep"]}, {"required": ["recoveryWindow"]}]))]
pub struct RetentionFields {
    /// Keep the newest N DONE backups. Give either this or `recoveryWindow`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "values::whole::keep"
    )]
    #[schemars(range(min = 1), example = 3)]
    pub keep: Option<u32>,
    /// Keep every backup needed to recover to any point in this window, e.g. `3 months`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_window: Option<HumanDuration>,
    /// Never keep fewer DONE backups than this (at least 1). Default 1.
    #[serde(
        default = "default_minimum_redundancy",
        deserialize_with = "values::whole::minimum_redundancy"
    )]
    #[schemars(range(min = 1))]
    pub minimum_redundancy: u32,
}

fn default_minimum_redundancy() -> u32 {
    1
}

impl TryFrom<RetentionFields> for RetentionSpec {
    type Error = String;
    fn try_from(f: RetentionFields) -> Result<Self, Self::Error> {
        if f.minimum_redundancy == 0 {
            return Err(
                "minimumRedundancy must be at least 1: the newest DONE backup is never deleted"
                    .into(),
            );
        }
        let policy = match (f.keep, f.recovery_window) {
            (Some(_), Some(_)) => {
                return Err("retention sets both `keep` and `recoveryWindow`; choose one".into());
            }
            (None, None) => {
                return Err("retention needs `keep: N` or `recoveryWindow: DURATION`".into());
            }
            (Some(0), None) => return Err("keep must be at least 1".into()),
            (Some(n), None) if n < f.minimum_redundancy => {
                return Err(format!(
                    "keep ({n}) is below minimumRedundancy ({}); raise keep or lower the floor",
                    f.minimum_redundancy
                ));
            }
            (Some(n), None) => RetentionPolicy::Redundancy(n),
            (None, Some(w)) => RetentionPolicy::RecoveryWindow(w),
        };
        Ok(Self {
            policy,
            minimum_redundancy: f.minimum_redundancy,
        })
    }
}

impl From<RetentionSpec> for RetentionFields {
    fn from(r: RetentionSpec) -> Self {
        let (keep, recovery_window) = match r.policy {
            RetentionPolicy::Redundancy(n) => (Some(n), None),
            RetentionPolicy::RecoveryWindow(w) => (None, Some(w)),
        };
        Self {
            keep,
            recovery_window,
            minimum_redundancy: r.minimum_redundancy,
        }
    }
}

/// A directory or a Docker named volume holding the newest backup, recovered with
/// barman and its WAL fully replayed by a short-lived postgres, no older than
/// `maxAge`. Give exactly one of `path` and `dockerVolume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["path"]}, {"required": ["dockerVolume"]}]))]
pub struct RecoveredVolumeSpec {
    /// A directory on this host (it becomes PGDATA). Its parent must exist. barman
    /// recovers into a staging directory inside it, so it may be a mount point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<DataPath>,
    /// A Docker named volume (it becomes PGDATA), e.g. `montagu_db_volume`: created
    /// when absent, labelled as managed by this pipeline, and read and written
    /// through its mount point on this host (so the reconciler runs beside the
    /// Docker engine, as root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"montagu_db_volume")]
    pub docker_volume: Option<ObjectName>,
    /// Where barman sees the volume when that differs from this host's view, e.g.
    /// `/nightly` when barman runs in a container with the volume mounted there.
    /// barman recovers into `<barmanPath>/.reconciler-staging-<attempt>`. Required with
    /// `dockerVolume` when `barman.container` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"/nightly")]
    pub barman_path: Option<AbsolutePath>,
    /// The oldest the recovery may be.
    pub max_age: HumanDuration,
    /// The OS user that owns the recovered files (barman's `barman_user`, looked up
    /// where barman runs: in `barman.container` when set); the replay postgres runs
    /// as this user.
    #[serde(default = "default_owner")]
    pub owner: ObjectName,
    /// How long `barman recover` may take.
    #[serde(default = "default_recover_timeout")]
    pub recover_timeout: HumanDuration,
    /// How WAL is replayed.
    pub replay: ReplaySpec,
}

fn default_recover_timeout() -> HumanDuration {
    duration("6h")
}

fn default_owner() -> ObjectName {
    ObjectName::try_from("barman".to_string()).unwrap_or_else(|_| unreachable!())
}

/// How the recovered cluster's WAL is replayed: postgres is started on a private
/// socket with no TCP listener, left to finish recovery, and stopped cleanly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplaySpec {
    /// Directory holding `postgres`, `psql` and `pg_controldata` of the backup's major version.
    #[schemars(example = &"/usr/lib/postgresql/15/bin")]
    pub postgres_bin: AbsolutePath,
    /// How long replay may take before it is abandoned.
    #[serde(default = "default_replay_timeout")]
    pub timeout: HumanDuration,
    /// How long the clean shutdown (its checkpoint) may take.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: HumanDuration,
    /// The database role used to ask `select pg_is_in_recovery()`.
    #[serde(default = "default_database_user")]
    pub database_user: ObjectName,
    /// Extra server settings for the replay (`-c name=value`), e.g. a smaller
    /// `shared_buffers` than production's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<SettingName, SettingValue>,
    /// Run the replay in a short-lived container from this image instead of on this
    /// host; `postgresBin` is then a path inside the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ReplayContainerSpec>,
}

/// The container a replay runs in: created for one replay, removed after it, never
/// left running. Its entrypoint is always `<postgresBin>/postgres` with the replay's
/// own flags (no TCP listener, no archiving), whatever the image would start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplayContainerSpec {
    /// The image, e.g. `vimc/montagu-db:master`. It must be present on the engine
    /// (the reconciler never pulls).
    #[schemars(example = &"vimc/montagu-db:master")]
    pub image: ImageRef,
    /// Where the volume is mounted in the container (PGDATA).
    #[serde(default = "default_replay_mount")]
    pub mount_path: AbsolutePath,
    /// Extra environment variables for the container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<EnvName, SettingValue>,
}

fn default_replay_mount() -> AbsolutePath {
    AbsolutePath::try_from("/pgdata".to_string()).unwrap_or_else(|e| unreachable!("{e}"))
}

fn default_replay_timeout() -> HumanDuration {
    duration("1h")
}

fn default_stop_timeout() -> HumanDuration {
    duration("10m")
}

fn default_database_user() -> ObjectName {
    ObjectName::try_from("postgres".to_string()).unwrap_or_else(|_| unreachable!())
}

/// A copy of the recovered volume in bb8's starport layout:
/// `<root>/<target>/data/<volumeName>/` plus `<root>/<target>/meta/metadata.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StarportSpec {
    /// The starport directory (bb8's `backup_location`).
    pub root: DataPath,
    /// The target (bucket) name, e.g. `barman_to_starport`.
    pub target: ObjectName,
    /// The name of the copy under `data/`. Defaults to `recoveredVolume.dockerVolume`
    /// or the last component of `recoveredVolume.path` (e.g. `montagu_db_volume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<ObjectName>,
    /// How long one rsync of the volume may take.
    #[serde(default = "default_sync_timeout")]
    pub timeout: HumanDuration,
    /// Off-site copies of this target, kept in the same layout by rsync over ssh,
    /// each synced after the starport holds a complete generation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorSpec>,
}

/// An off-site copy of a starport target: `<root>/<target>/data/<volumeName>/` and
/// `<root>/<target>/meta/metadata.json` on another host, reached by rsync over
/// ssh. Its metadata follows the starport's rule: removed before the data is
/// touched, written last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MirrorSpec {
    /// Names the mirror in conditions and steps; unique within the pipeline.
    pub name: ObjectName,
    /// How the other host is reached.
    pub ssh: SshSpec,
    /// The starport root on that host.
    #[schemars(example = &"/srv/starport")]
    pub root: AbsolutePath,
    /// How long one rsync to the mirror may take.
    #[serde(default = "default_sync_timeout")]
    pub timeout: HumanDuration,
}

/// An ssh destination: key authentication only, host key checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshSpec {
    /// Host name or address.
    #[schemars(example = &"backup.example.org")]
    pub host: ObjectName,
    /// The remote account.
    pub user: ObjectName,
    /// The ssh port.
    #[serde(
        default = "default_ssh_port",
        deserialize_with = "values::whole::ssh_port"
    )]
    #[schemars(range(min = 1))]
    pub port: u16,
    /// The private key (no passphrase: the reconciler runs unattended).
    pub identity_file: AbsolutePath,
    /// The known_hosts file holding the host's key; default ssh's own. Unknown or
    /// changed host keys are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts_file: Option<AbsolutePath>,
}

impl SshSpec {
    /// rsync hands ssh its options as one string split at whitespace, so the key
    /// and known_hosts paths must hold none.
    pub fn check_paths(&self) -> Result<(), String> {
        for path in std::iter::once(&self.identity_file).chain(&self.known_hosts_file) {
            if path.to_string().contains(char::is_whitespace) {
                return Err(format!(
                    "`{path}` contains whitespace, which rsync's ssh command line cannot carry"
                ));
            }
        }
        Ok(())
    }
}

fn default_ssh_port() -> u16 {
    22
}

fn default_sync_timeout() -> HumanDuration {
    duration("6h")
}

impl BackupPipeline {
    /// The pipeline's name.
    pub fn name(&self) -> &PipelineName {
        &self.metadata.name
    }

    /// The name of the starport copy under `data/`.
    pub fn starport_volume_name(&self) -> Option<String> {
        let starport = self.spec.starport.as_ref()?;
        Some(match &starport.volume_name {
            Some(n) => n.to_string(),
            None => match self.spec.recovered_volume.location() {
                VolumeLocation::Directory(path) => path.file_name().unwrap_or("volume").to_string(),
                VolumeLocation::Docker(name) => name.to_string(),
                VolumeLocation::Unset => "volume".to_string(),
            },
        })
    }

    /// Checks what the field types alone cannot: which combinations make sense.
    /// On error, names the section at fault (`starport` or `recoveredVolume`), where
    /// the loader points.
    pub fn check_placement(&self) -> Result<(), (SpecSection, String)> {
        let spec = &self.spec;
        let mirrors = spec.starport.as_ref().map_or(&[][..], |s| &s.mirrors[..]);
        for (i, mirror) in mirrors.iter().enumerate() {
            if mirrors[..i].iter().any(|m| m.name == mirror.name) {
                return Err((
                    SpecSection::Starport,
                    format!("two mirrors are named `{}`", mirror.name),
                ));
            }
            mirror.ssh.check_paths().map_err(|m| {
                (
                    SpecSection::Starport,
                    format!("mirror `{}`: {m}", mirror.name),
                )
            })?;
        }
        let volume = &spec.recovered_volume;
        match (&volume.path, &volume.docker_volume) {
            (Some(_), Some(_)) => {
                return Err((
                    SpecSection::RecoveredVolume,
                    "recoveredVolume sets both `path` and `dockerVolume`; choose one".into(),
                ));
            }
            (None, None) => {
                return Err((
                    SpecSection::RecoveredVolume,
                    "recoveredVolume needs `path: /a/directory` or `dockerVolume: NAME`".into(),
                ));
            }
            _ => {}
        }
        if volume.docker_volume.is_some()
            && spec.barman.container.is_some()
            && volume.barman_path.is_none()
        {
            return Err((
                SpecSection::RecoveredVolume,
                "recoveredVolume.barmanPath is required when barman runs in a container and the volume is a Docker volume: say where barman's container mounts it (e.g. `/nightly`)".into(),
            ));
        }
        Ok(())
    }
}

/// A section of a document's spec, to point at in an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecSection {
    /// `spec.recoveredVolume` of a `BackupPipeline`.
    RecoveredVolume,
    /// `spec.starport` of a `BackupPipeline`.
    Starport,
    /// `spec.source` of a `RestoreTarget`.
    Source,
    /// `spec.volume` of a `RestoreTarget`.
    Volume,
    /// `spec.consumers` of a `RestoreTarget`.
    Consumers,
}

/// One document of any kind: what `diff`, `apply` and `run` work on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
// A handful exist per pass: boxing would buy nothing but indirection.
#[allow(clippy::large_enum_variant)]
pub enum Resource {
    /// Backups, a recovered volume, the starport and its mirrors.
    BackupPipeline(BackupPipeline),
    /// A consumer volume restored from a starport.
    RestoreTarget(RestoreTarget),
}

impl Resource {
    /// The name (`metadata.name`), unique across kinds.
    pub fn name(&self) -> &PipelineName {
        match self {
            Resource::BackupPipeline(p) => p.name(),
            Resource::RestoreTarget(t) => t.name(),
        }
    }

    /// The kind, as written in `kind:`.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::BackupPipeline(_) => "BackupPipeline",
            Resource::RestoreTarget(_) => "RestoreTarget",
        }
    }

    /// What an operator calls it in a sentence: `pipeline`, `restore target`.
    pub fn noun(&self) -> &'static str {
        match self {
            Resource::BackupPipeline(_) => "pipeline",
            Resource::RestoreTarget(_) => "restore target",
        }
    }

    /// How long a wait may last before `run` reports the document `Stalled`.
    pub fn stalled_after(&self) -> jiff::SignedDuration {
        let spec = match self {
            Resource::BackupPipeline(p) => p.spec.stalled_after,
            Resource::RestoreTarget(t) => t.spec.stalled_after,
        };
        spec.and_then(|d| jiff::SignedDuration::try_from(d.to_std()).ok())
            .unwrap_or(DEFAULT_STALLED_AFTER)
    }

    /// The instances that may own the document in fleet mode; `None`: any.
    pub fn placement_hosts(&self) -> Option<Vec<String>> {
        match self {
            Resource::BackupPipeline(p) => p
                .spec
                .placement
                .as_ref()
                .map(|pl| pl.hosts.iter().map(|h| h.to_string()).collect()),
            Resource::RestoreTarget(_) => None,
        }
    }

    /// The backup pipeline, if this is one.
    pub fn as_backup_pipeline(&self) -> Option<&BackupPipeline> {
        match self {
            Resource::BackupPipeline(p) => Some(p),
            Resource::RestoreTarget(_) => None,
        }
    }
}

/// Where a recovered volume lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeLocation<'a> {
    /// A directory on this host.
    Directory(&'a DataPath),
    /// A Docker named volume.
    Docker(&'a ObjectName),
    /// Neither: only a spec that bypassed the loader can be like this, and nothing
    /// is done with it.
    Unset,
}

impl std::fmt::Display for VolumeLocation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VolumeLocation::Directory(path) => write!(f, "{path}"),
            VolumeLocation::Docker(name) => write!(f, "Docker volume {name}"),
            VolumeLocation::Unset => write!(f, "(no volume set)"),
        }
    }
}

impl RecoveredVolumeSpec {
    /// Where the volume lives (the loader made sure exactly one of `path` and
    /// `dockerVolume` is set, see [`BackupPipeline::check_placement`]).
    pub fn location(&self) -> VolumeLocation<'_> {
        match (&self.path, &self.docker_volume) {
            (Some(path), _) => VolumeLocation::Directory(path),
            (None, Some(name)) => VolumeLocation::Docker(name),
            (None, None) => VolumeLocation::Unset,
        }
    }
}

fn duration(text: &str) -> HumanDuration {
    HumanDuration::try_from(text.to_string()).unwrap_or_else(|e| unreachable!("{e}"))
}

fn example_pipeline() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "BackupPipeline",
        "metadata": {"name": "montagu"},
        "spec": {
            "barman": {"server": "montagu", "config": "/etc/barman.conf"},
            "baseBackup": {"maxAge": "30d", "startWindow": {"start": "00:00", "end": "06:00", "timeZone": "Europe/London"}},
            "retention": {"recoveryWindow": "3 months", "minimumRedundancy": 1},
            "recoveredVolume": {
                "path": "/srv/nightly/montagu_db_volume",
                "maxAge": "24h",
                "replay": {"postgresBin": "/usr/lib/postgresql/15/bin", "timeout": "1h"}
            },
            "starport": {"root": "/srv/starport", "target": "barman_to_starport"}
        }
    })
}

/// The JSON Schema of a `BackupPipeline` document, as checked in under `schemas/`.
pub fn backup_pipeline_schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<BackupPipeline>();
    schema.to_value()
}
