//! The whole `exec` command set against the built-in `local` machine.

use std::time::Duration;

use serde_json::Value;

use crate::support::{TestEnv, alive, wait_until};

#[test]
fn run_streams_events_and_passes_the_exit_code_through() {
    let env = TestEnv::new();
    let (code, lines) =
        env.run(&["exec", "run", "--cmd", "echo hello; echo oops >&2; printf tail; exit 3"]);
    assert_eq!(code, 3, "{lines:?}");
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"started"));
    assert_eq!(kinds.last(), Some(&"finished"));
    let logs: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l["type"] == "log")
        .map(|l| (l["stream"].as_str().unwrap(), l["line"].as_str().unwrap()))
        .collect();
    assert!(logs.contains(&("stdout", "hello")), "{logs:?}");
    assert!(logs.contains(&("stdout", "tail")), "{logs:?}");
    assert!(logs.contains(&("stderr", "oops")), "{logs:?}");
    let fin = lines.last().unwrap();
    assert_eq!((fin["state"].as_str(), fin["exit_code"].as_i64()), (Some("failed"), Some(3)));
    assert_eq!(fin["machine"], "local");

    let (code, lines) = env.run(&["exec", "run", "--cmd", "kill -TERM $$"]);
    assert_eq!(code, 128 + 15, "{lines:?}");
    assert_eq!(lines.last().unwrap()["signal"], 15);
}

#[test]
fn start_result_wait_and_the_status_fields() {
    let env = TestEnv::new();
    let start = env.ok(&["exec", "start", "--cmd", "echo hi", "--name", "first", "--label", "k=v"]);
    for field in ["exec_id", "machine", "status", "state", "cmd", "cwd", "created_at"] {
        assert!(!start[field].is_null(), "{field} in {start}");
    }
    assert_eq!(start["status"], "running");
    assert_eq!(start["machine"], "local");
    let id = start["exec_id"].as_str().unwrap();
    let done = env.wait("local", id);
    assert_eq!(
        (done["status"].as_str(), done["state"].as_str()),
        (Some("finished"), Some("succeeded"))
    );
    let result = env.ok(&["exec", "result", "--id", id]);
    for field in [
        "exec_id",
        "status",
        "state",
        "cmd",
        "cwd",
        "pid",
        "started_at",
        "finished_at",
        "exit_code",
        "signal",
        "duration_ms",
        "error",
    ] {
        assert!(result.get(field).is_some(), "{field} missing in {result}");
    }
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["name"], "first");
    assert_eq!(result["labels"]["k"], "v");
    assert_eq!(result["cwd"].as_str(), env.home.to_str());
    assert!(result["duration_ms"].as_u64().is_some());

    // Files of the store are private.
    use std::os::unix::fs::PermissionsExt;
    let dir = env.data_dir().join("jobs").join(id);
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    for f in ["status.json", "stdout.log", "stderr.log", "spec.json"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
}

#[test]
fn cmd_forms_cwd_env_and_script() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.home.join("work")).unwrap();
    let id = env.ok(&[
        "exec",
        "start",
        "--cwd",
        "~/work",
        "--env",
        "GREETING=hi there",
        "--cmd",
        "echo \"$GREETING from $(pwd)\"",
    ])["exec_id"]
        .as_str()
        .unwrap()
        .to_string();
    env.wait("local", &id);
    let out = env.run(&["exec", "logs", "--id", &id]).1;
    let want = format!("hi there from {}", env.home.join("work").display());
    assert_eq!(out[0]["line"], want.as_str());

    // argv form: no shell, arguments kept whole.
    let (code, lines) = env.run(&["exec", "run", "--", "printf", "%s|", "a b", "$HOME"]);
    assert_eq!(code, 0);
    assert!(lines.iter().any(|l| l["line"] == "a b|$HOME|"), "{lines:?}");

    // --script: the local file's text is sent and run.
    let script = env.path("job.sh");
    std::fs::write(&script, "#!/bin/bash\necho \"script says $((6*7))\"\nexit 5\n").unwrap();
    let (code, lines) = env.run(&["exec", "run", "--script", script.to_str().unwrap()]);
    assert_eq!(code, 5, "{lines:?}");
    assert!(lines.iter().any(|l| l["line"] == "script says 42"), "{lines:?}");
}

