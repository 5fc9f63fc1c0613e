//! The HTTP door: a `codexd serve` reached over HTTP (blocking `ureq`): `addr:` machines, and
//! ssh machines with `use_direct_addr: true` through a local forward ([`super::tunnel`]).
//!
//! The token never goes over the wire ([`crate::auth`]): a call first asks
//! `GET /health?challenge=C` with a fresh random `C` and checks the answer's `nonce_proof`
//! (HMAC-SHA256 under the token of `C`, the server's one-use `nonce`, its uid and user) in
//! constant time. Only then does it post the request line to `/v1/rpc`, signed with the token
//! over that nonce (`Authorization: Codexd-HMAC-SHA256 ...`), and read the answer lines as
//! `codexd rpc` prints them. A redirect is never followed (an error naming the address). What
//! `/health` says of its user is information, not proof. The token is the configured one, else
//! the one cached from an earlier `ssh HOST codexd token`, else fetched that way now.

use std::io::{BufReader, Write};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::answer::{AnswerRead, CallError, new_call_id, read_answer};
use super::cache::{self, CacheKind, RouteKey};
use super::deadline::Deadline;
use super::ssh::SshTarget;
use super::tunnel::{Forward, OpenForward};
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::{Request, RequestLine, Response, TokenInfo};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One machine in HTTP mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub machine: String,
    /// `host:port` of the listener (unused with a `forward`).
    pub addr: String,
    pub token: TokenSource,
    /// The configured `user` the daemon says it runs as (a check against a wrong `addr`, not
    /// a proof: the token proof is).
    pub user: Option<String>,
    /// `use_direct_addr`: the local forward that `addr` is resolved through at call time.
    pub forward: Option<Forward>,
    /// The route's identity, for the token cache.
    pub route: RouteKey,
    /// The machine's `call_timeout` ([`super::deadline`]).
    pub call_timeout: Duration,
}

/// Where the token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `token:` in the config.
    Configured(String),
    /// `ssh HOST codexd token`, cached.
    FetchedOverSsh(SshTarget),
    /// Neither: calls fail with a config error that says which key to set.
    Missing,
}

/// What `/health` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub protocol: u32,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub uid: Option<u32>,
    /// The older answer to `?challenge=` (not used by this client).
    #[serde(default)]
    pub proof: Option<String>,
    /// The server's one-use nonce for the next request.
    #[serde(default)]
    pub nonce: Option<String>,
    /// HMAC-SHA256 under the token of the challenge, `nonce`, `uid` and `user`.
    #[serde(default)]
    pub nonce_proof: Option<String>,
}

/// An agent whose calls end as `deadline` says: a quick call's whole exchange within its
/// time, a long call's answer head within `call_timeout` and then no silence past its idle
/// limit ([`super::deadline`]).
/// `addr` is `host:port`, or `unix:PATH` for the socket of a forward ([`super::tunnel`]).
fn agent(addr: &str, deadline: &Deadline, call_timeout: Duration) -> ureq::Agent {
    let head = deadline.total().map_or(call_timeout, |t| t.min(call_timeout));
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // A redirect could point the signed request anywhere: it is an error, never followed.
        .max_redirects(0)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(deadline.idle().is_none().then_some(deadline.total()).flatten())
        .timeout_recv_response(Some(head))
        .timeout_per_read(deadline.idle())
        .build();
    #[cfg(unix)]
    if let Some(path) = addr.strip_prefix("unix:") {
        let connector = super::unix_http::UnixConnector(path.into());
        let resolver = ureq::unversioned::resolver::DefaultResolver::default();
        return ureq::Agent::with_parts(config, connector, resolver);
    }
    let _ = addr;
    config.into()
}

/// The URL of `path` at `addr`: a socket's host is a placeholder the connector ignores.
fn url(addr: &str, path: &str) -> String {
    match addr.strip_prefix("unix:") {
        Some(_) => format!("http://localhost{path}"),
        None => format!("http://{addr}{path}"),
    }
}

