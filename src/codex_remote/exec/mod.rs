//! `codex-remote exec start|result|logs|cancel|wait|list|rm|prune|run|doctor|watch`: the
//! arguments in [`args`], the commands here, `run`/`watch` (following to the end, Ctrl-C) in
//! [`run`], `doctor` in [`doctor`].

mod args;
mod doctor;
mod run;

use std::collections::BTreeMap;

use base64::Engine;
use serde::Serialize;

pub use args::*;

use super::{Ctx, emit, emit_on, emit_raw, original_fields, output, usage};
use crate::error::{Error, ErrorCode, Result, exit};
use crate::protocol::{
    CancelRequest, CommandSpec, ExecId, ExecStartRequest, JobRef, JobState, JobStatus, ListRequest,
    LogView, LogsEnd, LogsRequest, OnMachine, PruneRequest, Request, ResolveRequest, Response,
    RunEvent, Stream, StreamOffsets, StreamSel, WaitRequest, capability, parse_log_time,
};
use crate::remote::client;
use crate::remote::machine::Machine;

impl JobArg {
    fn given(&self) -> &str {
        self.id.as_deref().or(self.job.as_deref()).unwrap_or_default()
    }

    /// The whole id: as given when it is one, else resolved by the machine's codexd.
    pub fn resolve(&self, m: &Machine) -> Result<ExecId> {
        resolve_id(m, self.given())
    }

    /// The id for a request whose answer names the job: a prefix or `last` as given when the
    /// machine's codexd resolves it in the same request (capability `id_refs`, one call instead
    /// of two), else [`JobArg::resolve`].
    fn for_request(&self, m: &Machine) -> Result<ExecId> {
        match ExecId::parse_ref(self.given()) {
            Ok(id) if m.supports(capability::ID_REFS) => Ok(id),
            _ => self.resolve(m),
        }
    }
}

/// A job id as a user gives it (whole, a unique prefix, or `last`), resolved by the machine's
/// codexd when it is not whole. The CLI and the MCP server take the same ids.
pub fn resolve_id(m: &Machine, given: &str) -> Result<ExecId> {
    if let Ok(id) = ExecId::parse(given) {
        return Ok(id);
    }
    let req = Request::ExecResolve(ResolveRequest { exec_id: given.to_string() });
    match m.call(&req, &mut |_| Ok(()))? {
        Response::Resolved(r) => Ok(r.exec_id),
        other => Err(client::unexpected(&other)),
    }
}

pub fn run(ctx: &Ctx, cmd: ExecCommand) -> Result<u8> {
    // These exit with the job's code: a reader that stops early must not turn it into 0.
    match &cmd {
        ExecCommand::Run(_) | ExecCommand::Watch(_) => output::outlive_closed_stdout(),
        ExecCommand::Wait(args) if args.exit_status => output::outlive_closed_stdout(),
        _ => {}
    }
    match cmd {
        ExecCommand::Start(args) => start(ctx, args),
        ExecCommand::Result(args) => {
            let m = ctx.machine(args.machine.machine.as_deref())?;
            let exec_id = args.job.for_request(&m)?;
            let answer = client::status(&m, Request::ExecStatus(JobRef { exec_id }))?;
            emit_on(&m, &answer)?;
            Ok(exit::OK)
        }
        ExecCommand::Logs(args) => logs(ctx, args),
        ExecCommand::Cancel(args) => {
            let m = ctx.machine(args.machine.machine.as_deref())?;
            let grace_ms = Some(args.grace.as_millis() as u64);
            let exec_id = args.job.for_request(&m)?;
            let req = Request::ExecCancel(CancelRequest { exec_id, grace_ms });
            let answer = client::status(&m, req)?;
            original_fields::emit_on_with(&m, &answer, original_fields::canceled)?;
            Ok(exit::OK)
        }
        ExecCommand::Wait(args) => {
            let m = ctx.machine(args.machine.machine.as_deref())?;
            let timeout_ms = args.timeout.map(|t| t.as_millis() as u64);
            let exec_id = args.job.for_request(&m)?;
            let answer =
                client::status(&m, Request::ExecWait(WaitRequest { exec_id, timeout_ms }))?;
            emit_on(&m, &answer)?;
            Ok(match (answer.timed_out == Some(true), args.exit_status) {
                (true, _) => exit::TIMED_OUT,
                (false, true) => job_exit_code(&answer.job),
                (false, false) => exit::OK,
            })
        }
        ExecCommand::List(args) => {
            let m = ctx.machine(args.machine.machine.as_deref())?;
            let list = client::list(
                &m,
                ListRequest {
                    limit: Some(args.limit),
                    ..args.state.map_or_else(ListRequest::default, StateFilter::request)
                },
            )
            .map(|mut list| {
                // An older codexd ignores `status`: filter here too.
                if let Some(StateFilter::Status(s)) = args.state {
                    list.jobs.retain(|j| j.status == s);
                }
                list.jobs.truncate(args.limit);
                list
            })?;
            if output::text() {
                return print_jobs(&list.jobs).map(|()| exit::OK);
            }
            #[derive(Serialize)]
            struct Out<'a> {
                machine: &'a str,
                jobs: Vec<OnMachine<'a, &'a JobStatus>>,
            }
            let jobs = list.jobs.iter().map(|value| OnMachine { value, machine: &m.name });
            emit(&Out { machine: &m.name, jobs: jobs.collect() })?;
            Ok(exit::OK)
        }
        ExecCommand::Rm(args) => {
            let m = ctx.machine(args.machine.machine.as_deref())?;
            let exec_id = args.job.for_request(&m)?;
            let answer = m.call(&Request::ExecRm(JobRef { exec_id }), &mut |_| Ok(()))?;
            emit_on(&m, &answer)?;
            Ok(exit::OK)
        }
        ExecCommand::Prune(args) => {
            let m = ctx.machine(args.machine.machine.as_deref())?;
            let req = Request::ExecPrune(PruneRequest { keep: args.keep });
            let answer = m.call(&req, &mut |_| Ok(()))?;
            emit_on(&m, &answer)?;
            Ok(exit::OK)
        }
        ExecCommand::Run(args) => run::run_job(ctx, args),
        ExecCommand::Watch(args) => run::watch(ctx, args),
        ExecCommand::Doctor(args) => doctor::doctor(ctx, args),
    }
}