#[test]
fn start_failures_are_recorded_and_clear() {
    let env = TestEnv::new();
    let (code, lines) = env.run(&["exec", "start", "--cwd", "/does/not/exist", "--cmd", "true"]);
    assert_eq!(code, 4);
    assert_eq!(lines[0]["state"], "start_failed");
    assert_eq!(lines[0]["status"], "finished");
    assert!(lines[0]["error"].as_str().unwrap().contains("/does/not/exist"), "{lines:?}");

    let (code, lines) = env.run(&["exec", "start", "--shell", "no-such-shell -c", "--cmd", "true"]);
    assert_eq!(code, 4);
    assert_eq!(lines[0]["state"], "start_failed");
    assert!(lines[0]["error"].as_str().unwrap().contains("no-such-shell"), "{lines:?}");

    env.err(&["exec", "start", "--cmd", "   "], "invalid_argument", 4);
    env.err(&["exec", "start"], "usage", 2);
}

#[test]
fn logs_tail_since_pages_and_invalid_utf8() {
    let env = TestEnv::new();
    let id = env.start(
        "local",
        "for i in $(seq 1 500); do echo line-$i; done; printf 'bad \\377 byte\\nlast-partial'",
    );
    env.wait("local", &id);
    let size =
        std::fs::metadata(env.data_dir().join("jobs").join(&id).join("stdout.log")).unwrap().len();

    // Default: the last 2000 bytes, then logs_end with next_offset = size.
    let (_, lines) = env.run(&["exec", "logs", "--id", &id]);
    let end = lines.last().unwrap();
    assert_eq!(end["type"], "logs_end");
    assert_eq!(end["next_offset"]["stdout"].as_u64(), Some(size));
    assert_eq!(end["status"], "finished");
    // The tail starts at the first whole line of the last 2000 bytes (as the original's).
    let first = lines[0]["offset"].as_u64().unwrap();
    let stdout = std::fs::read(env.data_dir().join("jobs").join(&id).join("stdout.log")).unwrap();
    assert!(first >= size - 2000 && stdout[first as usize - 1] == b'\n', "{first}");

    // --tail-lines counts lines, the unterminated one included.
    let (_, lines) = env.run(&["exec", "logs", "--id", &id, "--tail-lines", "3"]);
    let text: Vec<&str> = lines.iter().filter_map(|l| l["line"].as_str()).collect();
    assert_eq!(text, ["line-500", "bad \u{fffd} byte", "last-partial"]);
    assert_eq!(lines[2]["partial"], true);

    // Paging with --since and a small --max-bytes loses and repeats nothing.
    let mut since = 0u64;
    let mut expected = 0u64;
    let mut all = Vec::new();
    loop {
        let (code, lines) = env.run(&[
            "exec",
            "logs",
            "--id",
            &id,
            "--since",
            &since.to_string(),
            "--max-bytes",
            "1000",
        ]);
        assert_eq!(code, 0);
        let end = lines.last().unwrap().clone();
        for l in &lines[..lines.len() - 1] {
            // Each piece starts where the one before it ended: nothing lost, nothing repeated.
            assert_eq!(l["offset"].as_u64().unwrap(), expected, "{l}");
            expected += byte_len(l["line"].as_str().unwrap()) + u64::from(l["partial"] != true);
            all.push(l.clone());
        }
        since = end["next_offset"]["stdout"].as_u64().unwrap();
        if end["more"] != true {
            break;
        }
    }
    assert_eq!(since, size);
    assert_eq!(expected, size);
    let joined: String = join_pieces(&all);
    assert!(joined.starts_with("line-1\nline-2\n"));
    assert!(joined.ends_with("line-500\nbad \u{fffd} byte\nlast-partial"));
    assert_eq!(joined.matches("line-").count(), 500);

    // --raw writes the bytes themselves.
    let out = env.remote(&["exec", "logs", "--id", &id, "--since", "0", "--raw"]).output().unwrap();
    assert_eq!(out.stdout.len() as u64, size);
    assert!(out.stdout.windows(5).any(|w| w == b"\\377" || w == [b'b', b'a', b'd', b' ', 0xff]));

    // An offset past the end is a clear error.
    env.err(&["exec", "logs", "--id", &id, "--since", "99999999"], "invalid_argument", 4);
}

