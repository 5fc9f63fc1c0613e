//! The job routes: the original tool's (`POST /v1/exec`, `POST /v1/exec/run`,
//! `GET /v1/exec/{id}`, its logs and cancel) and ours (list, wait, rm, prune).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path as UrlPath, Query, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response as HttpResponse};
use serde::Deserialize;

use super::stream::Lines;
use super::{HttpState, answer, answer_response, error_response, parse_body, query};
use crate::error::Error;
use crate::protocol::{
    CancelRequest, ExecId, ExecStartRequest, JobRef, JobState, ListRequest, LogView, LogsRequest,
    OnMachine, PruneRequest, Request, Response, ResponseLine, RunEvent, StreamOffsets, StreamSel,
    WaitRequest,
};

pub(super) async fn exec_start(State(state): State<Arc<HttpState>>, body: Bytes) -> HttpResponse {
    answer(&state, parse_body(&body, "exec").map(Request::ExecStart)).await
}

/// `POST /v1/exec/run` (the original tool's): starts the job as `POST /v1/exec` does (a
/// refused start is its JSON error with its status), then streams NDJSON as `codex-remote exec
/// run` prints it: `started` (the status object), a `log` line for each line of both streams,
/// and `finished` with the final status. A client that goes away leaves the job running.
pub(super) async fn exec_run(State(state): State<Arc<HttpState>>, body: Bytes) -> HttpResponse {
    let start = match parse_body::<ExecStartRequest>(&body, "exec") {
        Ok(start) => start,
        Err(e) => return error_response(e),
    };
    let started = match state.call(Request::ExecStart(start)).await.1 {
        Ok(Response::Status(started)) => started,
        Ok(Response::Error(body)) => return error_response(body.into()),
        Ok(other) => return error_response(Error::internal("exec_run", other.kind())),
        Err(e) => return error_response(e),
    };
    let exec_id = match ExecId::parse(&started.job.exec_id) {
        Ok(id) => id,
        Err(e) => return error_response(e),
    };
    let mut first = match serde_json::to_vec(&RunEvent::Started(OnMachine::new(&started, ""))) {
        Ok(line) => line,
        Err(e) => return error_response(Error::internal("encoding", e)),
    };
    first.push(b'\n');
    let follow = LogsRequest {
        exec_id,
        stream: StreamSel::Both,
        tail: None,
        tail_lines: None,
        since: Some(StreamOffsets::default().or_start(StreamSel::Both)),
        follow: true,
        raw: false,
        max_bytes: None,
        since_time: None,
        until_time: None,
        view: LogView::Raw,
    };
    state.stream_lines(Lines::Run, Bytes::from(first), Request::ExecLogs(follow))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
    state: Option<JobState>,
    limit: Option<usize>,
}

