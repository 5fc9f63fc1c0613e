//! Every type that crosses the wire between `codex-remote` and `codexd`, and nothing else
//! (plus the two shapes `codex-remote` prints around them: [`OnMachine`] and [`RunEvent`]).
//!
//! ## Wire format
//!
//! JSON Lines: one JSON object per line, UTF-8, `\n`-terminated, at most 4 MiB a request line
//! ([`crate::wire`]). The same lines travel on every door: the stdin/stdout of `codexd rpc`
//! (started by `ssh HOST codexd rpc`) and the body of `POST /v1/rpc` on `codexd serve`.
//!
//! A **request** is an object tagged by `type`, with an optional `id` (any JSON value) that is
//! echoed in every line of its answer. Each request gets exactly one *final* answer line;
//! `exec_logs` sends `log` (or `chunk`) lines before its final `logs_end`. Unknown fields are
//! ignored, so old and new peers keep talking; the `protocol` integer of `hello` says what a peer
//! speaks and `capabilities` ([`capability`]) what it can do. Lines on stdout that are not JSON
//! objects (a login shell's noise) are skipped by the client.
//!
//! The examples below are the golden texts of `tests/it/golden.rs` (parsed and re-serialized in
//! CI, so a renamed field fails the build). `STATUS` stands for a status object ([`JobStatus`]),
//! `ID` for a job id like the first one: an [`ExecId`], a UUID v7 checked as the line is read
//! (anything else is `invalid_id`; `exec_resolve` alone takes a prefix or `last`).
//!
//! ### Requests
//! ```text
//! {"id":1,"type":"hello","protocol":1,"client_version":"0.1.0"}
//! {"id":"a","type":"exec_start","cmd":"nvidia-smi","shell":"bash -lc","cwd":"~/w","env":{"A":"1"},
//!   "name":"n","labels":{"k":"v"},"idempotency_key":"k1"}
//! {"type":"exec_start","cmd":["python","train.py"]}          argv: run without a shell
//! {"type":"exec_start","script":"echo hi\n"}                 needs capability "script"
//! {"type":"exec_start","cmd":"make test","project":"p","ref":"v1.2","cwd":"sub"}
//!                                                            needs capability "projects"
//! {"type":"exec_status","exec_id":"01a20e39-2841-766b-a16c-ac422b0e3096"}
//! {"type":"exec_logs","exec_id":ID,"stream":"both","tail":2000,"since":{"stdout":10,"stderr":0},
//!   "follow":true,"raw":true,"max_bytes":100}
//! {"type":"exec_logs","exec_id":ID,"stream":"stdout","tail_lines":5}
//! {"type":"exec_logs","exec_id":ID,"stream":"stderr","tail_lines":20,"view":"terminal"}
//!                                                            needs capability "logs_view"
//! {"type":"exec_cancel","exec_id":ID,"grace_ms":5000}
//! {"type":"exec_wait","exec_id":ID,"timeout_ms":30000}
//! {"type":"exec_list","state":"running","limit":50}
//! {"type":"exec_rm","exec_id":ID}
//! {"type":"exec_prune","keep":200}
//! {"type":"exec_resolve","exec_id":"019a2b3c"}              a unique prefix, or "last"
//! {"type":"doctor","timeout_ms":5000}                        needs capability "doctor"
//! {"type":"doctor","checks":["shared_store","gpus"]}        only these checks
//! {"type":"gpus"}                                            needs capability "gpus" ([`gpus`])
//! ```
//! Files and sync (capabilities `files` and `sync`; [`files`] documents the bytes that follow
//! a `file_write`, `sync_diff`, `sync_apply` or `sync_send` line, and the frames):
//! ```text
//! {"type":"file_write","path":"~/w/a.py","size":5,"mode":"0644","mkdir":true,
//!   "follow_symlinks":true}                                  then 5 raw bytes
//! {"type":"file_read","path":"~/w/a.py","offset":0,"limit":65536}
//! {"type":"file_stat","path":"~/w"}
//! {"type":"file_ls","path":"~/w"}
//! {"type":"sync_diff","root":"~/w","direction":"push","exclude":["*.log"],"include_git":true,
//!   "no_gitignore":true,"delete":true,"entries":1}           then 1 ENTRY line
//! {"type":"sync_apply","root":"~/w"}                         then frames up to {"frame":"end"}
//! {"type":"sync_send","root":"~/w","paths":1}                then 1 line: "a.py"
//! ```
//! `ENTRY` is `{"path":"a.py","kind":"file","size":5,"mode":"0644","mtime_ns":1,"hash":"…"}`
//! (`kind` `file`, `dir` or `symlink`, which has a `target`). Frames: `{"frame":"file","path",
//! "size","mode","mtime_ns"}` (then the bytes and a status byte), `{"frame":"symlink","path",
//! "target"}`, `{"frame":"dir","path","mode"}`, `{"frame":"meta","path","mode","mtime_ns"}`,
//! `{"frame":"delete","path"}`, `{"frame":"end"}`.
//!
//! ### Answers
//! ```text
//! {"id":1,"type":"hello","protocol":1,"version":"0.1.0","capabilities":["exec"],"user":"u",
//!   "host":"h","data_dir":"/d"}
//! {"id":"a","type":"status",STATUS}                          exec_start, _status, _cancel, _wait
//! {"type":"status",STATUS,"timed_out":true,"replayed":true,"message":"m"}
//! {"type":"list","jobs":[{STATUS}]}                          exec_list, newest first
//! {"type":"log","stream":"stdout","offset":0,"line":"hi"}    exec_logs, before logs_end
//! {"type":"log","stream":"stderr","offset":3,"line":"par","partial":true}
//! {"type":"log","stream":"stdout","offset":9,"line":"epoch 1","repeated":3}   view terminal
//! {"type":"status",STATUS,"last_stdout":"step 1","last_stderr":"ValueError: boom",
//!   "traceback":"Traceback (most recent call last):\n..."}   exec_status, exec_wait
//! {"type":"chunk","stream":"stdout","offset":0,"data_b64":"aGkK"}   exec_logs with raw
//! {"type":"logs_end","exec_id":ID,"next_offset":{"stdout":3,"stderr":0},
//!   "size":{"stdout":3,"stderr":0},"more":true,"status":"finished","state":"failed",
//!   "exit_code":3,"job":{STATUS}}
//! {"type":"removed","exec_id":ID}
//! {"type":"pruned","removed":[ID],"kept":3}
//! {"type":"resolved","exec_id":"019a2b3c-..."}
//! {"type":"doctor","ok":true,"checks":[{"name":"git","ok":true,"required":false,"detail":"..."}]}
//! {"type":"gpus","gpus":[GPU],"free_memory_mib":1024,"free_util_percent":10,"queued":0}
//! {"type":"error","code":"job_not_found","message":"no job x","hint":"h"}
//! {"type":"file_written","path":"/h/w/a.py","size":5,"mode":"0644"}
//! {"type":"file_data","path":"/h/w/a.py","offset":0,"size":5,"data_b64":"aGVsbG8=",
//!   "next_offset":5,"eof":true}
//! {"type":"file_stat","path":"/h/w/l","exists":true,"kind":"symlink","size":4,"mode":"0777",
//!   "mtime":"2026-11-24T15:42:36Z","target":"a.py"}
//! {"type":"file_list","path":"/h/w","entries":[{"path":"a.py","exists":true,"kind":"file"}]}
//! {"type":"sync_diff","send":[ENTRY],"check":[],"meta":[],"delete":["old.txt"],"unchanged":3,
//!   "skipped":[{"path":"s","reason":"a socket"}]}
//! {"type":"sync_applied","files":1,"bytes":5,"links":0,"dirs":0,"meta":0,"deleted":1,
//!   "changed":["log.txt"]}                                   sync_apply; sync_send: sync_sent
//! ```
//! A `log` line's `offset` is the byte offset of its first byte in the log; `next_offset` is
//! where to continue (`since`) without losing or repeating a byte. An `error` line without an `id`
//! is a peer that failed before it could read the request. Error `code`s are
//! [`crate::error::ErrorCode`], stable and documented in the README.
//!
//! ### What `codex-remote` prints
//! Answers printed by the CLI carry the machine they came from as a last field
//! ([`OnMachine`]): `{"exec_id":...,"status":"running",...,"machine":"gpu1"}`. `exec run` prints
//! [`RunEvent`]s: `{"type":"started",STATUS,"machine"}`, then `log` lines as above, then
//! `{"type":"finished",STATUS,"machine"}` (or `{"type":"detached","exec_id","machine","hint"}`
//! after Ctrl-C).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode};

