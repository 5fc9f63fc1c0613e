//! The shapes `codex-remote` prints around the answers: the machine an answer came from, the
//! events of `exec run`, the summary of `exec watch`.

use serde::Serialize;

use super::logs::LogLine;
use super::response::StatusResponse;
use super::status::{JobState, JobStatus, RunStatus};

/// A value printed by `codex-remote` with the machine it came from: the value's own fields,
/// then `machine`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnMachine<'a, T> {
    #[serde(flatten)]
    pub value: T,
    /// Empty where there is no machine to name (codexd serve's `POST /v1/exec/run`).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub machine: &'a str,
}

impl<'a, T: Serialize> OnMachine<'a, T> {
    pub fn new(value: T, machine: &'a str) -> Self {
        OnMachine { value, machine }
    }

    /// As a JSON value (for MCP's `structuredContent` and the dashboard's answers).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("answers serialize")
    }
}

/// The NDJSON events of `codex-remote exec run`, one per line, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunEvent<'a> {
    /// The job was started: its status object.
    Started(OnMachine<'a, &'a StatusResponse>),
    /// One line of output (as `exec logs` prints it).
    Log(&'a LogLine),
    /// The job ended: its final status object.
    Finished(OnMachine<'a, &'a JobStatus>),
    /// Ctrl-C detached `exec run`; the job goes on.
    Detached { exec_id: &'a str, machine: &'a str, hint: &'a str },
    /// `exec watch`'s last line (the original tool's).
    Summary(OnMachine<'a, Summary<'a>>),
}

/// What `exec watch` ends with: the outcome of the job in the original tool's fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary<'a> {
    pub exec_id: &'a str,
    pub status: RunStatus,
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: Option<u64>,
    pub error: Option<&'a str>,
}

impl<'a> Summary<'a> {
    pub fn of(job: &'a JobStatus) -> Self {
        Summary {
            exec_id: &job.exec_id,
            status: job.status,
            state: job.state,
            exit_code: job.exit_code,
            signal: job.signal,
            duration_ms: job.duration_ms,
            error: job.error.as_deref(),
        }
    }
}
