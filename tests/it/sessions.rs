//! Shared sessions of long-lived clients (`codex-remote mcp`, `dashboard`): one `codexd rpc` per
//! machine over the loopback sshd. A wrapper around codexd on the "server" logs the pid of each
//! `codexd rpc` it starts, so the tests count sessions and can kill one.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::dashboard::DashboardProcess;
use crate::mcp::{call, connect, connect_with};
use crate::support::{CODEXD, Sshd, TestEnv, alive, wait_until};

/// The `gpu` machine's `codexd rpc` starts, as logged by its wrapper.
struct RpcStarts(PathBuf);

impl RpcStarts {
    /// Configures machine `gpu` behind `sshd` with a codexd wrapper; `filter` is a command its
    /// output goes through (empty: none, and the logged pid is codexd's own).
    fn machine(env: &TestEnv, sshd: &Sshd, filter: &str) -> RpcStarts {
        let log = env.path("rpc-starts");
        let wrapper = env.path("codexd-wrapper");
        let run = match filter {
            "" => format!("exec {CODEXD} \"$@\""),
            filter => format!("{CODEXD} \"$@\" | {filter}"),
        };
        let script =
            format!("#!/bin/sh\n[ \"$1\" = rpc ] && echo $$ >> {}\n{run}\n", log.display());
        std::fs::write(&wrapper, script).unwrap();
        Command::new("chmod").arg("755").arg(&wrapper).status().unwrap();
        let yaml = sshd.machine_yaml("gpu", &env.path("remote-data"), "");
        env.set_config(&format!(
            "machines:\n{}",
            yaml.replace(CODEXD, &wrapper.display().to_string())
        ));
        RpcStarts(log)
    }

    fn pids(&self) -> Vec<i32> {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        text.lines().map(|l| l.trim().parse().unwrap()).collect()
    }
}

