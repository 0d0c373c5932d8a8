//! One writer per entry: an exclusive advisory lock (flock) on `<file>.lock` next to the entry or
//! shard file. The lock dies with its process, so a killed extraction never leaves it held.

use anyhow::{bail, Context, Result};
use fs2::FileExt;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use tracing::info;

/// A held lock; released on drop.
#[derive(Debug)]
pub struct EntryLock {
    file: std::fs::File,
    pub path: PathBuf,
}

/// The lock file guarding `target`.
pub fn lock_path(target: &Path) -> PathBuf {
    let mut s = target.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

fn open(path: &Path) -> Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating cache folder {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))
}

impl EntryLock {
    /// Locks `target`. When another process holds it: with `wait`, logs who and blocks until it
    /// is released; without, fails with a message naming the holder.
    pub fn acquire(target: &Path, wait: bool) -> Result<EntryLock> {
        let path = lock_path(target);
        let mut file = open(&path)?;
        if file.try_lock_exclusive().is_err() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                "another process".to_string()
            } else {
                holder.to_string()
            };
            if !wait {
                bail!(
                    "{} is being written by {holder} (lock {}); wait for it to finish, or run again without --no-wait to wait",
                    target.display(),
                    path.display()
                );
            }
            info!(
                "waiting for {holder} to finish writing {} (lock {})",
                target.display(),
                path.display()
            );
            file.lock_exclusive()
                .with_context(|| format!("locking {}", path.display()))?;
        }
        file.set_len(0)?;
        file.rewind()?;
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        write!(
            file,
            "gapprobe pid {} on {}",
            std::process::id(),
            host.trim()
        )?;
        file.flush()?;
        Ok(EntryLock { file, path })
    }

    /// Whether some process holds the lock file at `lock` right now.
    pub fn is_held(lock: &Path) -> bool {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(lock)
        {
            Ok(f) => match f.try_lock_exclusive() {
                Ok(()) => {
                    let _ = FileExt::unlock(&f);
                    false
                }
                Err(_) => true,
            },
            Err(_) => false,
        }
    }
}

impl Drop for EntryLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = FileExt::unlock(&self.file);
    }
}