fn connect_failed(addr: &str, e: ureq::Error) -> Error {
    if let ureq::Error::Timeout(what) = e {
        return timed_out(addr, what);
    }
    Error::new(ErrorCode::ConnectFailed, format!("cannot reach {addr}: {e}"))
        .with_hint("is `codexd serve` running there? `codex-remote machine up` starts it")
}

/// A listener that accepted and did not answer in time.
fn timed_out(addr: &str, what: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::Timeout, format!("the server at {addr} did not answer in time ({what})"))
}

/// Reads an answer body, noting whether a read gave up on its deadline.
struct NotingTimeout<R> {
    inner: R,
    timed_out: bool,
}

impl<R: std::io::Read> std::io::Read for NotingTimeout<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            let ureq_timeout = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<ureq::Error>())
                .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)));
            self.timed_out |= ureq_timeout || e.kind() == std::io::ErrorKind::TimedOut;
        })
    }
}

impl HttpTarget {
    /// The address to talk to: `addr`, or the local end of the forward (opened if need be).
    pub fn endpoint(&self) -> Result<(String, Option<OpenForward>)> {
        match &self.forward {
            Some(f) => {
                let open = f.open()?;
                let end = open.local().ok_or_else(|| {
                    Error::new(ErrorCode::SshFailed, "the forward has no local end")
                })?;
                Ok((end.addr(), Some(open)))
            }
            None => Ok((self.addr.clone(), None)),
        }
    }

    /// `GET /health`, and whether it is codexd at all; with a `challenge`, the answer carries
    /// the server's proof. The duration is the round trip.
    pub fn health(&self, addr: &str, challenge: Option<&str>) -> Result<(Health, Duration)> {
        let started = Instant::now();
        let url = match challenge {
            Some(c) => url(addr, &format!("/health?challenge={c}")),
            None => url(addr, "/health"),
        };
        let quick = Deadline::quick(self.call_timeout);
        let mut resp = (agent(addr, &quick, self.call_timeout).get(&url).call())
            .map_err(|e| connect_failed(addr, e))?;
        if resp.status().is_redirection() {
            return Err(redirected(addr, &resp));
        }
        let health: Option<Health> = resp.body_mut().read_json().ok();
        match health.filter(|h| h.service == "codexd") {
            Some(h) => Ok((h, started.elapsed())),
            None => Err(Error::new(
                ErrorCode::ForeignDaemon,
                format!("{addr} does not answer /health as codexd does"),
            )),
        }
    }

    /// `/health` with a fresh challenge, and a check of the proof against `token`: `Ok` only
    /// when the server holds the same token; with the nonce the next request is signed over.
    fn proven_health(&self, addr: &str, token: &str) -> Result<(Health, Nonce, Duration)> {
        let challenge = crate::auth::random_token()?;
        let (health, latency) = self.health(addr, Some(&challenge))?;
        let proven = match (&health.nonce, &health.nonce_proof, health.uid) {
            (Some(nonce), Some(proof), Some(uid)) => {
                crate::auth::verify_health_proof(token, &challenge, nonce, uid, &health.user, proof)
                    .then(|| Nonce { server: nonce.clone(), client: challenge })
            }
            _ => None,
        };
        let Some(nonce) = proven else {
            return Err(Error::new(
                ErrorCode::ForeignDaemon,
                format!(
                    "the server at {addr} (it says it is codexd of user {:?}, uid {}) did not \
                     prove that it holds the token of machine {:?}: the token was not sent to it",
                    health.user,
                    health.uid.map_or("?".to_string(), |u| u.to_string()),
                    self.machine
                ),
            )
            .with_hint(
                "another process (maybe another user's) holds the port, or the codexd there \
                 predates the proof (upgrade it: codex-remote machine up), or the token is not \
                 the one in ~/.codexd/token there",
            ));
        };
        if let Some(user) = &self.user
            && &health.user != user
        {
            return Err(Error::new(
                ErrorCode::ForeignDaemon,
                format!("the codexd at {addr} runs as {:?}, not as {user:?}", health.user),
            )
            .with_hint("check `addr`/`daemon_port` and `user:` for the machine"));
        }
        Ok((health, nonce, latency))
    }

