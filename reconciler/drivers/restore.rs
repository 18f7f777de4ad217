//! The restore side, on a consumer host: the starport copy restored from (on this
//! host or over ssh), the volume restored into, and the containers that use it.
//!
//! Copies are the real `rsync -a --delete --numeric-ids` (uids stay those of the
//! backup host's files, which is what the consumer's postgres image expects). Over
//! ssh the transfer follows the mirrors' rules: `-s`, key authentication only, the
//! host key checked. Nothing here decides whether to restore: the marker is read
//! and written as told, and containers are stopped and started as told.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use super::command::{CommandLine, CommandRunner};
use super::docker::{DockerEngine, DockerError, Mounted};
use super::fsutil::{blocking, write_atomically};
use super::mirror::{failed, fetch_metadata, remote, rsync as rsync_over_ssh};
use super::postgres_process::postmaster_running;
use super::starport::{CopyStats, StarportError, state_of_metadata};
use super::volume::{
    LocalVolume, MARKER_FILE, RESTORE_MARKER_FILE, VolumeError, VolumeLock, is_wipeable,
};
use crate::observed::{RestoreMarker, RestoreVolumeState, StarportState};
use crate::spec::{RestoreSourceSpec, RestoreVolumeSpec, VolumeLocation};

/// The starport copy a restore target reads.
#[async_trait]
pub trait RestoreSourceDriver: Send + Sync + std::fmt::Debug {
    /// Reads the target's metadata.
    async fn inspect(&self, source: &RestoreSourceSpec) -> Result<StarportState, StarportError>;
    /// Copies the target's data into `destination` with `rsync -a --delete`.
    async fn copy(
        &self,
        source: &RestoreSourceSpec,
        destination: &Path,
    ) -> Result<CopyStats, StarportError>;
    /// What a copy would change in `destination` now (`rsync --dry-run
    /// --itemize-changes`), one difference per file in words: empty when it holds
    /// exactly the target's data (by rsync's quick check: size and modification
    /// time to the second, files added or missing).
    async fn differences(
        &self,
        source: &RestoreSourceSpec,
        destination: &Path,
    ) -> Result<Vec<String>, StarportError>;
}

/// The volume a restore target writes.
#[async_trait]
pub trait RestoreVolumeDriver: Send + Sync + std::fmt::Debug {
    /// Reads the volume's state and marker.
    async fn inspect(&self, volume: &RestoreVolumeSpec) -> Result<RestoreVolumeState, VolumeError>;
    /// Where the volume's files are; `None` for a Docker volume that does not exist.
    async fn locate(&self, volume: &RestoreVolumeSpec) -> Result<Option<PathBuf>, VolumeError>;
    /// Creates the volume when absent (a Docker volume labelled for `target`, or the
    /// directory) and returns where its files are. Refuses a volume holding files
    /// that are not a PostgreSQL data directory.
    async fn prepare(
        &self,
        volume: &RestoreVolumeSpec,
        target: &str,
    ) -> Result<PathBuf, VolumeError>;
    /// Fails when a container runs on the volume or a postgres on this host does.
    async fn ensure_unused(
        &self,
        volume: &RestoreVolumeSpec,
        path: &Path,
    ) -> Result<(), VolumeError>;
    /// What used the volume since `since`, in words: a container mounting it that
    /// started after `since` (running or not), or a `postmaster.pid` in it (a copy
    /// deletes any older one). `None` when nothing did.
    async fn used_since(
        &self,
        volume: &RestoreVolumeSpec,
        path: &Path,
        since: Timestamp,
    ) -> Result<Option<String>, VolumeError>;
    /// Replaces the marker atomically and durably.
    async fn write_marker(&self, path: &Path, marker: &RestoreMarker) -> Result<(), VolumeError>;
    /// Takes the volume's work lock, held until dropped.
    async fn lock(&self, volume: &RestoreVolumeSpec) -> Result<VolumeLock, VolumeError>;
}

