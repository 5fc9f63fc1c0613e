//! `codex-remote mcp`: a Model Context Protocol server on stdin/stdout, so a coding agent gets
//! native tools instead of shelling out and polling.
//!
//! Tools: `machines`, `exec_start`, `exec_status`, `exec_logs`, `exec_wait`, `exec_cancel`,
//! `exec_list`. Each answers structured JSON (the CLI's objects) plus one short text line.
//! A failure of the call itself (unknown machine, job not found, ssh down) is a *tool error*
//! whose JSON carries the CLI's stable error `code`; arguments that cannot be used are a
//! protocol-level `invalid_params` error. Calls reach machines through the same blocking
//! transport as the CLI, on tokio's blocking pool, so a 25 s `exec_wait` holds no other call up.
//! The config is read at every call: an edit takes effect without restarting the server.

mod stdio;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use rmcp::handler::server::common::{FromContextPart, schema_for_input};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{Error, Result, exit};
use crate::protocol::{
    CancelRequest, CommandSpec, ExecStartRequest, JobRef, JobState, JobStatus, ListRequest,
    LogLine, LogsRequest, PROTOCOL_VERSION, Request, Response, RunStatus, Stream, StreamOffsets,
    StreamSel, WaitRequest,
};
use crate::remote::client::{self, with_machine};
use crate::remote::config::RemoteConfig;
use crate::remote::transport::{Machine, Route};

/// `exec_wait` gives up after this long unless told otherwise: under the tool time-outs of
/// common MCP clients (often 30–60 s).
const DEFAULT_WAIT_SECS: f64 = 25.0;
const MAX_WAIT_SECS: f64 = 3600.0;
/// `exec_logs` reads at most this many bytes of log per call unless told otherwise.
const DEFAULT_LOG_BYTES: u64 = 16 * 1024;
const MAX_LOG_BYTES: u64 = 1024 * 1024;
/// And at most this many lines (a log of empty lines would otherwise make a huge answer).
const MAX_LOG_LINES: usize = 2000;
const DEFAULT_LIST_LIMIT: usize = 20;
const MAX_LIST_LIMIT: usize = 500;

#[derive(Debug, Args)]
pub struct McpArgs {}

/// Runs the server until stdin closes. Only MCP messages go to stdout; problems go to stderr.
pub fn run(config: Option<PathBuf>, _args: McpArgs) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("codex-remote mcp: cannot start the async runtime: {e}");
            return exit::USAGE;
        }
    };
    let result = runtime.block_on(stdio::serve(McpServer::new(config)));
    // A tool call still blocked in ssh must not keep the process after the client has gone.
    runtime.shutdown_background();
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("codex-remote mcp: {e}");
            exit::TRANSPORT
        }
    }
}

/// The MCP server: the tools and where the config is.
#[derive(Debug, Clone)]
pub struct McpServer {
    config: Option<PathBuf>,
    tool_router: ToolRouter<Self>,
}

