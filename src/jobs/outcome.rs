//! How a job ends, written in one place: [`JobStatus::finish`] sets the state, the derived
//! `status`, `finished_at`, `duration_ms`, `error`, `exit_code` and `signal` from an [`Outcome`].

use super::sys::Exit;
use crate::protocol::time::millis_between;
use crate::protocol::{JobState, JobStatus};

/// The end of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The job exited with this code (0 is `succeeded`, anything else `failed`).
    Exited(i32),
    /// The job was killed by this signal (`failed`).
    Signalled(i32),
    /// A cancel ended the job; its own exit when it had started.
    Cancelled(Option<Exit>),
    /// The scheduler ended the job, for this reason (a time limit, out of memory): `failed`.
    Failed(String),
    /// The job could not start, for this reason.
    StartFailed(String),
    /// The job's worker went away without recording an end, for this reason.
    Lost(String),
}

impl Outcome {
    /// The outcome of a job that ended by itself with `exit`.
    pub fn of_exit(exit: Exit) -> Outcome {
        match exit {
            Exit::Code(code) => Outcome::Exited(code),
            Exit::Signal(sig) => Outcome::Signalled(sig),
        }
    }
}

impl JobStatus {
    /// Records the end of the job at `now` (RFC 3339). A job that never started gets `now` as
    /// its start, so its duration is 0.
    pub fn finish(&mut self, outcome: Outcome, now: &str) {
        let (state, exit, error) = match outcome {
            Outcome::Exited(0) => (JobState::Succeeded, Some(Exit::Code(0)), None),
            Outcome::Exited(code) => (JobState::Failed, Some(Exit::Code(code)), None),
            Outcome::Signalled(sig) => (JobState::Failed, Some(Exit::Signal(sig)), None),
            Outcome::Cancelled(exit) => (JobState::Cancelled, exit, None),
            Outcome::Failed(reason) => (JobState::Failed, None, Some(reason)),
            Outcome::StartFailed(reason) => {
                self.started_at.get_or_insert_with(|| now.to_string());
                (JobState::StartFailed, None, Some(reason))
            }
            Outcome::Lost(reason) => (JobState::Lost, None, Some(reason)),
        };
        if let Some(exit) = exit {
            (self.exit_code, self.signal) = match exit {
                Exit::Code(code) => (Some(code), None),
                Exit::Signal(sig) => (None, Some(sig)),
            };
        }
        self.state = state;
        self.queue_reason = None;
        self.status = state.status();
        self.error = error;
        self.duration_ms = self.started_at.as_deref().and_then(|s| millis_between(s, Some(now)));
        self.finished_at = Some(now.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RunStatus;

    fn running() -> JobStatus {
        serde_json::from_value(serde_json::json!({
            "exec_id": "019a0000-0000-7000-8000-000000000000", "status": "running", "state": "running", "cmd": "c", "cwd": "/",
            "pid": null, "started_at": "2026-01-01T00:00:00.000Z", "finished_at": null,
            "exit_code": null, "signal": null, "duration_ms": null, "error": null,
            "created_at": "2026-01-01T00:00:00.000Z"
        }))
        .unwrap()
    }

    const LATER: &str = "2026-01-01T00:00:01.500Z";

    #[test]
    fn every_outcome_sets_state_status_and_times_together() {
        let cases = [
            (Outcome::Exited(0), JobState::Succeeded, Some(0), None, None),
            (Outcome::Exited(3), JobState::Failed, Some(3), None, None),
            (Outcome::Signalled(9), JobState::Failed, None, Some(9), None),
            (Outcome::Cancelled(Some(Exit::Signal(15))), JobState::Cancelled, None, Some(15), None),
            (Outcome::Cancelled(None), JobState::Cancelled, None, None, None),
            (Outcome::Failed("TIMEOUT".into()), JobState::Failed, None, None, Some("TIMEOUT")),
            (Outcome::StartFailed("no".into()), JobState::StartFailed, None, None, Some("no")),
            (Outcome::Lost("gone".into()), JobState::Lost, None, None, Some("gone")),
        ];
        for (outcome, state, code, signal, error) in cases {
            let mut s = running();
            s.finish(outcome.clone(), LATER);
            assert_eq!((s.state, s.status), (state, RunStatus::Finished), "{outcome:?}");
            assert_eq!((s.exit_code, s.signal, s.error.as_deref()), (code, signal, error));
            assert_eq!((s.finished_at.as_deref(), s.duration_ms), (Some(LATER), Some(1500)));
        }
    }

    #[test]
    fn a_job_that_never_started_lasted_nothing() {
        let mut s = running();
        s.started_at = None;
        s.finish(Outcome::StartFailed("cwd".into()), LATER);
        assert_eq!((s.started_at.as_deref(), s.duration_ms), (Some(LATER), Some(0)));
        let mut s = running();
        s.started_at = None;
        s.finish(Outcome::Lost("never started".into()), LATER);
        assert_eq!((s.started_at, s.duration_ms), (None, None));
    }
}
