//! Picking a door to a machine's `codexd` and calling through it: [`Machine`] (a configured
//! machine), [`Route`] (how it is reached), retries, and the version check.
//!
//! The doors are [`super::pipe`] (`ssh HOST codexd rpc`, or `codexd rpc` for `local`) and
//! [`super::http`] (`codexd serve`). A call that failed before any answer arrived is retried
//! with backoff when the failure may pass (refused channels, dropped connections): safe,
//! because `exec_start` always carries an idempotency key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::cache::RouteKey;
use super::compat;
use super::config::{LOCAL, MachineConfig};
use super::deadline::{self, Deadline};
use super::http::{HttpTarget, TokenSource};
use super::machine::{Machine, Route, Sessions, SharedSessions};
use super::pipe::{self, PipeKind, PipeSession};
use super::ssh::{CallKind, Connection, DEFAULT_CONNECT_TIMEOUT_SECS, SshTarget};
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::{HelloResponse, Request, Response, capability};

pub use super::answer::CallError;
pub use super::pipe::CURRENT_CHILD;

/// Attempts for a call that failed in a way that may pass.
pub(super) const ATTEMPTS: u32 = 6;

/// The pause before attempt `attempt + 1`: 50 ms, 150 ms, 450 ms ... with jitter, so parallel
/// callers spread out.
pub(super) fn backoff(attempt: u32) -> Duration {
    let base = 50u64 * 3u64.pow(attempt - 1);
    let jitter = u64::from(uuid::Uuid::now_v7().as_bytes()[15]) % (base / 2 + 1);
    Duration::from_millis(base + jitter)
}