/// The bytes a line stood for in the log; this test's only invalid byte (0xff) became one U+FFFD.
fn byte_len(line: &str) -> u64 {
    line.chars().map(|c| if c == '\u{fffd}' { 1 } else { c.len_utf8() as u64 }).sum()
}

/// Re-joins log pieces: complete lines get their newline back, partial pieces do not.
fn join_pieces(lines: &[Value]) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str(l["line"].as_str().unwrap());
        if l["partial"] != true {
            s.push('\n');
        }
    }
    s
}

#[test]
fn follow_streams_until_the_job_ends() {
    let env = TestEnv::new();
    let id = env.start("local", "for i in 1 2 3; do echo step-$i; sleep 0.2; done; echo done >&2");
    let (code, lines) =
        env.run(&["exec", "logs", "--id", &id, "--stream", "both", "--since", "0", "--follow"]);
    assert_eq!(code, 0);
    let text: Vec<&str> = lines.iter().filter_map(|l| l["line"].as_str()).collect();
    assert_eq!(text, ["step-1", "step-2", "step-3", "done"]);
    let end = lines.last().unwrap();
    assert_eq!(
        (end["type"].as_str(), end["state"].as_str()),
        (Some("logs_end"), Some("succeeded"))
    );
    assert_eq!(end["next_offset"]["stdout"], 21);
    assert_eq!(end["next_offset"]["stderr"], 5);
}

#[test]
fn wait_times_out_with_124_and_cancel_ends_the_job() {
    let env = TestEnv::new();
    let id = env.start("local", "sleep 30");
    let (code, lines) = env.run(&["exec", "wait", "--id", &id, "--timeout", "300ms"]);
    assert_eq!(code, 124);
    assert_eq!(lines[0]["status"], "running");
    assert_eq!(lines[0]["timed_out"], true);

    let pid = lines[0]["pid"].as_i64().unwrap() as i32;
    let v = env.ok(&["exec", "cancel", "--id", &id]);
    assert_eq!(v["state"], "cancelled");
    assert_eq!(v["status"], "finished");
    assert!(!alive(pid));

    // Cancelling a finished job changes nothing and says so.
    let again = env.ok(&["exec", "cancel", "--id", &id]);
    assert_eq!(again["state"], "cancelled");
    assert!(again["message"].as_str().unwrap().contains("already finished"));
}

