//! Reaching a machine's `codexd rpc`: over ssh, or as a local child process for `local`.
//!
//! A call writes one request line, closes stdin and reads answer lines until the final one.
//! Lines that are not answers to our request (login-shell noise) are skipped. A call that failed
//! before any answer arrived is retried with backoff when ssh says the failure may pass
//! (refused channels, dropped connections): safe, because `exec_start` always carries an
//! idempotency key.

use std::io::{BufRead, BufReader, Read, Seek};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::compat;
use super::config::{LOCAL, MachineConfig};
use super::http::HttpTarget;
use super::ssh::{CallKind, Connection, SshTarget, classify_failure};
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::{
    HelloRequest, PROTOCOL_VERSION, Request, RequestLine, Response, ResponseLine,
};
use crate::wire::{self, Line};

/// The longest answer line read (a log line of 64 KiB escaped fits many times).
const MAX_ANSWER_LINE: usize = 16 * 1024 * 1024;
/// Attempts for a call that failed in a way that may pass.
const ATTEMPTS: u32 = 6;

/// The pid of the transport child of the call in progress (0: none), so that a Ctrl-C handler
/// can end it.
pub static CURRENT_CHILD: AtomicU32 = AtomicU32::new(0);

/// How a machine is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `codexd rpc` as a child process on this computer.
    Local {
        codexd: PathBuf,
        data_dir: Option<String>,
    },
    Ssh(SshTarget),
    /// A `codexd serve` over HTTP (`addr:`, or `use_direct_addr` through a local forward).
    Http(Box<HttpTarget>),
}

/// A configured machine, ready for calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub name: String,
    pub route: Route,
}

impl Machine {
    pub fn from_config(m: &MachineConfig) -> Result<Self> {
        let ssh = match &m.ssh {
            Some(dest) => {
                let target = SshTarget {
                    destination: dest.clone(),
                    ssh_args: m.ssh_args.clone(),
                    codexd: m.codexd.clone().unwrap_or_else(|| "codexd".to_string()),
                    data_dir: m.data_dir.clone(),
                    control: m.ssh_control.unwrap_or(true),
                };
                target.validate()?;
                Some(target)
            }
            None => None,
        };
        let http = |addr: String| {
            Route::Http(Box::new(HttpTarget {
                machine: m.name.clone(),
                addr,
                token: m.token.clone(),
                user: m.user.clone(),
                ssh: ssh.clone(),
                forward: None,
            }))
        };
        let route = match (&ssh, &m.addr) {
            (Some(target), _) if m.use_direct_addr => {
                let mut route = http(String::new());
                if let Route::Http(h) = &mut route {
                    h.forward = Some(super::tunnel::Forward::of(target, m)?);
                }
                route
            }
            (_, Some(addr)) => http(addr.clone()),
            (Some(target), None) => Route::Ssh(target.clone()),
            (None, None) if m.name == LOCAL => Route::Local {
                codexd: m.codexd.as_ref().map(PathBuf::from).unwrap_or_else(local_codexd),
                data_dir: m.data_dir.clone(),
            },
            (None, None) => {
                return Err(Error::new(
                    ErrorCode::ConfigError,
                    format!("machine {:?} has no `ssh:` destination nor `addr:`", m.name),
                ));
            }
        };
        Ok(Machine { name: m.name.clone(), route })
    }

    fn connect(&self, request: &Request) -> Result<Connection> {
        match &self.route {
            Route::Local { codexd, data_dir } => {
                let mut cmd = Command::new(codexd);
                cmd.arg("rpc");
                if let Some(dir) = data_dir {
                    cmd.arg("--data-dir").arg(dir);
                }
                Ok(Connection::plain(cmd))
            }
            Route::Ssh(target) => {
                let long = match request {
                    Request::ExecLogs(r) => r.follow,
                    Request::ExecWait(_) | Request::ExecCancel(_) => true,
                    _ => false,
                };
                let kind = if long { CallKind::Long } else { CallKind::Short };
                target.connect(&target.remote_command(), kind)
            }
            Route::Http(_) => Err(Error::internal("transport", "an HTTP machine has no command")),
        }
    }