    /// The token, and whether it came from the cache (a stale one is fetched again once).
    fn token(&self, refresh: bool) -> Result<(String, bool)> {
        let ssh = match &self.token {
            TokenSource::Configured(t) => return Ok((t.clone(), false)),
            TokenSource::FetchedOverSsh(ssh) => ssh,
            TokenSource::Missing => {
                return Err(Error::new(
                    ErrorCode::ConfigError,
                    format!("machine {:?} has no `token:` and no `ssh:` to fetch it", self.machine),
                )
                .with_hint(
                    "set `token:` (from ~/.codexd/token on the machine) or `ssh:` for the machine",
                ));
            }
        };
        if !refresh
            && let Some(info) =
                cache::load::<TokenInfo>(CacheKind::Token, &self.machine, &self.route)
        {
            return Ok((info.token, true));
        }
        let info = fetch_token(ssh)?;
        cache::save(CacheKind::Token, &self.machine, &self.route, &info)?;
        Ok((info.token, false))
    }

    /// One call: the server proves it holds the token, then the request line goes to `/v1/rpc`.
    pub fn call_once(
        &self,
        request: &Request,
        deadline: Deadline,
        on_line: &mut dyn FnMut(Response) -> Result<()>,
    ) -> Result<Response, CallError> {
        let Proven { addr, forward, token, nonce, latency } =
            self.prove().map_err(CallError::Final)?;
        let answer = self.post_rpc(&addr, &token, &nonce, request, deadline, on_line);
        if let Some(open) = forward {
            telemetry(&self.machine, &open, request, answer.as_ref().ok(), latency);
        }
        answer
    }

    /// The address to talk to and a token the server there has proven it holds.
    fn prove(&self) -> Result<Proven> {
        let (addr, forward) = self.endpoint()?;
        let (mut token, cached) = self.token(false)?;
        let proven = match self.proven_health(&addr, &token) {
            // A cached token the server does not hold: its data dir was reset; fetch again.
            Err(e) if cached && e.code == ErrorCode::ForeignDaemon => {
                token = self.token(true)?.0;
                self.proven_health(&addr, &token)
            }
            other => other,
        };
        let (_, nonce, latency) = proven?;
        Ok(Proven { addr, forward, token, nonce, latency })
    }

    /// A session for requests with bytes (files, sync): proven once, then one post each.
    pub fn session(&self, deadline: Deadline) -> Result<HttpSession> {
        let proven = self.prove()?;
        let agent = agent(&proven.addr, &deadline, self.call_timeout);
        Ok(HttpSession { target: self.clone(), proven, spent: false, agent })
    }

