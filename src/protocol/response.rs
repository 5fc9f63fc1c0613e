//! Answers: what codexd sends back, one JSON line each, tagged by `type`.

use serde::{Deserialize, Serialize};

use super::files::{FileData, FileList, FileStat, FileWritten, SyncDiff, TransferStats};
use super::gpus::GpuReport;
use super::logs::{LogChunk, LogLine, LogsEnd};
use super::request::JobRef;
use super::resources::Scheduler;
use super::status::JobStatus;
use crate::error::{Error, ErrorCode};

/// One finding of `doctor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoctorCheck {
    /// `ssh`, `codexd`, `data_dir`, `python`, `conda`, `pixi`, `nvidia-smi`, `git`, `rsync`, `rg`.
    pub name: String,
    pub ok: bool,
    /// A failed required check makes the report not ok; the others are information.
    pub required: bool,
    /// What was found (a version, free space, GPUs ...), or what went wrong.
    pub detail: String,
    /// What to do, for a failed check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// `doctor`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoctorReport {
    /// Every required check passed.
    pub ok: bool,
    pub checks: Vec<DoctorCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloResponse {
    pub protocol: u32,
    pub version: String,
    pub capabilities: Vec<String>,
    pub user: String,
    pub host: String,
    pub data_dir: String,
    /// Who runs its jobs: `local` or `slurm` (older codexds leave it out: `local`).
    #[serde(default)]
    pub scheduler: Scheduler,
}

/// `GET /health` of `codexd serve` (no token needed): the `hello` answer, who runs the daemon,
/// and with `?challenge=C` a fresh one-use `nonce` and the `nonce_proof` that it holds the token
/// (see `auth`). `user` and `uid` are what the server says about itself: bound into the proof,
/// information, never a reason to trust it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthResponse {
    pub ok: bool,
    /// Always `"codexd"`.
    pub service: String,
    #[serde(flatten)]
    pub hello: HelloResponse,
    pub uid: u32,
    pub pid: i32,
    /// The older proof `hex(HMAC-SHA256(token, challenge))`, for clients that then send the
    /// token as Bearer: only when a challenge was sent and the config has `allow_bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// A fresh nonce the next signed request names (accepted once, for a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// `hex(HMAC-SHA256(token, challenge, nonce, uid, user))` (`auth::health_proof`), only
    /// when a challenge was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce_proof: Option<String>,
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
    /// `exec_status` / `exec_wait`: where the job stands (the last lines and traceback).
    #[serde(flatten)]
    pub tails: LogTails,
}

/// The end of a job's logs in the terminal view, read from a bounded tail of each log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogTails {
    /// The last non-empty line of stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stdout: Option<String>,
    /// The last non-empty line of stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stderr: Option<String>,
    /// A failed job: the last Python traceback of stderr, whole (at most 4 KiB: its end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

impl StatusResponse {
    pub fn of(job: JobStatus) -> Self {
        StatusResponse {
            job,
            timed_out: None,
            replayed: None,
            message: None,
            tails: LogTails::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResponse {
    pub jobs: Vec<JobStatus>,
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
    Doctor(DoctorReport),
    /// `exec_resolve`'s answer: the whole id.
    Resolved(JobRef),
    Error(ErrorBody),
    FileWritten(FileWritten),
    FileData(FileData),
    FileStat(FileStat),
    FileList(FileList),
    SyncDiff(SyncDiff),
    SyncApplied(TransferStats),
    SyncSent(TransferStats),
    Gpus(GpuReport),
    /// Proof of life in a long answer, never final ([`capability::HEARTBEAT`]). A client that
    /// does not know the type skips the line, as any line it cannot read.
    Heartbeat(Heartbeat),
}

/// `{"type":"heartbeat"}`: nothing but the fact that codexd is still there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {}

impl Response {
    /// The `type` of this answer on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Hello(_) => "hello",
            Response::Status(_) => "status",
            Response::List(_) => "list",
            Response::Log(_) => "log",
            Response::Chunk(_) => "chunk",
            Response::LogsEnd(_) => "logs_end",
            Response::Removed(_) => "removed",
            Response::Pruned(_) => "pruned",
            Response::Doctor(_) => "doctor",
            Response::Resolved(_) => "resolved",
            Response::Error(_) => "error",
            Response::FileWritten(_) => "file_written",
            Response::FileData(_) => "file_data",
            Response::FileStat(_) => "file_stat",
            Response::FileList(_) => "file_list",
            Response::SyncDiff(_) => "sync_diff",
            Response::SyncApplied(_) => "sync_applied",
            Response::SyncSent(_) => "sync_sent",
            Response::Gpus(_) => "gpus",
            Response::Heartbeat(_) => "heartbeat",
        }
    }

    /// Whether this line ends the answer to its request (all but `log`, `chunk` and
    /// `heartbeat`).
    pub fn is_final(&self) -> bool {
        !matches!(self, Response::Log(_) | Response::Chunk(_) | Response::Heartbeat(_))
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
