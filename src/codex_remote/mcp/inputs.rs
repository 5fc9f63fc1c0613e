//! The MCP tools' arguments: their types (whose doc comments are the JSON schema descriptions an
//! agent reads), how they are parsed, and how they become protocol requests. Arguments that
//! cannot be used are `bad_argument` errors carrying the CLI's `usage` code; the server answers
//! them as tool results with `isError: true` (MCP 2025-11-25), so the model reads and corrects
//! them.

use std::collections::BTreeMap;
use std::time::Duration;

use rmcp::ErrorData;
use rmcp::handler::server::common::{FromContextPart, schema_for_input};
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{ErrorCode, JsonObject};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::protocol::{
    CommandSpec, ExecId, ExecStartRequest, JobState, LogView, LogsRequest, Stream, StreamOffsets,
    StreamSel,
};

/// `exec_wait` gives up after this long unless told otherwise: under the tool time-outs of
/// common MCP clients (often 30–60 s).
pub const DEFAULT_WAIT_SECS: f64 = 25.0;
pub const MAX_WAIT_SECS: f64 = 3600.0;
/// `exec_logs` reads at most this many bytes of log per call unless told otherwise.
pub const DEFAULT_LOG_BYTES: u64 = 16 * 1024;
pub const MAX_LOG_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_LIST_LIMIT: usize = 20;
pub const MAX_LIST_LIMIT: usize = 500;

/// The argument that names a machine, shared by every tool.
const MACHINE_DOC: &str = "The machine: a name from the `machines` tool. Default: the config's \
                           `default_machine`, else `local` (this computer).";