#[test]
fn list_rm_prune_and_retention() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.data_dir()).unwrap();
    std::fs::write(env.data_dir().join("config.yaml"), "retention_count: 3\n").unwrap();
    let running = env.start("local", "sleep 30");
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = env.start("local", &format!("exit {}", i % 2));
        env.wait("local", &id);
        ids.push(id);
    }
    // Retention (run by each worker right after its job ends) kept the 3 newest finished jobs
    // and never touched the running one.
    let want = [ids[4].as_str(), &ids[3], &ids[2], &running];
    let listed = || -> Vec<String> {
        let list = env.ok(&["exec", "list"]);
        list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["exec_id"].as_str().unwrap().into())
            .collect()
    };
    assert!(wait_until(Duration::from_secs(5), || listed() == want), "{:?}", listed());

    let failed = env.ok(&["exec", "list", "--state", "failed"]);
    assert!(failed["jobs"].as_array().unwrap().iter().all(|j| j["state"] == "failed"));
    assert_eq!(env.ok(&["exec", "list", "--limit", "1"])["jobs"].as_array().unwrap().len(), 1);

    let e = env.err(&["exec", "rm", "--id", &running], "job_running", 4);
    assert!(e["message"].as_str().unwrap().contains("on machine local"), "{e}");
    let hint = e["hint"].as_str().unwrap();
    assert!(hint.contains("exec cancel --machine local --id"), "{e}");
    let removed = env.ok(&["exec", "rm", "--id", &ids[4]]);
    assert_eq!(removed["type"], "removed");
    env.err(&["exec", "result", "--id", &ids[4]], "job_not_found", 4);

    let pruned = env.ok(&["exec", "prune", "--keep", "1"]);
    assert_eq!(pruned["removed"].as_array().unwrap().len(), 1);
    let after = env.ok(&["exec", "list"]);
    assert_eq!(after["jobs"].as_array().unwrap().len(), 2);
    env.ok(&["exec", "cancel", "--id", &running, "--grace", "1s"]);
}

#[test]
fn idempotency_key_runs_the_command_once() {
    let env = TestEnv::new();
    let counter = env.path("count");
    let cmd = format!("echo x >> {}", counter.display());
    let a = env.ok(&["exec", "start", "--idempotency-key", "train-42", "--cmd", &cmd]);
    let b = env.ok(&["exec", "start", "--idempotency-key", "train-42", "--cmd", &cmd]);
    assert_eq!(a["exec_id"], b["exec_id"]);
    assert_eq!(b["replayed"], true);
    env.wait("local", a["exec_id"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(&counter).unwrap(), "x\n");
    env.err(
        &["exec", "start", "--idempotency-key", "../x", "--cmd", "true"],
        "invalid_argument",
        4,
    );
}

#[test]
fn ctrl_c_with_detach_on_interrupt_detaches_exec_run_and_the_job_goes_on() {
    let env = TestEnv::new();
    let marker = env.path("finished");
    let cmd = format!("echo started; sleep 1; touch {}", marker.display());
    let mut child = env
        .remote(&["exec", "run", "--detach-on-interrupt", "--cmd", &cmd])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (rx, reader) = crate::support::relay_json_lines(stdout);
    // Wait for the job's first output to be relayed, then press Ctrl-C.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let v = rx.recv_timeout(left).expect("the job's first line was never relayed");
        if v["line"] == "started" {
            break;
        }
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let lines = reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{lines:?}");
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "detached");
    assert!(last["hint"].as_str().unwrap().contains("--follow"));
    assert!(wait_until(Duration::from_secs(10), || marker.exists()), "the job went on");
}

