//! Shared sessions for long-lived clients (`codex-remote mcp`, `dashboard`, `exec run`): one
//! `codexd rpc` child per machine (`ssh HOST codexd rpc` over the master connection, or a local
//! `codexd rpc` where `local` is not answered in-process), kept open in the [`SessionPool`] the
//! client owns and passes to its machines, shared by every thread of the client.
//!
//! A session starts with a `hello` that asks for `concurrent`; codexd then serves the session's
//! requests on threads of its own and each answer line carries its request's `id`. A reader
//! thread per session routes the lines to the waiting callers by `id`, so a 20 s `exec_wait`
//! holds up no `exec_status`. A codexd that does not report `concurrent` (an older one) gets one
//! call per request, as the one-shot CLI does ([`call`] returns `None`).
//!
//! A session with no call in flight for [`IDLE_CLOSE`] is closed and reopened on the next call.
//! A session that ends (the child died, the connection dropped) fails the calls in flight with
//! the transport error its exit status and stderr give (`ssh_failed` over ssh), and the next
//! call opens a new one; a request that was never written goes on the new session. Nothing is
//! sent twice by this module: the caller's retry of an `exec_start` carries its idempotency key.
//! Requests with a payload (files, sync) and HTTP machines never use a session.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::answer::{MAX_ANSWER_LINE, new_call_id};
use super::compat;
use super::machine::{Machine, Route, SharedSessions};
use super::pipe::{self, CURRENT_CHILD};
use super::ssh::{CallKind, Connection, classify_failure, read_temp};
use super::transport::{self, Link};
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::{HelloRequest, Request, RequestLine, Response, ResponseLine, capability};
use crate::wire::{self, Line};

/// How long a session with no call in flight stays open.
pub const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// Seconds (decimals allowed) to use instead of [`IDLE_CLOSE`]; `0` turns sessions off (one
/// call per request, as the one-shot CLI).
pub const IDLE_ENV: &str = "CODEX_REMOTE_SESSION_IDLE_SECS";
/// Calls in flight on one session at most (codexd serves 64 at once); more go one per call.
const MAX_IN_FLIGHT: usize = 48;
/// A machine whose codexd cannot serve a session concurrently is asked again after this.
const RECHECK_OLD_CODEXD: Duration = Duration::from_secs(600);
/// How long the `hello` of a new session may take beyond ssh's `ConnectTimeout`.
const HELLO_GRACE: Duration = Duration::from_secs(20);

/// The shared sessions of one long-lived client: every machine's slot, and how long an idle
/// session lives. The client makes one ([`SessionPool::new`]) and hands it to the machines it
/// calls ([`Machine::with_sessions`]); a process without one makes one call per request.
pub struct SessionPool {
    idle: Duration,
    machines: Mutex<Vec<(Machine, Arc<Slot>)>>,
    reaper: OnceLock<()>,
}

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPool").field("idle", &self.idle).finish_non_exhaustive()
    }
}

impl SessionPool {
    /// A pool whose sessions close after [`IDLE_CLOSE`] without a call ([`IDLE_ENV`] says
    /// otherwise; `0`: no sessions, one call per request).
    pub fn new() -> Arc<SessionPool> {
        let idle = std::env::var(IDLE_ENV)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(IDLE_CLOSE, Duration::from_secs_f64);
        Arc::new(SessionPool { idle, machines: Mutex::default(), reaper: OnceLock::new() })
    }
}

impl SharedSessions for SessionPool {
    /// Sends `request` on the machine's shared session; `None` when this call does not use one
    /// (sessions off, a payload, an HTTP machine, an older codexd, a session full): the caller
    /// makes a call of its own. An `error` answer is returned as it came, `Ok(Response::Error)`.
    fn call(
        self: Arc<Self>,
        m: &Machine,
        request: &Request,
        on_line: &mut dyn FnMut(Response) -> Result<()>,
    ) -> Option<Result<Response>> {
        if self.idle.is_zero() || request.has_payload() || matches!(m.route, Route::Http(_)) {
            return None;
        }
        // A request not written (the session had ended unnoticed) goes on a new session once.
        for _ in 0..2 {
            let session = match self.session(m) {
                Ok(Some(session)) => session,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            let sent = session.call(m, request, on_line);
            session.release();
            if let Some(answer) = sent {
                return Some(answer);
            }
        }
        None
    }

    /// Closes the sessions of machine `name` (after `machine up` replaced its codexd): calls in
    /// flight get their answers, the next call opens a session with the new codexd.
    fn close(&self, name: &str) {
        let slots: Vec<Arc<Slot>> = lock(&self.machines)
            .iter()
            .filter(|(m, _)| m.name == name)
            .map(|(_, slot)| slot.clone())
            .collect();
        for slot in slots {
            let mut state = lock(&slot.state);
            state.old_codexd_since = None;
            if let Some(session) = state.session.take() {
                session.close();
            }
        }
    }
}

/// One machine's session, or the note that its codexd cannot serve one.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    session: Option<Arc<SharedSession>>,
    old_codexd_since: Option<Instant>,
}

