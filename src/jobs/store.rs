//! The job store on disk: one directory per job under `<data_dir>/jobs/<id>/`.
//!
//! ```text
//! <data_dir>/store.lock          flock: creating jobs, idempotency keys, pruning
//! <data_dir>/keys/<key>          idempotency key -> job id, then the request's fingerprint
//!                                (a file of an older codexd has the id alone)
//! <data_dir>/jobs/<id>/status.json   the JobStatus, always replaced whole (temp + fsync + rename)
//! <data_dir>/jobs/<id>/spec.json     what the worker runs (argv, cwd, env): may hold secrets
//! <data_dir>/jobs/<id>/stdout.log, stderr.log
//! <data_dir>/jobs/<id>/lock          flock: read-modify-write of status.json
//! <data_dir>/jobs/<id>/cancel        a cancel request (grace) for the worker
//! ```
//! Directories are 0700 and files 0600: the logs hold the user's secrets. Readers never lock:
//! a rename makes a new status visible whole.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::kill::JobTree;
use super::outcome::Outcome;
use super::sys;
use crate::error::{Context, Error, ErrorCode, Result};
use crate::lockfile::{self, LockGuard};
use crate::protocol::{JobState, JobStatus, RunStatus, Stream};

/// A job whose worker has not recorded itself after this long is lost.
const WORKER_START_DEADLINE: Duration = Duration::from_secs(60);

