//! `exec run` and `exec watch`: following a job to its end, and what Ctrl-C does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::super::{Ctx, emit, output};
use super::{
    RunArgs, WatchArgs, job_exit_code, print_output, read_logs, start_machine, start_request,
};
use crate::error::{Error, ErrorCode, Result, exit};
use crate::protocol::{
    CancelRequest, ExecId, ExecStartRequest, JobState, JobStatus, LogView, LogsRequest, OnMachine,
    Request, Response, RunEvent, StatusResponse, StreamOffsets, StreamSel, Summary, capability,
};
use crate::remote::client;
use crate::remote::machine::Machine;
use crate::remote::mux::SessionPool;

/// `exec run`: start, follow both streams as NDJSON, exit with the job's code. Ctrl-C cancels
/// the job (as `srun` and `docker run` do), or detaches with `--detach-on-interrupt`.
pub(super) fn run_job(ctx: &Ctx, run: RunArgs) -> Result<u8> {
    let args = run.start;
    let m = start_machine(ctx, &args)?;
    let req = start_request(&args)?;
    let detached = Arc::new(AtomicBool::new(false));
    let ran = if m.supports(capability::EXEC_RUN) {
        run_in_one_call(&m, req, &detached)?
    } else {
        // The start and the follow share one session (one ssh session, not two).
        let m = m.clone().with_sessions(SessionPool::new());
        start_then_follow(&m, req, &detached)?
    };
    let job = match ran {
        Ran::Ended(job) => *job,
        Ran::BeforeStart => return Ok(exit::DETACHED),
        Ran::Interrupted(id) if run.detach_on_interrupt => {
            report_detached(&m, &id)?;
            return Ok(exit::DETACHED);
        }
        Ran::Interrupted(id) => match cancel_interrupted(&m, &id)? {
            Some(job) => job,
            None => return Ok(exit::DETACHED),
        },
    };
    if !output::text() {
        emit(&RunEvent::Finished(OnMachine { value: &job, machine: &m.name }))?;
    }
    Ok(job_exit_code(&job))
}

/// How the start and follow of `exec run` ended.
enum Ran {
    /// The job ended: its final status.
    Ended(Box<JobStatus>),
    /// Ctrl-C after the start: the caller cancels or detaches.
    Interrupted(ExecId),
    /// Ctrl-C before the start was confirmed (as a Ctrl-C of `exec start`: whatever codexd
    /// got goes on there).
    BeforeStart,
}

/// The `started` event (text: a note, or the start's failure on stderr).
fn announce(m: &Machine, started: &StatusResponse) -> Result<()> {
    // Text is the job's own bytes: no events on stdout.
    if !output::text() {
        emit(&RunEvent::Started(OnMachine { value: started, machine: &m.name }))?;
    } else if started.job.state == JobState::StartFailed {
        let message = started.job.error.as_deref().unwrap_or("the job could not start");
        crate::error::stderr_line(&format!("codex-remote: start_failed: {message}"));
    }
    if started.job.state != JobState::StartFailed {
        output::note(&format!(
            "started {} on {}, waiting for output…",
            started.job.exec_id, m.name
        ));
    }
    Ok(())
}

/// `exec run` in one call (capability `exec_run`): codexd starts the job and streams its output
/// to the end on the same session. A connection dropped after the start follows again from
/// the last line seen.
fn run_in_one_call(m: &Machine, req: ExecStartRequest, detached: &Arc<AtomicBool>) -> Result<Ran> {
    watch_interrupts(detached)?;
    let mut started = None;
    let mut seen = StreamOffsets::default();
    let result = client::run(m, req, output::text(), &mut |line| match line {
        Response::Started(status) => {
            announce(m, &status)?;
            started = Some(ExecId::parse(&status.job.exec_id)?);
            Ok(())
        }
        line => print_output(line, Some(&mut seen)),
    });
    let Some(id) = started else {
        return match result {
            _ if detached.load(Ordering::SeqCst) => Ok(Ran::BeforeStart),
            Ok(end) => Ok(Ran::Ended(Box::new(end.job))),
            Err(e) => Err(e),
        };
    };
    if detached.load(Ordering::SeqCst) {
        return Ok(Ran::Interrupted(id));
    }
    match result {
        Ok(end) => Ok(Ran::Ended(Box::new(end.job))),
        Err(e) if resumable(&e) => {
            crate::error::stderr_line(&format!("codex-remote: {e}; following again"));
            let from = Start::At(StreamOffsets::default().or_start(StreamSel::Both));
            let ended = follow_to_end(m, &id, StreamSel::Both, from, seen, detached, None)?;
            Ok(ended.map_or(Ran::Interrupted(id), |job| Ran::Ended(Box::new(job))))
        }
        Err(e) => Err(e),
    }
}

