//! Reading the answer lines of one call, the same way for every door (a pipe to `codexd rpc`
//! or the body of an HTTP answer), and saying whether a failed call may be tried again.

use crate::error::{Error, ErrorCode, Result};
use crate::protocol::{Response, ResponseLine};
use crate::wire::{self, Line};

/// The longest answer line read (a log line of 64 KiB escaped fits many times).
pub const MAX_ANSWER_LINE: usize = 16 * 1024 * 1024;

/// Why a call failed, and whether trying again may help.
#[derive(Debug)]
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

/// A fresh id for one call's request line.
pub fn new_call_id() -> serde_json::Value {
    serde_json::Value::String(uuid::Uuid::now_v7().simple().to_string())
}

/// The error for an answer of the wrong kind.
pub fn unexpected(answer: &Response) -> Error {
    Error::new(ErrorCode::ProtocolError, format!("unexpected answer of type {:?}", answer.kind()))
}