/// `local` is answered inside codex-remote: the `codexd` next to it is started only as each
/// job's worker, never as `codexd rpc` (the files commands, whose bytes stream through a child,
/// keep `codexd rpc`). Without a `codexd` to start workers from, the answer names it.
#[test]
fn local_requests_are_answered_in_process_and_only_workers_start_codexd() {
    let env = TestEnv::new();
    let starts = env.path("codexd-starts");
    let wrapper = env.path("codexd");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$1\" >> {}\nexec {} \"$@\"\n",
            starts.display(),
            crate::support::CODEXD
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let with_wrapper = |args: &[&str]| {
        let out = env.remote(args).env("CODEXD_BIN", &wrapper).output().unwrap();
        (out.status.code().unwrap(), crate::support::json_lines(&out))
    };
    let (code, lines) = with_wrapper(&["exec", "start", "--cmd", "echo one; sleep 0.3; echo two"]);
    assert_eq!(code, 0, "{lines:?}");
    let id = lines[0]["exec_id"].as_str().unwrap().to_string();
    let (code, lines) = with_wrapper(&["exec", "logs", "--id", &id, "--follow"]);
    assert_eq!(code, 0, "{lines:?}");
    let text: Vec<&str> = lines.iter().filter_map(|l| l["line"].as_str()).collect();
    assert_eq!(text, ["one", "two"]);
    let (code, lines) = with_wrapper(&["exec", "wait", "--id", &id]);
    assert_eq!((code, lines[0]["exit_code"].as_i64()), (0, Some(0)), "{lines:?}");
    let (code, lines) = with_wrapper(&["exec", "run", "--cmd", "exit 4"]);
    assert_eq!(code, 4, "{lines:?}");
    let (code, lines) = with_wrapper(&["exec", "start", "--cmd", "sleep 30"]);
    assert_eq!(code, 0, "{lines:?}");
    let long = lines[0]["exec_id"].as_str().unwrap().to_string();
    let (code, lines) = with_wrapper(&["exec", "cancel", "--id", &long]);
    assert_eq!((code, lines[0]["state"].as_str()), (0, Some("cancelled")), "{lines:?}");
    let (code, lines) = with_wrapper(&["exec", "list"]);
    assert_eq!((code, lines[0]["jobs"].as_array().map(Vec::len)), (0, Some(3)), "{lines:?}");
    let (code, _) = with_wrapper(&["machine", "check", "--machine", "local"]);
    assert_eq!(code, 0);
    let seen = std::fs::read_to_string(&starts).unwrap();
    let seen: Vec<&str> = seen.lines().collect();
    assert_eq!(seen, ["worker", "worker", "worker"], "codexd was started as {seen:?}");

    // A files command keeps its `codexd rpc` child.
    let file = env.path("written.txt");
    let (code, lines) =
        with_wrapper(&["file", "write", "--dst", file.to_str().unwrap(), "--content", "x"]);
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    assert!(std::fs::read_to_string(&starts).unwrap().lines().any(|l| l == "rpc"));

    // codexd's own config is read as `codexd rpc` reads it, `CODEXD_CONFIG` included.
    let codexd_yaml = env.path("codexd.yaml");
    std::fs::write(&codexd_yaml, "env_defaults:\n  FROM_CODEXD_CONFIG: seen\n").unwrap();
    let out = env
        .remote(&["exec", "run", "--cmd", "echo $FROM_CODEXD_CONFIG"])
        .env("CODEXD_CONFIG", &codexd_yaml)
        .output()
        .unwrap();
    let lines = crate::support::json_lines(&out);
    assert!(lines.iter().any(|l| l["line"] == "seen"), "{lines:?}");

    // The doctor checks the codexd that workers start from against this codex-remote.
    let worker_check = |codexd: &std::path::Path| {
        let out = env.remote(&["exec", "doctor"]).env("CODEXD_BIN", codexd).output().unwrap();
        let report = crate::support::json_lines(&out).remove(0);
        let checks = report["checks"].as_array().unwrap().clone();
        checks.into_iter().find(|c| c["name"] == "worker").expect("a worker check")
    };
    let same = worker_check(&wrapper);
    assert_eq!(same["ok"], true, "{same}");
    let older = env.path("older-codexd");
    std::fs::write(&older, "#!/bin/sh\necho '{\"name\":\"codexd\",\"version\":\"0.0.1\"}'\n")
        .unwrap();
    std::fs::set_permissions(&older, std::fs::Permissions::from_mode(0o755)).unwrap();
    let other = worker_check(&older);
    assert_eq!(other["ok"], false, "{other}");
    assert!(other["detail"].as_str().unwrap().contains("0.0.1"), "{other}");

    let out = env.remote(&["exec", "list"]).env("CODEXD_BIN", env.path("missing/codexd")).output();
    let lines = crate::support::json_lines(&out.unwrap());
    assert_eq!(lines[0]["code"], "codexd_not_found", "{lines:?}");
}