pub mod exec_id;
pub mod files;
pub mod gpus;
pub mod resources;
pub mod time;
pub use exec_id::ExecId;
pub use files::{
    Direction, Entry, FileData, FileKind, FileList, FileReadRequest, FileStat, FileWriteRequest,
    FileWritten, Frame, PathRequest, Skipped, SyncApplyRequest, SyncDiff, SyncDiffRequest,
    SyncDownloadRequest, SyncSendRequest, SyncUploaded, TransferStats, TreeFilter,
};
pub use gpus::{Gpu, GpuReport, GpusRequest};
pub use resources::{Resources, Scheduler};

// The protocol version lives with the build's other versions (`version` is below `protocol`).
pub use crate::version::PROTOCOL_VERSION;

/// The named capabilities a codexd reports in `hello`. A client checks the one a request
/// needs ([`Request::needs`]) before sending it, so an older codexd gets a clear error instead
/// of a request it would misread.
pub mod capability {
    pub const EXEC: &str = "exec";
    pub const LOGS_FOLLOW: &str = "logs_follow";
    pub const LOGS_RAW: &str = "logs_raw";
    pub const IDEMPOTENCY_KEY: &str = "idempotency_key";
    pub const CANCEL_TREE: &str = "cancel_tree";
    pub const SCRIPT: &str = "script";
    pub const PRUNE: &str = "prune";
    pub const DOCTOR: &str = "doctor";
    pub const RESOLVE: &str = "resolve";
    /// `file_write`, `file_read`, `file_stat`, `file_ls`.
    pub const FILES: &str = "files";
    /// `sync_diff`, `sync_apply`, `sync_send`.
    pub const SYNC: &str = "sync";
    /// `exec_logs` with `since_time` / `until_time` (the job's time index).
    pub const LOGS_TIME: &str = "logs_time";
    /// `exec_start` with `project` / `ref`: the job runs in a worktree of a configured repo.
    pub const PROJECTS: &str = "projects";
    /// `hello` with `concurrent: true`: `codexd rpc` answers the session's later requests as
    /// each completes, so a long `exec_wait` does not hold up a `status` (answers carry the id).
    pub const CONCURRENT: &str = "concurrent";
    /// `exec_start` with `resources` (GPUs, partition, time ... for a Slurm machine's
    /// scheduler); statuses with `scheduler`, `slurm_job_id`, `node` and the state `queued`.
    pub const RESOURCES: &str = "resources";
    /// `exec_start` with `resources.gpus` / `gpu_ids` on a machine without a scheduler (the job
    /// waits `queued` for free GPUs); the `gpus` request; statuses with `gpu_ids`.
    pub const GPUS: &str = "gpus";
    /// `codexd serve` answers `/health?challenge=` with a `nonce` and `nonce_proof`, and takes
    /// requests signed with the token (`Authorization: Codexd-HMAC-SHA256 ...`, see `auth`).
    pub const SIGNED_REQUESTS: &str = "signed_requests";
    /// Long answers (`exec_wait`, a follow of `exec_logs`) carry a `heartbeat` line at least
    /// every [`HEARTBEAT_EVERY`](super::HEARTBEAT_EVERY) of silence, so a client can tell a
    /// quiet job from a codexd that went silent.
    pub const HEARTBEAT: &str = "heartbeat";
    /// `exec_logs` with `view: "terminal"` (`\r` applied, ANSI escapes dropped, repeats
    /// collapsed); statuses with `last_stdout`, `last_stderr` and `traceback`.
    pub const LOGS_VIEW: &str = "logs_view";
}

