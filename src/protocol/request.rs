//! Requests: what a client sends, one JSON line each, tagged by `type`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::exec_id::ExecId;
use super::files::{
    FileReadRequest, FileWriteRequest, PathRequest, SyncApplyRequest, SyncDiffRequest,
    SyncSendRequest,
};
use super::gpus::GpusRequest;
use super::logs::{LogView, LogsRequest};
use super::resources::Resources;
use super::status::{JobState, RunStatus};
use super::{PROTOCOL_VERSION, capability};
use crate::error::{Error, ErrorCode};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::serde_tags;

    #[test]
    fn the_request_types_are_the_serde_tags() {
        assert_eq!(REQUEST_TYPES, serde_tags::<Request>(r#"{"type":"?"}"#));
    }

    /// `ID_TYPED_REQUESTS` are the requests whose `exec_id` serde reads as an [`ExecId`]: those a
    /// whole id satisfies and a malformed one does not.
    #[test]
    fn the_id_typed_requests_are_those_whose_exec_id_is_an_exec_id() {
        let parses = |kind: &str, id: &str| {
            serde_json::from_str::<Request>(&format!(r#"{{"type":"{kind}","exec_id":"{id}"}}"#))
                .is_ok()
        };
        let typed: Vec<&str> = REQUEST_TYPES
            .iter()
            .copied()
            .filter(|kind| {
                parses(kind, "01a20e39-2841-766b-a16c-ac422b0e3096") && !parses(kind, "x")
            })
            .collect();
        assert_eq!(typed, ID_TYPED_REQUESTS);
    }

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
}