/// What the worker runs; written once by `exec_start`, read by the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub argv: Vec<String>,
    pub cwd: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The script text to write to `<job>/script` before running `argv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// Grace between TERM and KILL for processes the job leaves behind.
    pub grace_ms: u64,
    /// How many finished jobs to keep when this one ends.
    pub retention: usize,
}

/// A cancel request left for the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelFile {
    pub grace_ms: u64,
}

/// The current time as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Milliseconds from `from` (RFC 3339) to `to` (RFC 3339, or now).
pub fn millis_between(from: &str, to: Option<&str>) -> Option<u64> {
    let from = humantime::parse_rfc3339(from).ok()?;
    let to = match to {
        Some(t) => humantime::parse_rfc3339(t).ok()?,
        None => SystemTime::now(),
    };
    Some(to.duration_since(from).unwrap_or_default().as_millis() as u64)
}

/// A new time-sortable job id (UUID v7: its text sorts by creation time).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

/// Checks that `id` is an id this store made; anything else (`../../etc`) is `invalid_id`.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = id.len() == 36
        && uuid::Uuid::try_parse(id)
            .is_ok_and(|u| u.get_version_num() == 7 && u.hyphenated().to_string() == id);
    if ok {
        Ok(())
    } else {
        Err(Error::new(ErrorCode::InvalidId, format!("{id:?} is not a job id")))
    }
}

/// What an idempotency key file says: the job, and the fingerprint of the request that started
/// it (`None` in a file written by a codexd from before fingerprints: such a key replays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub exec_id: String,
    pub fingerprint: Option<String>,
}

impl KeyRecord {
    /// The id on the first line, the fingerprint (if any) on the second.
    fn parse(text: &str) -> Option<KeyRecord> {
        let mut lines = text.lines().map(str::trim);
        let exec_id = lines.next().filter(|id| validate_id(id).is_ok())?.to_string();
        let fingerprint = lines.next().filter(|f| !f.is_empty()).map(str::to_string);
        Some(KeyRecord { exec_id, fingerprint })
    }
}

/// Checks an idempotency key: it names a file, so only a safe alphabet.
pub fn validate_key(key: &str) -> Result<()> {
    let ok = (1..=128).contains(&key.len())
        && key.as_bytes()[0].is_ascii_alphanumeric()
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "idempotency key {key:?}: 1-128 characters of A-Z a-z 0-9 . _ : -, starting with a \
             letter or digit"
        )))
    }
}

/// The job store rooted at a data dir.
#[derive(Debug, Clone)]
pub struct JobStore {
    root: PathBuf,
}

impl JobStore {
    /// Opens (creating, 0700) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in [root.clone(), root.join("jobs"), root.join("keys")] {
            create_private_dir(&dir)?;
        }
        Ok(JobStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn jobs_dir(&self) -> PathBuf {
        self.root.join("jobs")
    }

    /// The directory of job `id`, after validating the id.
    pub fn job_dir(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        Ok(self.jobs_dir().join(id))
    }

    /// The directory of an existing job, or `job_not_found`.
    pub fn existing_job_dir(&self, id: &str) -> Result<PathBuf> {
        let dir = self.job_dir(id)?;
        if dir.join("status.json").is_file() {
            Ok(dir)
        } else {
            Err(Error::new(ErrorCode::JobNotFound, format!("no job {id}")))
        }
    }

    pub fn log_path(&self, id: &str, stream: Stream) -> Result<PathBuf> {
        Ok(self.job_dir(id)?.join(format!("{}.log", stream.as_str())))
    }

    /// Locks the whole store (job creation, keys, pruning).
    pub fn lock_store(&self) -> Result<LockGuard> {
        lockfile::lock(&self.root.join("store.lock"))
    }

    /// Locks one job's status for a read-modify-write.
    pub fn lock_job(&self, id: &str) -> Result<LockGuard> {
        lockfile::lock(&self.job_dir(id)?.join("lock"))
    }

    /// Creates the directory, spec, first status and empty logs of a new job.
    /// The caller holds the store lock when it also records an idempotency key.
    pub fn create_job(&self, status: &JobStatus, spec: &JobSpec) -> Result<()> {
        let dir = self.job_dir(&status.exec_id)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .context(|| format!("creating {}", dir.display()))?;
        for stream in [Stream::Stdout, Stream::Stderr] {
            create_private_file(&dir.join(format!("{}.log", stream.as_str())))?;
        }
        // Nobody reads the new dir before status.json exists: the spec needs no rename.
        let spec_bytes =
            serde_json::to_vec_pretty(spec).map_err(|e| Error::internal("encoding", e))?;
        let mut f = create_private_file(&dir.join("spec.json"))?;
        f.write_all(&spec_bytes).context(|| format!("writing {}/spec.json", dir.display()))?;
        // status.json last: its presence is what makes the job exist for readers.
        write_json_atomic(&dir.join("status.json"), status)
    }

    pub fn read_spec(&self, id: &str) -> Result<JobSpec> {
        read_json(&self.job_dir(id)?.join("spec.json"))
    }

    /// The status as stored, without checking the worker.
    pub fn read_status_raw(&self, id: &str) -> Result<JobStatus> {
        let dir = self.existing_job_dir(id)?;
        read_json(&dir.join("status.json"))
    }

    /// Replaces a job's status whole.
    pub fn write_status(&self, status: &JobStatus) -> Result<()> {
        write_json_atomic(&self.job_dir(&status.exec_id)?.join("status.json"), status)
    }

    /// The status of a job as a reader should see it: a running job whose worker is gone is
    /// marked `lost` (for good, on disk), and a running job's `duration_ms` is filled in.
    pub fn status(&self, id: &str) -> Result<JobStatus> {
        let mut status = self.read_status_raw(id)?;
        if status.state == JobState::Running && lost_reason(&status).is_some() {
            status = self.mark_lost(id)?;
        }
        if status.state == JobState::Running {
            status.duration_ms = status.started_at.as_deref().and_then(|s| millis_between(s, None));
        }
        Ok(status)
    }

    /// Under the job lock, re-checks and records that a job's worker is gone. The job's remaining
    /// processes are killed: a job nobody watches must not hold a GPU forever.
    fn mark_lost(&self, id: &str) -> Result<JobStatus> {
        let _lock = self.lock_job(id)?;
        let mut status = self.read_status_raw(id)?;
        let Some(reason) = lost_reason(&status).filter(|_| status.state == JobState::Running)
        else {
            return Ok(status);
        };
        if let Some(worker_pid) = status.worker_pid
            && status.boot_id == sys::boot_id()
        {
            let tree = JobTree { worker_pid, worker_alive: false };
            tree.terminate(Duration::ZERO, false);
        }
        status.finish(Outcome::Lost(reason), &now_rfc3339());
        self.write_status(&status)?;
        Ok(status)
    }

    /// Ids of all jobs, newest first.
    pub fn list_ids(&self) -> Result<Vec<String>> {
        let dir = self.jobs_dir();
        let mut ids: Vec<String> = fs::read_dir(&dir)
            .context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| validate_id(name).is_ok())
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    /// The job recorded for an idempotency key, if any, with the fingerprint of its request.
    pub fn find_key(&self, key: &str) -> Result<Option<KeyRecord>> {
        validate_key(key)?;
        match fs::read_to_string(self.root.join("keys").join(key)) {
            Ok(text) => Ok(KeyRecord::parse(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::internal("reading idempotency key", e)),
        }
    }

    /// Records `key` for job `id`, started by the request with `fingerprint`.
    pub fn record_key(&self, key: &str, id: &str, fingerprint: &str) -> Result<()> {
        validate_key(key)?;
        let text = format!("{id}\n{fingerprint}\n");
        write_bytes_atomic(&self.root.join("keys").join(key), text.as_bytes())
    }

    /// Removes a finished job; a running one is `job_running`.
    pub fn remove(&self, id: &str) -> Result<()> {
        let _store = self.lock_store()?;
        self.remove_locked(id)?;
        self.drop_stale_keys()
    }

    fn remove_locked(&self, id: &str) -> Result<()> {
        let status = self.status(id)?;
        if status.status == RunStatus::Running {
            return Err(Error::new(ErrorCode::JobRunning, format!("job {id} is still running"))
                .with_hint("cancel it first: codex-remote exec cancel --id ID"));
        }
        let dir = self.job_dir(id)?;
        fs::remove_dir_all(&dir).context(|| format!("removing {}", dir.display()))
    }

    /// Keeps the newest `keep` finished jobs and removes the older ones; running jobs are never
    /// touched. Returns the removed ids.
    pub fn prune(&self, keep: usize) -> Result<Vec<String>> {
        let ids = self.list_ids()?;
        if ids.len() <= keep {
            return Ok(Vec::new());
        }
        let _store = self.lock_store()?;
        let mut finished = 0usize;
        let mut removed = Vec::new();
        for id in self.list_ids()? {
            let Ok(status) = self.status(&id) else {
                continue;
            };
            if status.status == RunStatus::Running {
                continue;
            }
            finished += 1;
            if finished > keep && self.remove_locked(&id).is_ok() {
                removed.push(id);
            }
        }
        if !removed.is_empty() {
            self.drop_stale_keys()?;
        }
        Ok(removed)
    }

    /// Removes idempotency keys whose job is gone. Called under the store lock.
    fn drop_stale_keys(&self) -> Result<()> {
        let dir = self.root.join("keys");
        let entries = fs::read_dir(&dir).context(|| format!("reading {}", dir.display()))?;
        for entry in entries.filter_map(|e| e.ok()) {
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            let gone = KeyRecord::parse(&text)
                .is_none_or(|record| !self.jobs_dir().join(record.exec_id).exists());
            if gone {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Leaves a cancel request for the worker.
    pub fn write_cancel(&self, id: &str, cancel: CancelFile) -> Result<()> {
        write_json_atomic(&self.job_dir(id)?.join("cancel"), &cancel)
    }

    pub fn read_cancel(&self, id: &str) -> Option<CancelFile> {
        read_json(&self.job_dir(id).ok()?.join("cancel")).ok()
    }
}

/// Why a running job's worker is not there any more, if it is not.
pub fn lost_reason(status: &JobStatus) -> Option<String> {
    let (Some(pid), Some(start)) = (status.worker_pid, status.worker_start_time) else {
        let age = millis_between(&status.created_at, None).unwrap_or(0);
        return (age > WORKER_START_DEADLINE.as_millis() as u64)
            .then(|| "the worker never started".to_string());
    };
    if status.boot_id.is_some() && status.boot_id != sys::boot_id() {
        return Some("the host rebooted while the job ran".to_string());
    }
    if sys::is_alive(pid, start) {
        return None;
    }
    Some(format!("the worker (pid {pid}) died without recording an end (killed, OOM or crash)"))
}

/// Creates `dir` 0700, or tightens an existing one that is ours.
pub use crate::platform::create_private_dir;

fn create_private_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .context(|| format!("creating {}", path.display()))
}

/// Opens a log for the job to append to.
pub fn open_log_for_append(path: &Path) -> Result<File> {
    create_private_file(path)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::new(ErrorCode::JobNotFound, format!("{} is missing", path.display()))
        } else {
            Error::internal(format!("reading {}", path.display()), e)
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::internal(format!("parsing {}", path.display()), e))
}

/// Status files are written whole and durably (temp, fsync, rename, fsync the dir).
pub use crate::platform::{write_bytes_atomic, write_json_atomic};
