//! `codex-remote mcp`: a Model Context Protocol server on stdin/stdout, so a coding agent gets
//! native tools instead of shelling out and polling.
//!
//! Tools: `machines`, `exec_start`, `exec_run`, `exec_status`, `exec_logs`, `exec_wait`,
//! `exec_cancel`, `exec_list`, and (files and sync) `file_read`, `file_write`, `sync_push`, `sync_pull`. Each answers structured JSON (the CLI's objects, described by its `outputSchema`)
//! plus one short text line; `exec_logs` answers its page as plain text instead. A failure, of the
//! call (unknown machine, job not found, ssh down) or of its arguments (`inputs`), is a *tool
//! error* (`isError: true`) whose JSON is the CLI's error object with its stable `code`. Calls
//! reach machines through the same blocking transport as the CLI, on tokio's blocking pool, over
//! one shared `codexd rpc` session per machine ([`crate::remote::mux`]), so a 25 s `exec_wait`
//! holds no other call up; it sends progress notifications when the client asked for them. The
//! server speaks MCP 2026-07-28 (stateless: `server/discover`, the version in each request's
//! `_meta`) and 2025-11-25 (and the older revisions rmcp knows), negotiated per request.
//! `exec_run` and `exec_wait` answer a client that declared MCP tasks with a task that is the job
//! itself ([`tasks`]). Reads and waits whose session dropped are asked once more ([`again`]). The
//! config is read at every call: an edit takes effect without restarting the server.

mod files;
mod hints;
mod inputs;
mod outputs;
mod schema;
mod stdio;
mod tasks;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
    GetTaskParams, GetTaskResult, Implementation, JsonObject, ProgressNotificationParam,
    ProtocolVersion, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde_json::{Value, json};

use crate::codex_remote::exec::resolve_id;
use crate::error::{Error, ErrorCode, Result, exit};
use crate::protocol::OnMachine;
use crate::protocol::{
    CancelRequest, ExecStartRequest, JobRef, JobState, JobStatus, LogsRequest, PROTOCOL_VERSION,
    Request, Response, RunStatus, StatusResponse, Stream, StreamOffsets, WaitRequest,
};
use crate::remote::client;
use crate::remote::config::RemoteConfig;
use crate::remote::mux::SessionPool;
use crate::remote::transport::{Machine, Route};

use inputs::{
    Arguments, CancelInput, DEFAULT_LIST_LIMIT, DEFAULT_WAIT_SECS, JobInput, ListInput, LogsInput,
    MAX_LIST_LIMIT, MachinesInput, StartInput, WaitInput, argument_failure, bad_argument,
    input_schema, logs_request, seconds, start_request,
};

/// `exec_logs` returns at most this many lines (a log of empty lines would otherwise make a huge
/// answer).
const MAX_LOG_LINES: usize = 2000;
/// The newest MCP revision with an `initialize` handshake: what `initialize` negotiates at most.
const MCP_REVISION: ProtocolVersion = ProtocolVersion::V_2025_11_25;
/// The newest MCP revision this server speaks (stateless: `server/discover`, and the version in
/// each request's `_meta`), beside the older ones.
const MCP_NEWEST: ProtocolVersion = ProtocolVersion::V_2026_07_28;
/// How often a long tool call sends a progress notification (when the client sent a token).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

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
    /// Every tool call of the agent goes on one shared session per machine.
    sessions: Arc<SessionPool>,
    tool_router: ToolRouter<Self>,
}

/// What a tool returns: structured JSON and a one-line summary, or an error with its code.
type ToolResult = std::result::Result<CallToolResult, ErrorData>;

#[tool_router]
impl McpServer {
    pub fn new(config: Option<PathBuf>) -> Self {
        let tool_router = Self::tool_router() + Self::files_tool_router();
        McpServer { config, sessions: SessionPool::new(), tool_router }
    }

