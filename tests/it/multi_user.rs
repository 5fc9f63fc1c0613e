//! Another Unix user of the same machine gets nothing of yours (issue 12, points 1, 2 and 8).
//!
//! A second user is created with `useradd` for the test and removed with `userdel -r` after
//! it. The attacker's side runs as that user: this very test binary, re-executed under its uid
//! to run [`other_user_side`] (ignored in normal runs), told by `MULTI_USER_ATTACK` what to do.
//! It reports on stdout in lines starting with [`REPORT`]. Not root or no `useradd`: skipped
//! with a message, except under `CI=true` (CI runs as root), where it fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use crate::client_trust::{assert_only_challenges, impostor};
use crate::dashboard::{DashboardProcess, http, local_jobs};
use crate::support::TestEnv;

/// The prefix of the attacker's report lines (libtest writes its own lines on stdout too).
const REPORT: &str = "ATTACK ";
/// The token of the victim's HTTP machine: it must never reach the attacker.
const TOKEN: &str = "victims-token-3f9a";

/// A Unix user made for one test; `userdel -r` when dropped.
struct OtherUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl OtherUser {
    /// `None` (after saying why) when users cannot be created here; under `CI=true` that fails.
    fn create() -> Option<OtherUser> {
        let why = if !rustix::process::getuid().is_root() {
            Some("not root")
        } else if Command::new("useradd").arg("--help").output().is_err() {
            Some("no useradd (Debian package passwd)")
        } else {
            None
        };
        if let Some(why) = why {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "multi-user tests: {why}");
            eprintln!("skipped: the multi-user tests need root and useradd: {why}");
            return None;
        }
        // Tests of one process run side by side: each gets its own user, and `useradd` and
        // `userdel` take turns (they lock /etc/passwd and fail rather than wait).
        static USERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = USERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("crtest{}x{n}", std::process::id());
        let _turn = USER_DB.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", &name])
            .output()
            .unwrap();
        assert!(out.status.success(), "useradd: {}", String::from_utf8_lossy(&out.stderr));
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let home = PathBuf::from(format!("/home/{name}"));
        Some(OtherUser { name, uid, gid, home })
    }

    /// Starts [`other_user_side`] as this user with `attack` and `vars`.
    fn attack(&self, attack: &str, vars: &[(&str, &str)]) -> Attacker {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "multi_user::other_user_side", "--nocapture"])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.home)
            .env("MULTI_USER_ATTACK", attack)
            .envs(vars.iter().copied())
            .uid(self.uid)
            .gid(self.gid)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Attacker { child, stdout }
    }
}

