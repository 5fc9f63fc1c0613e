//! `codex-remote mcp` as an MCP client sees it: the real binary as a child process, driven by
//! rmcp's client over stdio, on the `local` machine and on a machine behind a real `sshd`; and
//! raw JSON-RPC lines that are wrong in every way, each answered while the server keeps serving.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceError, ServiceExt};
use serde_json::{Value, json};

use crate::support::{Sshd, TestEnv};

/// The longest any one MCP exchange may take before the test fails.
const CALL_DEADLINE: Duration = Duration::from_secs(60);

type Client = RunningService<RoleClient, ()>;

/// Each tool's `outputSchema`, as listed by the server: every answer is checked against it.
fn output_schemas() -> &'static Mutex<HashMap<String, Value>> {
    static SCHEMAS: OnceLock<Mutex<HashMap<String, Value>>> = OnceLock::new();
    SCHEMAS.get_or_init(Default::default)
}

/// Starts `codex-remote mcp` and initializes a client (recording each tool's `outputSchema`);
/// returns it and the server's pid.
pub async fn connect(env: &TestEnv) -> (Client, i32) {
    connect_with(env, &[]).await
}

/// [`connect`] with `vars` set in the server's environment.
pub async fn connect_with(env: &TestEnv, vars: &[(&str, &str)]) -> (Client, i32) {
    let mut cmd = env.remote(&["mcp"]);
    cmd.envs(vars.iter().copied());
    let cmd = tokio::process::Command::from(cmd);
    let transport = TokioChildProcess::new(cmd).expect("spawn codex-remote mcp");
    let pid = transport.id().expect("the server's pid") as i32;
    let client = tokio::time::timeout(CALL_DEADLINE, ().serve(transport))
        .await
        .expect("initialize in time")
        .expect("initialize");
    let tools = client.list_all_tools().await.unwrap();
    let mut schemas = output_schemas().lock().unwrap();
    for tool in tools {
        let schema =
            tool.output_schema.unwrap_or_else(|| panic!("{} has no outputSchema", tool.name));
        schemas.insert(tool.name.to_string(), Value::Object(schema.as_ref().clone()));
    }
    drop(schemas);
    (client, pid)
}

/// Whether `pid` has a live child (the ssh or `codexd rpc` of a call in flight).
fn has_live_child(pid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else { return false };
    dir.flatten().any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let mut rest = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace();
        let (state, ppid) = (rest.next(), rest.next().and_then(|p| p.parse::<i32>().ok()));
        ppid == Some(pid) && !matches!(state, Some("Z" | "X"))
    })
}

/// Checks `value` against the parts of JSON Schema the output schemas use (type, const, enum,
/// properties, required, items, additionalProperties, anyOf).
fn conforms(value: &Value, schema: &Value) -> Result<(), String> {
    let fail = |why: String| Err(format!("{why}: {value}"));
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let is = |t: &str| match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        };
        if !types.iter().any(|t| is(t)) {
            return fail(format!("not of type {types:?}"));
        }
    }
    if schema.get("const").is_some_and(|c| c != value) {
        return fail(format!("not {}", schema["const"]));
    }
    if let Some(Value::Array(choices)) = schema.get("enum")
        && !choices.contains(value)
    {
        return fail(format!("not one of {choices:?}"));
    }
    if let Some(Value::Array(choices)) = schema.get("anyOf") {
        let errors: Vec<String> = choices.iter().filter_map(|c| conforms(value, c).err()).collect();
        if errors.len() == choices.len() {
            return fail(format!("matches no anyOf choice: {errors:?}"));
        }
    }
    if let Value::Object(object) = value {
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            if !object.contains_key(name.as_str().unwrap()) {
                return fail(format!("missing {name}"));
            }
        }
        for (name, field) in object {
            let sub = schema.get("properties").and_then(|p| p.get(name));
            if let Some(sub) = sub.or(schema.get("additionalProperties")) {
                conforms(field, sub).map_err(|e| format!("{name}: {e}"))?;
            }
        }
    }
    if let (Value::Array(items), Some(sub)) = (value, schema.get("items")) {
        for item in items {
            conforms(item, sub)?;
        }
    }
    Ok(())
}