    /// The configured machines, each checked with a `hello` call.
    #[tool(
        input_schema = input_schema::<MachinesInput>(),
        output_schema = outputs::machines(),
        description = "List the machines jobs can run on, and check each: does its codexd answer \
                       (`ok`), how fast (`latency_ms`), which version. `local` is this computer. \
                       Call this first when unsure which machine to use.",
        annotations(title = "Machines", read_only_hint = true, open_world_hint = true)
    )]
    async fn machines(&self, Arguments(input): Arguments<MachinesInput>) -> ToolResult {
        let (config, sessions) = (self.config.clone(), self.sessions.clone());
        on_blocking_pool(move || machines(config, input, sessions)).await
    }

    #[tool(
        input_schema = input_schema::<StartInput>(),
        output_schema = outputs::job_status(),
        description = "Start a job (a shell command, argv or script) on a machine and return at \
                       once with its status: `exec_id`, `status: running`. The job survives this \
                       server and the connection. Then call exec_wait (repeatedly) and exec_logs. \
                       The command runs as you, with your rights: it may change anything you may.",
        // Arbitrary commands: destructive and open-world. Idempotent only with a key, which
        // is optional, so not in general.
        annotations(
            title = "Start a job",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn exec_start(&self, Arguments(input): Arguments<StartInput>) -> ToolResult {
        let req = start_request(&input)?;
        let name = input.machine;
        self.on_machine(name, move |m| {
            let answer = start_job(m, req)?;
            let verb = if answer.replayed == Some(true) { "already started" } else { "started" };
            let key = answer.job.idempotency_key.as_deref().unwrap_or("");
            let line = format!(
                "{verb} job {} on {} ({}; idempotency_key {key})",
                answer.job.exec_id,
                m.name,
                answer.job.state.as_str()
            );
            Ok((OnMachine::new(&answer, &m.name).to_value(), line))
        })
        .await
    }

    #[tool(
        input_schema = input_schema::<JobInput>(),
        output_schema = outputs::job_status(),
        description = "A job's status: `status` is running or finished; `state` is running, \
                       succeeded, failed, cancelled, lost or start_failed; `exit_code`.",
        annotations(title = "Job status", read_only_hint = true, open_world_hint = true)
    )]
    async fn exec_status(&self, Arguments(input): Arguments<JobInput>) -> ToolResult {
        let name = input.machine;
        self.on_machine(name, move |m| {
            let exec_id = again(|| resolve_id(m, &input.exec_id))?;
            let req = Request::ExecStatus(JobRef { exec_id });
            let answer = again(|| client::status(m, req.clone()))?;
            Ok((OnMachine::new(&answer, &m.name).to_value(), status_line(&answer.job, &m.name)))
        })
        .await
    }

    #[tool(
        input_schema = input_schema::<LogsInput>(),
        output_schema = outputs::logs_page(),
        description = "Read a page of a job's output: at most `max_bytes` of log (default 16 KiB, \
                       at most 1 MiB, both streams together) and at most 2000 lines. The text \
                       answer is the page as plain text: a `[stdout from byte N]` marker, the \
                       lines, the same for stderr, then a `[next_offset ...]` line. Pass \
                       `next_offset.stdout`/`.stderr` back as `since_stdout`/`since_stderr` to \
                       read on without losing or repeating a byte; `more: true` means there is \
                       more already written. The structured answer has each stream's exact text \
                       and offset; a text without a newline at its end has an unfinished last \
                       line, which the next page continues.",
        annotations(title = "Read job output", read_only_hint = true, open_world_hint = true)
    )]
    async fn exec_logs(&self, Arguments(input): Arguments<LogsInput>) -> ToolResult {
        // The arguments are checked before the machine is asked anything.
        let placeholder = crate::protocol::ExecId::parse("00000000-0000-7000-8000-000000000000")
            .expect("a well-formed id");
        let max_bytes = logs_request(&input, placeholder)?.max_bytes.unwrap_or_default();
        let name = input.machine.clone();
        let mut result = self
            .on_machine(name, move |m| {
                let exec_id = again(|| resolve_id(m, &input.exec_id))?;
                let req = logs_request(&input, exec_id).map_err(|e| {
                    Box::new(ToolFailure {
                        error: argument_failure(&e)
                            .unwrap_or_else(|| Error::new(ErrorCode::Usage, e.message)),
                        job: None,
                    })
                })?;
                logs_page(m, &req, max_bytes)
            })
            .await?;
        if result.is_error != Some(true)
            && let Some(page) = &result.structured_content
        {
            result.content = vec![ContentBlock::text(logs_text(page))];
        }
        Ok(result)
    }

    #[tool(
        input_schema = input_schema::<WaitInput>(),
        output_schema = outputs::job_status(),
        description = "Wait until a job finishes, at most `timeout_seconds` (default 25), and \
                       return its status. If it is still running you get `timed_out: true` and \
                       `status: running`: call exec_wait again. Long jobs never time you out. \
                       With a progress token, a progress notification comes every 5 s.",
        annotations(title = "Wait for a job", read_only_hint = true, open_world_hint = true)
    )]
    async fn exec_wait(
        &self,
        Arguments(input): Arguments<WaitInput>,
        context: RequestContext<RoleServer>,
    ) -> ToolResult {
        let secs = seconds(input.timeout_seconds, DEFAULT_WAIT_SECS, "timeout_seconds")?;
        let name = input.machine;
        let wait = self.on_machine(name, move |m| {
            let exec_id = again(|| resolve_id(m, &input.exec_id))?;
            wait_answer(m, exec_id, secs)
        });
        with_progress(&context, secs, wait).await
    }

    #[tool(
        input_schema = run_schema(),
        output_schema = outputs::job_status(),
        description = "Run a job to its end: start it as exec_start does (same arguments), then \
                       wait as exec_wait does, at most `timeout_seconds` (default 25; if it is \
                       still running you get `timed_out: true`: call exec_wait). A client with \
                       MCP tasks gets a task at once instead (id MACHINE/EXEC_ID): poll it with \
                       tasks/get (its status message is the job's last output line; the result \
                       is the end status and a tail of the output), end it with tasks/cancel.",
        annotations(
            title = "Run a job to its end",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn exec_run(
        &self,
        Arguments(mut input): Arguments<JsonObject>,
        context: RequestContext<RoleServer>,
    ) -> ToolResult {
        let secs = match input.remove("timeout_seconds") {
            None => seconds(None, DEFAULT_WAIT_SECS, "timeout_seconds")?,
            Some(v) => match v.as_f64() {
                Some(s) => seconds(Some(s), DEFAULT_WAIT_SECS, "timeout_seconds")?,
                None => return Err(bad_argument("timeout_seconds must be a number")),
            },
        };
        let input: StartInput = serde_json::from_value(Value::Object(input))
            .map_err(|e| bad_argument(format!("invalid arguments for exec_run: {e}")))?;
        let req = start_request(&input)?;
        let run = self.on_machine(input.machine, move |m| {
            let answer = start_job(m, req)?;
            let exec_id = crate::protocol::ExecId::parse(&answer.job.exec_id)?;
            wait_answer(m, exec_id, secs)
        });
        with_progress(&context, secs, run).await
    }

    #[tool(
        input_schema = input_schema::<CancelInput>(),
        output_schema = outputs::job_status(),
        description = "Cancel a job: TERM to all its processes, `grace_seconds` (default 5), then \
                       KILL. Returns the status (`state: cancelled`); a job that already ended is \
                       left as it was.",
        annotations(
            title = "Cancel a job",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn exec_cancel(&self, Arguments(input): Arguments<CancelInput>) -> ToolResult {
        let grace = seconds(input.grace_seconds, 5.0, "grace_seconds")?;
        let name = input.machine;
        let grace_ms = Some(grace.as_millis() as u64);
        self.on_machine(name, move |m| {
            let exec_id = again(|| resolve_id(m, &input.exec_id))?;
            let req = Request::ExecCancel(CancelRequest { exec_id, grace_ms });
            let answer = again(|| client::status(m, req.clone()))?;
            let mut line = status_line(&answer.job, &m.name);
            if let Some(message) = &answer.message {
                line.push_str(&format!(" ({message})"));
            }
            Ok((OnMachine::new(&answer, &m.name).to_value(), line))
        })
        .await
    }

    #[tool(
        input_schema = input_schema::<ListInput>(),
        output_schema = outputs::job_list(),
        description = "List a machine's jobs, newest first (default 20), optionally only those \
                       in one `state` (e.g. running), or `finished` for all that ended.",
        annotations(title = "List jobs", read_only_hint = true, open_world_hint = true)
    )]
    async fn exec_list(&self, Arguments(input): Arguments<ListInput>) -> ToolResult {
        let limit = input.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(bad_argument(format!("limit must be 1..={MAX_LIST_LIMIT}")));
        }
        let name = input.machine;
        let mut req = input.state.map(inputs::StateArg::request).unwrap_or_default();
        req.limit = Some(limit);
        self.on_machine(name, move |m| {
            let list = again(|| client::list(m, req.clone()))?;
            let running = list.jobs.iter().filter(|j| j.status == RunStatus::Running).count();
            let line = format!("{} jobs on {} ({running} running)", list.jobs.len(), m.name);
            let jobs: Vec<Value> =
                list.jobs.iter().map(|j| OnMachine::new(j, &m.name).to_value()).collect();
            Ok((json!({ "machine": m.name, "jobs": jobs }), line))
        })
        .await
    }
}

