//! Every type that crosses the wire between `codex-remote` and `codexd`, and nothing else.
//!
//! One JSON object per line. A request is `{"type": "...", "id": <any JSON>?, ...fields}`; every
//! answer line echoes the request's `id`. Each request gets exactly one *final* answer line;
//! `exec_logs` sends `log` (or `chunk`) lines before its final `logs_end`. Unknown fields are
//! ignored so that old and new peers keep talking; the `protocol` integer of `hello` says what a
//! peer speaks. `status.json` in the job store is the same [`JobStatus`] object.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode};

/// Bumped when a change would break an older peer.
pub const PROTOCOL_VERSION: u32 = 1;

/// What this codexd can do, reported by `hello`.
pub const CAPABILITIES: &[&str] =
    &["exec", "logs_follow", "logs_raw", "idempotency_key", "cancel_tree", "script", "prune"];

/// The request `type`s this version knows.
pub const REQUEST_TYPES: &[&str] = &[
    "hello",
    "exec_start",
    "exec_status",
    "exec_logs",
    "exec_cancel",
    "exec_wait",
    "exec_list",
    "exec_rm",
    "exec_prune",
];

/// A request, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    Hello(HelloRequest),
    ExecStart(ExecStartRequest),
    ExecStatus(JobRef),
    ExecLogs(LogsRequest),
    ExecCancel(CancelRequest),
    ExecWait(WaitRequest),
    ExecList(ListRequest),
    ExecRm(JobRef),
    ExecPrune(PruneRequest),
}

/// A request line: the request plus the caller's `id`, echoed in every answer line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestLine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<serde_json::Value>,
    #[serde(flatten)]
    pub request: Request,
}

impl RequestLine {
    /// Parses one request line, telling apart the three ways it can be wrong. The error carries
    /// the request's `id` when it could be read.
    pub fn parse(line: &[u8]) -> Result<RequestLine, Box<(Option<serde_json::Value>, Error)>> {
        let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
            Box::new((None, Error::new(ErrorCode::BadRequest, format!("not JSON: {e}"))))
        })?;
        let Some(obj) = value.as_object() else {
            let err = Error::new(ErrorCode::BadRequest, "a request is a JSON object");
            return Err(Box::new((None, err)));
        };
        let id = obj.get("id").cloned();
        let Some(kind) = obj.get("type").and_then(|t| t.as_str()).map(String::from) else {
            let err = Error::new(ErrorCode::BadRequest, "a request needs a string field `type`");
            return Err(Box::new((id, err)));
        };
        if !REQUEST_TYPES.contains(&kind.as_str()) {
            let msg = format!("unknown request type {kind:?}; known: {}", REQUEST_TYPES.join(", "));
            return Err(Box::new((id, Error::new(ErrorCode::UnknownType, msg))));
        }
        serde_json::from_value(value).map_err(|e| {
            let err = Error::new(ErrorCode::BadRequest, format!("invalid {kind} request: {e}"));
            Box::new((id, err))
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HelloRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
}

/// What to run: a shell command string (run by the shell) or an argv list (run directly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CommandSpec {
    Shell(String),
    Argv(Vec<String>),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecStartRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<CommandSpec>,
    /// The text of a script to run with the shell (from `--script FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// The shell that runs a string `cmd` or a script, e.g. `bash -lc` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// Working directory; `~` is the remote home, which is also the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// A retried start with the same key returns the first job instead of starting another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRef {
    pub exec_id: String,
}

/// Which log stream(s) to read.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum StreamSel {
    #[default]
    Stdout,
    Stderr,
    Both,
}

/// The two log streams of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

impl StreamSel {
    pub fn streams(self) -> &'static [Stream] {
        match self {
            StreamSel::Stdout => &[Stream::Stdout],
            StreamSel::Stderr => &[Stream::Stderr],
            StreamSel::Both => &[Stream::Stdout, Stream::Stderr],
        }
    }
}

/// A byte offset per stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOffsets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<u64>,
}

