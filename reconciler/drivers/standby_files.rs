//! The files that make the recovered volume a standby at rest, on this host:
//! `standby.signal`, WAL segments fetched from barman into `pg_wal`, and the newest
//! segment there. The default methods of [`super::volume::VolumeDriver`] for them
//! call these.
//!
//! It never decides whether a volume can catch up, never starts postgres, and
//! never touches the marker: the executor orders these around the marker.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};

use super::command::RunAs;
use super::fsutil::{remove_durably, sync_dir};
use super::volume::STAGING_DIR;
use super::wal_segment::Segment;

/// The file whose presence makes postgres start as a standby.
pub const STANDBY_SIGNAL: &str = "standby.signal";

/// Where barman writes the segments it is asked for, inside the volume (so the
/// rename into `pg_wal` is atomic) and named as a staging directory: one left by an
/// interrupted catch-up marks the volume as interrupted, and the starport copy
/// leaves it out.
pub fn fetch_dir(volume: &Path) -> PathBuf {
    volume.join(format!("{STAGING_DIR}-wal"))
}

/// Puts `standby.signal` in place, durably.
pub fn put_standby_signal(volume: &Path, owner: RunAs) -> io::Result<()> {
    let signal = volume.join(STANDBY_SIGNAL);
    fs::write(&signal, b"")?;
    chown(&signal, Some(owner.uid), Some(owner.gid))?;
    fs::File::open(&signal)?.sync_all()?;
    sync_dir(volume)
}

/// Removes `standby.signal`, durably: at rest the volume holds none, so that a copy
/// of it starts as a primary.
pub fn remove_standby_signal(volume: &Path) -> io::Result<()> {
    remove_durably(&volume.join(STANDBY_SIGNAL)).map(|_| ())
}

/// The newest WAL segment file in the volume's `pg_wal`. Only meaningful before a
/// postgres ran on it: a restartpoint recycles old segments under future names.
pub fn newest_segment(volume: &Path) -> io::Result<Option<Segment>> {
    let mut newest = None;
    for entry in fs::read_dir(volume.join("pg_wal"))? {
        let entry = entry?;
        if let Some(segment) = entry.file_name().to_str().and_then(Segment::parse) {
            newest = newest.max(Some(segment));
        }
    }
    Ok(newest)
}

/// An empty fetch directory owned by `owner` (barman writes into it as that
/// account); whatever an interrupted catch-up left there is removed.
pub fn prepare_fetch(volume: &Path, owner: RunAs) -> io::Result<PathBuf> {
    let dir = fetch_dir(volume);
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    fs::create_dir(&dir)?;
    chown(&dir, Some(owner.uid), Some(owner.gid))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    sync_dir(volume)?;
    Ok(dir)
}

/// Moves a fetched segment into `pg_wal` under its name, after making its bytes
/// durable: `pg_wal` only ever holds whole segments.
pub fn install_segment(volume: &Path, name: &str, owner: RunAs) -> io::Result<()> {
    let fetched = fetch_dir(volume).join(name);
    let file = fs::File::open(&fetched)?;
    if file.metadata()?.len() != super::wal_segment::SEGMENT_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name} as fetched is not a whole 16 MiB segment"),
        ));
    }
    file.sync_all()?;
    chown(&fetched, Some(owner.uid), Some(owner.gid))?;
    fs::set_permissions(&fetched, fs::Permissions::from_mode(0o600))?;
    let wal = volume.join("pg_wal");
    fs::rename(&fetched, wal.join(name))?;
    sync_dir(&wal)
}

/// Removes the fetch directory once every segment was installed.
pub fn finish_fetch(volume: &Path) -> io::Result<()> {
    match fs::remove_dir_all(fetch_dir(volume)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => sync_dir(volume),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> RunAs {
        RunAs {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        }
    }

    #[test]
    fn a_fetched_segment_lands_whole_in_pg_wal_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path();
        fs::create_dir(vol.join("pg_wal")).unwrap();
        fs::write(vol.join("pg_wal/000000010000000000000003"), b"").unwrap();
        fs::write(vol.join("pg_wal/00000002.history"), b"").unwrap();
        let fetch = prepare_fetch(vol, me()).unwrap();
        let name = "000000010000000000000004";
        fs::write(fetch.join(name), b"torn").unwrap();
        assert!(install_segment(vol, name, me()).is_err());
        assert!(!vol.join("pg_wal").join(name).exists());
        fs::write(
            fetch.join(name),
            vec![0u8; super::super::wal_segment::SEGMENT_BYTES as usize],
        )
        .unwrap();
        install_segment(vol, name, me()).unwrap();
        assert_eq!(
            newest_segment(vol)
                .unwrap()
                .map(|s| s.to_string())
                .as_deref(),
            Some(name)
        );
        finish_fetch(vol).unwrap();
        assert!(!fetch.exists());
        put_standby_signal(vol, me()).unwrap();
        assert!(vol.join(STANDBY_SIGNAL).exists());
        remove_standby_signal(vol).unwrap();
        assert!(!vol.join(STANDBY_SIGNAL).exists());
    }
}
