//! What keeps other web pages, and other hosts, out of the dashboard. Every request passes here.
//!
//! - Loopback unless `--listen` says otherwise; then every request needs the token from the
//!   printed URL (`?token=`), which is then kept in an HttpOnly, SameSite=Strict cookie.
//! - The `Host` must be the listen address or a loopback name: a DNS-rebinding page
//!   (`evil.example` resolving to 127.0.0.1) is refused.
//! - Anything but GET/HEAD (the routes that change something are POST only) needs the
//!   per-process secret in the `x-dashboard-secret` header. Only the served page holds it, and no
//!   CORS header is ever sent, so another origin can neither read it nor send that header. An
//!   `Origin` or `Sec-Fetch-Site` that names another site is refused as well.
//! - Every answer forbids caching, framing and sniffing, and its CSP allows scripts from here only.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::Dashboard;
use crate::error::ErrorCode;

/// The header that carries the per-process secret.
pub const SECRET_HEADER: &str = "x-dashboard-secret";
const TOKEN_COOKIE: &str = "codex_dashboard_token";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub struct Guard {
    addr: SocketAddr,
    secret: String,
    /// Needed on every request when the listen address is not loopback.
    token: Option<String>,
}

impl Guard {
    pub fn new(addr: SocketAddr) -> Self {
        let token = (!addr.ip().is_loopback()).then(random_secret);
        Guard { addr, secret: random_secret(), token }
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn url(&self) -> String {
        match &self.token {
            Some(token) => format!("http://{}/?token={token}", self.addr),
            None => format!("http://{}/", self.addr),
        }
    }

    /// The listen address itself, or a loopback name (`localhost`, 127.0.0.0/8, `[::1]`).
    fn host_allowed(&self, host: &str) -> bool {
        if host.eq_ignore_ascii_case(&self.addr.to_string()) {
            return true;
        }
        let name = match host.strip_prefix('[') {
            Some(rest) => rest.split_once(']').map_or(rest, |(n, _)| n),
            None => host.rsplit_once(':').map_or(host, |(n, _)| n),
        };
        name.eq_ignore_ascii_case("localhost")
            || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// 256 random bits as hex.
fn random_secret() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The middleware: refuses what the module docs say, then adds the safety headers.
pub async fn check(State(d): State<Arc<Dashboard>>, req: Request, next: Next) -> Response {
    let guard = &d.guard;
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !guard.host_allowed(host) {
        let message = format!("Host {host:?} is refused: use {} or a loopback name", guard.addr);
        return refuse(StatusCode::FORBIDDEN, ErrorCode::Forbidden, &message);
    }
    let mut set_cookie = None;
    if let Some(token) = &guard.token {
        let from_query = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
            .is_some_and(|t| same(t, token));
        if from_query {
            set_cookie = Some(format!(
                "{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age=86400"
            ));
        } else if !cookie(headers, TOKEN_COOKIE).is_some_and(|t| same(t, token)) {
            let message = "open the URL that `codex-remote dashboard` printed (it has the token)";
            return refuse(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message);
        }
    }
    if req.method() != Method::GET
        && req.method() != Method::HEAD
        && let Err(message) = same_origin_with_secret(guard, headers, host)
    {
        return refuse(StatusCode::FORBIDDEN, ErrorCode::Forbidden, &message);
    }
    let mut response = next.run(req).await;
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