/// The argument that names a machine, shared by every tool.
const MACHINE_DOC: &str = "The machine: a name from the `machines` tool. Default: the config's \
                           `default_machine`, else `local` (this computer).";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MachinesInput {
    /// Only this machine (default: every configured machine, and `local`).
    machine: Option<String>,
    /// Call each machine's codexd (`hello`) to see that it answers, how fast, and its version
    /// (default true). False only lists the config.
    check: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartInput {
    #[schemars(description = MACHINE_DOC)]
    machine: Option<String>,
    /// A shell command, run as `bash -lc CMD` (a login shell: conda, modules and PATH are
    /// loaded). Give exactly one of `cmd`, `argv`, `script`.
    cmd: Option<String>,
    /// The command as a list of words, run without a shell, e.g. ["python", "train.py"].
    argv: Option<Vec<String>>,
    /// The text of a script, saved on the machine and run with the shell (a #! line is
    /// honoured).
    script: Option<String>,
    /// Working directory on the machine; `~` and relative paths are from the remote home (the
    /// default). A missing directory makes the job `start_failed`.
    cwd: Option<String>,
    /// Environment variables for the job. The job also gets CODEXD_EXEC_ID.
    env: Option<BTreeMap<String, String>>,
    /// The shell for `cmd` and `script`, as words (default `bash -lc`).
    shell: Option<String>,
    /// A name for the job, shown in its status and in `exec_list`.
    name: Option<String>,
    /// Labels for the job, shown in its status.
    labels: Option<BTreeMap<String, String>>,
    /// Retry safety: a start with a key already used on this machine returns the first job
    /// (`replayed: true`) instead of running the command again. Pass your own and reuse it when
    /// you retry after a time-out; without it one is made and returned in `idempotency_key`.
    /// Letters, digits, `-`, `_`, `.`, `:`.
    idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobInput {
    #[schemars(description = MACHINE_DOC)]
    machine: Option<String>,
    /// The job's `exec_id`, as returned by `exec_start` or `exec_list`.
    exec_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsInput {
    #[schemars(description = MACHINE_DOC)]
    machine: Option<String>,
    /// The job's `exec_id`.
    exec_id: String,
    /// Which output: `stdout`, `stderr` or `both` (default `both`).
    stream: Option<StreamSel>,
    /// Byte offset in stdout to read from: the `next_offset.stdout` of the previous call.
    /// Default 0 (the beginning), or the tail with `tail_lines`.
    since_stdout: Option<u64>,
    /// Byte offset in stderr to read from: the `next_offset.stderr` of the previous call.
    since_stderr: Option<u64>,
    /// Only the last N lines (of what follows `since_*`): to look at the end of a long log.
    tail_lines: Option<u64>,
    /// At most this many bytes of log in this answer (default 16384, at most 1048576), split
    /// evenly between the streams with `both`. `more: true` says there is more: call again with
    /// the returned `next_offset`.
    #[schemars(range(min = 1, max = 1048576))]
    max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitInput {
    #[schemars(description = MACHINE_DOC)]
    machine: Option<String>,
    /// The job's `exec_id`.
    exec_id: String,
    /// Give up after this many seconds (default 25, at most 3600) and return the running status
    /// with `timed_out: true`; then call `exec_wait` again. Keep it under your own tool time-out.
    #[schemars(range(min = 0, max = 3600))]
    timeout_seconds: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelInput {
    #[schemars(description = MACHINE_DOC)]
    machine: Option<String>,
    /// The job's `exec_id`.
    exec_id: String,
    /// Seconds between TERM and KILL (default 5).
    #[schemars(range(min = 0, max = 3600))]
    grace_seconds: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListInput {
    #[schemars(description = MACHINE_DOC)]
    machine: Option<String>,
    /// Only jobs in this state.
    state: Option<JobState>,
    /// At most this many jobs, newest first (default 20, at most 500).
    #[schemars(range(min = 1, max = 500))]
    limit: Option<usize>,
}

/// What a tool returns: structured JSON and a one-line summary, or an error with its code.
type ToolResult = std::result::Result<CallToolResult, ErrorData>;

#[tool_router]
impl McpServer {
    pub fn new(config: Option<PathBuf>) -> Self {
        McpServer { config, tool_router: Self::tool_router() }
    }

    /// The configured machines, each checked with a `hello` call.
    #[tool(
        input_schema = input_schema::<MachinesInput>(),
        description = "List the machines jobs can run on, and check each: does its codexd answer \
                       (`ok`), how fast (`latency_ms`), which version. `local` is this computer. \
                       Call this first when unsure which machine to use.",
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    async fn machines(&self, Arguments(input): Arguments<MachinesInput>) -> ToolResult {
        let config = self.config.clone();
        on_blocking_pool(move || machines(config, input)).await
    }

    #[tool(
        input_schema = input_schema::<StartInput>(),
        description = "Start a job (a shell command, argv or script) on a machine and return at \
                       once with its status: `exec_id`, `status: running`. The job survives this \
                       server and the connection. Then call exec_wait (repeatedly) and exec_logs.",
        annotations(destructive_hint = false, idempotent_hint = true, open_world_hint = true)
    )]
    async fn exec_start(&self, Arguments(input): Arguments<StartInput>) -> ToolResult {
        let req = start_request(&input)?;
        let (config, name) = (self.config.clone(), input.machine);
        on_blocking_pool(move || {
            let m = machine(config.as_deref(), name.as_deref())?;
            let answer = client::start(&m, req)?;
            if answer.job.state == JobState::StartFailed {
                let message =
                    answer.job.error.clone().unwrap_or_else(|| "it could not start".into());
                let mut e = Error::new(crate::error::ErrorCode::StartFailed, message);
                e.hint = Some("see `job` for the command, cwd and shell that failed".into());
                let job = Some(with_machine(&answer, &m.name, None));
                return Err(Box::new(ToolFailure { error: e, job }));
            }
            let verb = if answer.replayed == Some(true) { "already started" } else { "started" };
            let key = answer.job.idempotency_key.as_deref().unwrap_or("");
            let line = format!(
                "{verb} job {} on {} ({}; idempotency_key {key})",
                answer.job.exec_id,
                m.name,
                answer.job.state.as_str()
            );
            Ok((with_machine(&answer, &m.name, None), line))
        })
        .await
    }

    #[tool(
        input_schema = input_schema::<JobInput>(),
        description = "A job's status: `status` is running or finished; `state` is running, \
                       succeeded, failed, cancelled, lost or start_failed; `exit_code`.",
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    async fn exec_status(&self, Arguments(input): Arguments<JobInput>) -> ToolResult {
        let (config, name) = (self.config.clone(), input.machine);
        let req = Request::ExecStatus(JobRef { exec_id: input.exec_id });
        on_blocking_pool(move || {
            let m = machine(config.as_deref(), name.as_deref())?;
            let answer = client::status(&m, req)?;
            Ok((with_machine(&answer, &m.name, None), status_line(&answer.job, &m.name)))
        })
        .await
    }

    #[tool(
        input_schema = input_schema::<LogsInput>(),
        description = "Read a page of a job's output (default 16 KiB), as `lines` with their \
                       stream and byte offset. Pass `next_offset.stdout`/`.stderr` back as \
                       `since_stdout`/`since_stderr` to read on without losing or repeating a \
                       byte; `more: true` means there is more already written. A piece with \
                       `partial: true` has no newline yet; the next page continues it.",
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    async fn exec_logs(&self, Arguments(input): Arguments<LogsInput>) -> ToolResult {
        let req = logs_request(&input)?;
        let (config, name) = (self.config.clone(), input.machine);
        on_blocking_pool(move || {
            let m = machine(config.as_deref(), name.as_deref())?;
            logs_page(&m, &req)
        })
        .await
    }

    #[tool(
        input_schema = input_schema::<WaitInput>(),
        description = "Wait until a job finishes, at most `timeout_seconds` (default 25), and \
                       return its status. If it is still running you get `timed_out: true` and \
                       `status: running`: call exec_wait again. Long jobs never time you out.",
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    async fn exec_wait(&self, Arguments(input): Arguments<WaitInput>) -> ToolResult {
        let secs = seconds(input.timeout_seconds, DEFAULT_WAIT_SECS, "timeout_seconds")?;
        let (config, name) = (self.config.clone(), input.machine);
        let timeout_ms = Some(secs.as_millis() as u64);
        let req = Request::ExecWait(WaitRequest { exec_id: input.exec_id, timeout_ms });
        on_blocking_pool(move || {
            let m = machine(config.as_deref(), name.as_deref())?;
            let answer = client::status(&m, req)?;
            let mut value = with_machine(&answer, &m.name, None);
            let line = if answer.timed_out == Some(true) {
                let hint = format!(
                    "still running after {:.0} s; call exec_wait again (or exec_logs to see \
                     its output so far)",
                    secs.as_secs_f64()
                );
                value["hint"] = hint.clone().into();
                format!("job {} on {}: {hint}", answer.job.exec_id, m.name)
            } else {
                status_line(&answer.job, &m.name)
            };
            Ok((value, line))
        })
        .await
    }

    #[tool(
        input_schema = input_schema::<CancelInput>(),
        description = "Cancel a job: TERM to all its processes, `grace_seconds` (default 5), then \
                       KILL. Returns the status (`state: cancelled`); a job that already ended is \
                       left as it was.",
        annotations(destructive_hint = true, idempotent_hint = true, open_world_hint = true)
    )]
    async fn exec_cancel(&self, Arguments(input): Arguments<CancelInput>) -> ToolResult {
        let grace = seconds(input.grace_seconds, 5.0, "grace_seconds")?;
        let (config, name) = (self.config.clone(), input.machine);
        let grace_ms = Some(grace.as_millis() as u64);
        let req = Request::ExecCancel(CancelRequest { exec_id: input.exec_id, grace_ms });
        on_blocking_pool(move || {
            let m = machine(config.as_deref(), name.as_deref())?;
            let answer = client::status(&m, req)?;
            let mut line = status_line(&answer.job, &m.name);
            if let Some(message) = &answer.message {
                line.push_str(&format!(" ({message})"));
            }
            Ok((with_machine(&answer, &m.name, None), line))
        })
        .await
    }

    #[tool(
        input_schema = input_schema::<ListInput>(),
        description = "List a machine's jobs, newest first (default 20), optionally only those \
                       in one `state` (e.g. running).",
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    async fn exec_list(&self, Arguments(input): Arguments<ListInput>) -> ToolResult {
        let limit = input.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(bad_argument(format!("limit must be 1..={MAX_LIST_LIMIT}")));
        }
        let (config, name) = (self.config.clone(), input.machine);
        let req = ListRequest { state: input.state, limit: Some(limit) };
        on_blocking_pool(move || {
            let m = machine(config.as_deref(), name.as_deref())?;
            let list = client::list(&m, req)?;
            let running = list.jobs.iter().filter(|j| j.status == RunStatus::Running).count();
            let line = format!("{} jobs on {} ({running} running)", list.jobs.len(), m.name);
            let jobs: Vec<Value> =
                list.jobs.iter().map(|j| with_machine(j, &m.name, None)).collect();
            Ok((json!({ "machine": m.name, "jobs": jobs }), line))
        })
        .await
    }
}

#[tool_handler(
    router = self.tool_router,
    name = "codex-remote",
    instructions = "Run commands on remote GPU machines (over ssh) or on `local`. Start a job with \
                    exec_start (give an idempotency_key and reuse it if you retry), then call \
                    exec_wait until `status` is `finished` (each call returns within \
                    timeout_seconds, default 25), and read output with exec_logs, passing \
                    `next_offset` back as since_stdout/since_stderr. `state` says how it ended; \
                    `exit_code` is the command's exit code. Errors carry a stable `code`."
)]
impl ServerHandler for McpServer {}

