//! The exec tools: `machines`, `exec_start`, `exec_status`, `exec_logs`, `exec_wait`, `exec_run`,
//! `exec_cancel`, `exec_list`; each a blocking body on the machine's shared session.

use std::time::Duration;

use rmcp::model::{ContentBlock, JsonObject, ProgressNotificationParam};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use serde_json::{Value, json};

use super::inputs::{
    self, Arguments, CancelInput, DEFAULT_LIST_LIMIT, DEFAULT_WAIT_SECS, JobInput, ListInput,
    LogsInput, MAX_LIST_LIMIT, MachinesInput, StartInput, WaitInput, argument_failure,
    bad_argument, input_schema, logs_request, seconds, start_request,
};
use super::logs::{logs_page, logs_text};
use super::machines::machines;
use super::{
    McpServer, Outcome, PROGRESS_EVERY, ToolFailure, ToolResult, again, on_blocking_pool, outputs,
    status_line,
};
use crate::codex_remote::exec::resolve_id;
use crate::error::{Error, ErrorCode};
use crate::protocol::{
    CancelRequest, ExecStartRequest, JobRef, JobState, OnMachine, Request, RunStatus,
    StatusResponse, WaitRequest,
};
use crate::remote::client;
use crate::remote::machine::Machine;

#[tool_router(vis = "pub(super)")]
impl McpServer {
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
                "{verb} job {} on {} ({}; idempotency_key {key}; resource {})",
                answer.job.exec_id,
                m.name,
                answer.job.state.as_str(),
                super::job_uri(&m.name, &answer.job.exec_id)
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
pub(super) fn start_job(
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
