//! The HTTP door of `codexd serve`: the same handlers as `rpc`, over loopback TCP and a Unix
//! socket (axum's router on hyper; each listener's accept loop, timeouts and connection limits
//! are in [`crate::http_accept`]).
//!
//! Paths of the original tool: `GET /health`, `POST /v1/exec`, `POST /v1/exec/run`,
//! `GET /v1/exec/{id}`, `GET /v1/exec/{id}/logs`, `POST /v1/exec/{id}/cancel`, the file routes
//! and the tar.gz tree routes `POST /v1/sync/upload|download` ([`sync_tar`]); new: `GET /v1/exec` (list),
//! `GET /v1/exec/{id}/wait`, `DELETE /v1/exec/{id}`, `POST /v1/prune`, and `POST /v1/rpc`, which
//! takes one protocol request line and streams the answer lines back as NDJSON (what
//! `codex-remote` uses). `logs?follow=true` (or `format=jsonl`) streams NDJSON as chunks.
//!
//! On TCP every request but `/health` is signed with the token (`Authorization:
//! Codexd-HMAC-SHA256 ...` over a one-use nonce of `/health`, see [`crate::auth`]), or, when the
//! config has `allow_bearer`, carries `Authorization: Bearer TOKEN` (compared in constant time);
//! the `Host` must be a loopback name or an allowed one (DNS rebinding), and a request
//! with an `Origin` is refused (no CORS). On the Unix socket its 0600 mode is the check.
//! Blocking handlers run in `spawn_blocking`.

use std::convert::Infallible;
use std::future::Future;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path as UrlPath, Query, Request as HttpRequest, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::mpsc;

mod original_files;
mod sync_tar;

pub use crate::http_accept::Listener;

use super::{Daemon, Sink, expand_cwd, home_dir};
use crate::auth;
use crate::error::{Error, ErrorCode, Result};
use crate::http_guard;
use crate::jobs::sys;
use crate::protocol::{
    CancelRequest, ErrorBody, ExecId, ExecStartRequest, HealthResponse, JobRef, JobState,
    ListRequest, LogView, LogsRequest, OnMachine, PruneRequest, Request, RequestLine, Response,
    ResponseLine, RunEvent, StreamOffsets, StreamSel, WaitRequest,
};
use crate::wire::MAX_REQUEST_LINE;

/// The body limit of `/v1/file/write`: a base64 body of a file up to the default
/// `max_file_size` (64 MiB), and some.
const FILE_BODY_LIMIT: usize = 128 << 20;

/// Answer lines buffered between a blocking handler and the HTTP body.
const CHANNEL_LINES: usize = 64;

/// What every request of one listener shares.
pub struct HttpState {
    pub daemon: Arc<Daemon>,
    /// serve's token: required on TCP, and the key of `/health`'s proof on both doors.
    pub token: String,
    /// The nonces `/health` handed out, each good for one signed request (shared by the doors).
    pub nonces: Arc<auth::Nonces>,
    pub door: Door,
    /// Set on SIGTERM/SIGINT: streams and waits stop so the server can exit.
    pub stopping: Arc<AtomicBool>,
}

/// Which listener a request came through, and so which checks it passes.
pub enum Door {
    /// Loopback TCP: a signed request (or the Bearer token) on every request but `/health`, and a `Host` that is a loopback
    /// name or one of `allowed_hosts` (DNS rebinding).
    Tcp { allowed_hosts: Vec<String> },
    /// The 0600 Unix socket: its file mode is the access check.
    Unix,
}

