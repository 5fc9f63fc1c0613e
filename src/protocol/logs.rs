//! Logs: which stream, from where, in which view (`exec_logs`), and the lines, chunks and end
//! that answer it.

use serde::{Deserialize, Serialize};

use super::exec_id::ExecId;
use super::status::{JobState, JobStatus, RunStatus};

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
    pub exec_id: ExecId,
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
    /// Only output written at or after this time (about 1 s resolution): a duration before
    /// now on codexd's clock (`10m`) or an RFC 3339 time in UTC. Combines with `since`
    /// (the later start wins) and `tail` (taken from what is after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_time: Option<String>,
    /// Only output written before this time (same forms); not with `follow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_time: Option<String>,
    /// `raw`: the lines as written. `terminal`: as a terminal shows them (see [`LogView`]).
    #[serde(default, skip_serializing_if = "LogView::is_raw")]
    pub view: LogView,
}

/// How `exec_logs` shows lines.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LogView {
    /// The bytes as the job wrote them, one `log` line per newline.
    #[default]
    Raw,
    /// What a terminal would show: each line at its last `\r` state (a progress bar's latest),
    /// ANSI escapes dropped, a run of equal lines sent once with `repeated`. `offset` is where
    /// the shown text starts; `tail_lines` counts these lines.
    Terminal,
}

impl LogView {
    pub fn is_raw(&self) -> bool {
        *self == LogView::Raw
    }
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
    /// Terminal view: the line came this many times in a row (sent once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeated: Option<u64>,
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
    /// `max_bytes` stopped the answer before the end of a log (always present).
    #[serde(default)]
    pub more: bool,
    pub status: RunStatus,
    pub state: JobState,
    pub exit_code: Option<i32>,
    /// The whole status of the job.
    pub job: JobStatus,
}
