//! A job's status as a reader sees it: a running job whose worker is gone is `lost`, a Slurm
//! job is read with Slurm's view, a job waiting for GPUs is `queued`. What can be recorded for
//! good (an end) is recorded through [`JobStore::update`]; what is a view of the moment
//! (`queued`, an end that cannot be written) is answered with the state the store holds in
//! `stored_state`.

use std::collections::HashMap;
use std::time::Duration;

use super::update::{Change, Updated};
use super::{JobStore, millis_between, now_rfc3339};
use crate::error::Result;
use crate::jobs::kill::JobTree;
use crate::jobs::outcome::Outcome;
use crate::jobs::slurm::{self, SlurmJob};
use crate::jobs::sys;
use crate::protocol::{ExecId, JobState, JobStatus, Scheduler};

/// A job whose worker has not recorded itself after this long, and of which no process lives,
/// is lost. `CODEXD_WORKER_START_DEADLINE_MS` overrides it (tests).
const WORKER_START_DEADLINE: Duration = Duration::from_secs(60);

fn worker_start_deadline() -> Duration {
    std::env::var("CODEXD_WORKER_START_DEADLINE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(WORKER_START_DEADLINE, Duration::from_millis)
}

/// What Slurm says of the jobs asked about ([`slurm::query`]).
type SlurmAnswer = std::result::Result<HashMap<String, SlurmJob>, String>;

impl JobStore {
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

    /// `status` (as stored) as a reader sees it; `stored_state` names the stored state when
    /// the answer's differs from it.
    fn settle(&self, id: &str, mut status: JobStatus, slurm: &SlurmAnswer) -> Result<JobStatus> {
        let mut stored = status.state;
        if status.state == JobState::Running {
            if let Some(slurm_job_id) = slurm_job_of(&status).map(str::to_string) {
                (status, stored) = self.settle_slurm(id, status, &slurm_job_id, slurm)?;
            } else if self.lost_reason(&status).is_some() {
                let settled = self.settle_lost(id, status)?;
                stored = settled.stored_state();
                status = settled.into_status();
            }
        }
        if status.state == JobState::Running {
            status.duration_ms = status.started_at.as_deref().and_then(|s| millis_between(s, None));
            // A job waiting for GPUs is recorded running (its worker runs) with the reason.
            if status.pid.is_none() && status.queue_reason.is_some() {
                status.state = JobState::Queued;
            }
        }
        status.stored_state = Some(stored).filter(|s| *s != status.state);
        Ok(status)
    }

    /// Records that a job's worker is gone, re-checked under the job lock. The job's remaining
    /// processes are ended first: a job nobody watches must not hold a GPU forever, and a job
    /// is never `lost` while a process of it lives. When the end cannot be written, it is
    /// still the answer.
    fn settle_lost(&self, id: &str, seen: JobStatus) -> Result<Updated> {
        let updated = self.update_seen(id, seen, |status| {
            let Some(reason) = self.lost_reason(status) else {
                return Ok(Change::Keep);
            };
            if !self.tree(status).terminate(Duration::ZERO, false) {
                return Ok(Change::Keep);
            }
            status.finish(Outcome::Lost(reason), &now_rfc3339());
            Ok(Change::Write)
        })?;
        if let Updated::Unwritten(_, e) = &updated {
            eprintln!("codexd: job {id} is lost, but that cannot be recorded: {e}");
        }
        Ok(updated)
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
        if sys::disk_full(self.root()) {
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

    /// A running Slurm job as Slurm sees it (`answer`: [`slurm::query`]'s, for this job and
    /// maybe others): `queued` with its reason, `running` on its node, or its end recorded for
    /// good when Slurm says it has ended and the worker has not recorded one (re-checked under
    /// the job lock). Slurm not answering leaves the job store's record, with a warning.
    /// Returns the status and the state the store holds.
    fn settle_slurm(
        &self,
        id: &str,
        mut status: JobStatus,
        slurm_job_id: &str,
        answer: &SlurmAnswer,
    ) -> Result<(JobStatus, JobState)> {
        let stored = status.state;
        let jobs = match answer {
            Ok(jobs) => jobs,
            Err(why) => {
                status.warning = Some(format!(
                    "Slurm cannot be asked ({why}): this is the job store's record, which may be \
                     behind"
                ));
                return Ok((status, stored));
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
                return Ok((status, stored));
            }
            slurm::SlurmView::Running => return Ok((status, stored)),
            slurm::SlurmView::Ended(outcome) => outcome,
        };
        let updated = self.update_seen(id, status, |now| {
            // What the job left on this node (when it ran here) ends with it.
            self.tree(now).terminate(Duration::ZERO, false);
            now.node = now.node.take().or_else(|| job.and_then(|j| j.node.clone()));
            now.finish(outcome, &now_rfc3339());
            Ok(Change::Write)
        })?;
        if let Updated::Unwritten(_, e) = &updated {
            eprintln!("codexd: job {id} ended in Slurm, but that cannot be recorded: {e}");
        }
        let stored = updated.stored_state();
        Ok((updated.into_status(), stored))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::store::update::tests::store_with_job;

    /// A job waiting for GPUs is stored `running` (its worker runs) and answered `queued`: the
    /// answer names the state stored.
    #[test]
    fn a_derived_queued_names_the_stored_state() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = store_with_job(dir.path());
        let me = sys::current_pid();
        let start = sys::proc_stat(me).unwrap().start_time;
        let waiting = store.update(&id, |s| {
            (s.worker_pid, s.worker_start_time) = (Some(me), Some(start));
            s.queue_reason = Some("waiting for 1 free GPU".into());
            Ok(Change::Write)
        });
        waiting.unwrap().written().unwrap();
        let answer = store.status(&id).unwrap();
        assert_eq!(
            (answer.state, answer.stored_state),
            (JobState::Queued, Some(JobState::Running))
        );
        assert_eq!(store.read_status_raw(&id).unwrap().state, JobState::Running);
        let text = serde_json::to_value(&answer).unwrap();
        assert_eq!(text["stored_state"], "running", "{text}");
        // A state the store holds is answered without `stored_state`.
        let running = store.update(&id, |s| {
            s.queue_reason = None;
            Ok(Change::Write)
        });
        running.unwrap().written().unwrap();
        let answer = store.status(&id).unwrap();
        assert_eq!((answer.state, answer.stored_state), (JobState::Running, None));
    }
}