/// `exec list --format text`: one row per job, the command cut to fit.
fn print_jobs(jobs: &[JobStatus]) -> Result<()> {
    let now = std::time::SystemTime::now();
    let header = ["ID", "NAME", "STATE", "EXIT", "AGE", "CMD"];
    let mut rows = vec![header.map(String::from).to_vec()];
    for j in jobs {
        let exit = match (j.exit_code, j.signal) {
            (Some(code), _) => code.to_string(),
            (None, Some(sig)) => format!("sig {sig}"),
            (None, None) => "-".into(),
        };
        let started = j.started_at.as_deref().unwrap_or(&j.created_at);
        rows.push(vec![
            j.exec_id.to_string(),
            j.name.clone().unwrap_or_else(|| "-".into()),
            j.state.as_str().to_string(),
            exit,
            output::age(started, now),
            output::truncate(&j.cmd.replace('\n', " "), 50),
        ]);
    }
    emit_raw(false, output::columns(&rows).as_bytes())
}

pub(super) fn start_request(args: &StartArgs) -> Result<ExecStartRequest> {
    let cmd = match (&args.cmd, args.argv.is_empty()) {
        (Some(_), false) => return Err(usage("give --cmd or an argv after --, not both")),
        (Some(c), true) => Some(CommandSpec::Shell(c.clone())),
        (None, false) => Some(CommandSpec::Argv(args.argv.clone())),
        (None, true) => None,
    };
    let script = match &args.script {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| usage(format!("reading --script {}: {e}", path.display())))?,
        ),
        None => None,
    };
    if cmd.is_none() && script.is_none() {
        return Err(usage("what to run: --cmd 'CMD', --script FILE, or -- ARGV..."));
    }
    Ok(ExecStartRequest {
        cmd,
        script,
        shell: args.shell.clone(),
        cwd: args.cwd.clone(),
        env: args.env.iter().cloned().collect::<BTreeMap<_, _>>(),
        name: args.name.clone(),
        labels: args.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        // None: client::start makes one, so a retried start never runs twice.
        idempotency_key: args.idempotency_key.clone(),
        project: args.project.clone(),
        git_ref: args.git_ref.clone(),
        resources: args.resources.resources().map(Box::new),
    })
}