/// The routes, with the checks of this listener in front of them.
pub(crate) fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/rpc", post(rpc))
        .route("/v1/exec", post(exec_start).get(exec_list))
        .route("/v1/exec/run", post(exec_run))
        .route("/v1/exec/{id}", get(exec_status).delete(exec_rm))
        .route("/v1/exec/{id}/logs", get(exec_logs))
        .route("/v1/exec/{id}/cancel", post(exec_cancel))
        .route("/v1/exec/{id}/wait", get(exec_wait))
        .route("/v1/prune", post(exec_prune))
        // A JSON body may be as long as a request line (a script of a few MiB); `/v1/rpc`
        // streams its body and caps the line itself.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_LINE))
        .merge(file_routes())
        .merge(sync_tar::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(middleware::map_response(json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// An unknown path: 404 with a JSON error, as every other refusal.
async fn no_route(req: HttpRequest) -> HttpResponse {
    let what = format!("no route {} {}", req.method(), req.uri().path());
    refusal(StatusCode::NOT_FOUND, Error::new(ErrorCode::BadRequest, what))
}

/// A known path with another method: 405 with a JSON error.
async fn no_method(req: HttpRequest) -> HttpResponse {
    let what = format!("{} is not a method of {}", req.method(), req.uri().path());
    refusal(StatusCode::METHOD_NOT_ALLOWED, Error::new(ErrorCode::BadRequest, what))
}

/// A refusal with its own HTTP status (not the code's), pointing at the route list.
fn refusal(status: StatusCode, e: Error) -> HttpResponse {
    let e = e
        .with_hint("the routes and their methods are listed in the README, section `codexd serve`");
    (status, Json(Response::Error(ErrorBody::from(e)))).into_response()
}

/// Turns the plain-text refusals of axum's extractors (a body over its limit, a wrong
/// content type) into JSON error objects with the same status, so every answer is JSON.
async fn json_errors(resp: HttpResponse) -> HttpResponse {
    let status = resp.status();
    let is_json =
        resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
            v.starts_with("application/json") || v.starts_with("application/x-ndjson")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let e = match status {
        StatusCode::PAYLOAD_TOO_LARGE => Error::new(
            ErrorCode::RequestTooLarge,
            format!(
                "the request body is over this route's limit ({MAX_REQUEST_LINE} bytes for the \
                 JSON routes, {FILE_BODY_LIMIT} for the file write routes)"
            ),
        )
        .with_hint("send large scripts and files through `POST /v1/rpc` (codex-remote does)"),
        other => {
            let what = format!("HTTP {other}: the request was refused before any handler ran");
            return refusal(status, Error::new(ErrorCode::BadRequest, what));
        }
    };
    (status, Json(Response::Error(ErrorBody::from(e)))).into_response()
}

/// Serves `router(state)` on an already bound listener until `shutdown` completes, with the
/// timeouts and connection limits of [`crate::http_accept`].
pub async fn serve(
    listener: Listener,
    state: Arc<HttpState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::http_accept::serve("codexd serve", listener, router(state), shutdown).await
}

/// Origin, Host and token checks, before any handler runs. A refused request's connection is
/// closed after the answer, so its unread body (and its sender) cannot hold a connection slot.
async fn guard(
    State(state): State<Arc<HttpState>>,
    mut req: HttpRequest,
    next: Next,
) -> HttpResponse {
    let checked = match refused(&state, &req) {
        Some(e) => Err(e),
        None => authenticated(&state, &req),
    };
    match checked {
        Err(e) => {
            crate::http_accept::release(&req);
            drain_briefly(req.into_body()).await;
            let mut response = error_response(e);
            response.headers_mut().insert(header::CONNECTION, "close".parse().expect("a header"));
            response
        }
        Ok(None) => next.run(req).await,
        // `/v1/rpc` streams its body: the handler checks the request line's digest.
        Ok(Some(signed)) if req.uri().path() == "/v1/rpc" => {
            req.extensions_mut().insert(SignedLine(signed));
            next.run(req).await
        }
        Ok(Some(signed)) => {
            let (parts, body) = req.into_parts();
            match axum::body::to_bytes(body, FILE_BODY_LIMIT).await {
                Ok(bytes) if auth::same_secret(&auth::sha256_hex(&bytes), &signed) => {
                    next.run(HttpRequest::from_parts(parts, Body::from(bytes))).await
                }
                _ => error_response(body_not_signed()),
            }
        }
    }
}

/// The body digest a signed request's signature covers (`/v1/rpc`: of its request line).
#[derive(Clone)]
struct SignedLine(String);

fn body_not_signed() -> Error {
    Error::new(ErrorCode::Unauthorized, "the body is not the one the request's signature covers")
}

/// Who may pass the TCP door: a request signed with the token over a fresh nonce of `/health`
/// (`Ok(Some(body digest))`, checked against the body later), or the Bearer token when the
/// config allows it. `/health` and the Unix socket need neither.
fn authenticated(state: &HttpState, req: &HttpRequest) -> Result<Option<String>> {
    if !matches!(state.door, Door::Tcp { .. }) || req.uri().path() == "/health" {
        return Ok(None);
    }
    let refused = |what: &str| {
        Error::new(ErrorCode::Unauthorized, what.to_string()).with_hint(
            "sign the request with the token (codex-remote does), or send `Authorization: Bearer              TOKEN` where the config has `allow_bearer: true` (the token is in ~/.codexd/token)",
        )
    };
    let value = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let path = req.uri().path_and_query().map_or(req.uri().path(), |p| p.as_str());
    if let Some((signed, sig)) =
        value.and_then(|v| auth::Signed::parse(req.method().as_str(), path, v))
    {
        if !signed.verify(&state.token, &sig) {
            return Err(refused("the request's signature is not the token's"));
        }
        if !signed.fresh_at(auth::unix_now()) {
            return Err(refused("the request was signed too far from this server's clock")
                .with_hint("check the clocks of both machines"));
        }
        if !state.nonces.take(&signed.nonce) {
            return Err(refused("the request's nonce is unknown, used or expired")
                .with_hint("ask /health?challenge= for a fresh nonce before each request"));
        }
        return Ok(Some(signed.body));
    }
    if state.daemon.config.allow_bearer && token_matches(req.headers(), &state.token) {
        return Ok(None);
    }
    Err(refused("missing or wrong token"))
}

/// Why the guard refuses `req`, if it does.
fn refused(state: &HttpState, req: &HttpRequest) -> Option<Error> {
    if req.headers().contains_key(header::ORIGIN) {
        return Some(Error::new(
            ErrorCode::Forbidden,
            "cross-origin requests are refused (no CORS)",
        ));
    }
    if let Door::Tcp { allowed_hosts: allowed } = &state.door {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        if !http_guard::host_allowed(host, allowed) {
            let e = Error::new(
                ErrorCode::Forbidden,
                format!("Host {host:?} is refused: only loopback names or `allowed_hosts`"),
            )
            .with_hint("connect to 127.0.0.1 or localhost, or add the name to allowed_hosts");
            return Some(e);
        }
    }
    None
}

/// How much of a refused request's body is read (and dropped) before the answer, and for how
/// long: a client that sent a small body at once gets the JSON error rather than a reset; a
/// larger or slower one gets the answer when either runs out, then the connection closes.
const REFUSED_BODY_READ: usize = 1 << 20;
const REFUSED_BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// The cap on a body read to its end after a refusal in a handler ([`sync_tar`]'s uploads,
/// which are authenticated).
const REFUSED_BODY_DRAIN: usize = 16 << 20;

/// Reads and drops what arrives of `body` within [`REFUSED_BODY_DEADLINE`], up to
/// [`REFUSED_BODY_READ`] bytes, one frame in memory at a time.
async fn drain_briefly(body: Body) {
    let mut stream = body.into_data_stream();
    let mut left = REFUSED_BODY_READ;
    let _ = tokio::time::timeout(REFUSED_BODY_DEADLINE, async {
        while let Some(Ok(chunk)) = tokio_stream::StreamExt::next(&mut stream).await {
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

fn token_matches(headers: &HeaderMap, token: &str) -> bool {
    auth::same_secret(http_guard::bearer(headers).unwrap_or(""), token)
}

/// Refuses a cwd outside the home and `allowed_cwd_roots`, with symlinks resolved.
pub(crate) fn check_cwd(req: &ExecStartRequest, roots: &[PathBuf]) -> Result<()> {
    let cwd = PathBuf::from(expand_cwd(req.cwd.as_deref(), &home_dir())?);
    check_inside(&cwd, "cwd", roots)
}

/// Refuses a path outside the home and `allowed_cwd_roots`, with symlinks resolved.
fn check_inside(cwd: &Path, what: &str, roots: &[PathBuf]) -> Result<()> {
    let home = home_dir();
    let resolved = resolve_existing(cwd)?;
    let inside = std::iter::once(home.as_path())
        .chain(roots.iter().map(PathBuf::as_path))
        .filter_map(|r| r.canonicalize().ok())
        .any(|r| resolved.starts_with(r));
    if inside {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::Forbidden,
        format!("{what} {} is outside the home dir and allowed_cwd_roots", cwd.display()),
    )
    .with_hint("add the directory to allowed_cwd_roots in codexd's config"))
}

/// The path with the symlinks of its longest existing prefix resolved; the missing rest may not
/// climb with `..`.
fn resolve_existing(path: &Path) -> Result<PathBuf> {
    let mut missing = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        if let Ok(real) = cur.canonicalize() {
            return Ok(missing.iter().rev().fold(real, |p, c: &std::ffi::OsString| p.join(c)));
        }
        let Some(name) = cur.file_name().map(|n| n.to_os_string()) else {
            return Err(Error::invalid(format!("cwd {} cannot be resolved", path.display())));
        };
        if matches!(cur.components().next_back(), Some(Component::ParentDir)) {
            return Err(Error::invalid("cwd climbs with .. below a missing directory"));
        }
        missing.push(name);
        cur.pop();
    }
}

/// The HTTP status for an error code (the crate's one table: [`ErrorCode::http_status`]).
fn http_status(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn error_response(e: Error) -> HttpResponse {
    let status = http_status(e.code);
    (status, Json(ErrorBody::object(&e))).into_response()
}

/// A final answer as an HTTP response: the answer's JSON, or the error with its status.
fn answer_response(answer: Result<Response>) -> HttpResponse {
    match answer {
        Ok(Response::Error(body)) => error_response(body.into()),
        Ok(answer) => Json(answer).into_response(),
        Err(e) => error_response(e),
    }
}

/// Collects intermediate lines in memory (non-streaming answers).
struct CollectSink {
    lines: Vec<Response>,
    stopping: Arc<AtomicBool>,
}

impl Sink for CollectSink {
    fn send(&mut self, response: Response) -> std::io::Result<()> {
        self.lines.push(response);
        Ok(())
    }

    fn closed(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// Sends each answer line down a channel to a streaming HTTP body.
struct ChannelSink {
    tx: mpsc::Sender<Bytes>,
    lines: Lines,
    stopping: Arc<AtomicBool>,
}

/// How a streamed answer's lines are written.
enum Lines {
    /// Protocol answer lines, with the request's `id` (`/v1/rpc`, `logs?follow=true`).
    Answers(Option<serde_json::Value>),
    /// `exec run`'s events (`POST /v1/exec/run`): a `log` line as is, the `logs_end` of the
    /// follow as `finished` with the job's final status; an error as an error.
    Run,
}

impl Sink for ChannelSink {
    fn send(&mut self, response: Response) -> std::io::Result<()> {
        let mut line = match (&self.lines, response) {
            // The original tool's streams (`logs?follow=true` without an id, `exec/run`) stay
            // as they were: heartbeats are for `/v1/rpc`'s clients.
            (Lines::Answers(None) | Lines::Run, Response::Heartbeat(_)) => return Ok(()),
            (Lines::Answers(id), response) => {
                serde_json::to_vec(&ResponseLine { id: id.clone(), response })?
            }
            (Lines::Run, Response::Log(line)) => serde_json::to_vec(&RunEvent::Log(&line))?,
            (Lines::Run, Response::LogsEnd(end)) => {
                serde_json::to_vec(&RunEvent::Finished(OnMachine::new(&end.job, "")))?
            }
            (Lines::Run, other) => serde_json::to_vec(&other)?,
        };
        line.push(b'\n');
        self.tx
            .blocking_send(Bytes::from(line))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }

    fn closed(&self) -> bool {
        self.tx.is_closed() || self.stopping.load(Ordering::SeqCst)
    }
}

impl HttpState {
    /// Runs `request` in a blocking thread; the intermediate lines come back with the answer.
    async fn call(self: &Arc<Self>, request: Request) -> (Vec<Response>, Result<Response>) {
        let state = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut sink = CollectSink { lines: Vec::new(), stopping: state.stopping.clone() };
            let answer = state.checked_handle(&request, &mut sink);
            (sink.lines, answer)
        })
        .await;
        joined.unwrap_or_else(|e| (Vec::new(), Err(Error::internal("handler", e))))
    }

    /// Runs `request` in a blocking thread, streaming every answer line as NDJSON.
    fn stream(self: &Arc<Self>, id: Option<serde_json::Value>, request: Request) -> HttpResponse {
        self.stream_lines(Lines::Answers(id), Bytes::new(), request)
    }

    /// As [`stream`](Self::stream), the lines written as `lines` says, after `first`.
    fn stream_lines(
        self: &Arc<Self>,
        lines: Lines,
        first: Bytes,
        request: Request,
    ) -> HttpResponse {
        let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_LINES);
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            if !first.is_empty() && tx.blocking_send(first).is_err() {
                return;
            }
            let mut sink = ChannelSink { tx, lines, stopping: state.stopping.clone() };
            let answer = state
                .checked_handle(&request, &mut sink)
                .unwrap_or_else(|e| Response::Error(e.into()));
            let _ = sink.send(answer);
        });
        let body =
            tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |b| {
                Ok::<_, Infallible>(b)
            });
        ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(body)).into_response()
    }

    /// `Daemon::handle`, with serve's own check on where a job may run.
    fn checked_handle(&self, request: &Request, sink: &mut dyn Sink) -> Result<Response> {
        if let Request::ExecStart(start) = request {
            check_cwd(start, &self.daemon.config.allowed_cwd_roots)?;
        }
        if let Some(path) = request.target_path() {
            check_file_path(path, &self.daemon.config.allowed_cwd_roots)?;
        }
        self.daemon.handle(request, sink)
    }
}

#[derive(Debug, Default, Deserialize)]
struct HealthQuery {
    challenge: Option<String>,
}

/// `GET /health[?challenge=C]`: `hello`, who runs this daemon, and with a challenge a fresh
/// one-use nonce and the proof over both that it holds the token (`auth`), so a client can tell
/// it from another user's listener and sign its next request.
async fn health(
    State(state): State<Arc<HttpState>>,
    q: std::result::Result<Query<HealthQuery>, QueryRejection>,
) -> HttpResponse {
    let hello = state.daemon.hello();
    let uid = rustix::process::getuid().as_raw();
    let proofs = match query(q).map(|q| q.challenge) {
        Ok(None) => None,
        Ok(Some(c)) if auth::challenge_ok(&c) => match state.nonces.issue() {
            Ok(nonce) => Some((
                state.daemon.config.allow_bearer.then(|| auth::proof(&state.token, &c)),
                auth::health_proof(&state.token, &c, &nonce, uid, &hello.user),
                nonce,
            )),
            Err(e) => return error_response(e),
        },
        Ok(Some(_)) => {
            return error_response(Error::new(
                ErrorCode::BadRequest,
                "challenge must be 16 to 128 hex digits",
            ));
        }
        Err(e) => return error_response(e),
    };
    let (proof, nonce_proof, nonce) = match proofs {
        Some((proof, nonce_proof, nonce)) => (proof, Some(nonce_proof), Some(nonce)),
        None => (None, None, None),
    };
    Json(HealthResponse {
        ok: true,
        service: "codexd".to_string(),
        hello,
        uid,
        pid: sys::current_pid(),
        proof,
        nonce,
        nonce_proof,
    })
    .into_response()
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes, what: &str) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| Error::new(ErrorCode::BadRequest, format!("invalid {what} body: {e}")))
}

