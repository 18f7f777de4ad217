//! The recovered volume, a directory on this host or a Docker named volume read and
//! written through its mount point: its marker, and the staging directory barman
//! recovers into.
//!
//! The marker (`.reconciler-volume.json`) is the only thing that makes the data
//! usable: it is removed before anything touches the data and written only after a
//! clean replay. The legacy `.barman-last-restore` that consumers of the old
//! pipeline read follows the same rule. This driver refuses to wipe a directory
//! that is neither empty nor a PostgreSQL data directory, whatever it is told.
//!
//! Over 600 lines with its tests (about a tenth), which create real directories,
//! pid files and staging leftovers.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;

use super::command::RunAs;
use super::docker::{DockerEngine, DockerError, MountingContainer, PIPELINE_LABEL, ROLE_LABEL};
use super::fsutil::{blocking, remove_durably, sync_dir, write_atomically};
use super::postgres_process::{postmaster_pid, postmaster_running, stray_replay};
use super::standby_files;
use super::wal_segment::Segment;
use crate::observed::{StrayReplay, VolumeMarker, VolumeState, VolumeUser};
use crate::spec::{RecoveredVolumeSpec, VolumeLocation};

/// The marker's file name, at the root of the volume.
pub const MARKER_FILE: &str = ".reconciler-volume.json";
/// A restore target's marker, at the root of the volume it restores into.
pub const RESTORE_MARKER_FILE: &str = ".reconciler-restore.json";
/// The old pipeline's marker: RFC 3339 with nanoseconds (`date --rfc-3339=ns`).
pub const LEGACY_MARKER_FILE: &str = ".barman-last-restore";
/// barman recovers into `<volume>/.reconciler-staging-<attempt>`, inside the volume
/// because recent barman refuses to recover into a mount point; the contents then
/// move up one level. Each attempt has its own directory, so a recovery orphaned by
/// a killed reconciler (still writing) can never mix its files into the next one.
pub const STAGING_DIR: &str = ".reconciler-staging";

/// True for the name of a staging directory of any attempt.
fn is_staging(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with(STAGING_DIR))
}

fn holds_staging(path: &Path) -> io::Result<bool> {
    Ok(fs::read_dir(path)?
        .flatten()
        .any(|entry| is_staging(&entry.file_name())))
}

