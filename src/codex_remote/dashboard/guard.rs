//! What keeps other web pages, other users and other hosts out of the dashboard. Every request
//! passes here.
//!
//! - Every request needs the random token of the printed URL, loopback included (another user of
//!   the laptop can reach 127.0.0.1 too), as Jupyter does: `?token=` on a first visit is exchanged
//!   for an HttpOnly, SameSite=Strict cookie and a redirect to the URL without it; the cookie (or
//!   `Authorization: Bearer`) serves every later request. Without it: 401, no page, no secret.
//! - The `Host` must be the listen address or a loopback name: a DNS-rebinding page
//!   (`evil.example` resolving to 127.0.0.1) is refused.
//! - Anything but GET/HEAD (the routes that change something are POST only) needs the
//!   per-process secret in the `x-dashboard-secret` header. Only the served page holds it, and no
//!   CORS header is ever sent, so another origin can neither read it nor send that header. An
//!   `Origin` or `Sec-Fetch-Site` that names another site is refused as well.
//! - A refused request lets go of its connection's busy mark, and the connections themselves have
//!   `codexd serve`'s limits ([`crate::http_accept`]: a head within 10 s, at most 512 open, 64 per
//!   peer address), so half-open connections cannot fill the process's files.
//! - Every answer forbids caching, framing and sniffing, and its CSP allows scripts from here only.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Dashboard;
use crate::auth::same_secret as same;
use crate::error::{ErrorCode, Result};

/// The header that carries the per-process secret.
pub const SECRET_HEADER: &str = "x-dashboard-secret";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub struct Guard {
    addr: SocketAddr,
    /// The CSRF secret the page carries.
    secret: String,
    /// Needed on every request: in the printed URL, then in the cookie.
    token: String,
    /// The listen address, accepted as a `Host` besides the loopback names.
    hosts: Vec<String>,
}

impl Guard {
    pub fn new(addr: SocketAddr) -> Result<Self> {
        let (secret, token) = (crate::auth::random_token()?, crate::auth::random_token()?);
        Ok(Guard { addr, secret, token, hosts: vec![addr.ip().to_string()] })
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn url(&self) -> String {
        format!("http://{}/?token={}", self.addr, self.token)
    }

    /// The cookie's name carries the port: browsers share cookies between the ports of a host,
    /// and two dashboards must not overwrite each other's.
    fn cookie_name(&self) -> String {
        format!("codex_dashboard_{}", self.addr.port())
    }
}

/// The middleware: refuses what the module docs say, then adds the safety headers.
pub async fn check(State(d): State<Arc<Dashboard>>, req: Request, next: Next) -> Response {
    let guard = &d.guard;
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !crate::http_guard::host_allowed(host, &guard.hosts) {
        let message = format!("Host {host:?} is refused: use {} or a loopback name", guard.addr);
        crate::http_accept::release(&req);
        return refuse(StatusCode::FORBIDDEN, ErrorCode::Forbidden, &message);
    }
    let token = guard.token.as_str();
    let (from_query, rest_of_query) = split_token(req.uri().query());
    let from_query = from_query.is_some_and(|t| same(t, token));
    let set_cookie = from_query
        .then(|| format!("{}={token}; HttpOnly; SameSite=Strict; Path=/", guard.cookie_name()));
    if from_query && (req.method() == Method::GET || req.method() == Method::HEAD) {
        // The first visit: the token moves into the cookie and out of the address bar.
        let location = match rest_of_query {
            Some(q) => format!("{}?{q}", req.uri().path()),
            None => req.uri().path().to_string(),
        };
        let response = (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
        return with_safety_headers(set_cookie, response);
    }
    let from_cookie = cookie(headers, &guard.cookie_name()).is_some_and(|t| same(t, token));
    let from_bearer = crate::http_guard::bearer(headers).is_some_and(|t| same(t, token));
    if !(from_query || from_cookie || from_bearer) {
        let message = "open the URL that `codex-remote dashboard` printed (it has the token)";
        crate::http_accept::release(&req);
        return refuse(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message);
    }
    if req.method() != Method::GET
        && req.method() != Method::HEAD
        && let Err(message) = same_origin_with_secret(guard, headers, host)
    {
        crate::http_accept::release(&req);
        return refuse(StatusCode::FORBIDDEN, ErrorCode::Forbidden, &message);
    }
    let response = next.run(req).await;
    with_safety_headers(set_cookie, response)
}

/// Adds the headers every answer carries (and the token cookie on the exchange).
fn with_safety_headers(set_cookie: Option<String>, mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    if let Some(cookie) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::SET_COOKIE, cookie);
    }
    response
}

/// The `token` parameter of a query, and the query without it (`None` when nothing is left).
fn split_token(query: Option<&str>) -> (Option<&str>, Option<String>) {
    let Some(query) = query else { return (None, None) };
    let mut token = None;
    let mut rest = Vec::new();
    for kv in query.split('&') {
        match kv.strip_prefix("token=") {
            Some(t) if token.is_none() => token = Some(t),
            _ => rest.push(kv),
        }
    }
    let rest = (!rest.is_empty()).then(|| rest.join("&"));
    (token, rest)
}

/// A request that changes something: the secret, and no sign of another origin.
fn same_origin_with_secret(guard: &Guard, headers: &HeaderMap, host: &str) -> Result<(), String> {
    let secret = headers.get(SECRET_HEADER).and_then(|s| s.to_str().ok()).unwrap_or("");
    if !same(secret, &guard.secret) {
        return Err(format!("a request that changes something needs the page's {SECRET_HEADER}"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let expected = format!("http://{host}");
        if origin.to_str().ok() != Some(expected.as_str()) {
            return Err(format!("a request from origin {origin:?} is refused"));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|s| s.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Err(format!("a {site} request is refused"));
    }
    Ok(())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(name)?.strip_prefix('='))
}

fn refuse(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = serde_json::json!({ "type": "error", "code": code, "message": message });
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
