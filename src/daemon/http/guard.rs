//! The guard in front of every route: Origin and Host checks, then who may pass the TCP door (a
//! request signed with the token over a one-use nonce of `/health`, or the Bearer token where
//! the config allows it). A refused request's body is read only briefly.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request as HttpRequest, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response as HttpResponse;

use super::{Door, FILE_BODY_LIMIT, HttpState, error_response};
use crate::auth;
use crate::error::{Error, ErrorCode, Result};
use crate::http_guard;

/// Origin, Host and token checks, before any handler runs. A refused request's connection is
/// closed after the answer, so its unread body (and its sender) cannot hold a connection slot.
pub(super) async fn guard(
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
        // `/v1/rpc` streams its body: the handler checks the request line's digest, and (v2)
        // each chunk after it.
        Ok(Some(signed)) if req.uri().path() == "/v1/rpc" => {
            req.extensions_mut().insert(signed);
            next.run(req).await
        }
        Ok(Some(signed)) => {
            let (parts, body) = req.into_parts();
            match axum::body::to_bytes(body, FILE_BODY_LIMIT).await {
                Ok(bytes) if auth::same_secret(&auth::sha256_hex(&bytes), &signed.digest) => {
                    next.run(HttpRequest::from_parts(parts, Body::from(bytes))).await
                }
                _ => error_response(body_not_signed()),
            }
        }
    }
}

/// What a signed request's signature covers beyond its head: the digest of its body (of
/// `/v1/rpc`'s request line), and with version 2 the key of the chunks after that line
/// ([`auth::MacReader`]; `None`: an older client, whose bytes after the line are refused).
#[derive(Clone)]
pub(super) struct SignedBody {
    pub(super) digest: String,
    pub(super) stream: Option<auth::StreamKey>,
}

pub(super) fn body_not_signed() -> Error {
    Error::new(ErrorCode::Unauthorized, "the body is not the one the request's signature covers")
}

/// Who may pass: on TCP a request signed with the token over a fresh nonce of `/health`
/// (`Ok(Some(..))`, its body checked later), or the Bearer token when the config allows it.
/// `/health` needs neither, nor does the Unix socket; a signed request is checked there too,
/// since its body is framed as its signature says.
fn authenticated(state: &HttpState, req: &HttpRequest) -> Result<Option<SignedBody>> {
    if req.uri().path() == "/health" {
        return Ok(None);
    }
    let tcp = matches!(state.door, Door::Tcp { .. });
    let refused = |what: &str| {
        Error::new(ErrorCode::Unauthorized, what.to_string()).with_hint(
            "sign the request with the token (codex-remote does), or send `Authorization: Bearer \
             TOKEN` where the config has `allow_bearer: true` (the token is in ~/.codexd/token)",
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
        let stream = (signed.version >= 2).then(|| signed.stream_key(&state.token));
        return Ok(Some(SignedBody { digest: signed.body, stream }));
    }
    if !tcp || state.daemon.config.allow_bearer && token_matches(req.headers(), &state.token) {
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
pub(super) const REFUSED_BODY_DRAIN: usize = 16 << 20;

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
