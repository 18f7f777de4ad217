//! Off-site mirrors of a starport target, on another host, by rsync over ssh.
//!
//! The layout and the metadata rule are the starport's: the mirror's
//! `meta/metadata.json` is removed before its data is touched and written only after
//! the data was copied. Every transfer is the real `rsync` with `--secluded-args`
//! (`-s`), so remote paths travel inside rsync's protocol and never through the
//! remote shell; ssh runs with key authentication only (`BatchMode`) and checks the
//! host key strictly.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::command::{CommandLine, CommandRunner};
use super::starport::BLOCK_LEVEL;
use super::starport::{CopyStats, StarportError, StarportPaths};
use crate::observed::{StarportMetadata, StarportState};
use crate::spec::{MirrorSpec, SshSpec, StarportSpec};

/// How long a metadata transfer may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(120);
/// rsync's exit code for "some files could not be transferred" (here: the remote
/// metadata does not exist).
const RSYNC_PARTIAL: i32 = 23;

/// The mirror operations the executor needs.
#[async_trait]
pub trait MirrorDriver: Send + Sync + std::fmt::Debug {
    /// Reads the mirror's metadata for `starport`'s target.
    async fn inspect(
        &self,
        mirror: &MirrorSpec,
        starport: &StarportSpec,
        volume_name: &str,
    ) -> Result<StarportState, StarportError>;
    /// Removes the mirror's metadata. Always first.
    async fn invalidate_metadata(
        &self,
        mirror: &MirrorSpec,
        starport: &StarportSpec,
    ) -> Result<(), StarportError>;
    /// Copies the local starport copy to the mirror with `rsync -a --delete`.
    async fn copy(
        &self,
        mirror: &MirrorSpec,
        starport: &StarportSpec,
        volume_name: &str,
    ) -> Result<CopyStats, StarportError>;
    /// Writes the mirror's metadata. Always last.
    async fn write_metadata(
        &self,
        mirror: &MirrorSpec,
        starport: &StarportSpec,
        metadata: &StarportMetadata,
    ) -> Result<(), StarportError>;
}

/// Mirrors reached by this host's rsync and ssh.
#[derive(Debug, Clone)]
pub struct RsyncOverSsh {
    runner: Arc<dyn CommandRunner>,
}

impl RsyncOverSsh {
    /// rsync run by `runner`.
    pub fn new(runner: Arc<dyn CommandRunner>) -> Self {
        Self { runner }
    }

    async fn rsync(
        &self,
        command: CommandLine,
    ) -> Result<super::command::CommandOutput, StarportError> {
        self.runner
            .run(&command)
            .await
            .map_err(StarportError::Command)
    }
}

/// The `-e` value: rsync splits it at whitespace, which the spec keeps out of the
/// paths (`BackupPipeline::check_placement`).
pub(super) fn ssh_command(ssh: &SshSpec) -> String {
    let mut parts = vec![
        "ssh".to_string(),
        "-i".to_string(),
        ssh.identity_file.to_string(),
        "-p".to_string(),
        ssh.port.to_string(),
        "-o".to_string(),
        "BatchMode=yes".to_string(),
        "-o".to_string(),
        "StrictHostKeyChecking=yes".to_string(),
        "-o".to_string(),
        "ConnectTimeout=20".to_string(),
        // Only the configured key, and a dead connection noticed within two minutes
        // rather than at the rsync timeout.
        "-o".to_string(),
        "IdentitiesOnly=yes".to_string(),
        "-o".to_string(),
        "ServerAliveInterval=30".to_string(),
        "-o".to_string(),
        "ServerAliveCountMax=4".to_string(),
    ];
    if let Some(known_hosts) = &ssh.known_hosts_file {
        parts.push("-o".to_string());
        parts.push(format!("UserKnownHostsFile={known_hosts}"));
    }
    parts.join(" ")
}

/// `user@host:PATH` (host and user are names that cannot hold `@`, `:` or spaces).
pub(super) fn remote(ssh: &SshSpec, path: &Path) -> String {
    format!("{}@{}:{}", ssh.user, ssh.host, path.display())
}

/// The mirror's view of a target: the same layout under the mirror's root.
fn mirror_paths(mirror: &MirrorSpec, starport: &StarportSpec, volume_name: &str) -> StarportPaths {
    let target = mirror.root.as_path().join(starport.target.as_str());
    StarportPaths {
        data: target.join("data").join(volume_name),
        metadata: target.join("meta").join("metadata.json"),
        target,
    }
}

/// rsync over ssh, remote paths carried inside rsync's protocol (`-s`).
pub(super) fn rsync(ssh: &SshSpec, timeout: Duration) -> CommandLine {
    CommandLine::new("rsync", timeout)
        .env("LC_ALL", "C")
        .args(["-s", "-e"])
        .arg(ssh_command(ssh))
}

pub(super) fn failed(out: &super::command::CommandOutput) -> StarportError {
    StarportError::Rsync {
        code: out.code,
        signal: out.signal,
        message: out.last_words(),
    }
}

fn local_dir() -> Result<tempfile::TempDir, StarportError> {
    tempfile::tempdir().map_err(|source| StarportError::Io {
        action: "create a temporary directory in",
        path: std::env::temp_dir(),
        source,
    })
}