    /// Sends `request` and returns its final answer; `log`/`chunk` lines before it go to
    /// `on_line` as they arrive. An `error` answer becomes `Err`.
    pub fn call(
        &self,
        request: &Request,
        on_line: &mut dyn FnMut(Response) -> Result<()>,
    ) -> Result<Response> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.call_once(request, on_line) {
                Err(CallError::Retryable(_)) if attempt < ATTEMPTS => {
                    // 50 ms, 150 ms, 450 ms ... with jitter, so parallel callers spread out.
                    let base = 50u64 * 3u64.pow(attempt - 1);
                    let jitter = u64::from(uuid::Uuid::now_v7().as_bytes()[15]) % (base / 2 + 1);
                    std::thread::sleep(Duration::from_millis(base + jitter));
                }
                Err(CallError::Retryable(e) | CallError::Final(e)) => return Err(self.checked(e)),
                Ok(Response::Error(body)) => return Err(self.checked(body.into())),
                Ok(answer) => return Ok(answer),
            }
        }
    }

    /// A failure that may come from a replaced codexd makes the next call send `hello` again.
    fn checked(&self, e: Error) -> Error {
        if matches!(
            e.code,
            ErrorCode::ProtocolError | ErrorCode::UnknownType | ErrorCode::BadRequest
        ) {
            compat::forget(&self.name);
        }
        e
    }

    fn call_once(
        &self,
        request: &Request,
        on_line: &mut dyn FnMut(Response) -> Result<()>,
    ) -> Result<Response, CallError> {
        if let Route::Http(target) = &self.route {
            return target.call_once(request, on_line);
        }
        let mut conn = self.connect(request).map_err(CallError::Final)?;
        let cmd = &mut conn.command;
        let stderr_file = tempfile::tempfile()
            .map_err(|e| CallError::Final(Error::internal("creating a temp file", e)))?;
        let stderr_copy = stderr_file
            .try_clone()
            .map_err(|e| CallError::Final(Error::internal("creating a temp file", e)))?;
        // stderr goes to a file, not a pipe: a ControlPersist master may keep it open for minutes.
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr_copy);
        let spawned = cmd.spawn();
        conn.started();
        let mut child = spawned.map_err(|e| CallError::Final(self.spawn_error(e)))?;
        CURRENT_CHILD.store(child.id(), Ordering::SeqCst);

        let call_id = serde_json::Value::String(uuid::Uuid::now_v7().simple().to_string());
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let flow = self.check_version(&mut stdin, &mut reader, &call_id);
        if let Ok(ControlFlow::Continue(())) = flow {
            let line = RequestLine { id: Some(call_id.clone()), request: request.clone() };
            // A write error means the process died early; its exit status tells why, below.
            let _ = wire::write_line(&mut stdin, &line);
        }
        drop(stdin);
        let read = match flow {
            Ok(ControlFlow::Continue(())) => read_answer(reader, &call_id, on_line),
            Ok(ControlFlow::Break(Some(answer))) => AnswerRead::Final(Box::new(answer)),
            Ok(ControlFlow::Break(None)) => AnswerRead::Ended { answered_any: false },
            Err(e) => AnswerRead::Refused(e),
        };
        if let AnswerRead::Refused(e) = read {
            let _ = child.kill();
            let _ = child.wait();
            CURRENT_CHILD.store(0, Ordering::SeqCst);
            return Err(CallError::Final(e));
        }
        let status = child.wait();
        CURRENT_CHILD.store(0, Ordering::SeqCst);
        let answered_any = match read {
            AnswerRead::Final(answer) => return Ok(*answer),
            AnswerRead::Ended { answered_any } => answered_any,
            AnswerRead::Refused(_) => unreachable!("handled above"),
        };
        let stderr = read_all(stderr_file);
        let code = status.ok().and_then(|s| s.code());
        let via_ssh = matches!(self.route, Route::Ssh(_));
        let (err, retryable) = classify_failure(code, &stderr, via_ssh);
        if retryable && !answered_any {
            Err(CallError::Retryable(err))
        } else {
            Err(CallError::Final(err))
        }
    }

    /// Without a fresh cached `hello` answer for this machine, sends `hello` on the call's own
    /// session and checks it ([`compat`]): `Err` for a codexd of another protocol, so the
    /// request is never sent to it. `Break` ends the call before the request too, with codexd's
    /// answer when it gave one (an error line) or none (the session ended; stderr tells why).
    fn check_version(
        &self,
        stdin: &mut impl std::io::Write,
        reader: &mut impl BufRead,
        call_id: &serde_json::Value,
    ) -> Result<ControlFlow<Option<Response>>> {
        let route = format!("{:?}", self.route);
        if !compat::needs_hello(&self.name, &route) {
            return Ok(ControlFlow::Continue(()));
        }
        let id = serde_json::Value::String(format!("{}-hello", call_id.as_str().unwrap_or("")));
        let hello = Request::Hello(HelloRequest {
            protocol: Some(PROTOCOL_VERSION),
            client_version: Some(crate::version::VERSION.to_string()),
        });
        let _ = wire::write_line(stdin, &RequestLine { id: Some(id.clone()), request: hello });
        match read_answer(reader, &id, &mut |_| Ok(())) {
            AnswerRead::Final(answer) => match *answer {
                Response::Hello(h) => {
                    compat::check_hello(&self.name, &route, &h)?;
                    Ok(ControlFlow::Continue(()))
                }
                other => Ok(ControlFlow::Break(Some(other))),
            },
            _ => Ok(ControlFlow::Break(None)),
        }
    }

    fn spawn_error(&self, e: std::io::Error) -> Error {
        match &self.route {
            Route::Local { codexd, .. } => Error::new(
                ErrorCode::CodexdNotFound,
                format!("cannot run {}: {e}", codexd.display()),
            )
            .with_hint(if cfg!(target_os = "linux") {
                "build it next to codex-remote (cargo build --release) or put codexd on PATH"
            } else {
                "codexd runs on Linux only: use a machine reached over ssh (--machine NAME, \
                 default_machine in the config)"
            }),
            Route::Ssh(_) | Route::Http(_) => Error::new(
                ErrorCode::SshFailed,
                format!("cannot run {}: {e}", super::ssh::ssh_program()),
            )
            .with_hint("install the OpenSSH client"),
        }
    }
}

