//! The child-process doors: `ssh HOST codexd rpc` for ssh machines, and `codexd rpc` itself for
//! the `local` machine. A call writes its request line (after a `hello` when the version check
//! asks for one), closes stdin and reads answer lines until the final one. A [`PipeSession`] keeps
//! stdin and stdout open for several requests in turn, each with the bytes that follow its line
//! and those that come before its answer (files and sync: [`crate::protocol::files`]).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::answer::{AnswerRead, CallError, new_call_id, read_answer};
use super::deadline::{Deadline, TimedReader};
use super::ssh::{Connection, classify_failure, read_temp, ssh_program};
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::{HelloRequest, HelloResponse, Request, RequestLine, Response};
use crate::wire;

/// The pid of the transport child of the call in progress (0: none), so that a Ctrl-C handler
/// can end it.
pub static CURRENT_CHILD: AtomicU32 = AtomicU32::new(0);

/// Set on Ctrl-C/SIGTERM ([`crate::platform::watch_interrupts`]): a request answered in this
/// process ([`super::in_process`]: a follow, a wait) ends as if its reader had gone away.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Which child process a call runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipeKind {
    /// `codexd rpc` on this computer.
    Local { codexd: PathBuf },
    /// `ssh ... HOST codexd rpc`.
    Ssh,
}

/// Checks codexd's `hello` answer before the request is sent: an `Err` keeps the request
/// unsent (another protocol, a missing capability).
pub type HelloCheck<'a> = &'a mut dyn FnMut(&HelloResponse) -> Result<()>;

/// One call through `conn`. With `hello`, a `hello` request goes first on the same session and
/// its answer is checked before the request is written. Each line goes in one write (the last
/// with stdin closed at once): each small write costs a round trip over TCP with Nagle. When
/// `deadline` runs out the child is killed and reaped, and the call is a `timeout`.
pub fn call_once(
    mut conn: Connection,
    kind: &PipeKind,
    deadline: Deadline,
    hello: Option<HelloCheck>,
    request: &Request,
    on_line: &mut dyn FnMut(Response) -> Result<()>,
) -> Result<Response, CallError> {
    let (mut child, stderr_file) = spawn(&mut conn, kind).map_err(CallError::Final)?;
    CURRENT_CHILD.store(child.id(), Ordering::SeqCst);

    let call_id = new_call_id();
    let mut stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut reader = BufReader::new(TimedReader::new(stdout, deadline));
    let request_line = RequestLine { id: Some(call_id.clone()), request: request.clone() };
    let request_bytes = wire::line_bytes(&request_line)
        .map_err(|e| CallError::Final(Error::internal("encoding a request", e)))?;
    let check = hello;
    // Without a hello the request is the first write; with one, it waits for the check.
    let pipelined = check.is_none();
    let hello_id = check.as_ref().map(|_| hello_id(&call_id));
    let mut first = hello_id.as_ref().map(hello_bytes).unwrap_or_default();
    if pipelined {
        first.extend_from_slice(&request_bytes);
    }
    // A write error means the process died early; its exit status tells why, below.
    let _ = stdin.as_mut().expect("stdin is piped").write_all(&first);
    if pipelined {
        // codexd answers what it read, then exits at the end of its input.
        stdin = None;
    }
    let read = match (check, &hello_id) {
        (Some(check), Some(id)) => read_hello(&mut reader, id, check),
        _ => None,
    };
    if read.is_none()
        && let Some(stdin) = stdin.as_mut()
    {
        let _ = stdin.write_all(&request_bytes);
    }
    drop(stdin);
    let read = read.unwrap_or_else(|| read_answer(&mut reader, &call_id, on_line));
    if reader.get_ref().expired() {
        let _ = child.kill();
        let _ = child.wait();
        CURRENT_CHILD.store(0, Ordering::SeqCst);
        return Err(CallError::Final(deadline.expired(silent(kind))));
    }
    let answered_any = match read {
        AnswerRead::Final(answer) => {
            let _ = child.wait();
            CURRENT_CHILD.store(0, Ordering::SeqCst);
            return Ok(*answer);
        }
        AnswerRead::Refused(e) => {
            let _ = child.kill();
            let _ = child.wait();
            CURRENT_CHILD.store(0, Ordering::SeqCst);
            return Err(CallError::Final(e));
        }
        AnswerRead::Ended { answered_any } => answered_any,
    };
    let status = child.wait();
    CURRENT_CHILD.store(0, Ordering::SeqCst);
    let stderr = read_temp(&mut { stderr_file });
    let code = status.ok().and_then(|s| s.code());
    let (err, retryable) = classify_failure(code, &stderr, *kind == PipeKind::Ssh);
    if retryable && !answered_any {
        Err(CallError::Retryable(err))
    } else {
        Err(CallError::Final(err))
    }
}