/// Calls `tool`; a protocol-level error comes back as `Err`.
async fn try_call(
    client: &Client,
    tool: &str,
    args: Value,
) -> Result<CallToolResult, ServiceError> {
    let Value::Object(args) = args else { panic!("arguments are an object") };
    let params = CallToolRequestParams::new(tool.to_string()).with_arguments(args);
    tokio::time::timeout(CALL_DEADLINE, client.call_tool(params))
        .await
        .unwrap_or_else(|_| panic!("{tool} did not answer in time"))
}

/// Calls `tool`, expecting a successful answer: returns its structured JSON.
pub async fn call(client: &Client, tool: &str, args: Value) -> Value {
    let result = try_call(client, tool, args.clone()).await.expect("no protocol error");
    let value = check_shape(tool, &result);
    assert_eq!(result.is_error, Some(false), "{tool} {args}: {value}");
    value
}

/// Calls `tool`, expecting a tool error: returns its structured JSON (with the CLI's `code`).
pub async fn call_err(client: &Client, tool: &str, args: Value, code: &str) -> Value {
    let result = try_call(client, tool, args.clone()).await.expect("no protocol error");
    let value = check_shape(tool, &result);
    assert_eq!(result.is_error, Some(true), "{tool} {args}: {value}");
    assert_eq!(value["type"], "error");
    assert_eq!(value["code"], code, "{tool} {args}: {value}");
    assert!(!value["message"].as_str().unwrap_or("").is_empty());
    value
}

/// Every answer: structured JSON that matches the tool's `outputSchema`, a short first text
/// line, and the same JSON as text; a page of `exec_logs` is plain text instead.
fn check_shape(tool: &str, result: &CallToolResult) -> Value {
    let value = result.structured_content.clone().expect("structured content");
    let schema = output_schemas().lock().unwrap()[tool].clone();
    conforms(&value, &schema).unwrap_or_else(|e| panic!("{tool} answer against its schema: {e}"));
    let texts: Vec<&str> =
        result.content.iter().map(|c| c.as_text().expect("text content").text.as_str()).collect();
    if tool == "exec_logs" && result.is_error != Some(true) {
        assert_eq!(texts.len(), 1, "{texts:?}");
        check_logs_text(texts[0], &value);
        return value;
    }
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(!texts[0].contains('\n') && !texts[0].is_empty() && texts[0].len() < 400, "{texts:?}");
    assert_eq!(serde_json::from_str::<Value>(texts[1]).unwrap(), value);
    value
}

/// The plain text of an `exec_logs` page: per stream its marker and exact text, then one footer
/// line with the next offsets and the hint.
fn check_logs_text(text: &str, page: &Value) {
    let mut rest = text;
    for stream in ["stdout", "stderr"] {
        let Some(piece) = page.get(stream) else { continue };
        let marker = format!("[{stream} from byte {}]\n", piece["offset"]);
        rest = rest.strip_prefix(marker.as_str()).unwrap_or_else(|| panic!("{marker}: {text}"));
        let body = piece["text"].as_str().unwrap();
        rest = rest.strip_prefix(body).unwrap_or_else(|| panic!("{stream} text: {text}"));
        if !body.ends_with('\n') {
            rest = rest.strip_prefix('\n').unwrap();
        }
    }
    assert!(rest.starts_with("[next_offset ") && rest.ends_with(']'), "{rest}");
    assert!(!rest.contains('\n'), "one footer line: {rest}");
    for stream in ["stdout", "stderr"] {
        if let Some(offset) = page["next_offset"][stream].as_u64() {
            assert!(rest.contains(&format!("{stream}={offset}")), "{rest}");
        }
    }
    assert!(rest.contains(page["hint"].as_str().unwrap()), "{rest}");
}

