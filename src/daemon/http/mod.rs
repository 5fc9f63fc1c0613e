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
//!
//! Here: the state, the router and the answer helpers. The guard is in [`guard`], the job routes
//! in [`jobs`], the file routes in [`files`] and [`original_files`], the tree routes in
//! [`sync_tar`], `/v1/rpc` and the sinks in [`stream`], the allowed roots in [`roots`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request as HttpRequest, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

mod files;
mod guard;
mod jobs;
mod original_files;
mod roots;
mod stream;
mod sync_tar;

pub use crate::http_accept::Listener;
pub(crate) use roots::check_cwd;
pub use roots::check_file_path;

use super::Daemon;
use crate::auth;
use crate::error::{Error, ErrorCode, Result};
use crate::jobs::sys;
use crate::protocol::{ErrorBody, HealthResponse, Request, Response};
use crate::wire::MAX_REQUEST_LINE;
use guard::REFUSED_BODY_DRAIN;
use roots::check_inside;
use stream::BodyReader;

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
        .route("/v1/rpc", post(stream::rpc))
        .route("/v1/exec", post(jobs::exec_start).get(jobs::exec_list))
        .route("/v1/exec/run", post(jobs::exec_run))
        .route("/v1/exec/{id}", get(jobs::exec_status).delete(jobs::exec_rm))
        .route("/v1/exec/{id}/logs", get(jobs::exec_logs))
        .route("/v1/exec/{id}/cancel", post(jobs::exec_cancel))
        .route("/v1/exec/{id}/wait", get(jobs::exec_wait))
        .route("/v1/prune", post(jobs::exec_prune))
        // A JSON body may be as long as a request line (a script of a few MiB); `/v1/rpc`
        // streams its body and caps the line itself.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_LINE))
        .merge(files::routes())
        .merge(sync_tar::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(middleware::map_response(json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
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

/// Runs a request built from the HTTP request (or refuses what could not be parsed) and answers
/// with its final answer.
async fn answer(state: &Arc<HttpState>, request: Result<Request>) -> HttpResponse {
    match request {
        Ok(request) => answer_response(state.call(request).await.1),
        Err(e) => error_response(e),
    }
}
