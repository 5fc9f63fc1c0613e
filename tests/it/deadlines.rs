//! Nothing waits forever (issue 26, 6 and 9): a host that accepts and never answers, a `codexd`
//! that went silent behind a working ssh, and a `machine ls --timeout` whose ssh hangs all end
//! within their deadline, with no ssh child left behind; a quiet long job is kept alive by
//! codexd's heartbeats.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Sshd, TestEnv, alive, json_lines, wait_until};

/// How long a command given `call_timeout: 2` may take at most (ssh's start included).
const ENDS_WITHIN: Duration = Duration::from_secs(20);

/// Runs `cmd`, killing it if it outlives `limit`; returns its output and how long it took.
fn run_bounded(mut cmd: Command, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ended = wait_until(limit, || matches!(child.try_wait(), Ok(Some(_))));
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(ended, "still running after {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
    (out, started.elapsed())
}

/// The last JSON line of `out`, checked to be a `timeout` error with exit 124.
fn timeout_error(out: &Output) -> Value {
    let last = json_lines(out).pop().unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{last} {stderr}");
    assert_eq!(last["code"], "timeout", "{last} {stderr}");
    last
}

fn script(path: &Path, text: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{text}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_listener_that_never_answers_ends_exec_list_with_timeout() {
    // The kernel accepts connections into the backlog: nobody ever answers them.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let env = TestEnv::with_config(&format!(
        "machines:\n  - name: h\n    addr: {addr}\n    token: \"x\"\n    call_timeout: 2\n"
    ));
    let (out, took) = run_bounded(env.remote(&["exec", "list", "--machine", "h"]), ENDS_WITHIN);
    let e = timeout_error(&out);
    assert!(e["message"].as_str().unwrap().contains(&addr.to_string()), "{e}");
    assert!(e["hint"].as_str().unwrap().contains("call_timeout"), "{e}");
    eprintln!("silent listener: exec list ended in {took:?} with {e}");
    drop(listener);
}

#[test]
fn an_ssh_route_to_a_silent_codexd_ends_with_timeout_and_a_hint() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    // A codexd that reads its requests and never answers.
    let silent = env.path("silent-codexd");
    script(&silent, "cat >/dev/null; sleep 30");
    let machine =
        sshd.machine_yaml("gpu", &env.path("remote-data"), "    call_timeout: 2\n").replace(
            &format!("codexd: {}", crate::support::CODEXD),
            &format!("codexd: {}", silent.display()),
        );
    env.set_config(&format!("machines:\n{machine}"));
    let (out, took) = run_bounded(env.remote(&["exec", "list", "--machine", "gpu"]), ENDS_WITHIN);
    let e = timeout_error(&out);
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("gpu") && message.contains("codexd over ssh"), "{e}");
    assert!(e["hint"].as_str().unwrap().contains("--machine gpu"), "{e}");
    eprintln!("silent codexd over ssh: exec list ended in {took:?} with {e}");
}