/// `useradd` and `userdel` one at a time within this process.
static USER_DB: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Drop for OtherUser {
    fn drop(&mut self) {
        let _turn = USER_DB.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new("userdel").args(["-r", &self.name]).output();
        if let Some(out) = out.ok().filter(|o| !o.status.success()) {
            eprintln!("userdel -r {}: {}", self.name, String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// The attacker's process: its stdin open until [`Attacker::finish`], its report lines.
struct Attacker {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Attacker {
    /// The next report line (without the prefix).
    fn next_report(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.stdout.read_line(&mut line).unwrap() > 0, "the attacker ended early");
            if let Some(report) = line.trim_end().strip_prefix(REPORT) {
                return report.to_string();
            }
        }
    }

    /// Closes its stdin (the signal to stop), waits for it to succeed; its last report lines.
    fn finish(mut self) -> Vec<String> {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the attacker's side failed: {rest}");
        rest.lines().filter_map(|l| l.strip_prefix(REPORT)).map(str::to_string).collect()
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        // A test that failed half way leaves no process of the other user behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The attacker's side, run as the other user by the tests below (never on its own).
#[test]
#[ignore = "run as another user by the multi_user tests"]
fn other_user_side() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    match var("MULTI_USER_ATTACK").as_str() {
        // Listens where the victim's machine points and claims to be the victim's codexd.
        "impostor" => {
            let (port, seen) = impostor(var("VICTIM_USER"), var("VICTIM_UID").parse().unwrap());
            report(&port.to_string());
            std::io::stdin().read_to_end(&mut Vec::new()).unwrap();
            for request in seen.lock().unwrap().iter() {
                report(&serde_json::to_string(request).unwrap());
            }
        }
        // Asks the victim's dashboard for its page, secret and API without the token.
        "dashboard" => {
            let port: u16 = var("DASHBOARD_PORT").parse().unwrap();
            let host = format!("127.0.0.1:{port}");
            let start = r#"{"machine":"local","cmd":"id > /tmp/owned"}"#;
            let json = ("Content-Type", "application/json");
            let guessed = ("X-Dashboard-Secret", "0".repeat(64));
            for (method, path) in [("GET", "/"), ("GET", "/api/jobs"), ("POST", "/api/jobs")] {
                let headers = [("Host", host.as_str()), json, (guessed.0, guessed.1.as_str())];
                let r = http(port, method, path, &headers, start);
                let secret = r.body.contains("dashboard-secret");
                report(&format!("{method} {path} {} secret={secret}", r.status));
            }
        }
        // Plants a symlink where the victim's client makes its fallback control dir.
        "plant" => {
            let target = PathBuf::from(var("PLANT_TARGET"));
            if var("PLANT_OWN_TARGET") == "1" {
                std::fs::create_dir_all(&target).unwrap();
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            std::os::unix::fs::symlink(&target, var("PLANT_LINK")).unwrap();
            report("planted");
        }
        // Sits between the victim's client and the victim's real serve (the address the
        // client was given, a squatted port): forwards every byte both ways, records what the
        // client sends, then replays each captured request to the real serve.
        "relay" => {
            let real = var("REAL_ADDR");
            let (port, seen) = relay(real.clone());
            report(&port.to_string());
            std::io::stdin().read_to_end(&mut Vec::new()).unwrap();
            let seen = seen.lock().unwrap().clone();
            for bytes in &seen {
                let text = String::from_utf8_lossy(bytes).into_owned();
                report(&format!("seen {}", serde_json::to_string(&text).unwrap()));
                if !text.is_empty() && !text.starts_with("GET /health") {
                    report(&format!("replayed {}", replay(&real, bytes)));
                }
            }
        }
        // Relays to the real serve as "relay" does, and changes what the client sends on the
        // way: every `FROM` in its bytes becomes `TO` (of the same length, so the HTTP framing
        // still holds). Reports how many it changed.
        "tamper" => {
            let (from, to) = (var("FROM").into_bytes(), var("TO").into_bytes());
            assert_eq!(from.len(), to.len());
            let changed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counter = changed.clone();
            let rewrite = move |bytes: &mut [u8]| {
                let mut at = 0;
                while let Some(i) = bytes[at..].windows(from.len()).position(|w| w == from) {
                    bytes[at + i..at + i + to.len()].copy_from_slice(&to);
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    at += i + to.len();
                }
            };
            let (port, _) = relay_with(var("REAL_ADDR"), rewrite);
            report(&port.to_string());
            std::io::stdin().read_to_end(&mut Vec::new()).unwrap();
            report(&format!("changed {}", changed.load(std::sync::atomic::Ordering::SeqCst)));
        }
        // Makes a directory others can read, with its own mode-4755 copy of a binary in it.
        "setuid_copy" => {
            let dir = PathBuf::from(var("SETUID_DIR"));
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::copy("/bin/true", dir.join("true")).unwrap();
            std::fs::set_permissions(dir.join("true"), std::fs::Permissions::from_mode(0o4755))
                .unwrap();
            report("ready");
        }
        // Answers every request with a redirect to the same path on the real serve.
        "redirect" => {
            let real = var("REAL_ADDR");
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            report(&listener.local_addr().unwrap().port().to_string());
            listener.set_nonblocking(true).unwrap();
            let mut seen = Vec::new();
            let mut stdin = std::io::stdin();
            let done = std::thread::spawn(move || stdin.read_to_end(&mut Vec::new()));
            while !done.is_finished() {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let head = read_head(&mut BufReader::new(stream.try_clone().unwrap()));
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                seen.push(head);
                let mut out = stream;
                let _ = write!(
                    out,
                    "HTTP/1.1 302 Found\r\nLocation: http://{real}{path}\r\ncontent-length: 0\r\n\
                     connection: close\r\n\r\n"
                );
            }
            for head in seen {
                report(&serde_json::to_string(&head).unwrap());
            }
        }
        // Reads every process's argv, as any user can, and reports those naming `NEEDLE`.
        "cmdlines" => {
            let needle = var("NEEDLE");
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(argv) = std::fs::read(entry.path().join("cmdline")) else { continue };
                let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
                if argv.contains(&needle) {
                    report(&format!("argv {}", serde_json::to_string(&argv).unwrap()));
                }
            }
            report("done");
        }
        // In a shared 1777 dir, swaps its own subdirectory for a symlink to the victim's
        // directory the moment the victim's sync writes its first temp file there.
        "swap" => {
            let (sub, target, done) = (var("SWAP_DIR"), var("SWAP_TARGET"), var("SWAP_DONE"));
            let sub = PathBuf::from(sub);
            std::fs::create_dir(&sub).unwrap();
            std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o777)).unwrap();
            report("ready");
            loop {
                let temp = std::fs::read_dir(&sub)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(".codex-sync."));
                if temp {
                    std::fs::rename(&sub, sub.with_extension("old")).unwrap();
                    std::os::unix::fs::symlink(&target, &sub).unwrap();
                    report("swapped");
                    break;
                }
                if Path::new(&done).exists() {
                    report("missed");
                    break;
                }
            }
        }
        // Plants a FIFO at `<cwd>/.codex/artifacts.json` in a shared (1777) job cwd: a worker
        // that opened it to read would block until someone opened the other end.
        "fifo" => {
            let codex = PathBuf::from(var("SHARED_CWD")).join(".codex");
            std::fs::create_dir(&codex).unwrap();
            std::fs::set_permissions(&codex, std::fs::Permissions::from_mode(0o755)).unwrap();
            rustix::fs::mknodat(
                rustix::fs::CWD,
                codex.join("artifacts.json"),
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o666),
                0,
            )
            .unwrap();
            report("planted");
        }
        // After the victim's forward died: binds every loopback port the victim's forwards
        // held, tries to put a file and a socket into the victim's tunnels dir and to connect
        // to the victim's forward socket; counts the connections its listeners get.
        "squat" => {
            let ports = var("VICTIM_PORTS");
            let listeners: Vec<std::net::TcpListener> =
                (ports.split(',').filter(|p| !p.is_empty()))
                    .map(|p| std::net::TcpListener::bind(format!("127.0.0.1:{p}")).unwrap())
                    .collect();
            let dir = PathBuf::from(var("VICTIM_TUNNELS"));
            let outcome = |r: std::io::Result<()>| match r {
                Ok(()) => "placed".to_string(),
                Err(e) => format!("refused {:?}", e.kind()),
            };
            let file = std::fs::write(dir.join("planted.json"), b"{}");
            report(&format!("file {}", outcome(file)));
            let socket = std::os::unix::net::UnixListener::bind(dir.join("planted.sock"));
            report(&format!("socket {}", outcome(socket.map(drop))));
            report("ready");
            for l in &listeners {
                l.set_nonblocking(true).unwrap();
            }
            let mut stdin = std::io::stdin();
            let done = std::thread::spawn(move || stdin.read_to_end(&mut Vec::new()));
            let mut accepted = 0;
            while !done.is_finished() {
                accepted += listeners.iter().filter(|l| l.accept().is_ok()).count();
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            accepted += listeners.iter().filter(|l| l.accept().is_ok()).count();
            let connect = std::os::unix::net::UnixStream::connect(var("VICTIM_SOCKET"));
            report(&format!("connect {}", outcome(connect.map(drop))));
            report(&format!("accepted {accepted}"));
        }
        other => panic!("unknown attack {other:?}"),
    }
}

/// The head of one HTTP request (up to the blank line).
fn read_head(reader: &mut impl BufRead) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            return head;
        }
        head.push_str(&line);
    }
}

