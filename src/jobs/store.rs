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

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::kill::JobTree;
use super::outcome::Outcome;
use super::slurm::{self, SlurmJob};
use super::sys;
use crate::error::{Context, Error, ErrorCode, Result};
use crate::lockfile::{self, LockGuard};
use crate::protocol::{ExecId, JobState, JobStatus, Scheduler, Stream};

/// A job whose worker has not recorded itself after this long, and of which no process lives,
/// is lost. `CODEXD_WORKER_START_DEADLINE_MS` overrides it (tests).
const WORKER_START_DEADLINE: Duration = Duration::from_secs(60);

fn worker_start_deadline() -> Duration {
    std::env::var("CODEXD_WORKER_START_DEADLINE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(WORKER_START_DEADLINE, Duration::from_millis)
}

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
    pub fn lock_job(&self, id: &str) -> Result<LockGuard> {
        lockfile::lock(&self.job_dir(id)?.join("lock"))
    }

    /// The job lock if it can be had within `wait`; `None` when someone holds it longer (a
    /// worker held up while it records the job's end). A cancel takes it this way: it never
    /// waits on a stuck worker.
    pub fn lock_job_within(&self, id: &str, wait: Duration) -> Result<Option<LockGuard>> {
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

    /// Replaces a job's status whole.
    pub fn write_status(&self, status: &JobStatus) -> Result<()> {
        write_json_atomic(&self.job_dir(&status.exec_id)?.join("status.json"), status)
    }

    /// Records a job's end: as [`write_status`](Self::write_status), and on a full disk through
    /// the space `end.reserve` set aside when the job was created, noting why in `error`.
    pub fn write_end(&self, status: &JobStatus) -> Result<()> {
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
        File::open(&dir).and_then(|d| d.sync_all()).context(what)
    }

    /// The status of a job as a reader should see it: a running job whose worker is gone is
    /// `lost` (recorded for good when the store can be written, else derived for this answer),
    /// and a running job's `duration_ms` is filled in.
    /// A Slurm job is read with Slurm's view ([`super::slurm`]): `queued`, or its end.
    pub fn status(&self, id: &str) -> Result<JobStatus> {
        let status = self.read_status_raw(id)?;
        let slurm = ask_slurm(std::slice::from_ref(&status));
        self.settle(id, status, &slurm)
    }

    /// The status of a job just started, as its creator recorded it, settled as
    /// [`status`](Self::status) would but without asking Slurm: `sbatch` has just accepted a
    /// Slurm job, so it is pending (Slurm places jobs at its next pass), and one Slurm command
    /// per start is the whole of its cost.
    pub fn status_just_started(&self, status: JobStatus) -> Result<JobStatus> {
        let id = status.exec_id.clone();
        let pending = slurm_job_of(&status).map(|slurm_job_id| {
            let job = SlurmJob { state: "PENDING".into(), reason: None, node: None };
            (slurm_job_id.to_string(), job)
        });
        self.settle(&id, status, &Ok(pending.into_iter().collect()))
    }

    /// The statuses of jobs `ids` as [`status`](Self::status) reads them, asking Slurm once
    /// for all of them. A job that cannot be read (removed meanwhile) is left out.
    pub fn statuses(&self, ids: &[ExecId]) -> Vec<JobStatus> {
        let raw: Vec<JobStatus> =
            ids.iter().filter_map(|id| self.read_status_raw(id).ok()).collect();
        let slurm = ask_slurm(&raw);
        raw.into_iter()
            .filter_map(|s| {
                let id = s.exec_id.clone();
                self.settle(&id, s, &slurm).ok()
            })
            .collect()
    }

    fn settle(&self, id: &str, mut status: JobStatus, slurm: &SlurmAnswer) -> Result<JobStatus> {
        if status.state == JobState::Running {
            if let Some(slurm_job_id) = slurm_job_of(&status).map(str::to_string) {
                status = self.settle_slurm(id, status, &slurm_job_id, slurm)?;
            } else if self.lost_reason(&status).is_some() {
                status = self.settle_lost(id, status)?;
            }
        }
        if status.state == JobState::Running {
            status.duration_ms = status.started_at.as_deref().and_then(|s| millis_between(s, None));
            // A job waiting for GPUs is recorded running (its worker runs) with the reason.
            if status.pid.is_none() && status.queue_reason.is_some() {
                status.state = JobState::Queued;
            }
        }
        Ok(status)
    }

    /// Under the job lock (when the store can be locked), re-checks and records that a job's
    /// worker is gone. The job's remaining processes are ended first: a job nobody watches must
    /// not hold a GPU forever, and a job is never `lost` while a process of it lives. When the
    /// end cannot be written, it is still the answer.
    fn settle_lost(&self, id: &str, seen: JobStatus) -> Result<JobStatus> {
        let (_lock, mut status) = self.lock_and_reread(id, seen)?;
        if status.state != JobState::Running {
            return Ok(status);
        }
        let Some(reason) = self.lost_reason(&status) else {
            return Ok(status);
        };
        if !self.tree(&status).terminate(Duration::ZERO, false) {
            return Ok(status);
        }
        status.finish(Outcome::Lost(reason), &now_rfc3339());
        if let Err(e) = self.write_status(&status) {
            eprintln!("codexd: job {id} is lost, but that cannot be recorded: {e}");
        }
        Ok(status)
    }

    /// The job lock (when the store can be locked: a read-only one cannot, and nobody can
    /// write it either) and the status read under it; `seen` when it cannot be read.
    pub(super) fn lock_and_reread(
        &self,
        id: &str,
        seen: JobStatus,
    ) -> Result<(Option<LockGuard>, JobStatus)> {
        let lock = self.lock_job(id).ok();
        match self.read_status_raw(id) {
            Ok(status) => Ok((lock, status)),
            Err(e) if e.code == ErrorCode::JobNotFound => Err(e),
            Err(_) => Ok((lock, seen)),
        }
    }

    /// Why a running job's worker is not there any more, if it is not.
    pub fn lost_reason(&self, status: &JobStatus) -> Option<String> {
        let (Some(pid), Some(start)) = (status.worker_pid, status.worker_start_time) else {
            let age = millis_between(&status.created_at, None).unwrap_or(0);
            if age <= worker_start_deadline().as_millis() as u64 || self.tree(status).alive() {
                return None;
            }
            return Some("the worker never started".to_string());
        };
        if status.boot_id.is_some() && status.boot_id != sys::boot_id() {
            return Some("the host rebooted while the job ran".to_string());
        }
        if sys::is_alive(pid, start) {
            return None;
        }
        let mut reason =
            format!("the worker (pid {pid}) died without recording an end (killed, OOM or crash)");
        if sys::disk_full(&self.root) {
            reason.push_str("; the disk of the job store is full (no space left on device)");
        }
        Some(reason)
    }

    /// The processes of a job, as its status names its worker.
    pub fn tree<'a>(&self, status: &'a JobStatus) -> JobTree<'a> {
        let worker = status.worker_pid.zip(status.worker_start_time);
        // A worker recorded before a reboot names nothing now.
        let worker =
            worker.filter(|_| status.boot_id.is_none() || status.boot_id == sys::boot_id());
        JobTree { exec_id: &status.exec_id, worker }
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
        let mut file =
            match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return write_bytes_atomic(&path, text.as_bytes());
                }
                Err(e) => return Err(Error::io(what(), e)),
            };
        file.write_all(text.as_bytes()).context(what)?;
        file.sync_all().context(what)?;
        File::open(&keys).and_then(|d| d.sync_all()).context(what)
    }

    /// Leaves a cancel request for the worker.
    pub fn write_cancel(&self, id: &str, cancel: CancelFile) -> Result<()> {
        write_json_atomic(&self.job_dir(id)?.join("cancel"), &cancel)
    }

    pub fn read_cancel(&self, id: &str) -> Option<CancelFile> {
        read_json(&self.job_dir(id).ok()?.join("cancel")).ok()
    }
}