/// Why a call failed, and whether trying again may help.
pub enum CallError {
    Retryable(Error),
    Final(Error),
}

/// How reading the answer lines of one call ended.
pub enum AnswerRead {
    /// The final answer.
    Final(Box<Response>),
    /// `on_line` refused a line (e.g. stdout closed).
    Refused(Error),
    /// The stream ended before the final answer.
    Ended { answered_any: bool },
}

/// Reads answer lines until the final one for `call_id`; others (login-shell noise, answers to
/// other ids) are skipped. An error without an id is the peer failing before it read ours.
pub fn read_answer(
    mut reader: impl std::io::BufRead,
    call_id: &serde_json::Value,
    on_line: &mut dyn FnMut(Response) -> Result<()>,
) -> AnswerRead {
    let mut answered_any = false;
    while let Ok(Some(line)) = wire::read_line_capped(&mut reader, MAX_ANSWER_LINE) {
        let Line::Text(bytes) = line else { continue };
        let Ok(answer) = serde_json::from_slice::<ResponseLine>(&bytes) else {
            continue;
        };
        let ours = answer.id.as_ref() == Some(call_id)
            || (answer.id.is_none() && matches!(answer.response, Response::Error(_)));
        if !ours {
            continue;
        }
        answered_any = true;
        if answer.response.is_final() {
            return AnswerRead::Final(Box::new(answer.response));
        }
        if let Err(e) = on_line(answer.response) {
            return AnswerRead::Refused(e);
        }
    }
    AnswerRead::Ended { answered_any }
}

fn read_all(mut file: std::fs::File) -> String {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut text);
    text
}

/// The `codexd` for the `local` machine: `CODEXD_BIN`, else next to this executable, else PATH.
pub fn local_codexd() -> PathBuf {
    if let Some(p) = std::env::var_os("CODEXD_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let sibling = std::env::current_exe().ok().and_then(|exe| {
        let candidate = exe.parent()?.join("codexd");
        candidate.is_file().then_some(candidate)
    });
    sibling.unwrap_or_else(|| PathBuf::from("codexd"))
}
