//! `codex-remote mcp` on MCP 2026-07-28 (stateless: `server/discover`, the version in every
//! request's `_meta`) beside 2025-11-25, MCP tasks for `exec_run` and `exec_wait` (polled after
//! a restart of the server, cancelled), flat input schemas, and what MCP and the CLI agree on.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::mcp::RawSession;
use crate::support::{Sshd, TestEnv};

const REVISION: &str = "2026-07-28";
const TASKS: &str = "io.modelcontextprotocol/tasks";

/// The `_meta` every 2026-07-28 request carries; `tasks` declares the tasks extension.
fn meta(tasks: bool) -> Value {
    let mut caps = json!({});
    if tasks {
        caps["extensions"] = json!({ TASKS: {} });
    }
    json!({
        "io.modelcontextprotocol/protocolVersion": REVISION,
        "io.modelcontextprotocol/clientCapabilities": caps,
        "io.modelcontextprotocol/clientInfo": {"name": "raw-2026", "version": "1"},
    })
}

/// A 2026-07-28 session of raw lines: each request carries its `_meta`.
struct Current {
    raw: RawSession,
    next: i64,
    tasks: bool,
}

impl Current {
    fn start(env: &TestEnv, tasks: bool) -> Self {
        Current { raw: RawSession::start(env), next: 1, tasks }
    }

    /// Sends a request and returns its answer (notifications before it are skipped).
    fn ask(&mut self, method: &str, mut params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        params["_meta"] = meta(self.tasks);
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.raw.send(line.to_string().as_bytes());
        loop {
            let answer = self.raw.answer();
            if answer["id"] == json!(id) {
                return answer;
            }
        }
    }

