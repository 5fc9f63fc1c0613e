//! The dashboard's job API: the merged list of every machine's jobs, start, status, cancel, and
//! a job's output as server-sent events.
//!
//! Output is read by offset: the first read is the last [`TAIL_LINES`] lines of each stream, then
//! each read starts at the `next_offset` of the one before, so nothing is lost or repeated. The
//! reads are short calls (no `follow`), so a closed page ends its reader within one poll and holds
//! no ssh session; each event carries the offsets as its id, so a reconnecting `EventSource`
//! resumes where it was (`Last-Event-ID`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::{Dashboard, blocking, error_response};
use crate::error::{Error, Result};
use crate::protocol::OnMachine;
use crate::protocol::{
    CancelRequest, CommandSpec, ExecId, ExecStartRequest, JobRef, ListRequest, LogView,
    LogsRequest, Request, Response as Answer, RunStatus, StreamOffsets, StreamSel,
};
use crate::remote::client;
use crate::remote::machine::Machine;

/// Jobs listed per machine.
const LIST_LIMIT: usize = 200;
/// A machine that has not answered the list by then is reported as an error.
const LIST_TIMEOUT: Duration = Duration::from_secs(20);
/// How much of a log a new viewer gets; earlier output is marked as skipped.
const TAIL_LINES: u64 = 2000;
/// At most this much per stream in one read, so memory stays bounded for any log.
const READ_BYTES: u64 = 256 * 1024;
/// The pause between reads when nothing new came.
const POLL: Duration = Duration::from_millis(150);
/// Consecutive failed reads before the stream gives up (the page can reopen it).
const MAX_FAILURES: u32 = 5;
/// Grace between TERM and KILL for the Cancel button.
const CANCEL_GRACE_MS: u64 = 5000;

/// Every machine's jobs, newest first, each with its `machine`; machines that failed are listed
/// in `errors`.
pub async fn list(State(d): State<Arc<Dashboard>>) -> Response {
    let calls: Vec<_> = d
        .machines
        .iter()
        .map(|config| {
            let d = d.clone();
            let name = config.name.clone();
            let call = tokio::spawn(async move {
                let n = name.clone();
                let list = blocking(move || {
                    let req = ListRequest { limit: Some(LIST_LIMIT), ..Default::default() };
                    Ok(client::list(&d.machine(&n)?, req)?.jobs)
                });
                tokio::time::timeout(LIST_TIMEOUT, list).await
            });
            (config.name.clone(), call)
        })
        .collect();
    let mut jobs = Vec::new();
    let mut errors = Vec::new();
    for (name, call) in calls {
        match call.await {
            Ok(Ok(Ok(list))) => {
                jobs.extend(list.iter().map(|j| OnMachine::new(j, &name).to_value()))
            }
            Ok(Ok(Err(e))) => errors.push(serde_json::json!({
                "machine": name, "code": e.code, "message": e.message,
            })),
            _ => errors.push(serde_json::json!({
                "machine": name, "code": "timeout", "message": "the machine did not answer",
            })),
        }
    }
    let key = |j: &serde_json::Value| {
        let text = |f: &str| j.get(f).and_then(|v| v.as_str()).unwrap_or("").to_string();
        (text("created_at"), text("exec_id"))
    };
    jobs.sort_by_key(|j| std::cmp::Reverse(key(j)));
    Json(serde_json::json!({ "jobs": jobs, "errors": errors })).into_response()
}