pub(super) async fn exec_list(
    State(state): State<Arc<HttpState>>,
    q: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> HttpResponse {
    let req = query(q).map(|q| {
        Request::ExecList(ListRequest { state: q.state, limit: q.limit, ..Default::default() })
    });
    answer(&state, req).await
}

/// A job id from the URL path, validated: a bad one is answered `invalid_id` (with the Go-era
/// hint) before the handler runs.
pub(super) struct JobId(ExecId);

impl<S: Send + Sync> FromRequestParts<S> for JobId {
    type Rejection = HttpResponse;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> std::result::Result<Self, HttpResponse> {
        let UrlPath(id) = UrlPath::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        ExecId::parse(&id).map(JobId).map_err(error_response)
    }
}

pub(super) async fn exec_status(
    State(state): State<Arc<HttpState>>,
    JobId(id): JobId,
) -> HttpResponse {
    answer(&state, Ok(Request::ExecStatus(JobRef { exec_id: id }))).await
}

pub(super) async fn exec_rm(State(state): State<Arc<HttpState>>, JobId(id): JobId) -> HttpResponse {
    answer(&state, Ok(Request::ExecRm(JobRef { exec_id: id }))).await
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct LogsQuery {
    stream: Option<StreamSel>,
    tail: Option<u64>,
    tail_lines: Option<u64>,
    /// A byte offset, or (the original tool's form) a time: RFC 3339 or a duration before now.
    since: Option<String>,
    since_stderr: Option<u64>,
    until: Option<String>,
    max_bytes: Option<u64>,
    #[serde(default)]
    follow: bool,
    #[serde(default)]
    raw: bool,
    view: Option<LogView>,
    format: Option<String>,
    /// The original tool's: the whole log (no tail).
    #[serde(default)]
    full: bool,
}

pub(super) async fn exec_logs(
    State(state): State<Arc<HttpState>>,
    JobId(id): JobId,
    q: std::result::Result<Query<LogsQuery>, QueryRejection>,
) -> HttpResponse {
    let q = match query(q) {
        Ok(q) => q,
        Err(e) => return error_response(e),
    };
    let stream = q.stream.unwrap_or_default();
    let (offset, since_time) = match q.since {
        Some(text) => match text.parse::<u64>() {
            Ok(offset) => (Some(offset), None),
            Err(_) => (None, Some(text)),
        },
        None => (None, None),
    };
    // `full` reads from the start, as an offset 0 does.
    let offset = offset.or(q.full.then_some(0));
    let since = StreamOffsets::from_since(stream, offset, q.since_stderr);
    // As the original's daemon: `full` wins, then a positive `tail_lines` (its client sends
    // `tail=2000` beside it), then `tail`.
    let tail_lines = q.tail_lines.filter(|&n| n > 0 && !q.full);
    let req = LogsRequest {
        exec_id: id,
        stream,
        tail: q.tail.filter(|_| tail_lines.is_none() && !q.full),
        tail_lines,
        since,
        follow: q.follow,
        raw: q.raw,
        max_bytes: q.max_bytes,
        since_time,
        until_time: q.until,
        view: q.view.unwrap_or_default(),
    };
    if q.follow {
        // A refusal is a status, not a 200 with an error line: the same request without
        // follow (one byte a stream) meets every check first.
        let check = if req.until_time.is_some() {
            Err(Error::invalid("until reads what was written before a time: not with follow"))
        } else {
            let probe = LogsRequest { follow: false, max_bytes: Some(1), ..req.clone() };
            match state.call(Request::ExecLogs(probe)).await.1 {
                Ok(Response::Error(body)) => Err(body.into()),
                other => other.map(|_| ()),
            }
        };
        return match check {
            Ok(()) => state.stream(None, Request::ExecLogs(req)),
            Err(e) => error_response(e),
        };
    }
    let (lines, end) = match state.call(Request::ExecLogs(req)).await {
        (lines, Ok(Response::LogsEnd(end))) => (lines, end),
        (_, other) => return answer_response(other),
    };
    if q.format.as_deref() == Some("jsonl") {
        // NDJSON: the lines, then `logs_end`.
        let mut text = Vec::new();
        for response in lines.into_iter().chain([Response::LogsEnd(end)]) {
            let line = ResponseLine { id: None, response };
            if serde_json::to_writer(&mut text, &line).is_err() {
                return error_response(Error::internal("encoding", "a log line"));
            }
            text.push(b'\n');
        }
        return ([(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response();
    }
    // One JSON object: the `logs_end` fields plus the lines.
    let mut v = serde_json::to_value(&end).unwrap_or_default();
    v["lines"] = serde_json::to_value(&lines).unwrap_or_default();
    Json(v).into_response()
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct GraceBody {
    grace_ms: Option<u64>,
}

pub(super) async fn exec_cancel(
    State(state): State<Arc<HttpState>>,
    JobId(id): JobId,
    body: Bytes,
) -> HttpResponse {
    let req = parse_body::<GraceBody>(&body, "cancel")
        .map(|b| Request::ExecCancel(CancelRequest { exec_id: id, grace_ms: b.grace_ms }));
    match req {
        Ok(req) => super::original_files::with_canceled(state.call(req).await.1),
        Err(e) => error_response(e),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct WaitQuery {
    timeout_ms: Option<u64>,
}

pub(super) async fn exec_wait(
    State(state): State<Arc<HttpState>>,
    JobId(id): JobId,
    q: std::result::Result<Query<WaitQuery>, QueryRejection>,
) -> HttpResponse {
    let req =
        query(q).map(|q| Request::ExecWait(WaitRequest { exec_id: id, timeout_ms: q.timeout_ms }));
    answer(&state, req).await
}

pub(super) async fn exec_prune(
    State(state): State<Arc<HttpState>>,
    q: std::result::Result<Query<PruneRequest>, QueryRejection>,
) -> HttpResponse {
    answer(&state, query(q).map(Request::ExecPrune)).await
}