impl SessionPool {
    /// The machine's live session with one more call counted in flight, opened if needed
    /// (callers of the same machine wait for one open); `None`: a call of its own.
    fn session(self: &Arc<Self>, m: &Machine) -> Result<Option<Arc<SharedSession>>> {
        let slot = {
            let mut machines = lock(&self.machines);
            match machines.iter().find(|(known, _)| known == m) {
                Some((_, slot)) => slot.clone(),
                None => {
                    let slot = Arc::new(Slot::default());
                    machines.push((m.clone(), slot.clone()));
                    slot
                }
            }
        };
        let mut state = lock(&slot.state);
        if state.old_codexd_since.is_some_and(|t| t.elapsed() < RECHECK_OLD_CODEXD) {
            return Ok(None);
        }
        if state.session.as_ref().is_some_and(|s| s.ended()) {
            state.session = None;
        }
        if state.session.is_none() {
            self.reaper.get_or_init(|| {
                let pool = Arc::downgrade(self);
                std::thread::spawn(move || close_idle_forever(pool));
            });
            match SharedSession::open(m)? {
                Some(session) => state.session = Some(session),
                None => {
                    state.old_codexd_since = Some(Instant::now());
                    return Ok(None);
                }
            }
        }
        let session = state.session.clone().expect("opened above");
        if session.in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
            session.release();
            return Ok(None);
        }
        Ok(Some(session))
    }
}

/// Closes sessions without a call in flight for the pool's `idle`, and forgets ended ones, as
/// long as the pool lives.
fn close_idle_forever(pool: std::sync::Weak<SessionPool>) {
    let Some(idle) = pool.upgrade().map(|p| p.idle) else { return };
    let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        std::thread::sleep(tick);
        let Some(pool) = pool.upgrade() else { return };
        {
            let slots: Vec<Arc<Slot>> =
                lock(&pool.machines).iter().map(|(_, slot)| slot.clone()).collect();
            for slot in slots {
                // A slot busy opening a session is not idle.
                let Ok(mut state) = slot.state.try_lock() else { continue };
                let quiet = state.session.as_ref().is_some_and(|s| {
                    s.ended()
                        || (s.in_flight.load(Ordering::SeqCst) == 0
                            && lock(&s.last_used).elapsed() >= idle)
                });
                if quiet && let Some(session) = state.session.take() {
                    session.close();
                }
            }
        }
    }
}

/// What the reader thread hands a waiting caller.
enum Reply {
    /// A `log`/`chunk` line before the final answer.
    Line(Response),
    Final(Response),
    /// The session ended first; `true`: another try may pass.
    Ended(Error, bool),
}

/// One `codexd rpc` child shared by the process's callers.
struct SharedSession {
    stdin: Mutex<Option<ChildStdin>>,
    waiting: Mutex<Waiting>,
    in_flight: AtomicUsize,
    last_used: Mutex<Instant>,
    capabilities: OnceLock<Vec<String>>,
    child: Mutex<Child>,
    pid: u32,
}

/// The callers waiting for answers, by request id; `ended` once the session is over.
#[derive(Default)]
struct Waiting {
    by_id: HashMap<String, Sender<Reply>>,
    ended: Option<(Error, bool)>,
}

