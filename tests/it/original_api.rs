//! The original Go tool's HTTP requests against our `codexd serve`, sent as its client sends
//! them (`internal/codexremote/client/client.go`: Go's `json.Marshal` of its structs, `mode`
//! and `mkdir_p` left out when zero), its answers checked field by field.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::files::post;
use crate::serve::Serve;
use crate::support::{TestEnv, wait_until};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn token(env: &TestEnv) -> String {
    std::fs::read_to_string(env.data_dir().join("token")).unwrap().trim().to_string()
}

/// A POST of a JSON value; the status and the answer as JSON.
fn post_json(serve: &Serve, token: &str, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = post(&serve.addr, path, token, body.to_string().as_bytes());
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text:?}"));
    (status, v)
}

/// A serve whose codexd allows `allowed` and caps files at `max` bytes.
fn serve_with(env: &TestEnv, allowed: &std::path::Path, max: u64) -> Serve {
    std::fs::create_dir_all(allowed).unwrap();
    std::fs::create_dir_all(env.data_dir()).unwrap();
    std::fs::write(
        env.data_dir().join("config.yaml"),
        format!("allowed_cwd_roots: [\"{}\"]\nmax_file_size: {max}\n", allowed.display()),
    )
    .unwrap();
    Serve::start(env)
}