/// Reads the config (at every call, so edits apply) and finds the machine.
fn machine(config: Option<&Path>, name: Option<&str>) -> Result<Machine> {
    Machine::from_config(&RemoteConfig::load(config)?.machine(name)?)
}

/// A tool's arguments. rmcp's own `Parameters` turns arguments that do not parse into a tool
/// error; this server answers them with a protocol-level `invalid_params` error instead, as it
/// does for every argument it cannot use (README "MCP server").
pub struct Arguments<T>(pub T);

impl<S, T: DeserializeOwned> FromContextPart<ToolCallContext<'_, S>> for Arguments<T> {
    fn from_context_part(context: &mut ToolCallContext<S>) -> std::result::Result<Self, ErrorData> {
        let arguments = context.arguments.take().unwrap_or_default();
        serde_json::from_value(Value::Object(arguments))
            .map(Arguments)
            .map_err(|e| bad_argument(format!("invalid arguments for {}: {e}", context.name())))
    }
}

/// The JSON schema of a tool's arguments, from the input type's doc comments.
fn input_schema<T: JsonSchema + 'static>() -> std::sync::Arc<JsonObject> {
    schema_for_input::<T>().unwrap_or_else(|e| panic!("the input schema of a tool: {e}"))
}

/// A failure as a tool answer: the CLI's error object, and optionally the job it is about.
struct ToolFailure {
    error: Error,
    job: Option<Value>,
}

