//! `exec_logs`' answer: a page of both streams with caps, and the plain text an agent reads.

use serde_json::{Value, json};

use super::{MAX_LOG_LINES, Outcome};
use crate::protocol::{LogsRequest, Response, RunStatus, Stream, StreamOffsets};
use crate::remote::client;
use crate::remote::machine::Machine;

/// One `exec_logs` page: each stream's text from its offset, cut to `max_bytes` of log over both
/// streams and `MAX_LOG_LINES` lines, and where the next page starts per stream.
pub(super) fn logs_page(m: &Machine, req: &LogsRequest, max_bytes: u64) -> Outcome {
    let mut pages: Vec<(Stream, StreamPage)> = Vec::new();
    let mut budget = max_bytes;
    let mut lines = 0usize;
    // Where each stream stops when a cap cuts the page short.
    let mut cut = StreamOffsets::default();
    let end = client::logs(m, req, &mut |r| {
        let Response::Log(line) = r else { return Ok(()) };
        let bytes = line.line.len() as u64 + u64::from(!line.partial);
        if cut.get(line.stream).is_some() || bytes > budget || lines >= MAX_LOG_LINES {
            if cut.get(line.stream).is_none() {
                cut.set(line.stream, line.offset);
            }
            return Ok(());
        }
        budget -= bytes;
        lines += 1;
        if pages.last().is_none_or(|(s, _)| *s != line.stream) {
            let page = StreamPage { offset: line.offset, text: String::new(), lines: 0 };
            pages.push((line.stream, page));
        }
        let (_, page) = pages.last_mut().expect("pushed above");
        page.text.push_str(&line.line);
        if !line.partial {
            page.text.push('\n');
        }
        page.lines += 1;
        Ok(())
    })?;
    let mut next = end.next_offset;
    for &s in req.stream.streams() {
        if let Some(offset) = cut.get(s) {
            next.set(s, offset);
        }
    }
    let more = end.more || cut != StreamOffsets::default();
    let offsets: Vec<String> = req
        .stream
        .streams()
        .iter()
        .filter_map(|&s| next.get(s).map(|o| format!("since_{}={o}", s.as_str())))
        .collect();
    let offsets = offsets.join(", ");
    let hint = match (more, end.status) {
        (true, _) => format!("more output: call exec_logs again with {offsets}"),
        (false, RunStatus::Running) => {
            format!("no more output yet; the job is running: later call exec_logs with {offsets}")
        }
        (false, RunStatus::Finished) => "end of the log; the job has finished".to_string(),
    };
    let bytes = max_bytes - budget;
    let line = format!(
        "{lines} lines ({bytes} bytes) of job {} on {} ({}); {hint}",
        end.exec_id,
        m.name,
        end.state.as_str()
    );
    let mut value = json!({
        "exec_id": end.exec_id,
        "machine": m.name,
        "next_offset": next,
        "size": end.size,
        "more": more,
        "status": end.status,
        "state": end.state,
        "exit_code": end.exit_code,
        "hint": hint,
    });
    for (stream, page) in pages {
        value[stream.as_str()] = json!(page);
    }
    Ok((value, line))
}

/// What one stream gave to a log page: its exact text from `offset`.
#[derive(serde::Serialize)]
struct StreamPage {
    offset: u64,
    text: String,
    lines: usize,
}

/// A log page as the plain text an agent reads: per stream a `[stdout from byte N]` marker and
/// its lines, then one line with the next offsets and what to do next.
pub(super) fn logs_text(page: &Value) -> String {
    let mut text = String::new();
    let mut unfinished = Vec::new();
    for stream in ["stdout", "stderr"] {
        let Some(piece) = page.get(stream) else { continue };
        let body = piece["text"].as_str().unwrap_or_default();
        text.push_str(&format!("[{stream} from byte {}]\n{body}", piece["offset"]));
        if !body.ends_with('\n') {
            text.push('\n');
            unfinished.push(stream);
        }
    }
    let offsets: Vec<String> = ["stdout", "stderr"]
        .iter()
        .filter_map(|s| page["next_offset"][s].as_u64().map(|o| format!("{s}={o}")))
        .collect();
    let mut footer = format!("[next_offset {}; more: {}", offsets.join(" "), page["more"]);
    if !unfinished.is_empty() {
        footer.push_str(&format!("; unfinished last line: {}", unfinished.join(", ")));
    }
    let state = page["state"].as_str().unwrap_or("?");
    match page["exit_code"].as_i64() {
        Some(code) => footer.push_str(&format!("; job {state}, exit {code}")),
        None => footer.push_str(&format!("; job {state}")),
    }
    footer.push_str(&format!("; {}]", page["hint"].as_str().unwrap_or_default()));
    text.push_str(&footer);
    text
}