/// The containers that use a restored volume.
#[async_trait]
pub trait ConsumerDriver: Send + Sync + std::fmt::Debug {
    /// Its state (`running`, `exited`, …), `None` when absent.
    async fn state(&self, container: &str) -> Result<Option<String>, DockerError>;
    /// Stops it, leaving it in place.
    async fn stop(&self, container: &str, timeout: Duration) -> Result<(), DockerError>;
    /// Starts it.
    async fn start(&self, container: &str) -> Result<(), DockerError>;
}

/// `<root>/<target>/data/<volume>` and `<root>/<target>/meta/metadata.json`.
fn source_paths(source: &RestoreSourceSpec) -> (PathBuf, PathBuf) {
    let target = source.root.as_path().join(source.target.as_str());
    (
        target.join("data").join(source.volume_name.as_str()),
        target.join("meta").join("metadata.json"),
    )
}

/// Starport copies read by this host's rsync, locally or over ssh.
#[derive(Debug, Clone)]
pub struct RsyncSource {
    runner: Arc<dyn CommandRunner>,
}

impl RsyncSource {
    /// rsync run by `runner`.
    pub fn new(runner: Arc<dyn CommandRunner>) -> Self {
        Self { runner }
    }
}

#[async_trait]
impl RestoreSourceDriver for RsyncSource {
    async fn inspect(&self, source: &RestoreSourceSpec) -> Result<StarportState, StarportError> {
        let (_, metadata) = source_paths(source);
        if let Some(ssh) = &source.ssh {
            return fetch_metadata(self.runner.as_ref(), ssh, &metadata).await;
        }
        if !source.root.as_path().is_dir() {
            return Err(StarportError::Io {
                action: "find the starport root",
                path: source.root.as_path().to_path_buf(),
                source: io::Error::new(io::ErrorKind::NotFound, "no such directory"),
            });
        }
        match tokio::fs::read_to_string(&metadata).await {
            Ok(text) => Ok(state_of_metadata(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(StarportState::NoMetadata {
                reason: "no metadata.json".into(),
            }),
            Err(source) => Err(StarportError::Io {
                action: "read",
                path: metadata,
                source,
            }),
        }
    }

    async fn copy(
        &self,
        source: &RestoreSourceSpec,
        destination: &Path,
    ) -> Result<CopyStats, StarportError> {
        let command = rsync_into(source, destination)
            .arg("--stats")
            .pause_at("restore:running");
        let out = self
            .runner
            .run(&command)
            .await
            .map_err(StarportError::Command)?;
        if out.success() {
            Ok(CopyStats::from_rsync_stats(&out.stdout))
        } else {
            Err(failed(&out))
        }
    }

    async fn differences(
        &self,
        source: &RestoreSourceSpec,
        destination: &Path,
    ) -> Result<Vec<String>, StarportError> {
        let command = rsync_into(source, destination).args(["--dry-run", "--itemize-changes"]);
        let out = self
            .runner
            .run(&command)
            .await
            .map_err(StarportError::Command)?;
        if !out.success() {
            return Err(failed(&out));
        }
        Ok(out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(described)
            .collect())
    }
}

/// One line of `rsync --itemize-changes` in words, the line itself kept for
/// whoever knows rsync's notation.
fn described(line: &str) -> String {
    if let Some(path) = line.strip_prefix("*deleting") {
        return format!("`{}` is not in the starport copy", path.trim());
    }
    let (flags, path) = line.split_once(' ').unwrap_or((line, ""));
    let path = path.trim();
    let attributes = flags.get(2..).unwrap_or("");
    if !attributes.is_empty() && attributes.chars().all(|c| c == '+') {
        format!("`{path}` is missing ({flags})")
    } else if attributes.get(1..2) == Some("s") {
        format!("`{path}` has another size ({flags})")
    } else {
        format!("`{path}` differs ({flags})")
    }
}

/// `rsync -a --delete` from the target's data into `destination`, locally or over
/// ssh; the caller adds what the run is for.
fn rsync_into(source: &RestoreSourceSpec, destination: &Path) -> CommandLine {
    let (data, _) = source_paths(source);
    let timeout = source.timeout.to_std();
    let command = match &source.ssh {
        Some(ssh) => {
            let mut from = remote(ssh, &data);
            from.push('/');
            rsync_over_ssh(ssh, timeout).arg(from)
        }
        None => {
            let mut from = data.into_os_string();
            from.push("/");
            CommandLine::new("rsync", timeout)
                .env("LC_ALL", "C")
                .arg(from)
        }
    };
    let mut to = destination.as_os_str().to_owned();
    to.push("/");
    // The backup host's own marker means nothing here, and the restore marker is
    // ours to write; neither is copied nor deleted by the copy. The legacy
    // `.barman-last-restore` travels with the data: consumers of the old pipeline
    // read it to know how old their copy is. A `postmaster.pid` is hidden on the
    // sending side only, so a stale one in the volume (left by a killed consumer)
    // is deleted rather than kept to block the next start.
    command
        .args(["-a", "--delete", "--numeric-ids"])
        .arg(format!("--exclude=/{MARKER_FILE}"))
        .arg(format!("--exclude=/{RESTORE_MARKER_FILE}"))
        .arg("--filter=H /postmaster.pid")
        .arg(to)
}

/// Restore volumes on this host: directories, and local Docker volumes through
/// their mount points.
#[derive(Debug, Clone)]
pub struct LocalRestoreVolume {
    volumes: LocalVolume,
    docker: Arc<DockerEngine>,
    /// Whether this host has an engine, so a container may bind-mount a directory
    /// volume; `None`: ask each time (an engine may be installed or start later).
    engine_on_host: Option<bool>,
}

impl LocalRestoreVolume {
    /// Docker volumes are reached through `docker`.
    pub fn new(docker: Arc<DockerEngine>) -> Self {
        Self {
            volumes: LocalVolume::new(docker.clone()),
            docker,
            engine_on_host: None,
        }
    }

    /// What containers may mount the volume at `path`: a Docker volume, or a
    /// directory bind-mounted (itself, or a directory holding it) when this host
    /// has an engine at all.
    fn mounted<'a>(&self, volume: &'a RestoreVolumeSpec, path: &'a Path) -> Option<Mounted<'a>> {
        match volume.location() {
            VolumeLocation::Docker(name) => Some(Mounted::Volume(name.as_str())),
            VolumeLocation::Directory(_)
                if self.engine_on_host.unwrap_or_else(DockerEngine::configured) =>
            {
                Some(Mounted::Directory(path))
            }
            _ => None,
        }
    }

    fn engine_err(mounted: Mounted<'_>) -> impl FnOnce(DockerError) -> VolumeError + '_ {
        move |source| match mounted {
            Mounted::Volume(name) => VolumeError::Docker {
                name: name.to_string(),
                source,
            },
            Mounted::Directory(path) => VolumeError::BindMounts {
                path: path.to_path_buf(),
                source,
            },
        }
    }

    /// The running containers that mount the volume at `path`.
    async fn users(
        &self,
        volume: &RestoreVolumeSpec,
        path: &Path,
    ) -> Result<Vec<String>, VolumeError> {
        let Some(mounted) = self.mounted(volume, path) else {
            return Ok(Vec::new());
        };
        self.docker
            .running_containers_mounting(mounted)
            .await
            .map_err(Self::engine_err(mounted))
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> VolumeError + 'a {
    move |source| VolumeError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn read_marker(path: &Path) -> (Option<RestoreMarker>, Option<String>) {
    match std::fs::read_to_string(path.join(RESTORE_MARKER_FILE)) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(marker) => (Some(marker), None),
            Err(e) => (None, Some(format!("marker corrupt: {e}"))),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => (None, Some("no marker".into())),
        Err(e) => (None, Some(format!("marker unreadable: {e}"))),
    }
}

#[async_trait]
impl RestoreVolumeDriver for LocalRestoreVolume {
    async fn inspect(&self, volume: &RestoreVolumeSpec) -> Result<RestoreVolumeState, VolumeError> {
        let Some(path) = self.volumes.locate_at(volume.location()).await? else {
            return Ok(RestoreVolumeState::Missing);
        };
        let directory = matches!(volume.location(), VolumeLocation::Directory(_));
        let local = blocking({
            let path = path.clone();
            move || match std::fs::metadata(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
                Ok(m) if !m.is_dir() => Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "not a directory",
                )),
                Ok(_) => {
                    let (marker, no_marker_reason) = read_marker(&path);
                    // A pid in a Docker volume belongs to a container's namespace.
                    let postmaster = directory && postmaster_running(&path);
                    Ok(Some((
                        marker,
                        no_marker_reason,
                        !is_wipeable(&path)?,
                        postmaster,
                    )))
                }
            }
        })
        .await
        .map_err(io_err("inspect", &path))?;
        let Some((marker, no_marker_reason, foreign, postmaster_running)) = local else {
            return Ok(RestoreVolumeState::Missing);
        };
        Ok(RestoreVolumeState::Present {
            marker,
            no_marker_reason,
            foreign,
            used_by: self.users(volume, &path).await?,
            postmaster_running,
        })
    }

    async fn locate(&self, volume: &RestoreVolumeSpec) -> Result<Option<PathBuf>, VolumeError> {
        self.volumes.locate_at(volume.location()).await
    }

    async fn prepare(
        &self,
        volume: &RestoreVolumeSpec,
        target: &str,
    ) -> Result<PathBuf, VolumeError> {
        let path = self
            .volumes
            .create_at(volume.location(), target, "restore-target")
            .await?;
        let foreign = blocking({
            let path = path.clone();
            move || {
                if !path.exists() {
                    use std::os::unix::fs::DirBuilderExt;
                    std::fs::DirBuilder::new().mode(0o700).create(&path)?;
                }
                Ok(!is_wipeable(&path)?)
            }
        })
        .await
        .map_err(io_err("create", &path))?;
        if foreign {
            return Err(VolumeError::Foreign { path });
        }
        Ok(path)
    }

    async fn ensure_unused(
        &self,
        volume: &RestoreVolumeSpec,
        path: &Path,
    ) -> Result<(), VolumeError> {
        if let Some(container) = self.users(volume, path).await?.into_iter().next() {
            return Err(VolumeError::InUseByContainer {
                name: volume.location().to_string(),
                container,
            });
        }
        if matches!(volume.location(), VolumeLocation::Directory(_)) && postmaster_running(path) {
            return Err(VolumeError::InUse {
                path: path.to_path_buf(),
            });
        }
        Ok(())
    }

    async fn used_since(
        &self,
        volume: &RestoreVolumeSpec,
        path: &Path,
        since: Timestamp,
    ) -> Result<Option<String>, VolumeError> {
        if let Some(mounted) = self.mounted(volume, path) {
            let started = self
                .docker
                .containers_started_since(mounted, since)
                .await
                .map_err(Self::engine_err(mounted))?;
            if let Some(user) = started.into_iter().next() {
                return Ok(Some(user));
            }
        }
        let pid_file = path.join("postmaster.pid");
        let written = blocking(move || pid_file.try_exists())
            .await
            .map_err(io_err("inspect", path))?;
        Ok(written.then(|| "a postgres wrote postmaster.pid into it".to_string()))
    }

    async fn write_marker(&self, path: &Path, marker: &RestoreMarker) -> Result<(), VolumeError> {
        let json = serde_json::to_vec_pretty(marker)
            .map_err(|e| io_err("encode the marker of", path)(io::Error::other(e)))?;
        let p = path.to_path_buf();
        blocking(move || write_atomically(&p.join(RESTORE_MARKER_FILE), &json, 0o644, None))
            .await
            .map_err(io_err("write the marker of", path))
    }

    async fn lock(&self, volume: &RestoreVolumeSpec) -> Result<VolumeLock, VolumeError> {
        self.volumes.lock_at(volume.location())
    }
}

/// Consumers that are containers of this host's Docker engine.
#[derive(Debug, Clone, Default)]
pub struct DockerConsumers {
    docker: Arc<DockerEngine>,
}

impl DockerConsumers {
    /// Containers of `docker`.
    pub fn new(docker: Arc<DockerEngine>) -> Self {
        Self { docker }
    }
}

#[async_trait]
impl ConsumerDriver for DockerConsumers {
    async fn state(&self, container: &str) -> Result<Option<String>, DockerError> {
        self.docker.container_state(container).await
    }

    async fn stop(&self, container: &str, timeout: Duration) -> Result<(), DockerError> {
        self.docker.stop(container, timeout).await
    }

    async fn start(&self, container: &str) -> Result<(), DockerError> {
        self.docker.start_existing(container).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::command::LocalProcess;

    #[tokio::test]
    async fn a_copy_leaves_no_stale_pid_file_and_any_later_write_is_a_difference() {
        let root = tempfile::tempdir().unwrap();
        let data = root
            .path()
            .join("starport/barman_to_starport/data/db_volume");
        std::fs::create_dir_all(data.join("base")).unwrap();
        std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
        std::fs::write(data.join("base/1"), "rows").unwrap();
        let source: RestoreSourceSpec = serde_json::from_value(serde_json::json!({
            "root": root.path().join("starport"),
            "target": "barman_to_starport",
            "volumeName": "db_volume",
        }))
        .unwrap();
        let volume = root.path().join("db");
        std::fs::create_dir_all(&volume).unwrap();
        // Left by a killed consumer, and a file of an older generation.
        std::fs::write(volume.join("postmaster.pid"), "1\n").unwrap();
        std::fs::write(volume.join("stray"), "old").unwrap();
        std::fs::write(volume.join(RESTORE_MARKER_FILE), "{}").unwrap();
        let rsync = RsyncSource::new(Arc::new(LocalProcess::new(Default::default())));

        assert!(
            !rsync
                .differences(&source, &volume)
                .await
                .unwrap()
                .is_empty()
        );
        rsync.copy(&source, &volume).await.unwrap();
        assert!(
            !volume.join("postmaster.pid").exists(),
            "stale pid file deleted"
        );
        assert!(!volume.join("stray").exists());
        assert!(
            volume.join(RESTORE_MARKER_FILE).exists(),
            "our marker is kept"
        );
        assert_eq!(
            rsync.differences(&source, &volume).await.unwrap(),
            Vec::<String>::new()
        );

        // Something writes into the copy: a new file, a changed one.
        std::fs::write(volume.join("base/2"), "written by a consumer").unwrap();
        std::fs::write(volume.join("base/1"), "changed rows").unwrap();
        let differences = rsync.differences(&source, &volume).await.unwrap();
        assert!(
            differences
                .iter()
                .any(|d| d.starts_with("`base/2` is not in the starport copy"))
                && differences
                    .iter()
                    .any(|d| d.starts_with("`base/1` has another size (>f.s")),
            "{differences:?}"
        );
        std::fs::remove_file(volume.join("base/1")).unwrap();
        let differences = rsync.differences(&source, &volume).await.unwrap();
        assert!(
            differences
                .iter()
                .any(|d| d.starts_with("`base/1` is missing (>f+++")),
            "{differences:?}"
        );
    }

    #[tokio::test]
    async fn a_pid_file_written_during_the_copy_means_the_volume_was_used() {
        let dir = tempfile::tempdir().unwrap();
        let volume: RestoreVolumeSpec =
            serde_json::from_value(serde_json::json!({ "path": dir.path() })).unwrap();
        // A host without an engine: only the pid file can tell.
        let driver = LocalRestoreVolume {
            engine_on_host: Some(false),
            ..LocalRestoreVolume::new(Arc::new(DockerEngine::default()))
        };
        let since = Timestamp::now();
        assert_eq!(
            driver.used_since(&volume, dir.path(), since).await.unwrap(),
            None
        );
        std::fs::write(dir.path().join("postmaster.pid"), "4242\n").unwrap();
        let used = driver.used_since(&volume, dir.path(), since).await.unwrap();
        assert!(
            used.as_deref()
                .is_some_and(|u| u.contains("postmaster.pid")),
            "{used:?}"
        );
    }
}