/// Threads of a process (a `concurrent` codexd serves each request on one of its own).
fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// The threads of codexd `pid` once their number has held for half a second (what `exec_start`
/// left running has ended or settled), so a thread beyond them serves the next request.
fn settled(pid: i32) -> usize {
    let (mut last, mut since) = (threads(pid), Instant::now());
    let deadline = Instant::now() + Duration::from_secs(10);
    while since.elapsed() < Duration::from_millis(500) {
        assert!(Instant::now() < deadline, "codexd {pid} never settles");
        std::thread::sleep(Duration::from_millis(20));
        let now = threads(pid);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

#[tokio::test]
async fn mcp_answers_50_statuses_beside_a_wait_on_one_session() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let starts = RpcStarts::machine(&env, &sshd, "");
    let (client, _) = connect(&env).await;
    let job = call(&client, "exec_start", json!({"machine": "gpu", "argv": ["sleep", "60"]})).await;
    let id = job["exec_id"].as_str().unwrap().to_string();
    let [session] = starts.pids()[..] else { panic!("one session: {:?}", starts.pids()) };
    let idle_threads = settled(session);

    let wait = json!({"machine": "gpu", "exec_id": id, "timeout_seconds": 8});
    let began = Instant::now();
    let (waited, statuses) =
        tokio::join!(async { (call(&client, "exec_wait", wait).await, began.elapsed()) }, async {
            // The statuses go once codexd serves the wait (on a thread of its own).
            while threads(session) <= idle_threads {
                assert!(began.elapsed() < Duration::from_secs(5), "the wait never reached codexd");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut slowest = Duration::ZERO;
            for _ in 0..50 {
                let asked = Instant::now();
                let args = json!({"machine": "gpu", "exec_id": id});
                let status = call(&client, "exec_status", args).await;
                assert_eq!(status["status"], "running", "{status}");
                slowest = slowest.max(asked.elapsed());
            }
            (slowest, began.elapsed())
        });
    let ((waited, waited_after), (slowest, statuses_after)) = (waited, statuses);
    assert_eq!(waited["timed_out"], true, "{waited}");
    assert!(waited_after >= Duration::from_secs(8), "{waited_after:?}");
    assert!(statuses_after < waited_after, "statuses {statuses_after:?}, wait {waited_after:?}");
    assert!(slowest < Duration::from_millis(500), "the slowest status took {slowest:?}");
    assert_eq!(starts.pids(), [session], "every call on the one session");
    call(&client, "exec_cancel", json!({"machine": "gpu", "exec_id": id})).await;
}

#[tokio::test]
async fn a_session_killed_mid_wait_is_retried_once_on_a_new_session() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let starts = RpcStarts::machine(&env, &sshd, "");
    let (client, _) = connect_with(&env, &[("CODEX_REMOTE_SESSION_IDLE_SECS", "3")]).await;
    let job = call(&client, "exec_start", json!({"machine": "gpu", "argv": ["sleep", "60"]})).await;
    let id = job["exec_id"].as_str().unwrap().to_string();
    let [session] = starts.pids()[..] else { panic!("one session: {:?}", starts.pids()) };
    let idle_threads = settled(session);

    // A wait is safe to repeat: the session dies under it, and it is asked again on a new one
    // (issue 28: reconnect, don't fail).
    let wait = json!({"machine": "gpu", "exec_id": id, "timeout_seconds": 4});
    let began = Instant::now();
    let (waited, ()) = tokio::join!(call(&client, "exec_wait", wait), async {
        while threads(session) <= idle_threads {
            assert!(began.elapsed() < Duration::from_secs(5), "the wait never reached codexd");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Command::new("kill").args(["-KILL", &session.to_string()]).status().unwrap();
    });
    assert_eq!((&waited["status"], &waited["timed_out"]), (&json!("running"), &json!(true)));
    assert!(began.elapsed() < Duration::from_secs(15), "{:?}", began.elapsed());
    let pids = starts.pids();
    assert_eq!(pids.len(), 2, "the retry opened a new session: {pids:?}");

    let status = call(&client, "exec_status", json!({"machine": "gpu", "exec_id": id})).await;
    assert_eq!(status["status"], "running", "{status}");
    assert_eq!(starts.pids().len(), 2, "the next call used the new session");
    // Idle for 3 s, the session closes; the next call opens another.
    assert!(wait_until(Duration::from_secs(10), || !alive(pids[1])), "idle session still open");
    call(&client, "exec_cancel", json!({"machine": "gpu", "exec_id": id})).await;
    assert_eq!(starts.pids().len(), 3);
}

#[tokio::test]
async fn an_older_codexd_without_concurrent_gets_one_call_per_request() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    // An older codexd: its hello does not report `concurrent`.
    let old = "sed -u -e 's/,\"concurrent\"//' -e 's/\"concurrent\",//'";
    let starts = RpcStarts::machine(&env, &sshd, old);
    let (client, _) = connect(&env).await;
    let job = call(&client, "exec_start", json!({"machine": "gpu", "argv": ["sleep", "60"]})).await;
    let id = job["exec_id"].as_str().unwrap().to_string();
    for _ in 0..3 {
        let status = call(&client, "exec_status", json!({"machine": "gpu", "exec_id": id})).await;
        assert_eq!(status["status"], "running", "{status}");
    }
    let cancelled = call(&client, "exec_cancel", json!({"machine": "gpu", "exec_id": id})).await;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    // The session that asked, then one `codexd rpc` per call.
    assert_eq!(starts.pids().len(), 1 + 5, "{:?}", starts.pids());
}

/// Follows a job's output as a page does (its server-sent events) for `window`; returns the
/// number of `status` events and the `problem` events' data.
fn follow_page(port: u16, token: &str, id: &str, window: Duration) -> (usize, Vec<String>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // HTTP/1.0: the body is the events themselves, not chunks.
    let request = format!(
        "GET /api/jobs/gpu/{id}/logs HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\
         Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let (mut statuses, mut problems) = (0, Vec::new());
    let mut lines = BufReader::new(stream).lines();
    let began = Instant::now();
    while began.elapsed() < window {
        let line = lines.next().expect("the stream goes on").unwrap();
        if line == "event: status" {
            statuses += 1;
        } else if line == "event: problem" {
            problems.push(lines.next().unwrap().unwrap());
        }
    }
    (statuses, problems)
}

#[test]
fn the_dashboard_follows_several_pages_on_one_session_within_max_sessions() {
    let env = TestEnv::new();
    let sshd = Sshd::start_with(env.dir.path(), "MaxSessions 3\n");
    let starts = RpcStarts::machine(&env, &sshd, "");
    let id = env.start("gpu", "while true; do echo tick; sleep 0.2; done");
    let before = starts.pids().len();
    let dash = DashboardProcess::start(&env, "127.0.0.1:0");
    let (port, token) = (dash.port(), dash.token());
    let window = Duration::from_secs(10);
    let pages: Vec<_> = (0..4)
        .map(|_| {
            let (token, id) = (token.clone(), id.clone());
            std::thread::spawn(move || follow_page(port, &token, &id, window))
        })
        .collect();
    for (statuses, problems) in pages.into_iter().map(|p| p.join().unwrap()) {
        assert!(problems.is_empty(), "{problems:?}");
        assert!(statuses >= 10, "{statuses} reads in {window:?}");
    }
    let opened = starts.pids().len() - before;
    assert!(opened <= 2, "{opened} sessions opened for 4 pages over {window:?}");
    env.ok(&["exec", "cancel", "--machine", "gpu", "--id", &id]);
}
