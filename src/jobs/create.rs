//! Creating a job atomically: the job is built whole in `<data_dir>/new/<id>/` (logs, spec,
//! `end.reserve`, status) and renamed into `jobs/` in one step, so a kill at any instant leaves
//! either no job or a whole one.
//!
//! Staging happens only under the store lock, and the lock dies with its holder: a staged
//! directory that someone holding the store lock finds is abandoned (its creator was killed),
//! with no grace period to wait. [`JobStore::sweep_staging`] moves such directories to the
//! trash, and drops the idempotency key that may already point at them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::store::{
    JobSpec, JobStore, create_private_file, create_subdir, sync_dir, write_json_atomic,
    write_new_file,
};
use crate::error::{Context, Error, Result};
use crate::protocol::{JobStatus, Scheduler, Stream};

/// A job built in the staging dir, not yet visible.
#[derive(Debug)]
pub struct StagedJob<'a> {
    store: &'a JobStore,
    id: String,
    dir: PathBuf,
    committed: bool,
}

/// A job given up before its commit (a full disk, a failed key) leaves nothing behind.
impl Drop for StagedJob<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl StagedJob<'_> {
    /// Where the job is being built (its `worker.log` can be opened here already).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replaces the staged status (e.g. with a start failure found before the job is visible).
    pub fn write_status(&self, status: &JobStatus) -> Result<()> {
        write_json_atomic(&self.dir.join("status.json"), status)
    }

    /// Makes the job visible, whole: one rename into `jobs/`, then the rename made durable.
    pub fn commit(mut self) -> Result<()> {
        let target = self.store.job_dir(&self.id)?;
        let what = || format!("moving {} into place", self.dir.display());
        fs::rename(&self.dir, &target).context(what)?;
        self.committed = true;
        sync_dir(&self.store.jobs_dir()).context(what)
    }
}

impl JobStore {
    fn staging_dir(&self) -> PathBuf {
        self.root().join("new")
    }

    /// Builds the directory, logs, spec, end reserve and first status of a new job in the
    /// staging dir. The caller holds the store lock until it commits the job.
    pub fn stage_job(&self, status: &JobStatus, spec: &JobSpec) -> Result<StagedJob<'_>> {
        self.job_dir(&status.exec_id)?;
        create_subdir(&self.staging_dir())?;
        let dir = self.staging_dir().join(&status.exec_id);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .context(|| format!("creating {}", dir.display()))?;
        // From here a failure (a full disk) removes what was built, when `staged` is dropped.
        let staged = StagedJob {
            store: self,
            id: status.exec_id.to_string(),
            dir: dir.clone(),
            committed: false,
        };
        for stream in [Stream::Stdout, Stream::Stderr] {
            create_private_file(&dir.join(format!("{}.log", stream.as_str())))?;
        }
        let encode = |e| Error::internal("encoding", e);
        let spec_bytes = serde_json::to_vec_pretty(spec).map_err(encode)?;
        // Only a worker reads the spec. A local job's worker reads it within a moment, from
        // memory, and after a crash there is no worker left to read it (the job is lost); a
        // Slurm job's worker may start on a compute node long after a crash of this one.
        let later_reader = status.scheduler == Some(Scheduler::Slurm);
        write_new(&dir.join("spec.json"), &spec_bytes, later_reader)?;
        // Room to record the end without free space: the status as it is now, and a margin
        // for what the end adds. Not synced: after a crash the job is lost, its end recorded
        // by whoever finds it, and the reserve is only of use to a live worker.
        let mut status_bytes = serde_json::to_vec_pretty(status).map_err(encode)?;
        status_bytes.push(b'\n');
        let reserve = vec![b' '; status_bytes.len() + super::store::RESERVE_MARGIN];
        write_new(&dir.join("end.reserve"), &reserve, false)?;
        // Written in place, not through a temp file: nobody reads a staged job, and a kill
        // leaves the whole dir to the sweep.
        write_new(&dir.join("status.json"), &status_bytes, true)?;
        // The files' names made durable now, right after the status's fsync committed them
        // (on ext4 and XFS this one costs nothing more), not after the worker's log: that
        // would take a second commit before the rename's.
        let what = || format!("writing {}", dir.display());
        sync_dir(&dir).context(what)?;
        Ok(staged)
    }

    /// Moves every abandoned staged job to the trash and drops the idempotency key recorded for
    /// it. The caller holds the store lock. Returns how many were swept.
    pub fn sweep_staging(&self) -> Result<usize> {
        let dir = self.staging_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
        };
        let mut swept = 0;
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = fs::read(entry.path().join("status.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<JobStatus>(&b).ok())
                .and_then(|s| s.idempotency_key);
            if self.move_to_trash(&entry.path(), &name)? {
                swept += 1;
                if let Some(key) = key {
                    self.drop_key(&key, &name);
                }
            }
        }
        Ok(swept)
    }
}

/// Writes a new private file, and fsyncs it when `sync`.
fn write_new(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let what = || format!("writing {}", path.display());
    if sync {
        return write_new_file(path, bytes, 0o600).context(what);
    }
    create_private_file(path)?.write_all(bytes).context(what)
}
