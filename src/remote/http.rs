//! The HTTP door: a `codexd serve` reached over HTTP (blocking `ureq`): `addr:` machines, and
//! ssh machines with `use_direct_addr: true` through a local forward ([`super::tunnel`]).
//!
//! The token never goes to a server that has not proven it holds it ([`crate::auth`]): a call
//! first asks `GET /health?challenge=C` with a fresh random `C` and checks the answer's `proof`
//! (HMAC-SHA256 of `C` under the token) in constant time. Only then does it post the request
//! line to `/v1/rpc` with `Authorization: Bearer TOKEN` and read the answer lines as
//! `codexd rpc` prints them. What `/health` says of its user is information, not proof. The
//! token is the configured one, else the one cached from an earlier `ssh HOST codexd token`,
//! else fetched that way now.

use std::io::{BufReader, Write};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::answer::{AnswerRead, CallError, new_call_id, read_answer};
use super::cache::{self, CacheKind, RouteKey};
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
    /// The answer to `?challenge=`: hex HMAC-SHA256(token, challenge).
    #[serde(default)]
    pub proof: Option<String>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .build()
        .into()
}

fn connect_failed(addr: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ConnectFailed, format!("cannot reach {addr}: {e}"))
        .with_hint("is `codexd serve` running there? `codex-remote machine up` starts it")
}

impl HttpTarget {
    /// The address to talk to: `addr`, or the local end of the forward (opened if need be).
    pub fn endpoint(&self) -> Result<(String, Option<OpenForward>)> {
        match &self.forward {
            Some(f) => {
                let open = f.open()?;
                Ok((format!("127.0.0.1:{}", open.local_port), Some(open)))
            }
            None => Ok((self.addr.clone(), None)),
        }
    }

    /// `GET /health`, and whether it is codexd at all; with a `challenge`, the answer carries
    /// the server's proof. The duration is the round trip.
    pub fn health(&self, addr: &str, challenge: Option<&str>) -> Result<(Health, Duration)> {
        let started = Instant::now();
        let url = match challenge {
            Some(c) => format!("http://{addr}/health?challenge={c}"),
            None => format!("http://{addr}/health"),
        };
        let mut resp = agent().get(&url).call().map_err(|e| connect_failed(addr, e))?;
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
    /// when the server holds the same token.
    fn proven_health(&self, addr: &str, token: &str) -> Result<(Health, Duration)> {
        let challenge = crate::auth::random_token()?;
        let (health, latency) = self.health(addr, Some(&challenge))?;
        let proven = health
            .proof
            .as_deref()
            .is_some_and(|proof| crate::auth::verify(token, &challenge, proof));
        if !proven {
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
        }
        if let Some(user) = &self.user
            && &health.user != user
        {
            return Err(Error::new(
                ErrorCode::ForeignDaemon,
                format!("the codexd at {addr} runs as {:?}, not as {user:?}", health.user),
            )
            .with_hint("check `addr`/`daemon_port` and `user:` for the machine"));
        }
        Ok((health, latency))
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
        on_line: &mut dyn FnMut(Response) -> Result<()>,
    ) -> Result<Response, CallError> {
        let Proven { addr, forward, token, latency } = self.prove().map_err(CallError::Final)?;
        let answer = self.post_rpc(&addr, &token, request, on_line);
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
        let (_, latency) = proven?;
        Ok(Proven { addr, forward, token, latency })
    }

    /// A session for requests with bytes (files, sync): proven once, then one post each.
    pub fn session(&self) -> Result<HttpSession> {
        let proven = self.prove()?;
        Ok(HttpSession { machine: self.machine.clone(), proven })
    }

    fn post_rpc(
        &self,
        addr: &str,
        token: &str,
        request: &Request,
        on_line: &mut dyn FnMut(Response) -> Result<()>,
    ) -> Result<Response, CallError> {
        let call_id = new_call_id();
        let line = RequestLine { id: Some(call_id.clone()), request: request.clone() };
        let body = serde_json::to_vec(&line)
            .map_err(|e| CallError::Final(Error::internal("encoding", e)))?;
        let resp = agent()
            .post(&format!("http://{addr}/v1/rpc"))
            .header("Authorization", format!("Bearer {token}"))
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
        match read_answer(BufReader::new(body.into_reader()), &call_id, on_line) {
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

/// A server that proved it holds `token`, at `addr` (through `forward`, kept open).
struct Proven {
    addr: String,
    forward: Option<OpenForward>,
    token: String,
    latency: Duration,
}

/// Posts to `/v1/rpc` of one proven server, each request with the bytes that follow its line
/// streamed as the body (chunked), and the answer read as it arrives.
pub struct HttpSession {
    machine: String,
    proven: Proven,
}

impl HttpSession {
    pub fn exchange(
        &mut self,
        request: &Request,
        payload: super::pipe::Payload,
        body: super::pipe::Body,
    ) -> Result<Response> {
        let Proven { addr, token, .. } = &self.proven;
        let call_id = new_call_id();
        let line = RequestLine { id: Some(call_id.clone()), request: request.clone() };
        let (reader, writer) = std::io::pipe().map_err(|e| Error::internal("a pipe", e))?;
        let resp = std::thread::scope(|scope| {
            let post = scope.spawn(move || {
                agent()
                    .post(&format!("http://{addr}/v1/rpc"))
                    .header("Authorization", format!("Bearer {token}"))
                    .content_type("application/x-ndjson")
                    .send(ureq::SendBody::from_owned_reader(reader))
            });
            let mut w = std::io::BufWriter::with_capacity(256 * 1024, writer);
            let sent = serde_json::to_writer(&mut w, &line)
                .map_err(std::io::Error::from)
                .and_then(|()| w.write_all(b"\n"))
                .map_err(|e| Error::io("sending", e))
                .and_then(|()| payload(&mut w))
                .and_then(|()| w.flush().map_err(|e| Error::io("sending", e)));
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
                format!("the answer of {} ended before its last line", self.machine),
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
        (Some(Response::Status(s)), _) => Some(s.job.exec_id.clone()),
        (_, request) => request.exec_id().map(str::to_string),
    };
    let line = serde_json::json!({
        "event": "tunnel",
        "machine": machine,
        "local_port": open.local_port,
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
