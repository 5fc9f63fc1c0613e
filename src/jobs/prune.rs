//! Removing jobs: `exec rm`, pruning old jobs, and the trash.
//!
//! The store lock is held only to move a job aside (one rename into `<data_dir>/trash/`);
//! deleting its files happens after the lock is released, so an `exec_start` never waits for a
//! prune of thousands of jobs. A job with a live process is never removed. A project job's
//! worktree goes with it (`worktree.rs`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::kill;
use super::store::{JobStore, create_private_dir, job_not_found};
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::RunStatus;

/// What a prune did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// The ids of the jobs removed.
    pub removed: Vec<String>,
    /// Abandoned half-created jobs swept away.
    pub swept_temp: usize,
}

impl JobStore {
    fn trash_dir(&self) -> PathBuf {
        self.root().join("trash")
    }

    /// Removes a finished job. A running one is `job_running`; so is a finished one (e.g. `lost`)
    /// with a process that is still alive after being ended.
    pub fn remove(&self, id: &str) -> Result<()> {
        let status = self.status(id)?;
        if status.status == RunStatus::Running {
            return Err(Error::new(ErrorCode::JobRunning, format!("job {id} is still running"))
                .with_hint("cancel it first: codex-remote exec cancel --id ID"));
        }
        let tree = self.tree(&status);
        if !tree.terminate(Duration::ZERO, false) {
            return Err(Error::new(
                ErrorCode::JobRunning,
                format!("job {id} has a process that would not end"),
            ));
        }
        {
            let _store = self.lock_store()?;
            let dir = self.job_dir(id)?;
            if !self.move_to_trash(&dir, id)? {
                return Err(job_not_found(id));
            }
            if let Some(key) = &status.idempotency_key {
                self.drop_key(key, id);
            }
        }
        self.empty_trash();
        self.release_worktree(id);
        Ok(())
    }

    /// Keeps the newest `keep` finished jobs and removes the older ones; running jobs and jobs
    /// with a live process are never touched. Abandoned half-created jobs are swept too.
    pub fn prune(&self, keep: usize) -> Result<Pruned> {
        let ids = self.list_ids()?;
        // Chosen without the lock: a finished job stays finished.
        let mut victims = Vec::new();
        if ids.len() > keep {
            let live = kill::jobs_with_live_processes();
            let mut finished = 0usize;
            for id in ids {
                let Ok(status) = self.status(&id) else {
                    continue;
                };
                if status.status == RunStatus::Running {
                    continue;
                }
                finished += 1;
                if finished > keep && !live.contains(id.as_str()) {
                    victims.push(status);
                }
            }
        }
        let mut pruned = Pruned::default();
        {
            let _store = self.lock_store()?;
            pruned.swept_temp = self.sweep_staging()?;
            for status in victims {
                let id = &status.exec_id;
                if self.move_to_trash(&self.job_dir(id)?, id).unwrap_or(false) {
                    if let Some(key) = &status.idempotency_key {
                        self.drop_key(key, id);
                    }
                    pruned.removed.push(status.exec_id.to_string());
                }
            }
        }
        self.empty_trash();
        for id in &pruned.removed {
            self.release_worktree(id);
        }
        Ok(pruned)
    }

    /// Moves `dir` into the trash under a new name starting with `name`. Returns false when
    /// `dir` is not there (someone else removed it first).
    pub(super) fn move_to_trash(&self, dir: &Path, name: &str) -> Result<bool> {
        create_private_dir(&self.trash_dir())?;
        let target = self.trash_dir().join(format!("{name}.{}", uuid::Uuid::new_v4().simple()));
        match fs::rename(dir, &target) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("moving {} to the trash", dir.display()), e)),
        }
    }

    /// Removes idempotency key `key` if it still names job `id`.
    pub(super) fn drop_key(&self, key: &str, id: &str) {
        let path = self.root().join("keys").join(key);
        if super::store::validate_key(key).is_ok()
            && fs::read_to_string(&path)
                .ok()
                .and_then(|text| super::store::KeyRecord::parse(&text))
                .is_some_and(|record| record.exec_id == id)
        {
            let _ = fs::remove_file(path);
        }
    }

    /// Deletes what is in the trash (without the store lock). Failures are left for next time.
    pub fn empty_trash(&self) {
        let Ok(entries) = fs::read_dir(self.trash_dir()) else {
            return;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
