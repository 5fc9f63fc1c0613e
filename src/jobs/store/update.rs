//! The one way a job's status changes: [`JobStore::update`] locks the job, re-reads its status,
//! refuses a job that has already ended, applies a change and writes the status whole; an end
//! through the space `end.reserve` keeps for a full disk ([`JobStore::write_end`]).
//!
//! Every transition of a job goes through it: the worker's start (waiting for GPUs, running,
//! or `start_failed`), its end, a cancel request and the end of a job cancelled without its
//! worker, a Slurm job's end as Slurm tells it, and `lost`. No transition applies to a job
//! that has ended: an end is final (a cancel of an ended job answers without a write).
//! A job the store holds unended is `running` (`queued` is a view, see [`JobStatus`]'s
//! `stored_state`); a job's first status is written when it is created (`create.rs`), before
//! anyone else can see it.

use std::time::Duration;

use super::JobStore;
use crate::error::{Error, ErrorCode, Result};
use crate::lockfile::LockGuard;
use crate::protocol::{JobState, JobStatus, RunStatus};

/// What a change asks for, having looked at the job's status (under the job lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The status was changed: write it.
    Write,
    /// Nothing to record: the status stays as stored (changes made to it are dropped).
    Keep,
}

/// What [`JobStore::update`] found and did.
#[derive(Debug)]
pub enum Updated {
    /// The job had already ended: its status as stored; the change did not run.
    Ended(JobStatus),
    /// The change asked for nothing: the status as stored.
    Kept(JobStatus),
    /// The change was written: the status as stored now.
    Written(JobStatus),
    /// The change could not be written (a disk full past the reserve, a read-only store): the
    /// status as the change left it, which the store does not hold.
    Unwritten(JobStatus, Error),
}

impl Updated {
    pub fn status(&self) -> &JobStatus {
        match self {
            Updated::Ended(s)
            | Updated::Kept(s)
            | Updated::Written(s)
            | Updated::Unwritten(s, _) => s,
        }
    }

    pub fn into_status(self) -> JobStatus {
        match self {
            Updated::Ended(s)
            | Updated::Kept(s)
            | Updated::Written(s)
            | Updated::Unwritten(s, _) => s,
        }
    }

    /// The update, or the error that kept its change from being written.
    pub fn written(self) -> Result<Updated> {
        match self {
            Updated::Unwritten(_, e) => Err(e),
            other => Ok(other),
        }
    }

    /// The state the job store holds after the update (an unwritten change left the job
    /// `running`, the only state a job the store holds unended can have).
    pub fn stored_state(&self) -> JobState {
        match self {
            Updated::Unwritten(..) => JobState::Running,
            other => other.status().state,
        }
    }
}

