//! Small filesystem helpers shared by the drivers: atomic writes, durable removals,
//! account lookup. Blocking: call from `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, chown};
use std::path::Path;

use super::command::RunAs;

/// Writes `bytes` to `path` atomically: a temporary file in the same directory,
/// fsynced, renamed over the target, and the directory fsynced. A reader sees the
/// old content or the new, never a mix; a crash leaves at most a stray temp file.
pub fn write_atomically(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<RunAs>,
) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if let Some(account) = owner {
            chown(&tmp, Some(account.uid), Some(account.gid))?;
        }
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes a file if present and makes the removal durable. Returns whether it existed.
pub fn remove_durably(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// fsyncs a directory, so renames and removals in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Looks up an OS account by name.
pub fn lookup_account(name: &str) -> io::Result<RunAs> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(RunAs {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no OS user named `{name}`"),
        )),
        Err(e) => Err(io::Error::other(e)),
    }
}

/// Bytes in the regular files under `dir` (not following links), as `du -sb` counts
/// file contents: what a recovery wrote.
pub fn dir_size(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                total += entry.metadata()?.len();
            }
        }
    }
    Ok(total)
}

/// Runs blocking filesystem work off the async threads.
pub async fn blocking<T, F>(work: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        write_atomically(&path, b"one", 0o600, None).unwrap();
        write_atomically(&path, b"two", 0o600, None).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(remove_durably(&path).unwrap());
        assert!(!remove_durably(&path).unwrap());
    }
}