/// How often a long answer says it is alive when it has nothing else to send.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// What this codexd can do, reported by `hello`.
pub const CAPABILITIES: &[&str] = &[
    capability::EXEC,
    capability::LOGS_FOLLOW,
    capability::LOGS_RAW,
    capability::IDEMPOTENCY_KEY,
    capability::CANCEL_TREE,
    capability::SCRIPT,
    capability::PRUNE,
    capability::DOCTOR,
    capability::RESOLVE,
    capability::FILES,
    capability::SYNC,
    capability::LOGS_TIME,
    capability::PROJECTS,
    capability::CONCURRENT,
    capability::RESOURCES,
    capability::GPUS,
    capability::SIGNED_REQUESTS,
    capability::HEARTBEAT,
    capability::LOGS_VIEW,
];

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
    "doctor",
    "exec_resolve",
    "file_write",
    "file_read",
    "file_stat",
    "file_ls",
    "sync_diff",
    "sync_apply",
    "sync_send",
    "gpus",
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
    Doctor(DoctorRequest),
    /// A unique prefix of a job id, or `last` (the newest job), to the whole id.
    ExecResolve(ResolveRequest),
    FileWrite(FileWriteRequest),
    FileRead(FileReadRequest),
    FileStat(PathRequest),
    FileLs(PathRequest),
    SyncDiff(SyncDiffRequest),
    SyncApply(SyncApplyRequest),
    SyncSend(SyncSendRequest),
    /// What the machine's GPUs are doing ([`gpus`]).
    Gpus(GpusRequest),
}