/// Reads a remote `metadata.json` by fetching it with rsync over ssh.
pub(super) async fn fetch_metadata(
    runner: &dyn CommandRunner,
    ssh: &SshSpec,
    path: &Path,
) -> Result<StarportState, StarportError> {
    let local = local_dir()?;
    let out = runner
        .run(
            &rsync(ssh, METADATA_TIMEOUT)
                .arg(remote(ssh, path))
                .arg(local.path()),
        )
        .await
        .map_err(StarportError::Command)?;
    // `(2)` is ENOENT as rsync prints it, whatever the remote's language.
    if out.code == Some(RSYNC_PARTIAL) && out.stderr.contains("(2)") {
        return Ok(StarportState::NoMetadata {
            reason: "no metadata.json".into(),
        });
    }
    if !out.success() {
        return Err(failed(&out));
    }
    let file = local.path().join("metadata.json");
    let text = tokio::fs::read_to_string(&file)
        .await
        .map_err(|source| StarportError::Io {
            action: "read the fetched metadata",
            path: file,
            source,
        })?;
    Ok(super::starport::state_of_metadata(&text))
}

#[async_trait]
impl MirrorDriver for RsyncOverSsh {
    async fn inspect(
        &self,
        mirror: &MirrorSpec,
        starport: &StarportSpec,
        volume_name: &str,
    ) -> Result<StarportState, StarportError> {
        let paths = mirror_paths(mirror, starport, volume_name);
        fetch_metadata(self.runner.as_ref(), &mirror.ssh, &paths.metadata).await
    }

    async fn invalidate_metadata(
        &self,
        mirror: &MirrorSpec,
        starport: &StarportSpec,
    ) -> Result<(), StarportError> {
        let paths = mirror_paths(mirror, starport, "");
        let meta = paths.metadata.parent().unwrap_or(&paths.target);
        // An empty directory synced over meta/ with --delete removes metadata.json
        // (and creates meta/ on a new mirror) without a remote command line.
        let empty = local_dir()?;
        let mut from = empty.path().as_os_str().to_owned();
        from.push("/");
        let mut to = remote(&mirror.ssh, meta);
        to.push('/');
        let out = self
            .rsync(
                rsync(&mirror.ssh, METADATA_TIMEOUT)
                    .args(["-r", "--delete", "--mkpath"])
                    .arg(from)
                    .arg(to),
            )
            .await?;
        if out.success() {
            Ok(())
        } else {
            Err(failed(&out))
        }
    }

    async fn copy(
        &self,
        mirror: &MirrorSpec,
        starport: &StarportSpec,
        volume_name: &str,
    ) -> Result<CopyStats, StarportError> {
        let local = StarportPaths::new(starport, volume_name);
        let paths = mirror_paths(mirror, starport, volume_name);
        let mut from = local.data.as_os_str().to_owned();
        from.push("/");
        let mut to = remote(&mirror.ssh, &paths.data);
        to.push('/');
        let out = self
            .rsync(
                rsync(&mirror.ssh, mirror.timeout.to_std())
                    // Over ssh rsync's delta algorithm is on already; in place,
                    // the mirror writes only the changed 8 KiB pages (postgres'
                    // block) instead of a new copy of each changed file. A copy
                    // half-written in place is harmless: its metadata was removed
                    // first and is written only after rsync succeeded.
                    .args(["-a", "--delete", "--stats", "--mkpath"])
                    .args(BLOCK_LEVEL)
                    .arg(from)
                    .arg(to)
                    .pause_at("mirror:running"),
            )
            .await?;
        if out.success() {
            Ok(CopyStats::from_rsync_stats(&out.stdout))
        } else {
            Err(failed(&out))
        }
    }

    async fn write_metadata(
        &self,
        mirror: &MirrorSpec,
        starport: &StarportSpec,
        metadata: &StarportMetadata,
    ) -> Result<(), StarportError> {
        let paths = mirror_paths(mirror, starport, "");
        let local = local_dir()?;
        let file = local.path().join("metadata.json");
        let json = serde_json::to_vec_pretty(metadata).map_err(|e| StarportError::Io {
            action: "encode the metadata for",
            path: file.clone(),
            source: std::io::Error::other(e),
        })?;
        tokio::fs::write(&file, json)
            .await
            .map_err(|source| StarportError::Io {
                action: "write",
                path: file.clone(),
                source,
            })?;
        // rsync writes a temporary file and renames it: the metadata appears whole.
        let out = self
            .rsync(
                rsync(&mirror.ssh, METADATA_TIMEOUT)
                    .args(["--mkpath", "--chmod=F644"])
                    .arg(&file)
                    .arg(remote(&mirror.ssh, &paths.metadata)),
            )
            .await?;
        if out.success() {
            Ok(())
        } else {
            Err(failed(&out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_options_are_strict_and_paths_stay_separate() {
        let ssh: SshSpec = serde_saphyr::from_str(
            "{host: backup.example.org, user: montagu, port: 2222, identityFile: /root/.ssh/id_mirror, knownHostsFile: /etc/reconciler/known_hosts}",
        )
        .unwrap();
        assert_eq!(
            ssh_command(&ssh),
            "ssh -i /root/.ssh/id_mirror -p 2222 -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=20 -o IdentitiesOnly=yes -o ServerAliveInterval=30 -o ServerAliveCountMax=4 -o UserKnownHostsFile=/etc/reconciler/known_hosts"
        );
        assert_eq!(
            remote(&ssh, Path::new("/srv/starport/t/meta/metadata.json")),
            "montagu@backup.example.org:/srv/starport/t/meta/metadata.json"
        );
    }
}