/// What can go wrong with the volume.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A filesystem operation failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A postgres runs on the directory.
    #[error("refusing to touch {}: a postgres runs on it (postmaster.pid)", path.display())]
    InUse {
        /// The directory.
        path: PathBuf,
    },
    /// Another reconciler works on the same volume.
    #[error("another reconciler (pid {holder}) is working on {}", path.display())]
    Locked {
        /// The volume.
        path: PathBuf,
        /// The pid written by the holder.
        holder: String,
    },
    /// A container uses the volume.
    #[error("refusing to touch {name}: container {container} uses it")]
    InUseByContainer {
        /// The volume, as the spec places it (`Docker volume X`, a path).
        name: String,
        /// A container that mounts it.
        container: String,
    },
    /// The Docker engine could not say which containers bind-mount a directory.
    #[error("cannot ask the Docker engine which containers mount {}", path.display())]
    BindMounts {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: DockerError,
    },
    /// The Docker engine could not answer about the volume.
    #[error("cannot reach Docker volume {name}")]
    Docker {
        /// The volume.
        name: String,
        /// Why.
        #[source]
        source: DockerError,
    },
    /// The Docker volume's files are not on this host.
    #[error("Docker volume {name} uses driver `{driver}`: its files are not on this host")]
    NotLocal {
        /// The volume.
        name: String,
        /// Its driver.
        driver: String,
    },
    /// The spec names no volume (only possible when it bypassed the loader).
    #[error("recoveredVolume has neither `path` nor `dockerVolume`")]
    Unset,
    /// The directory holds something that is not ours to wipe.
    #[error("refusing to wipe {}: it is neither empty nor a PostgreSQL data directory", path.display())]
    Foreign {
        /// The directory.
        path: PathBuf,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> VolumeError + 'a {
    move |source| VolumeError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The volume operations the executor needs. A volume is named by its spec; once
/// located, its files are reached by their path on this host.
#[async_trait]
pub trait VolumeDriver: Send + Sync + std::fmt::Debug {
    /// Where the volume's files are on this host; `None` when the volume does not
    /// exist (a Docker volume not created yet). A directory is always "there": its
    /// absence is what [`VolumeDriver::inspect`] reports as `Missing`.
    async fn locate(&self, volume: &RecoveredVolumeSpec) -> Result<Option<PathBuf>, VolumeError>;
    /// Creates a Docker volume when absent, labelled as managed for `pipeline`, and
    /// returns where the volume's files are.
    async fn create(
        &self,
        volume: &RecoveredVolumeSpec,
        pipeline: &str,
    ) -> Result<PathBuf, VolumeError>;
    /// Reads the volume's state. For a Docker volume, "in use" means mounted by a
    /// running container not named in `ignore` (the caller's own containers, such
    /// as barman's, which mounts the volume to recover into it and runs no server
    /// on it).
    async fn inspect(
        &self,
        volume: &RecoveredVolumeSpec,
        ignore: &[String],
    ) -> Result<VolumeState, VolumeError>;
    /// Removes the markers, durably. Always the first thing a recovery does.
    async fn invalidate_marker(&self, path: &Path) -> Result<(), VolumeError>;
    /// Creates or empties the volume's files at `path` (owned by `owner`, mode 0700)
    /// and returns the staging path barman must recover into (not created: barman
    /// creates it). Refuses while a postgres (or, for a Docker volume, a container
    /// not named in `ignore`) uses it.
    async fn prepare_for_recovery(
        &self,
        volume: &RecoveredVolumeSpec,
        ignore: &[String],
        path: &Path,
        owner: RunAs,
    ) -> Result<PathBuf, VolumeError>;
    /// Moves the contents of `staging` (this attempt's) up into the volume.
    async fn promote_staging(&self, path: &Path, staging: &Path) -> Result<(), VolumeError>;
    /// Writes the markers. Always the last thing a recovery does.
    async fn write_marker(
        &self,
        path: &Path,
        marker: &VolumeMarker,
        owner: RunAs,
    ) -> Result<(), VolumeError>;
    /// Takes the volume's work lock, so that two reconcilers (an `apply` and a `run`,
    /// or two `apply`s) never work on one volume at once. Held until dropped.
    async fn lock(&self, volume: &RecoveredVolumeSpec) -> Result<VolumeLock, VolumeError>;
    /// Puts `standby.signal` into the volume at `path` (before a replay) or removes
    /// it (after one: at rest the volume holds none).
    async fn set_standby_signal(
        &self,
        path: &Path,
        present: bool,
        owner: RunAs,
    ) -> Result<(), VolumeError> {
        let p = path.to_path_buf();
        blocking(move || {
            if present {
                standby_files::put_standby_signal(&p, owner)
            } else {
                standby_files::remove_standby_signal(&p)
            }
        })
        .await
        .map_err(io_err("set standby.signal in", path))
    }
    /// The newest WAL segment in the volume's `pg_wal` (read before any postgres
    /// ran on what barman recovered).
    async fn newest_segment(&self, path: &Path) -> Result<Option<Segment>, VolumeError> {
        let p = path.to_path_buf();
        blocking(move || standby_files::newest_segment(&p))
            .await
            .map_err(io_err("list the WAL of", path))
    }
    /// An empty directory inside the volume for barman to fetch WAL into.
    async fn prepare_wal_fetch(&self, path: &Path, owner: RunAs) -> Result<PathBuf, VolumeError> {
        let p = path.to_path_buf();
        blocking(move || standby_files::prepare_fetch(&p, owner))
            .await
            .map_err(io_err("prepare the WAL fetch directory of", path))
    }
    /// Moves one fetched segment into `pg_wal`, whole.
    async fn install_segment(
        &self,
        path: &Path,
        name: &str,
        owner: RunAs,
    ) -> Result<(), VolumeError> {
        let p = path.to_path_buf();
        let name = name.to_string();
        blocking(move || standby_files::install_segment(&p, &name, owner))
            .await
            .map_err(io_err("move fetched WAL into", path))
    }
    /// Removes the fetch directory.
    async fn finish_wal_fetch(&self, path: &Path) -> Result<(), VolumeError> {
        let p = path.to_path_buf();
        blocking(move || standby_files::finish_fetch(&p))
            .await
            .map_err(io_err("remove the WAL fetch directory of", path))
    }
}

/// A held volume work lock.
#[derive(Debug)]
pub struct VolumeLock {
    _file: fs::File,
}

/// Where a Docker volume's work lock lives: `/run/reconciler/` (not cleaned by age,
/// gone at reboot like the locks it holds), a directory only its owner may write,
/// so nobody else can take or plant the lock; else a per-user one in the temporary
/// directory.
pub fn docker_lock_path(name: &str) -> io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = nix::unistd::Uid::effective();
    let dir = if uid.is_root() && Path::new("/run").is_dir() {
        PathBuf::from("/run/reconciler")
    } else {
        std::env::temp_dir().join(format!("reconciler-{uid}"))
    };
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != uid.as_raw() || meta.mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory only this user may write",
                dir.display()
            ),
        ));
    }
    Ok(dir.join(format!("docker-volume-{name}.lock")))
}