impl Request {
    /// The capability a codexd must report for this request to mean what the client means.
    pub fn needs(&self) -> Option<&'static str> {
        match self {
            Request::ExecStart(r)
                if r.resources.as_ref().is_some_and(|r| !r.gpu_ids.is_empty()) =>
            {
                Some(capability::GPUS)
            }
            Request::ExecStart(r) if r.resources.is_some() => Some(capability::RESOURCES),
            Request::ExecStart(r) if r.project.is_some() => Some(capability::PROJECTS),
            Request::ExecStart(r) if r.script.is_some() => Some(capability::SCRIPT),
            Request::ExecLogs(r) if r.since_time.is_some() || r.until_time.is_some() => {
                Some(capability::LOGS_TIME)
            }
            Request::ExecLogs(r) if r.view == LogView::Terminal => Some(capability::LOGS_VIEW),
            Request::ExecLogs(r) if r.raw => Some(capability::LOGS_RAW),
            Request::ExecLogs(r) if r.follow => Some(capability::LOGS_FOLLOW),
            Request::ExecPrune(_) => Some(capability::PRUNE),
            Request::Doctor(_) => Some(capability::DOCTOR),
            Request::ExecResolve(_) => Some(capability::RESOLVE),
            Request::Gpus(_) => Some(capability::GPUS),
            Request::FileWrite(_)
            | Request::FileRead(_)
            | Request::FileStat(_)
            | Request::FileLs(_) => Some(capability::FILES),
            Request::SyncDiff(_) | Request::SyncApply(_) | Request::SyncSend(_) => {
                Some(capability::SYNC)
            }
            _ => None,
        }
    }

    /// Whether bytes follow this request's line on the same stream ([`files`]).
    pub fn has_payload(&self) -> bool {
        matches!(
            self,
            Request::FileWrite(_)
                | Request::SyncDiff(_)
                | Request::SyncApply(_)
                | Request::SyncSend(_)
        )
    }

    /// The path on the machine a files or sync request reads or writes.
    pub fn target_path(&self) -> Option<&str> {
        match self {
            Request::FileWrite(r) => Some(&r.path),
            Request::FileRead(r) => Some(&r.path),
            Request::FileStat(r) | Request::FileLs(r) => Some(&r.path),
            Request::SyncDiff(r) => Some(&r.root),
            Request::SyncApply(r) => Some(&r.root),
            Request::SyncSend(r) => Some(&r.root),
            _ => None,
        }
    }

    /// The job a request is about, if it is about one.
    pub fn exec_id(&self) -> Option<&str> {
        match self {
            Request::ExecStatus(r) | Request::ExecRm(r) => Some(&r.exec_id),
            Request::ExecResolve(r) => Some(&r.exec_id),
            Request::ExecLogs(r) => Some(&r.exec_id),
            Request::ExecCancel(r) => Some(&r.exec_id),
            Request::ExecWait(r) => Some(&r.exec_id),
            _ => None,
        }
    }
}