#[test]
fn machine_ls_timeout_kills_the_ssh_child_of_a_hanging_check() {
    let env = TestEnv::with_config(
        "machines:\n  - name: stuck\n    ssh: stuckhost\n    ssh_control: false\n",
    );
    // An ssh that records its pid and hangs (as one stuck on a host that never answers).
    let pid_file = env.path("ssh.pid");
    let fake_ssh = env.path("fake-ssh");
    script(&fake_ssh, &format!("echo $$ > {}\nexec sleep 60", pid_file.display()));
    let mut cmd = env.remote(&["machine", "ls", "--timeout", "1s"]);
    cmd.env("CODEX_REMOTE_SSH", &fake_ssh);
    let (out, took) = run_bounded(cmd, ENDS_WITHIN);
    let listing = json_lines(&out).pop().unwrap_or(Value::Null);
    let stuck = listing["machines"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == "stuck"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        (stuck["ok"].as_bool(), stuck["code"].as_str()),
        (Some(false), Some("timeout")),
        "{listing}"
    );
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    // The command has exited: its ssh child must be gone with it (killed and reaped).
    let gone = wait_until(Duration::from_secs(3), || !alive(pid));
    if !gone {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    assert!(gone, "the ssh child {pid} outlived `machine ls --timeout 1s` (it took {took:?})");
    eprintln!("machine ls --timeout 1s: ended in {took:?}, its ssh child {pid} gone");
}

#[test]
fn a_quiet_job_longer_than_the_idle_limit_is_kept_alive_by_heartbeats() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let remote = env.path("remote-data");
    // call_timeout 2: the silence limit of a long call is its floor, 15 s.
    let yaml = sshd.machine_yaml("gpu", &remote, "    call_timeout: 2\n");
    env.set_config(&format!("machines:\n{yaml}"));
    let id = env.start("gpu", "sleep 22; echo woke");
    // A follow and a wait, both quiet for longer than the silence limit.
    let follow = env
        .remote(&["exec", "logs", "--machine", "gpu", "--id", &id, "--since", "0", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (out, took) = run_bounded(
        env.remote(&["exec", "wait", "--machine", "gpu", "--id", &id]),
        Duration::from_secs(60),
    );
    let last = json_lines(&out).pop().unwrap_or(Value::Null);
    assert_eq!(out.status.code(), Some(0), "{last} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(last["state"], "succeeded", "{last}");
    let followed = follow.wait_with_output().unwrap();
    let lines = json_lines(&followed);
    let stderr = String::from_utf8_lossy(&followed.stderr);
    assert_eq!(followed.status.code(), Some(0), "{lines:?} {stderr}");
    assert!(lines.iter().any(|l| l["line"] == "woke"), "{lines:?} {stderr}");
    eprintln!("a quiet 22 s job followed and waited for over ssh ({took:?}), silence limit 15 s");
}

/// The live children of `pid` (from each process's `/proc/P/stat`: its parent is field 4).
fn live_children(pid: i32) -> Vec<i32> {
    let parent_of = |p: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| parent_of(p) == Some(pid) && alive(p))
        .collect()
}

/// Issue 26, point 9: the MCP `machines` tool, asked about a machine whose ssh hangs, answers
/// within the machine's `call_timeout`, and its ssh child is killed and reaped: the MCP server
/// (which lives on) has no child left.
#[test]
fn mcp_machines_leaves_no_ssh_child_of_a_hanging_check() {
    use std::io::{BufRead, BufReader, Write};
    let env = TestEnv::with_config(
        "machines:\n  - name: stuck\n    ssh: stuckhost\n    ssh_control: false\n    call_timeout: 1\n",
    );
    let pid_file = env.path("ssh.pid");
    let fake_ssh = env.path("fake-ssh");
    script(&fake_ssh, &format!("echo $$ > {}\nexec sleep 60", pid_file.display()));
    let mut mcp = env
        .remote(&["mcp"])
        .env("CODEX_REMOTE_SSH", &fake_ssh)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mcp_pid = mcp.id() as i32;
    let (tx, answers) = std::sync::mpsc::channel::<Value>();
    let stdout = mcp.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&line).unwrap_or(Value::Null));
        }
    });
    let mut stdin = mcp.stdin.take().unwrap();
    let init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "deadlines", "version": "1"}}});
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "machines", "arguments": {"machine": "stuck"}}});
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let started = Instant::now();
    writeln!(stdin, "{init}\n{initialized}\n{call}").unwrap();
    stdin.flush().unwrap();
    let answer = loop {
        let a = answers.recv_timeout(ENDS_WITHIN).expect("an answer to `machines` in time");
        if a["id"] == 2 {
            break a;
        }
    };
    let took = started.elapsed();
    let entry = &answer["result"]["structuredContent"]["machines"][0];
    assert_eq!(
        (entry["name"].as_str(), entry["ok"].as_bool()),
        (Some("stuck"), Some(false)),
        "{answer}"
    );
    assert_eq!(entry["error"]["code"], "timeout", "{answer}");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let gone =
        wait_until(Duration::from_secs(5), || !alive(pid) && live_children(mcp_pid).is_empty());
    let left = live_children(mcp_pid);
    if alive(pid) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    drop(stdin);
    let _ = mcp.kill();
    let _ = mcp.wait();
    assert!(
        gone,
        "the MCP server still has children {left:?} (the ssh was {pid}) after `machines`"
    );
    eprintln!("MCP machines with a hanging ssh answered in {took:?}; its ssh child {pid} gone");
}