fn protocol_error_code(e: ServiceError) -> i32 {
    match e {
        ServiceError::McpError(data) => data.code.0,
        other => panic!("a protocol error expected, got {other}"),
    }
}

/// The whole tool set against `machine`: start (and replay), wait, page logs, list, cancel.
async fn exercise(env: &TestEnv, machine: &str) {
    let (client, server_pid) = connect(env).await;
    let info = client.peer_info().expect("server info");
    assert_eq!(info.server_info.as_ref().unwrap().name, "codex-remote");
    assert!(info.instructions.as_deref().unwrap_or("").contains("exec_wait"));

    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "exec_cancel",
            "exec_list",
            "exec_logs",
            "exec_run",
            "exec_start",
            "exec_status",
            "exec_wait",
            "file_read",
            "file_write",
            "machines",
            "sync_pull",
            "sync_push"
        ]
    );
    let logs_tool = tools.iter().find(|t| t.name == "exec_logs").unwrap();
    let props = logs_tool.input_schema["properties"].as_object().unwrap();
    assert!(props["since_stdout"]["description"].as_str().unwrap().contains("next_offset"));
    // Optional arguments have plain types: a client converting `key=value` by type can.
    assert_eq!(props["since_stdout"]["type"], "integer");
    let description = logs_tool.description.as_deref().unwrap();
    assert!(description.contains("2000 lines") && description.contains("1 MiB"), "{description}");
    for tool in &tools {
        let schema = Value::Object(tool.input_schema.as_ref().clone());
        assert!(!schema.to_string().contains("\"null\""), "{}: {schema}", tool.name);
        let out = tool.output_schema.as_ref().unwrap_or_else(|| panic!("{}", tool.name));
        assert_eq!(out["type"], "object", "{}", tool.name);
        let hints = tool.annotations.as_ref().unwrap_or_else(|| panic!("{}", tool.name));
        assert_eq!(hints.open_world_hint, Some(true), "{}", tool.name);
    }
    let hints = |name: &str| tools.iter().find(|t| t.name == name).unwrap().annotations.clone();
    let start = hints("exec_start").unwrap();
    assert_eq!(
        (start.read_only_hint, start.destructive_hint, start.idempotent_hint),
        (Some(false), Some(true), Some(false))
    );
    let cancel = hints("exec_cancel").unwrap();
    assert_eq!((cancel.destructive_hint, cancel.idempotent_hint), (Some(true), Some(true)));
    for name in ["machines", "exec_status", "exec_logs", "exec_wait", "exec_list"] {
        assert_eq!(hints(name).unwrap().read_only_hint, Some(true), "{name}");
    }

    let machines = call(&client, "machines", json!({})).await;
    let entry = machines["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == machine)
        .unwrap_or_else(|| panic!("{machine} not in {machines}"))
        .clone();
    assert_eq!(entry["ok"], true, "{entry}");
    assert_eq!(entry["codexd_version"], env!("CARGO_PKG_VERSION"));
    assert!(entry["latency_ms"].as_u64().is_some(), "{entry}");

    // Start with an idempotency key; the same start again is a replay, not a second job.
    let script = "for i in $(seq 1 300); do echo \"line-$i of the log\"; done; echo oops >&2";
    let args = json!({"machine": machine, "cmd": script, "idempotency_key": "mcp-test-1"});
    let started = call(&client, "exec_start", args.clone()).await;
    assert_eq!(started["status"], "running", "{started}");
    assert_eq!(started["machine"], machine);
    let id = started["exec_id"].as_str().unwrap().to_string();
    let again = call(&client, "exec_start", args).await;
    assert_eq!((again["exec_id"].as_str(), &again["replayed"]), (Some(id.as_str()), &json!(true)));
    // The same key for another request is refused, naming the first job.
    let other =
        json!({"machine": machine, "cmd": "echo DIFFERENT", "idempotency_key": "mcp-test-1"});
    let conflict = call_err(&client, "exec_start", other, "idempotency_conflict").await;
    assert!(conflict["message"].as_str().unwrap().contains(&id), "{conflict}");

    let done = call(&client, "exec_wait", json!({"machine": machine, "exec_id": id})).await;
    assert_eq!((&done["status"], &done["state"]), (&json!("finished"), &json!("succeeded")));
    assert_eq!(done["exit_code"], 0);

    // Page stdout 100 bytes at a time: the pages add up to the log, byte for byte.
    let mut text = String::new();
    let mut since = 0u64;
    let mut pages = 0;
    loop {
        let args = json!({"machine": machine, "exec_id": id, "stream": "stdout",
                          "since_stdout": since, "max_bytes": 100});
        let page = call(&client, "exec_logs", args).await;
        pages += 1;
        assert!(page.get("stderr").is_none(), "{page}");
        assert_eq!(page["stdout"]["offset"].as_u64(), Some(since), "{page}");
        let piece = page["stdout"]["text"].as_str().unwrap();
        text.push_str(piece);
        let page_bytes = piece.len() as u64;
        assert!(page_bytes <= 100, "a page holds at most max_bytes: {page}");
        let next = page["next_offset"]["stdout"].as_u64().unwrap();
        assert_eq!(next, since + page_bytes, "{page}");
        since = next;
        if page["more"] == false {
            assert_eq!(page["state"], "succeeded");
            break;
        }
        assert!(page["hint"].as_str().unwrap().contains(&format!("since_stdout={next}")));
        assert!(pages < 1000, "paging does not end");
    }
    let expected: String = (1..=300).map(|i| format!("line-{i} of the log\n")).collect();
    assert_eq!(text, expected);
    assert!(pages > 50, "{pages} pages");

    // Both streams by default, from the beginning, within the default budget.
    let both = call(&client, "exec_logs", json!({"machine": machine, "exec_id": id})).await;
    assert_eq!(both["stderr"], json!({"offset": 0, "text": "oops\n", "lines": 1}), "{both}");
    assert_eq!(both["stdout"]["text"], expected.as_str());
    assert_eq!(both["next_offset"]["stderr"], 5);
    assert_eq!(both["more"], false);
    // `max_bytes` bounds both streams together: stdout fills it, stderr waits for the next page.
    let args = json!({"machine": machine, "exec_id": id, "max_bytes": 100});
    let small = call(&client, "exec_logs", args).await;
    let stdout_bytes = small["stdout"]["text"].as_str().unwrap().len();
    assert!(stdout_bytes <= 100 && small.get("stderr").is_none(), "{small}");
    assert_eq!((&small["more"], &small["next_offset"]["stderr"]), (&json!(true), &json!(0)));
    let tail = json!({"machine": machine, "exec_id": id, "stream": "stdout", "tail_lines": 2});
    let tail = call(&client, "exec_logs", tail).await;
    assert_eq!(tail["stdout"]["text"], "line-299 of the log\nline-300 of the log\n", "{tail}");

    // A long job: wait times out with a hint to call again; then cancel it.
    let long =
        call(&client, "exec_start", json!({"machine": machine, "argv": ["sleep", "60"]})).await;
    let long_id = long["exec_id"].as_str().unwrap().to_string();
    // A retry over a transport must not start it twice; `local` answers in process, no retry.
    match machine {
        "local" => assert!(long.get("idempotency_key").is_none_or(Value::is_null), "{long}"),
        // MCP names the start before its first try, so its one retry cannot start it twice.
        _ => assert!(long["idempotency_key"].as_str().unwrap().starts_with("mcp-"), "{long}"),
    }
    // A blocked exec_wait holds no other call up: a list sent after it is answered first.
    let args = json!({"machine": machine, "exec_id": long_id, "timeout_seconds": 2});
    let started_at = Instant::now();
    let (waited, listed_after) = tokio::join!(
        async {
            let waited = call(&client, "exec_wait", args).await;
            (waited, started_at.elapsed())
        },
        async {
            // Once the wait is in flight (the server runs its transport), ask for the list.
            while !has_live_child(server_pid) {
                assert!(started_at.elapsed() < CALL_DEADLINE, "the wait never reached a transport");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            call(&client, "exec_list", json!({"machine": machine})).await;
            started_at.elapsed()
        }
    );
    let (waited, waited_after) = waited;
    assert!(listed_after < waited_after, "list {listed_after:?}, wait {waited_after:?}");
    assert!(waited_after >= Duration::from_secs(2), "{waited_after:?}");
    assert_eq!((&waited["status"], &waited["timed_out"]), (&json!("running"), &json!(true)));
    assert!(waited["hint"].as_str().unwrap().contains("exec_wait again"), "{waited}");
    let list = call(&client, "exec_list", json!({"machine": machine, "state": "running"})).await;
    assert_eq!(list["jobs"][0]["exec_id"], long_id.as_str(), "{list}");
    let args = json!({"machine": machine, "exec_id": long_id, "grace_seconds": 1});
    let cancelled = call(&client, "exec_cancel", args).await;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let status =
        call(&client, "exec_status", json!({"machine": machine, "exec_id": long_id})).await;
    assert_eq!((&status["status"], &status["state"]), (&json!("finished"), &json!("cancelled")));
    let all = call(&client, "exec_list", json!({"machine": machine})).await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 2, "{all}");

    // Failures are tool errors with the CLI's codes.
    let missing = json!({"machine": machine, "exec_id": "01a20e39-2841-766b-a16c-ac422b0e3096"});
    call_err(&client, "exec_status", missing, "job_not_found").await;
    call_err(
        &client,
        "exec_status",
        json!({"machine": machine, "exec_id": "../etc"}),
        "invalid_id",
    )
    .await;
    let e = call_err(&client, "exec_list", json!({"machine": "nowhere"}), "unknown_machine").await;
    assert!(e["hint"].as_str().unwrap().contains(machine), "{e}");
    let bad_cwd = json!({"machine": machine, "cmd": "true", "cwd": "/no/such/dir"});
    let failed = call_err(&client, "exec_start", bad_cwd, "start_failed").await;
    assert_eq!(failed["job"]["state"], "start_failed", "{failed}");

    // Arguments it cannot use are tool errors the model reads, with the CLI's `usage` code.
    let e = call_err(&client, "exec_start", json!({"machine": machine}), "usage").await;
    assert!(e["hint"].as_str().unwrap().contains("inputSchema"), "{e}");
    call_err(&client, "exec_wait", json!({"exec_id": id, "timeout": 5}), "usage").await;
    // Only an unknown tool stays a protocol error.
    let e = try_call(&client, "no_such_tool", json!({})).await.unwrap_err();
    assert_eq!(protocol_error_code(e), -32602);
    call(&client, "exec_status", json!({"machine": machine, "exec_id": id})).await;

    client.cancel().await.unwrap();
}

