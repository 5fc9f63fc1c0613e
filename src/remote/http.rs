//! Reaching a `codexd serve` over HTTP (blocking `ureq`): `addr:` machines, and ssh machines with
//! `use_direct_addr: true` through a local forward ([`super::tunnel`]).
//!
//! A call first reads `/health` (no token) and checks that the daemon is codexd and belongs to
//! the expected user, so the token is never sent to another user's daemon on the port. Then it
//! posts the request line to `/v1/rpc` with `Authorization: Bearer TOKEN` and reads the answer
//! lines as `codexd rpc` would print them. The token is the configured one, else the one cached
//! from an earlier `ssh HOST codexd token`, else fetched that way now.

use std::io::BufReader;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ssh::SshTarget;
use super::transport::{AnswerRead, CallError, read_answer};
use super::tunnel::OpenForward;
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::TokenInfo;
use crate::protocol::{Request, RequestLine, Response};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One machine in HTTP mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub machine: String,
    /// `host:port` of the listener (a local forward's port for `use_direct_addr`).
    pub addr: String,
    /// The configured token; `None`: fetched over ssh.
    pub token: Option<String>,
    /// The configured `user` the daemon must belong to.
    pub user: Option<String>,
    /// How to fetch the token (and to open a forward).
    pub ssh: Option<SshTarget>,
    /// `use_direct_addr`: the local forward that `addr` is resolved through at call time.
    pub forward: Option<super::tunnel::Forward>,
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
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .build()
        .into()
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

    /// `GET /health`, and whether it is codexd at all. The latency is the round trip.
    pub fn health(&self, addr: &str) -> Result<(Health, Duration), CallError> {
        let started = Instant::now();
        let mut resp = agent().get(&format!("http://{addr}/health")).call().map_err(|e| {
            CallError::Retryable(
                Error::new(ErrorCode::SshFailed, format!("cannot reach {addr}: {e}"))
                    .with_hint("is `codexd serve` running? `codex-remote machine up` starts it"),
            )
        })?;
        let health: Option<Health> = resp.body_mut().read_json().ok();
        match health.filter(|h| h.service == "codexd") {
            Some(h) => Ok((h, started.elapsed())),
            None => Err(CallError::Final(Error::new(
                ErrorCode::ForeignDaemon,
                format!("{addr} does not answer /health as codexd does"),
            ))),
        }
    }

    /// Refuses a daemon that belongs to someone else.
    fn check_owner(&self, addr: &str, health: &Health, fetched: Option<&TokenInfo>) -> Result<()> {
        let ok = match (&self.user, fetched) {
            (Some(user), _) => &health.user == user,
            (None, Some(info)) => health.uid == Some(info.uid) || health.user == info.user,
            (None, None) => {
                health.uid.is_some() && health.uid == crate::platform::uid()
                    || health.user == crate::platform::user_name()
            }
        };
        if ok {
            return Ok(());
        }
        Err(Error::new(
            ErrorCode::ForeignDaemon,
            format!(
                "the codexd at {addr} belongs to user {:?} (uid {}), not to you: refusing to send \
                 it the token",
                health.user,
                health.uid.map_or("?".to_string(), |u| u.to_string())
            ),
        )
        .with_hint("another user's daemon holds the port; use another daemon_port/addr, or set `user:` for the machine"))
    }

    /// The token and, when it was fetched over ssh, whose it is.
    fn token(&self, refresh: bool) -> Result<(String, Option<TokenInfo>)> {
        if let Some(t) = &self.token {
            return Ok((t.clone(), None));
        }
        let cache = token_cache_path(&self.machine);
        if !refresh
            && let Ok(text) = std::fs::read_to_string(&cache)
            && let Ok(info) = serde_json::from_str::<TokenInfo>(&text)
        {
            return Ok((info.token.clone(), Some(info)));
        }
        let Some(ssh) = &self.ssh else {
            return Err(Error::new(
                ErrorCode::ConfigError,
                format!("machine {:?} has no token and no ssh to fetch it with", self.machine),
            )
            .with_hint("set `token:` (from ~/.codexd/token on the machine) or `ssh:`"));
        };
        let info = fetch_token(ssh)?;
        if let Some(dir) = cache.parent() {
            crate::platform::create_private_dir(dir)?;
        }
        crate::platform::write_json_atomic(&cache, &info)?;
        Ok((info.token.clone(), Some(info)))
    }

    /// One call: health and owner check, then the request line to `/v1/rpc`.
    pub fn call_once(
        &self,
        request: &Request,
        on_line: &mut dyn FnMut(Response) -> Result<()>,
    ) -> Result<Response, CallError> {
        let (addr, forward) = self.endpoint().map_err(CallError::Final)?;
        let (health, latency) = self.health(&addr)?;
        let answer = self.post_rpc(&addr, &health, request, on_line);
        if let Some(open) = forward {
            self.telemetry(&open, request, answer.as_ref().ok(), latency);
        }
        answer
    }

    /// One line of JSON on stderr per call through a forward.
    fn telemetry(
        &self,
        open: &OpenForward,
        request: &Request,
        answer: Option<&Response>,
        latency: Duration,
    ) {
        let exec_id = match (answer, request) {
            (Some(Response::Status(s)), _) => Some(s.job.exec_id.clone()),
            (_, Request::ExecStatus(r) | Request::ExecRm(r)) => Some(r.exec_id.clone()),
            (_, Request::ExecLogs(r)) => Some(r.exec_id.clone()),
            (_, Request::ExecWait(r)) => Some(r.exec_id.clone()),
            (_, Request::ExecCancel(r)) => Some(r.exec_id.clone()),
            _ => None,
        };
        let line = serde_json::json!({
            "event": "tunnel",
            "machine": self.machine,
            "local_port": open.local_port,
            "exec_id": exec_id,
            "tunnel_pid": open.tunnel_pid,
            "reused": open.reused,
            "health_latency": latency.as_secs_f64() * 1000.0,
            "retry_count": open.retry_count,
        });
        eprintln!("{line}");
    }

    fn post_rpc(
        &self,
        addr: &str,
        health: &Health,
        request: &Request,
        on_line: &mut dyn FnMut(Response) -> Result<()>,
    ) -> Result<Response, CallError> {
        let mut refreshed = false;
        let (mut token, mut info) = self.token(false).map_err(CallError::Final)?;
        loop {
            self.check_owner(addr, health, info.as_ref()).map_err(CallError::Final)?;
            let call_id = serde_json::Value::String(uuid::Uuid::now_v7().simple().to_string());
            let line = RequestLine { id: Some(call_id.clone()), request: request.clone() };
            let body = serde_json::to_vec(&line)
                .map_err(|e| CallError::Final(Error::internal("encoding", e)))?;
            let resp = agent()
                .post(&format!("http://{addr}/v1/rpc"))
                .header("Authorization", format!("Bearer {token}"))
                .content_type("application/json")
                .send(&body[..])
                .map_err(|e| {
                    CallError::Retryable(Error::new(
                        ErrorCode::SshFailed,
                        format!("calling {addr}: {e}"),
                    ))
                })?;
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            if status == 401 && self.token.is_none() && !refreshed {
                // The cached token is stale (the daemon's data dir was reset): fetch it again.
                refreshed = true;
                (token, info) = self.token(true).map_err(CallError::Final)?;
                continue;
            }
            if status != 200 {
                let text = body.read_to_string().unwrap_or_default();
                let err = match serde_json::from_str::<Response>(&text) {
                    Ok(Response::Error(e)) if e.code == ErrorCode::Unauthorized => Error::new(
                        ErrorCode::Unauthorized,
                        format!("codexd at {addr} refused the token of machine {:?}", self.machine),
                    )
                    .with_hint(
                        "check `token:` for the machine (it is in ~/.codexd/token there), or \
                         drop it and give the machine `ssh:` so the token is fetched",
                    ),
                    Ok(Response::Error(e)) => Error::from(e),
                    _ => Error::new(
                        ErrorCode::ProtocolError,
                        format!("HTTP {status} from {addr}: {}", text.trim()),
                    ),
                };
                return Err(CallError::Final(err));
            }
            return match read_answer(BufReader::new(body.into_reader()), &call_id, on_line) {
                AnswerRead::Final(answer) => Ok(*answer),
                AnswerRead::Refused(e) => Err(CallError::Final(e)),
                AnswerRead::Ended { answered_any } => {
                    let err = Error::new(
                        ErrorCode::SshFailed,
                        format!("the answer from {addr} ended before its last line"),
                    );
                    Err(if answered_any {
                        CallError::Final(err)
                    } else {
                        CallError::Retryable(err)
                    })
                }
            };
        }
    }
}

/// `ssh HOST codexd token [--data-dir D]`.
pub fn fetch_token(ssh: &SshTarget) -> Result<TokenInfo> {
    let mut remote = format!("{} token", ssh.codexd);
    if let Some(dir) = &ssh.data_dir {
        remote.push_str(" --data-dir ");
        remote.push_str(&crate::shell::shell_quote(dir));
    }
    let out = super::ssh::run_remote(ssh, &remote, None)?;
    // The last JSON line: login-shell noise may come first.
    out.lines().rev().find_map(|l| serde_json::from_str::<TokenInfo>(l).ok()).ok_or_else(|| {
        Error::new(ErrorCode::ProtocolError, format!("`{remote}` printed no token: {out}"))
    })
}

/// `~/.cache/codex-remote/tokens/<machine>.json` (0600 in a 0700 dir).
fn token_cache_path(machine: &str) -> PathBuf {
    let safe: String = machine
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    crate::platform::cache_dir().join("codex-remote").join("tokens").join(format!("{safe}.json"))
}