/// What did not answer, for a `timeout`'s message.
fn silent(kind: &PipeKind) -> &'static str {
    match kind {
        PipeKind::Ssh => "codexd over ssh",
        PipeKind::Local { .. } => "the local codexd",
    }
}

/// Starts the child of `conn` with stdin and stdout piped; its stderr goes to the returned temp
/// file, not a pipe: a ControlPersist master may keep it open for minutes.
pub fn spawn(conn: &mut Connection, kind: &PipeKind) -> Result<(Child, std::fs::File)> {
    let temp_failed = |e| Error::internal("creating a temp file", e);
    let stderr = tempfile::tempfile().map_err(temp_failed)?;
    let stderr_copy = stderr.try_clone().map_err(temp_failed)?;
    let cmd = &mut conn.command;
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr_copy);
    let spawned = super::ssh::spawn_tied(cmd);
    conn.started();
    Ok((spawned.map_err(|e| spawn_error(kind, e))?, stderr))
}

/// The id of the `hello` that goes before the request of call `call_id`.
fn hello_id(call_id: &serde_json::Value) -> serde_json::Value {
    serde_json::Value::String(format!("{}-hello", call_id.as_str().unwrap_or("")))
}

/// The `hello` line of this client, with `id`.
fn hello_bytes(id: &serde_json::Value) -> Vec<u8> {
    let hello = Request::Hello(HelloRequest::from_this_client());
    let line = RequestLine { id: Some(id.clone()), request: hello };
    wire::line_bytes(&line).unwrap_or_default()
}

/// Reads and checks the answer to the `hello` with `id`. `None`: go on with the request.
/// `Some`: the call ends here, with codexd's own answer (an error line), the check's refusal,
/// or nothing (the session ended; stderr tells why).
fn read_hello(
    reader: &mut impl std::io::BufRead,
    id: &serde_json::Value,
    check: HelloCheck,
) -> Option<AnswerRead> {
    match read_answer(reader, id, &mut |_| Ok(())) {
        AnswerRead::Final(answer) => match *answer {
            Response::Hello(h) => check(&h).err().map(AnswerRead::Refused),
            other => Some(AnswerRead::Final(Box::new(other))),
        },
        _ => Some(AnswerRead::Ended { answered_any: false }),
    }
}

fn spawn_error(kind: &PipeKind, e: std::io::Error) -> Error {
    match kind {
        PipeKind::Local { codexd } => {
            Error::new(ErrorCode::CodexdNotFound, format!("cannot run {}: {e}", codexd.display()))
                .with_hint(if cfg!(target_os = "linux") {
                    "build it next to codex-remote (cargo build --release) or put codexd on PATH"
                } else {
                    "codexd runs on Linux only: use a machine reached over ssh (--machine NAME, \
             default_machine in the config)"
                })
        }
        PipeKind::Ssh => {
            Error::new(ErrorCode::SshFailed, format!("cannot run {}: {e}", ssh_program()))
                .with_hint("install the OpenSSH client")
        }
    }
}

/// A payload writer: the bytes after a request line.
pub type Payload<'a> = &'a mut dyn FnMut(&mut dyn Write) -> Result<()>;
/// A body reader: the bytes before the final answer line.
pub type Body<'a> = &'a mut dyn FnMut(&mut dyn BufRead) -> Result<()>;

/// One `codexd rpc` child kept open for several requests (one ssh session).
pub struct PipeSession {
    child: Child,
    stdin: Option<BufWriter<ChildStdin>>,
    stdout: BufReader<TimedReader<ChildStdout>>,
    stderr: std::fs::File,
    kind: PipeKind,
    _conn: Connection,
}

