//! The MCP server's stdin and stdout: JSON-RPC messages, one per line, and nothing else on stdout.
//!
//! rmcp's own line transport does the protocol. In front of it, a reader answers what it drops
//! without a word: a line that is not JSON gets JSON-RPC's `-32700 Parse error` and a line over
//! the size cap gets `-32600 Invalid Request` (both with `id: null`), so a client learns its
//! message was lost instead of waiting for an answer that never comes. A batch (a JSON array,
//! which MCP dropped in 2025-06-18) gets `-32600` with `id: null` too. Both kinds of answer
//! A line that is not JSON only because of a lone surrogate (`"\ud800"`) is answered with its
//! `id` when it can be read. A `tools/call` whose `arguments` is not an object gets `-32602`
//! with its `id` (rmcp alone would answer "method not found"). Both kinds of answer
//! reach stdout through one writer, a whole line at a time; an error answer of rmcp's without
//! an `id` gets `"id": null` there, as JSON-RPC asks.

use rmcp::ServiceExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::McpServer;
use crate::wire::{self, Line};

/// Buffer of the in-process pipes between the line filter, rmcp and the stdout writer.
const PIPE_BYTES: usize = 256 * 1024;
/// The longest message read (a tool call with a script of a few MiB fits).
const MAX_MESSAGE: usize = wire::MAX_REQUEST_LINE;

/// What the stdin reader found on one line.
enum Incoming {
    /// A JSON text, for rmcp.
    Message(Vec<u8>),
    /// Not a message: the error answer to write instead.
    Refused(Vec<u8>),
}

/// Serves `server` on stdin/stdout until stdin closes (or the client ends the session).
pub async fn serve(server: McpServer) -> Result<(), String> {
    let (mut to_rmcp, rmcp_in) = tokio::io::duplex(PIPE_BYTES);
    let (rmcp_out, from_rmcp) = tokio::io::duplex(PIPE_BYTES);
    let (incoming_tx, mut incoming) = mpsc::channel::<Incoming>(16);
    let (refused_tx, refused) = mpsc::unbounded_channel::<Vec<u8>>();

    // A plain thread: a blocking read of stdin cannot be cancelled, and must not hold up the
    // runtime's shutdown once the session is over.
    std::thread::spawn(move || read_stdin(incoming_tx));
    tokio::spawn(async move {
        while let Some(item) = incoming.recv().await {
            match item {
                Incoming::Message(mut line) => {
                    line.push(b'\n');
                    if to_rmcp.write_all(&line).await.is_err() {
                        break;
                    }
                }
                Incoming::Refused(answer) => {
                    let _ = refused_tx.send(answer);
                }
            }
        }
        // Dropping `to_rmcp` here is rmcp's end of input.
    });
    let writer = tokio::spawn(write_stdout(from_rmcp, refused));

    let result = match server.serve((rmcp_in, rmcp_out)).await {
        Ok(running) => running.waiting().await.map(|_| ()).map_err(|e| e.to_string()),
        // Usually the client went away before the handshake ended: nothing to serve.
        Err(e) => {
            let e = e.to_string();
            if !e.contains("closed") {
                eprintln!("codex-remote mcp: {e}");
            }
            Ok(())
        }
    };
    let _ = writer.await;
    result
}

/// Reads stdin line by line with a size cap, sorting messages from lines to refuse.
fn read_stdin(tx: mpsc::Sender<Incoming>) {
    let mut stdin = std::io::stdin().lock();
    loop {
        let item = match wire::read_line_capped(&mut stdin, MAX_MESSAGE) {
            Ok(Some(Line::Text(bytes))) => {
                let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                // Parsed whole (strings included, so a lone surrogate is found here, not
                // dropped by rmcp without an answer).
                match serde_json::from_slice::<serde_json::Value>(text) {
                    Ok(serde_json::Value::Array(_)) => Incoming::Refused(error_line(
                        -32600,
                        "Invalid Request: batches are not part of MCP; send one message per line",
                    )),
                    Ok(message) => match bad_arguments(&message) {
                        Some(refusal) => Incoming::Refused(refusal),
                        None => Incoming::Message(bytes),
                    },
                    Err(e) => Incoming::Refused(error_line_for(
                        lossy_id(text),
                        -32700,
                        &format!("Parse error: {e}"),
                    )),
                }
            }
            Ok(Some(Line::TooLong(n))) => Incoming::Refused(error_line(
                -32600,
                &format!(
                    "Invalid Request: a message of {n} bytes is over the {MAX_MESSAGE} byte cap"
                ),
            )),
            Ok(None) | Err(_) => return,
        };
        if tx.blocking_send(item).is_err() {
            return;
        }
    }
}