fn query<T>(q: std::result::Result<Query<T>, QueryRejection>) -> Result<T> {
    q.map(|Query(t)| t).map_err(|e| Error::new(ErrorCode::BadRequest, e.body_text()))
}

/// `POST /v1/rpc`: one request line in, its answer lines out as NDJSON (as `codexd rpc`); the
/// bytes after the line stream to the handler (files and sync, see the block at the end).
async fn rpc(
    State(state): State<Arc<HttpState>>,
    signed: Option<axum::Extension<SignedLine>>,
    body: Body,
) -> HttpResponse {
    rpc_with_bytes(state, signed.map(|s| s.0.0), body)
}

/// Runs a request built from the HTTP request (or refuses what could not be parsed) and answers
/// with its final answer.
async fn answer(state: &Arc<HttpState>, request: Result<Request>) -> HttpResponse {
    match request {
        Ok(request) => answer_response(state.call(request).await.1),
        Err(e) => error_response(e),
    }
}

async fn exec_start(State(state): State<Arc<HttpState>>, body: Bytes) -> HttpResponse {
    answer(&state, parse_body(&body, "exec").map(Request::ExecStart)).await
}

/// `POST /v1/exec/run` (the original tool's): starts the job as `POST /v1/exec` does (a
/// refused start is its JSON error with its status), then streams NDJSON as `codex-remote exec
/// run` prints it: `started` (the status object), a `log` line for each line of both streams,
/// and `finished` with the final status. A client that goes away leaves the job running.
async fn exec_run(State(state): State<Arc<HttpState>>, body: Bytes) -> HttpResponse {
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
struct ListQuery {
    state: Option<JobState>,
    limit: Option<usize>,
}

async fn exec_list(
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
struct JobId(ExecId);

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

async fn exec_status(State(state): State<Arc<HttpState>>, JobId(id): JobId) -> HttpResponse {
    answer(&state, Ok(Request::ExecStatus(JobRef { exec_id: id }))).await
}

async fn exec_rm(State(state): State<Arc<HttpState>>, JobId(id): JobId) -> HttpResponse {
    answer(&state, Ok(Request::ExecRm(JobRef { exec_id: id }))).await
}

#[derive(Debug, Default, Deserialize)]
struct LogsQuery {
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

async fn exec_logs(
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
struct GraceBody {
    grace_ms: Option<u64>,
}

async fn exec_cancel(
    State(state): State<Arc<HttpState>>,
    JobId(id): JobId,
    body: Bytes,
) -> HttpResponse {
    let req = parse_body::<GraceBody>(&body, "cancel")
        .map(|b| Request::ExecCancel(CancelRequest { exec_id: id, grace_ms: b.grace_ms }));
    answer(&state, req).await
}

#[derive(Debug, Default, Deserialize)]
struct WaitQuery {
    timeout_ms: Option<u64>,
}

async fn exec_wait(
    State(state): State<Arc<HttpState>>,
    JobId(id): JobId,
    q: std::result::Result<Query<WaitQuery>, QueryRejection>,
) -> HttpResponse {
    let req =
        query(q).map(|q| Request::ExecWait(WaitRequest { exec_id: id, timeout_ms: q.timeout_ms }));
    answer(&state, req).await
}

async fn exec_prune(
    State(state): State<Arc<HttpState>>,
    q: std::result::Result<Query<PruneRequest>, QueryRejection>,
) -> HttpResponse {
    answer(&state, query(q).map(Request::ExecPrune)).await
}
// ---------------------------------------------------------------------------------------------
// Files and sync over HTTP: `/v1/rpc` with the bytes after a request line streamed to the
// handler, and the original tool's `/v1/file/write` and `/v1/file/read`. Same token, Host and
// `allowed_cwd_roots` rules as jobs (the guard, and `checked_handle`).

/// The file routes: the original tool's (`POST /v1/file/write|read`, its shapes, see
/// [`original_files`]) and ours (`POST /v1/files/write`, `GET /v1/files/read`; the `GET` of
/// `/v1/file/read` is ours too, the method tells them apart).
fn file_routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/v1/file/write", post(original_files::file_write))
        .route("/v1/file/read", post(original_files::file_read).get(file_read))
        .route("/v1/files/write", post(file_write))
        .route("/v1/files/read", get(file_read))
        .layer(axum::extract::DefaultBodyLimit::max(FILE_BODY_LIMIT))
}

/// Refuses a file or sync path outside the home and `allowed_cwd_roots` (symlinks resolved).
pub fn check_file_path(path: &str, roots: &[PathBuf]) -> Result<()> {
    check_inside(&super::files::resolve(path)?, "path", roots)
}

/// A blocking reader over a request body, fed by a task that forwards its chunks.
struct BodyReader {
    rx: mpsc::Receiver<std::result::Result<Bytes, String>>,
    chunk: Bytes,
}

impl BodyReader {
    fn of(body: Body) -> std::io::BufReader<BodyReader> {
        std::io::BufReader::with_capacity(256 * 1024, BodyReader::raw(body))
    }

    /// The reader without a buffer (for a caller that wraps it first).
    fn raw(body: Body) -> BodyReader {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut stream = body.into_data_stream();
            while let Some(chunk) = tokio_stream::StreamExt::next(&mut stream).await {
                if tx.send(chunk.map_err(|e| e.to_string())).await.is_err() {
                    break;
                }
            }
        });
        BodyReader { rx, chunk: Bytes::new() }
    }
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// The answer side of a streamed `/v1/rpc`: answer lines and raw bytes into one body.
struct BytesSink {
    input: std::io::BufReader<BodyReader>,
    out: ChannelSink,
    raw: ChannelWriter,
}

/// Raw bytes down the answer channel.
struct ChannelWriter(mpsc::Sender<Bytes>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink for BytesSink {
    fn send(&mut self, response: Response) -> std::io::Result<()> {
        self.out.send(response)
    }
    fn closed(&self) -> bool {
        self.out.closed()
    }
    fn payload(&mut self) -> Option<&mut dyn std::io::BufRead> {
        Some(&mut self.input)
    }
    fn raw_out(&mut self) -> Option<&mut dyn std::io::Write> {
        Some(&mut self.raw)
    }
}

/// With `signed`, the request line must have that digest (the signature covers it; the bytes
/// after it are the request's own, checked by the handler as on any door).
fn rpc_with_bytes(state: Arc<HttpState>, signed: Option<String>, body: Body) -> HttpResponse {
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_LINES);
    let mut input = BodyReader::of(body);
    tokio::task::spawn_blocking(move || {
        let line = crate::wire::read_line_capped(&mut input, crate::wire::MAX_REQUEST_LINE);
        let parsed = match line {
            Ok(Some(crate::wire::Line::Text(bytes)))
                if signed
                    .as_ref()
                    .is_some_and(|d| !auth::same_secret(&auth::sha256_hex(&bytes), d)) =>
            {
                Err(Box::new((None, body_not_signed())))
            }
            Ok(Some(crate::wire::Line::Text(bytes))) => RequestLine::parse(&bytes),
            _ => Err(Box::new((None, Error::new(ErrorCode::BadRequest, "no request line")))),
        };
        let stopping = state.stopping.clone();
        let (id, request) = match parsed {
            Ok(RequestLine { id, request }) => (id, Ok(request)),
            Err(rejected) => (rejected.0, Err(rejected.1)),
        };
        let out = ChannelSink { tx: tx.clone(), lines: Lines::Answers(id), stopping };
        let mut sink = BytesSink { input, out, raw: ChannelWriter(tx) };
        let answer = request
            .and_then(|r| state.checked_handle(&r, &mut sink))
            .unwrap_or_else(|e| Response::Error(e.into()));
        let _ = sink.send(answer);
    });
    let body = tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |b| {
        Ok::<_, Infallible>(b)
    });
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(body)).into_response()
}

