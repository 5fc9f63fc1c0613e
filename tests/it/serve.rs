//! `codexd serve`: the same jobs over HTTP and the Unix socket, faults, and the security checks.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TestEnv, alive, wait_until};

/// A running `codexd serve` on a free port of the test's HOME.
pub struct Serve {
    pub child: Child,
    pub addr: String,
    pub socket: PathBuf,
}

impl Serve {
    pub fn start(env: &TestEnv) -> Serve {
        Self::start_with(env, &[])
    }

    pub fn start_with(env: &TestEnv, extra: &[&str]) -> Serve {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let err_path = env.path("serve.err");
        let mut child = env
            .codexd(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let info: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            let err = std::fs::read_to_string(&err_path).unwrap_or_default();
            panic!("no serving line ({e}): {line:?} {err}")
        });
        assert_eq!(info["type"], "serving", "{info}");
        Serve {
            child,
            addr: info["listen"].as_str().unwrap().to_string(),
            socket: PathBuf::from(info["unix_socket"].as_str().unwrap()),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid()).unwrap();
        let _ = rustix::process::kill_process(pid, sig);
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw HTTP/1.1 exchange; returns the status and the body as JSON (or a string).
pub fn http(addr: &str, request: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    exchange(&mut stream, request)
}

fn unix_http(socket: &Path, request: &str) -> (u16, Value) {
    let mut stream = UnixStream::connect(socket).unwrap();
    exchange(&mut stream, request)
}

fn exchange(stream: &mut (impl Read + Write), request: &str) -> (u16, Value) {
    stream.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    (status, body)
}

pub fn get(path: &str, host: &str, token: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
}

pub fn token(env: &TestEnv) -> String {
    std::fs::read_to_string(env.data_dir().join("token")).unwrap().trim().to_string()
}

/// A config with machine `h`: the serve at `addr` with `token`.
fn http_machine(env: &TestEnv, addr: &str, token: &str) {
    env.set_config(&format!("machines:\n  - name: h\n    addr: {addr}\n    token: \"{token}\"\n"));
}

pub fn zombie_children(pid: i32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let Some((_, rest)) = stat.rsplit_once(')') else { return false };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() == Some(&"Z") && fields.get(1) == Some(&pid.to_string().as_str())
        })
        .count()
}

/// A test HOME with a serve running and machine `h` pointing at it; returns the token too.
pub fn served() -> (TestEnv, Serve, String) {
    let env = TestEnv::new();
    let serve = Serve::start(&env);
    let token = token(&env);
    http_machine(&env, &serve.addr, &token);
    (env, serve, token)
}