/// An error answer without an `id` (rmcp's answer to a message it cannot read) gets `"id":
/// null`; every other line is passed on as it is. Error answers are short: a long line is not
/// parsed.
fn with_null_id(line: Vec<u8>) -> Vec<u8> {
    if line.len() > 64 * 1024 || !line.windows(8).any(|w| w == b"\"error\":") {
        return line;
    }
    let Ok(serde_json::Value::Object(mut answer)) = serde_json::from_slice(&line) else {
        return line;
    };
    if answer.contains_key("id") || !answer.contains_key("error") {
        return line;
    }
    answer.insert("id".into(), serde_json::Value::Null);
    let mut fixed = serde_json::Value::Object(answer).to_string().into_bytes();
    fixed.push(b'\n');
    fixed
}

/// `-32602 Invalid params` for a `tools/call` whose `arguments` is there but not an object
/// (rmcp would call it an unknown method).
fn bad_arguments(message: &serde_json::Value) -> Option<Vec<u8>> {
    let arguments = message.get("params")?.get("arguments")?;
    if message["method"] != "tools/call" || arguments.is_object() || arguments.is_null() {
        return None;
    }
    let id = message.get("id").cloned().unwrap_or_default();
    Some(error_line_for(id, -32602, "Invalid params: `arguments` must be a JSON object"))
}

/// The `id` of a line that is not valid JSON only because of a lone surrogate escape
/// (`"\ud800"`), so its answer reaches the caller waiting on that id; `null` otherwise.
fn lossy_id(text: &[u8]) -> serde_json::Value {
    let Ok(text) = std::str::from_utf8(text) else { return serde_json::Value::Null };
    let mut fixed = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\\u") {
        fixed.push_str(&rest[..at]);
        let escape = rest.get(at..at + 6).unwrap_or(&rest[at..]);
        let surrogate = escape.len() == 6
            && u16::from_str_radix(&escape[2..], 16).is_ok_and(|c| (0xD800..0xE000).contains(&c));
        fixed.push_str(if surrogate { "\\ufffd" } else { escape });
        rest = &rest[at + escape.len()..];
    }
    fixed.push_str(rest);
    serde_json::from_str::<serde_json::Value>(&fixed)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .filter(|id| id.is_number() || id.as_str().is_some_and(|s| !s.contains('\u{fffd}')))
        .unwrap_or_default()
}

fn error_line(code: i64, message: &str) -> Vec<u8> {
    error_line_for(serde_json::Value::Null, code, message)
}

fn error_line_for(id: serde_json::Value, code: i64, message: &str) -> Vec<u8> {
    let answer = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    let mut line = answer.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// Copies rmcp's output lines and the refusals to stdout, whole lines only, until rmcp is done.
async fn write_stdout(
    from_rmcp: tokio::io::DuplexStream,
    mut refused: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let mut out = tokio::io::stdout();
    let mut lines = BufReader::new(from_rmcp);
    // A line of rmcp's being read; `read_until` keeps a partial read in it if the other branch
    // wins, and the next call goes on from there.
    let mut line = Vec::new();
    let mut refusals_open = true;
    loop {
        let answer = tokio::select! {
            read = lines.read_until(b'\n', &mut line) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => with_null_id(std::mem::take(&mut line)),
            },
            answer = refused.recv(), if refusals_open => match answer {
                Some(answer) => answer,
                None => {
                    refusals_open = false;
                    continue;
                }
            },
        };
        if out.write_all(&answer).await.is_err() || out.flush().await.is_err() {
            // stdout is closed: the client is gone.
            return;
        }
    }
    while let Ok(answer) = refused.try_recv() {
        let _ = out.write_all(&answer).await;
    }
    let _ = out.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_surrogate_line_is_answered_with_its_id() {
        let line = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"\ud800"}}"#;
        assert!(serde_json::from_slice::<serde_json::Value>(line).is_err());
        assert_eq!(lossy_id(line), json!(7));
        assert_eq!(lossy_id(br#"{"id":"\ud800"}"#), serde_json::Value::Null);
        assert_eq!(lossy_id(b"{not json"), serde_json::Value::Null);
    }
}