/// `exec run` with a codexd without `exec_run`: a start, then a follow.
fn start_then_follow(
    m: &Machine,
    req: ExecStartRequest,
    detached: &Arc<AtomicBool>,
) -> Result<Ran> {
    let started = client::start(m, req)?;
    // From here on Ctrl-C cancels (or detaches); before, it simply stops us (the start
    // completes remotely).
    watch_interrupts(detached)?;
    announce(m, &started)?;
    if started.job.state == JobState::StartFailed {
        return Ok(Ran::Ended(Box::new(started.job)));
    }
    let from = StreamOffsets::default().or_start(StreamSel::Both);
    let id = ExecId::parse(&started.job.exec_id)?;
    let seen = StreamOffsets::default();
    let ended = follow_to_end(m, &id, StreamSel::Both, Start::At(from), seen, detached, None)?;
    Ok(ended.map_or(Ran::Interrupted(id), |job| Ran::Ended(Box::new(job))))
}

/// `exec watch`: the original tool's attach: output as NDJSON `log` lines until the job ends,
/// then a `summary` line; exits with the job's code.
pub(super) fn watch(ctx: &Ctx, args: WatchArgs) -> Result<u8> {
    let m = ctx.machine(args.machine.machine.as_deref())?;
    let detached = Arc::new(AtomicBool::new(false));
    watch_interrupts(&detached)?;
    let start =
        if args.full { Start::At(StreamOffsets::default()) } else { Start::Tail(args.tail) };
    let stream = args.stream.selection();
    let id = args.job.resolve(&m)?;
    let seen = StreamOffsets::default();
    let Some(job) = follow_to_end(&m, &id, stream, start, seen, &detached, Some(args.poll))? else {
        report_detached(&m, &id)?;
        return Ok(exit::DETACHED);
    };
    if !output::text() {
        emit(&RunEvent::Summary(OnMachine { value: Summary::of(&job), machine: &m.name }))?;
    }
    Ok(job_exit_code(&job))
}

/// Where following starts.
enum Start {
    /// At these offsets (`None` per stream: 0).
    At(StreamOffsets),
    /// At the last BYTES bytes of each stream.
    Tail(u64),
}