/// `<parent>/.<volume>.reconciler-lock`: beside the volume, not in it, so that
/// wiping the volume never touches it.
pub fn lock_path(volume: &Path) -> PathBuf {
    let name = volume
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    volume.with_file_name(format!(".{name}.reconciler-lock"))
}

/// Volumes whose files are on this host: directories, and Docker volumes of the
/// `local` driver through their mount points (so the reconciler runs beside the
/// engine, as root).
#[derive(Debug, Clone, Default)]
pub struct LocalVolume {
    docker: Arc<DockerEngine>,
}

impl LocalVolume {
    /// Docker volumes are reached through `docker`.
    pub fn new(docker: Arc<DockerEngine>) -> Self {
        Self { docker }
    }

    fn docker_err(name: &str) -> impl FnOnce(DockerError) -> VolumeError + '_ {
        move |source| VolumeError::Docker {
            name: name.to_string(),
            source,
        }
    }

    /// The running containers that mount the volume, those in `ignore` excepted.
    pub async fn users(
        &self,
        name: &str,
        ignore: &[String],
    ) -> Result<Vec<MountingContainer>, VolumeError> {
        let mut users = self
            .docker
            .containers_using(name)
            .await
            .map_err(Self::docker_err(name))?;
        users.retain(|c| !ignore.contains(&c.name));
        Ok(users)
    }

    /// Where the volume at `location` has its files on this host; `None` for a
    /// Docker volume that does not exist.
    pub async fn locate_at(
        &self,
        location: VolumeLocation<'_>,
    ) -> Result<Option<PathBuf>, VolumeError> {
        match location {
            VolumeLocation::Directory(path) => Ok(Some(path.as_path().to_path_buf())),
            VolumeLocation::Docker(name) => self.docker_mountpoint(name.as_str()).await,
            VolumeLocation::Unset => Err(VolumeError::Unset),
        }
    }

    /// Creates a Docker volume when absent, labelled with `owner` (the pipeline or
    /// restore target) and `role`, and returns where its files are. A directory is
    /// created by whoever fills it (with its owner and mode).
    pub async fn create_at(
        &self,
        location: VolumeLocation<'_>,
        owner: &str,
        role: &str,
    ) -> Result<PathBuf, VolumeError> {
        let VolumeLocation::Docker(name) = location else {
            return self.locate_at(location).await?.ok_or(VolumeError::Unset);
        };
        let name = name.as_str();
        if let Some(path) = self.docker_mountpoint(name).await? {
            return Ok(path);
        }
        let docker = self.docker.client().await.map_err(Self::docker_err(name))?;
        let labels = std::collections::HashMap::from([
            (PIPELINE_LABEL.to_string(), owner.to_string()),
            (ROLE_LABEL.to_string(), role.to_string()),
        ]);
        docker
            .create_volume(bollard::models::VolumeCreateRequest {
                name: Some(name.to_string()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map_err(|source| VolumeError::Docker {
                name: name.to_string(),
                source: DockerError::Api {
                    what: format!("create volume {name}"),
                    source,
                },
            })?;
        tracing::info!(volume = name, "created Docker volume");
        self.docker_mountpoint(name)
            .await?
            .ok_or_else(|| VolumeError::Docker {
                name: name.to_string(),
                source: DockerError::NoSuchVolume {
                    name: name.to_string(),
                },
            })
    }

    /// Takes the work lock of the volume at `location`; see [`VolumeDriver::lock`].
    pub fn lock_at(&self, location: VolumeLocation<'_>) -> Result<VolumeLock, VolumeError> {
        match location {
            VolumeLocation::Directory(path) => {
                lock_file(&lock_path(path.as_path()), path.as_path())
            }
            VolumeLocation::Docker(name) => {
                let what = Path::new(name.as_str());
                let lock = docker_lock_path(name.as_str())
                    .map_err(io_err("prepare the lock directory of", what))?;
                lock_file(&lock, what)
            }
            VolumeLocation::Unset => Err(VolumeError::Unset),
        }
    }

    async fn docker_mountpoint(&self, name: &str) -> Result<Option<PathBuf>, VolumeError> {
        let docker = self.docker.client().await.map_err(Self::docker_err(name))?;
        match docker.inspect_volume(name).await {
            Ok(v) if v.driver != "local" => Err(VolumeError::NotLocal {
                name: name.to_string(),
                driver: v.driver,
            }),
            Ok(v) => Ok(Some(PathBuf::from(v.mountpoint))),
            Err(e) if super::docker::is_not_found(&e) => Ok(None),
            Err(source) => Err(VolumeError::Docker {
                name: name.to_string(),
                source: DockerError::Api {
                    what: format!("inspect volume {name}"),
                    source,
                },
            }),
        }
    }
}

fn lock_file(lock: &Path, what: &Path) -> Result<VolumeLock, VolumeError> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        // Never through a planted symlink.
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(lock)
        .map_err(io_err("open the lock file of", what))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(VolumeError::Locked {
                path: what.to_path_buf(),
                holder: holder.trim().to_string(),
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", what)(e)),
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = writeln!(file, "{}", std::process::id());
    Ok(VolumeLock { _file: file })
}

/// True when `path` may be emptied: empty, a PostgreSQL data directory, ours
/// (marker or staging directory present).
pub fn is_wipeable(path: &Path) -> io::Result<bool> {
    let mut entries = fs::read_dir(path)?.peekable();
    if entries.peek().is_none() {
        return Ok(true);
    }
    Ok([
        MARKER_FILE,
        LEGACY_MARKER_FILE,
        RESTORE_MARKER_FILE,
        "PG_VERSION",
    ]
    .iter()
    .any(|n| path.join(n).exists())
        || holds_staging(path)?)
}

fn inspect_blocking(path: &Path) -> Result<VolumeState, VolumeError> {
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(VolumeState::Missing),
        Err(e) => return Err(io_err("inspect", path)(e)),
        Ok(m) if !m.is_dir() => {
            return Err(io_err("inspect", path)(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        Ok(_) => {}
    }
    let in_use = postmaster_running(path);
    let stray_replay =
        if in_use { stray_replay(path) } else { None }.map(|pid| StrayReplay::Process { pid });
    let users = if in_use {
        vec![VolumeUser::Postgres {
            pid: postmaster_pid(path),
        }]
    } else {
        Vec::new()
    };
    let unmarked = |reason: String| VolumeState::Unmarked {
        reason,
        in_use,
        foreign: false,
        stray_replay,
        users: users.clone(),
    };
    if holds_staging(path).map_err(io_err("list", path))? {
        return Ok(unmarked(
            "an interrupted recovery left its staging directory".into(),
        ));
    }
    if !is_wipeable(path).map_err(io_err("list", path))? {
        return Ok(VolumeState::Unmarked {
            reason: "it holds files that are not a PostgreSQL data directory".into(),
            in_use,
            foreign: true,
            stray_replay: None,
            users,
        });
    }
    let marker_path = path.join(MARKER_FILE);
    let text = match fs::read_to_string(&marker_path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(unmarked("no marker".into())),
        Err(e) => return Ok(unmarked(format!("marker unreadable: {e}"))),
    };
    match serde_json::from_str::<VolumeMarker>(&text) {
        Ok(marker) => Ok(VolumeState::Marked {
            marker,
            in_use,
            users,
        }),
        Err(e) => Ok(unmarked(format!("marker corrupt: {e}"))),
    }
}

#[async_trait]
impl VolumeDriver for LocalVolume {
    async fn locate(&self, volume: &RecoveredVolumeSpec) -> Result<Option<PathBuf>, VolumeError> {
        self.locate_at(volume.location()).await
    }

    async fn create(
        &self,
        volume: &RecoveredVolumeSpec,
        pipeline: &str,
    ) -> Result<PathBuf, VolumeError> {
        self.create_at(volume.location(), pipeline, "recovered-volume")
            .await
    }

    async fn inspect(
        &self,
        volume: &RecoveredVolumeSpec,
        ignore: &[String],
    ) -> Result<VolumeState, VolumeError> {
        let Some(path) = self.locate(volume).await? else {
            return Ok(VolumeState::Missing);
        };
        let state = tokio::task::spawn_blocking(move || inspect_blocking(&path))
            .await
            .unwrap_or_else(|e| Err(io_err("inspect", Path::new(""))(io::Error::other(e))))?;
        let VolumeLocation::Docker(name) = volume.location() else {
            return Ok(state);
        };
        // In a Docker volume, postmaster.pid names a pid of a container's namespace:
        // meaningless here. Who uses the volume is what the engine says.
        let containers = self.users(name.as_str(), ignore).await?;
        let stray_replay = match containers.as_slice() {
            [c] if c.labels.get(ROLE_LABEL).map(String::as_str) == Some("replay") => {
                Some(StrayReplay::Container {
                    container: c.name.clone(),
                })
            }
            _ => None,
        };
        let users: Vec<VolumeUser> = containers
            .into_iter()
            .map(|c| VolumeUser::Container {
                name: c.name,
                read_write: c.read_write,
            })
            .collect();
        let in_use = users.iter().any(VolumeUser::can_write);
        Ok(match state {
            VolumeState::Missing => VolumeState::Missing,
            VolumeState::Unmarked {
                reason, foreign, ..
            } => VolumeState::Unmarked {
                reason,
                in_use,
                foreign,
                stray_replay,
                users,
            },
            VolumeState::Marked { marker, .. } => VolumeState::Marked {
                marker,
                in_use,
                users,
            },
        })
    }

    async fn invalidate_marker(&self, path: &Path) -> Result<(), VolumeError> {
        let p = path.to_path_buf();
        blocking(move || {
            remove_durably(&p.join(MARKER_FILE))?;
            remove_durably(&p.join(LEGACY_MARKER_FILE))?;
            Ok(())
        })
        .await
        .map_err(io_err("invalidate the marker of", path))
    }

    async fn prepare_for_recovery(
        &self,
        volume: &RecoveredVolumeSpec,
        ignore: &[String],
        path: &Path,
        owner: RunAs,
    ) -> Result<PathBuf, VolumeError> {
        let p = path.to_path_buf();
        let foreign = blocking({
            let p = p.clone();
            move || {
                if !p.exists() {
                    fs::create_dir(&p)?;
                }
                Ok(!is_wipeable(&p)?)
            }
        })
        .await
        .map_err(io_err("create", path))?;
        if foreign {
            return Err(VolumeError::Foreign { path: p });
        }
        // Checked again here, not only at observation: a server may have started since.
        if let VolumeLocation::Docker(name) = volume.location() {
            let users = self.users(name.as_str(), ignore).await?;
            // Read-only users too: emptying the volume would pull the data from
            // under them.
            if let Some(container) = users.into_iter().next() {
                return Err(VolumeError::InUseByContainer {
                    name: volume.location().to_string(),
                    container: container.name,
                });
            }
        } else if postmaster_running(&p) {
            return Err(VolumeError::InUse { path: p });
        }
        blocking({
            let p = p.clone();
            move || {
                for entry in fs::read_dir(&p)? {
                    let entry = entry?;
                    let file_type = entry.file_type()?;
                    if file_type.is_dir() {
                        fs::remove_dir_all(entry.path())?;
                    } else {
                        fs::remove_file(entry.path())?;
                    }
                }
                // PostgreSQL insists on 0700 (or 0750) for its data directory, and
                // barman, running as its own user, must be able to create staging in it.
                chown(&p, Some(owner.uid), Some(owner.gid))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o700))?;
                sync_dir(&p)
            }
        })
        .await
        .map_err(io_err("empty", path))?;
        let attempt = Timestamp::now().strftime("%Y%m%dT%H%M%S%.9fZ");
        Ok(p.join(format!("{STAGING_DIR}-{attempt}-{}", std::process::id())))
    }

    async fn promote_staging(&self, path: &Path, staging: &Path) -> Result<(), VolumeError> {
        let p = path.to_path_buf();
        let staging = staging.to_path_buf();
        blocking(move || {
            for entry in fs::read_dir(&staging)? {
                let entry = entry?;
                fs::rename(entry.path(), p.join(entry.file_name()))?;
            }
            fs::remove_dir(&staging)?;
            sync_dir(&p)
        })
        .await
        .map_err(io_err("move the recovered data into", path))
    }

    async fn lock(&self, volume: &RecoveredVolumeSpec) -> Result<VolumeLock, VolumeError> {
        self.lock_at(volume.location())
    }

    async fn write_marker(
        &self,
        path: &Path,
        marker: &VolumeMarker,
        owner: RunAs,
    ) -> Result<(), VolumeError> {
        let p = path.to_path_buf();
        let json = serde_json::to_vec_pretty(marker)
            .map_err(|e| io_err("encode the marker of", path)(io::Error::other(e)))?;
        let legacy = legacy_marker_text(marker.recovered_at);
        blocking(move || {
            write_atomically(
                &p.join(LEGACY_MARKER_FILE),
                legacy.as_bytes(),
                0o644,
                Some(owner),
            )?;
            // The reconciler's own marker goes last: it is what makes the volume valid.
            write_atomically(&p.join(MARKER_FILE), &json, 0o644, Some(owner))
        })
        .await
        .map_err(io_err("write the marker of", path))
    }
}

/// `date --rfc-3339=ns` in UTC: `2026-11-23 19:14:21.123456789+00:00`.
pub fn legacy_marker_text(at: Timestamp) -> String {
    format!("{}\n", at.strftime("%Y-%m-%d %H:%M:%S.%N+00:00"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each recovery attempt gets its own staging directory, and any of them left
    /// behind marks an interrupted recovery.
    #[tokio::test]
    async fn each_attempt_stages_apart_and_leftovers_count_as_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        let spec: RecoveredVolumeSpec = serde_saphyr::from_str(&format!(
            "{{path: {}, maxAge: 24h, replay: {{postgresBin: /usr/lib/postgresql/15/bin}}}}",
            vol.display()
        ))
        .unwrap();
        let me = RunAs {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        };
        let volumes = LocalVolume::default();
        let first = volumes
            .prepare_for_recovery(&spec, &[], &vol, me)
            .await
            .unwrap();
        // An orphaned recovery left its directory; the next attempt wipes it and
        // stages elsewhere.
        fs::create_dir(&first).unwrap();
        fs::write(first.join("base"), "orphan").unwrap();
        assert!(
            matches!(inspect_blocking(&vol).unwrap(), VolumeState::Unmarked { reason, .. } if reason.contains("staging"))
        );
        let second = volumes
            .prepare_for_recovery(&spec, &[], &vol, me)
            .await
            .unwrap();
        assert_ne!(first, second);
        assert!(!first.exists(), "the orphan's directory was wiped");
        fs::create_dir(&second).unwrap();
        fs::write(second.join("PG_VERSION"), "15\n").unwrap();
        volumes.promote_staging(&vol, &second).await.unwrap();
        assert!(vol.join("PG_VERSION").exists());
        assert!(!holds_staging(&vol).unwrap());
    }

    #[test]
    fn legacy_marker_matches_date_rfc3339_ns() {
        let t: Timestamp = "2026-11-23T19:14:21.5Z".parse().unwrap();
        assert_eq!(
            legacy_marker_text(t),
            "2026-11-23 19:14:21.500000000+00:00\n"
        );
    }

    #[test]
    fn inspect_tells_missing_unmarked_corrupt_and_foreign_apart() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        assert_eq!(inspect_blocking(&vol).unwrap(), VolumeState::Missing);
        fs::create_dir(&vol).unwrap();
        assert!(
            matches!(inspect_blocking(&vol).unwrap(), VolumeState::Unmarked { reason, .. } if reason == "no marker")
        );
        fs::write(vol.join("PG_VERSION"), "15\n").unwrap();
        fs::write(vol.join(MARKER_FILE), "{not json").unwrap();
        assert!(
            matches!(inspect_blocking(&vol).unwrap(), VolumeState::Unmarked { reason, .. } if reason.starts_with("marker corrupt"))
        );
        fs::remove_file(vol.join("PG_VERSION")).unwrap();
        fs::remove_file(vol.join(MARKER_FILE)).unwrap();
        fs::write(vol.join("precious.txt"), "x").unwrap();
        assert!(
            matches!(inspect_blocking(&vol).unwrap(), VolumeState::Unmarked { reason, foreign, .. } if reason.contains("not a PostgreSQL") && foreign)
        );
    }
}
