//! The job store on disk: one directory per job under `<data_dir>/jobs/<id>/`.
//!
//! ```text
//! <data_dir>/store.lock          flock: creating jobs, idempotency keys, pruning
//! <data_dir>/keys/<key>          idempotency key -> job id, then the request's fingerprint
//!                                (a file of an older codexd has the id alone; a key whose job is missing is ignored)
//! <data_dir>/new/<id>/           a job being created, renamed into jobs/ whole (create.rs)
//! <data_dir>/trash/<name>/       removed jobs, deleted outside the store lock (prune.rs)
//! <data_dir>/jobs/<id>/status.json   the JobStatus, always replaced whole (temp + fsync + rename)
//! <data_dir>/jobs/<id>/spec.json     what the worker runs (argv, cwd, env): may hold secrets
//! <data_dir>/jobs/<id>/stdout.log, stderr.log
//! <data_dir>/jobs/<id>/end.reserve   space set aside to record the end on a full disk
//! <data_dir>/jobs/<id>/lock          flock: read-modify-write of status.json
//! <data_dir>/jobs/<id>/cancel        a cancel request (grace) for the worker
//! <data_dir>/gpus/                   who holds and who waits for which GPU (gpu_queue.rs)
//! ```
//! Directories are 0700 and files 0600: the logs hold the user's secrets. Readers never lock:
//! a rename makes a new status visible whole. Reads never need writes: a status that cannot be
//! updated (full disk, read-only file system) is answered with its derived state.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod settle;
mod update;
pub use settle::slurm_job_of;
pub use update::{Change, Updated};

use crate::error::{Context, Error, ErrorCode, Result};
use crate::lockfile::{self, LockGuard};
use crate::protocol::{ExecId, JobStatus, Stream};

/// The extra room (beyond the first status) that `end.reserve` keeps for the end's fields.
pub(super) const RESERVE_MARGIN: usize = 4096;

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
    /// The GPUs the job waits for before it runs (a machine without a scheduler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<super::gpu_ask::GpuAsk>,
}

/// A cancel request left for the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelFile {
    pub grace_ms: u64,
}

pub use crate::protocol::time::{millis_between, now_rfc3339};

/// A new time-sortable job id (UUID v7: its text sorts by creation time).
pub fn new_id() -> ExecId {
    ExecId::new_v7()
}