/// file_write, file_read (paged), sync_push and sync_pull on `machine`, in `dir`.
async fn exercise_files(env: &TestEnv, machine: &str, dir: &std::path::Path) {
    let (client, _) = connect(env).await;
    let path = dir.join("notes.txt").display().to_string();
    let w = call(
        &client,
        "file_write",
        json!({"machine": machine, "path": path, "content": "hello world", "mkdir": true}),
    )
    .await;
    assert_eq!((w["type"].as_str(), w["size"].as_u64()), (Some("file_written"), Some(11)), "{w}");
    let first =
        call(&client, "file_read", json!({"machine": machine, "path": path, "max_bytes": 5})).await;
    assert_eq!(
        (first["text"].as_str(), first["eof"].as_bool()),
        (Some("hello"), Some(false)),
        "{first}"
    );
    let rest = call(
        &client,
        "file_read",
        json!({"machine": machine, "path": path, "offset": first["next_offset"]}),
    )
    .await;
    assert_eq!(
        (rest["text"].as_str(), rest["eof"].as_bool()),
        (Some(" world"), Some(true)),
        "{rest}"
    );
    let src = env.path("mcp-src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/a.txt"), "a").unwrap();
    let remote = dir.join("tree").display().to_string();
    let pushed = call(
        &client,
        "sync_push",
        json!({"machine": machine, "src": format!("{}/", src.display()), "dst": remote}),
    )
    .await;
    assert_eq!(
        (pushed["files_sent"].as_u64(), pushed["machine"].as_str()),
        (Some(1), Some(machine)),
        "{pushed}"
    );
    let back = env.path("mcp-back");
    let pulled = call(
        &client,
        "sync_pull",
        json!({"machine": machine, "src": format!("{remote}/"), "dst": back}),
    )
    .await;
    assert_eq!(pulled["files_sent"], 1, "{pulled}");
    assert_eq!(std::fs::read_to_string(back.join("d/a.txt")).unwrap(), "a");
    call_err(
        &client,
        "file_read",
        json!({"machine": machine, "path": dir.join("nope").display().to_string()}),
        "file_not_found",
    )
    .await;
    // Both contents at once: a tool error with the `usage` code, as every argument error.
    let both = json!({"path": path, "content": "x", "content_b64": "eA=="});
    call_err(&client, "file_write", both, "usage").await;
}