/// What the server tells a client about its tools, once, at `initialize`.
const INSTRUCTIONS: &str = "Run commands on remote GPU machines (over ssh) or on `local`. \
                            Start a job with exec_start (give an idempotency_key and reuse it \
                            if you retry), then call exec_wait until `status` is `finished` \
                            (each call returns within timeout_seconds, default 25), and read \
                            output with exec_logs, passing `next_offset` back as \
                            since_stdout/since_stderr. `state` says how it ended; `exit_code` \
                            is the command's exit code. Errors carry a stable `code`. An \
                            idempotency key stands for one request: reusing it for another \
                            command is the error idempotency_conflict.";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for McpServer {
    /// Runs the tool; an argument it cannot use is answered as a tool error, which the model
    /// reads (MCP 2025-11-25), while an unknown tool stays a protocol error.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResponse, ErrorData> {
        let client_has_tasks = context.client_capabilities().is_some_and(|c| c.supports_tasks());
        if tasks::wanted(&request, client_has_tasks) {
            return Ok(tasks::create(self, request).await);
        }
        let call = ToolCallContext::new(self, request, context);
        match self.tool_router.call(call).await {
            Err(e) => match argument_failure(&e) {
                Some(error) => Ok(failure_answer(ToolFailure { error, job: None }).into()),
                None => Err(e),
            },
            answer => answer,
        }
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(&MCP_NEWEST))
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<GetTaskResult, ErrorData> {
        tasks::get(self, request.task_id).await
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<(), ErrorData> {
        tasks::cancel(self, request.task_id).await
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_tasks().build())
            .with_protocol_version(MCP_REVISION)
            .with_server_info(Implementation::new("codex-remote", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

/// Runs `work`, and while it runs sends a progress notification every `PROGRESS_EVERY` if the
/// client sent a progress token, so a client that resets its time-out on progress keeps waiting.
/// `limit` is how long the work may take at most (the `total`).
async fn with_progress<T>(
    context: &RequestContext<RoleServer>,
    limit: Duration,
    work: impl Future<Output = T>,
) -> T {
    let Some(token) = context.meta.get_progress_token() else {
        return work.await;
    };
    let started = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval_at(started + PROGRESS_EVERY, PROGRESS_EVERY);
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => {
                let secs = started.elapsed().as_secs_f64().round();
                let note = ProgressNotificationParam::new(token.clone(), secs)
                    .with_total(limit.as_secs_f64().max(secs))
                    .with_message(format!("still working after {secs:.0} s"));
                // A client that is gone is noticed by the call itself.
                let _ = context.peer.notify_progress(note).await;
            }
        }
    }
}

impl McpServer {
    /// Runs a tool body with the named machine, on the blocking pool (the transport blocks).
    async fn on_machine<F>(&self, name: Option<String>, body: F) -> ToolResult
    where
        F: FnOnce(&Machine) -> Outcome + Send + 'static,
    {
        let (config, sessions) = (self.config.clone(), self.sessions.clone());
        on_blocking_pool(move || body(&machine(config.as_deref(), name.as_deref(), sessions)?))
            .await
    }
}

/// `exec_start`'s arguments and `timeout_seconds`: `exec_run`'s schema.
fn run_schema() -> std::sync::Arc<JsonObject> {
    let mut schema = input_schema::<StartInput>().as_ref().clone();
    schema["properties"]["timeout_seconds"] = json!({
        "type": "number",
        "minimum": 0,
        "maximum": inputs::MAX_WAIT_SECS,
        "description": "Wait at most this many seconds (default 25, at most 3600) for the end; \
                        then you get the running status with `timed_out: true`: call exec_wait.",
    });
    std::sync::Arc::new(schema)
}

/// Starts a job. Without a key of the caller's, it gets one here, so the retry of a start
/// whose session dropped finds the first job instead of starting a second.
fn start_job(
    m: &Machine,
    mut req: ExecStartRequest,
) -> std::result::Result<StatusResponse, Box<ToolFailure>> {
    if req.idempotency_key.is_none() && !m.answers_in_process() {
        req.idempotency_key = Some(format!("mcp-{}", uuid::Uuid::now_v7().simple()));
    }
    let answer = again(|| client::start(m, req.clone()))?;
    if answer.job.state == JobState::StartFailed {
        let message = answer.job.error.clone().unwrap_or_else(|| "it could not start".into());
        let e = Error::new(ErrorCode::StartFailed, message)
            .with_hint("see `job` for the command, cwd and shell that failed");
        let job = Some(OnMachine::new(&answer, &m.name).to_value());
        return Err(Box::new(ToolFailure { error: e, job }));
    }
    Ok(answer)
}

/// `exec_wait` on job `exec_id` for at most `secs`: the status, with a hint when it timed out.
fn wait_answer(m: &Machine, exec_id: crate::protocol::ExecId, secs: Duration) -> Outcome {
    let timeout_ms = Some(secs.as_millis() as u64);
    let req = Request::ExecWait(WaitRequest { exec_id, timeout_ms });
    let answer = again(|| client::status(m, req.clone()))?;
    let mut value = OnMachine::new(&answer, &m.name).to_value();
    let line = if answer.timed_out == Some(true) {
        let hint = format!(
            "still running after {:.0} s; call exec_wait again (or exec_logs to see its \
             output so far)",
            secs.as_secs_f64()
        );
        value["hint"] = hint.clone().into();
        format!("job {} on {}: {hint}", answer.job.exec_id, m.name)
    } else {
        status_line(&answer.job, &m.name)
    };
    Ok((value, line))
}

/// A read, a wait or a keyed start whose session dropped (`ssh_failed`) is asked once more,
/// on a new session: the job runs on, and these calls are safe to repeat.
fn again<T>(mut call: impl FnMut() -> Result<T>) -> Result<T> {
    match call() {
        Err(e) if e.code == ErrorCode::SshFailed => call(),
        other => other,
    }
}

/// Reads the config (at every call, so edits apply) and finds the machine, its calls on the
/// server's `sessions`.
fn machine(
    config: Option<&Path>,
    name: Option<&str>,
    sessions: Arc<SessionPool>,
) -> Result<Machine> {
    Ok(Machine::from_config(&RemoteConfig::load(config)?.machine(name)?)?.with_sessions(sessions))
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
        Err(failure) => failure_answer(*failure),
    })
}

