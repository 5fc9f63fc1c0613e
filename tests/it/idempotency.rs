//! Idempotency keys on every door that takes one: the same key with the same request replays the
//! first job, the same key with another request is `idempotency_conflict` naming the first job,
//! and nothing new is started. (The MCP door is in `mcp.rs`.)

use serde_json::{Value, json};

use crate::serve::{Serve, http};
use crate::support::TestEnv;

/// The number of jobs in the test's local store.
fn job_count(env: &TestEnv) -> usize {
    std::fs::read_dir(env.data_dir().join("jobs")).map_or(0, |d| d.count())
}

fn assert_conflict(answer: &Value, first: &str) {
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "idempotency_conflict", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains(first), "names the first job: {answer}");
    assert!(answer["hint"].as_str().unwrap().contains(first), "{answer}");
}

#[test]
fn cli_replays_the_same_request_and_refuses_another_with_the_same_key() {
    let env = TestEnv::new();
    let start = ["exec", "start", "--idempotency-key", "train", "--env", "A=1", "--cmd"];
    let first = env.ok(&[&start[..], &["echo once"]].concat());
    let id = first["exec_id"].as_str().unwrap();
    assert_eq!(first["replayed"], Value::Null, "{first}");

    let again = env.ok(&[&start[..], &["echo once"]].concat());
    assert_eq!((again["exec_id"].as_str(), &again["replayed"]), (Some(id), &json!(true)));

    // Another command, or the same command with another env, under the same key.
    let e = env.err(&[&start[..], &["echo DIFFERENT"]].concat(), "idempotency_conflict", 4);
    assert_conflict(&e, id);
    let other_env =
        ["exec", "start", "--idempotency-key", "train", "--env", "A=2", "--cmd", "echo once"];
    assert_conflict(&env.err(&other_env, "idempotency_conflict", 4), id);
    assert_eq!(job_count(&env), 1, "nothing else was started");

    // Without a key every call is a new job. `local` answers in codex-remote itself: no
    // transport to retry, so no key (over ssh the client makes a fresh `auto-` key each time).
    let a = env.ok(&["exec", "start", "--cmd", "echo once"]);
    let b = env.ok(&["exec", "start", "--cmd", "echo once"]);
    assert_ne!(a["exec_id"], b["exec_id"]);
    assert!(a.get("idempotency_key").is_none_or(Value::is_null), "{a}");
}

#[test]
fn rpc_on_stdin_answers_a_conflict_and_keeps_serving() {
    let env = TestEnv::new();
    let start = |id: u32, cmd: &str| {
        json!({"id": id, "type": "exec_start", "cmd": cmd, "cwd": "/tmp",
               "idempotency_key": "rpc-key"})
        .to_string()
    };
    let input = [start(1, "echo once"), start(2, "echo once"), start(3, "echo DIFFERENT")];
    let answers = env.rpc_raw(format!("{}\n", input.join("\n")).as_bytes());
    assert_eq!(answers.len(), 3, "{answers:?}");
    let first = answers[0]["exec_id"].as_str().unwrap();
    assert_eq!((answers[0]["type"].as_str(), answers[0]["id"].as_u64()), (Some("status"), Some(1)));
    assert_eq!(answers[1]["exec_id"], first);
    assert_eq!(answers[1]["replayed"], true);
    assert_eq!(answers[2]["id"], 3);
    assert_conflict(&answers[2], first);
    assert_eq!(job_count(&env), 1);
}

#[test]
fn http_answers_a_conflict_with_422() {
    let env = TestEnv::new();
    let serve = Serve::start(&env);
    let token = std::fs::read_to_string(env.data_dir().join("token")).unwrap();
    let post = |body: Value| {
        let body = body.to_string();
        let request = format!(
            "POST /v1/exec HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            token.trim(),
            body.len()
        );
        http(&serve.addr, &request)
    };
    let body = json!({"cmd": ["echo", "once"], "labels": {"a": "1"}, "idempotency_key": "h1"});
    let (status, first) = post(body.clone());
    assert_eq!(status, 200, "{first}");
    let id = first["exec_id"].as_str().unwrap();
    let (status, again) = post(body);
    assert_eq!((status, &again["exec_id"], &again["replayed"]), (200, &json!(id), &json!(true)));
    let other = json!({"cmd": ["echo", "once"], "labels": {"a": "2"}, "idempotency_key": "h1"});
    let (status, e) = post(other);
    assert_eq!(status, 422, "{e}");
    assert_conflict(&e, id);
    assert_eq!(job_count(&env), 1);
}

/// A key file written by an older codexd holds the job id alone: it replays, whatever the request.
#[test]
fn an_old_key_file_without_a_fingerprint_replays_as_before() {
    let env = TestEnv::new();
    let first = env.ok(&["exec", "start", "--cmd", "echo old", "--idempotency-key", "old-k"]);
    let id = first["exec_id"].as_str().unwrap();
    let key_file = env.data_dir().join("keys").join("old-k");
    let text = std::fs::read_to_string(&key_file).unwrap();
    assert!(text.starts_with(&format!("{id}\nsha256:")), "{text:?}");
    std::fs::write(&key_file, id).unwrap();

    let again = env.ok(&["exec", "start", "--cmd", "echo new", "--idempotency-key", "old-k"]);
    assert_eq!((again["exec_id"].as_str(), &again["replayed"]), (Some(id), &json!(true)));
    // Pruning still reads the old file: the key goes with its job.
    env.wait("local", id);
    env.ok(&["exec", "rm", "--id", id]);
    assert!(!key_file.exists(), "the key of a removed job is dropped");
}
