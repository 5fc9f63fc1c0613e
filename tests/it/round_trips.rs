//! What one command costs on the wire: how many `codexd rpc` processes it starts (each is an
//! ssh session, two round trips at least) and how many writes reach codexd's stdin (each small
//! write is a round trip over TCP with Nagle), counted by a `codexd:`
//! wrapper that logs its start and relays stdin; and a follow that gets a line as it lands,
//! not at the next poll.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::{CODEXD, Sshd, TestEnv, skip};

/// A `codexd` that appends `rpc` to `log` per start and one `read N` line per read of its
/// stdin, then relays the bytes to the real codexd. `env` lines are exported first.
fn counting_codexd(dir: &Path, log: &Path, env: &str) -> PathBuf {
    let path = dir.join("counting-codexd");
    let relay = r#"
import os, subprocess, sys
log = open(sys.argv[1], "a")
p = subprocess.Popen(sys.argv[2:], stdin=subprocess.PIPE)
while True:
    b = os.read(0, 1 << 20)
    if not b:
        break
    log.write("read %d\n" % len(b))
    log.flush()
    p.stdin.write(b)
    p.stdin.flush()
p.stdin.close()
sys.exit(p.wait())
"#;
    std::fs::write(dir.join("relay.py"), relay).unwrap();
    let script = format!(
        "#!/bin/sh\n{env}\necho \"$1\" >> {log}\nexec python3 {relay} {log} {codexd} \"$@\"\n",
        log = log.display(),
        relay = dir.join("relay.py").display(),
        codexd = CODEXD,
    );
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn python3() -> bool {
    std::process::Command::new("python3").arg("-V").output().is_ok_and(|o| o.status.success())
}

/// The `rpc` starts and the reads logged since `from` lines.
fn logged(log: &Path, from: usize) -> (usize, Vec<usize>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().skip(from).collect();
    let rpcs = lines.iter().filter(|l| **l == "rpc").count();
    let reads = lines.iter().filter_map(|l| l.strip_prefix("read ")?.parse().ok()).collect();
    (rpcs, reads)
}

fn log_len(log: &Path) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().lines().count()
}

/// An ssh machine `gpu` whose codexd is the counting wrapper.
fn ssh_env() -> Option<(TestEnv, Sshd, PathBuf)> {
    if !python3() {
        skip("python3 is not installed (the counting relay)");
        return None;
    }
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let log = env.path("calls.log");
    let codexd = counting_codexd(env.dir.path(), &log, "");
    env.set_config(&format!(
        "machines:\n  - name: gpu\n    ssh: testhost\n    ssh_args: [\"-F\", \"{cfg}\"]\n    \
         codexd: {codexd}\n    data_dir: {data}\n",
        cfg = sshd.ssh_config.display(),
        codexd = codexd.display(),
        data = env.path("remote-data").display()
    ));
    Some((env, sshd, log))
}

#[test]
fn exec_result_sends_each_line_in_one_write() {
    let Some((env, _sshd, log)) = ssh_env() else { return };
    let id = env.start("gpu", "true");
    // No cached hello: the hello in one write, then (once checked) the request in one.
    let cache = env.home.join(".cache/codex-remote/hello");
    std::fs::remove_dir_all(&cache).unwrap();
    let from = log_len(&log);
    let status = env.ok(&["exec", "result", "--machine", "gpu", "--id", &id]);
    assert_eq!(status["exec_id"], id.as_str());
    let (rpcs, reads) = logged(&log, from);
    assert_eq!(rpcs, 1, "one codexd rpc per exec result");
    assert_eq!(reads.len(), 2, "a hello, then the request, each whole: {reads:?}");
    // With the hello cached, the request alone, in one write.
    let from = log_len(&log);
    env.ok(&["exec", "result", "--machine", "gpu", "--id", &id]);
    let (rpcs, reads) = logged(&log, from);
    assert_eq!((rpcs, reads.len()), (1, 1), "{reads:?}");
}

#[test]
fn exec_result_last_is_one_rpc_call() {
    let Some((env, _sshd, log)) = ssh_env() else { return };
    let id = env.start("gpu", "true");
    let prefix = &id[..13];
    for given in ["last", prefix] {
        let from = log_len(&log);
        let status = env.ok(&["exec", "result", "--machine", "gpu", given]);
        assert_eq!(status["exec_id"], id.as_str(), "{given}");
        assert_eq!(logged(&log, from).0, 1, "`exec result {given}` is one codexd rpc call");
    }
    // The same errors as when the id was resolved in a call of its own.
    env.err(&["exec", "result", "--machine", "gpu", "0000"], "job_not_found", 4);
    env.err(&["exec", "result", "--machine", "gpu", "../etc"], "invalid_id", 4);
}

#[test]
fn exec_run_is_one_rpc_call() {
    let Some((env, _sshd, log)) = ssh_env() else { return };
    // The hello cached (any call does it), as for every call after a machine's first.
    env.ok(&["exec", "list", "--machine", "gpu"]);
    let from = log_len(&log);
    let out = env
        .remote(&["exec", "run", "--machine", "gpu", "--cmd", "echo hi; echo err >&2; exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<Value> = super::support::json_lines(&out);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap_or("")).collect();
    assert_eq!(kinds.first(), Some(&"started"), "{events:?}");
    assert_eq!(kinds.last(), Some(&"finished"), "{events:?}");
    let lines: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["type"] == "log")
        .map(|e| (e["stream"].as_str().unwrap(), e["line"].as_str().unwrap()))
        .collect();
    assert!(lines.contains(&("stdout", "hi")) && lines.contains(&("stderr", "err")), "{lines:?}");
    assert_eq!(events.last().unwrap()["exit_code"], 3);
    let (rpcs, reads) = logged(&log, from);
    assert_eq!(rpcs, 1, "exec run is one codexd rpc call");
    // One request, not a hello, a start and a follow each waiting for the one before.
    assert_eq!(reads.len(), 1, "{reads:?}");
}

#[test]
fn follow_gets_a_line_as_it_lands_not_at_the_poll() {
    if !python3() {
        return skip("python3 is not installed (the counting relay)");
    }
    let env = TestEnv::new();
    let log = env.path("calls.log");
    // A poll of 20 s: a line seen only by polling arrives seconds late.
    let codexd = counting_codexd(env.dir.path(), &log, "export CODEXD_FOLLOW_POLL_MS=20000");
    env.set_config(&format!("machines:\n  - name: local\n    codexd: {}\n", codexd.display()));
    let id = env.start(
        "local",
        "for i in 1 2 3; do sleep 1.5; echo $(date +%s%N); done; sleep 1.5; echo end",
    );
    let started = Instant::now();
    let mut follow = env
        .remote(&["exec", "logs", "--machine", "local", "--id", &id, "--since", "0", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut late = Vec::new();
    for line in BufReader::new(follow.stdout.take().unwrap()).lines() {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if event["type"] != "log" {
            continue;
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        if let Ok(written) = event["line"].as_str().unwrap().parse::<u128>() {
            late.push(now.as_nanos().saturating_sub(written) / 1_000_000);
        }
    }
    assert!(follow.wait().unwrap().success());
    assert_eq!(late.len(), 3, "{late:?}");
    assert!(late.iter().all(|ms| *ms < 1000), "each line well under the 20 s poll: {late:?} ms");
    // The job's end (its status replaced) wakes the follow too.
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
}