/// A failure as a tool error: the CLI's error object (and the job it is about).
fn failure_answer(failure: ToolFailure) -> CallToolResult {
    let ToolFailure { error: mut e, job } = failure;
    e.hint = e.hint.as_deref().map(hints::for_mcp);
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

/// One `exec_logs` page: each stream's text from its offset, cut to `max_bytes` of log over both
/// streams and `MAX_LOG_LINES` lines, and where the next page starts per stream.
fn logs_page(m: &Machine, req: &LogsRequest, max_bytes: u64) -> Outcome {
    let mut pages: Vec<(Stream, StreamPage)> = Vec::new();
    let mut budget = max_bytes;
    let mut lines = 0usize;
    // Where each stream stops when a cap cuts the page short.
    let mut cut = StreamOffsets::default();
    let end = client::logs(m, req, &mut |r| {
        let Response::Log(line) = r else { return Ok(()) };
        let bytes = line.line.len() as u64 + u64::from(!line.partial);
        if cut.get(line.stream).is_some() || bytes > budget || lines >= MAX_LOG_LINES {
            if cut.get(line.stream).is_none() {
                cut.set(line.stream, line.offset);
            }
            return Ok(());
        }
        budget -= bytes;
        lines += 1;
        if pages.last().is_none_or(|(s, _)| *s != line.stream) {
            let page = StreamPage { offset: line.offset, text: String::new(), lines: 0 };
            pages.push((line.stream, page));
        }
        let (_, page) = pages.last_mut().expect("pushed above");
        page.text.push_str(&line.line);
        if !line.partial {
            page.text.push('\n');
        }
        page.lines += 1;
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
    let bytes = max_bytes - budget;
    let line = format!(
        "{lines} lines ({bytes} bytes) of job {} on {} ({}); {hint}",
        end.exec_id,
        m.name,
        end.state.as_str()
    );
    let mut value = json!({
        "exec_id": end.exec_id,
        "machine": m.name,
        "next_offset": next,
        "size": end.size,
        "more": more,
        "status": end.status,
        "state": end.state,
        "exit_code": end.exit_code,
        "hint": hint,
    });
    for (stream, page) in pages {
        value[stream.as_str()] = json!(page);
    }
    Ok((value, line))
}

/// What one stream gave to a log page: its exact text from `offset`.
#[derive(serde::Serialize)]
struct StreamPage {
    offset: u64,
    text: String,
    lines: usize,
}

/// A log page as the plain text an agent reads: per stream a `[stdout from byte N]` marker and
/// its lines, then one line with the next offsets and what to do next.
fn logs_text(page: &Value) -> String {
    let mut text = String::new();
    let mut unfinished = Vec::new();
    for stream in ["stdout", "stderr"] {
        let Some(piece) = page.get(stream) else { continue };
        let body = piece["text"].as_str().unwrap_or_default();
        text.push_str(&format!("[{stream} from byte {}]\n{body}", piece["offset"]));
        if !body.ends_with('\n') {
            text.push('\n');
            unfinished.push(stream);
        }
    }
    let offsets: Vec<String> = ["stdout", "stderr"]
        .iter()
        .filter_map(|s| page["next_offset"][s].as_u64().map(|o| format!("{s}={o}")))
        .collect();
    let mut footer = format!("[next_offset {}; more: {}", offsets.join(" "), page["more"]);
    if !unfinished.is_empty() {
        footer.push_str(&format!("; unfinished last line: {}", unfinished.join(", ")));
    }
    let state = page["state"].as_str().unwrap_or("?");
    match page["exit_code"].as_i64() {
        Some(code) => footer.push_str(&format!("; job {state}, exit {code}")),
        None => footer.push_str(&format!("; job {state}")),
    }
    footer.push_str(&format!("; {}]", page["hint"].as_str().unwrap_or_default()));
    text.push_str(&footer);
    text
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
fn machines(config: Option<PathBuf>, input: MachinesInput, sessions: Arc<SessionPool>) -> Outcome {
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
                let (default, sessions) = (default.as_deref(), sessions.clone());
                let is_default = default == Some(name);
                scope.spawn(move || machine_entry(config, name, is_default, check, sessions))
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
                    "{name} ok ({} ms, codexd {}{})",
                    e["latency_ms"],
                    e["codexd_version"].as_str().unwrap_or("?"),
                    gpu_summary(&e["gpus"]["gpus"])
                ),
                (_, Value::String(code)) => format!("{name} {code}"),
                _ => format!("{name} not checked"),
            }
        })
        .collect();
    let plural = if entries.len() == 1 { "" } else { "s" };
    let line = format!("{} machine{plural}: {}", entries.len(), summary.join("; "));
    Ok((json!({ "machines": entries, "default_machine": default }), line))
}