/// The request types whose `exec_id` is an [`ExecId`] (`exec_resolve` takes prefixes too).
const ID_TYPED_REQUESTS: &[&str] =
    &["exec_status", "exec_logs", "exec_cancel", "exec_wait", "exec_rm"];

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
        // A job id that is not one is `invalid_id` (with the Go-era hint), not `bad_request`.
        if ID_TYPED_REQUESTS.contains(&kind.as_str())
            && let Some(Err(err)) = obj.get("exec_id").and_then(|v| v.as_str()).map(ExecId::parse)
        {
            return Err(Box::new((id, err)));
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
    /// Asks `codexd rpc` to answer the session's following requests concurrently (capability
    /// `concurrent`; an older codexd ignores it and answers in turn).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub concurrent: bool,
}

impl HelloRequest {
    /// The `hello` this client sends: its protocol and version.
    pub fn from_this_client() -> Self {
        HelloRequest {
            protocol: Some(PROTOCOL_VERSION),
            client_version: Some(crate::version::VERSION.to_string()),
            concurrent: false,
        }
    }
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
    /// A project of codexd's config (`projects:`): the job runs in a worktree of its repo at
    /// `ref`, and `cwd` is relative to that worktree. HTTP clients of the original tool send
    /// `project_id`.
    /// An empty string is no project (the original clients send `"project_id": ""`).
    #[serde(
        default,
        alias = "project_id",
        deserialize_with = "empty_is_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub project: Option<String>,
    /// A branch, tag or commit of `project` (default `HEAD`, the repo's default branch).
    #[serde(
        default,
        rename = "ref",
        deserialize_with = "empty_is_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub git_ref: Option<String>,
    /// What the job asks of the machine's scheduler ([`resources`]); a machine that runs jobs
    /// itself (`scheduler: local`) refuses what it cannot honour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Box<Resources>>,
}

/// An optional string where `""` means absent, as the original tool's clients send it.
fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()))
}

impl ExecStartRequest {
    /// `sha256:HEX` of the request as JSON without its idempotency key: two starts with one key
    /// are the same request when their fingerprints are equal (fields in declaration order, maps
    /// sorted, so the JSON is canonical).
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let keyless = ExecStartRequest { idempotency_key: None, ..self.clone() };
        let json = serde_json::to_vec(&keyless).expect("requests serialize");
        format!("sha256:{}", hex::encode(Sha256::digest(&json)))
    }
}

/// The job a request is about, or (as `resolved`) the whole id a `exec_resolve` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRef {
    pub exec_id: ExecId,
}

/// What `exec_resolve` is given: an id, a unique prefix of one, or `last`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolveRequest {
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

/// Reads a `--since`/`--until` time: a duration before now (`10m`, `1h30m`, `90s`) or an
/// RFC 3339 time in UTC (`2026-01-01T00:30:00Z`). Returns Unix milliseconds.
pub fn parse_log_time(text: &str, now: SystemTime) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(unix_ms(now.checked_sub(ago).unwrap_or(UNIX_EPOCH)));
    }
    humantime::parse_rfc3339_weak(text).map(unix_ms).map_err(|_| {
        format!(
            "{text:?} is not a time: give a duration before now (10m, 1h30m, 90s) or an RFC 3339 \
             time in UTC (2026-01-01T00:30:00Z)"
        )
    })
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub exec_id: ExecId,
    /// Time between TERM and KILL, in milliseconds (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitRequest {
    pub exec_id: ExecId,
    /// Give up after this many milliseconds (no limit when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    /// Only jobs with this `status` (`running` or `finished`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PruneRequest {
    /// Keep this many newest finished jobs (default: the configured retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<usize>,
}

/// `doctor`: check what jobs on this machine will need.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DoctorRequest {
    /// Time for each probe, in milliseconds (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Only the checks of these names (all when empty): e.g. `["shared_store"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
}

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
    /// Waiting in the scheduler's queue (`status` is `running`: not finished).
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Lost,
    StartFailed,
}

