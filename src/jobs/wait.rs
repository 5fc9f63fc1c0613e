//! Waiting for a job: polling a condition with a deadline and a growing interval, and waiting
//! until a job has finished (`exec_wait`, and `exec_cancel` after it has asked).

use std::time::{Duration, Instant};

use super::store::JobStore;
use crate::error::Result;
use crate::protocol::{JobStatus, RunStatus};

/// The first and the longest pause between two polls.
const FIRST_POLL: Duration = Duration::from_millis(5);
const LONGEST_POLL: Duration = Duration::from_millis(100);
/// How often a wait asks Slurm about a Slurm job.
const SLURM_POLL: Duration = Duration::from_secs(1);

/// Waits up to `timeout` (forever when `None`) for `cond`, polling with a growing interval.
/// Returns whether `cond` held.
pub fn poll_until(
    timeout: Option<Duration>,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<bool> {
    let start = Instant::now();
    let mut interval = FIRST_POLL;
    loop {
        if cond()? {
            return Ok(true);
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            return Ok(false);
        }
        std::thread::sleep(interval);
        interval = (interval * 2).min(LONGEST_POLL);
    }
}

/// Waits up to `timeout` for job `id` to finish; `give_up` is asked before each look (e.g. the
/// client went away) and its error ends the wait. Returns the last status seen and whether the
/// job had finished.
pub fn wait_finished(
    store: &JobStore,
    id: &str,
    timeout: Option<Duration>,
    mut give_up: impl FnMut() -> Result<()>,
) -> Result<(JobStatus, bool)> {
    let mut last = None;
    let mut asked_slurm: Option<Instant> = None;
    let ended = poll_until(timeout, || {
        give_up()?;
        // A Slurm job's file is watched at every poll (the worker records the end there) and
        // Slurm asked only now and then: one `squeue` per poll would load slurmctld.
        if let Some(seen) = &last
            && super::store::slurm_job_of(seen).is_some()
            && asked_slurm.is_some_and(|t| t.elapsed() < SLURM_POLL)
            && store.read_status_raw(id)?.status == RunStatus::Running
        {
            return Ok(false);
        }
        let status = store.status(id)?;
        asked_slurm = Some(Instant::now());
        let done = status.status == RunStatus::Finished;
        last = Some(status);
        Ok(done)
    })?;
    Ok((last.expect("polled at least once"), ended))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_until_the_condition_holds_or_time_runs_out() {
        let mut n = 0;
        assert!(
            poll_until(None, || Ok({
                n += 1;
                n == 3
            }))
            .unwrap()
        );
        assert_eq!(n, 3);
        assert!(!poll_until(Some(Duration::from_millis(20)), || Ok(false)).unwrap());
    }
}
