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
//!
//! Here: the server, its protocol handler and what every tool shares. The exec tools are in
//! [`tools`] (the `exec_logs` page in [`logs`], the `machines` check in [`machines`]), the file
//! and sync tools in [`files`], their arguments in [`inputs`] and answers in [`outputs`].

mod files;
mod hints;
mod inputs;
mod logs;
mod machines;
mod outputs;
mod resources;
mod schema;
mod stdio;
mod tasks;
mod tools;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
    GetTaskParams, GetTaskResult, Implementation, ListResourceTemplatesResult, ListResourcesResult,
    PaginatedRequestParams, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities, ServerConfig, SubscribeRequestParams, SubscriptionFilter,
    UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler, tool_handler};
use serde_json::{Value, json};

use crate::error::{Error, ErrorCode, Result, exit};
use crate::protocol::JobStatus;
use crate::remote::config::RemoteConfig;
use crate::remote::machine::Machine;
use crate::remote::mux::SessionPool;

use inputs::argument_failure;

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
    /// The resource subscriptions and their watchers, one per machine.
    watchers: resources::Watchers,
}

/// What a tool returns: structured JSON and a one-line summary, or an error with its code.
type ToolResult = std::result::Result<CallToolResult, ErrorData>;

impl McpServer {
    pub fn new(config: Option<PathBuf>) -> Self {
        let tool_router = Self::tool_router() + Self::files_tool_router();
        let sessions = SessionPool::new();
        McpServer { config, sessions, tool_router, watchers: resources::Watchers::default() }
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

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(resources::list(self.config.clone())?))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(resources::templates()))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ReadResourceResponse, ErrorData> {
        resources::read(self.config.clone(), self.sessions.clone(), request.uri)
            .await
            .map(Into::into)
    }

    /// `subscriptions/listen` (2026-07-28): the URIs of this server's resources are accepted.
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let uris =
            requested.resource_subscriptions.iter().flatten().filter(|u| resources::is_ours(u));
        Some(SubscriptionFilter::builder().resource_subscriptions(uris.cloned()).build())
    }

    /// One `subscriptions/listen` stream: its resources are watched until it is cancelled.
    async fn listen(&self, context: SubscriptionContext) -> std::result::Result<(), ErrorData> {
        let uris = context.accepted().resource_subscriptions.clone().unwrap_or_default();
        let mut ids = Vec::new();
        for uri in uris {
            let to = resources::Notify::Listen(context.sink().clone());
            match self.watchers.add(self.config.clone(), self.sessions.clone(), uri, to).await {
                Ok(id) => ids.push(id),
                Err(e) => {
                    self.watchers.remove(&ids);
                    return Err(e);
                }
            }
        }
        context.cancelled().await;
        self.watchers.remove(&ids);
        Ok(())
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<(), ErrorData> {
        let to = resources::Notify::Session(context.peer.clone());
        self.watchers
            .add(self.config.clone(), self.sessions.clone(), request.uri, to)
            .await
            .map(|_| ())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<(), ErrorData> {
        self.watchers.unsubscribe(&request.uri);
        Ok(())
    }

    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tasks()
            .enable_resources()
            .enable_resources_subscribe()
            .build();
        ServerConfig::new(capabilities)
            .with_protocol_version(MCP_REVISION)
            .with_server_info(Implementation::new("codex-remote", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
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

/// A read, a wait or a keyed start whose session dropped (`ssh_failed`) is asked once more,
/// on a new session: the job runs on, and these calls are safe to repeat.
fn again<T>(mut call: impl FnMut() -> Result<T>) -> Result<T> {
    match call() {
        Err(e) if e.code == ErrorCode::SshFailed => call(),
        other => other,
    }
}

/// How a protocol request (`tasks/*`, `resources/*`) answers that its job, id or machine is
/// not there: `-32602` for a task, `-32002` for a resource.
type NotFound = fn(String, Option<Value>) -> ErrorData;

/// Runs `work` on the blocking pool for a protocol request: its error becomes a protocol error
/// (`not_found`'s for a job, id or machine that is not there, else internal), the CLI's code and
/// hint in `data`.
async fn blocking_request<T: Send + 'static>(
    not_found: NotFound,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, ErrorData> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(protocol_error(e, not_found)),
        Err(e) => Err(ErrorData::internal_error(format!("the call failed: {e}"), None)),
    }
}

fn protocol_error(e: Error, not_found: NotFound) -> ErrorData {
    let data = Some(json!({ "code": e.code, "hint": e.hint.as_deref().map(hints::for_mcp) }));
    match e.code {
        ErrorCode::JobNotFound | ErrorCode::InvalidId | ErrorCode::UnknownMachine => {
            not_found(e.message, data)
        }
        _ => ErrorData::internal_error(e.message, data),
    }
}

/// The URI of job `exec_id` on `machine` as a resource ([`resources`]; named in `exec_start`'s
/// answer line).
fn job_uri(machine: &str, exec_id: &str) -> String {
    format!("codex-remote://{machine}/jobs/{exec_id}")
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
    let mut value = crate::protocol::ErrorBody::object(&e);
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