    fn result(&mut self, method: &str, params: Value) -> Value {
        let answer = self.ask(method, params);
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// A tool call that must succeed: its structured answer.
    fn tool(&mut self, name: &str, arguments: Value) -> Value {
        let result = self.result("tools/call", json!({"name": name, "arguments": arguments}));
        assert_eq!(result["isError"], false, "{name}: {result}");
        result["structuredContent"].clone()
    }
}

/// Polls `tasks/get` until the task's status is `want`; returns the last answer.
fn poll_task(s: &mut Current, task_id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = s.result("tasks/get", json!({ "taskId": task_id }));
        assert_eq!(got["taskId"], task_id, "{got}");
        if got["status"] == want {
            return got;
        }
        assert!(Instant::now() < deadline, "task {task_id} never {want}: {got}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The keywords Codex flattens to strings, anywhere in a schema (a property may be named so).
fn not_flat(schema: &Value, path: &str) -> Option<String> {
    match schema {
        Value::Object(o) => o.iter().find_map(|(k, v)| {
            let keyword = ["$ref", "$defs", "definitions", "anyOf", "oneOf"].contains(&k.as_str());
            if keyword && !path.ends_with("/properties") {
                Some(format!("{path}/{k}"))
            } else {
                not_flat(v, &format!("{path}/{k}"))
            }
        }),
        Value::Array(a) => {
            a.iter().enumerate().find_map(|(i, v)| not_flat(v, &format!("{path}/{i}")))
        }
        _ => None,
    }
}

/// Every tool: a flat input schema and a title.
fn check_tool_list(tools: &Value) {
    let tools = tools.as_array().expect("a tool list");
    assert!(tools.len() >= 12, "{tools:?}");
    for tool in tools {
        let name = &tool["name"];
        assert_eq!(not_flat(&tool["inputSchema"], ""), None, "{name}: {}", tool["inputSchema"]);
        assert!(tool["annotations"]["title"].as_str().is_some_and(|t| !t.is_empty()), "{name}");
    }
    let start = tools.iter().find(|t| t["name"] == "exec_start").unwrap();
    assert_eq!(start["inputSchema"]["properties"]["resources"]["type"], "object");
    let list = tools.iter().find(|t| t["name"] == "exec_list").unwrap();
    let states = &list["inputSchema"]["properties"]["state"]["enum"];
    assert!(states.as_array().unwrap().contains(&json!("finished")), "{states}");
    let logs = tools.iter().find(|t| t["name"] == "exec_logs").unwrap();
    assert_eq!(
        logs["inputSchema"]["properties"]["stream"]["enum"],
        json!(["stdout", "stderr", "both"])
    );
}

/// Discover, the tools on 2026-07-28, ids as the CLI takes them, and the lines that get errors.
fn current_revision(env: &TestEnv, machine: &str) {
    let mut s = Current::start(env, false);
    let discover = s.result("server/discover", json!({}));
    let versions = discover["supportedVersions"].to_string();
    assert!(versions.contains(REVISION) && versions.contains("2025-11-25"), "{discover}");
    assert!(discover["capabilities"]["tools"].is_object(), "{discover}");
    check_tool_list(&s.result("tools/list", json!({}))["tools"]);

    let m = json!(machine);
    let machines = s.result("tools/call", json!({"name": "machines", "arguments": {"machine": m}}));
    assert!(
        machines["content"][0]["text"].as_str().unwrap().starts_with("1 machine: "),
        "{machines}"
    );
    let started = s.tool("exec_start", json!({"machine": m, "cmd": "echo hello-2026"}));
    let id = started["exec_id"].as_str().unwrap().to_string();
    let done = s.tool("exec_wait", json!({"machine": m, "exec_id": &id[..13]}));
    assert_eq!((&done["exec_id"], &done["state"]), (&json!(id), &json!("succeeded")), "{done}");
    assert_eq!(s.tool("exec_status", json!({"machine": m, "exec_id": "last"}))["exec_id"], id);
    let logs = s.tool("exec_logs", json!({"machine": m, "exec_id": &id[..13]}));
    assert_eq!(logs["stdout"]["text"], "hello-2026\n", "{logs}");
    let finished = s.tool("exec_list", json!({"machine": m, "state": "finished"}));
    assert!(finished["jobs"].as_array().unwrap().iter().any(|j| j["exec_id"] == id));
    let running = s.tool("exec_list", json!({"machine": m, "state": "running"}));
    assert!(!running["jobs"].as_array().unwrap().iter().any(|j| j["exec_id"] == id));
    let run = s.tool("exec_run", json!({"machine": m, "cmd": "echo ran", "timeout_seconds": 30}));
    assert_eq!(run["state"], "succeeded", "{run}");
    let cancel = s.tool("exec_cancel", json!({"machine": m, "exec_id": "last"}));
    assert_eq!(cancel["state"], "succeeded", "{cancel}");

    // An unknown job's hint names MCP's tools and arguments, not the CLI's flags.
    let missing = s.result(
        "tools/call",
        json!({"name": "exec_status", "arguments":
        {"machine": m, "exec_id": "01a20e39-2841-766b-a16c-ac422b0e3096"}}),
    );
    assert_eq!(missing["isError"], true, "{missing}");
    let hint = missing["structuredContent"]["hint"].as_str().unwrap();
    assert!(!hint.contains("--machine") && !hint.contains("codex-remote exec"), "{hint}");

    // Arguments that are not an object: invalid params, with the request's id.
    s.raw.send(br#"{"jsonrpc":"2.0","id":"a1","method":"tools/call","params":{"name":"exec_list","arguments":"x"}}"#);
    assert_eq!(s.raw.error_code(), (json!("a1"), -32602));
    // A lone surrogate: answered, with the id when it can be read.
    s.raw.send(br#"{"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":"\ud800"}}"#);
    assert_eq!(s.raw.error_code(), (json!(77), -32700));
    s.raw.send(br#"{"jsonrpc":"2.0","id":"\udc00","method":"tools/list"}"#);
    assert_eq!(s.raw.error_code(), (Value::Null, -32700));
    // A revision the server does not speak: the version-mismatch error, with what it supports.
    let mut params = json!({"_meta": meta(false)});
    params["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let line = json!({"jsonrpc": "2.0", "id": 90, "method": "tools/list", "params": params});
    s.raw.send(line.to_string().as_bytes());
    let answer = s.raw.answer();
    assert_eq!(answer["id"], 90, "{answer}");
    assert!(answer["error"]["data"]["supported"].to_string().contains(REVISION), "{answer}");
    // Still serving.
    assert_eq!(s.tool("exec_status", json!({"machine": m, "exec_id": id}))["exec_id"], id);
}

#[test]
fn mcp_2026_07_28_on_the_local_machine() {
    let env = TestEnv::new();
    current_revision(&env, "local");
}

#[test]
fn mcp_2026_07_28_over_ssh() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    env.set_config(&format!("machines:\n{}", sshd.machine_yaml("gpu", &env.path("remote"), "")));
    current_revision(&env, "gpu");
    tasks(&env, "gpu");
}

#[test]
fn mcp_tasks_on_the_local_machine() {
    let env = TestEnv::new();
    tasks(&env, "local");
}

/// A task run to its end, one polled after the server was killed and started again, one
/// cancelled, and a 2025-11-25 session's task for `exec_wait`.
fn tasks(env: &TestEnv, machine: &str) {
    let m = json!(machine);
    let mut s = Current::start(env, true);
    let created = s.result(
        "tools/call",
        json!({"name": "exec_run", "arguments":
        {"machine": m, "cmd": "echo one; echo two-end"}}),
    );
    assert_eq!(created["resultType"], "task", "{created}");
    let task_id = created["taskId"].as_str().unwrap().to_string();
    assert!(task_id.starts_with(&format!("{machine}/")), "{task_id}");
    let done = poll_task(&mut s, &task_id, "completed");
    let result = &done["result"]["structuredContent"];
    assert_eq!(result["state"], "succeeded", "{done}");
    assert_eq!(result["tail"], "one\ntwo-end\n", "{done}");

    // A long job: its task outlives the server.
    let created = s.result(
        "tools/call",
        json!({"name": "exec_run", "arguments":
        {"machine": m, "cmd": "echo first-line; echo last-line; sleep 60"}}),
    );
    let long = created["taskId"].as_str().unwrap().to_string();
    s.raw.child.kill().unwrap();
    s.raw.child.wait().unwrap();
    let mut s = Current::start(env, true);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = poll_task(&mut s, &long, "working");
        if got["statusMessage"].as_str().is_some_and(|m| m.ends_with("last-line")) {
            break;
        }
        assert!(Instant::now() < deadline, "{got}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // tasks/get stays cheap: one session, no new connection per call.
    let started = Instant::now();
    for _ in 0..10 {
        s.result("tasks/get", json!({ "taskId": long }));
    }
    let per_call = started.elapsed() / 10;
    eprintln!("tasks/get on {machine}: {per_call:?} per call");
    assert!(per_call < Duration::from_millis(500), "{per_call:?}");
    s.result("tasks/cancel", json!({ "taskId": long }));
    poll_task(&mut s, &long, "cancelled");
    // A task id that names no job.
    let unknown = s.ask(
        "tasks/get",
        json!({"taskId": format!("{machine}/01a20e39-2841-766b-a16c-ac422b0e3096")}),
    );
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");

    // Without the tasks extension declared, exec_run answers in the call.
    let mut plain = Current::start(env, false);
    let run = plain.tool("exec_run", json!({"machine": m, "cmd": "echo plain"}));
    assert_eq!(run["state"], "succeeded", "{run}");

    // 2025-11-25: initialize declares the extension; exec_wait answers with a task.
    let mut old = RawSession::start(env);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {"extensions": { TASKS: {} }},
        "clientInfo": {"name": "raw-2025", "version": "1"}}});
    old.send(init.to_string().as_bytes());
    let init = old.answer();
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    old.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let id = run["exec_id"].as_str().unwrap();
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params":
        {"name": "exec_wait", "arguments": {"machine": m, "exec_id": id}}});
    old.send(call.to_string().as_bytes());
    let created = old.answer();
    let task_id = created["result"]["taskId"].as_str().unwrap_or_else(|| panic!("{created}"));
    let get =
        json!({"jsonrpc": "2.0", "id": 3, "method": "tasks/get", "params": {"taskId": task_id}});
    old.send(get.to_string().as_bytes());
    let got = old.answer();
    assert_eq!(got["result"]["status"], "completed", "{got}");
    assert_eq!(got["result"]["result"]["structuredContent"]["tail"], "plain\n", "{got}");
}

/// The official Python MCP SDK 2.x (a 2026-07-28 client: discover, then per-request `_meta`)
/// against the server: every exec and file tool, the schema walk, a task run to its end, one
/// polled after the server was stopped and started again, one cancelled (the job ends
/// `cancelled`), and the job-end notification through the SDK's `Client.listen()`. Its venv is made by
/// scripts/mcp-python-client.sh (CI installs it in .ci/run); without it the test is skipped
/// outside CI and fails under `CI=true`.
#[test]
fn the_python_sdk_speaks_2026_07_28_with_the_server() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let made = std::process::Command::new(root.join("scripts/mcp-python-client.sh")).output();
    let python = match made {
        Ok(out) if out.status.success() => root.join(String::from_utf8_lossy(&out.stdout).trim()),
        other => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "no Python MCP SDK: {other:?}");
            eprintln!("skipped: no Python MCP SDK ({other:?})");
            return;
        }
    };
    let env = TestEnv::new();
    let work = env.path("py-work");
    std::fs::create_dir_all(&work).unwrap();
    let script = root.join("scripts/mcp-python-client.py");
    let args =
        [script.to_str().unwrap(), crate::support::CODEX_REMOTE, "local", work.to_str().unwrap()];
    let out = env.command(&python, &args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!((&seen["protocol_version"], &seen["ok"]), (&json!(REVISION), &json!(true)));
    assert!(seen["tools"].as_array().unwrap().contains(&json!("exec_run")), "{seen}");
    assert_eq!(seen["task_run_to_end"], true, "{seen}");
    assert_eq!(seen["task_after_restart"], "working", "{seen}");
    assert_eq!(seen["cancelled_state"], "cancelled", "{seen}");
    assert!(seen["notified_after_s"].as_f64().is_some_and(|s| s < 30.0), "{seen}");
}