impl From<Error> for Box<ToolFailure> {
    fn from(error: Error) -> Self {
        Box::new(ToolFailure { error, job: None })
    }
}

/// What a blocking tool body ends with: the JSON and the line, or the failure.
type Outcome = std::result::Result<(Value, String), Box<ToolFailure>>;

/// Runs a blocking tool body on tokio's blocking pool and turns its outcome into a tool result.
async fn on_blocking_pool<F>(body: F) -> ToolResult
where
    F: FnOnce() -> Outcome + Send + 'static,
{
    let outcome = tokio::task::spawn_blocking(body)
        .await
        .map_err(|e| ErrorData::internal_error(format!("the tool task failed: {e}"), None))?;
    Ok(match outcome {
        Ok((value, line)) => tool_answer(value, line, false),
        Err(failure) => {
            let ToolFailure { error: e, job } = *failure;
            let mut value = json!({ "type": "error", "code": e.code, "message": e.message });
            if let Some(hint) = &e.hint {
                value["hint"] = hint.clone().into();
            }
            if let Some(job) = job {
                value["exec_id"] = job["exec_id"].clone();
                value["job"] = job;
            }
            let hint = e.hint.as_deref().map(|h| format!(" (hint: {h})")).unwrap_or_default();
            tool_answer(value, format!("{}: {}{hint}", e.code, e.message), true)
        }
    })
}