/// A TCP relay to `real` on a free loopback port: what each connection's client sent, in order.
fn relay(real: String) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    relay_with(real, |_| {})
}

/// [`relay`], with `rewrite` run over each piece the client sent before it goes on.
fn relay_with(
    real: String,
    rewrite: impl Fn(&mut [u8]) + Clone + Send + 'static,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server = TcpStream::connect(&real).unwrap();
            let index = {
                let mut log = log.lock().unwrap();
                log.push(Vec::new());
                log.len() - 1
            };
            let (mut from_client, mut to_server) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let log = log.clone();
            let rewrite = rewrite.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n @ 1..) = from_client.read(&mut buf) {
                    log.lock().unwrap()[index].extend_from_slice(&buf[..n]);
                    rewrite(&mut buf[..n]);
                    if to_server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to_server.shutdown(Shutdown::Write);
            });
            let (mut from_server, mut to_client) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_server, &mut to_client);
                let _ = to_client.shutdown(Shutdown::Write);
            });
        }
    });
    (port, seen)
}

/// Sends `request` as captured to `addr`; the status line of the answer.
fn replay(addr: &str, request: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    stream.write_all(request).unwrap();
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader);
    let mut body = vec![0u8; 4096];
    let n = reader.read(&mut body).unwrap_or(0);
    let status = head.lines().next().unwrap_or("").to_string();
    format!("{status} {}", String::from_utf8_lossy(&body[..n]))
}

