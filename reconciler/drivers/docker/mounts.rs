//! Which containers mount a volume, or write into a directory through a bind
//! mount (its own, one of a directory holding it, or a local volume created to
//! bind one), symlinks resolved. It reports; what a user means is the caller's.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;

use super::{DockerEngine, DockerError, is_not_found};

/// A container that mounts a volume or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountingContainer {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Whether it can write into what it mounts.
    pub read_write: bool,
}

/// What a container may mount.
#[derive(Debug, Clone, Copy)]
pub enum Mounted<'a> {
    /// A named volume.
    Volume(&'a str),
    /// A directory of this host, bind-mounted.
    Directory(&'a std::path::Path),
}

impl fmt::Display for Mounted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mounted::Volume(name) => write!(f, "Docker volume {name}"),
            Mounted::Directory(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Whether a bind mount of `source` lets a container write into `dir`: it is the
/// directory, inside it, or a directory holding it, by path components.
fn bind_covers(source: &std::path::Path, dir: &std::path::Path) -> bool {
    source.starts_with(dir) || dir.starts_with(source)
}

/// How long resolving one path may take: a bind source on a hung network mount
/// must not hang the reconciler.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// `path` with its symlinks resolved, as far as it exists: the deepest existing
/// ancestor is resolved and the rest appended, so a directory not created yet
/// under a symlinked parent still compares with binds of the real parent. The
/// path as written when it can't be resolved in time.
async fn resolved(path: &std::path::Path) -> std::path::PathBuf {
    let path = path.to_path_buf();
    let resolve = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            for ancestor in path.ancestors() {
                if let Ok(real) = std::fs::canonicalize(ancestor) {
                    let rest = path
                        .strip_prefix(ancestor)
                        .unwrap_or(std::path::Path::new(""));
                    return Some(if rest.as_os_str().is_empty() {
                        real
                    } else {
                        real.join(rest)
                    });
                }
            }
            None
        }
    });
    match tokio::time::timeout(RESOLVE_TIMEOUT, resolve).await {
        Ok(Ok(Some(real))) => real,
        _ => path,
    }
}

/// The host directories containers' mounts write into, looked up once per listing.
#[derive(Default)]
struct DirectorySources {
    /// Local volumes by name: the directory they bind (`o=bind`, `device=`), if any.
    volumes: HashMap<String, Option<std::path::PathBuf>>,
    /// Paths already resolved.
    resolved: HashMap<std::path::PathBuf, std::path::PathBuf>,
}

impl DirectorySources {
    /// The host directory mount `m` writes into: a bind's source, or the device of
    /// a local volume created to bind one (compose's `driver_opts: {type: none,
    /// o: bind, device: …}`, which the engine reports as a volume).
    async fn source(
        &mut self,
        docker: &Docker,
        m: &bollard::models::MountPoint,
    ) -> Result<Option<std::path::PathBuf>, DockerError> {
        match m.typ.as_deref() {
            Some("bind") => Ok(m.source.as_deref().map(Into::into)),
            Some("volume") if m.driver.as_deref() == Some("local") => {
                let Some(name) = m.name.as_deref() else {
                    return Ok(None);
                };
                if !self.volumes.contains_key(name) {
                    let device = match docker.inspect_volume(name).await {
                        Ok(v) => bound_device(&v.options),
                        // Removed since the listing: it binds nothing now.
                        Err(e) if is_not_found(&e) => None,
                        Err(e) => {
                            return Err(DockerError::api(format!("inspect volume {name}"))(e));
                        }
                    };
                    self.volumes.insert(name.to_string(), device);
                }
                Ok(self.volumes[name].clone())
            }
            _ => Ok(None),
        }
    }

    /// Whether a mount of `source` writes into `dir`, as written or with the
    /// symlinks of both resolved.
    async fn covers(&mut self, source: &std::path::Path, dir: &std::path::Path) -> bool {
        if bind_covers(source, dir) {
            return true;
        }
        let source = self.resolve(source).await;
        let dir = self.resolve(dir).await;
        bind_covers(&source, &dir)
    }

    async fn resolve(&mut self, path: &std::path::Path) -> std::path::PathBuf {
        if let Some(real) = self.resolved.get(path) {
            return real.clone();
        }
        let real = resolved(path).await;
        self.resolved.insert(path.to_path_buf(), real.clone());
        real
    }
}

/// The directory a local volume's options bind, if they do.
fn bound_device(options: &HashMap<String, String>) -> Option<std::path::PathBuf> {
    let binds = options
        .get("o")
        .is_some_and(|o| o.split(',').any(|o| o == "bind" || o == "rbind"));
    binds
        .then(|| options.get("device").map(Into::into))
        .flatten()
}

impl DockerEngine {
    /// Names of the running containers that mount volume `volume`, with their labels.
    pub async fn containers_using(
        &self,
        volume: &str,
    ) -> Result<Vec<MountingContainer>, DockerError> {
        self.containers_mounting(Mounted::Volume(volume), false)
            .await
    }

    /// Names of the running containers that mount `what`.
    pub async fn running_containers_mounting(
        &self,
        what: Mounted<'_>,
    ) -> Result<Vec<String>, DockerError> {
        Ok(self
            .containers_mounting(what, false)
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect())
    }