/// `POST /v1/files/write` (ours): `{"path", "content" | "content_b64", "mode": "0644", "mkdir"}`.
#[derive(Debug, Default, Deserialize)]
struct FileWriteBody {
    path: String,
    content: Option<String>,
    content_b64: Option<String>,
    mode: Option<String>,
    #[serde(default)]
    mkdir: bool,
}

async fn file_write(State(state): State<Arc<HttpState>>, body: Bytes) -> HttpResponse {
    use base64::Engine;
    let parsed = parse_body::<FileWriteBody>(&body, "file write").and_then(|b| {
        let bytes = match (b.content, b.content_b64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| Error::invalid(format!("content_b64: {e}")))?,
            _ => return Err(Error::invalid("give one of content and content_b64")),
        };
        let mode = b.mode.as_deref().map(crate::protocol::files::octal::parse).transpose();
        let req = crate::protocol::FileWriteRequest {
            path: b.path,
            size: bytes.len() as u64,
            mode: mode.map_err(Error::invalid)?,
            mkdir: b.mkdir,
            follow_symlinks: false,
            keep_special_bits: false,
        };
        Ok((req, bytes))
    });
    let (req, bytes) = match parsed {
        Ok(p) => p,
        Err(e) => return error_response(e),
    };
    let state2 = state.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let roots = &state2.daemon.config.allowed_cwd_roots;
        check_file_path(&req.path, roots)?;
        super::files::file_write(&req, &mut &bytes[..], &state2.daemon.config)
    })
    .await;
    let answer = joined.unwrap_or_else(|e| Err(Error::internal("handler", e)));
    answer_response(answer.map(Response::FileWritten))
}

#[derive(Debug, Default, Deserialize)]
struct FileReadQuery {
    path: String,
    offset: Option<u64>,
    limit: Option<u64>,
}

/// `GET /v1/files/read?path=P&offset=N&limit=N` (also `GET /v1/file/read`): the `file_data`
/// object.
async fn file_read(
    State(state): State<Arc<HttpState>>,
    q: std::result::Result<Query<FileReadQuery>, QueryRejection>,
) -> HttpResponse {
    let req = query(q).map(|q| {
        Request::FileRead(crate::protocol::FileReadRequest {
            path: q.path,
            offset: q.offset,
            limit: q.limit,
        })
    });
    answer(&state, req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_dirs_resolve_through_their_existing_parent() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        assert_eq!(resolve_existing(&dir.path().join("a/b")).unwrap(), real.join("a/b"));
        assert!(resolve_existing(&dir.path().join("a/../../x")).is_err());
    }
}
