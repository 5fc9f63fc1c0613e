//! Bad input: each gets a clear JSON error with a stable code, and the store is unchanged.

use serde_json::json;

use crate::support::TestEnv;

/// A store with one finished job in it, and its snapshot.
fn store_with_a_job(env: &TestEnv) -> String {
    let id = env.start("local", "echo kept");
    env.wait("local", &id);
    id
}

#[test]
fn codexd_rpc_answers_every_bad_line_and_keeps_serving() {
    let env = TestEnv::new();
    let id = store_with_a_job(&env);
    let before = env.store_snapshot();

    let mut input = Vec::new();
    input.extend_from_slice(b"{not json\n");
    input.extend_from_slice(b"[1,2,3]\n");
    input.extend_from_slice(&vec![b'x'; 10 * 1024 * 1024]);
    input.push(b'\n');
    for line in [
        json!({"id": 1, "type": "launch_missiles"}),
        json!({"id": 2, "type": "exec_status", "exec_id": 42}),
        json!({"id": 3, "type": "exec_start", "cmd": {"a": 1}}),
        json!({"id": 4, "type": "exec_logs", "exec_id": id, "tail": "lots"}),
        json!({"id": 5, "type": "exec_status", "exec_id": "../../etc/passwd"}),
        json!({"id": 6, "type": "exec_rm", "exec_id": "../jobs"}),
        json!({"id": 7, "type": "exec_start", "cmd": ""}),
        json!({"id": 8, "type": "exec_start", "cmd": []}),
        json!({"id": 9, "type": "exec_start"}),
        json!({"id": 10, "type": "exec_start", "cmd": "true", "env": {"A=B": "c"}}),
        json!({"id": 11, "type": "exec_start", "cmd": "true", "idempotency_key": "../../x"}),
        json!({"id": 12, "type": "exec_status", "exec_id": "01a20e39-2841-766b-a16c-ac422b0e3096"}),
        json!({"type": 7}),
        json!({"id": 13, "type": "doctor", "checks": ["data_dir", "shared-store"]}),
        json!({"id": "last", "type": "exec_status", "exec_id": id}),
    ] {
        input.extend_from_slice(line.to_string().as_bytes());
        input.push(b'\n');
    }
    let answers = env.rpc_raw(&input);
    let codes: Vec<&str> = answers.iter().map(|a| a["code"].as_str().unwrap_or("-")).collect();
    assert_eq!(
        codes,
        [
            "bad_request",
            "bad_request",
            "request_too_large",
            "unknown_type",
            "bad_request",
            "bad_request",
            "bad_request",
            "invalid_id",
            "invalid_id",
            "invalid_argument",
            "invalid_argument",
            "invalid_argument",
            "invalid_argument",
            "invalid_argument",
            "job_not_found",
            "bad_request",
            "invalid_argument",
            "-",
        ]
    );
    for a in &answers[..answers.len() - 1] {
        assert_eq!(a["type"], "error");
        assert!(!a["message"].as_str().unwrap().is_empty());
    }
    // Ids are echoed, so a batch caller can match answers.
    assert_eq!(answers[3]["id"], 1);
    let doctor = answers.iter().find(|a| a["id"] == 13).unwrap();
    assert!(doctor["message"].as_str().unwrap().contains("shared_store"), "{doctor}");
    let last = answers.last().unwrap();
    assert_eq!((last["id"].as_str(), last["type"].as_str()), (Some("last"), Some("status")));
    assert_eq!(env.store_snapshot(), before, "bad input changed the store");
}

#[test]
fn codex_remote_refuses_bad_ids_destinations_and_config() {
    let env = TestEnv::new();
    store_with_a_job(&env);
    let before = env.store_snapshot();
    env.err(&["exec", "result", "--id", "../../etc"], "invalid_id", 4);
    env.err(&["exec", "logs", "--id", "/etc/passwd"], "invalid_id", 4);
    env.err(&["exec", "cancel", "--id", ".."], "invalid_id", 4);
    env.err(&["exec", "result", "--machine", "nope", "--id", "x"], "unknown_machine", 2);
    env.err(&["exec", "start", "--cmd", ""], "invalid_argument", 4);

    let pwned = env.path("pwned");
    env.set_config(&format!(
        "machines:\n  - name: evil\n    ssh: \"-oProxyCommand=touch {}\"\n",
        pwned.display()
    ));
    let e = env.err(&["exec", "start", "--machine", "evil", "--cmd", "true"], "config_error", 2);
    assert!(e["message"].as_str().unwrap().contains("'-'"), "{e}");
    assert!(!pwned.exists(), "the destination was passed to ssh as an option");

    env.set_config("machines: [ {name: \n");
    env.err(&["exec", "list"], "config_error", 2);
    env.set_config("machines:\n  - name: a\n    ssh: h\n  - name: a\n    ssh: h\n");
    env.err(&["exec", "list"], "config_error", 2);
    assert_eq!(env.store_snapshot(), before);
}

#[test]
fn a_missing_job_hints_at_the_list_and_machine_and_bad_env_names_are_refused() {
    let env = TestEnv::new();
    let id = "01a20e39-2841-766b-a16c-ac422b0e3096";
    let e = env.err(&["exec", "result", "--id", id], "job_not_found", 4);
    let hint = e["hint"].as_str().unwrap_or_default();
    assert!(hint.contains("exec list") && hint.contains("--machine"), "{e}");
    for bad in ["BAD NAME=1", "1X=1", "A-B=1"] {
        env.err(&["exec", "start", "--env", bad, "--cmd", "true"], "invalid_argument", 4);
    }
    assert_eq!(env.ok(&["exec", "list"])["jobs"], json!([]), "nothing was started");
}

#[test]
fn first_run_writes_a_private_commented_config() {
    let env = TestEnv::new();
    let mut cmd = env.remote(&["exec", "list"]);
    cmd.env_remove("CODEX_REMOTE_CONFIG");
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = env.home.join(".config/codex-remote/config.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("# codex-remote machines"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}