/// Checks that `id` is an id this store made; anything else (`../../etc`) is `invalid_id`.
pub fn validate_id(id: &str) -> Result<()> {
    ExecId::parse(id).map(drop)
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
    pub(super) fn parse(text: &str) -> Option<KeyRecord> {
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
        create_private_dir(&root)?;
        for dir in [root.join("jobs"), root.join("keys")] {
            create_subdir(&dir)?;
        }
        Ok(JobStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn jobs_dir(&self) -> PathBuf {
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
        if dir.join("status.json").is_file() { Ok(dir) } else { Err(job_not_found(id)) }
    }

    pub fn log_path(&self, id: &str, stream: Stream) -> Result<PathBuf> {
        Ok(self.job_dir(id)?.join(format!("{}.log", stream.as_str())))
    }

    /// Locks the whole store (job creation, keys, pruning).
    pub fn lock_store(&self) -> Result<LockGuard> {
        lockfile::lock(&self.root.join("store.lock"))
    }

    /// Locks one job's status for a read-modify-write.
    fn lock_job(&self, id: &str) -> Result<LockGuard> {
        lockfile::lock(&self.job_dir(id)?.join("lock"))
    }

    /// The job lock if it can be had within `wait`; `None` when someone holds it longer (a
    /// worker held up while it records the job's end). A cancel takes it this way: it never
    /// waits on a stuck worker.
    fn lock_job_within(&self, id: &str, wait: Duration) -> Result<Option<LockGuard>> {
        let path = self.job_dir(id)?.join("lock");
        let deadline = std::time::Instant::now() + wait;
        loop {
            match lockfile::try_lock(&path)? {
                Some(lock) => return Ok(Some(lock)),
                None if std::time::Instant::now() >= deadline => return Ok(None),
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    pub fn read_spec(&self, id: &str) -> Result<JobSpec> {
        read_json(&self.job_dir(id)?.join("spec.json"))
    }

    /// The status as stored, without checking the worker.
    pub fn read_status_raw(&self, id: &str) -> Result<JobStatus> {
        let dir = self.existing_job_dir(id)?;
        read_json(&dir.join("status.json"))
    }

    /// Replaces a job's status whole. Only [`update`](Self::update) changes a job's status.
    fn write_status(&self, status: &JobStatus) -> Result<()> {
        write_json_atomic(&self.job_dir(&status.exec_id)?.join("status.json"), status)
    }

    /// Records a job's end: as [`write_status`](Self::write_status), and on a full disk through
    /// the space `end.reserve` set aside when the job was created, noting why in `error`.
    fn write_end(&self, status: &JobStatus) -> Result<()> {
        match self.write_status(status) {
            Err(e) if e.is_io(io::ErrorKind::StorageFull) => {
                let mut status = status.clone();
                let note = "the disk of the job store is full (no space left on device): this end \
                            was recorded in reserved space; the logs may be cut short";
                status.error = Some(match status.error.take() {
                    Some(error) => format!("{error}; {note}"),
                    None => note.to_string(),
                });
                // The reserve has room for the end's fields, not for a long artifacts list.
                if status.artifacts.take().is_some() {
                    status.warning = Some("the artifacts list was not recorded: disk full".into());
                }
                self.write_end_into_reserve(&status).map_err(|_| e)
            }
            other => other,
        }
    }

    /// Overwrites `end.reserve` in place (its blocks are already allocated) and renames it over
    /// `status.json`: neither step needs free space.
    fn write_end_into_reserve(&self, status: &JobStatus) -> Result<()> {
        let dir = self.job_dir(&status.exec_id)?;
        let reserve = dir.join("end.reserve");
        let mut bytes = serde_json::to_vec(status).map_err(|e| Error::internal("encoding", e))?;
        let room = fs::metadata(&reserve).context(|| "reading end.reserve".into())?.len() as usize;
        if bytes.len() > room {
            return Err(Error::internal("recording the end", "the end does not fit end.reserve"));
        }
        // JSON allows trailing whitespace: pad to the reserve's size, so no block is added.
        bytes.resize(room, b' ');
        let what = || format!("writing {}", reserve.display());
        let mut f = OpenOptions::new().write(true).open(&reserve).context(what)?;
        f.write_all(&bytes).context(what)?;
        f.sync_all().context(what)?;
        fs::rename(&reserve, dir.join("status.json")).context(what)?;
        sync_dir(&dir).context(what)
    }

    /// Ids of all jobs, newest first.
    pub fn list_ids(&self) -> Result<Vec<ExecId>> {
        let dir = self.jobs_dir();
        let mut ids: Vec<ExecId> = fs::read_dir(&dir)
            .context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| ExecId::parse(e.ok()?.file_name().to_str()?).ok())
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
    /// The caller holds the store lock. A new key's file is written in place (it is one small
    /// write, and a creator killed before it commits has its key dropped by the next sweep);
    /// a key that names a job gone is replaced whole.
    pub fn record_key(&self, key: &str, id: &str, fingerprint: &str) -> Result<()> {
        validate_key(key)?;
        let text = format!("{id}\n{fingerprint}\n");
        let keys = self.root.join("keys");
        let path = keys.join(key);
        let what = || format!("recording idempotency key {key}");
        match write_new_file(&path, text.as_bytes(), 0o600) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return write_bytes_atomic(&path, text.as_bytes());
            }
            other => other.context(what)?,
        }
        sync_dir(&keys).context(what)
    }

    /// Leaves a cancel request for the worker.
    pub fn write_cancel(&self, id: &str, cancel: CancelFile) -> Result<()> {
        write_json_atomic(&self.job_dir(id)?.join("cancel"), &cancel)
    }

    pub fn read_cancel(&self, id: &str) -> Option<CancelFile> {
        read_json(&self.job_dir(id).ok()?.join("cancel")).ok()
    }
}

/// Where to look for a job that is not here.
const JOB_NOT_FOUND_HINT: &str = "list the jobs with `codex-remote exec list`; if the job ran \
                                  on another machine, pass --machine NAME";

/// `job_not_found`, with where to look instead.
pub fn job_not_found(id: &str) -> Error {
    Error::new(ErrorCode::JobNotFound, format!("no job {id}")).with_hint(JOB_NOT_FOUND_HINT)
}

/// Creates `dir` 0700, or tightens an existing one that is ours.
pub use crate::platform::create_private_dir;

/// Creates a directory of the store (0700) unless it exists. The store's root is checked to be
/// private and ours ([`create_private_dir`]): nobody else can have put anything inside it.
pub(super) fn create_subdir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(Error::internal(format!("creating {}", dir.display()), e))
        }
        _ => Ok(()),
    }
}

pub(super) fn create_private_file(path: &Path) -> Result<File> {
    private_file_options()
        .create(true)
        .append(true)
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
                .with_hint(JOB_NOT_FOUND_HINT)
        } else {
            Error::internal(format!("reading {}", path.display()), e)
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::internal(format!("parsing {}", path.display()), e))
}

/// Status files are written whole and durably (temp, fsync, rename, fsync the dir); a new file
/// is written and fsynced, its name made durable by syncing its directory.
pub use crate::platform::{
    private_file_options, sync_dir, write_bytes_atomic, write_json_atomic, write_new_file,
};