impl JobStore {
    /// Changes job `id`'s status in one step: under the job lock (waiting for it), re-read,
    /// refused when the job has ended, `change`d, and written whole when it asks.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut JobStatus) -> Result<Change>,
    ) -> Result<Updated> {
        let lock = self.lock_job(id)?;
        let status = self.read_status_raw(id)?;
        self.apply(Some(lock), status, change)
    }

    /// [`update`](Self::update) if the job lock can be had within `wait`; `None` when someone
    /// holds it longer (a worker held up while it records the job's end). A cancel changes a
    /// job this way: it never waits on a stuck worker.
    pub fn update_within(
        &self,
        id: &str,
        wait: Duration,
        change: impl FnOnce(&mut JobStatus) -> Result<Change>,
    ) -> Result<Option<Updated>> {
        let Some(lock) = self.lock_job_within(id, wait)? else {
            return Ok(None);
        };
        let status = self.read_status_raw(id)?;
        self.apply(Some(lock), status, change).map(Some)
    }

    /// [`update`](Self::update) for a reader that found a change to record (`seen`: the status
    /// it read): under the job lock when the store can be locked (a read-only one cannot, and
    /// nobody can write it either), on the status re-read, or `seen` when it cannot be read.
    pub(super) fn update_seen(
        &self,
        id: &str,
        seen: JobStatus,
        change: impl FnOnce(&mut JobStatus) -> Result<Change>,
    ) -> Result<Updated> {
        let lock = self.lock_job(id).ok();
        let status = match self.read_status_raw(id) {
            Ok(status) => status,
            Err(e) if e.code == ErrorCode::JobNotFound => return Err(e),
            Err(_) => seen,
        };
        self.apply(lock, status, change)
    }

    /// The change applied to `status`, written while `_lock` is held.
    fn apply(
        &self,
        _lock: Option<LockGuard>,
        status: JobStatus,
        change: impl FnOnce(&mut JobStatus) -> Result<Change>,
    ) -> Result<Updated> {
        if status.status == RunStatus::Finished {
            return Ok(Updated::Ended(status));
        }
        let mut changed = status.clone();
        if change(&mut changed)? == Change::Keep {
            return Ok(Updated::Kept(status));
        }
        let written = if changed.state.status() == RunStatus::Finished {
            self.write_end(&changed)
        } else {
            self.write_status(&changed)
        };
        Ok(match written {
            Ok(()) => Updated::Written(changed),
            Err(e) => Updated::Unwritten(changed, e),
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::Path;
    use std::process::Command;
    use std::sync::{Arc, Barrier};

    use super::*;
    use crate::jobs::outcome::Outcome;
    use crate::jobs::store::{JobSpec, new_id};

    /// A store at `root` with one job, `running` as its creator records it.
    pub(in crate::jobs::store) fn store_with_job(root: &Path) -> (JobStore, String) {
        let store = JobStore::open(root).unwrap();
        let id = new_id().to_string();
        let status: JobStatus = serde_json::from_value(serde_json::json!({
            "exec_id": id, "status": "running", "state": "running", "cmd": "c", "cwd": "/",
            "pid": null, "started_at": null, "finished_at": null, "exit_code": null,
            "signal": null, "duration_ms": null, "error": null,
            "created_at": "2026-01-01T00:00:00.000Z"
        }))
        .unwrap();
        let spec = JobSpec {
            argv: vec!["true".into()],
            cwd: "/".into(),
            env: Default::default(),
            script: None,
            grace_ms: 0,
            retention: 10,
            gpus: None,
        };
        store.stage_job(&status, &spec).unwrap().commit().unwrap();
        (store, id)
    }

    const LATER: &str = "2026-01-01T00:00:01.000Z";

    #[test]
    fn an_ended_job_is_refused_and_keep_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = store_with_job(dir.path());
        let kept = store
            .update(&id, |s| {
                s.cmd = "dropped".into();
                Ok(Change::Keep)
            })
            .unwrap();
        assert!(matches!(&kept, Updated::Kept(s) if s.cmd == "c"), "{kept:?}");
        assert_eq!(store.read_status_raw(&id).unwrap().cmd, "c");

        let ended = store
            .update(&id, |s| {
                s.finish(Outcome::Exited(0), LATER);
                Ok(Change::Write)
            })
            .unwrap();
        assert!(matches!(&ended, Updated::Written(s) if s.state == JobState::Succeeded));
        assert_eq!(store.read_status_raw(&id).unwrap().state, JobState::Succeeded);

        let mut ran = false;
        let again = store
            .update(&id, |s| {
                ran = true;
                s.finish(Outcome::Lost("late".into()), LATER);
                Ok(Change::Write)
            })
            .unwrap();
        assert!(!ran, "a change never runs on an ended job");
        assert!(matches!(&again, Updated::Ended(s) if s.state == JobState::Succeeded));
        assert_eq!(store.read_status_raw(&id).unwrap().state, JobState::Succeeded);
    }

    /// Two threads that each add one label to what they read: neither change is lost, so each
    /// read-modify-write ran whole under the lock, one after the other.
    #[test]
    fn concurrent_updates_are_serialized() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = store_with_job(dir.path());
        let rounds = 50;
        let start = Arc::new(Barrier::new(2));
        let threads: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|who| {
                let (store, id, start) = (store.clone(), id.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for i in 0..rounds {
                        let key = format!("{who}{i}");
                        let updated = store.update(&id, |s| {
                            s.labels.insert(key, String::new());
                            // Widen the window between read and write.
                            std::thread::yield_now();
                            Ok(Change::Write)
                        });
                        updated.unwrap().written().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(store.read_status_raw(&id).unwrap().labels.len(), 2 * rounds);
    }

    /// `lost` is an end: on a full disk it is recorded in the space `end.reserve` kept.
    #[test]
    fn lost_on_a_full_disk_is_written_in_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "mounting a tmpfs needs root");
            eprintln!("skipped: cannot mount a tmpfs (not root)");
            return;
        }
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = Command::new("umount").arg("-l").arg(self.0).status();
            }
        }
        let _unmount = Unmount(dir.path());
        let (store, id) = store_with_job(dir.path());
        let filler = dir.path().join("filler");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", filler.display()))
            .stderr(std::process::Stdio::null())
            .status();
        let plain = store.write_status(&store.read_status_raw(&id).unwrap());
        assert!(plain.is_err_and(|e| e.is_io(std::io::ErrorKind::StorageFull)), "the disk is full");

        let updated = store
            .update(&id, |s| {
                s.finish(Outcome::Lost("the worker died".into()), LATER);
                Ok(Change::Write)
            })
            .unwrap();
        assert!(matches!(updated, Updated::Written(_)), "{updated:?}");
        let stored = store.read_status_raw(&id).unwrap();
        assert_eq!(stored.state, JobState::Lost);
        assert!(stored.error.unwrap().contains("recorded in reserved space"));
        assert!(!dir.path().join("jobs").join(&id).join("end.reserve").exists());
    }
}