impl PipeSession {
    /// Starts the child; with `hello`, says hello and checks the answer first. Every read
    /// gives up when `deadline` runs out (a long call's: after a silence).
    pub fn open(
        mut conn: Connection,
        kind: &PipeKind,
        deadline: Deadline,
        hello: Option<HelloCheck>,
    ) -> Result<Self> {
        let (mut child, stderr) = spawn(&mut conn, kind)?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut session = PipeSession {
            child,
            stdin: Some(BufWriter::with_capacity(256 * 1024, stdin)),
            stdout: BufReader::with_capacity(256 * 1024, TimedReader::new(stdout, deadline)),
            stderr,
            kind: kind.clone(),
            _conn: conn,
        };
        if let Some(check) = hello {
            let stdin = session.stdin.as_mut().expect("open");
            let id = hello_id(&new_call_id());
            let sent = stdin.write_all(&hello_bytes(&id)).and_then(|()| stdin.flush());
            if sent.is_err() {
                return Err(session.failure());
            }
            match read_hello(&mut session.stdout, &id, check) {
                None => {}
                Some(AnswerRead::Final(answer)) => return Err(session.refused(*answer)),
                Some(AnswerRead::Refused(e)) => {
                    let _ = session.child.kill();
                    let _ = session.child.wait();
                    return Err(e);
                }
                Some(AnswerRead::Ended { .. }) => return Err(session.failure()),
            }
        }
        Ok(session)
    }

    /// One request: its line, then what `payload` writes, then `body` reads what comes before
    /// the answer lines, then the final answer (an `error` answer is `Err`).
    pub fn exchange(
        &mut self,
        request: &Request,
        payload: Payload,
        body: Body,
    ) -> Result<Response> {
        let call_id = new_call_id();
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(Error::internal("session", "already closed"));
        };
        let line = RequestLine { id: Some(call_id.clone()), request: request.clone() };
        let sent = serde_json::to_writer(&mut *stdin, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| stdin.write_all(b"\n"))
            .map_err(|e| Error::io("sending", e))
            .and_then(|()| payload(stdin))
            .and_then(|()| stdin.flush().map_err(|e| Error::io("sending", e)));
        match sent {
            Ok(()) => {}
            // codexd stopped reading (it refused the request, or died): its answer says why.
            Err(e) if e.is_broken_pipe() => {}
            Err(e) => return Err(e),
        }
        if let Err(e) = body(&mut self.stdout) {
            return Err(if self.stdout.get_ref().expired() { self.failure() } else { e });
        }
        match read_answer(&mut self.stdout, &call_id, &mut |_| Ok(())) {
            AnswerRead::Final(answer) => match *answer {
                Response::Error(e) => Err(e.into()),
                answer => Ok(answer),
            },
            AnswerRead::Refused(e) => Err(e),
            AnswerRead::Ended { .. } => Err(self.failure()),
        }
    }

    /// Ends the session: closes codexd's stdin and waits for it to exit.
    pub fn close(mut self) -> Result<()> {
        self.stdin = None;
        let _ = self.child.wait();
        Ok(())
    }

    /// The answer to `hello` was another answer: codexd's own error, most likely.
    fn refused(&mut self, answer: Response) -> Error {
        let _ = self.child.kill();
        let _ = self.child.wait();
        match answer {
            Response::Error(e) => e.into(),
            other => super::answer::unexpected(&other),
        }
    }

    /// The session ended before an answer: the child's exit status and stderr say why, or it
    /// ran out of time (then the child is killed).
    fn failure(&mut self) -> Error {
        self.stdin = None;
        if self.stdout.get_ref().expired() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return self.stdout.get_ref().deadline().expired(silent(&self.kind));
        }
        let code = self.child.wait().ok().and_then(|s| s.code());
        let stderr = read_temp(&mut self.stderr);
        classify_failure(code, &stderr, self.kind == PipeKind::Ssh).0
    }
}

impl Drop for PipeSession {
    fn drop(&mut self) {
        self.stdin = None;
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