/// One report line of the attacker's side, on its stdout at once.
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{REPORT}{line}").unwrap();
    out.flush().unwrap();
}

#[test]
fn another_user_cannot_pose_as_your_codexd_nor_use_your_dashboard_or_control_dir() {
    let Some(other) = OtherUser::create() else { return };
    let me = rustix::process::getuid().as_raw();

    // Point 1: B listens where A's HTTP machine points and claims to be A's codexd.
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let uid = me.to_string();
    let mut b = other.attack("impostor", &[("VICTIM_USER", user.trim()), ("VICTIM_UID", &uid)]);
    let port = b.next_report();
    let env = TestEnv::with_config(&format!(
        "machines:\n  - name: gpu\n    addr: 127.0.0.1:{port}\n    token: {TOKEN}\n"
    ));
    let e = env.err(&["exec", "list", "--machine", "gpu"], "foreign_daemon", 3);
    assert!(e["message"].as_str().unwrap().contains("did not prove"), "{e}");
    let requests: Vec<String> =
        b.finish().iter().map(|r| serde_json::from_str(r).unwrap()).collect();
    assert_only_challenges(&requests, TOKEN);

    // Point 2: B knows the port of A's dashboard, not its token.
    let dash = DashboardProcess::start(&env, "127.0.0.1:0");
    let b = other.attack("dashboard", &[("DASHBOARD_PORT", &dash.port().to_string())]);
    let answers = b.finish();
    assert_eq!(
        answers,
        [
            "GET / 401 secret=false",
            "GET /api/jobs 401 secret=false",
            "POST /api/jobs 401 secret=false"
        ]
    );
    assert_eq!(local_jobs(&env), 0, "the refused POST started no job");
    drop(dash);

    // Point 8: B plants `/tmp/codex-remote-<A's uid>` (A's last fallback for ControlMaster
    // sockets) as a symlink to a directory of A's, or of B's own.
    fallback_control_dir_planted_by_another_user(&other, &env);
}

/// Point 8 of issue 12; `env`'s client reaches the fallback through a cache dir too long for a
/// socket path, with no `CODEX_REMOTE_CONTROL_DIR` nor `XDG_RUNTIME_DIR`.
fn fallback_control_dir_planted_by_another_user(other: &OtherUser, env: &TestEnv) {
    let link = PathBuf::from(format!("/tmp/codex-remote-{}", rustix::process::getuid().as_raw()));
    if std::fs::symlink_metadata(&link).is_ok() {
        eprintln!("skipped the planted control dir: {} exists (not the test's)", link.display());
        return;
    }
    let _cleanup = RemoveOnDrop(link.clone());
    env.set_config(
        "machines:\n  - name: gone\n    ssh: ssh://u@127.0.0.1:1\n    ssh_args: [\"-F\", \"/dev/null\"]\n",
    );
    let long_cache = env.path(&"c".repeat(100));
    let exec_list = || {
        let out = env
            .remote(&["exec", "list", "--machine", "gone"])
            .env_remove("CODEX_REMOTE_CONTROL_DIR")
            .env("XDG_CACHE_HOME", &long_cache)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    };
    // Unplanted, the client makes the fallback its own: so the test reaches it.
    exec_list();
    let made = std::fs::symlink_metadata(&link).expect("the fallback control dir is used");
    assert!(made.is_dir() && made.permissions().mode() & 0o777 == 0o700, "{made:?}");
    std::fs::remove_dir_all(&link).unwrap();

    let own_target = env.path("victim-home");
    std::fs::create_dir(&own_target).unwrap();
    std::fs::set_permissions(&own_target, std::fs::Permissions::from_mode(0o755)).unwrap();
    let b_target = other.home.join("target");
    for (target, b_owns) in [(&own_target, false), (&b_target, true)] {
        let vars = [
            ("PLANT_LINK", link.to_str().unwrap()),
            ("PLANT_TARGET", target.to_str().unwrap()),
            ("PLANT_OWN_TARGET", if b_owns { "1" } else { "0" }),
        ];
        assert_eq!(other.attack("plant", &vars).finish(), ["planted"]);
        assert_eq!(std::fs::symlink_metadata(&link).unwrap().uid(), other.uid);
        exec_list();
        let meta = std::fs::metadata(target).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{} was chmodded", target.display());
        assert_eq!(meta.uid(), if b_owns { other.uid } else { rustix::process::getuid().as_raw() });
        assert!(empty(target), "nothing was created in {}", target.display());
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        std::fs::remove_file(&link).unwrap();
    }
}

fn empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