/// The structured JSON, the short line first in `content`, and the JSON again as text for
/// clients that show the model only `content` (what the MCP spec asks for).
fn tool_answer(value: Value, line: String, is_error: bool) -> CallToolResult {
    let mut result = if is_error {
        CallToolResult::structured_error(value.clone())
    } else {
        CallToolResult::structured(value.clone())
    };
    result.content = vec![ContentBlock::text(line), ContentBlock::text(value.to_string())];
    result
}

/// Arguments that cannot be used: a protocol-level `invalid_params` error, with the CLI's code.
fn bad_argument(message: impl Into<String>) -> ErrorData {
    ErrorData::invalid_params(message.into(), Some(json!({ "code": "usage" })))
}

fn seconds(
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

fn start_request(input: &StartInput) -> std::result::Result<ExecStartRequest, ErrorData> {
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
    })
}

fn logs_request(input: &LogsInput) -> std::result::Result<LogsRequest, ErrorData> {
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
    let per_stream = max.div_ceil(stream.streams().len() as u64);
    Ok(LogsRequest {
        exec_id: input.exec_id.clone(),
        stream,
        tail: None,
        tail_lines: input.tail_lines,
        since: (since != StreamOffsets::default()).then_some(since),
        follow: false,
        raw: false,
        max_bytes: Some(per_stream),
    })
}

/// One `exec_logs` page: the lines, and where the next page starts per stream.
fn logs_page(m: &Machine, req: &LogsRequest) -> Outcome {
    let mut lines: Vec<LogLine> = Vec::new();
    // Where each stream stops when the line cap cuts the page short.
    let mut cut = StreamOffsets::default();
    let end = client::logs(m, req, &mut |r| {
        if let Response::Log(line) = r {
            if lines.len() >= MAX_LOG_LINES {
                if cut.get(line.stream).is_none() {
                    cut.set(line.stream, line.offset);
                }
            } else {
                lines.push(line);
            }
        }
        Ok(())
    })?;
    let mut next = end.next_offset;
    for &s in req.stream.streams() {
        if let Some(offset) = cut.get(s) {
            next.set(s, offset);
        }
    }
    let more = end.more || cut != StreamOffsets::default();
    let offsets: Vec<String> = req
        .stream
        .streams()
        .iter()
        .filter_map(|&s| next.get(s).map(|o| format!("since_{}={o}", s.as_str())))
        .collect();
    let offsets = offsets.join(", ");
    let hint = match (more, end.status) {
        (true, _) => format!("more output: call exec_logs again with {offsets}"),
        (false, RunStatus::Running) => {
            format!("no more output yet; the job is running: later call exec_logs with {offsets}")
        }
        (false, RunStatus::Finished) => "end of the log; the job has finished".to_string(),
    };
    let bytes: usize = lines.iter().map(|l| l.line.len()).sum();
    let line = format!(
        "{} lines ({bytes} bytes) of job {} on {} ({}); {hint}",
        lines.len(),
        end.exec_id,
        m.name,
        end.state.as_str()
    );
    let value = json!({
        "exec_id": end.exec_id,
        "machine": m.name,
        "lines": lines,
        "next_offset": next,
        "size": end.size,
        "more": more,
        "status": end.status,
        "state": end.state,
        "exit_code": end.exit_code,
        "hint": hint,
    });
    Ok((value, line))
}

/// "job ID on M: succeeded, exit 0, 1.2 s".
fn status_line(job: &JobStatus, machine: &str) -> String {
    let mut line = format!("job {} on {machine}: {}", job.exec_id, job.state.as_str());
    if let Some(code) = job.exit_code {
        line.push_str(&format!(", exit {code}"));
    }
    if let Some(signal) = job.signal {
        line.push_str(&format!(", signal {signal}"));
    }
    if let Some(ms) = job.duration_ms {
        line.push_str(&format!(", {:.1} s", ms as f64 / 1000.0));
    }
    if let Some(error) = &job.error {
        line.push_str(&format!(" ({error})"));
    }
    line
}