impl StreamOffsets {
    pub fn get(&self, stream: Stream) -> Option<u64> {
        match stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        }
    }

    pub fn set(&mut self, stream: Stream, offset: u64) {
        match stream {
            Stream::Stdout => self.stdout = Some(offset),
            Stream::Stderr => self.stderr = Some(offset),
        }
    }

    /// The offsets of a `since`/`since_stderr` pair as the CLI and the HTTP query give them:
    /// `since` is the offset of the first stream `sel` reads (stderr for `stderr`), and
    /// `since_stderr` the stderr offset when both are read. `None` when neither is given.
    pub fn from_since(
        sel: StreamSel,
        since: Option<u64>,
        since_stderr: Option<u64>,
    ) -> Option<Self> {
        match (since, since_stderr, sel) {
            (None, None, _) => None,
            (a, _, StreamSel::Stderr) => Some(StreamOffsets { stdout: None, stderr: a }),
            (a, b, _) => Some(StreamOffsets { stdout: a, stderr: b }),
        }
    }

    /// These offsets, with each stream `sel` reads and that has none starting at 0: a reader
    /// that wants everything (not codexd's default tail).
    pub fn or_start(self, sel: StreamSel) -> Self {
        let mut out = self;
        for &s in sel.streams() {
            out.set(s, self.get(s).unwrap_or(0));
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsRequest {
    pub exec_id: String,
    #[serde(default)]
    pub stream: StreamSel,
    /// Only the last N bytes (of what is after `since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<u64>,
    /// Only the last N lines (of what is after `since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail_lines: Option<u64>,
    /// Start at these byte offsets (the `next_offset` of an earlier answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<StreamOffsets>,
    /// Keep streaming until the job has finished.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow: bool,
    /// Send `chunk` lines with base64 bytes instead of `log` lines.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
    /// At most this many bytes per stream in this answer (`more` says there is more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub exec_id: String,
    /// Time between TERM and KILL, in milliseconds (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitRequest {
    pub exec_id: String,
    /// Give up after this many milliseconds (no limit when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PruneRequest {
    /// Keep this many newest finished jobs (default: the configured retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<usize>,
}

/// The two values existing clients rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Finished,
}

/// The outcome of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Lost,
    StartFailed,
}

impl JobState {
    pub fn status(self) -> RunStatus {
        if self == JobState::Running { RunStatus::Running } else { RunStatus::Finished }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Lost => "lost",
            JobState::StartFailed => "start_failed",
        }
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
            format!(
                "unknown state {s:?}: running, succeeded, failed, cancelled, lost, start_failed"
            )
        })
    }
}

/// The status of one job: `status.json` on disk and the `status` answer on the wire.
///
/// The fields up to `error` are always present (null when unknown), so scripts can rely on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub exec_id: String,
    pub status: RunStatus,
    pub state: JobState,
    /// The command as given (a string, or the argv joined for display).
    pub cmd: String,
    pub cwd: String,
    pub pid: Option<i32>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The argv the worker executed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub created_at: String,
    /// Start time of `pid` in clock ticks since boot (from /proc), to tell a reused pid apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_start_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// When a cancel was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloResponse {
    pub protocol: u32,
    pub version: String,
    pub capabilities: Vec<String>,
    pub user: String,
    pub host: String,
    pub data_dir: String,
}

/// A job's status as an answer, with what the request adds to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    #[serde(flatten)]
    pub job: JobStatus,
    /// `exec_wait` ran out of time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,
    /// `exec_start` found an earlier job with the same idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<bool>,
    /// A note for humans, e.g. "already finished; nothing to cancel".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl StatusResponse {
    pub fn of(job: JobStatus) -> Self {
        StatusResponse { job, timed_out: None, replayed: None, message: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResponse {
    pub jobs: Vec<JobStatus>,
}

/// One line of a log (without its newline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub stream: Stream,
    /// Byte offset of the line's first byte in the log.
    pub offset: u64,
    /// The text; invalid UTF-8 is replaced by U+FFFD (offsets stay exact).
    pub line: String,
    /// The piece has no newline yet (the job is still writing it, or it was cut at `max_bytes`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// Raw log bytes (`raw: true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogChunk {
    pub stream: Stream,
    pub offset: u64,
    pub data_b64: String,
}

/// The final answer of `exec_logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsEnd {
    pub exec_id: String,
    /// Where to continue (`since`) to get what comes next, per stream read.
    pub next_offset: StreamOffsets,
    /// The size of each stream read when the answer was made.
    pub size: StreamOffsets,
    /// `max_bytes` stopped the answer before the end of a log.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    pub status: RunStatus,
    pub state: JobState,
    pub exit_code: Option<i32>,
    /// The whole status of the job.
    pub job: JobStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemovedResponse {
    pub exec_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrunedResponse {
    pub removed: Vec<String>,
    pub kept: usize,
    /// Half-created jobs (left by a killed `exec_start`) swept away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swept_temp: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl From<Error> for ErrorBody {
    fn from(e: Error) -> Self {
        ErrorBody { code: e.code, message: e.message, hint: e.hint }
    }
}

impl From<ErrorBody> for Error {
    fn from(e: ErrorBody) -> Self {
        Error { code: e.code, message: e.message, hint: e.hint, io_kind: None }
    }
}

/// An answer, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Hello(HelloResponse),
    Status(StatusResponse),
    List(ListResponse),
    Log(LogLine),
    Chunk(LogChunk),
    LogsEnd(LogsEnd),
    Removed(RemovedResponse),
    Pruned(PrunedResponse),
    Error(ErrorBody),
}

impl Response {
    /// Whether this line ends the answer to its request (all but `log` and `chunk`).
    pub fn is_final(&self) -> bool {
        !matches!(self, Response::Log(_) | Response::Chunk(_))
    }
}

/// An answer line: the answer plus the request's `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseLine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<serde_json::Value>,
    #[serde(flatten)]
    pub response: Response,
}

/// What `codexd token` prints: the token TCP clients send, and whose daemon it is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub token: String,
    pub user: String,
    pub uid: u32,
}

/// Where `codexd serve` listens unless told otherwise (and where a tunnel points).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7337";