/// The exit code for a job that ended `job`.
pub(super) fn job_exit_code(job: &JobStatus) -> u8 {
    match (job.state, job.exit_code, job.signal) {
        (JobState::StartFailed, _, _) => exit::REMOTE,
        (_, Some(code), _) => (code & 0xff) as u8,
        (_, None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        (JobState::Succeeded, None, None) => exit::OK,
        _ => exit::JOB_FAILED,
    }
}

/// The machine a start goes to, with the agent forwarded when `--forward-agent` asks.
pub(super) fn start_machine(ctx: &Ctx, args: &StartArgs) -> Result<Machine> {
    let m = ctx.machine(args.machine.machine.as_deref())?;
    Ok(if args.forward_agent { m.forwarding_agent() } else { m })
}

fn start(ctx: &Ctx, args: StartArgs) -> Result<u8> {
    let m = start_machine(ctx, &args)?;
    let req = start_request(&args)?;
    let answer = client::start(&m, req)?;
    original_fields::emit_on_with(&m, &answer, original_fields::base_url(&m))?;
    if answer.job.state == JobState::StartFailed {
        let message = answer.job.error.clone().unwrap_or_else(|| "the job could not start".into());
        crate::error::stderr_line(&format!("codex-remote: start_failed: {message}"));
        return Ok(exit::REMOTE);
    }
    Ok(exit::OK)
}

/// A `--since`/`--until` time, as given, once it is known to be one.
fn checked_time(text: String, flag: &str) -> Result<String> {
    parse_log_time(&text, std::time::SystemTime::now())
        .map_err(|e| usage(format!("{flag}: {e}")))?;
    Ok(text)
}

fn logs(ctx: &Ctx, args: LogsArgs) -> Result<u8> {
    let m = ctx.machine(args.machine.machine.as_deref())?;
    let stream = args
        .stream
        .unwrap_or(if args.follow { StreamArg::Both } else { StreamArg::Stdout })
        .selection();
    if args.since_stderr.is_some() && stream != StreamSel::Both {
        return Err(usage("--since-stderr goes with --stream both"));
    }
    // A bare number is the byte offset of old scripts; anything else a time, read by codexd
    // on its own clock (checked here first, for a usage error without a round trip).
    let (offset, since_time) = match args.since {
        Some(text) => match text.parse::<u64>() {
            Ok(offset) => (Some(offset), None),
            Err(_) => (None, Some(checked_time(text, "--since")?)),
        },
        None => (args.offset, None),
    };
    let until_time = args.until.map(|t| checked_time(t, "--until")).transpose()?;
    let since = StreamOffsets::from_since(stream, offset, args.since_stderr);
    let view = match args.view {
        ViewArg::Raw => LogView::Raw,
        ViewArg::Terminal => LogView::Terminal,
    };
    // Text is the job's own bytes, as --raw (the terminal view's lines as text).
    let raw = args.raw || (output::text() && view == LogView::Raw);
    let mut req = LogsRequest {
        exec_id: args.job.for_request(&m)?,
        stream,
        tail: args.tail,
        tail_lines: args.tail_lines,
        since,
        follow: args.follow,
        raw,
        max_bytes: args.max_bytes,
        since_time,
        until_time,
        view,
    };
    loop {
        let end = read_logs(&m, &req, None)?;
        // Without an explicit --max-bytes, page through to the end of the log.
        if end.more && args.max_bytes.is_none() {
            // The next page is of this job, whatever `last` names by then.
            req.exec_id = ExecId::parse(&end.exec_id)?;
            req.since = Some(end.next_offset);
            req.tail = None;
            req.tail_lines = None;
            continue;
        }
        if !raw && !output::text() {
            emit_on(&m, &Response::LogsEnd(end))?;
        }
        return Ok(exit::OK);
    }
}

/// Runs one `exec_logs` call, printing each line as it arrives. With `offsets`, lines at or
/// before the offsets already seen are skipped and the offsets are updated.
pub(super) fn read_logs(
    m: &Machine,
    req: &LogsRequest,
    offsets: Option<&mut StreamOffsets>,
) -> Result<LogsEnd> {
    let mut seen = offsets;
    client::logs(m, req, &mut |r| print_output(r, seen.as_deref_mut()))
}

/// Prints a `log` line (NDJSON, or its text) or a `chunk` (its bytes); other lines are not
/// output. With `seen`, what was printed before (a follow resumed after a dropped connection)
/// is skipped and `seen` moves past what is printed now.
pub(super) fn print_output(r: Response, seen: Option<&mut StreamOffsets>) -> Result<()> {
    match r {
        Response::Log(line) => {
            if let Some(seen) = seen {
                // Resuming after a dropped connection repeats the last line: skip it.
                if seen.get(line.stream).is_some_and(|o| line.offset <= o) {
                    return Ok(());
                }
                seen.set(line.stream, line.offset);
            }
            if output::text() {
                // The terminal view as text: the lines themselves.
                let text = format!("{}\n", line.line);
                emit_raw(line.stream == Stream::Stderr, text.as_bytes())?;
            } else {
                emit(&RunEvent::Log(&line))?;
            }
        }
        Response::Chunk(chunk) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(chunk.data_b64.as_bytes())
                .map_err(|e| Error::new(ErrorCode::ProtocolError, format!("bad chunk: {e}")))?;
            let mut skip = 0;
            if let Some(seen) = seen {
                // For bytes, `seen` is the end of what was printed: resuming starts there.
                let printed = seen.get(chunk.stream).unwrap_or(0);
                skip = printed.saturating_sub(chunk.offset).min(bytes.len() as u64) as usize;
                seen.set(chunk.stream, printed.max(chunk.offset + bytes.len() as u64));
            }
            emit_raw(chunk.stream == Stream::Stderr, &bytes[skip..])?;
        }
        _ => {}
    }
    Ok(())
}