/// Prints the job's output as `log` lines until it has ended and returns its final status
/// (`seen`: what was printed already, [`print_output`]); `None` on Ctrl-C (the caller cancels or reports the detach). A dropped connection (laptop
/// asleep, network gone) follows again from the last line seen, without repeating it.
fn follow_to_end(
    m: &Machine,
    id: &ExecId,
    stream: StreamSel,
    start: Start,
    mut seen: StreamOffsets,
    detached: &AtomicBool,
    pause: Option<std::time::Duration>,
) -> Result<Option<JobStatus>> {
    let mut failures = 0;
    loop {
        let resumed = seen != StreamOffsets::default();
        let (since, tail) = match &start {
            Start::Tail(bytes) if !resumed => (None, Some(*bytes)),
            Start::At(from) if !resumed => (Some(*from), None),
            _ => (Some(seen), None),
        };
        let since = since.map(|s| s.or_start(StreamSel::Both));
        let req = LogsRequest {
            exec_id: id.clone(),
            stream,
            tail,
            tail_lines: None,
            since,
            follow: true,
            raw: output::text(),
            max_bytes: None,
            since_time: None,
            until_time: None,
            view: LogView::Raw,
        };
        let result = read_logs(m, &req, Some(&mut seen));
        if detached.load(Ordering::SeqCst) {
            return Ok(None);
        }
        match result {
            Ok(end) => return Ok(Some(end.job)),
            Err(e) if resumable(&e) && failures < 5 => {
                failures += 1;
                crate::error::stderr_line(&format!(
                    "codex-remote: {e}; following again ({failures}/5)"
                ));
                std::thread::sleep(pause.unwrap_or(std::time::Duration::from_secs(failures)));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A failure of the connection, not of the request: following again may pass.
fn resumable(e: &Error) -> bool {
    matches!(e.code, ErrorCode::SshFailed | ErrorCode::ConnectFailed | ErrorCode::ProtocolError)
}

/// On Ctrl-C (SIGINT) or SIGTERM: sets `flag` (detached) and ends the transport child whose pid
/// is in [`CURRENT_CHILD`](crate::remote::pipe::CURRENT_CHILD) (0: none), so that a blocked read
/// returns (a request answered in this process sees [`crate::remote::pipe::INTERRUPTED`]). On
/// Windows the console delivers Ctrl-C to `ssh.exe` itself, so only the flag is set.
fn watch_interrupts(flag: &Arc<AtomicBool>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let fail = |e| Error::internal("installing signal handlers", e);
    #[cfg(unix)]
    {
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(fail)?;
        let flag = flag.clone();
        std::thread::spawn(move || {
            for _ in signals.forever() {
                flag.store(true, Ordering::SeqCst);
                crate::remote::pipe::INTERRUPTED.store(true, Ordering::SeqCst);
                let pid = crate::remote::pipe::CURRENT_CHILD.load(Ordering::SeqCst);
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
            }
        });
    }
    #[cfg(not(unix))]
    {
        for sig in [SIGINT, SIGTERM] {
            signal_hook::flag::register(sig, flag.clone()).map_err(fail)?;
        }
    }
    Ok(())
}

/// Prints the `detached` line and how to reattach: the job goes on.
fn report_detached(m: &Machine, id: &ExecId) -> Result<()> {
    let hint =
        format!("codex-remote exec logs --machine {} --id {id} --stream both --follow", m.name);
    if !output::text() {
        emit(&RunEvent::Detached { exec_id: id, machine: &m.name, hint: &hint })?;
    }
    crate::error::stderr_line(&format!(
        "codex-remote: detached; the job goes on. Reattach with:\n  {hint}"
    ));
    Ok(())
}

/// A second Ctrl-C during the cancel: we leave before the job's end. The cancel was asked
/// (codexd goes on with it: TERM, the grace, KILL) unless the call was cut before it arrived,
/// so the line says how to see which, and how to ask again.
fn report_left_cancelling(m: &Machine, id: &ExecId) -> Result<()> {
    let hint = format!("codex-remote exec result --machine {} --id {id}", m.name);
    if !output::text() {
        emit(&RunEvent::Detached { exec_id: id, machine: &m.name, hint: &hint })?;
    }
    crate::error::stderr_line(&format!(
        "codex-remote: left without waiting; the job is being cancelled (TERM, then KILL after \
         the grace) unless the cancel was cut off before it reached codexd.\n  Check: {hint}\n  \
         Cancel again: codex-remote exec cancel --machine {} --id {id}",
        m.name
    ));
    Ok(())
}

/// Ctrl-C on `exec run`: the normal cancel request (TERM, the grace, KILL) and the job's final
/// status once it has ended; `None` when a second Ctrl-C left before that (the job is left to
/// the cancel, a `detached` line says so).
fn cancel_interrupted(m: &Machine, id: &ExecId) -> Result<Option<JobStatus>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    crate::error::stderr_line(&format!(
        "codex-remote: interrupted: cancelling {id} (Ctrl-C again to leave at once)"
    ));
    let again = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, again.clone())
            .map_err(|e| Error::internal("installing signal handlers", e))?;
    }
    // The first Ctrl-C ended the follow's session and marked in-process calls interrupted.
    crate::remote::pipe::INTERRUPTED.store(false, Ordering::SeqCst);
    m.close_sessions();
    let (tx, rx) = std::sync::mpsc::channel();
    let (machine, exec_id) = (m.clone(), id.clone());
    std::thread::spawn(move || {
        let req = Request::ExecCancel(CancelRequest { exec_id, grace_ms: None });
        let _ = tx.send(client::status(&machine, req));
    });
    loop {
        let answer = rx.recv_timeout(std::time::Duration::from_millis(50));
        // A second Ctrl-C also cuts the cancel call short: whatever it answered, we leave.
        if again.load(Ordering::SeqCst) {
            report_left_cancelling(m, id)?;
            return Ok(None);
        }
        match answer {
            Ok(answer) => return answer.map(|a| Some(a.job)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::internal("cancel", "the cancel call ended without an answer"));
            }
        }
    }
}
