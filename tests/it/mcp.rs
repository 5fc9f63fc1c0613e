//! `codex-remote mcp` as an MCP client sees it: the real binary as a child process, driven by
//! rmcp's client over stdio, on the `local` machine and on a machine behind a real `sshd`; and
//! raw JSON-RPC lines that are wrong in every way, each answered while the server keeps serving.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
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

async fn connect(env: &TestEnv) -> Client {
    let cmd = tokio::process::Command::from(env.remote(&["mcp"]));
    let transport = TokioChildProcess::new(cmd).expect("spawn codex-remote mcp");
    tokio::time::timeout(CALL_DEADLINE, ().serve(transport))
        .await
        .expect("initialize in time")
        .expect("initialize")
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
async fn call(client: &Client, tool: &str, args: Value) -> Value {
    let result = try_call(client, tool, args.clone()).await.expect("no protocol error");
    let value = check_shape(&result);
    assert_eq!(result.is_error, Some(false), "{tool} {args}: {value}");
    value
}

/// Calls `tool`, expecting a tool error: returns its structured JSON (with the CLI's `code`).
async fn call_err(client: &Client, tool: &str, args: Value, code: &str) -> Value {
    let result = try_call(client, tool, args.clone()).await.expect("no protocol error");
    let value = check_shape(&result);
    assert_eq!(result.is_error, Some(true), "{tool} {args}: {value}");
    assert_eq!(value["type"], "error");
    assert_eq!(value["code"], code, "{tool} {args}: {value}");
    assert!(!value["message"].as_str().unwrap_or("").is_empty());
    value
}

/// Every answer: structured JSON, a short first text line, and the same JSON as text.
fn check_shape(result: &CallToolResult) -> Value {
    let value = result.structured_content.clone().expect("structured content");
    let texts: Vec<&str> =
        result.content.iter().map(|c| c.as_text().expect("text content").text.as_str()).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(!texts[0].contains('\n') && !texts[0].is_empty() && texts[0].len() < 400, "{texts:?}");
    assert_eq!(serde_json::from_str::<Value>(texts[1]).unwrap(), value);
    value
}

fn protocol_error_code(e: ServiceError) -> i32 {
    match e {
        ServiceError::McpError(data) => data.code.0,
        other => panic!("a protocol error expected, got {other}"),
    }
}

/// The whole tool set against `machine`: start (and replay), wait, page logs, list, cancel.
async fn exercise(env: &TestEnv, machine: &str) {
    let client = connect(env).await;
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
        let mut page_bytes = 0;
        for line in page["lines"].as_array().unwrap() {
            assert_eq!(line["stream"], "stdout");
            assert_eq!(line["offset"].as_u64().unwrap(), since + page_bytes, "{page}");
            let piece = line["line"].as_str().unwrap();
            text.push_str(piece);
            page_bytes += piece.len() as u64;
            if line["partial"] != true {
                text.push('\n');
                page_bytes += 1;
            }
        }
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
    let stderr: Vec<&Value> =
        both["lines"].as_array().unwrap().iter().filter(|l| l["stream"] == "stderr").collect();
    assert_eq!((stderr.len(), &stderr[0]["line"]), (1, &json!("oops")), "{both}");
    assert_eq!(both["next_offset"]["stderr"], 5);
    let tail = json!({"machine": machine, "exec_id": id, "stream": "stdout", "tail_lines": 2});
    let tail = call(&client, "exec_logs", tail).await;
    let lines: Vec<&str> =
        tail["lines"].as_array().unwrap().iter().map(|l| l["line"].as_str().unwrap()).collect();
    assert_eq!(lines, ["line-299 of the log", "line-300 of the log"]);

    // A long job: wait times out with a hint to call again; then cancel it.
    let long =
        call(&client, "exec_start", json!({"machine": machine, "argv": ["sleep", "60"]})).await;
    let long_id = long["exec_id"].as_str().unwrap().to_string();
    assert!(long["idempotency_key"].as_str().unwrap().starts_with("auto-"), "{long}");
    // A blocked exec_wait holds no other call up: a list sent after it is answered first.
    let args = json!({"machine": machine, "exec_id": long_id, "timeout_seconds": 2});
    let started_at = Instant::now();
    let (waited, listed_after) = tokio::join!(
        async {
            let waited = call(&client, "exec_wait", args).await;
            (waited, started_at.elapsed())
        },
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
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

    // Arguments it cannot use are protocol errors, and the session goes on.
    let e = try_call(&client, "exec_start", json!({"machine": machine})).await.unwrap_err();
    assert_eq!(protocol_error_code(e), -32602);
    let e = try_call(&client, "exec_wait", json!({"exec_id": id, "timeout": 5})).await.unwrap_err();
    assert_eq!(protocol_error_code(e), -32602);
    let e = try_call(&client, "no_such_tool", json!({})).await.unwrap_err();
    assert_eq!(protocol_error_code(e), -32602);
    call(&client, "exec_status", json!({"machine": machine, "exec_id": id})).await;

    client.cancel().await.unwrap();
}

/// file_write, file_read (paged), sync_push and sync_pull on `machine`, in `dir`.
async fn exercise_files(env: &TestEnv, machine: &str, dir: &std::path::Path) {
    let client = connect(env).await;
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
    let pushed =
        call(&client, "sync_push", json!({"machine": machine, "src": src, "dst": remote})).await;
    assert_eq!(
        (pushed["files_sent"].as_u64(), pushed["machine"].as_str()),
        (Some(1), Some(machine)),
        "{pushed}"
    );
    let back = env.path("mcp-back");
    let pulled =
        call(&client, "sync_pull", json!({"machine": machine, "src": remote, "dst": back})).await;
    assert_eq!(pulled["files_sent"], 1, "{pulled}");
    assert_eq!(std::fs::read_to_string(back.join("d/a.txt")).unwrap(), "a");
    call_err(
        &client,
        "file_read",
        json!({"machine": machine, "path": dir.join("nope").display().to_string()}),
        "file_not_found",
    )
    .await;
    let bad = try_call(
        &client,
        "file_write",
        json!({"path": path, "content": "x", "content_b64": "eA=="}),
    )
    .await;
    assert_eq!(protocol_error_code(bad.expect_err("content and content_b64 together")), -32602);
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
struct RawSession {
    child: Child,
    answers: mpsc::Receiver<String>,
}

impl RawSession {
    fn start(env: &TestEnv) -> Self {
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

    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line on stdout: it must be a JSON-RPC 2.0 message.
    fn answer(&self) -> Value {
        let line = self.answers.recv_timeout(CALL_DEADLINE).expect("an answer in time");
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert_eq!(value["jsonrpc"], "2.0", "{value}");
        value
    }

    fn error_code(&self) -> (Value, i64) {
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
    assert_eq!(s.error_code().1, -32600);
    let mut huge = b"{\"x\":\"".to_vec();
    huge.resize(5 * 1024 * 1024, b'a');
    s.send(&huge);
    assert_eq!(s.error_code(), (Value::Null, -32600));
    s.send(br#"{"jsonrpc":"2.0","id":2,"method":"no/such/method"}"#);
    assert_eq!(s.error_code(), (json!(2), -32601));
    s.send(call(3, "no_such_tool", json!({})).as_bytes());
    assert_eq!(s.error_code(), (json!(3), -32602));
    s.send(call(4, "exec_status", json!({"exec_id": 5})).as_bytes());
    let answer = s.answer();
    assert_eq!((&answer["id"], &answer["error"]["code"]), (&json!(4), &json!(-32602)), "{answer}");
    assert_eq!(answer["error"]["data"]["code"], "usage");
    s.send(call(5, "exec_status", json!({"exec_id": "x", "stray": true})).as_bytes());
    assert_eq!(s.error_code(), (json!(5), -32602));
    s.send(call(6, "exec_start", json!({"cmd": "true", "argv": ["true"]})).as_bytes());
    assert_eq!(s.error_code(), (json!(6), -32602));
    s.send(call(7, "exec_logs", json!({"exec_id": "x", "max_bytes": 0})).as_bytes());
    assert_eq!(s.error_code(), (json!(7), -32602));
    s.send(call(8, "exec_wait", json!({"exec_id": "x", "timeout_seconds": -1})).as_bytes());
    assert_eq!(s.error_code(), (json!(8), -32602));

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