/// Removes a path (a dir or a symlink) the test made, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0).or_else(|_| std::fs::remove_dir_all(&self.0));
    }
}

/// Issue 26, point 1: another user relays the victim's client to the victim's real serve (a
/// squatted address), or redirects it there. The relay sees no reusable secret and replaying
/// what it captured is refused; a redirect is refused before anything is sent.
#[test]
fn a_relay_or_redirect_of_another_user_gains_nothing_it_can_reuse() {
    let Some(other) = OtherUser::create() else { return };
    let env = TestEnv::new();
    let serve = crate::serve::Serve::start(&env);
    let token = crate::serve::token(&env);
    let machine = |port: &str| {
        env.set_config(&format!(
            "machines:\n  - name: gpu\n    addr: 127.0.0.1:{port}\n    token: \"{token}\"\n"
        ));
    };

    let mut b = other.attack("relay", &[("REAL_ADDR", &serve.addr)]);
    machine(&b.next_report());
    // Through the relay the call works (it only passes bytes on) ...
    let started = env.ok(&["exec", "start", "--machine", "gpu", "--cmd", "true"]);
    assert!(started["exec_id"].is_string(), "{started}");
    let reports = b.finish();
    let seen: Vec<String> = reports
        .iter()
        .filter_map(|r| r.strip_prefix("seen "))
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    assert!(seen.iter().any(|r| r.starts_with("POST /v1/rpc")), "{reports:?}");
    for r in &seen {
        assert!(!r.contains(&token), "the relay saw the token: {r}");
        assert!(!r.to_ascii_lowercase().contains("bearer"), "{r}");
    }
    // ... and what it captured is worth nothing: each replay is refused, no second job.
    let replays: Vec<&String> = reports.iter().filter(|r| r.starts_with("replayed ")).collect();
    assert!(!replays.is_empty(), "{reports:?}");
    for r in &replays {
        assert!(r.contains(" 401 ") && r.contains("unauthorized"), "a replay passed: {r}");
    }
    assert_eq!(std::fs::read_dir(env.data_dir().join("jobs")).unwrap().count(), 1);

    let b = other.attack("redirect", &[("REAL_ADDR", &serve.addr)]);
    let mut b = b;
    machine(&b.next_report());
    let e = env.err(&["exec", "start", "--machine", "gpu", "--cmd", "true"], "foreign_daemon", 3);
    assert!(e["message"].as_str().unwrap().contains("redirect"), "{e}");
    let requests: Vec<String> =
        b.finish().iter().map(|r| serde_json::from_str(r).unwrap()).collect();
    assert_only_challenges(&requests, &token);
    assert_eq!(std::fs::read_dir(env.data_dir().join("jobs")).unwrap().count(), 1);
}

/// Issue 26, third pass, gap 1: another user relays the victim's `sync push` and `file write`
/// to the victim's real serve and changes the bytes after the signed request line (a file's
/// content in the frames). Each chunk carries a MAC under the request's key: the change is
/// refused `unauthorized` and nothing lands in the destination.
#[test]
fn a_relay_that_changes_the_streamed_body_writes_nothing() {
    const ORIGINAL: &str = "ORIGINAL-CONTENT-7d1c";
    const FORGED: &str = "FORGED!!-CONTENT-7d1c";
    let Some(other) = OtherUser::create() else { return };
    let env = TestEnv::new();
    let serve = crate::serve::Serve::start(&env);
    let token = crate::serve::token(&env);
    let vars = [("REAL_ADDR", serve.addr.as_str()), ("FROM", ORIGINAL), ("TO", FORGED)];
    let mut b = other.attack("tamper", &vars);
    env.set_config(&format!(
        "machines:\n  - name: gpu\n    addr: 127.0.0.1:{}\n    token: \"{token}\"\n",
        b.next_report()
    ));
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), format!("{ORIGINAL}\n")).unwrap();
    let dst = env.home.join("dst");
    let (src_arg, dst_arg) = (format!("{}/", src.display()), dst.display().to_string());
    let push = ["sync", "push", "-m", "gpu", "--src", &src_arg, "--dst", &dst_arg];
    let e = env.err(&push, "unauthorized", 3);
    assert!(e["message"].as_str().unwrap().contains("signature"), "{e}");
    let file = dst.join("b.txt").display().to_string();
    let write = ["file", "write", "-m", "gpu", "--dst", &file, "--content", ORIGINAL];
    env.err(&write, "unauthorized", 3);
    let landed: Vec<_> = std::fs::read_dir(&dst).into_iter().flatten().flatten().collect();
    assert!(landed.is_empty(), "written through a forging relay: {landed:?}");
    let reports = b.finish();
    let changed: usize = reports[0].strip_prefix("changed ").unwrap().parse().unwrap();
    assert!(changed >= 2, "the relay changed nothing, the test proved nothing: {reports:?}");
    // Straight to serve, the same commands work: the refusal was the relay's doing.
    env.set_config(&format!(
        "machines:\n  - name: gpu\n    addr: {}\n    token: \"{token}\"\n",
        serve.addr
    ));
    env.ok(&push);
    env.ok(&write);
    assert_eq!(std::fs::read_to_string(dst.join("a.txt")).unwrap(), format!("{ORIGINAL}\n"));
    assert_eq!(std::fs::read_to_string(dst.join("b.txt")).unwrap(), ORIGINAL);
}

