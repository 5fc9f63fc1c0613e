//! Exit codes that survive a closed stdout or stderr, usage errors that name what is missing,
//! empty environment variables, and `--machine` before the subcommand.

use std::process::{Command, Stdio};

use crate::support::TestEnv;

/// Runs `cmd` with its stdout (or stderr) a pipe whose reading end is already closed, as
/// `| true` or `2>&1 | head -c 0` leave it; returns the exit code.
fn with_closed(mut cmd: Command, stderr: bool) -> i32 {
    if stderr {
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    }
    let mut child = cmd.spawn().unwrap();
    // Dropping the reading end before the first write: every write meets EPIPE.
    drop(child.stdout.take());
    drop(child.stderr.take());
    child.wait().unwrap().code().unwrap_or(-1)
}

#[test]
fn the_jobs_exit_code_survives_a_closed_stdout() {
    let env = TestEnv::new();
    let run = env.remote(&["exec", "run", "-m", "local", "--cmd", "echo a; echo b; exit 5"]);
    assert_eq!(with_closed(run, false), 5, "exec run | head -1");

    let id = env.start("local", "echo hi; exit 3");
    env.wait("local", &id);
    let wait = env.remote(&["exec", "wait", "-m", "local", "--id", &id, "--exit-status"]);
    assert_eq!(with_closed(wait, false), 3, "exec wait --exit-status | true");
    let watch = env.remote(&["exec", "watch", "-m", "local", "--id", &id]);
    assert_eq!(with_closed(watch, false), 3, "exec watch | true");
    // A command whose code is not a job's still ends quietly with 0.
    let list = env.remote(&["exec", "list", "-m", "local"]);
    assert_eq!(with_closed(list, false), 0, "exec list | true");
}

#[test]
fn a_closed_stderr_never_panics_nor_changes_the_exit_code() {
    // A config typo makes a warning on stderr before anything else.
    let env = TestEnv::with_config("machines: []\ndefualt_machine: local\n");
    let run =
        env.remote(&["--format", "text", "exec", "run", "-m", "local", "--cmd", "echo e >&2"]);
    assert_eq!(with_closed(run, true), 0, "a job that succeeded");
    let run = env.remote(&["exec", "run", "-m", "local", "--cmd", "echo e >&2; exit 3"]);
    assert_eq!(with_closed(run, true), 3);
    // An error's human line goes to the closed stderr: the error's own exit code.
    let missing = env.remote(&["exec", "result", "-m", "nowhere", "--id", "last"]);
    assert_eq!(with_closed(missing, true), 2, "unknown_machine");
    let usage = env.remote(&["exec", "result", "--no-such-flag"]);
    assert_eq!(with_closed(usage, true), 2, "usage");
}

#[test]
fn a_usage_error_names_the_missing_arguments_in_its_json() {
    let env = TestEnv::new();
    let err = env.err(&["sync", "push", "-m", "local"], "usage", 2);
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("--src <SRC>") && message.contains("--dst <DST>"), "{err}");
    assert_eq!(err["missing"], serde_json::json!(["--src <SRC>", "--dst <DST>"]), "{err}");
}

#[test]
fn empty_environment_variables_count_as_unset() {
    let env = TestEnv::new();
    for var in ["CODEX_REMOTE_FORMAT", "CODEX_REMOTE_CONFIG", "CODEX_REMOTE_MACHINE"] {
        let out = env.remote(&["exec", "list", "--limit", "1"]).env(var, "").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{var}=: {stderr}");
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(line["machine"], "local", "{var}=");
    }
    let out = env.remote(&["version"]).env("CODEX_REMOTE_FORMAT", "").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn machine_goes_before_the_subcommand_too() {
    let env = TestEnv::with_config(
        "machines:\n  - name: gpu1\n    ssh: gpu1.invalid\ndefault_machine: gpu1\n",
    );
    let list = env.ok(&["--machine", "local", "exec", "list"]);
    assert_eq!(list["machine"], "local", "{list}");
    let list = env.ok(&["-m", "gpu1", "exec", "list", "-m", "local"]);
    assert_eq!(list["machine"], "local", "the one after the subcommand wins");
    env.err(&["--machine", "nope", "exec", "list"], "unknown_machine", 2);
}
