//! Advisory locks between processes, possibly on several machines sharing a folder:
//! one process makes a shared file (a dataset, regenerated rollouts) or runs a suite
//! entry while the others wait or move on.
//!
//! A lock is the operating system's lock on an open lock file (`flock` on Unix, which
//! Linux carries over NFS as a byte-range lock), so it is released when its holder
//! exits, however it exits: a dead worker never blocks the others, and there is no
//! stale lock to clear by hand. The lock file stays in place (removing it would let a
//! waiter lock a file that is no longer the one others open) and holds the holder's
//! host, process id and start time, for the messages of those who find it taken.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct Lock {
    file: File,
}

impl Lock {
    /// Takes the lock of `path` if it is free; `None` when another process holds it.
    pub fn try_acquire(path: &Path) -> anyhow::Result<Option<Lock>> {
        let file = open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Lock::held(file, path)?)),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }

    /// Takes the lock of `path`, waiting while another process holds it; `waiting`
    /// says what is waited for (printed once, with the holder, when the lock is taken).
    pub fn acquire(path: &Path, waiting: &str) -> anyhow::Result<Lock> {
        if let Some(lock) = Lock::try_acquire(path)? {
            return Ok(lock);
        }
        eprintln!("flowrl: waiting for {waiting} ({})", holder(path));
        let file = open(path)?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Lock::held(file, path)
    }

    /// Records this process as the holder in the lock file.
    fn held(mut file: File, path: &Path) -> anyhow::Result<Lock> {
        let host = hostname();
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let text = format!(
            "host {host}, process {}, since unix time {since}\n",
            std::process::id()
        );
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(text.as_bytes()))
            .with_context(|| format!("cannot write the lock file {}", path.display()))?;
        Ok(Lock { file })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Closing the file releases the lock anyway; unlocking first makes it prompt.
        let _ = self.file.unlock();
    }
}

/// The lock file of a file or folder that one process makes for all: `<path>.lock`.
pub fn beside(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Who holds the lock of `path`, as its file says (`held by host h, process p, ...`).
pub fn holder(path: &Path) -> String {
    let mut text = String::new();
    match File::open(path).and_then(|mut f| f.read_to_string(&mut text)) {
        Ok(_) if !text.trim().is_empty() => format!("held by {}", text.trim()),
        _ => format!("lock file {}", path.display()),
    }
}

/// Opens (creating it and its folder if needed) the lock file `path`.
fn open(path: &Path) -> anyhow::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create folder {}", dir.display()))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))
}

/// This machine's name, for lock files seen from several machines.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_refused_until_dropped_and_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.lock");
        let first = Lock::try_acquire(&path)
            .unwrap()
            .expect("a free lock is taken");
        assert!(Lock::try_acquire(&path).unwrap().is_none());
        let who = holder(&path);
        assert!(
            who.contains(&format!("process {}", std::process::id())),
            "{who}"
        );
        drop(first);
        let again = Lock::acquire(&path, "the test lock").unwrap();
        assert!(Lock::try_acquire(&path).unwrap().is_none());
        drop(again);
    }
}