/// Issue 26, point 3: another user owns a mode-4755 copy of a binary in a directory the victim
/// can read. The victim's `sync pull` of it, and `sync push` from it (locally and through
/// `codexd serve`), leave a file the victim owns with mode 0755; with `--keep-special-bits`
/// the bits travel.
#[test]
fn another_users_setuid_copy_arrives_plain_unless_kept() {
    let Some(other) = OtherUser::create() else { return };
    let theirs = PathBuf::from(format!("/tmp/codex-setuid-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(theirs.clone());
    let b = other.attack("setuid_copy", &[("SETUID_DIR", theirs.to_str().unwrap())]);
    assert_eq!(b.finish(), ["ready"]);
    let planted = std::fs::metadata(theirs.join("true")).unwrap();
    assert_eq!((planted.uid(), planted.mode() & 0o7777), (other.uid, 0o4755));

    let env = TestEnv::new();
    let serve = crate::serve::Serve::start(&env);
    env.set_config(&format!(
        "machines:\n  - name: gpu\n    addr: {}\n    token: \"{}\"\n",
        serve.addr,
        crate::serve::token(&env)
    ));
    let me = rustix::process::getuid().as_raw();
    let src = format!("{}/", theirs.display());
    let cases = [
        ("pull", "local", "pulled", false),
        ("push", "local", "pushed", false),
        ("push", "gpu", "pushed-http", false),
        ("pull", "local", "pulled-kept", true),
        ("push", "gpu", "pushed-kept", true),
    ];
    for (way, machine, dst, keep) in cases {
        let dst = env.home.join(dst);
        let dst_arg = dst.display().to_string();
        let mut args = vec!["sync", way, "-m", machine, "--src", &src, "--dst", &dst_arg];
        if keep {
            args.push("--keep-special-bits");
        }
        env.ok(&args);
        let got = std::fs::metadata(dst.join("true")).unwrap();
        let want = if keep { 0o4755 } else { 0o755 };
        assert_eq!((got.uid(), got.mode() & 0o7777), (me, want), "{args:?}");
    }
}

/// Issue 26, point 4: `dashboard --open` gives the opener no token in its argv (which another
/// user reads in /proc), and waits for it (no zombie).
#[test]
fn the_dashboard_opener_argv_holds_no_token_and_is_reaped() {
    let Some(other) = OtherUser::create() else { return };
    let env = TestEnv::new();
    let opener = env.path("fake-opener");
    let release = env.path("release");
    let got = env.path("opener-got");
    std::fs::write(
        &opener,
        format!(
            "#!/bin/sh\ncat \"${{1#file://}}\" > {got}.page\necho \"$@\" > {got}\n\
             while [ ! -e {release} ]; do sleep 0.05; done\n",
            got = got.display(),
            release = release.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dash = DashboardProcess::start_opened(&env, &opener);
    let token = dash.token();
    assert!(
        crate::support::wait_until(std::time::Duration::from_secs(10), || got.exists()),
        "the opener ran"
    );
    let argv = std::fs::read_to_string(&got).unwrap();
    assert!(!argv.contains(&token), "the opener got the token in its argv: {argv}");
    let page = std::fs::read_to_string(got.with_extension("page")).unwrap();
    assert!(page.contains(&token), "the page it opens leads to the dashboard: {page}");
    let path = argv.trim().trim_start_matches("file://");
    let meta = std::fs::metadata(path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{path}");

    // While the opener runs, the other user reads every argv: no token anywhere.
    let b = other.attack("cmdlines", &[("NEEDLE", "fake-opener")]);
    let reports = b.finish();
    assert!(reports.iter().any(|r| r.starts_with("argv ")), "the opener was seen: {reports:?}");
    for r in &reports {
        assert!(!r.contains(&token), "another user read the token: {r}");
    }
    std::fs::write(&release, "").unwrap();
    let reaped = crate::support::wait_until(std::time::Duration::from_secs(10), || {
        crate::serve::zombie_children(dash.pid()) == 0 && !opener_alive(&opener)
    });
    assert!(reaped, "the opener was waited for (no zombie)");
}

/// Whether a process runs `opener` (a zombie's argv is empty, so it counts as gone).
fn opener_alive(opener: &Path) -> bool {
    let name = opener.to_str().unwrap();
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|argv| String::from_utf8_lossy(&argv).contains(name))
    })
}

/// Issue 26, point 2: the victim syncs into a shared 1777 directory where the other user owns a
/// subdirectory; the other user swaps it for a symlink to a directory of the victim's when the
/// first temp file appears. Ten tries: nothing ever lands in the victim's directory.
#[test]
fn a_subdirectory_swapped_for_a_symlink_mid_sync_never_redirects_the_write() {
    let Some(other) = OtherUser::create() else { return };
    let pid = std::process::id();
    let scratch = PathBuf::from(format!("/tmp/codex-scratch-{pid}"));
    let victim = PathBuf::from(format!("/tmp/codex-victim-{pid}"));
    let _cleanup = (RemoveOnDrop(scratch.clone()), RemoveOnDrop(victim.clone()));
    std::fs::create_dir(&scratch).unwrap();
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::create_dir(&victim).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o700)).unwrap();
    let env = TestEnv::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..300 {
        std::fs::write(src.join(format!("sub/f{i:03}")), vec![b'x'; 64 * 1024]).unwrap();
    }
    let mut swapped = 0;
    for round in 0..10 {
        let dst = scratch.join(format!("r{round}"));
        std::fs::create_dir(&dst).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let done = scratch.join(format!("done{round}"));
        let sub = dst.join("sub").display().to_string();
        let vars = [
            ("SWAP_DIR", sub.as_str()),
            ("SWAP_TARGET", victim.to_str().unwrap()),
            ("SWAP_DONE", done.to_str().unwrap()),
        ];
        let mut b = other.attack("swap", &vars);
        assert_eq!(b.next_report(), "ready");
        let (_code, _lines) = env.run(&[
            "sync",
            "push",
            "-m",
            "local",
            "--src",
            &format!("{}/", src.display()),
            "--dst",
            dst.to_str().unwrap(),
        ]);
        std::fs::write(&done, "").unwrap();
        swapped += b.finish().iter().filter(|r| *r == "swapped").count();
        let landed: Vec<_> = std::fs::read_dir(&victim).unwrap().flatten().collect();
        assert!(landed.is_empty(), "round {round}: {} landed in the victim's dir", landed.len());
    }
    eprintln!("the swap happened mid-sync in {swapped} of 10 rounds");
    assert!(swapped > 0, "the attacker never swapped mid-sync: the test proved nothing");
}

