//! MCP Tasks (the `io.modelcontextprotocol/tasks` extension): `exec_run` and `exec_wait` called
//! by a client that declared the extension answer at once with a task, which the client polls
//! with `tasks/get` and may end with `tasks/cancel`.
//!
//! A task is a job: its id is `MACHINE/EXEC_ID`, and this server keeps nothing about it. So a
//! task outlives this server (and the laptop): `tasks/get` after a restart asks the machine's
//! codexd, on the machine's shared session (one `exec_status`, plus a one-line log tail while
//! it runs, no new ssh connection per call). A running job is `working` with its last log line
//! as the status message; an ended one is `completed` with the job's status and the tail of its
//! output as the result (`cancelled` when the job was cancelled); `tasks/cancel` cancels the job.

use rmcp::ErrorData;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CreateTaskResult, DetailedTask, GetTaskResult, Task,
    TaskPayload, TaskStatus,
};
use serde_json::Value;

use super::inputs::{self, StartInput, WaitInput, argument_failure};
use super::{McpServer, ToolFailure, again, failure_answer, status_line, tool_answer};
use crate::codex_remote::exec::resolve_id;
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::{
    CancelRequest, JobRef, JobState, LogsRequest, OnMachine, Request, Response, RunStatus,
    StatusResponse, StreamSel,
};
use crate::remote::client;
use crate::remote::machine::Machine;

/// How often a client should ask `tasks/get` (ms).
const POLL_MS: u64 = 2000;
/// Lines of output in a finished task's result.
const TAIL_LINES: u64 = 20;

/// The tools that may answer with a task.
pub const TASK_TOOLS: [&str; 2] = ["exec_run", "exec_wait"];

/// `exec_run` or `exec_wait` as a task: the job started (or found), answered with its task.
pub async fn create(server: &McpServer, request: CallToolRequestParams) -> CallToolResponse {
    let (config, sessions) = (server.config.clone(), server.sessions.clone());
    let mut arguments = request.arguments.unwrap_or_default();
    let run = request.name == "exec_run";
    let work = move || -> std::result::Result<CreateTaskResult, Box<ToolFailure>> {
        let (machine_name, start, wait) = if run {
            arguments.remove("timeout_seconds");
            let input: StartInput = parse(arguments)?;
            let req = inputs::start_request(&input).map_err(as_failure)?;
            (input.machine.clone(), Some(req), None)
        } else {
            let input: WaitInput = parse(arguments)?;
            (input.machine.clone(), None, Some(input.exec_id))
        };
        let m = super::machine(config.as_deref(), machine_name.as_deref(), sessions.clone())?;
        let answer = match (start, wait) {
            (Some(req), _) => super::tools::start_job(&m, req)?,
            (None, Some(id)) => {
                let exec_id = again(|| resolve_id(&m, &id))?;
                again(|| {
                    client::status(&m, Request::ExecStatus(JobRef { exec_id: exec_id.clone() }))
                })?
            }
            (None, None) => unreachable!("a start or a wait"),
        };
        Ok(CreateTaskResult::new(task(&m.name, &answer, None)))
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(created)) => CallToolResponse::Task(created),
        Ok(Err(failure)) => failure_answer(*failure).into(),
        Err(e) => failure_answer(ToolFailure {
            error: Error::new(ErrorCode::Internal, format!("the tool task failed: {e}")),
            job: None,
        })
        .into(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    arguments: rmcp::model::JsonObject,
) -> std::result::Result<T, Box<ToolFailure>> {
    serde_json::from_value(Value::Object(arguments))
        .map_err(|e| as_failure(inputs::bad_argument(format!("invalid arguments: {e}"))))
}

fn as_failure(e: ErrorData) -> Box<ToolFailure> {
    let error = argument_failure(&e).unwrap_or_else(|| Error::new(ErrorCode::Usage, e.message));
    Box::new(ToolFailure { error, job: None })
}

/// `tasks/get`: the job's state now.
pub async fn get(
    server: &McpServer,
    task_id: String,
) -> std::result::Result<GetTaskResult, ErrorData> {
    let (config, sessions) = (server.config.clone(), server.sessions.clone());
    blocking(move || {
        let (name, id) = split(&task_id)?;
        let m = super::machine(config.as_deref(), Some(name), sessions.clone())?;
        let exec_id = again(|| resolve_id(&m, id))?;
        let req = Request::ExecStatus(JobRef { exec_id: exec_id.clone() });
        let answer = again(|| client::status(&m, req.clone()))?;
        let detailed = if answer.job.status == RunStatus::Running {
            let last = tail(&m, &answer, 1).ok().and_then(|t| t.lines().last().map(str::to_string));
            DetailedTask::new(task(&m.name, &answer, last), TaskPayload::Working)
        } else if answer.job.state == JobState::Cancelled {
            DetailedTask::new(task(&m.name, &answer, None), TaskPayload::Cancelled)
        } else {
            let mut value = OnMachine::new(&answer, &m.name).to_value();
            value["tail"] = tail(&m, &answer, TAIL_LINES).unwrap_or_default().into();
            let result = tool_answer(value, status_line(&answer.job, &m.name), false);
            let Ok(Value::Object(result)) = serde_json::to_value(result) else {
                return Err(Error::new(ErrorCode::Internal, "a tool result is an object"));
            };
            DetailedTask::new(task(&m.name, &answer, None), TaskPayload::Completed { result })
        };
        Ok(GetTaskResult::new(detailed))
    })
    .await
}

/// `tasks/cancel`: cancels the job (TERM, 5 s, KILL); a job that ended is left as it was.
pub async fn cancel(server: &McpServer, task_id: String) -> std::result::Result<(), ErrorData> {
    let (config, sessions) = (server.config.clone(), server.sessions.clone());
    blocking(move || {
        let (name, id) = split(&task_id)?;
        let m = super::machine(config.as_deref(), Some(name), sessions.clone())?;
        let exec_id = again(|| resolve_id(&m, id))?;
        let req = Request::ExecCancel(CancelRequest { exec_id, grace_ms: Some(5000) });
        again(|| client::status(&m, req.clone())).map(|_| ())
    })
    .await
}

/// Runs `work` on the blocking pool; a task id that names no job is `-32602`.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, ErrorData> {
    super::blocking_request(ErrorData::invalid_params, work).await
}

