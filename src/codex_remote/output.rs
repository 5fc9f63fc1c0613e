//! How `codex-remote` prints. JSON lines are the default and the contract scripts and agents
//! read; `--format text` (env `CODEX_REMOTE_FORMAT`) is for people: tables for `exec list` and
//! `machine ls`, a job's own bytes for `exec run`/`logs`/`watch`, `key: value` for the rest.
//! Progress notes go to stderr, and only when it is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::ValueEnum;
use serde_json::Value;

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line (the default).
    Json,
    /// Tables, raw job output and `key: value` lines.
    Text,
}

/// The format asked for: `None` when neither `--format` nor the env var says (JSON, except
/// that `machine ls` and `exec doctor` print their table on a terminal, as they always did).
/// Set once by `main` before a command runs, as clap sets its global colour choice.
static CHOSEN: OnceLock<Option<Format>> = OnceLock::new();

pub fn choose(format: Option<Format>) {
    let _ = CHOSEN.set(format);
}

/// The format chosen with `--format` or `CODEX_REMOTE_FORMAT`, if any.
pub fn chosen() -> Option<Format> {
    CHOSEN.get().copied().flatten()
}

/// Set by a command whose exit code is a job's (`exec run`, `watch`, `wait --exit-status`).
static OUTLIVE_CLOSED_STDOUT: AtomicBool = AtomicBool::new(false);

/// A closed stdout (`| head -1`) no longer ends the command: it goes on quietly, so its exit
/// code is still the job's.
pub fn outlive_closed_stdout() {
    OUTLIVE_CLOSED_STDOUT.store(true, Ordering::SeqCst);
}

pub fn outlives_closed_stdout() -> bool {
    OUTLIVE_CLOSED_STDOUT.load(Ordering::SeqCst)
}

/// Whether output is for people (`--format text`).
pub fn text() -> bool {
    chosen() == Some(Format::Text)
}

/// Whether a command with a terminal table prints it: `--format text`, or a terminal stdout
/// when no format was chosen and the command's own `--json` was not given.
pub fn table(json_flag: bool) -> bool {
    !json_flag && (text() || (chosen().is_none() && std::io::stdout().is_terminal()))
}

/// Whether a command line that clap refused asked for text (so its usage error is text only).
pub fn text_in_args(args: impl IntoIterator<Item = String>) -> bool {
    let mut args = args.into_iter().take_while(|a| a != "--");
    let mut asked = std::env::var("CODEX_REMOTE_FORMAT").is_ok_and(|v| v == "text");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--format=text" => asked = true,
            "--format" => asked = args.next().as_deref() == Some("text"),
            a if a.starts_with("--format=") => asked = false,
            _ => {}
        }
    }
    asked
}

/// A progress note on stderr (`codex-remote: TEXT`), only when stderr is a terminal: scripts
/// and agents reading a pipe see nothing new.
pub fn note(text: &str) {
    let mut err = std::io::stderr();
    if err.is_terminal() {
        let _ = writeln!(err, "codex-remote: {text}");
    }
}

/// `value` as `key: value` lines: nested objects indented, arrays of objects as `- ` items,
/// nulls and empty arrays left out.
pub fn key_values(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(_) => fields(&mut out, value, 0),
        other => out.push_str(&scalar(other, 0)),
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn fields(out: &mut String, value: &Value, indent: usize) {
    let Value::Object(map) = value else { return };
    let pad = " ".repeat(indent);
    for (key, v) in map {
        match v {
            Value::Null => {}
            Value::Array(items) if items.is_empty() => {}
            Value::Object(_) => {
                out.push_str(&format!("{pad}{key}:\n"));
                fields(out, v, indent + 2);
            }
            Value::Array(items) if items.iter().any(Value::is_object) => {
                out.push_str(&format!("{pad}{key}:\n"));
                for item in items {
                    // The item's fields at indent+4, the first line's indent turned into `- `.
                    let mut block = String::new();
                    fields(&mut block, item, indent + 4);
                    if !item.is_object() {
                        block = format!("{}{}\n", " ".repeat(indent + 4), scalar(item, indent));
                    }
                    block.replace_range(indent + 2..indent + 4, "- ");
                    out.push_str(&block);
                }
            }
            Value::Array(items) => {
                let joined: Vec<String> = items.iter().map(|i| scalar(i, indent)).collect();
                out.push_str(&format!("{pad}{key}: {}\n", joined.join(", ")));
            }
            _ => out.push_str(&format!("{pad}{key}: {}\n", scalar(v, indent))),
        }
    }
}

/// A scalar as text: strings without quotes, their later lines indented under the key.
fn scalar(v: &Value, indent: usize) -> String {
    match v {
        Value::String(s) => s.replace('\n', &format!("\n{}  ", " ".repeat(indent))),
        other => other.to_string(),
    }
}

/// Rows as columns padded to their widest cell; the last column is not padded.
pub fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let fill = widths[i] - cell.chars().count() + 2;
                out.push_str(cell);
                out.push_str(&" ".repeat(fill));
            }
        }
        out.push('\n');
    }
    out
}

/// `text` cut to `max` characters, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// How long ago an RFC 3339 time was, in its largest unit (`42s`, `5m`, `3h`, `2d`).
pub fn age(rfc3339: &str, now: std::time::SystemTime) -> String {
    let Ok(then) = humantime::parse_rfc3339_weak(rfc3339) else { return "-".into() };
    let secs = now.duration_since(then).map_or(0, |d| d.as_secs());
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_read_as_key_value_lines() {
        let v = json!({
            "type": "removed", "exec_id": "x", "error": null, "argv": [], "labels": {"a": "1"},
            "removed": ["p", "q"], "checks": [{"name": "ssh", "ok": true}, {"name": "git"}],
            "stdout": "one\ntwo"
        });
        let text = key_values(&v);
        let want = "type: removed\nexec_id: x\nlabels:\n  a: 1\nremoved: p, q\nchecks:\n  - name: \
                    ssh\n    ok: true\n  - name: git\nstdout: one\n  two\n";
        assert_eq!(text, want);
    }

    #[test]
    fn columns_are_padded_and_cells_truncated() {
        let rows = vec![vec!["ID".into(), "CMD".into()], vec!["abcd".into(), "x".into()]];
        assert_eq!(columns(&rows), "ID    CMD\nabcd  x\n");
        assert_eq!(truncate("python train.py", 8), "python …");
        assert_eq!(truncate("ls", 8), "ls");
    }

    #[test]
    fn only_a_text_format_in_the_arguments_counts() {
        let args = |a: &[&str]| text_in_args(a.iter().map(|s| s.to_string()));
        if std::env::var_os("CODEX_REMOTE_FORMAT").is_none() {
            assert!(args(&["codex-remote", "--format", "text", "exec", "list"]));
            assert!(args(&["codex-remote", "exec", "list", "--format=text"]));
            assert!(!args(&["codex-remote", "--format", "json", "exec"]));
            assert!(!args(&["codex-remote", "exec", "start", "--", "--format", "text"]));
        }
    }
}