/// ", 2 GPUs, 1 free" for a machine that reported GPUs.
fn gpu_summary(gpus: &Value) -> String {
    match gpus.as_array() {
        Some(gpus) if !gpus.is_empty() => {
            let free = gpus.iter().filter(|g| g["free"] == true).count();
            format!(", {} GPUs, {free} free", gpus.len())
        }
        _ => String::new(),
    }
}

fn machine_entry(
    config: &RemoteConfig,
    name: &str,
    is_default: bool,
    check: bool,
    sessions: Arc<SessionPool>,
) -> Value {
    let mut entry = json!({ "name": name, "default": is_default });
    let machine = config.machine(Some(name)).and_then(|m| Machine::from_config(&m));
    let machine = machine.map(|m| m.with_sessions(sessions));
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
        Route::Http(target) => {
            entry["route"] = "http".into();
            entry["addr"] = target.addr.clone().into();
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
            if let Some(gpus) = crate::remote::machine::gpu_report(&m, &hello.capabilities) {
                entry["gpus"] = json!(gpus);
            }
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
            "exec_run",
            "file_read",
            "file_write",
            "sync_push",
            "sync_pull",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        for tool in &tools {
            let schema = Value::Object(tool.input_schema.as_ref().clone());
            assert_eq!(schema::not_flat(&schema, ""), None, "{}: {schema}", tool.name);
            let title = tool.annotations.as_ref().and_then(|a| a.title.as_deref());
            assert!(title.is_some_and(|t| !t.is_empty()), "{} has no title", tool.name);
            assert!(tool.description.as_deref().is_some_and(|d| d.len() > 40), "{}", tool.name);
            let props = tool.input_schema.get("properties").and_then(Value::as_object);
            for (prop, schema) in props.into_iter().flatten() {
                let text = schema.to_string();
                assert!(text.contains("description"), "{}.{prop} has no description", tool.name);
            }
        }
    }
}