#[tokio::test]
async fn mcp_file_and_sync_tools() {
    let env = TestEnv::new();
    let dir = env.path("mcp-files");
    exercise_files(&env, "local", &dir).await;
}

#[tokio::test]
async fn mcp_tools_on_the_local_machine() {
    let env = TestEnv::new();
    exercise(&env, "local").await;
}

#[tokio::test]
async fn mcp_tools_on_a_machine_over_ssh() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let remote = env.path("remote-data");
    env.set_config(&format!("machines:\n{}", sshd.machine_yaml("gpu", &remote, "")));
    exercise(&env, "gpu").await;
    // The jobs are in the machine's store, not the local one.
    assert!(std::fs::read_dir(remote.join("jobs")).unwrap().count() >= 3);
    let local_jobs = std::fs::read_dir(env.data_dir().join("jobs")).map_or(0, |d| d.count());
    assert_eq!(local_jobs, 0);
}

/// `codex-remote mcp` driven by raw lines, each answer read with a deadline.
pub struct RawSession {
    pub child: Child,
    answers: mpsc::Receiver<String>,
}

impl RawSession {
    pub fn start(env: &TestEnv) -> Self {
        let mut child = env
            .remote(&["mcp"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        RawSession { child, answers }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line on stdout: it must be a JSON-RPC 2.0 message.
    pub fn answer(&self) -> Value {
        let line = self.answers.recv_timeout(CALL_DEADLINE).expect("an answer in time");
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert_eq!(value["jsonrpc"], "2.0", "{value}");
        value
    }

    pub fn error_code(&self) -> (Value, i64) {
        let answer = self.answer();
        let code = answer["error"]["code"].as_i64().unwrap_or_else(|| panic!("{answer}"));
        (answer["id"].clone(), code)
    }
}

#[test]
fn raw_bad_messages_get_errors_and_the_server_keeps_serving() {
    let env = TestEnv::new();
    let mut s = RawSession::start(&env);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw-test", "version": "1"}}});
    s.send(init.to_string().as_bytes());
    assert_eq!(s.answer()["result"]["serverInfo"]["name"], "codex-remote");
    s.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);

    let call = |id: i64, name: &str, args: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": name, "arguments": args}})
        .to_string()
    };
    s.send(b"{this is not json");
    assert_eq!(s.error_code(), (Value::Null, -32700));
    s.send(b"\xff\xfe garbage");
    assert_eq!(s.error_code(), (Value::Null, -32700));
    s.send(br#"{"foo": "bar"}"#);
    assert_eq!(s.error_code(), (Value::Null, -32600));
    // Batches are not part of MCP: refused as a whole, with `id: null`.
    s.send(br#"[{"jsonrpc":"2.0","id":20,"method":"tools/list"}]"#);
    assert_eq!(s.error_code(), (Value::Null, -32600));
    let mut huge = b"{\"x\":\"".to_vec();
    huge.resize(5 * 1024 * 1024, b'a');
    s.send(&huge);
    assert_eq!(s.error_code(), (Value::Null, -32600));
    s.send(br#"{"jsonrpc":"2.0","id":2,"method":"no/such/method"}"#);
    assert_eq!(s.error_code(), (json!(2), -32601));
    s.send(call(3, "no_such_tool", json!({})).as_bytes());
    assert_eq!(s.error_code(), (json!(3), -32602));
    // Every kind of bad argument is a tool result with `isError: true` and the `usage` error.
    let bad = [
        ("exec_status", json!({"exec_id": 5})), // wrong type
        ("exec_status", json!({"exec_id": "x", "stray": true})), // unknown field
        ("exec_status", json!({})),             // missing field
        ("exec_start", json!({"cmd": "true", "argv": ["true"]})), // exclusive fields
        ("exec_logs", json!({"exec_id": "x", "max_bytes": 0})), // out of range
        ("exec_wait", json!({"exec_id": "x", "timeout_seconds": -1})), // out of range
        ("exec_list", json!({"limit": "5"})),   // a number as a string
        ("exec_list", json!({"state": "finished-ish"})), // not an enum value
        ("machines", json!({"check": "no"})),   // not a boolean
        ("exec_start", json!({"cmd": "true", "labels": "a=1"})), // not an object
    ];
    for (i, (tool, args)) in bad.into_iter().enumerate() {
        let id = 100 + i as i64;
        s.send(call(id, tool, args.clone()).as_bytes());
        let answer = s.answer();
        let result = &answer["result"];
        assert_eq!((&answer["id"], &result["isError"]), (&json!(id), &json!(true)), "{answer}");
        let error = &result["structuredContent"];
        assert_eq!((&error["type"], &error["code"]), (&json!("error"), &json!("usage")), "{tool}");
        assert!(!error["message"].as_str().unwrap().is_empty(), "{tool} {args}: {answer}");
        assert!(result["content"][0]["text"].as_str().unwrap().starts_with("usage: "), "{answer}");
    }

    // Still serving: a good call is answered.
    s.send(call(9, "exec_list", json!({})).as_bytes());
    let answer = s.answer();
    assert_eq!((&answer["id"], &answer["result"]["isError"]), (&json!(9), &json!(false)));
    assert_eq!(answer["result"]["structuredContent"]["jobs"], json!([]));

    // End of input ends the server, cleanly.
    drop(s.child.stdin.take());
    let exited = crate::support::wait_until(Duration::from_secs(10), || {
        s.child.try_wait().unwrap().is_some()
    });
    assert!(exited, "codex-remote mcp did not exit at the end of its input");
    assert_eq!(s.child.wait().unwrap().code(), Some(0));
    assert!(s.answers.try_recv().is_err(), "nothing more on stdout");
}

/// Starts a raw session, initialized with `version`; returns it and the negotiated version.
fn raw_initialized(env: &TestEnv, version: &str) -> (RawSession, Value) {
    let mut s = RawSession::start(env);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {},
        "clientInfo": {"name": "raw-test", "version": "1"}}});
    s.send(init.to_string().as_bytes());
    let negotiated = s.answer()["result"]["protocolVersion"].clone();
    s.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    (s, negotiated)
}

#[test]
fn the_server_negotiates_mcp_2025_11_25() {
    let env = TestEnv::new();
    assert_eq!(raw_initialized(&env, "2025-11-25").1, "2025-11-25");
    // A newer revision than the server implements gets the one it does; an older one is kept.
    assert_eq!(raw_initialized(&env, "2026-07-28").1, "2025-11-25");
    assert_eq!(raw_initialized(&env, "2025-06-18").1, "2025-06-18");
}

/// `exec_wait` with a progress token sends progress notifications while it waits, each with
/// the token and a growing `progress`, before its answer.
#[test]
fn exec_wait_sends_progress_when_asked() {
    let env = TestEnv::new();
    let (mut s, _) = raw_initialized(&env, "2025-11-25");
    let start = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "exec_start", "arguments": {"argv": ["sleep", "30"]}}});
    s.send(start.to_string().as_bytes());
    let id = s.answer()["result"]["structuredContent"]["exec_id"].as_str().unwrap().to_string();
    let wait = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "exec_wait", "arguments": {"exec_id": id, "timeout_seconds": 11},
                   "_meta": {"progressToken": "wait-1"}}});
    s.send(wait.to_string().as_bytes());
    let mut progress = Vec::new();
    let answer = loop {
        let message = s.answer();
        if message["method"] == "notifications/progress" {
            assert_eq!(message["params"]["progressToken"], "wait-1", "{message}");
            assert_eq!(message["params"]["total"], 11.0, "{message}");
            progress.push(message["params"]["progress"].as_f64().unwrap());
            continue;
        }
        break message;
    };
    assert_eq!(answer["id"], 3);
    assert_eq!(answer["result"]["structuredContent"]["timed_out"], true, "{answer}");
    assert!(progress.len() >= 2, "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
    // Without a token: no notification, only the answer.
    let wait = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
        "params": {"name": "exec_wait", "arguments": {"exec_id": id, "timeout_seconds": 6}}});
    s.send(wait.to_string().as_bytes());
    assert_eq!(s.answer()["id"], 4);
    let cancel = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "exec_cancel", "arguments": {"exec_id": id, "grace_seconds": 0}}});
    s.send(cancel.to_string().as_bytes());
    assert_eq!(s.answer()["result"]["structuredContent"]["state"], "cancelled");
}

