//! The original Go tool's JSON field names, printed beside ours where they differ (a superset:
//! old scripts read theirs, new ones ours). The table is in the README, "Coming from the Go
//! tool". Only the JSON output carries them; `--format text` prints ours.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{emit, emit_on, output};
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::{DoctorReport, OnMachine};
use crate::remote::machine::{Machine, Route};

/// [`emit_on`] with `add` putting the original's fields into the object.
pub fn emit_on_with(
    machine: &Machine,
    value: &impl Serialize,
    add: impl FnOnce(&mut Map<String, Value>),
) -> Result<()> {
    if output::text() {
        return emit_on(machine, value);
    }
    let mut v = serde_json::to_value(OnMachine { value, machine: &machine.name })
        .map_err(|e| Error::new(ErrorCode::Internal, format!("printing: {e}")))?;
    if let Some(object) = v.as_object_mut() {
        add(object);
    }
    emit(&v)
}

/// `exec start`: `base_url`, the daemon's URL for a machine reached over HTTP (`null` over
/// ssh, where there is no tunnel to name).
pub fn base_url(machine: &Machine) -> impl FnOnce(&mut Map<String, Value>) {
    let url = match &machine.route {
        Route::Http(target) => Value::String(format!("http://{}", target.addr)),
        _ => Value::Null,
    };
    move |o| {
        o.insert("base_url".into(), url);
    }
}

/// `exec cancel`: `canceled` (the cancel was made; the status says how the job ended).
pub fn canceled(o: &mut Map<String, Value>) {
    o.insert("canceled".into(), Value::Bool(true));
}

/// `file write`: `ok`, `bytes_written`.
pub fn file_written(o: &mut Map<String, Value>) {
    let size = o.get("size").cloned().unwrap_or(Value::Null);
    o.insert("ok".into(), Value::Bool(true));
    o.insert("bytes_written".into(), size);
}

/// `file read`: `ok`, `content` (the base64 bytes, as `data_b64`).
pub fn file_content(o: &mut Map<String, Value>) {
    let data = o.get("data_b64").cloned().unwrap_or(Value::Null);
    o.insert("ok".into(), Value::Bool(true));
    o.insert("content".into(), data);
}

/// `sync push|pull`: `ok` (nothing was left changed), `mode` (`push` or `pull`), and the
/// `delete` and `exclude` it was asked for.
pub fn sync(delete: bool, exclude: &[String]) -> impl FnOnce(&mut Map<String, Value>) + use<> {
    let exclude = json!(exclude);
    move |o| {
        let ok = o.get("changed").and_then(Value::as_array).is_none_or(Vec::is_empty);
        let mode = o.get("direction").cloned().unwrap_or(Value::Null);
        o.insert("ok".into(), Value::Bool(ok));
        o.insert("mode".into(), mode);
        o.insert("delete".into(), Value::Bool(delete));
        o.insert("exclude".into(), exclude);
    }
}

/// `exec doctor`: `overall_ok`, `hints` (those of the failed checks) and the check
/// `codexd_health` (the original's name of the codexd check), appended to ours.
pub fn doctor(report: &DoctorReport) -> impl FnOnce(&mut Map<String, Value>) {
    let hints: Vec<String> =
        report.checks.iter().filter(|c| !c.ok).filter_map(|c| c.hint.clone()).collect();
    let codexd = report.checks.iter().find(|c| c.name == "codexd");
    let (ok, detail) = match codexd {
        Some(c) => (c.ok, c.detail.clone()),
        None => (false, "codexd was not reached".to_string()),
    };
    let mut health =
        json!({"name": "codexd_health", "ok": ok, "required": false, "detail": detail});
    if !ok {
        // Its own hint, else the one of the check that failed first (the transport's).
        let hint = codexd
            .and_then(|c| c.hint.clone())
            .or_else(|| report.checks.iter().find(|c| !c.ok).and_then(|c| c.hint.clone()))
            .unwrap_or_else(|| {
                "codex-remote machine check says why; machine up installs codexd".into()
            });
        health["hint"] = json!(hint);
    }
    let overall = report.ok;
    move |o| {
        o.insert("overall_ok".into(), Value::Bool(overall));
        o.insert("hints".into(), json!(hints));
        if let Some(Value::Array(checks)) = o.get_mut("checks") {
            checks.push(health);
        }
    }
}