/// Issue 26, point 7: another user plants a FIFO at `.codex/artifacts.json` in a shared job cwd.
/// The worker never opens it to read (it would block there, holding the job's lock): the job
/// ends normally with a warning, a cancel of another job there answers within seconds, and
/// both jobs can be removed after.
#[test]
fn a_fifo_planted_in_a_shared_cwd_never_holds_a_job_hostage() {
    let Some(other) = OtherUser::create() else { return };
    let env = TestEnv::new();
    let shared = tempfile::Builder::new().prefix("cr-shared").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let cwd = shared.path().to_str().unwrap();
    let b = other.attack("fifo", &[("SHARED_CWD", cwd)]);
    assert_eq!(b.finish(), ["planted"]);
    let planted = shared.path().join(".codex/artifacts.json");
    assert!(std::fs::symlink_metadata(&planted).unwrap().file_type().is_fifo());
    assert_ne!(
        std::fs::symlink_metadata(&planted).unwrap().uid(),
        rustix::process::getuid().as_raw()
    );

    let start = |cmd: &str| {
        let v = env.ok(&["exec", "start", "--cwd", cwd, "--cmd", cmd]);
        v["exec_id"].as_str().unwrap().to_string()
    };
    let ended = start("echo done");
    let v = env.ok(&["exec", "wait", "--id", &ended, "--timeout", "20s"]);
    assert_eq!(v["state"], "succeeded", "the job ended normally: {v}");
    assert!(v["warning"].as_str().unwrap_or("").contains("not a regular file"), "{v}");

    let running = start("sleep 300");
    env.started("local", &running);
    let begin = std::time::Instant::now();
    let v = env.ok(&["exec", "cancel", "--id", &running, "--grace", "200ms"]);
    let took = begin.elapsed();
    eprintln!("exec cancel of a job whose cwd holds a planted FIFO answered in {took:?}");
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(took < std::time::Duration::from_secs(10), "cancel took {took:?}");
    for id in [&ended, &running] {
        assert_eq!(env.ok(&["exec", "rm", "--id", id])["exec_id"], id.as_str());
    }
}