/// The task id of job `exec_id` on `machine`.
pub fn task_id(machine: &str, exec_id: &str) -> String {
    format!("{machine}/{exec_id}")
}

/// `MACHINE/EXEC_ID` → (machine, exec id).
fn split(task_id: &str) -> Result<(&str, &str)> {
    task_id.rsplit_once('/').filter(|(m, id)| !m.is_empty() && !id.is_empty()).ok_or_else(|| {
        Error::new(ErrorCode::InvalidId, format!("{task_id:?} is not a task of this server"))
            .with_hint("a task id is MACHINE/EXEC_ID, as exec_run and exec_wait answer")
    })
}

/// The task that stands for the job in `answer`.
fn task(machine: &str, answer: &StatusResponse, last_line: Option<String>) -> Task {
    let job = &answer.job;
    let updated = job.finished_at.as_ref().or(job.started_at.as_ref()).unwrap_or(&job.created_at);
    let status = match (job.status, job.state) {
        (RunStatus::Running, _) => TaskStatus::Working,
        (_, JobState::Cancelled) => TaskStatus::Cancelled,
        _ => TaskStatus::Completed,
    };
    let message = match (&last_line, &job.queue_reason) {
        (Some(line), _) => format!("{}: {line}", job.state.as_str()),
        (None, Some(reason)) => format!("{}: {reason}", job.state.as_str()),
        (None, None) => status_line(job, machine),
    };
    Task::new(task_id(machine, &job.exec_id), status, job.created_at.clone(), updated.clone())
        .with_status_message(message)
        .with_poll_interval_ms(POLL_MS)
}

/// The last `lines` lines of the job's output (both streams).
pub(super) fn tail(m: &Machine, answer: &StatusResponse, lines: u64) -> Result<String> {
    let exec_id = crate::protocol::ExecId::parse(&answer.job.exec_id)?;
    let req = LogsRequest {
        exec_id,
        stream: StreamSel::Both,
        tail: None,
        tail_lines: Some(lines),
        since: None,
        follow: false,
        raw: false,
        max_bytes: Some(inputs::DEFAULT_LOG_BYTES),
        since_time: None,
        until_time: None,
        view: crate::protocol::LogView::Terminal,
    };
    let mut text = String::new();
    again(|| {
        text.clear();
        client::logs(m, &req, &mut |r| {
            if let Response::Log(line) = r {
                text.push_str(&line.line);
                text.push('\n');
            }
            Ok(())
        })
    })?;
    Ok(text)
}

/// Whether a tool call is to be answered with a task.
pub fn wanted(request: &CallToolRequestParams, client_has_tasks: bool) -> bool {
    client_has_tasks && TASK_TOOLS.contains(&request.name.as_ref())
}
