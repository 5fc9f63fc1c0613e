//! The terminal view of logs (`--view terminal`): progress bars at their last state, no ANSI
//! escapes, repeats collapsed; and the status's `last_stdout`, `last_stderr` and `traceback`.

use std::time::Instant;

use serde_json::Value;

use crate::support::{TestEnv, json_lines};

/// The `log` lines of `exec logs ARGS` on `local`, and the bytes printed on stdout.
fn log_lines(env: &TestEnv, id: &str, extra: &[&str]) -> (Vec<Value>, usize) {
    let mut args = vec!["exec", "logs", "--machine", "local", "--id", id];
    args.extend_from_slice(extra);
    let out = env.remote(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out).into_iter().filter(|l| l["type"] == "log").collect();
    (lines, out.stdout.len())
}

fn texts(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|l| l["line"].as_str().unwrap()).collect()
}

#[test]
fn a_progress_bar_colours_and_repeats_read_as_a_terminal_shows_them() {
    let env = TestEnv::new();
    // A tqdm-style stderr: one long "line" of \r updates; stdout with colours and repeats.
    let cmd = "printf 'loading\\n' >&2; \
               for i in $(seq 1 4000); do printf '\\r%5d/4000 [%s]' $i '#####################' >&2; done; \
               printf '\\n' >&2; \
               printf '\\033[1;31mred\\033[0m\\nsame\\nsame\\nsame\\ndone\\n'";
    let id = env.start("local", cmd);
    env.wait("local", &id);

    let (raw, raw_bytes) = log_lines(&env, &id, &["--stream", "stderr", "--tail-lines", "1"]);
    assert!(raw_bytes > 100_000, "the raw line is every update: {raw_bytes} bytes");
    assert!(raw[0]["line"].as_str().unwrap().contains("   1/4000"));

    let view = ["--view", "terminal"];
    let (lines, bytes) =
        log_lines(&env, &id, &[&["--stream", "stderr", "--tail-lines", "1"][..], &view].concat());
    assert_eq!(texts(&lines), [" 4000/4000 [#####################]"], "{lines:?}");
    assert!(bytes < 2048, "{bytes} bytes");
    let (lines, _) =
        log_lines(&env, &id, &[&["--stream", "stderr", "--tail-lines", "5"][..], &view].concat());
    assert_eq!(texts(&lines), ["loading", " 4000/4000 [#####################]"]);

    // Colours dropped, the three "same" lines once with `repeated`.
    let (lines, _) = log_lines(&env, &id, &[&["--tail-lines", "3"][..], &view].concat());
    assert_eq!(texts(&lines), ["red", "same", "done"], "{lines:?}");
    assert_eq!(lines[1]["repeated"], 3);
    let (raw, _) = log_lines(&env, &id, &["--tail-lines", "5"]);
    assert_eq!(raw[0]["line"], "\u{1b}[1;31mred\u{1b}[0m");
    // Without a tail the whole log reads the same way.
    let (lines, _) = log_lines(&env, &id, &[&["--since", "0"][..], &view].concat());
    assert_eq!(texts(&lines), ["red", "same", "done"]);

    // The text format prints the lines themselves.
    let out = env
        .remote(&[
            "--format", "text", "exec", "logs", "-m", "local", "--id", &id, "--view", "terminal",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "red\nsame\ndone\n");

    // The status says where the job stands.
    let status = env.ok(&["exec", "result", "--machine", "local", "--id", &id]);
    assert_eq!(status["last_stdout"], "done", "{status}");
    assert_eq!(status["last_stderr"], " 4000/4000 [#####################]", "{status}");
    assert!(status.get("traceback").is_none(), "a job that succeeded: {status}");
}

#[test]
fn a_failed_job_carries_its_last_traceback() {
    let env = TestEnv::new();
    let cmd = "echo step 1; \
               printf 'Traceback (most recent call last):\\n  File \"old.py\", line 1\\nKeyError: 1\\n' >&2; \
               printf 'Traceback (most recent call last):\\n  File \"train.py\", line 9, in <module>\\n    main()\\nValueError: boom\\n' >&2; \
               echo 'wandb: finished' >&2; exit 1";
    let id = env.start("local", cmd);
    let status = env.wait("local", &id);
    assert_eq!(status["state"], "failed");
    let expected = "Traceback (most recent call last):\n  File \"train.py\", line 9, in <module>\n    main()\nValueError: boom";
    assert_eq!(status["traceback"], expected, "{status}");
    assert_eq!(status["last_stdout"], "step 1");
    assert_eq!(status["last_stderr"], "wandb: finished");
    let result = env.ok(&["exec", "result", "--machine", "local", "--id", &id]);
    assert_eq!(result["traceback"], expected);
}

/// A 50 MB progress-bar log: the terminal view's tail answers a few bytes, fast, because it
/// reads backwards from the end (the whole file read as raw lines takes far longer).
#[test]
fn the_terminal_tail_of_a_50_mb_progress_bar_reads_only_its_end() {
    let env = TestEnv::new();
    let cmd = "yes ' 50%|#####     | 5/10 [00:01<00:01]' | head -c 50000000 | tr '\\n' '\\r' >&2; \
               printf '\\r100%%|##########| 10/10\\n' >&2";
    let id = env.start("local", cmd);
    env.wait("local", &id);
    let size = std::fs::metadata(env.data_dir().join("jobs").join(&id).join("stderr.log"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(size > 50_000_000, "stderr.log is {size} bytes");
    let request = |view: &str| {
        format!(
            "{{\"type\":\"exec_logs\",\"exec_id\":\"{id}\",\"stream\":\"stderr\",\"tail_lines\":20{view}}}\n"
        )
    };
    let started = Instant::now();
    let answer = env.rpc_raw(request(",\"view\":\"terminal\"").as_bytes());
    let terminal = started.elapsed();
    let bytes: usize = answer.iter().map(|l| l.to_string().len()).sum();
    let logs: Vec<&Value> = answer.iter().filter(|l| l["type"] == "log").collect();
    assert_eq!(logs.len(), 1, "{answer:?}");
    assert_eq!(logs[0]["line"], "100%|##########| 10/10");
    assert!(bytes <= 4096, "{bytes} bytes");
    let started = Instant::now();
    let raw = env.rpc_raw(request("").as_bytes());
    let whole = started.elapsed();
    assert!(raw.iter().filter(|l| l["type"] == "log").count() > 50, "raw sends 64 KiB pieces");
    eprintln!("terminal tail: {terminal:?}; raw tail of the same: {whole:?}");
    assert!(terminal < whole, "terminal {terminal:?} vs raw {whole:?}");
}
