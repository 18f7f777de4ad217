//! The starport in bb8's layout, on a local path:
//! `<root>/<target>/data/<volume>/` and `<root>/<target>/meta/metadata.json`.
//!
//! Metadata is what makes a copy trustworthy: it is removed before rsync touches the
//! data and written only after rsync succeeded, so it never claims a half-synced
//! copy. Copies use the real `rsync -a --delete`, in place by 8 KiB blocks.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::command::{CommandError, CommandLine, CommandRunner};
use super::fsutil::{blocking, remove_durably, write_atomically};
use super::volume::STAGING_DIR;
use crate::observed::{StarportMetadata, StarportState};
use crate::spec::StarportSpec;

/// What can go wrong with the starport.
#[derive(Debug, thiserror::Error)]
pub enum StarportError {
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
    /// rsync could not be run.
    #[error("running rsync failed")]
    Command(#[source] CommandError),
    /// rsync failed.
    #[error("rsync failed ({}): {message}", super::command::exit_text(*code, *signal))]
    Rsync {
        /// Its exit code.
        code: Option<i32>,
        /// The signal that ended it.
        signal: Option<i32>,
        /// What it (and ssh) said last ([`super::command::CommandOutput::last_words`]).
        message: String,
    },
}

/// rsync's options for a copy that writes only what changed: in place, by
/// postgres' 8 KiB blocks, delta algorithm on even between local directories
/// (where rsync otherwise copies changed files whole). refresh-facts (3k): a night
/// then writes about the pages that changed, 0.08–0.16 of the volume, instead of
/// all of it. In place means a copy stopped halfway is a mix of two nights: safe
/// only because the metadata is removed before rsync starts and written after it
/// succeeded.
pub const BLOCK_LEVEL: [&str; 3] = ["--inplace", "--no-whole-file", "--block-size=8192"];

/// What one copy moved, from `rsync --stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes of file data sent as is ("Literal data").
    pub literal_bytes: u64,
    /// All bytes sent ("Total bytes sent").
    pub bytes_sent: u64,
    /// Size of the whole copy ("Total file size").
    pub total_bytes: u64,
}

impl CopyStats {
    /// Reads rsync's `--stats` lines (C locale; numbers may carry `,` separators).
    pub fn from_rsync_stats(stdout: &str) -> Self {
        let field = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .and_then(|rest| {
                    let digits: String = rest
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == ',')
                        .filter(char::is_ascii_digit)
                        .collect();
                    digits.parse().ok()
                })
                .unwrap_or(0)
        };
        Self {
            literal_bytes: field("Literal data:"),
            bytes_sent: field("Total bytes sent:"),
            total_bytes: field("Total file size:"),
        }
    }
}

/// Where a target's pieces live.
#[derive(Debug, Clone)]
pub struct StarportPaths {
    /// `<root>/<target>`.
    pub target: PathBuf,
    /// `<root>/<target>/data/<volume>`.
    pub data: PathBuf,
    /// `<root>/<target>/meta/metadata.json`.
    pub metadata: PathBuf,
}

impl StarportPaths {
    /// The paths of `spec`'s target holding `volume_name`.
    pub fn new(spec: &StarportSpec, volume_name: &str) -> Self {
        let target = spec.root.as_path().join(spec.target.as_str());
        Self {
            data: target.join("data").join(volume_name),
            metadata: target.join("meta").join("metadata.json"),
            target,
        }
    }
}

/// The starport operations the executor needs.
#[async_trait]
pub trait StarportDriver: Send + Sync + std::fmt::Debug {
    /// Reads the target's metadata.
    async fn inspect(
        &self,
        spec: &StarportSpec,
        volume_name: &str,
    ) -> Result<StarportState, StarportError>;
    /// Removes the metadata, durably. Always first.
    async fn invalidate_metadata(
        &self,
        spec: &StarportSpec,
        volume_name: &str,
    ) -> Result<(), StarportError>;
    /// Copies `source` into the target with `rsync -a --delete`.
    async fn copy(
        &self,
        source: &Path,
        spec: &StarportSpec,
        volume_name: &str,
        timeout: Duration,
    ) -> Result<CopyStats, StarportError>;
    /// Writes the metadata. Always last.
    async fn write_metadata(
        &self,
        spec: &StarportSpec,
        volume_name: &str,
        metadata: &StarportMetadata,
    ) -> Result<(), StarportError>;
}

