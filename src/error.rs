//! The one error type of the library, its stable `code` strings and the exit-code table.
//!
//! Codes cross the wire (`{"type":"error","code":"job_not_found",...}`) and are documented in the
//! README: they are never renamed. Exit codes are the process contract for scripts.

use serde::{Deserialize, Serialize};

/// Process exit codes, shared by both binaries (README "Exit codes").
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// `exec run`: the job itself failed without an exit code of its own (lost).
    pub const JOB_FAILED: u8 = 1;
    /// Bad command line or configuration (including an unknown machine).
    pub const USAGE: u8 = 2;
    /// ssh or the transport failed, or the remote `codexd` is missing or spoke garbage.
    pub const TRANSPORT: u8 = 3;
    /// The remote side refused the request (not found, invalid, start failed, ...).
    pub const REMOTE: u8 = 4;
    /// `exec wait --timeout` ran out while the job was still running.
    pub const TIMED_OUT: u8 = 124;
    /// `exec run` was detached with Ctrl-C; the job goes on.
    pub const DETACHED: u8 = 130;
}

/// The stable error codes. Unknown codes from a newer peer deserialize as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request line is not valid JSON, or a field has the wrong type.
    BadRequest,
    /// The request line is longer than the cap.
    RequestTooLarge,
    /// The request `type` is not one this codexd knows.
    UnknownType,
    /// The job id is not a valid id (never used as a path).
    InvalidId,
    /// A field has a value that cannot be used (empty cmd, bad env name, ...).
    InvalidArgument,
    /// No job with that id.
    JobNotFound,
    /// The operation needs a finished job.
    JobRunning,
    /// The job could not start (bad cwd, shell missing).
    StartFailed,
    /// An I/O or other failure on the server.
    Internal,
    /// `--machine` names no configured machine.
    UnknownMachine,
    /// The config file cannot be read or parsed.
    ConfigError,
    /// The command line is wrong.
    Usage,
    /// ssh itself failed (connection, auth, refused destination).
    SshFailed,
    /// An HTTP machine's `codexd serve` could not be reached (refused, timed out, cut off).
    ConnectFailed,
    /// ssh worked but the remote `codexd` command is missing.
    CodexdNotFound,
    /// The peer answered something that is not the protocol.
    ProtocolError,
    /// The remote codexd speaks another protocol version than this codex-remote.
    ProtocolMismatch,
    /// A wait ran out of time.
    Timeout,
    /// `codexd serve`: the token is missing or wrong.
    Unauthorized,
    /// `codexd serve`: the request is refused (a `Host` not allowed, a cwd outside the roots).
    Forbidden,
    /// `update`: the downloaded binary does not match its `SHA256SUMS` line.
    ChecksumMismatch,
    /// The port is served by a codexd of another user (or something that is not codexd).
    ForeignDaemon,
    /// An idempotency key already used by a different request (the message names its job).
    IdempotencyConflict,
    /// `file_read`/`file_stat` parent, `file_ls`: no such file or directory on the machine.
    FileNotFound,
    /// A file over codexd's `max_file_size`.
    FileTooLarge,
    /// The receiving side's disk (or quota) is full; files already there are left intact.
    NoSpace,
    /// The machine's scheduler cannot be used (`sbatch` missing on a `scheduler: slurm` codexd).
    SchedulerUnavailable,
    /// A code this version does not know (sent by a newer peer).
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// The exit code a command ends with when it fails with this code.
    pub fn exit_code(self) -> u8 {
        use ErrorCode::*;
        match self {
            UnknownMachine | ConfigError | Usage => exit::USAGE,
            SshFailed | ConnectFailed | CodexdNotFound | ProtocolError | ProtocolMismatch
            | Unauthorized | ForeignDaemon => exit::TRANSPORT,
            Timeout => exit::TIMED_OUT,
            BadRequest | RequestTooLarge | UnknownType | InvalidId | InvalidArgument
            | JobNotFound | JobRunning | StartFailed | Internal | Forbidden | ChecksumMismatch
            | IdempotencyConflict | FileNotFound | FileTooLarge | NoSpace
            | SchedulerUnavailable | Other => exit::REMOTE,
        }
    }

    /// The HTTP status that carries this code, for `codexd serve` and the dashboard alike (the
    /// one table; README "HTTP API" lists codexd's). A peer that failed upstream (ssh, codexd
    /// unreachable or foreign) is 502, one that answered too late 504.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            BadRequest | UnknownType | InvalidId | InvalidArgument | Usage => 400,
            Unauthorized => 401,
            Forbidden => 403,
            JobNotFound | FileNotFound | UnknownMachine => 404,
            JobRunning => 409,
            RequestTooLarge | FileTooLarge => 413,
            // As the IETF Idempotency-Key draft answers a key reused with another payload.
            IdempotencyConflict => 422,
            NoSpace => 507,
            SshFailed | ConnectFailed | CodexdNotFound | ProtocolMismatch | ForeignDaemon => 502,
            Timeout => 504,
            Internal | StartFailed | ConfigError | ProtocolError | ChecksumMismatch
            | SchedulerUnavailable | Other => 500,
        }
    }

    /// The wire string of this code.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadRequest => "bad_request",
            RequestTooLarge => "request_too_large",
            UnknownType => "unknown_type",
            InvalidId => "invalid_id",
            InvalidArgument => "invalid_argument",
            JobNotFound => "job_not_found",
            JobRunning => "job_running",
            StartFailed => "start_failed",
            Internal => "internal",
            UnknownMachine => "unknown_machine",
            ConfigError => "config_error",
            Usage => "usage",
            SshFailed => "ssh_failed",
            ConnectFailed => "connect_failed",
            CodexdNotFound => "codexd_not_found",
            ProtocolError => "protocol_error",
            ProtocolMismatch => "protocol_mismatch",
            Timeout => "timeout",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            ForeignDaemon => "foreign_daemon",
            ChecksumMismatch => "checksum_mismatch",
            IdempotencyConflict => "idempotency_conflict",
            FileNotFound => "file_not_found",
            FileTooLarge => "file_too_large",
            NoSpace => "no_space",
            SchedulerUnavailable => "scheduler_unavailable",
            Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a stable code, a human message and an optional hint on what to do next.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    pub hint: Option<String>,
    /// The kind of the I/O error behind an `internal` error (never on the wire), so a caller
    /// can tell a full disk or a read-only file system from other failures.
    pub io_kind: Option<std::io::ErrorKind>,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error { code, message: message.into(), hint: None, io_kind: None }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn internal(context: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        Error::new(ErrorCode::Internal, format!("{context}: {err}"))
    }

    /// An `internal` error from an I/O failure, keeping its kind.
    pub fn io(context: impl std::fmt::Display, err: std::io::Error) -> Self {
        let mut e = Error::internal(context, &err);
        e.io_kind = Some(err.kind());
        e
    }

    /// Whether this error is an I/O failure of kind `kind`.
    pub fn is_io(&self, kind: std::io::ErrorKind) -> bool {
        self.io_kind == Some(kind)
    }

    /// An I/O error on a user's file: a full disk is `no_space`, a missing path
    /// `file_not_found`, anything else `internal` (each with `context`).
    pub fn file_io(context: impl std::fmt::Display, err: std::io::Error) -> Self {
        let code = match err.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                ErrorCode::NoSpace
            }
            std::io::ErrorKind::NotFound => ErrorCode::FileNotFound,
            _ => return Error::io(context, err),
        };
        let mut e = Error::new(code, format!("{context}: {err}"));
        e.io_kind = Some(err.kind());
        e
    }

    /// Whether this is a write to a closed pipe (`| head`): not a failure worth reporting.
    pub fn is_broken_pipe(&self) -> bool {
        self.is_io(std::io::ErrorKind::BrokenPipe)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidArgument, message)
    }

    pub fn exit_code(&self) -> u8 {
        self.code.exit_code()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds a "what were we doing" context to I/O errors, turning them into `internal` errors
/// that keep the error's kind.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}

/// Writes `text` and a newline to stderr, ignoring a failure: a closed stderr (`2>&1 | head`)
/// must not turn a command into a panic (what `eprintln!` does) or change its exit code.
pub fn stderr_line(text: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.write_all(b"\n"));
}
