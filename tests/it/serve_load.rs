//! `codexd serve` and the dashboard under floods of half-open connections and slow bodies:
//! neither door starves (issue 12, 3; issue 26, 5).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Resource, Rlimit, getrlimit, prlimit, setrlimit};
use serde_json::Value;

use crate::dashboard::DashboardProcess;
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

/// One request with a deadline on the answer; returns the status and the body as JSON (status
/// 0: the connection was closed or reset without an answer).
fn exchange(stream: &mut (impl Read + Write), request: &str) -> (u16, Value) {
    let mut text = String::new();
    if stream.write_all(request.as_bytes()).is_ok() {
        let _ = stream.read_to_string(&mut text);
    }
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
    raise_own_files((TCP_FLOOD + UNIX_FLOOD + 512) as u64);
    let env = TestEnv::new();
    let serve = Serve::start(&env);
    let token = token(&env);
    cap_files(serve.pid());

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

/// The per-peer connection budget of serve's TCP door (every local user is 127.0.0.1).
const PER_PEER: usize = 64;
/// How long the slow senders go on at most.
const ATTACK_FOR: Duration = Duration::from_secs(40);
/// How soon the owner's request must be answered while they do.
const PROBE_DEADLINE: Duration = Duration::from_secs(4);

/// Raises this test process's open-file limit to `want` (the tests run as root).
fn raise_own_files(want: u64) {
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c < want) {
        let raised = Rlimit { current: Some(want), maximum: limit.maximum.map(|m| m.max(want)) };
        setrlimit(Resource::Nofile, raised).expect("raising RLIMIT_NOFILE (the tests run as root)");
    }
}

/// Caps `pid` at 1,024 open files, as a login shell starts it (the attack's setting).
fn cap_files(pid: i32) {
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    let hard = getrlimit(Resource::Nofile).maximum;
    prlimit(Some(pid), Resource::Nofile, Rlimit { current: Some(1024), maximum: hard }).unwrap();
}

/// Another user's slow sender: an unauthenticated `POST /v1/rpc` announcing 16 MB, one byte
/// every 2 s, reconnecting whenever serve closes the connection, until `stop` or [`ATTACK_FOR`].
fn slow_sender(addr: String, stop: Arc<AtomicBool>, heads: Arc<AtomicUsize>) {
    let head = "POST /v1/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n\
                Content-Length: 16777216\r\n\r\n";
    let started = Instant::now();
    let going = || !stop.load(Ordering::SeqCst) && started.elapsed() < ATTACK_FOR;
    while going() {
        let Ok(mut s) = TcpStream::connect(&addr) else { continue };
        if s.write_all(head.as_bytes()).is_err() {
            continue;
        }
        heads.fetch_add(1, Ordering::SeqCst);
        while going() && s.write_all(b"x").is_ok() {
            // The attack's pace (not a wait for an outcome): 2 s, watching `stop`.
            for _ in 0..20 {
                if !going() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn slow_unauthenticated_bodies_do_not_hold_the_tcp_door() {
    let env = TestEnv::new();
    let serve = Serve::start(&env);
    let token = token(&env);
    let stop = Arc::new(AtomicBool::new(false));
    let heads = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..PER_PEER)
        .map(|_| {
            let (addr, stop, heads) = (serve.addr.clone(), stop.clone(), heads.clone());
            std::thread::spawn(move || slow_sender(addr, stop, heads))
        })
        .collect();
    assert!(wait_until(Duration::from_secs(10), || heads.load(Ordering::SeqCst) >= PER_PEER));

    // The owner's requests, again and again while the slow senders go on: each is answered soon.
    let mut took = Vec::new();
    for _ in 0..4 {
        let started = Instant::now();
        let mut last = (0, Value::Null);
        let answered = wait_until(PROBE_DEADLINE, || {
            let Ok(mut tcp) = TcpStream::connect(&serve.addr) else { return false };
            tcp.set_read_timeout(Some(PROBE_DEADLINE)).unwrap();
            last = exchange(&mut tcp, &get("/v1/exec", "127.0.0.1", &token));
            last.0 == 200
        });
        assert!(answered, "not answered within {PROBE_DEADLINE:?} under slow bodies: {last:?}");
        took.push(started.elapsed());
    }
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.join().unwrap();
    }
    eprintln!(
        "slow bodies: {PER_PEER} senders ({} connections in all); the owner answered in {took:?}",
        heads.load(Ordering::SeqCst)
    );
}

#[test]
fn the_dashboard_survives_a_flood_of_half_open_connections() {
    raise_own_files((TCP_FLOOD + 512) as u64);
    let env = TestEnv::new();
    let dashboard = DashboardProcess::start(&env, "127.0.0.1:0");
    cap_files(dashboard.pid());
    let addr = format!("127.0.0.1:{}", dashboard.port());
    let flood: Vec<TcpStream> = (0..TCP_FLOOD)
        .filter_map(|_| {
            let mut s = TcpStream::connect(&addr).ok()?;
            s.write_all(HALF_OPEN).ok()?;
            Some(s)
        })
        .collect();
    assert!(flood.len() >= 1024, "only {} connections opened", flood.len());

    let started = Instant::now();
    let request = format!(
        "GET /app.css HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        dashboard.token()
    );
    let mut last = (0, Value::Null);
    let answered = wait_until(ANSWER_DEADLINE, || {
        let Ok(mut tcp) = TcpStream::connect(&addr) else { return false };
        tcp.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
        last = exchange(&mut tcp, &request);
        last.0 == 200
    });
    assert!(answered, "the dashboard did not answer under the flood: {last:?}");
    let files = open_files(dashboard.pid());
    eprintln!(
        "dashboard flood: {} half-open connections; answered in {:?} holding {files} files",
        flood.len(),
        started.elapsed()
    );
    assert!(files < 1024 - 256, "the dashboard holds {files} files: the flood is not capped");
}