impl JobStore {
    /// A running Slurm job as Slurm sees it (`answer`: [`query`]'s, for this job and maybe
    /// others): `queued` with its reason, `running` on its node, or its end recorded for good
    /// when Slurm says it has ended and the worker has not recorded one (re-checked under the
    /// job lock). Slurm not answering leaves the job store's record, with a warning.
    pub fn settle_slurm(
        &self,
        id: &str,
        mut status: JobStatus,
        slurm_job_id: &str,
        answer: &std::result::Result<HashMap<String, SlurmJob>, String>,
    ) -> Result<JobStatus> {
        let jobs = match answer {
            Ok(jobs) => jobs,
            Err(why) => {
                status.warning = Some(format!(
                    "Slurm cannot be asked ({why}): this is the job store's record, which may be \
                     behind"
                ));
                return Ok(status);
            }
        };
        let job = jobs.get(slurm_job_id);
        if status.node.is_none() {
            status.node = job.and_then(|j| j.node.clone());
        }
        let outcome = match slurm::view(slurm_job_id, job, status.worker_pid.is_some()) {
            slurm::SlurmView::Queued(reason) => {
                status.state = JobState::Queued;
                status.queue_reason = reason;
                return Ok(status);
            }
            slurm::SlurmView::Running => return Ok(status),
            slurm::SlurmView::Ended(outcome) => outcome,
        };
        let (_lock, mut now) = self.lock_and_reread(id, status)?;
        if now.state != JobState::Running {
            return Ok(now);
        }
        // What the job left on this node (when it ran here) ends with it.
        self.tree(&now).terminate(Duration::ZERO, false);
        now.node = now.node.or_else(|| job.and_then(|j| j.node.clone()));
        now.finish(outcome, &now_rfc3339());
        if let Err(e) = self.write_end(&now) {
            eprintln!("codexd: job {id} ended in Slurm, but that cannot be recorded: {e}");
        }
        Ok(now)
    }
}

/// What Slurm says of the jobs asked about ([`slurm::query`]).
type SlurmAnswer = std::result::Result<HashMap<String, SlurmJob>, String>;

/// The Slurm job of a running job that Slurm placed, whose end Slurm's view decides.
pub fn slurm_job_of(status: &JobStatus) -> Option<&str> {
    let placed = status.scheduler == Some(Scheduler::Slurm)
        && matches!(status.state, JobState::Running | JobState::Queued);
    status.slurm_job_id.as_deref().filter(|_| placed)
}

/// Asks Slurm about the Slurm jobs among `statuses` (not at all when there are none).
fn ask_slurm(statuses: &[JobStatus]) -> SlurmAnswer {
    let ids: Vec<&str> = statuses.iter().filter_map(slurm_job_of).collect();
    slurm::query(&ids)
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
                .with_hint(JOB_NOT_FOUND_HINT)
        } else {
            Error::internal(format!("reading {}", path.display()), e)
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::internal(format!("parsing {}", path.display()), e))
}

/// Status files are written whole and durably (temp, fsync, rename, fsync the dir).
pub use crate::platform::{write_bytes_atomic, write_json_atomic};