/// The loopback TCP ports an `ssh` client process listens on (`ss -ltnp`; sshd is `sshd`).
fn ssh_client_ports() -> Vec<u16> {
    let out = Command::new("ss").args(["-Hltnp"]).output().expect("ss (Debian package iproute2)");
    assert!(out.status.success(), "ss: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("((\"ssh\","))
        .filter_map(|l| l.split_whitespace().nth(3)?.rsplit_once(':')?.1.parse().ok())
        .collect()
}

/// Issue 26, point 1: a `use_direct_addr` forward binds no TCP port another user can take.
/// Its local end is a socket in the private tunnels dir; when the forward's ssh dies, another
/// user can bind no port of it, put nothing into that dir nor connect to the socket, and the
/// next call makes a new forward of its own.
#[test]
fn a_dead_forward_leaves_no_port_or_socket_another_user_can_take() {
    use crate::machine::{mode, tunnel_telemetry, up_env};
    let Some(other) = OtherUser::create() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (env, _sshd, _stop) =
        up_env(&format!("    use_direct_addr: true\n    daemon_port: {port}\n"));
    assert_eq!(env.ok(&["machine", "up", "--machine", "gpu"])["ok"], true);
    let mut used = ssh_client_ports();
    let start = ["exec", "start", "--machine", "gpu", "--cmd", "echo through-the-socket"];
    let (job, first) = tunnel_telemetry(&env, &start);
    let id = job["exec_id"].as_str().expect("an exec id").to_string();
    let wait = ["exec", "wait", "--machine", "gpu", "--id", id.as_str()];
    let (_, second) = tunnel_telemetry(&env, &wait);
    assert_eq!(second["reused"], true, "{second}");
    used.extend(ssh_client_ports());

    let socket = PathBuf::from(first["local_socket"].as_str().expect("a socket forward"));
    assert_eq!(first["local_port"], serde_json::Value::Null, "{first}");
    let tunnels = socket.parent().unwrap().to_path_buf();
    assert_eq!(mode(&tunnels), 0o700);
    assert!(std::fs::symlink_metadata(&socket).unwrap().file_type().is_socket());
    // Every dir above the tunnels dir is opened to others, so only its own 0700 keeps them out.
    for dir in tunnels.ancestors().skip(1).take_while(|d| d.starts_with(env.dir.path())) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();

    // The forward's ssh dies.
    let pid = first["tunnel_pid"].as_i64().expect("the pid holding the forward") as i32;
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::TERM,
    );
    assert!(crate::support::wait_until(std::time::Duration::from_secs(10), || {
        !crate::support::alive(pid)
    }));
    used.sort_unstable();
    used.dedup();
    // None of the sshd's own ports: they are taken, and not the client's.
    let ports = used.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    assert!(used.is_empty(), "the client's ssh listened on TCP ports {ports}");

    let mut b = other.attack(
        "squat",
        &[
            ("VICTIM_PORTS", &ports),
            ("VICTIM_TUNNELS", tunnels.to_str().unwrap()),
            ("VICTIM_SOCKET", socket.to_str().unwrap()),
        ],
    );
    assert_eq!(b.next_report(), "file refused PermissionDenied");
    assert_eq!(b.next_report(), "socket refused PermissionDenied");
    assert_eq!(b.next_report(), "ready");
    let result = ["exec", "result", "--machine", "gpu", "--id", id.as_str()];
    let (answer, third) = tunnel_telemetry(&env, &result);
    assert_eq!(
        (third["reused"].as_bool(), &third["local_socket"]),
        (Some(false), &first["local_socket"])
    );
    assert_eq!(third["local_port"], serde_json::Value::Null, "{third}");
    assert_eq!(answer["last_stdout"], "through-the-socket", "{answer}");
    let owner = std::fs::symlink_metadata(&socket).unwrap().uid();
    assert_eq!(owner, rustix::process::getuid().as_raw(), "the new socket is ours");
    let reports = b.finish();
    assert_eq!(reports, ["connect refused PermissionDenied", "accepted 0"]);
    let planted = std::fs::read_dir(&tunnels).unwrap().flatten();
    let names: Vec<String> =
        planted.map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.starts_with("planted")), "{names:?}");
}