    /// The containers that mount `what`, running or not, that may have started
    /// after `since`, each said in words (`container X started at T`). One whose
    /// start time can't be read, or that was removed before it could be asked,
    /// counts: what it wrote is there all the same.
    pub async fn containers_started_since(
        &self,
        what: Mounted<'_>,
        since: jiff::Timestamp,
    ) -> Result<Vec<String>, DockerError> {
        let docker = self.client().await?;
        let mut started = Vec::new();
        for MountingContainer { name, .. } in self.containers_mounting(what, true).await? {
            let started_at = match docker.inspect_container(&name, None).await {
                Ok(c) => c.state.and_then(|s| s.started_at),
                Err(e) if is_not_found(&e) => {
                    started.push(format!(
                        "container {name}, removed before it could be asked when it started"
                    ));
                    continue;
                }
                Err(e) => return Err(DockerError::api(format!("inspect container {name}"))(e)),
            };
            let raw = started_at.unwrap_or_default();
            match raw.parse::<jiff::Timestamp>() {
                // Never started: year 1.
                Ok(at) if at <= since => {}
                Ok(at) => started.push(format!("container {name} started at {at}")),
                Err(_) => started.push(format!(
                    "container {name}, whose start time the engine gives as `{raw}`"
                )),
            }
        }
        Ok(started)
    }

    async fn containers_mounting(
        &self,
        what: Mounted<'_>,
        all: bool,
    ) -> Result<Vec<MountingContainer>, DockerError> {
        let docker = self.client().await?;
        // The engine filters by volume; bind mounts are matched here.
        let filters = match what {
            Mounted::Volume(volume) => HashMap::from([("volume", vec![volume.to_string()])]),
            Mounted::Directory(_) => HashMap::new(),
        };
        let list = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(all)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(DockerError::api(format!(
                "list the containers using {what}"
            )))?;
        let mut found = Vec::new();
        let mut directories = DirectorySources::default();
        for c in list {
            let mounts = match what {
                Mounted::Volume(_) => true,
                Mounted::Directory(dir) => {
                    let mut writes_into = false;
                    for m in c.mounts.iter().flatten().filter(|m| m.rw != Some(false)) {
                        if let Some(source) = directories.source(docker, m).await?
                            && directories.covers(&source, dir).await
                        {
                            writes_into = true;
                            break;
                        }
                    }
                    writes_into
                }
            };
            if mounts {
                // Only writable binds of a directory are counted. A volume mounted
                // only read-only (every mount of it says so) cannot be changed by
                // the container; one the engine does not describe counts as written.
                let read_write = match what {
                    Mounted::Volume(volume) => {
                        let of_volume: Vec<_> = c
                            .mounts
                            .iter()
                            .flatten()
                            .filter(|m| m.name.as_deref() == Some(volume))
                            .collect();
                        of_volume.is_empty() || of_volume.iter().any(|m| m.rw != Some(false))
                    }
                    Mounted::Directory(_) => true,
                };
                let name = c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .or(c.id)
                    .unwrap_or_default();
                found.push(MountingContainer {
                    name,
                    labels: c.labels.unwrap_or_default(),
                    read_write,
                });
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::{DirectorySources, bind_covers, bound_device, resolved};
    use std::collections::HashMap;
    use std::path::Path;

    #[test]
    fn a_bind_covers_its_directory_what_is_inside_and_what_holds_it() {
        let dir = Path::new("/srv/consumer/db");
        assert!(bind_covers(Path::new("/srv/consumer/db"), dir));
        assert!(bind_covers(Path::new("/srv/consumer/db/pg_wal"), dir));
        assert!(bind_covers(Path::new("/srv/consumer"), dir));
        // Path components, not string prefixes.
        assert!(!bind_covers(Path::new("/srv/consumer/db2"), dir));
        assert!(!bind_covers(Path::new("/srv/consumer/d"), dir));
        assert!(!bind_covers(Path::new("/srv/other"), dir));
    }

    #[tokio::test]
    async fn a_bind_through_a_symlink_is_recognised() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("disk/db");
        std::fs::create_dir_all(&real).unwrap();
        let link = root.path().join("data");
        std::os::unix::fs::symlink(root.path().join("disk"), &link).unwrap();
        let mut sources = DirectorySources::default();
        assert!(sources.covers(&link.join("db"), &real).await);
        assert!(sources.covers(&link, &real).await);
        assert!(sources.covers(&real, &link.join("db")).await);
        assert!(!sources.covers(&link.join("other"), &real).await);
        // Not created yet: its existing ancestors are resolved.
        let later = link.join("db/not-yet");
        assert_eq!(
            resolved(&later).await,
            real.canonicalize().unwrap().join("not-yet")
        );
        assert!(sources.covers(&root.path().join("disk"), &later).await);
    }

    #[test]
    fn a_local_volume_binds_a_directory_only_when_its_options_say_so() {
        let options = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            bound_device(&options(&[
                ("type", "none"),
                ("o", "bind"),
                ("device", "/srv/db")
            ])),
            Some("/srv/db".into())
        );
        assert_eq!(
            bound_device(&options(&[("o", "rbind,ro"), ("device", "/srv/db")])),
            Some("/srv/db".into())
        );
        // An NFS volume's device is not a directory of this host.
        assert_eq!(
            bound_device(&options(&[
                ("type", "nfs"),
                ("o", "addr=10.0.0.1"),
                ("device", ":/db")
            ])),
            None
        );
        assert_eq!(bound_device(&options(&[])), None);
    }
}