impl SharedSession {
    /// Starts the child and says `hello`, retrying failures that may pass as a call does.
    /// `None`: the codexd does not serve sessions concurrently.
    fn open(m: &Machine) -> Result<Option<Arc<SharedSession>>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::open_once(m) {
                Err((_, true)) if attempt < transport::ATTEMPTS => {
                    std::thread::sleep(transport::backoff(attempt));
                }
                Err((e, _)) => return Err(e),
                Ok(opened) => return Ok(opened),
            }
        }
    }

    fn open_once(m: &Machine) -> std::result::Result<Option<Arc<SharedSession>>, (Error, bool)> {
        let final_error = |e| (e, false);
        let (mut conn, kind) = match m.link(CallKind::Long).map_err(final_error)? {
            Link::Pipe(conn, kind) => (conn, kind),
            Link::Http(_) => {
                return Err(final_error(Error::internal("session", "an HTTP machine")));
            }
        };
        let (mut child, stderr) = pipe::spawn(&mut conn, &kind).map_err(final_error)?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let pid = child.id();
        let session = Arc::new(SharedSession {
            stdin: Mutex::new(Some(stdin)),
            waiting: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            last_used: Mutex::new(Instant::now()),
            capabilities: OnceLock::new(),
            child: Mutex::new(child),
            pid,
        });
        let via_ssh = kind == pipe::PipeKind::Ssh;
        let reader = session.clone();
        std::thread::spawn(move || reader.read_answers(stdout, stderr, via_ssh, conn));

        let hello =
            Request::Hello(HelloRequest { concurrent: true, ..HelloRequest::from_this_client() });
        let (id, answers) = session.send(&hello).ok_or_else(|| {
            let ended = lock(&session.waiting).ended.clone();
            ended.unwrap_or_else(|| (Error::internal("session", "ended at once"), true))
        })?;
        let opening = Duration::from_secs(match &m.route {
            Route::Ssh(target) => target.connect_timeout_secs,
            _ => 0,
        }) + HELLO_GRACE;
        // The hello is a quick call: it ends by the machine's `call_timeout` (or an outer
        // `deadline::within`), as the same request on a call of its own would, and the child
        // of a session that did not open is killed and reaped.
        let quick = m.deadline(Some(&hello), None);
        let limit = quick.total().map_or(opening, |t| t.min(opening));
        let refused = |session: &SharedSession, e: Error| {
            session.kill();
            (e, false)
        };
        match answers.recv_timeout(limit) {
            Ok(Reply::Final(Response::Hello(hello))) => {
                if let Err(e) = m.check_hello(&hello, None) {
                    return Err(refused(&session, e));
                }
                if !hello.capabilities.iter().any(|c| c == capability::CONCURRENT) {
                    session.close();
                    return Ok(None);
                }
                let _ = session.capabilities.set(hello.capabilities);
                Ok(Some(session))
            }
            Ok(Reply::Final(Response::Error(e))) => Err(refused(&session, e.into())),
            Ok(Reply::Final(other)) => Err(refused(&session, super::answer::unexpected(&other))),
            Ok(Reply::Line(_)) => {
                Err(refused(&session, Error::new(ErrorCode::ProtocolError, "a log line for hello")))
            }
            Ok(Reply::Ended(e, retryable)) => Err((e, retryable)),
            Err(RecvTimeoutError::Disconnected) => {
                Err((Error::internal("session", "the reader thread ended"), false))
            }
            Err(RecvTimeoutError::Timeout) => {
                lock(&session.waiting).by_id.remove(&id);
                if limit < opening {
                    let what = format!("machine {}: codexd on a new session", m.name);
                    return Err(refused(&session, quick.expired(&what)));
                }
                let code = if via_ssh { ErrorCode::SshFailed } else { ErrorCode::ProtocolError };
                let message = format!(
                    "machine {}: codexd did not answer hello within {} s",
                    m.name,
                    limit.as_secs()
                );
                Err(refused(&session, Error::new(code, message)))
            }
        }
    }

    /// Writes `request` with a fresh id and returns the id and where its answers arrive;
    /// `None` when the session has ended and nothing was sent.
    fn send(&self, request: &Request) -> Option<(String, Receiver<Reply>)> {
        let id = match new_call_id() {
            serde_json::Value::String(id) => id,
            other => other.to_string(),
        };
        let (tx, rx) = mpsc::channel();
        {
            let mut waiting = lock(&self.waiting);
            if waiting.ended.is_some() {
                return None;
            }
            waiting.by_id.insert(id.clone(), tx);
        }
        let line = RequestLine { id: Some(id.clone().into()), request: request.clone() };
        let written = match lock(&self.stdin).as_mut() {
            Some(stdin) => wire::write_line(stdin, &line).and_then(|()| stdin.flush()).is_ok(),
            None => false,
        };
        if !written {
            // A line that did not reach codexd whole was never read as a request.
            lock(&self.waiting).by_id.remove(&id);
            return None;
        }
        Some((id, rx))
    }

    /// One call: `None` when it was not sent (the session had ended).
    fn call(
        &self,
        m: &Machine,
        request: &Request,
        on_line: &mut dyn FnMut(Response) -> Result<()>,
    ) -> Option<Result<Response>> {
        let capabilities = self.capabilities.get().map_or(&[][..], Vec::as_slice);
        if let Err(e) = compat::require(&m.name, capabilities, request.needs()) {
            return Some(Err(e));
        }
        let (id, answers) = self.send(request)?;
        // A Ctrl-C of `exec run` ends the session's child, which ends this call.
        CURRENT_CHILD.store(self.pid, Ordering::SeqCst);
        let deadline = m.deadline(Some(request), Some(capabilities));
        let mut last = Instant::now();
        loop {
            let wait = deadline.left(last).unwrap_or(Duration::MAX);
            let reply = answers.recv_timeout(wait);
            if reply.is_ok() {
                last = Instant::now();
            }
            return Some(match reply {
                Ok(Reply::Line(Response::Heartbeat(_))) => continue,
                Ok(Reply::Line(line)) => match on_line(line) {
                    Ok(()) => continue,
                    Err(e) => {
                        // Later lines of this id are dropped by the reader.
                        lock(&self.waiting).by_id.remove(&id);
                        Err(e)
                    }
                },
                Ok(Reply::Final(answer)) => Ok(answer),
                Ok(Reply::Ended(mut e, _)) => {
                    e.message =
                        format!("the session with codexd ended during the call: {}", e.message);
                    Err(e)
                }
                Err(RecvTimeoutError::Timeout) => {
                    // A codexd that went silent holds every call of the session: it ends.
                    lock(&self.waiting).by_id.remove(&id);
                    self.kill();
                    Err(deadline.expired("codexd on the shared session"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    Err(Error::internal("session", "the reader thread ended"))
                }
            });
        }
    }

    /// The end of a call: one fewer in flight, and the idle clock restarts.
    fn release(&self) {
        *lock(&self.last_used) = Instant::now();
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    fn ended(&self) -> bool {
        lock(&self.waiting).ended.is_some()
    }

    /// Closes codexd's stdin: it answers what is in flight and exits.
    fn close(&self) {
        lock(&self.stdin).take();
    }

    fn kill(&self) {
        self.close();
        let _ = lock(&self.child).kill();
    }

    /// Routes answer lines to their callers until the child's stdout ends; then fails the
    /// calls still waiting with what the exit status and stderr say.
    fn read_answers(
        &self,
        stdout: ChildStdout,
        mut stderr: std::fs::File,
        via_ssh: bool,
        conn: Connection,
    ) {
        let mut reader = BufReader::with_capacity(256 * 1024, stdout);
        while let Ok(Some(line)) = wire::read_line_capped(&mut reader, MAX_ANSWER_LINE) {
            let Line::Text(bytes) = line else { continue };
            // Anything else (login-shell noise) is skipped, as on a one-shot call.
            let Ok(ResponseLine { id, response }) = serde_json::from_slice(&bytes) else {
                continue;
            };
            let mut waiting = lock(&self.waiting);
            let Some(serde_json::Value::String(id)) = id else {
                // An error without an id: codexd failed before it read a request.
                if let Response::Error(e) = response {
                    for (_, tx) in waiting.by_id.drain() {
                        let _ = tx.send(Reply::Final(Response::Error(e.clone())));
                    }
                }
                continue;
            };
            let reply = if response.is_final() {
                waiting.by_id.remove(&id).map(|tx| (tx, Reply::Final(response)))
            } else {
                waiting.by_id.get(&id).map(|tx| (tx.clone(), Reply::Line(response)))
            };
            if let Some((tx, reply)) = reply
                && tx.send(reply).is_err()
            {
                waiting.by_id.remove(&id);
            }
        }
        self.close();
        let status = lock(&self.child).wait();
        let code = status.ok().and_then(|s| s.code());
        let (e, retryable) = classify_failure(code, &read_temp(&mut stderr), via_ssh);
        let waiters: Vec<Sender<Reply>> = {
            let mut waiting = lock(&self.waiting);
            waiting.ended = Some((e.clone(), retryable));
            waiting.by_id.drain().map(|(_, tx)| tx).collect()
        };
        for tx in waiters {
            let _ = tx.send(Reply::Ended(e.clone(), retryable));
        }
        let _ = CURRENT_CHILD.compare_exchange(self.pid, 0, Ordering::SeqCst, Ordering::SeqCst);
        drop(conn);
    }
}

/// A lock that a panicked holder does not poison for the others.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