    fn post_rpc(
        &self,
        addr: &str,
        token: &str,
        nonce: &Nonce,
        request: &Request,
        deadline: Deadline,
        on_line: &mut dyn FnMut(Response) -> Result<()>,
    ) -> Result<Response, CallError> {
        let call_id = new_call_id();
        let line = RequestLine { id: Some(call_id.clone()), request: request.clone() };
        let body = serde_json::to_vec(&line)
            .map_err(|e| CallError::Final(Error::internal("encoding", e)))?;
        let resp = agent(addr, &deadline, self.call_timeout)
            .post(&url(addr, RPC_PATH))
            .header("Authorization", nonce.sign(token, &body))
            .content_type("application/json")
            .send(&body[..])
            .map_err(|e| CallError::Final(connect_failed(addr, e)))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if status != 200 {
            let text = body.read_to_string().unwrap_or_default();
            let err = match serde_json::from_str::<Response>(&text) {
                Ok(Response::Error(e)) if e.code == ErrorCode::Unauthorized => Error::new(
                    ErrorCode::Unauthorized,
                    format!("codexd at {addr} refused the token of machine {:?}", self.machine),
                )
                .with_hint(
                    "check `token:` for the machine (it is in ~/.codexd/token there), or drop it \
                     and give the machine `ssh:` so the token is fetched",
                ),
                Ok(Response::Error(e)) => Error::from(e),
                _ => Error::new(
                    ErrorCode::ProtocolError,
                    format!("HTTP {status} from {addr}: {}", text.trim()),
                ),
            };
            return Err(CallError::Final(err));
        }
        let mut reader =
            BufReader::new(NotingTimeout { inner: body.into_reader(), timed_out: false });
        let read = read_answer(&mut reader, &call_id, on_line);
        if reader.get_ref().timed_out {
            return Err(CallError::Final(timed_out(addr, "the answer stopped")));
        }
        match read {
            AnswerRead::Final(answer) => Ok(*answer),
            AnswerRead::Refused(e) => Err(CallError::Final(e)),
            AnswerRead::Ended { answered_any } => {
                let err = Error::new(
                    ErrorCode::ConnectFailed,
                    format!("the answer from {addr} ended before its last line"),
                );
                Err(if answered_any { CallError::Final(err) } else { CallError::Retryable(err) })
            }
        }
    }
}

const RPC_PATH: &str = "/v1/rpc";

/// A server that proved it holds `token`, at `addr` (through `forward`, kept open), and the
/// nonce of that proof, for one signed request.
struct Proven {
    addr: String,
    forward: Option<OpenForward>,
    token: String,
    nonce: Nonce,
    latency: Duration,
}

/// Both nonces of one `/health` exchange: the server's and our challenge.
struct Nonce {
    server: String,
    client: String,
}

impl Nonce {
    /// The signature of a `POST /v1/rpc` whose request line is `line` (version 2: the bytes
    /// after the line go in chunks under its [`stream_key`](crate::auth::Signed::stream_key)).
    fn signed(&self, line: &[u8]) -> crate::auth::Signed {
        crate::auth::Signed {
            method: "POST".to_string(),
            path_and_query: RPC_PATH.to_string(),
            body: crate::auth::sha256_hex(line),
            ts: crate::auth::unix_now(),
            nonce: self.server.clone(),
            cnonce: self.client.clone(),
            version: 2,
        }
    }

    /// The `Authorization` value of a `POST /v1/rpc` whose request line is `line`.
    fn sign(&self, token: &str, line: &[u8]) -> String {
        self.signed(line).authorization(token)
    }
}

/// A 3xx answer: refused, and nothing is sent to where it points.
fn redirected(addr: &str, resp: &ureq::http::Response<ureq::Body>) -> Error {
    let to = resp.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or("?");
    Error::new(
        ErrorCode::ForeignDaemon,
        format!(
            "{addr} answered with a redirect (HTTP {} to {to}): refused, nothing was sent there",
            resp.status().as_u16()
        ),
    )
    .with_hint("codexd never redirects: another process (maybe another user's) holds the address")
}

/// Posts to `/v1/rpc` of one proven server, each request with the bytes that follow its line
/// streamed as the body (chunked), and the answer read as it arrives. Each request after the
/// first asks `/health` again for a fresh nonce (and proof).
pub struct HttpSession {
    target: HttpTarget,
    proven: Proven,
    /// Whether the nonce of `proven` was used.
    spent: bool,
    agent: ureq::Agent,
}