#[test]
fn the_original_file_routes_take_and_answer_its_shapes() {
    let env = TestEnv::new();
    let allowed = env.path("allowed");
    let serve = serve_with(&env, &allowed, 4096);
    let token = token(&env);
    let binary: Vec<u8> = (0..=255u8).rev().chain(0..=255).collect();

    // Its `file write --mkdir --mode 0755`: base64 content, an integer mode, mkdir_p.
    let dst = env.home.join("new/dir/tool.bin");
    let body = json!({"path": dst, "content": b64(&binary), "mode": 0o755, "mkdir_p": true});
    let (status, v) = post_json(&serve, &token, "/v1/file/write", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["path"], dst.display().to_string());
    assert_eq!(v["bytes_written"], 512);
    assert_eq!(std::fs::read(&dst).unwrap(), binary, "the bytes, not their base64");
    let mode = std::fs::metadata(&dst).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755);
    // Atomic: nothing but the file is left in its directory.
    let names: Vec<_> = std::fs::read_dir(dst.parent().unwrap()).unwrap().collect();
    assert_eq!(names.len(), 1, "{names:?}");

    // Mode and mkdir_p left out (Go's omitempty): 0644 in an existing directory, even over a
    // file that had another mode; the data dir, /tmp and an allowed root are its roots.
    std::fs::write(allowed.join("old"), "x").unwrap();
    std::fs::set_permissions(allowed.join("old"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let tmp = tempfile::Builder::new().prefix("codex-compat").tempdir_in("/tmp").unwrap();
    for path in [allowed.join("old"), env.data_dir().join("note"), tmp.path().join("t")] {
        let body = json!({"path": path, "content": b64(b"hi there")});
        let (status, v) = post_json(&serve, &token, "/v1/file/write", &body);
        assert_eq!((status, &v["bytes_written"]), (200, &json!(8)), "{path:?}: {v}");
        assert_eq!(std::fs::read(&path).unwrap(), b"hi there", "{path:?}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{path:?}");
    }

    // Its `file read`: the whole file as base64.
    let (status, v) = post_json(&serve, &token, "/v1/file/read", &json!({"path": dst}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["path"], dst.display().to_string());
    assert_eq!(v["size"], 512);
    let content = v["content"].as_str().unwrap();
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(content).unwrap(), binary);

    // Refusals: its status codes, its `error` text beside our code; nothing written.
    // Not under the home, the data dir, /tmp (the test's home is there) or the allowed root.
    let outside = std::path::PathBuf::from("/etc/codex-compat-test/x");
    let big = vec![b'z'; 5000];
    std::fs::write(env.home.join("big"), &big).unwrap();
    let refused = [
        ("/v1/file/write", json!({"content": b64(b"x")}), 400, "bad_request"),
        ("/v1/file/write", json!({"path": "rel/x", "content": b64(b"x")}), 400, "bad_request"),
        (
            "/v1/file/write",
            json!({"path": env.home.join("b"), "content": "%%%"}),
            400,
            "bad_request",
        ),
        (
            "/v1/file/write",
            json!({"path": env.home.join("s"), "content": b64(b"x"), "mode": "0644"}),
            400,
            "bad_request",
        ),
        ("/v1/file/write", json!({"path": outside, "content": b64(b"x")}), 403, "forbidden"),
        (
            "/v1/file/write",
            json!({"path": env.home.join("w"), "content": b64(&big)}),
            413,
            "file_too_large",
        ),
        ("/v1/file/read", json!({"path": env.home.join("missing")}), 404, "file_not_found"),
        ("/v1/file/read", json!({"path": env.home}), 400, "bad_request"),
        ("/v1/file/read", json!({"path": "/etc/hostname"}), 403, "forbidden"),
        ("/v1/file/read", json!({"path": env.home.join("big")}), 413, "file_too_large"),
    ];
    for (route, body, want, code) in refused {
        let (status, v) = post_json(&serve, &token, route, &body);
        assert_eq!((status, v["code"].as_str()), (want, Some(code)), "{route} {body}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    for name in ["b", "s", "w"] {
        assert!(!env.home.join(name).exists(), "{name} was written");
    }
    assert!(!outside.exists());

    // Ours lives at its own path: text `content`, `content_b64`, octal text `mode`, `mkdir`.
    let body =
        json!({"path": "ours/a.txt", "content": "aGkgdGhlcmU=", "mode": "0600", "mkdir": true});
    let (status, v) = post_json(&serve, &token, "/v1/files/write", &body);
    assert_eq!((status, &v["type"]), (200, &json!("file_written")), "{v}");
    assert_eq!(std::fs::read_to_string(env.home.join("ours/a.txt")).unwrap(), "aGkgdGhlcmU=");
}

/// A finished job with `alpha\nbeta\ngamma\n` on stdout, started over HTTP.
fn finished_job(env: &TestEnv, serve: &Serve, token: &str) -> String {
    let body = json!({"cmd": "printf 'alpha\\nbeta\\ngamma\\n'"});
    let (status, v) = post_json(serve, token, "/v1/exec", &body);
    assert_eq!(status, 200, "{v}");
    let id = v["exec_id"].as_str().unwrap().to_string();
    env.wait("local", &id);
    id
}

fn get(serve: &Serve, token: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(&serve.addr).unwrap();
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut text = Vec::new();
    stream.read_to_end(&mut text).unwrap();
    let text = String::from_utf8_lossy(&text).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_string())
}

/// The `line`s of a chunked NDJSON answer's `log` lines.
fn log_lines(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "log")
        .map(|v| v["line"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn logs_over_http_take_tail_and_tail_lines_as_the_original_and_refuse_with_a_status() {
    let env = TestEnv::new();
    let serve = serve_with(&env, &env.path("allowed"), 1 << 20);
    let token = token(&env);
    let id = finished_job(&env, &serve, &token);
    let logs = |query: &str| get(&serve, &token, &format!("/v1/exec/{id}/logs?{query}"));

    // Its `exec logs --tail-lines 2`: `tail=2000` beside `tail_lines`, and the lines win.
    let (status, body) = logs("stream=stdout&tail=2000&tail_lines=2&format=jsonl");
    assert_eq!(status, 200, "{body}");
    assert_eq!(log_lines(&body), ["beta", "gamma"]);
    // Its `--tail 9` lands inside `beta`: the fragment is dropped, as the original did.
    let (status, body) = logs("stream=stdout&tail=9&format=jsonl");
    assert_eq!((status, log_lines(&body)), (200, vec!["gamma".to_string()]), "{body}");
    // `full=true`: everything.
    let (_, body) = logs("stream=stdout&tail=2&full=true&format=jsonl");
    assert_eq!(log_lines(&body), ["alpha", "beta", "gamma"]);

    // Refusals are statuses, never a 200 with an error line (its client reads 2xx as success).
    for query in
        ["tail_lines=-1&format=jsonl", "since=nonsense&format=jsonl", "follow=true&until=1m"]
    {
        let (status, body) = logs(query);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains("\"type\":\"error\""), "{query}: {body}");
    }
    let (status, body) =
        get(&serve, &token, "/v1/exec/01900000-0000-7000-8000-000000000000/logs?format=jsonl");
    assert_eq!(status, 404, "{body}");
}

#[test]
fn exec_logs_tail_drops_a_partial_first_line() {
    let env = TestEnv::new();
    let id = env.start("local", "printf 'alpha\\nbeta\\ngamma\\n'");
    env.wait("local", &id);
    let (code, lines) = env.run(&["exec", "logs", "--id", &id, "--tail", "9"]);
    assert_eq!(code, 0, "{lines:?}");
    let texts: Vec<_> = lines.iter().filter(|v| v["type"] == "log").map(|v| &v["line"]).collect();
    assert_eq!(texts, ["gamma"], "{lines:?}");
    let end = lines.last().unwrap();
    assert_eq!(end["type"], "logs_end");
    // A tail at a line start keeps that line.
    let (_, lines) = env.run(&["exec", "logs", "--id", &id, "--tail", "11"]);
    let texts: Vec<_> = lines.iter().filter(|v| v["type"] == "log").map(|v| &v["line"]).collect();
    assert_eq!(texts, ["beta", "gamma"], "{lines:?}");
}

#[test]
fn json_output_carries_the_original_fields_beside_ours() {
    let env = TestEnv::new();
    let dst = env.home.join("f.txt");
    let dst = dst.to_str().unwrap();
    let w = env.ok(&["file", "write", "--dst", dst, "--content", "hello"]);
    assert_eq!((&w["ok"], &w["bytes_written"], &w["size"]), (&json!(true), &json!(5), &json!(5)));
    let r = env.ok(&["file", "read", "--path", dst]);
    assert_eq!(
        (&r["ok"], &r["content"], &r["data_b64"]),
        (&json!(true), &json!("aGVsbG8="), &json!("aGVsbG8="))
    );

    let started = env.ok(&["exec", "start", "--cmd", "sleep 30"]);
    assert!(started.as_object().unwrap().contains_key("base_url"), "{started}");
    let id = started["exec_id"].as_str().unwrap();
    let c = env.ok(&["exec", "cancel", "--id", id, "--grace", "1s"]);
    assert_eq!((&c["canceled"], &c["state"]), (&json!(true), &json!("cancelled")), "{c}");

    let (_, d) = env.run(&["exec", "doctor"]);
    let d = d.last().unwrap();
    assert_eq!(d["overall_ok"], d["ok"], "{d}");
    assert!(d["hints"].is_array(), "{d}");
    let health = d["checks"].as_array().unwrap().iter().find(|c| c["name"] == "codexd_health");
    assert_eq!(health.map(|c| &c["ok"]), Some(&json!(true)), "{d}");
    assert!(health.unwrap().get("hint").is_none(), "{d}");

    let src = env.path("tree");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), "a").unwrap();
    let to = env.home.join("tree");
    let s = env.ok(&[
        "sync",
        "push",
        "--src",
        &format!("{}/", src.display()),
        "--dst",
        to.to_str().unwrap(),
    ]);
    assert_eq!(
        (&s["ok"], &s["mode"], &s["direction"]),
        (&json!(true), &json!("push"), &json!("push"))
    );
    assert_eq!((&s["delete"], &s["exclude"]), (&json!(false), &json!([])), "{s}");
}

