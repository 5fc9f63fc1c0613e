//! The child-process doors: `ssh HOST codexd rpc` for ssh machines, and `codexd rpc` itself for
//! the `local` machine. A call writes its request line (after a `hello` when the version check
//! asks for one), closes stdin and reads answer lines until the final one.

use std::io::BufReader;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

use super::answer::{AnswerRead, CallError, new_call_id, read_answer};
use super::ssh::{Connection, classify_failure, read_temp, ssh_program};
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::{
    HelloRequest, HelloResponse, PROTOCOL_VERSION, Request, RequestLine, Response,
};
use crate::wire;

/// The pid of the transport child of the call in progress (0: none), so that a Ctrl-C handler
/// can end it.
pub static CURRENT_CHILD: AtomicU32 = AtomicU32::new(0);

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

/// One call through `conn`. With `hello`, a `hello` request goes first on the same session
/// and its answer is checked before the request is written.
pub fn call_once(
    mut conn: Connection,
    kind: &PipeKind,
    hello: Option<HelloCheck>,
    request: &Request,
    on_line: &mut dyn FnMut(Response) -> Result<()>,
) -> Result<Response, CallError> {
    let temp_failed = |e| CallError::Final(Error::internal("creating a temp file", e));
    let stderr_file = tempfile::tempfile().map_err(temp_failed)?;
    let stderr_copy = stderr_file.try_clone().map_err(temp_failed)?;
    // stderr goes to a file, not a pipe: a ControlPersist master may keep it open for minutes.
    let cmd = &mut conn.command;
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr_copy);
    let spawned = cmd.spawn();
    conn.started();
    let mut child = spawned.map_err(|e| CallError::Final(spawn_error(kind, e)))?;
    CURRENT_CHILD.store(child.id(), Ordering::SeqCst);

    let call_id = new_call_id();
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let read = match hello {
        Some(check) => say_hello(&mut stdin, &mut reader, &call_id, check),
        None => None,
    };
    if read.is_none() {
        let line = RequestLine { id: Some(call_id.clone()), request: request.clone() };
        // A write error means the process died early; its exit status tells why, below.
        let _ = wire::write_line(&mut stdin, &line);
    }
    drop(stdin);
    let read = read.unwrap_or_else(|| read_answer(reader, &call_id, on_line));
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
    let stderr = read_temp(&mut { stderr_file });
    let code = status.ok().and_then(|s| s.code());
    let (err, retryable) = classify_failure(code, &stderr, *kind == PipeKind::Ssh);
    if retryable && !answered_any {
        Err(CallError::Retryable(err))
    } else {
        Err(CallError::Final(err))
    }
}

/// Sends `hello` and checks its answer. `None`: go on with the request. `Some`: the call ends
/// here, with codexd's own answer (an error line), the check's refusal, or nothing (the
/// session ended; stderr tells why).
fn say_hello(
    stdin: &mut impl std::io::Write,
    reader: &mut impl std::io::BufRead,
    call_id: &serde_json::Value,
    check: HelloCheck,
) -> Option<AnswerRead> {
    let id = serde_json::Value::String(format!("{}-hello", call_id.as_str().unwrap_or("")));
    let hello = Request::Hello(HelloRequest {
        protocol: Some(PROTOCOL_VERSION),
        client_version: Some(crate::version::VERSION.to_string()),
    });
    let _ = wire::write_line(stdin, &RequestLine { id: Some(id.clone()), request: hello });
    match read_answer(reader, &id, &mut |_| Ok(())) {
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