#[derive(Debug, Deserialize)]
pub struct StartForm {
    machine: String,
    cmd: String,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// Starts a job from the page's form.
pub async fn start(State(d): State<Arc<Dashboard>>, Json(form): Json<StartForm>) -> Response {
    let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let request = ExecStartRequest {
        cmd: Some(CommandSpec::Shell(form.cmd)),
        cwd: non_empty(form.cwd),
        name: non_empty(form.name),
        ..Default::default()
    };
    status_call(d, form.machine, Request::ExecStart(request)).await
}

pub async fn status(
    State(d): State<Arc<Dashboard>>,
    Path((machine, id)): Path<(String, String)>,
) -> Response {
    match ExecId::parse(&id) {
        Ok(exec_id) => status_call(d, machine, Request::ExecStatus(JobRef { exec_id })).await,
        Err(e) => error_response(&e),
    }
}

pub async fn cancel(
    State(d): State<Arc<Dashboard>>,
    Path((machine, id)): Path<(String, String)>,
) -> Response {
    match ExecId::parse(&id) {
        Ok(exec_id) => {
            let req = CancelRequest { exec_id, grace_ms: Some(CANCEL_GRACE_MS) };
            status_call(d, machine, Request::ExecCancel(req)).await
        }
        Err(e) => error_response(&e),
    }
}

/// A request answered by a status object, which the page gets with `machine` added.
async fn status_call(d: Arc<Dashboard>, machine: String, req: Request) -> Response {
    let name = machine.clone();
    let answer = blocking(move || {
        let m = d.machine(&name)?;
        match req {
            // client::start adds an idempotency key, so a retried start never runs twice.
            Request::ExecStart(start) => client::start(&m, start),
            req => client::status(&m, req),
        }
    })
    .await;
    match answer {
        Ok(status) => Json(OnMachine::new(&status, &machine)).into_response(),
        Err(e) => error_response(&e),
    }
}

/// The job's stdout and stderr as server-sent events: `skipped` (bytes before the tail),
/// `log` (one line), `status` (after each read, the job's status), `end`, and `problem`.
pub async fn logs(
    State(d): State<Arc<Dashboard>>,
    Path((machine, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (m, id) = match d.machine(&machine).and_then(|m| Ok((m, ExecId::parse(&id)?))) {
        Ok(found) => found,
        Err(e) => return error_response(&e),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once('-'))
        .map(|(a, b)| StreamOffsets { stdout: a.parse().ok(), stderr: b.parse().ok() });
    let (tx, rx) = mpsc::channel::<Event>(256);
    tokio::task::spawn_blocking(move || follow(&m, &id, resume, &tx));
    let events = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// Reads the job's logs from offset to offset until it has ended and all is sent, or the page
/// has gone away.
fn follow(m: &Machine, id: &ExecId, resume: Option<StreamOffsets>, tx: &mpsc::Sender<Event>) {
    let send = |event: Event| tx.blocking_send(event).is_ok();
    let json =
        |kind: &str, value: serde_json::Value| Event::default().event(kind).data(value.to_string());
    let mut req = LogsRequest {
        exec_id: id.clone(),
        stream: StreamSel::Both,
        tail: None,
        tail_lines: resume.is_none().then_some(TAIL_LINES),
        since: resume,
        follow: false,
        raw: false,
        max_bytes: Some(READ_BYTES),
        since_time: None,
        until_time: None,
        view: LogView::Raw,
    };
    let mut first_read = resume.is_none();
    let mut failures = 0;
    let mut finished_seen = false;
    while !tx.is_closed() {
        let mut lines = 0;
        let mut on_line = |answer: Answer| -> Result<()> {
            if let Answer::Log(line) = answer {
                if first_read && line.offset > 0 {
                    let skipped =
                        serde_json::json!({ "stream": line.stream, "bytes": line.offset });
                    if !send(json("skipped", skipped)) {
                        return Err(Error::internal("logs", "the page went away"));
                    }
                }
                first_read = false;
                lines += 1;
                let value = serde_json::to_value(&line).unwrap_or_default();
                if !send(json("log", value)) {
                    return Err(Error::internal("logs", "the page went away"));
                }
            }
            Ok(())
        };
        let end = match client::logs(m, &req, &mut on_line) {
            Ok(end) => end,
            Err(e) => {
                failures += 1;
                let fatal =
                    failures >= MAX_FAILURES || e.code == crate::error::ErrorCode::JobNotFound;
                let problem =
                    serde_json::json!({ "code": e.code, "message": e.message, "fatal": fatal });
                if !send(json("problem", problem)) || fatal {
                    return;
                }
                std::thread::sleep(POLL * 4);
                continue;
            }
        };
        failures = 0;
        first_read = false;
        let offsets = format!(
            "{}-{}",
            end.next_offset.stdout.unwrap_or(0),
            end.next_offset.stderr.unwrap_or(0)
        );
        let job = serde_json::to_value(&end.job).unwrap_or_default();
        // The status is read after the logs: once it says finished, one more read gets the rest.
        let done = finished_seen && !end.more && lines == 0;
        let kind = if done { "end" } else { "status" };
        if !send(json(kind, job).id(offsets)) || done {
            return;
        }
        finished_seen = end.status == RunStatus::Finished;
        req.since = Some(end.next_offset);
        req.tail_lines = None;
        if !end.more && lines == 0 {
            std::thread::sleep(POLL);
        }
    }
}