impl HttpSession {
    pub fn exchange(
        &mut self,
        request: &Request,
        payload: super::pipe::Payload,
        body: super::pipe::Body,
    ) -> Result<Response> {
        if std::mem::replace(&mut self.spent, true) {
            let (addr, token) = (&self.proven.addr, &self.proven.token);
            self.proven.nonce = self.target.proven_health(addr, token)?.1;
        }
        let Proven { addr, token, nonce, .. } = &self.proven;
        let call_id = new_call_id();
        let line = RequestLine { id: Some(call_id.clone()), request: request.clone() };
        let line_bytes = serde_json::to_vec(&line).map_err(|e| Error::internal("encoding", e))?;
        let signed = nonce.signed(&line_bytes);
        let (authorization, key) = (signed.authorization(token), signed.stream_key(token));
        let (reader, writer) = std::io::pipe().map_err(|e| Error::internal("a pipe", e))?;
        let agent = &self.agent;
        let resp = std::thread::scope(|scope| {
            let post = scope.spawn(move || {
                agent
                    .post(&url(addr, RPC_PATH))
                    .header("Authorization", authorization)
                    .content_type("application/x-ndjson")
                    .send(ureq::SendBody::from_owned_reader(reader))
            });
            // The line as signed, then every byte after it in chunks that each carry a MAC
            // under this request's key, so a relay can neither change nor add nor cut any.
            let mut w = std::io::BufWriter::with_capacity(256 * 1024, writer);
            let sent = w
                .write_all(&line_bytes)
                .and_then(|()| w.write_all(b"\n"))
                .map_err(|e| Error::io("sending", e))
                .and_then(|()| {
                    let mut chunks = crate::auth::MacWriter::new(&mut w, key);
                    payload(&mut chunks)?;
                    chunks.finish().map_err(|e| Error::io("sending", e))?;
                    w.flush().map_err(|e| Error::io("sending", e))
                });
            drop(w);
            let resp =
                post.join().map_err(|_| Error::internal("posting", "the thread panicked"))?;
            match sent {
                Err(e) if !e.is_broken_pipe() => Err(e),
                _ => resp.map_err(|e| connect_failed(addr, e)),
            }
        })?;
        let status = resp.status().as_u16();
        let mut reader = BufReader::new(resp.into_body().into_reader());
        if status != 200 {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut reader, &mut text);
            return Err(match serde_json::from_str::<Response>(&text) {
                Ok(Response::Error(e)) => e.into(),
                _ => Error::new(ErrorCode::ProtocolError, format!("HTTP {status} from {addr}")),
            });
        }
        body(&mut reader)?;
        match read_answer(reader, &call_id, &mut |_| Ok(())) {
            AnswerRead::Final(answer) => match *answer {
                Response::Error(e) => Err(e.into()),
                answer => Ok(answer),
            },
            AnswerRead::Refused(e) => Err(e),
            AnswerRead::Ended { .. } => Err(Error::new(
                ErrorCode::ConnectFailed,
                format!("the answer of {} ended before its last line", self.target.machine),
            )),
        }
    }
}

/// One line of JSON on stderr for the first call through a forward in this process.
fn telemetry(
    machine: &str,
    open: &OpenForward,
    request: &Request,
    answer: Option<&Response>,
    latency: Duration,
) {
    static SENT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SENT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let exec_id = match (answer, request) {
        (Some(Response::Status(s)), _) => Some(s.job.exec_id.to_string()),
        (_, request) => request.exec_id().map(str::to_string),
    };
    let line = serde_json::json!({
        "event": "tunnel",
        "machine": machine,
        "local_port": open.local_port,
        "local_socket": open.local_socket,
        "exec_id": exec_id,
        "tunnel_pid": open.tunnel_pid,
        "reused": open.reused,
        "health_latency": latency.as_secs_f64() * 1000.0,
        "retry_count": open.retry_count,
    });
    crate::error::stderr_line(&line.to_string());
}

/// `ssh HOST codexd token [--data-dir D]`.
pub fn fetch_token(ssh: &SshTarget) -> Result<TokenInfo> {
    let remote = ssh.codexd_command("token");
    let out = super::ssh::run_remote(ssh, &remote, None)?;
    // The last JSON line: login-shell noise may come first.
    out.lines().rev().find_map(|l| serde_json::from_str::<TokenInfo>(l).ok()).ok_or_else(|| {
        Error::new(ErrorCode::ProtocolError, format!("`{remote}` printed no token: {out}"))
    })
}