/// The argument that names a job, shared by the job tools.
const EXEC_ID_DOC: &str = "The job's `exec_id`, as returned by `exec_start` or `exec_list`; a \
                           unique prefix of it, or `last` for the machine's newest job, works \
                           too (as in the CLI).";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MachinesInput {
    /// Only this machine (default: every configured machine, and `local`).
    pub machine: Option<String>,
    /// Call each machine's codexd (`hello`) to see that it answers, how fast, and its version
    /// (default true). False only lists the config.
    pub check: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartInput {
    #[schemars(description = MACHINE_DOC)]
    pub machine: Option<String>,
    /// A shell command, run as `bash -lc CMD` (a login shell: conda, modules and PATH are
    /// loaded). Give exactly one of `cmd`, `argv`, `script`.
    pub cmd: Option<String>,
    /// The command as a list of words, run without a shell, e.g. ["python", "train.py"].
    pub argv: Option<Vec<String>>,
    /// The text of a script, saved on the machine and run with the shell (a #! line is
    /// honoured).
    pub script: Option<String>,
    /// Working directory on the machine; `~` and relative paths are from the remote home (the
    /// default); with `project`, a relative path inside the repo. A missing directory makes the
    /// job `start_failed`.
    pub cwd: Option<String>,
    /// Environment variables for the job. The job also gets CODEXD_EXEC_ID.
    pub env: Option<BTreeMap<String, String>>,
    /// The shell for `cmd` and `script`, as words (default `bash -lc`).
    pub shell: Option<String>,
    /// A name for the job, shown in its status and in `exec_list`.
    pub name: Option<String>,
    /// Labels for the job, shown in its status.
    pub labels: Option<BTreeMap<String, String>>,
    /// Retry safety: a start with a key already used on this machine returns the first job
    /// (`replayed: true`) instead of running the command again. Pass your own and reuse it when
    /// you retry after a time-out; without it one is made and returned in `idempotency_key`.
    /// Letters, digits, `-`, `_`, `.`, `:`.
    pub idempotency_key: Option<String>,
    /// Run the job in a fresh git checkout of this project (an id from the machine's codexd
    /// config; an unknown id is an error that lists the known ones). `cwd` is then a path
    /// inside the repo (default its top), and the status gets `project`, `ref`, `commit` and
    /// `worktree`. Push your commits first: the machine fetches from the project's repo, not
    /// from your working tree (use `sync_push` for uncommitted files).
    pub project: Option<String>,
    /// The branch, tag or commit of `project` to run at (default `HEAD`, the default branch).
    /// A branch is fetched first, so it is its newest pushed commit; a full commit id needs no
    /// fetch when the machine has it. An unknown ref makes the start fail with git's message.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// What the job asks of the scheduler. `gpus: N` on any machine: on one without a
    /// scheduler the job is `queued` until N GPUs are free (no codexd job holds them, nobody
    /// else uses them), then runs with CUDA_VISIBLE_DEVICES set; `gpu_ids: [0, 3]` pins GPUs
    /// there. For a Slurm cluster's login node also `partition`, `time` like "2h", `mem` like
    /// "32G", `cpus`, `slurm_args`, or `local: true` to run on the login node itself; a
    /// machine without a scheduler refuses those with an error.
    pub resources: Option<crate::protocol::Resources>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobInput {
    #[schemars(description = MACHINE_DOC)]
    pub machine: Option<String>,
    #[schemars(description = EXEC_ID_DOC)]
    pub exec_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsInput {
    #[schemars(description = MACHINE_DOC)]
    pub machine: Option<String>,
    #[schemars(description = EXEC_ID_DOC)]
    pub exec_id: String,
    /// Which output: `stdout`, `stderr` or `both` (default `both`).
    pub stream: Option<StreamSel>,
    /// Byte offset in stdout to read from: the `next_offset.stdout` of the previous call.
    /// Default 0 (the beginning), or the tail with `tail_lines`.
    pub since_stdout: Option<u64>,
    /// Byte offset in stderr to read from: the `next_offset.stderr` of the previous call.
    pub since_stderr: Option<u64>,
    /// Only the last N lines (of what follows `since_*`): to look at the end of a long log.
    pub tail_lines: Option<u64>,
    /// `terminal` (default): lines as a terminal shows them (a progress bar at its last `\r`
    /// state, ANSI colours dropped, repeats collapsed); `raw`: the exact bytes.
    pub view: Option<LogView>,
    /// At most this many bytes of log in this whole answer, both streams together (default
    /// 16384, at most 1048576; also at most 2000 lines). `more: true` says there is more: call
    /// again with the returned `next_offset`.
    #[schemars(range(min = 1, max = 1048576))]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitInput {
    #[schemars(description = MACHINE_DOC)]
    pub machine: Option<String>,
    #[schemars(description = EXEC_ID_DOC)]
    pub exec_id: String,
    /// Give up after this many seconds (default 25, at most 3600) and return the running status
    /// with `timed_out: true`; then call `exec_wait` again. Keep it under your own tool time-out.
    #[schemars(range(min = 0, max = 3600))]
    pub timeout_seconds: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelInput {
    #[schemars(description = MACHINE_DOC)]
    pub machine: Option<String>,
    #[schemars(description = EXEC_ID_DOC)]
    pub exec_id: String,
    /// Seconds between TERM and KILL (default 5).
    #[schemars(range(min = 0, max = 3600))]
    pub grace_seconds: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListInput {
    #[schemars(description = MACHINE_DOC)]
    pub machine: Option<String>,
    /// Only jobs in this state, or `finished` for every job that has ended (whatever its
    /// state), as `codex-remote exec list --state` takes.
    pub state: Option<StateArg>,
    /// At most this many jobs, newest first (default 20, at most 500).
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<usize>,
}

/// `exec_list`'s `state`: a job state, or `finished` (a status, not a state).
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateArg {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Lost,
    StartFailed,
    Finished,
}

impl StateArg {
    /// The list request that selects these jobs.
    pub fn request(self) -> crate::protocol::ListRequest {
        use crate::protocol::{ListRequest, RunStatus};
        let state = match self {
            StateArg::Finished => {
                return ListRequest { status: Some(RunStatus::Finished), ..Default::default() };
            }
            StateArg::Queued => JobState::Queued,
            StateArg::Running => JobState::Running,
            StateArg::Succeeded => JobState::Succeeded,
            StateArg::Failed => JobState::Failed,
            StateArg::Cancelled => JobState::Cancelled,
            StateArg::Lost => JobState::Lost,
            StateArg::StartFailed => JobState::StartFailed,
        };
        ListRequest { state: Some(state), ..Default::default() }
    }
}

/// A tool's arguments, parsed with the server's own error (`bad_argument`) for what does not
/// parse, so a wrong type reads like every other argument error.
pub struct Arguments<T>(pub T);

impl<S, T: DeserializeOwned> FromContextPart<ToolCallContext<'_, S>> for Arguments<T> {
    fn from_context_part(context: &mut ToolCallContext<S>) -> std::result::Result<Self, ErrorData> {
        let arguments = context.arguments.take().unwrap_or_default();
        serde_json::from_value(Value::Object(arguments))
            .map(Arguments)
            .map_err(|e| bad_argument(format!("invalid arguments for {}: {e}", context.name())))
    }
}

/// The JSON schema of a tool's arguments, from the input type's doc comments. An optional
/// argument may be absent, never null, so its type is the plain type: clients that convert
/// `key=value` by the schema's `type` (the MCP Inspector CLI) then send numbers, booleans and
/// objects as such.
pub fn input_schema<T: JsonSchema + 'static>() -> std::sync::Arc<JsonObject> {
    let schema =
        schema_for_input::<T>().unwrap_or_else(|e| panic!("the input schema of a tool: {e}"));
    let mut schema = Value::Object(schema.as_ref().clone());
    drop_null(&mut schema);
    let schema = super::schema::flatten(schema);
    if let Some(path) = super::schema::not_flat(&schema, "") {
        panic!("the input schema of a tool is not flat at {path}: {schema}");
    }
    match schema {
        Value::Object(object) => std::sync::Arc::new(object),
        _ => unreachable!("a schema object stays an object"),
    }
}

/// Removes `"null"` from every `type` list and `{"type": "null"}` from every `anyOf`/`oneOf`,
/// keeping the one schema left alone where only one remains.
fn drop_null(schema: &mut Value) {
    let Value::Object(object) = schema else {
        if let Value::Array(items) = schema {
            items.iter_mut().for_each(drop_null);
        }
        return;
    };
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            object.insert("type".into(), only);
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(choices)) = object.get_mut(key) {
            choices.retain(|c| c.get("type").is_none_or(|t| t != "null"));
            if choices.len() == 1 {
                let Some(Value::Object(only)) =
                    object.remove(key).and_then(|mut c| c.get_mut(0).map(Value::take))
                else {
                    continue;
                };
                object.extend(only);
            }
        }
    }
    if object.get("default").is_some_and(Value::is_null) {
        object.remove("default");
    }
    object.values_mut().for_each(drop_null);
}

/// Arguments that cannot be used: the CLI's `usage` error, answered as a tool error.
pub fn bad_argument(message: impl Into<String>) -> ErrorData {
    argument_error(
        crate::error::Error::new(crate::error::ErrorCode::Usage, message.into())
            .with_hint(ARGUMENT_HINT),
    )
}

/// An argument error as a protocol error carrying the CLI's error code and hint.
pub fn argument_error(e: crate::error::Error) -> ErrorData {
    ErrorData::invalid_params(e.message, Some(json!({ "code": e.code, "hint": e.hint })))
}

/// What a model should do about an argument error.
const ARGUMENT_HINT: &str = "see the tool's inputSchema for the arguments, their types and ranges";

/// The CLI's error object for an argument error made by `bad_argument` or `exec_id`; `None` for
/// any other protocol error (an unknown tool stays one).
pub fn argument_failure(e: &ErrorData) -> Option<crate::error::Error> {
    let data = e.data.as_ref()?;
    let code: crate::error::ErrorCode = serde_json::from_value(data["code"].clone()).ok()?;
    (e.code == ErrorCode::INVALID_PARAMS && code != crate::error::ErrorCode::Other).then(|| {
        let error = crate::error::Error::new(code, e.message.to_string());
        match data["hint"].as_str() {
            Some(hint) => error.with_hint(hint),
            None => error,
        }
    })
}

pub fn seconds(
    given: Option<f64>,
    default: f64,
    name: &str,
) -> std::result::Result<Duration, ErrorData> {
    let secs = given.unwrap_or(default);
    if !secs.is_finite() || !(0.0..=MAX_WAIT_SECS).contains(&secs) {
        return Err(bad_argument(format!("{name} must be between 0 and {MAX_WAIT_SECS}")));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn start_request(input: &StartInput) -> std::result::Result<ExecStartRequest, ErrorData> {
    let given = [input.cmd.is_some(), input.argv.is_some(), input.script.is_some()];
    if given.iter().filter(|&&g| g).count() != 1 {
        return Err(bad_argument("give exactly one of `cmd`, `argv`, `script`"));
    }
    let cmd = match (&input.cmd, &input.argv) {
        (Some(c), _) => Some(CommandSpec::Shell(c.clone())),
        (None, Some(argv)) => Some(CommandSpec::Argv(argv.clone())),
        (None, None) => None,
    };
    Ok(ExecStartRequest {
        cmd,
        script: input.script.clone(),
        shell: input.shell.clone(),
        cwd: input.cwd.clone(),
        env: input.env.clone().unwrap_or_default(),
        name: input.name.clone(),
        labels: input.labels.clone().unwrap_or_default(),
        idempotency_key: input.idempotency_key.clone(),
        project: input.project.clone(),
        git_ref: input.git_ref.clone(),
        resources: input.resources.clone().map(Box::new),
    })
}

/// The `exec_logs` request for job `exec_id` (the input's id, resolved).
pub fn logs_request(
    input: &LogsInput,
    exec_id: ExecId,
) -> std::result::Result<LogsRequest, ErrorData> {
    let stream = input.stream.unwrap_or(StreamSel::Both);
    let max = input.max_bytes.unwrap_or(DEFAULT_LOG_BYTES);
    if !(1..=MAX_LOG_BYTES).contains(&max) {
        return Err(bad_argument(format!("max_bytes must be 1..={MAX_LOG_BYTES}")));
    }
    let wanted = |s: Stream| stream.streams().contains(&s);
    if (input.since_stdout.is_some() && !wanted(Stream::Stdout))
        || (input.since_stderr.is_some() && !wanted(Stream::Stderr))
    {
        return Err(bad_argument("a since_* offset for a stream that `stream` does not read"));
    }
    // Without a tail, a stream with no offset is read from its beginning (codexd would tail it).
    let from = |o: Option<u64>| if input.tail_lines.is_none() { Some(o.unwrap_or(0)) } else { o };
    let mut since = StreamOffsets::default();
    for &s in stream.streams() {
        let given = if s == Stream::Stdout { input.since_stdout } else { input.since_stderr };
        if let Some(offset) = from(given) {
            since.set(s, offset);
        }
    }
    // Each stream may fill the whole budget; the page is cut to `max` over both (`logs_page`).
    Ok(LogsRequest {
        exec_id,
        stream,
        tail: None,
        tail_lines: input.tail_lines,
        since: (since != StreamOffsets::default()).then_some(since),
        follow: false,
        raw: false,
        max_bytes: Some(max),
        since_time: None,
        until_time: None,
        view: input.view.unwrap_or(LogView::Terminal),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "01a20e39-2841-766b-a16c-ac422b0e3096";

    #[test]
    fn logs_pages_start_at_zero_and_give_each_stream_the_budget() {
        let input: LogsInput =
            serde_json::from_value(json!({"exec_id": ID, "since_stderr": 7})).unwrap();
        let id = ExecId::parse(ID).unwrap();
        let req = logs_request(&input, id.clone()).unwrap();
        assert_eq!(req.since, Some(StreamOffsets { stdout: Some(0), stderr: Some(7) }));
        assert_eq!(req.max_bytes, Some(DEFAULT_LOG_BYTES));
        let tail: LogsInput =
            serde_json::from_value(json!({"exec_id": ID, "stream": "stdout", "tail_lines": 3}))
                .unwrap();
        let req = logs_request(&tail, id.clone()).unwrap();
        assert_eq!((req.since, req.max_bytes), (None, Some(DEFAULT_LOG_BYTES)));
        let bad: LogsInput =
            serde_json::from_value(json!({"exec_id": ID, "stream": "stdout", "since_stderr": 1}))
                .unwrap();
        let e = argument_failure(&logs_request(&bad, id).unwrap_err()).unwrap();
        assert_eq!(e.code, crate::error::ErrorCode::Usage, "{e}");
    }

    #[test]
    fn optional_arguments_have_plain_types_without_null() {
        let schema = Value::Object(input_schema::<LogsInput>().as_ref().clone());
        let props = &schema["properties"];
        assert_eq!(props["since_stdout"]["type"], "integer", "{schema}");
        assert_eq!(props["max_bytes"]["minimum"], 1, "{schema}");
        let start = Value::Object(input_schema::<StartInput>().as_ref().clone());
        assert_eq!(start["properties"]["labels"]["type"], "object", "{start}");
        assert!(!start.to_string().contains("null"), "{start}");
        let list = Value::Object(input_schema::<ListInput>().as_ref().clone());
        assert!(!list.to_string().contains("null"), "{list}");
        assert!(list["properties"]["state"]["enum"].to_string().contains("finished"), "{list}");
        for schema in [&schema, &start, &list] {
            assert_eq!(super::super::schema::not_flat(schema, ""), None, "{schema}");
        }
        assert_eq!(start["properties"]["resources"]["type"], "object", "{start}");
        assert!(!schema.to_string().contains("null"), "{schema}");
    }
}
