//! One `codexd rpc` session, many requests: in turn by default, and as each completes after a
//! `hello` with `concurrent: true` (capability `concurrent`).

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use serde_json::{Value, json};

use crate::support::TestEnv;

fn line(v: Value) -> Vec<u8> {
    let mut b = v.to_string().into_bytes();
    b.push(b'\n');
    b
}

#[test]
fn a_concurrent_session_answers_statuses_while_a_wait_blocks() {
    let env = TestEnv::new();
    let go = env.path("go");
    let id = env.start("local", &format!("while [ ! -e {} ]; do sleep 0.05; done", go.display()));
    let mut child = env
        .codexd(&["rpc"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut answers = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || serde_json::from_str::<Value>(&answers.next().unwrap().unwrap()).unwrap();

    stdin.write_all(&line(json!({"id": "h", "type": "hello", "concurrent": true}))).unwrap();
    let hello = next();
    assert!(hello["capabilities"].as_array().unwrap().contains(&json!("concurrent")), "{hello}");
    // A wait that can only end once the 50 statuses are answered: the test makes the job end
    // after reading them. Served in turn, the wait would run out of time first.
    stdin
        .write_all(&line(
            json!({"id": "w", "type": "exec_wait", "exec_id": id, "timeout_ms": 60000}),
        ))
        .unwrap();
    for n in 0..50 {
        stdin.write_all(&line(json!({"id": n, "type": "exec_status", "exec_id": id}))).unwrap();
    }
    stdin.flush().unwrap();
    let mut seen = Vec::new();
    while seen.len() < 50 {
        let a = next();
        assert_ne!(a["id"], "w", "the wait answered before the statuses: {a}");
        assert_eq!((a["exec_id"].as_str(), a["status"].as_str()), (Some(&*id), Some("running")));
        seen.push(a["id"].as_u64().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..50).collect::<Vec<_>>(), "each status answered once, with its id");
    std::fs::write(&go, "").unwrap();
    let wait = next();
    assert_eq!((wait["id"].as_str(), wait["state"].as_str()), (Some("w"), Some("succeeded")));
    // A bad line in a concurrent session is still answered, and EOF ends the session.
    stdin.write_all(b"{not json\n").unwrap();
    assert_eq!(next()["code"], "bad_request");
    drop(stdin);
    assert!(answers.next().is_none());
    assert!(child.wait().unwrap().success());
}

#[test]
fn without_asking_a_session_answers_in_turn() {
    let env = TestEnv::new();
    let id = env.start("local", "sleep 30");
    let mut input = line(json!({"id": "h", "type": "hello"}));
    input.extend(line(json!({"id": "w", "type": "exec_wait", "exec_id": id, "timeout_ms": 300})));
    input.extend(line(json!({"id": "s", "type": "exec_status", "exec_id": id})));
    let answers = env.rpc_raw(&input);
    let ids: Vec<&str> = answers.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["h", "w", "s"]);
    assert_eq!(answers[1]["timed_out"], true, "{}", answers[1]);
    env.ok(&["exec", "cancel", "--id", &id]);
}