#[test]
fn a_job_started_over_rpc_is_read_over_http_and_back() {
    let (env, serve, token) = served();

    // rpc -> HTTP
    let id = env.start("local", "echo from-rpc");
    assert_eq!(env.wait("h", &id)["state"], "succeeded");
    let (_, lines) = env.run(&["exec", "logs", "--machine", "h", "--id", &id]);
    assert_eq!(lines[0]["line"], "from-rpc", "{lines:?}");
    let (status, body) = http(&serve.addr, &get(&format!("/v1/exec/{id}"), "127.0.0.1", &token));
    assert_eq!((status, body["exec_id"].as_str()), (200, Some(id.as_str())), "{body}");
    let (status, body) =
        http(&serve.addr, &get(&format!("/v1/exec/{id}/logs?tail_lines=1"), "localhost", &token));
    assert_eq!((status, &body["lines"][0]["line"]), (200, &Value::from("from-rpc")), "{body}");

    // HTTP -> rpc, through the whole exec set over HTTP.
    let (code, run) =
        env.run(&["exec", "run", "--machine", "h", "--cmd", "echo from-http; exit 3"]);
    assert_eq!(code, 3, "{run:?}");
    let id2 = run[0]["exec_id"].as_str().unwrap().to_string();
    assert_eq!(env.ok(&["exec", "result", "--id", &id2])["exit_code"], 3);
    let (_, lines) = env.run(&["exec", "logs", "--id", &id2]);
    assert_eq!(lines[0]["line"], "from-http");
    let list = env.ok(&["exec", "list", "--machine", "h"]);
    assert_eq!(list["jobs"].as_array().unwrap().len(), 2, "{list}");
    let long = env.start("h", "sleep 60");
    let (code, _) =
        env.run(&["exec", "wait", "--machine", "h", "--id", &long, "--timeout", "100ms"]);
    assert_eq!(code, 124);
    assert_eq!(env.ok(&["exec", "cancel", "--machine", "h", "--id", &long])["state"], "cancelled");

    // The Unix socket: 0600, no token needed (its mode is the check).
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&serve.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (status, body) = unix_http(
        &serve.socket,
        "GET /v1/exec?limit=10 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((status, body["jobs"].as_array().map(Vec::len)), (200, Some(3)), "{body}");

    // Workers that ended were reaped by serve: no zombies left behind.
    assert!(wait_until(Duration::from_secs(5), || zombie_children(serve.pid()) == 0));
}

#[test]
fn serve_killed_and_restarted_mid_job_loses_nothing() {
    let (env, serve, token) = served();
    let start = env.ok(&[
        "exec",
        "start",
        "--machine",
        "h",
        "--cmd",
        "for i in $(seq 1 30); do echo line$i; sleep 0.05; done",
    ]);
    let id = start["exec_id"].as_str().unwrap().to_string();
    let worker = env.started("h", &id)["worker_pid"].as_i64().unwrap() as i32;
    serve.signal(rustix::process::Signal::KILL);
    drop(serve);
    assert!(alive(worker), "the job's worker outlives serve");

    // A new serve on the same data dir (the stale socket and lock are taken over).
    let serve = Serve::start(&env);
    http_machine(&env, &serve.addr, &token);
    let (_, lines) =
        env.run(&["exec", "logs", "--machine", "h", "--id", &id, "--since", "0", "--follow"]);
    let text: Vec<String> =
        lines.iter().filter_map(|l| l["line"].as_str().map(String::from)).collect();
    let expected: Vec<String> = (1..=30).map(|i| format!("line{i}")).collect();
    assert_eq!(text, expected);
    assert_eq!(lines.last().unwrap()["state"], "succeeded");
}

#[test]
fn one_serve_per_data_dir_and_sigterm_stops_it_cleanly() {
    let (env, mut serve, _) = served();
    let out = env.codexd(&["serve", "--listen", "127.0.0.1:0"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already running"), "{stderr}");

    // A follow stream is open when SIGTERM comes: it is ended, not waited for.
    let id = env.start("h", "sleep 60");
    let mut follow = env
        .remote(&["exec", "logs", "--machine", "h", "--id", &id, "--follow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let job = env.started("h", &id);
    let started = std::time::Instant::now();
    serve.signal(rustix::process::Signal::TERM);
    let status = serve.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5), "stopped in {:?}", started.elapsed());
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(alive(job["pid"].as_i64().unwrap() as i32), "the job outlives serve");
    env.ok(&["exec", "cancel", "--id", &id]);
    assert!(!serve.socket.exists(), "the socket is removed on the way out");
    assert!(!env.data_dir().join("serve.json").exists());
}

#[test]
fn wrong_token_host_or_origin_are_refused() {
    let (env, serve, token) = served();
    http_machine(&env, &serve.addr, "not-the-token");
    // The server cannot prove it holds a token it does not have: the client sends nothing.
    let e = env.err(&["exec", "list", "--machine", "h"], "foreign_daemon", 3);
    assert!(e["message"].as_str().unwrap().contains("token"), "{e}");

    let (status, body) = http(&serve.addr, &get("/v1/exec", "evil.example:7337", &token));
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("Host"), "{body}");

    let with_origin = format!(
        "GET /v1/exec HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n\
         Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = http(&serve.addr, &with_origin);
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");

    let (status, body) = http(&serve.addr, &get("/v1/exec", "127.0.0.1", ""));
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{body}");
    // The right token and Host pass.
    assert_eq!(http(&serve.addr, &get("/v1/exec", "127.0.0.1", &token)).0, 200);
}

#[test]
fn a_foreign_daemon_on_the_port_is_detected_and_never_sent_the_token() {
    let env = TestEnv::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Another user's daemon: its /health says it is codexd, run by mallory.
    let fake = std::thread::spawn(move || {
        let mut seen = Vec::new();
        listener.set_nonblocking(false).unwrap();
        for stream in listener.incoming().take(1) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let body = r#"{"ok":true,"service":"codexd","version":"0.1.0","protocol":1,"user":"mallory","uid":4242}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        seen
    });
    http_machine(&env, &addr, "secret-token");
    let e = env.err(&["exec", "list", "--machine", "h"], "foreign_daemon", 3);
    assert!(e["message"].as_str().unwrap().contains("mallory"), "{e}");
    let seen = fake.join().unwrap();
    assert_eq!(seen.len(), 1);
    // Only the challenge went out: the proof check comes before any token.
    assert!(seen[0].starts_with("GET /health?challenge="), "{seen:?}");
    assert!(!seen[0].contains("secret-token"), "the token went to a foreign daemon");
}

#[test]
fn a_cwd_outside_home_and_the_allowed_roots_is_refused() {
    let env = TestEnv::new();
    let outside = env.path("outside");
    let allowed = env.path("allowed");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(&allowed).unwrap();
    std::os::unix::fs::symlink(&outside, env.home.join("sneaky")).unwrap();
    let config = env.path("codexd.yaml");
    std::fs::write(&config, format!("allowed_cwd_roots: [\"{}\"]\n", allowed.display())).unwrap();
    let serve = Serve::start_with(&env, &["--config", config.to_str().unwrap()]);
    http_machine(&env, &serve.addr, &token(&env));

    let e = env.err(
        &["exec", "start", "--machine", "h", "--cwd", outside.to_str().unwrap(), "--cmd", "true"],
        "forbidden",
        4,
    );
    assert!(e["message"].as_str().unwrap().contains("allowed_cwd_roots"), "{e}");
    // A symlink in the home that leads outside is resolved first.
    env.err(
        &["exec", "start", "--machine", "h", "--cwd", "~/sneaky", "--cmd", "true"],
        "forbidden",
        4,
    );
    let ok = env.ok(&[
        "exec",
        "start",
        "--machine",
        "h",
        "--cwd",
        allowed.to_str().unwrap(),
        "--cmd",
        "pwd",
    ]);
    assert_eq!(env.wait("h", ok["exec_id"].as_str().unwrap())["state"], "succeeded");
    // No job dir was created for the refused starts.
    assert_eq!(std::fs::read_dir(env.data_dir().join("jobs")).unwrap().count(), 1);
}

#[test]
fn health_proves_the_token_for_a_challenge_and_says_who_runs_it() {
    let (_env, serve, token) = served();
    let challenge = codex_runner::auth::random_token().unwrap();
    for (door, answer) in [
        (
            "tcp",
            http(&serve.addr, &get(&format!("/health?challenge={challenge}"), "127.0.0.1", "")),
        ),
        (
            "unix",
            unix_http(
                &serve.socket,
                &format!(
                    "GET /health?challenge={challenge} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                ),
            ),
        ),
    ] {
        let (status, body) = answer;
        assert_eq!(status, 200, "{door}: {body}");
        let proof = body["proof"].as_str().expect("a proof");
        assert!(codex_runner::auth::verify(&token, &challenge, proof), "{door}: {body}");
        assert!(!codex_runner::auth::verify("another-token", &challenge, proof));
        // The proof a client of ours checks binds a fresh nonce and who the server says it is.
        let nonce = body["nonce"].as_str().expect("a nonce");
        let (uid, user) = (body["uid"].as_u64().unwrap() as u32, body["user"].as_str().unwrap());
        let proof = body["nonce_proof"].as_str().expect("a nonce_proof");
        let check = |t: &str, u: u32| {
            codex_runner::auth::verify_health_proof(t, &challenge, nonce, u, user, proof)
        };
        assert!(check(&token, uid), "{door}: {body}");
        assert!(!check("another-token", uid) && !check(&token, uid + 1));
    }

    // Without a challenge: the fields old clients read, and no proof.
    let (status, body) = http(&serve.addr, &get("/health", "127.0.0.1", ""));
    assert_eq!(status, 200);
    assert_eq!(body.get("proof"), None, "{body}");
    assert_eq!((body["ok"].as_bool(), body["service"].as_str()), (Some(true), Some("codexd")));
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["uid"].as_u64(), Some(u64::from(rustix::process::getuid().as_raw())));
    assert_eq!(body["pid"].as_i64(), Some(i64::from(serve.pid())));
    for field in ["protocol", "user", "host", "data_dir", "capabilities"] {
        assert!(body.get(field).is_some(), "{field} in {body}");
    }

    // A malformed challenge is refused as JSON, not hashed.
    for bad in ["abc", "zz", &"a".repeat(200)] {
        let (status, body) =
            http(&serve.addr, &get(&format!("/health?challenge={bad}"), "127.0.0.1", ""));
        assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "{bad}: {body}");
    }
}

#[test]
fn allow_bearer_false_refuses_the_token_as_bearer_and_codex_remote_still_signs_its_way_in() {
    let env = TestEnv::new();
    let config = env.path("codexd.yaml");
    std::fs::write(&config, "allow_bearer: false\n").unwrap();
    let serve = Serve::start_with(&env, &["--config", config.to_str().unwrap()]);
    let token = token(&env);
    http_machine(&env, &serve.addr, &token);
    let (status, body) = http(&serve.addr, &get("/v1/exec", "127.0.0.1", &token));
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{body}");
    let challenge = codex_runner::auth::random_token().unwrap();
    let (_, health) =
        http(&serve.addr, &get(&format!("/health?challenge={challenge}"), "127.0.0.1", ""));
    assert_eq!(health.get("proof"), None, "no older proof to lure old clients: {health}");
    assert!(health["nonce_proof"].is_string(), "{health}");
    let id = env.start("h", "true");
    assert_eq!(env.wait("h", &id)["state"], "succeeded");
}

#[test]
fn every_refusal_is_a_json_error_and_a_script_up_to_the_line_limit_passes() {
    let (_env, serve, token) = served();
    // The scheme is case-insensitive (RFC 7235).
    let lower = format!(
        "GET /v1/exec HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: bearer {token}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(http(&serve.addr, &lower).0, 200);

    let (status, body) = http(&serve.addr, &get("/v1/nope", "127.0.0.1", &token));
    assert_eq!((status, body["code"].as_str()), (404, Some("bad_request")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("GET /v1/nope"), "{body}");
    // A job id in the path is checked before any handler: `invalid_id`, the Go-era one saying so.
    for (path, says) in [
        ("/v1/exec/..%2F..%2Fetc", "not a job id"),
        ("/v1/exec/0123456789abcdef0123456789abcdef/logs", "original Go"),
        ("/v1/exec/01a20e39-2841-466b-a16c-ac422b0e3096/wait", "not a job id"),
    ] {
        let (status, body) = http(&serve.addr, &get(path, "127.0.0.1", &token));
        assert_eq!((status, body["code"].as_str()), (400, Some("invalid_id")), "{path}: {body}");
        assert!(body["message"].as_str().unwrap().contains(says), "{path}: {body}");
    }
    let put = format!(
        "PUT /v1/exec HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = http(&serve.addr, &put);
    assert_eq!((status, body["code"].as_str()), (405, Some("bad_request")), "{body}");

    // A 3 MiB script (over axum's 2 MB default) starts a job through the original tool's route.
    let post = |body: &str| {
        format!(
            "POST /v1/exec HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let script = format!("# {}\necho big-script-ran", "x".repeat(3 << 20));
    let request = serde_json::json!({ "cmd": script }).to_string();
    let (status, body) = http(&serve.addr, &post(&request));
    assert_eq!(status, 200, "{body}");
    assert!(body["exec_id"].is_string(), "{body}");

    // Over the 4 MiB limit: a JSON 413. The server may stop reading the body and close, so
    // the body goes from a thread whose write may fail, and the answer is what arrived.
    let big = "x".repeat(5 << 20);
    let mut stream = TcpStream::connect(&serve.addr).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let request = post(&big);
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(request.as_bytes());
    });
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let _ = sending.join();
    let text = String::from_utf8_lossy(&answer);
    let final_head = text.rsplit("HTTP/1.1 ").next().unwrap_or_default();
    let body: Value = final_head
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or_default();
    assert!(final_head.starts_with("413"), "{text}");
    assert_eq!(body["code"], "request_too_large", "{text}");
}

#[test]
fn post_exec_run_streams_started_logs_and_finished_as_the_original_tool() {
    let (env, serve, token) = served();
    let body = r#"{"cmd":"echo out; echo err >&2; exit 3","cwd":"","env":{"X":"1"}}"#;
    let request = format!(
        "POST /v1/exec/run HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(&serve.addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("application/x-ndjson"), "{head}");
    let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (first, last) = (&lines[0], lines.last().unwrap());
    assert_eq!((&first["type"], &first["status"]), (&json!("started"), &json!("running")));
    let id = first["exec_id"].as_str().unwrap();
    let logs: Vec<(&str, &str)> = lines[1..lines.len() - 1]
        .iter()
        .map(|l| (l["stream"].as_str().unwrap(), l["line"].as_str().unwrap()))
        .collect();
    assert!(logs.contains(&("stdout", "out")) && logs.contains(&("stderr", "err")), "{lines:?}");
    assert_eq!(
        (&last["type"], last["exec_id"].as_str(), &last["status"], &last["exit_code"]),
        (&json!("finished"), Some(id), &json!("finished"), &json!(3)),
        "{last}"
    );
    assert!(last["finished_at"].is_string() && last.get("machine").is_none(), "{last}");
    assert_eq!(env.ok(&["exec", "result", "--machine", "h", "--id", id])["exit_code"], 3);

    // A refused start is a JSON error with its status, before any stream.
    let body = r#"{"cmd":""}"#;
    let (status, answer) = http(
        &serve.addr,
        &format!(
            "POST /v1/exec/run HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!((status, &answer["type"]), (400, &json!("error")), "{answer}");
}

/// An older codex-remote signs with version 1 (no `v=`): its request line still runs, but the
/// bytes after the line are not covered by its signature, so a request that reads them is
/// refused `unauthorized` and writes nothing. The same bytes on the 0600 socket, unsigned, pass.
#[test]
fn a_version_1_signature_runs_its_line_but_never_its_unsigned_bytes() {
    use codex_runner::auth::{Signed, random_token, sha256_hex, unix_now};
    let (env, serve, token) = served();
    let rpc = |auth: &str, line: &str, tail: &str| {
        let body = format!("{line}\n{tail}");
        format!(
            "POST /v1/rpc HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let last_line = |(status, answer): (u16, Value)| -> (u16, Value) {
        let text = answer.as_str().map(|t| t.trim().lines().last().unwrap_or("").to_string());
        (status, text.map_or(answer, |t| serde_json::from_str(&t).unwrap()))
    };
    let post_v1 = |line: &str, tail: &str| {
        let challenge = random_token().unwrap();
        let health = get(&format!("/health?challenge={challenge}"), "127.0.0.1", "");
        let (_, health) = http(&serve.addr, &health);
        let signed = Signed {
            method: "POST".into(),
            path_and_query: "/v1/rpc".into(),
            body: sha256_hex(line.as_bytes()),
            ts: unix_now(),
            nonce: health["nonce"].as_str().unwrap().into(),
            cnonce: challenge,
            version: 1,
        };
        let auth = format!("Authorization: {}\r\n", signed.authorization(&token));
        last_line(http(&serve.addr, &rpc(&auth, line, tail)))
    };
    let (status, list) = post_v1(r#"{"id":1,"type":"exec_list"}"#, "");
    assert_eq!(status, 200, "{list}");
    assert_ne!(list["type"], "error", "{list}");
    let path = env.home.join("unsigned.txt");
    let line = |id: u32| json!({"id": id, "type": "file_write", "path": path, "size": 6});
    let (_, refused) = post_v1(&line(2).to_string(), "forged");
    assert_eq!(refused["code"], "unauthorized", "{refused}");
    assert!(!path.exists(), "the unsigned bytes were written");
    let (_, written) =
        last_line(unix_http(&serve.socket, &rpc("", &line(3).to_string(), "plain!")));
    assert_ne!(written["type"], "error", "{written}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "plain!");
}