/// What a `metadata.json` says: a synced copy, or (corrupt) none to trust.
pub fn state_of_metadata(text: &str) -> StarportState {
    match serde_json::from_str::<StarportMetadata>(text) {
        Ok(metadata) => StarportState::Synced { metadata },
        Err(e) => StarportState::NoMetadata {
            reason: format!("metadata.json is corrupt: {e}"),
        },
    }
}

/// A starport reachable as a local path.
#[derive(Debug, Clone)]
pub struct LocalStarport {
    runner: Arc<dyn CommandRunner>,
}

impl LocalStarport {
    /// rsync run by `runner`.
    pub fn new(runner: Arc<dyn CommandRunner>) -> Self {
        Self { runner }
    }
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StarportError + 'a {
    move |source| StarportError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[async_trait]
impl StarportDriver for LocalStarport {
    async fn inspect(
        &self,
        spec: &StarportSpec,
        volume_name: &str,
    ) -> Result<StarportState, StarportError> {
        let paths = StarportPaths::new(spec, volume_name);
        if !spec.root.as_path().is_dir() {
            return Err(io_err("find the starport root", spec.root.as_path())(
                io::Error::new(io::ErrorKind::NotFound, "no such directory"),
            ));
        }
        let text = match tokio::fs::read_to_string(&paths.metadata).await {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(StarportState::NoMetadata {
                    reason: "no metadata.json".into(),
                });
            }
            Err(e) => return Err(io_err("read", &paths.metadata)(e)),
        };
        Ok(state_of_metadata(&text))
    }

    async fn invalidate_metadata(
        &self,
        spec: &StarportSpec,
        volume_name: &str,
    ) -> Result<(), StarportError> {
        let paths = StarportPaths::new(spec, volume_name);
        let metadata = paths.metadata.clone();
        blocking(move || remove_durably(&metadata).map(|_| ()))
            .await
            .map_err(io_err("remove", &paths.metadata))
    }

    async fn copy(
        &self,
        source: &Path,
        spec: &StarportSpec,
        volume_name: &str,
        timeout: Duration,
    ) -> Result<CopyStats, StarportError> {
        let paths = StarportPaths::new(spec, volume_name);
        let data = paths.data.clone();
        blocking(move || std::fs::create_dir_all(&data))
            .await
            .map_err(io_err("create", &paths.data))?;
        // Trailing slashes: copy the contents of the volume into data/<volume>/.
        let mut from = source.as_os_str().to_owned();
        from.push("/");
        let mut to = paths.data.as_os_str().to_owned();
        to.push("/");
        let rsync = CommandLine::new("rsync", timeout)
            .args(["-a", "--delete", "--delete-excluded", "--stats"])
            .args(BLOCK_LEVEL)
            .env("LC_ALL", "C")
            .arg(format!("--exclude=/{STAGING_DIR}*"))
            .arg("--exclude=/postmaster.pid")
            .arg(from)
            .arg(to)
            .pause_at("sync:running");
        let out = self
            .runner
            .run(&rsync)
            .await
            .map_err(StarportError::Command)?;
        if out.success() {
            Ok(CopyStats::from_rsync_stats(&out.stdout))
        } else {
            Err(StarportError::Rsync {
                code: out.code,
                signal: out.signal,
                message: out.last_words(),
            })
        }
    }

    async fn write_metadata(
        &self,
        spec: &StarportSpec,
        volume_name: &str,
        metadata: &StarportMetadata,
    ) -> Result<(), StarportError> {
        let paths = StarportPaths::new(spec, volume_name);
        let path = paths.metadata.clone();
        let json = serde_json::to_vec_pretty(metadata)
            .map_err(|e| io_err("encode", &paths.metadata)(io::Error::other(e)))?;
        blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            write_atomically(&path, &json, 0o644, None)
        })
        .await
        .map_err(io_err("write", &paths.metadata))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsync_stats_are_read_with_their_separators() {
        let out = "Number of files: 1,002 (reg: 980, dir: 22)\nTotal file size: 71,303,168 bytes\nLiteral data: 17,039,360 bytes\nMatched data: 0 bytes\nTotal bytes sent: 17,052,811\n";
        let stats = CopyStats::from_rsync_stats(out);
        assert_eq!(stats.total_bytes, 71_303_168);
        assert_eq!(stats.literal_bytes, 17_039_360);
        assert_eq!(stats.bytes_sent, 17_052_811);
    }
}