/// The `machines` tool: the config's machines (and `local`), each checked in parallel.
fn machines(config: Option<PathBuf>, input: MachinesInput) -> Outcome {
    let config = RemoteConfig::load(config.as_deref())?;
    let default = config.machine(None).map(|m| m.name).ok();
    let names: Vec<String> = match &input.machine {
        Some(name) => vec![config.machine(Some(name))?.name],
        None => config.machine_names(),
    };
    let check = input.check.unwrap_or(true);
    let entries: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .map(|name| {
                let config = &config;
                let default = default.as_deref();
                scope.spawn(move || machine_entry(config, name, default == Some(name), check))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(Value::Null)).collect()
    });
    let summary: Vec<String> = entries
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap_or("?");
            match (&e["ok"], &e["error"]["code"]) {
                (Value::Bool(true), _) => format!(
                    "{name} ok ({} ms, codexd {})",
                    e["latency_ms"],
                    e["codexd_version"].as_str().unwrap_or("?")
                ),
                (_, Value::String(code)) => format!("{name} {code}"),
                _ => format!("{name} not checked"),
            }
        })
        .collect();
    let line = format!("{} machines: {}", entries.len(), summary.join("; "));
    Ok((json!({ "machines": entries, "default_machine": default }), line))
}

fn machine_entry(config: &RemoteConfig, name: &str, is_default: bool, check: bool) -> Value {
    let mut entry = json!({ "name": name, "default": is_default });
    let machine = config.machine(Some(name)).and_then(|m| Machine::from_config(&m));
    let m = match machine {
        Ok(m) => m,
        Err(e) => {
            entry["ok"] = false.into();
            entry["error"] = json!(crate::protocol::ErrorBody::from(e));
            return entry;
        }
    };
    match &m.route {
        Route::Local { .. } => entry["route"] = "local".into(),
        Route::Ssh(target) => {
            entry["route"] = "ssh".into();
            entry["ssh"] = target.destination.clone().into();
        }
    }
    if !check {
        return entry;
    }
    let started = Instant::now();
    match client::hello(&m) {
        Ok(hello) => {
            entry["ok"] = true.into();
            entry["latency_ms"] = (started.elapsed().as_millis() as u64).into();
            entry["codexd_version"] = hello.version.into();
            entry["protocol"] = hello.protocol.into();
            entry["compatible"] = (hello.protocol == PROTOCOL_VERSION).into();
            entry["host"] = hello.host.into();
            entry["user"] = hello.user.into();
            entry["data_dir"] = hello.data_dir.into();
        }
        Err(e) => {
            entry["ok"] = false.into();
            entry["error"] = json!(crate::protocol::ErrorBody::from(e));
        }
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_a_described_input_schema() {
        let tools = McpServer::new(None).tool_router.list_all();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        for name in [
            "machines",
            "exec_start",
            "exec_status",
            "exec_logs",
            "exec_wait",
            "exec_cancel",
            "exec_list",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        for tool in &tools {
            assert!(tool.description.as_deref().is_some_and(|d| d.len() > 40), "{}", tool.name);
            let props = tool.input_schema.get("properties").and_then(Value::as_object);
            for (prop, schema) in props.into_iter().flatten() {
                let text = schema.to_string();
                assert!(text.contains("description"), "{}.{prop} has no description", tool.name);
            }
        }
    }

    #[test]
    fn logs_pages_start_at_zero_and_split_the_budget() {
        let input: LogsInput =
            serde_json::from_value(json!({"exec_id": "x", "since_stderr": 7})).unwrap();
        let req = logs_request(&input).unwrap();
        assert_eq!(req.since, Some(StreamOffsets { stdout: Some(0), stderr: Some(7) }));
        assert_eq!(req.max_bytes, Some(DEFAULT_LOG_BYTES / 2));
        let tail: LogsInput =
            serde_json::from_value(json!({"exec_id": "x", "stream": "stdout", "tail_lines": 3}))
                .unwrap();
        let req = logs_request(&tail).unwrap();
        assert_eq!((req.since, req.max_bytes), (None, Some(DEFAULT_LOG_BYTES)));
        let bad: LogsInput =
            serde_json::from_value(json!({"exec_id": "x", "stream": "stdout", "since_stderr": 1}))
                .unwrap();
        assert!(logs_request(&bad).is_err());
    }
}
