//! Issue 12 on the laptop side, through the real `codex-remote`: the token goes only to a server
//! that proves it holds it, an unreachable machine fails fast, planted symlinks are refused,
//! global options go anywhere, errors name their machine, config typos are named.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Sshd, TestEnv};

/// A fake `codexd serve` that claims to be codexd of `user` (`uid`) but cannot prove it holds
/// the token; it records every request it gets (its head) before it answers.
pub fn impostor(user: String, uid: u32) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0usize);
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            log.lock().unwrap().push(head.clone());
            let json = format!(
                r#"{{"ok":true,"service":"codexd","version":"0.1.0","protocol":1,"user":"{user}","uid":{uid},"proof":"00"}}"#
            );
            let mut out = stream;
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                json.len()
            );
        }
    });
    (port, seen)
}

#[test]
fn the_token_never_goes_to_a_server_that_cannot_prove_it_holds_it() {
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let (port, seen) = impostor(user, rustix::process::getuid().as_raw());
    let env = TestEnv::with_config(&format!(
        "machines:\n  - name: gpu\n    addr: 127.0.0.1:{port}\n    token: secret-token-of-a\n"
    ));
    let e = env.err(&["exec", "list", "--machine", "gpu"], "foreign_daemon", 3);
    assert!(e["message"].as_str().unwrap().contains("did not prove"), "{e}");
    assert_only_challenges(&seen.lock().unwrap(), "secret-token-of-a");
}

/// What an impostor got: challenges to `/health`, never the token nor any `Authorization`.
pub fn assert_only_challenges(requests: &[String], token: &str) {
    assert!(!requests.is_empty(), "the client asked /health");
    for r in requests {
        assert!(r.starts_with("GET /health?challenge="), "only a challenge was sent: {r}");
        assert!(!r.to_ascii_lowercase().contains("authorization"), "no token sent: {r}");
        assert!(!r.contains(token), "{r}");
    }
}

#[test]
fn an_unreachable_machine_fails_within_ssh_time() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let env = TestEnv::with_config(
        "machines:\n  - name: gone\n    ssh: ssh://u@127.0.0.1:1\n    ssh_args: [\"-F\", \"/dev/null\"]\n",
    );
    let started = Instant::now();
    let e = env.err(&["exec", "list", "--machine", "gone"], "ssh_failed", 3);
    let refused = started.elapsed();
    assert!(e["message"].as_str().unwrap().contains("refused"), "{e}");
    // Loose bounds: the point is no retries (it took 100 s before), not a timing.
    assert!(refused < Duration::from_secs(8), "refused after {refused:?}");
    let started = Instant::now();
    let out = env.remote(&["machine", "ls", "--json"]).output().unwrap();
    let ls = started.elapsed();
    assert!(ls < Duration::from_secs(8), "machine ls took {ls:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"gone\""), "{text}");
    eprintln!("unreachable machine: exec list failed in {refused:?}, machine ls in {ls:?}");
}

#[test]
fn a_forward_to_a_host_that_does_not_resolve_does_not_hang() {
    let env = TestEnv::with_config(
        "machines:\n  - name: nowhere\n    ssh: no-such-host.invalid\n    ssh_args: [\"-F\", \"/dev/null\"]\n    use_direct_addr: true\n",
    );
    let started = Instant::now();
    let mut child = env.remote(&["machine", "check", "--machine", "nowhere"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "machine check hangs");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "use_direct_addr to an unresolvable host: machine check ended in {:?}",
        started.elapsed()
    );
}

#[test]
fn a_control_dir_planted_as_another_users_symlink_is_refused_and_its_target_untouched() {
    let env = TestEnv::with_config(
        "machines:\n  - name: gone\n    ssh: ssh://u@127.0.0.1:1\n    ssh_args: [\"-F\", \"/dev/null\"]\n",
    );
    let victim = env.path("victim-home");
    std::fs::create_dir(&victim).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let planted = env.path("planted");
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    // The symlink belongs to another user (uid 4242; as root we can say so).
    rustix::fs::chownat(
        rustix::fs::CWD,
        &planted,
        Some(rustix::fs::Uid::from_raw(4242)),
        None,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
    let out = env
        .remote(&["exec", "list", "--machine", "gone"])
        .env("CODEX_REMOTE_CONTROL_DIR", &planted)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "the symlink's target was not chmodded");
    assert!(std::fs::read_dir(&victim).unwrap().next().is_none(), "nothing created in it");
}

#[test]
fn global_options_work_before_and_after_the_subcommand() {
    let env = TestEnv::new();
    let other = env.path("other.yaml");
    std::fs::write(&other, "machines: []\ndefault_machine: local\n").unwrap();
    let config = other.to_str().unwrap();
    let before = env.ok(&["--config", config, "exec", "list"]);
    let after = env.ok(&["exec", "list", "--config", config]);
    assert_eq!(before["machine"], "local");
    assert_eq!(after["machine"], "local");
}

#[test]
fn a_job_on_another_machine_is_named_with_the_machine_and_how_to_pick_one() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let gpu = sshd.machine_yaml("gpu1", &env.path("remote-data"), "");
    env.set_config(&format!("machines:\n{gpu}"));
    let id = env.start("gpu1", "true");
    // Asked on the default machine (local), where it did not run.
    let e = env.err(&["exec", "result", "--id", &id], "job_not_found", 4);
    assert!(e["message"].as_str().unwrap().contains("on machine local"), "{e}");
    let hint = e["hint"].as_str().unwrap();
    assert!(hint.contains("--machine") && hint.contains("exec list"), "{e}");
    assert_eq!(env.wait("gpu1", &id)["state"], "succeeded");
}

#[test]
fn config_typos_are_warned_about_with_the_nearest_key_on_both_sides() {
    let env = TestEnv::with_config("machines:\n  - name: local\n    ssh_contol: false\n");
    let out = env.remote(&["exec", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did you mean `ssh_control`?"), "{stderr}");

    let codexd_config = env.path("codexd.yaml");
    std::fs::write(&codexd_config, "retention_cont: 3\n").unwrap();
    let mut child = env
        .codexd(&["rpc", "--config", codexd_config.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{\"type\":\"hello\"}\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did you mean `retention_count`?"), "{stderr}");
}

#[test]
fn logs_end_always_says_whether_there_is_more() {
    let env = TestEnv::new();
    let id = env.start("local", "echo one");
    env.wait("local", &id);
    let (_, lines) = env.run(&["exec", "logs", "--id", &id]);
    let end = lines.last().unwrap();
    assert_eq!(end["type"], "logs_end");
    assert_eq!(end["more"], false, "{end}");
}