/// Paging a plain text log costs about its own size: the `content` text an agent reads is at
/// most 1.3 bytes per byte of log (it was ~11 when every line was a JSON object).
#[tokio::test]
async fn a_log_page_costs_about_its_own_size() {
    let env = TestEnv::new();
    let (client, _) = connect(&env).await;
    let cmd = "seq 1 20000 | awk '{printf \"step %d loss %.4f lr 0.0003\\n\", $1, 100/$1}'";
    let started = call(&client, "exec_start", json!({"cmd": cmd})).await;
    let id = started["exec_id"].as_str().unwrap();
    let done = call(&client, "exec_wait", json!({"exec_id": id})).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let (mut log, mut content, mut message) = (0usize, 0usize, 0usize);
    let mut since = 0u64;
    loop {
        let args = json!({"exec_id": id, "since_stdout": since, "since_stderr": 0});
        let result = try_call(&client, "exec_logs", args).await.unwrap();
        let page = check_shape("exec_logs", &result);
        log += page["stdout"]["text"].as_str().map_or(0, str::len);
        content += result.content.iter().map(|c| c.as_text().unwrap().text.len()).sum::<usize>();
        message += serde_json::to_string(&result).unwrap().len();
        since = page["next_offset"]["stdout"].as_u64().unwrap();
        if page["more"] == false {
            break;
        }
    }
    assert_eq!(log as u64, since);
    let (text_ratio, whole_ratio) = (content as f64 / log as f64, message as f64 / log as f64);
    eprintln!(
        "log {log} bytes: content {content} bytes ({text_ratio:.3}x), whole result {message} \
         bytes ({whole_ratio:.3}x)"
    );
    assert!(text_ratio <= 1.3, "{text_ratio}");
    assert!(whole_ratio <= 2.5, "{whole_ratio}");
    client.cancel().await.unwrap();
}
