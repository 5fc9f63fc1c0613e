//! `codexd serve` under a flood of half-open connections: neither door starves (issue 12, 3).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rustix::process::{Resource, Rlimit, getrlimit, prlimit, setrlimit};
use serde_json::Value;

use crate::serve::{Serve, get, token};
use crate::support::{TestEnv, wait_until};

/// Half-open TCP connections: more than the 1,024 files serve may open.
const TCP_FLOOD: usize = 1100;
/// Half-open connections on the Unix socket (its own budget is 128).
const UNIX_FLOOD: usize = 300;
/// A request head that never ends.
const HALF_OPEN: &[u8] = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n";
/// Generous deadline for an answer (on an idle machine it takes milliseconds).
const ANSWER_DEADLINE: Duration = Duration::from_secs(20);

/// One request with a deadline on the answer; returns the status and the body as JSON.
fn exchange(stream: &mut (impl Read + Write), request: &str) -> (u16, Value) {
    stream.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("0").parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::String(body.to_string())))
}

/// Whether serve still holds the connection open (it neither closed nor reset it).
fn held(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.peek(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

fn open_files(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn a_flood_of_half_open_connections_starves_neither_door() {
    // The test holds the flood: it needs more files than the usual 1,024.
    let limit = getrlimit(Resource::Nofile);
    let want = (TCP_FLOOD + UNIX_FLOOD + 512) as u64;
    if limit.current.is_some_and(|c| c < want) {
        let raised = Rlimit { current: Some(want), maximum: limit.maximum.map(|m| m.max(want)) };
        setrlimit(Resource::Nofile, raised).expect("raising RLIMIT_NOFILE (the tests run as root)");
    }
    let env = TestEnv::new();
    let serve = Serve::start(&env);
    let token = token(&env);
    // serve as a login shell starts it: 1,024 open files at most (the attack's setting).
    let pid = rustix::process::Pid::from_raw(serve.pid()).unwrap();
    let hard = getrlimit(Resource::Nofile).maximum;
    prlimit(Some(pid), Resource::Nofile, Rlimit { current: Some(1024), maximum: hard }).unwrap();

    let tcp_flood: Vec<TcpStream> = (0..TCP_FLOOD)
        .map(|_| {
            let mut s = TcpStream::connect(&serve.addr).unwrap();
            s.write_all(HALF_OPEN).unwrap();
            s
        })
        .collect();
    let unix_flood: Vec<UnixStream> = (0..UNIX_FLOOD)
        .map(|_| {
            let mut s = UnixStream::connect(&serve.socket).unwrap();
            s.write_all(HALF_OPEN).unwrap();
            s
        })
        .collect();

    // The owner's requests, on both doors, while the whole flood is still connected.
    let started = Instant::now();
    let mut tcp = TcpStream::connect(&serve.addr).unwrap();
    tcp.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
    let (status, body) = exchange(&mut tcp, &get("/v1/exec", "127.0.0.1", &token));
    assert_eq!((status, body["type"].as_str()), (200, Some("list")), "{body}");
    let tcp_took = started.elapsed();
    let started = Instant::now();
    let mut unix = UnixStream::connect(&serve.socket).unwrap();
    unix.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
    let request = "GET /v1/exec HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let (status, body) = exchange(&mut unix, request);
    assert_eq!((status, body["type"].as_str()), (200, Some("list")), "{body}");
    let unix_took = started.elapsed();

    let files = open_files(serve.pid());
    let still_open = || tcp_flood.iter().filter(|s| held(s)).count();
    // Evicted connections are closed by their tasks, a moment after they give way.
    wait_until(Duration::from_secs(5), || still_open() <= 64);
    let still_open = still_open();
    eprintln!(
        "flood: {} TCP + {} Unix half-open connections held by the client; serve kept {still_open} \
         TCP ones open and {files} files; answered over TCP in {tcp_took:?}, over the socket in \
         {unix_took:?}",
        tcp_flood.len(),
        unix_flood.len()
    );
    assert!(files < 1024 - 256, "serve holds {files} files: the flood is not capped");
    assert!(still_open <= 64, "{still_open} half-open connections of one peer kept");

    // The ones it kept are closed by the header timeout (10 s).
    let closed = wait_until(Duration::from_secs(30), || tcp_flood.iter().all(|s| !held(s)));
    assert!(closed, "half-open connections outlive the header timeout");
}