impl JobState {
    pub fn status(self) -> RunStatus {
        match self {
            JobState::Queued | JobState::Running => RunStatus::Running,
            _ => RunStatus::Finished,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
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
                "unknown state {s:?}: queued, running, succeeded, failed, cancelled, lost, \
                 start_failed"
            )
        })
    }
}

/// The status of one job: `status.json` on disk and the `status` answer on the wire.
///
/// The fields up to `error` are always present (null when unknown), so scripts can rely on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub exec_id: ExecId,
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
    /// The `artifacts` array of the job's artifacts file, read when it ended
    /// (`src/jobs/artifacts.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Vec<serde_json::Value>>,
    /// Something about the job worth knowing that is not an error of it (e.g. an artifacts
    /// file that could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Where the job's code came from, for a job started with a `project`.
    #[serde(flatten)]
    pub checkout: Option<Checkout>,
    /// Who runs the job: `local` (codexd's worker on this machine) or `slurm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<Scheduler>,
    /// The Slurm job that runs the job's worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job_id: Option<String>,
    /// The compute node the job runs or ran on (a Slurm job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What the job asked of the scheduler, with codexd's defaults filled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Why a `queued` job waits: Slurm's words (`Priority`, `Resources`, `JobHeldUser`), or
    /// codexd's for a job waiting for GPUs ("waiting for 2 free GPUs (1 free)").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_reason: Option<String>,
    /// The GPUs a `--gpus` job was given on a machine without a scheduler (nvidia-smi's
    /// indexes, its `CUDA_VISIBLE_DEVICES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_ids: Option<Vec<u32>>,
    /// The state the job store holds, present only when `state` is a view derived for this
    /// answer and differs from it: `queued` from Slurm's queue or the GPU queue (stored
    /// `running`), or an end found by a reader (`lost`, Slurm's end) that could not be written.
    /// Never in `status.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_state: Option<JobState>,
}

/// The git checkout a project job runs in: the project, the ref asked for, the commit it
/// resolved to, and the worktree (removed with the job). The last two are absent when the
/// checkout failed (`start_failed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    pub project: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
}

impl Checkout {
    /// A checkout that did not happen: the project and ref alone.
    pub fn failed(project: &str, git_ref: &str) -> Self {
        Checkout {
            project: project.to_string(),
            git_ref: git_ref.to_string(),
            commit: None,
            worktree: None,
        }
    }
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
    pub exec_id: ExecId,
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

impl ErrorBody {
    /// The error object every door prints: `{"type":"error","code":…,"message":…,"hint":…}`
    /// (an HTTP error's body, the CLI's error line, the dashboard's, an MCP tool error's).
    pub fn object(e: &Error) -> serde_json::Value {
        let line = Response::Error(ErrorBody::from(e.clone()));
        serde_json::to_value(line).unwrap_or_else(|_| serde_json::json!({"type": "error"}))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_start_needs_the_capability_and_takes_the_original_name() {
        let req: ExecStartRequest =
            serde_json::from_str(r#"{"cmd":"ls","project_id":"p","ref":"main"}"#).unwrap();
        assert_eq!((req.project.as_deref(), req.git_ref.as_deref()), (Some("p"), Some("main")));
        let plain: ExecStartRequest =
            serde_json::from_str(r#"{"cmd":"ls","project_id":"","ref":""}"#).unwrap();
        assert_eq!((plain.project, plain.git_ref), (None, None));
        assert_eq!(Request::ExecStart(req).needs(), Some(capability::PROJECTS));
    }

    #[test]
    fn times_are_durations_before_now_or_rfc3339() {
        let now = UNIX_EPOCH + std::time::Duration::from_secs(10_000);
        assert_eq!(parse_log_time("10m", now), Ok(10_000_000 - 600_000));
        assert_eq!(parse_log_time("1970-01-01T00:00:01Z", now), Ok(1000));
        assert!(parse_log_time("yesterday", now).unwrap_err().contains("RFC 3339"));
    }
}
