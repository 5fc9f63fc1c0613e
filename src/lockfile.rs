//! flock-based lock files (`std::fs::File::lock`), released when the guard is dropped.

use std::fs::File;
use std::path::Path;

use crate::error::{Context, Result};

/// An exclusive flock, released when dropped (or when the process dies, however it dies).
pub struct LockGuard(File);

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn open(path: &Path) -> Result<File> {
    crate::platform::private_file_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .context(|| format!("opening lock {}", path.display()))
}

/// Waits for the lock at `path`.
pub fn lock(path: &Path) -> Result<LockGuard> {
    let file = open(path)?;
    file.lock().context(|| format!("locking {}", path.display()))?;
    Ok(LockGuard(file))
}

/// Takes the lock at `path` if it is free.
pub fn try_lock(path: &Path) -> Result<Option<LockGuard>> {
    let file = open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(LockGuard(file))),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(crate::error::Error::internal(format!("locking {}", path.display()), e))
        }
    }
}