/// The running `exec run`, its job's id and the thread that collects its lines.
type Run = (std::process::Child, String, std::thread::JoinHandle<Vec<Value>>);

/// `exec run`, its first output line seen, then SIGINT.
fn run_until_started(env: &TestEnv, args: &[&str]) -> Run {
    let err = std::fs::File::create(env.path("run.err")).unwrap();
    let mut child =
        env.remote(args).stdout(std::process::Stdio::piped()).stderr(err).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (rx, reader) = crate::support::relay_json_lines(stdout);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut id = String::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let v = rx.recv_timeout(left).expect("the job's first line was never relayed");
        if v["type"] == "started" {
            id = v["exec_id"].as_str().unwrap().to_string();
        }
        if v["line"] == "started" {
            break;
        }
    }
    interrupt(&child);
    (child, id, reader)
}

fn interrupt(child: &std::process::Child) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
}

#[test]
fn ctrl_c_on_exec_run_cancels_the_job_and_prints_its_end() {
    let env = TestEnv::new();
    let marker = env.path("finished");
    let cmd = format!("echo started; sleep 30; touch {}", marker.display());
    let (mut child, _, reader) = run_until_started(&env, &["exec", "run", "--cmd", &cmd]);
    let status = child.wait().unwrap();
    let lines = reader.join().unwrap();
    let last = lines.last().unwrap();
    assert_eq!(
        (&last["type"], &last["state"]),
        (&json!("finished"), &json!("cancelled")),
        "{lines:?}"
    );
    // The job's own code: killed by TERM.
    assert_eq!(status.code(), Some(128 + 15), "{lines:?}");
    let id = last["exec_id"].as_str().unwrap();
    assert_eq!(env.ok(&["exec", "result", "--id", id])["state"], "cancelled");
    assert!(!marker.exists());
}

