//! `--format text|json` (env `CODEX_REMOTE_FORMAT`) and the progress notes on a terminal,
//! through the real `codex-remote`.

use crate::support::TestEnv;

/// Runs `codex-remote ARGS`; returns the exit code, stdout and stderr.
fn output(env: &TestEnv, args: &[&str], format_env: Option<&str>) -> (i32, String, String) {
    let mut cmd = env.remote(args);
    match format_env {
        Some(v) => cmd.env("CODEX_REMOTE_FORMAT", v),
        None => cmd.env_remove("CODEX_REMOTE_FORMAT"),
    };
    let out = cmd.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn text_lists_jobs_as_a_table_by_flag_or_env() {
    let env = TestEnv::new();
    let id = env.start("local", "echo hello");
    env.wait("local", &id);
    for (args, var) in [
        (&["--format", "text", "exec", "list"][..], None),
        (&["exec", "list"][..], Some("text")),
        (&["exec", "list", "--format=text"][..], Some("json")),
    ] {
        let (code, out, _) = output(&env, args, var);
        assert_eq!(code, 0, "{args:?}");
        let mut lines = out.lines();
        let header = lines.next().unwrap_or_default();
        for column in ["ID", "NAME", "STATE", "EXIT", "AGE", "CMD"] {
            assert!(header.split_whitespace().any(|c| c == column), "{header}");
        }
        let row = lines.next().unwrap_or_default();
        assert!(row.starts_with(&id) && row.contains("succeeded") && row.ends_with("echo hello"));
    }
    // Another command reads as `key: value`.
    let (_, out, _) = output(&env, &["--format", "text", "exec", "result", &id], None);
    assert!(out.lines().any(|l| l == format!("exec_id: {id}")), "{out}");
    assert!(out.lines().any(|l| l == "state: succeeded"), "{out}");
}

#[test]
fn text_is_the_jobs_own_bytes_for_logs_and_run() {
    let env = TestEnv::new();
    let script = r"printf 'one\ttab\n\001raw'; printf 'to err\n' >&2";
    let id = env.start("local", script);
    env.wait("local", &id);
    let args = ["--format", "text", "exec", "logs", &id, "--stream", "both"];
    let (code, out, err) = output(&env, &args, None);
    assert_eq!(code, 0);
    assert_eq!(out, "one\ttab\n\u{1}raw");
    assert_eq!(err, "to err\n");

    let (code, out, err) = output(&env, &["exec", "run", "--cmd", script], Some("text"));
    assert_eq!(code, 0);
    assert_eq!(out, "one\ttab\n\u{1}raw");
    assert_eq!(err, "to err\n", "nothing but the job's stderr when stderr is a pipe");
    let (code, out, _) =
        output(&env, &["--format", "text", "exec", "run", "--cmd", "exit 7"], None);
    assert_eq!((code, out.as_str()), (7, ""));
}

#[test]
fn json_stays_the_default_byte_for_byte() {
    let env = TestEnv::new();
    let id = env.start("local", "echo same");
    env.wait("local", &id);
    for args in [&["exec", "list"][..], &["exec", "result", &id], &["exec", "logs", &id]] {
        let (code, default, _) = output(&env, args, None);
        assert_eq!(code, 0);
        let explicit: Vec<&str> = ["--format", "json"].iter().chain(args).copied().collect();
        assert_eq!(output(&env, &explicit, None).1, default, "{args:?}");
        assert_eq!(output(&env, args, Some("json")).1, default, "{args:?}");
        assert!(default.lines().all(|l| l.starts_with('{')), "{default}");
    }
    // exec run: started, log, finished as before; nothing new on a piped stderr.
    let (code, out, err) = output(&env, &["exec", "run", "--cmd", "echo hi"], None);
    assert_eq!(code, 0);
    let types: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].to_string())
        .collect();
    assert_eq!(types, ["\"started\"", "\"log\"", "\"finished\""]);
    assert_eq!(err, "");
    let (code, _, err) = output(&env, &["machine", "up"], None);
    assert_eq!((code, err.as_str()), (0, ""));
}

#[test]
fn a_bad_format_is_a_usage_error() {
    let env = TestEnv::new();
    let e = env.err(&["--format", "xml", "exec", "list"], "usage", 2);
    assert!(e["message"].as_str().unwrap().contains("xml"), "{e}");
    let (code, out, err) = output(&env, &["exec", "list"], Some("yaml"));
    assert_eq!(code, 2);
    assert!(out.contains(r#""code":"usage""#) && err.contains("yaml"), "{out} {err}");
    // In text mode an error is the human message on stderr only, with the same exit code.
    let (code, out, err) = output(&env, &["--format", "text", "exec", "result", "nope"], None);
    assert_eq!((code, out.as_str()), (4, ""));
    assert!(err.contains("invalid_id"), "{err}");
    let (code, out, err) = output(&env, &["--format", "text", "exec", "list", "--nope"], None);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("--nope"), "{err}");
}

/// On a terminal (a pty from `script`), `exec run` says it started before the output.
#[test]
fn exec_run_notes_its_start_on_a_terminal_stderr() {
    if std::process::Command::new("script").arg("--version").output().is_err() {
        crate::support::skip("no `script` (util-linux's, in Debian's bsdutils) for a pty");
        return;
    }
    let env = TestEnv::new();
    let run = format!("{} exec run --cmd 'echo hi' 2>&1 >/dev/null", crate::support::CODEX_REMOTE);
    let mut cmd = env.command(std::path::Path::new("script"), &["-qec", &run, "/dev/null"]);
    let out = cmd.env_remove("CODEX_REMOTE_FORMAT").output().unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(tty.contains("codex-remote: started ") && tty.contains("on local, waiting"), "{tty}");
}