impl Machine {
    pub fn from_config(m: &MachineConfig) -> Result<Self> {
        let call_timeout =
            m.call_timeout.map_or(deadline::DEFAULT_CALL_TIMEOUT, Duration::from_secs);
        let ssh = match &m.ssh {
            Some(dest) => {
                let target = SshTarget {
                    destination: dest.clone(),
                    ssh_args: m.ssh_args.clone(),
                    codexd: m.codexd.clone().unwrap_or_else(|| "codexd".to_string()),
                    data_dir: m.data_dir.clone(),
                    control: m.ssh_control.unwrap_or(true),
                    connect_timeout_secs: m.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT_SECS),
                    forward_agent: m.forward_agent,
                };
                target.validate()?;
                Some(target)
            }
            None => None,
        };
        let ssh_key = ssh.as_ref().map(|t| RouteKey::Ssh {
            destination: t.destination.clone(),
            ssh_args: t.ssh_args.clone(),
            codexd: t.codexd.clone(),
            data_dir: t.data_dir.clone(),
        });
        let http = |addr: String, forward: Option<super::tunnel::Forward>| {
            let key = RouteKey::Http {
                addr: addr.clone(),
                ssh: ssh_key.clone().map(Box::new),
                remote_port: forward.as_ref().map(|f| f.remote_port),
            };
            let token = match (&m.token, &ssh) {
                (Some(t), _) => TokenSource::Configured(t.clone()),
                (None, Some(t)) => TokenSource::FetchedOverSsh(t.clone()),
                (None, None) => TokenSource::Missing,
            };
            let target = HttpTarget {
                machine: m.name.clone(),
                addr,
                token,
                user: m.user.clone(),
                forward,
                route: key.clone(),
                call_timeout,
            };
            (Route::Http(Box::new(target)), key)
        };
        let addr = m.host_port()?;
        let (route, key) = match (&ssh, &addr) {
            (Some(target), _) if m.use_direct_addr => {
                let forward_key = RouteKey::Http {
                    addr: String::new(),
                    ssh: ssh_key.clone().map(Box::new),
                    remote_port: None,
                };
                let forward = super::tunnel::Forward::of(target, m, forward_key)?;
                http(String::new(), Some(forward))
            }
            (_, Some(addr)) => http(addr.clone(), None),
            (Some(target), None) => {
                (Route::Ssh(target.clone()), ssh_key.clone().expect("an ssh machine"))
            }
            (None, None) if m.name == LOCAL => {
                let codexd = m.codexd.as_ref().map(PathBuf::from).unwrap_or_else(local_codexd);
                let key = RouteKey::Local {
                    codexd: codexd.display().to_string(),
                    data_dir: m.data_dir.clone(),
                };
                let in_process = m.codexd.is_none();
                (Route::Local { codexd, data_dir: m.data_dir.clone(), in_process }, key)
            }
            (None, None) => {
                return Err(Error::new(
                    ErrorCode::ConfigError,
                    format!("machine {:?} has no `ssh:` destination nor `addr:`", m.name),
                ));
            }
        };
        let sessions = Sessions::default();
        Ok(Machine { name: m.name.clone(), route, ssh, key, call_timeout, sessions })
    }

    /// This machine with its calls on `sessions` (the client's [`super::mux::SessionPool`]).
    pub fn with_sessions(mut self, sessions: Arc<dyn SharedSessions>) -> Self {
        self.sessions = Sessions(Some(sessions));
        self
    }

    /// Closes this machine's shared sessions, if it has any ([`SharedSessions::close`]).
    pub fn close_sessions(&self) {
        if let Some(sessions) = &self.sessions.0 {
            sessions.close(&self.name);
        }
    }

    /// This machine with the ssh agent forwarded (`-A`) on its ssh calls (`--forward-agent`).
    /// An HTTP route has no ssh call to forward it on.
    pub fn forwarding_agent(mut self) -> Self {
        for target in [self.ssh.as_mut(), self.route.ssh_mut()].into_iter().flatten() {
            target.forward_agent = true;
        }
        self
    }

    /// Sends `request` and returns its final answer; `log`/`chunk` lines before it go to
    /// `on_line` as they arrive. An `error` answer becomes `Err`. The `local` machine answers
    /// in this process (on Linux); a machine with shared sessions ([`Machine::with_sessions`])
    /// sends it on its session.
    pub fn call(
        &self,
        request: &Request,
        on_line: &mut dyn FnMut(Response) -> Result<()>,
    ) -> Result<Response> {
        // Heartbeats only keep the call alive (they reset its deadline on arrival).
        let on_line = &mut |line: Response| match line {
            Response::Heartbeat(_) => Ok(()),
            line => on_line(line),
        };
        #[cfg(target_os = "linux")]
        if let Route::Local { codexd, data_dir, in_process: true } = &self.route
            && let Some(answer) =
                super::in_process::call(codexd, data_dir.as_deref(), request, on_line)
        {
            return answer.map_err(|e| self.explained(request, e));
        }
        let shared = self.sessions.0.clone();
        match shared.and_then(|sessions| sessions.call(self, request, on_line)) {
            Some(Ok(Response::Error(body))) => {
                return Err(self.explained(request, self.checked(body.into())));
            }
            Some(Ok(answer)) => return Ok(answer),
            Some(Err(e)) => return Err(self.explained(request, self.checked(e))),
            None => {}
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.call_once(request, on_line) {
                Err(CallError::Retryable(_)) if attempt < ATTEMPTS => {
                    std::thread::sleep(backoff(attempt));
                }
                Err(CallError::Retryable(e) | CallError::Final(e)) => {
                    return Err(self.explained(request, self.checked(e)));
                }
                Ok(Response::Error(body)) => {
                    return Err(self.explained(request, self.checked(body.into())));
                }
                Ok(answer) => return Ok(answer),
            }
        }
    }

    /// Whether this machine's codexd is known to report `capability`: answered in this process,
    /// or said so by a fresh cached `hello`. `false` also when not known yet (the caller then
    /// takes the way every codexd understands).
    pub fn supports(&self, capability: &str) -> bool {
        self.answers_in_process()
            || compat::cached(&self.name, &self.key)
                .is_some_and(|seen| seen.capabilities.iter().any(|c| c == capability))
    }

    /// Whether requests without bytes are answered in this process ([`super::in_process`]).
    pub fn answers_in_process(&self) -> bool {
        cfg!(target_os = "linux") && matches!(self.route, Route::Local { in_process: true, .. })
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

    /// Says which machine an error came from, and what to do about the job-related ones.
    fn explained(&self, request: &Request, mut e: Error) -> Error {
        let name = &self.name;
        let id = request.exec_id().unwrap_or("ID");
        match e.code {
            ErrorCode::JobNotFound => {
                e.message = format!("{} on machine {name}", e.message);
                e.hint = Some(format!(
                    "jobs are kept per machine: if it ran elsewhere, pass --machine NAME \
                     (`codex-remote exec list --machine {name}` lists this one's jobs)"
                ));
            }
            ErrorCode::JobRunning => {
                e.message = format!("{} on machine {name}", e.message);
                e.hint = Some(format!(
                    "cancel it first: codex-remote exec cancel --machine {name} --id {id}"
                ));
            }
            ErrorCode::Timeout => {
                e.message = format!("machine {name}: {}", e.message);
                e.hint = Some(format!(
                    "check that codexd answers on {name} (`codex-remote machine check --machine \
                     {name}`), or raise `call_timeout` for machine {name} in the config"
                ));
            }
            ErrorCode::CodexdNotFound => {
                e.message = format!("machine {name}: {}", e.message);
                e.hint = Some(format!(
                    "install it with `codex-remote machine up --machine {name}`, or set `codexd: \
                     /path/to/codexd` for machine {name} in the config"
                ));
            }
            _ if !e.message.contains(name.as_str()) => {
                e.message = format!("machine {name}: {}", e.message);
            }
            _ => {}
        }
        e
    }

    /// How long `request` may wait for codexd ([`super::deadline`]); `None`: a transfer
    /// session (files, sync), alive while bytes arrive. Silences count only with a codexd
    /// known to send heartbeats (`capabilities` of its `hello`; `None`: the cached one); a
    /// cancel, which waits out the job's grace period without them, is bounded by
    /// [`deadline::within`] only.
    pub(super) fn deadline(
        &self,
        request: Option<&Request>,
        capabilities: Option<&[String]>,
    ) -> Deadline {
        match request {
            None | Some(Request::ExecWait(_) | Request::ExecRun(_)) => {}
            Some(Request::ExecLogs(r)) if r.follow => {}
            Some(Request::ExecCancel(_)) => return Deadline::long(self.call_timeout, false),
            Some(_) => return Deadline::quick(self.call_timeout),
        }
        let heartbeats = |caps: &[String]| caps.iter().any(|c| c == capability::HEARTBEAT);
        let known = match capabilities {
            Some(caps) => heartbeats(caps),
            None => compat::cached(&self.name, &self.key)
                .is_some_and(|seen| heartbeats(&seen.capabilities)),
        };
        Deadline::long(self.call_timeout, known)
    }

    /// How a call of `kind` reaches codexd: the child process of a pipe route (not started
    /// yet), or the HTTP target.
    pub(super) fn link(&self, kind: CallKind) -> Result<Link<'_>> {
        Ok(match &self.route {
            Route::Http(target) => Link::Http(target),
            Route::Local { codexd, data_dir, .. } => {
                let mut cmd = std::process::Command::new(codexd);
                cmd.arg("rpc");
                if let Some(dir) = data_dir {
                    cmd.arg("--data-dir").arg(dir);
                }
                Link::Pipe(Connection::plain(cmd), PipeKind::Local { codexd: codexd.clone() })
            }
            Route::Ssh(target) => {
                Link::Pipe(target.connect(&target.remote_command(), kind)?, PipeKind::Ssh)
            }
        })
    }

    fn call_once(
        &self,
        request: &Request,
        on_line: &mut dyn FnMut(Response) -> Result<()>,
    ) -> Result<Response, CallError> {
        let call_kind = call_kind(request);
        let deadline = self.deadline(Some(request), None);
        let (conn, kind) = match self.link(call_kind).map_err(CallError::Final)? {
            Link::Pipe(conn, kind) => (conn, kind),
            Link::Http(target) => return target.call_once(request, deadline, on_line),
        };
        match self.version_check(request.needs()).map_err(CallError::Final)? {
            None => pipe::call_once(conn, &kind, deadline, None, request, on_line),
            // No request reaches a codexd before its hello passed the check.
            Some(mut check) => {
                pipe::call_once(conn, &kind, deadline, Some(&mut check), request, on_line)
            }
        }
    }

    /// The version check before a request that needs `needs`, the one for every door:
    /// `Ok(None)` when a fresh cached `hello` passed it already, else the check of the `hello`
    /// answer this call gets ([`Machine::check_hello`]).
    fn version_check(
        &self,
        needs: Option<&'static str>,
    ) -> Result<Option<impl FnMut(&HelloResponse) -> Result<()> + '_>> {
        if let Some(seen) = compat::cached(&self.name, &self.key) {
            compat::require(&self.name, &seen.capabilities, needs)?;
            return Ok(None);
        }
        Ok(Some(move |hello: &HelloResponse| self.check_hello(hello, needs)))
    }

    /// Checks a `hello` answer of this machine's codexd for a request that needs `needs`
    /// (another protocol, a missing capability: `protocol_mismatch`) and caches it.
    pub(super) fn check_hello(&self, hello: &HelloResponse, needs: Option<&str>) -> Result<()> {
        compat::check_hello(&self.name, &self.key, hello)?;
        compat::require(&self.name, &hello.capabilities, needs)
    }
}