#[test]
fn a_second_ctrl_c_leaves_while_the_cancel_waits_out_the_grace() {
    let env = TestEnv::new();
    // The job ignores TERM: the cancel waits the whole grace (5 s) before KILL.
    let cmd = "trap '' TERM; echo started; sleep 30";
    let (mut child, id, reader) = run_until_started(&env, &["exec", "run", "--cmd", cmd]);
    let asked = wait_until(Duration::from_secs(10), || {
        !env.ok(&["exec", "result", "--id", &id])["cancel_requested_at"].is_null()
    });
    assert!(asked, "the first Ctrl-C sent no cancel");
    let second = std::time::Instant::now();
    interrupt(&child);
    let status = child.wait().unwrap();
    assert!(second.elapsed() < Duration::from_secs(3), "{:?}", second.elapsed());
    assert_eq!(status.code(), Some(130));
    let lines = reader.join().unwrap();
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "detached", "{lines:?}");
    // What happened and how to check it: the job is being cancelled, not left running.
    let check = format!("codex-remote exec result --machine local --id {id}");
    assert_eq!(last["hint"], check, "{lines:?}");
    let stderr = std::fs::read_to_string(env.path("run.err")).unwrap();
    assert!(stderr.contains("the job is being cancelled"), "{stderr}");
    assert!(stderr.contains(&check) && stderr.contains("exec cancel"), "{stderr}");
    assert!(!stderr.contains("the job goes on"), "{stderr}");
    // The cancel goes on: the job ends cancelled.
    assert_eq!(env.wait("local", &id)["state"], "cancelled");
}

#[test]
fn codexd_health_says_what_to_do_when_codexd_is_not_reached() {
    // ssh to a port nothing listens on: the transport fails, codexd is never reached.
    let env = TestEnv::with_config(
        "machines:\n  - name: down\n    ssh: root@127.0.0.1\n    \
         ssh_args: [\"-p\", \"1\", \"-o\", \"BatchMode=yes\"]\n",
    );
    let (code, lines) = env.run(&["exec", "doctor", "-m", "down"]);
    assert_eq!(code, 1, "{lines:?}");
    let d = lines.last().unwrap();
    let health = d["checks"].as_array().unwrap().iter().find(|c| c["name"] == "codexd_health");
    let health = health.unwrap_or_else(|| panic!("no codexd_health: {d}"));
    assert_eq!(health["ok"], false, "{d}");
    let hint = health["hint"].as_str().unwrap_or_else(|| panic!("no hint: {d}"));
    assert!(hint.contains("codex-remote machine"), "{hint}");
}

#[test]
fn the_original_clients_cancel_reads_canceled_from_our_serve() {
    let env = TestEnv::new();
    let serve = serve_with(&env, &env.path("allowed"), 1 << 20);
    let token = token(&env);
    let (status, v) = post_json(&serve, &token, "/v1/exec", &json!({"cmd": "sleep 30"}));
    assert_eq!(status, 200, "{v}");
    let id = v["exec_id"].as_str().unwrap().to_string();
    // Its client's request: a POST without a body (`http.NewRequest(..., nil)`).
    let (status, text) = post(&serve.addr, &format!("/v1/exec/{id}/cancel"), &token, b"");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(status, 200, "{v}");
    assert_eq!((&v["canceled"], &v["exec_id"]), (&json!(true), &json!(id)), "{v}");
    assert_eq!(v["type"], "status", "ours beside it: {v}");
    assert_eq!(env.wait("local", &id)["state"], "cancelled");
    // An unknown job: a 404 with our error, no `canceled`.
    let unknown = "/v1/exec/01900000-0000-7000-8000-000000000000/cancel";
    let (status, text) = post(&serve.addr, unknown, &token, b"");
    assert_eq!(status, 404, "{text}");
    assert!(!text.contains("canceled"), "{text}");
}
