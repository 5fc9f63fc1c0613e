//! The `machines` tool: each configured machine checked with a `hello` call, in parallel.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::Outcome;
use super::inputs::MachinesInput;
use crate::protocol::PROTOCOL_VERSION;
use crate::remote::client;
use crate::remote::config::RemoteConfig;
use crate::remote::machine::{Machine, Route};
use crate::remote::mux::SessionPool;

/// The `machines` tool: the config's machines (and `local`), each checked in parallel.
pub(super) fn machines(
    config: Option<PathBuf>,
    input: MachinesInput,
    sessions: Arc<SessionPool>,
) -> Outcome {
    let config = RemoteConfig::load(config.as_deref())?;
    let default = config.machine(None).map(|m| m.name).ok();
    let names: Vec<String> = match &input.machine {
        Some(name) => vec![config.machine(Some(name))?.name],
        None => config.machine_names(),
    };
    let check = input.check.unwrap_or(true);
    let entries: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .map(|name| {
                let config = &config;
                let (default, sessions) = (default.as_deref(), sessions.clone());
                let is_default = default == Some(name);
                scope.spawn(move || machine_entry(config, name, is_default, check, sessions))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(Value::Null)).collect()
    });
    let summary: Vec<String> = entries
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap_or("?");
            match (&e["ok"], &e["error"]["code"]) {
                (Value::Bool(true), _) => format!(
                    "{name} ok ({} ms, codexd {}{})",
                    e["latency_ms"],
                    e["codexd_version"].as_str().unwrap_or("?"),
                    gpu_summary(&e["gpus"]["gpus"])
                ),
                (_, Value::String(code)) => format!("{name} {code}"),
                _ => format!("{name} not checked"),
            }
        })
        .collect();
    let plural = if entries.len() == 1 { "" } else { "s" };
    let line = format!("{} machine{plural}: {}", entries.len(), summary.join("; "));
    Ok((json!({ "machines": entries, "default_machine": default }), line))
}

/// ", 2 GPUs, 1 free" for a machine that reported GPUs.
fn gpu_summary(gpus: &Value) -> String {
    match gpus.as_array() {
        Some(gpus) if !gpus.is_empty() => {
            let free = gpus.iter().filter(|g| g["free"] == true).count();
            format!(", {} GPUs, {free} free", gpus.len())
        }
        _ => String::new(),
    }
}

fn machine_entry(
    config: &RemoteConfig,
    name: &str,
    is_default: bool,
    check: bool,
    sessions: Arc<SessionPool>,
) -> Value {
    let mut entry = json!({ "name": name, "default": is_default });
    let machine = config.machine(Some(name)).and_then(|m| Machine::from_config(&m));
    let machine = machine.map(|m| m.with_sessions(sessions));
    let m = match machine {
        Ok(m) => m,
        Err(e) => {
            entry["ok"] = false.into();
            entry["error"] = json!(crate::protocol::ErrorBody::from(e));
            return entry;
        }
    };
    match &m.route {
        Route::Local { .. } => entry["route"] = "local".into(),
        Route::Ssh(target) => {
            entry["route"] = "ssh".into();
            entry["ssh"] = target.destination.clone().into();
        }
        Route::Http(target) => {
            entry["route"] = "http".into();
            entry["addr"] = target.addr.clone().into();
        }
    }
    if !check {
        return entry;
    }
    let started = Instant::now();
    match client::hello(&m) {
        Ok(hello) => {
            entry["ok"] = true.into();
            entry["latency_ms"] = (started.elapsed().as_millis() as u64).into();
            entry["codexd_version"] = hello.version.into();
            entry["protocol"] = hello.protocol.into();
            entry["compatible"] = (hello.protocol == PROTOCOL_VERSION).into();
            entry["host"] = hello.host.into();
            entry["user"] = hello.user.into();
            entry["data_dir"] = hello.data_dir.into();
            if let Some(gpus) = crate::remote::provision::gpu_report(&m, &hello.capabilities) {
                entry["gpus"] = json!(gpus);
            }
        }
        Err(e) => {
            entry["ok"] = false.into();
            entry["error"] = json!(crate::protocol::ErrorBody::from(e));
        }
    }
    entry
}