/// How a call reaches codexd: a child process (`ssh HOST codexd rpc`, or `codexd rpc`), or
/// HTTP.
// One per call, taken apart at once: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Link<'m> {
    Pipe(Connection, PipeKind),
    Http(&'m HttpTarget),
}

/// Long calls (a follow, a wait, a cancel's grace) may hold a session for hours, alive by
/// codexd's heartbeats; the others are quick.
fn call_kind(request: &Request) -> CallKind {
    let long = match request {
        Request::ExecLogs(r) => r.follow,
        Request::ExecWait(_) | Request::ExecCancel(_) | Request::ExecRun(_) => true,
        _ => false,
    };
    if long { CallKind::Long } else { CallKind::Short }
}

/// A session with a machine's codexd for a multi-request exchange with bytes (files, sync):
/// one `codexd rpc` child (one ssh session), or posts to an HTTP machine's `/v1/rpc`.
pub struct Session<'m> {
    machine: &'m Machine,
    door: TransferDoor,
}

/// The door a transfer [`Session`] goes through.
enum TransferDoor {
    Pipe(Box<PipeSession>),
    Http(Box<super::http::HttpSession>),
}

impl Machine {
    /// Opens a session for requests that need `capability` (checked as [`Machine::call`] does).
    pub fn session(&self, capability: &'static str) -> Result<Session<'_>> {
        let opened = self.open_door(capability);
        let door = opened.map_err(|e| self.explained_for(self.checked(e)))?;
        Ok(Session { machine: self, door })
    }

    fn open_door(&self, capability: &'static str) -> Result<TransferDoor> {
        let deadline = self.deadline(None, None);
        let (conn, kind) = match self.link(CallKind::Long)? {
            Link::Pipe(conn, kind) => (conn, kind),
            Link::Http(target) => {
                return target.session(deadline).map(|s| TransferDoor::Http(Box::new(s)));
            }
        };
        let session = match self.version_check(Some(capability))? {
            None => PipeSession::open(conn, &kind, deadline, None),
            Some(mut check) => PipeSession::open(conn, &kind, deadline, Some(&mut check)),
        };
        session.map(|s| TransferDoor::Pipe(Box::new(s)))
    }

    /// [`Machine::explained`] for errors that are not about one request.
    fn explained_for(&self, e: Error) -> Error {
        self.explained(&Request::Hello(Default::default()), e)
    }
}

impl Session<'_> {
    /// One request: its line, the bytes `payload` writes after it, then `body` reads what comes
    /// before the answer (frames), then the final answer. An `error` answer is `Err`.
    pub fn exchange(
        &mut self,
        request: &Request,
        payload: pipe::Payload,
        body: pipe::Body,
    ) -> Result<Response> {
        let answer = match &mut self.door {
            TransferDoor::Pipe(s) => s.exchange(request, payload, body),
            TransferDoor::Http(s) => s.exchange(request, payload, body),
        };
        answer.map_err(|e| self.machine.explained(request, self.machine.checked(e)))
    }

    /// A request without bytes either way.
    pub fn call(&mut self, request: &Request) -> Result<Response> {
        self.exchange(request, &mut |_| Ok(()), &mut |_| Ok(()))
    }

    /// Ends the session (codexd exits).
    pub fn close(self) -> Result<()> {
        match self.door {
            TransferDoor::Pipe(s) => s.close(),
            TransferDoor::Http(_) => Ok(()),
        }
    }

    pub fn machine(&self) -> &Machine {
        self.machine
    }
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
