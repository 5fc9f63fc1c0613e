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
//!   "host":"h","data_dir":"/d","scheduler":"local"}
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
//! {"type":"resolved","exec_id":ID}                          the whole id
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

pub mod exec_id;
pub mod files;
pub mod gpus;
mod logs;
mod print;
mod request;
pub mod resources;
mod response;
mod status;
pub mod time;
pub use exec_id::ExecId;
pub use files::{
    Direction, Entry, FileData, FileKind, FileList, FileReadRequest, FileStat, FileWriteRequest,
    FileWritten, Frame, PathRequest, Skipped, SyncApplyRequest, SyncDiff, SyncDiffRequest,
    SyncDownloadRequest, SyncSendRequest, SyncUploaded, TransferStats, TreeFilter,
};
pub use gpus::{Gpu, GpuReport, GpusRequest};
pub use logs::*;
pub use print::*;
pub use request::*;
pub use resources::{Resources, Scheduler};
pub use response::*;
pub use status::*;
pub use time::{parse_log_time, unix_ms};

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

/// The tags serde knows for an enum, read from the "unknown variant" error it gives for `probe`
/// (a value with an unknown tag): the tests prove that each hand-kept list of tags is serde's.
#[cfg(test)]
pub(crate) fn serde_tags<T: serde::de::DeserializeOwned>(probe: &str) -> Vec<String> {
    let Err(err) = serde_json::from_str::<T>(probe) else {
        panic!("{probe} has a known tag");
    };
    let err = err.to_string();
    let expected = err.split("expected one of ").nth(1).unwrap_or_else(|| panic!("{err}"));
    expected.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}
