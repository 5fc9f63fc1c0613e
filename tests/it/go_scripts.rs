//! The original tool's users' shell scripts (tests/scripts/), run unchanged against
//! `codex-remote` over the loopback sshd: nothing may fail quietly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use crate::support::{self, CODEX_REMOTE, CODEXD, Sshd, TestEnv};

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("scripts")
}

/// Runs `tests/scripts/NAME ARGS` with `codex-remote` on the PATH, in the test's world.
fn script(env: &TestEnv, name: &str, args: &[&str]) -> Output {
    let bin = Path::new(CODEX_REMOTE).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new(scripts().join(name));
    cmd.args(args).current_dir(env.dir.path()).env("PATH", path);
    env.remote(&[]).get_envs().for_each(|(k, v)| match v {
        Some(v) => {
            cmd.env(k, v);
        }
        None => {
            cmd.env_remove(k);
        }
    });
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An ssh machine `gpu` whose codexd `machine up` installs into `<tmp>/rbin`.
fn gpu_env() -> (TestEnv, Sshd) {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let rbin = env.path("rbin");
    let machine = sshd
        .machine_yaml(
            "gpu",
            &env.path("remote-data"),
            &format!("    install_dir: {}\n", rbin.display()),
        )
        .replace(&format!("codexd: {CODEXD}"), &format!("codexd: {}/codexd", rbin.display()));
    env.set_config(&format!("machines:\n{machine}"));
    (env, sshd)
}

#[test]
fn the_original_tools_scripts_run_unchanged() {
    let (env, _sshd) = gpu_env();

    // Check a machine and bring it up when it is down.
    let out = script(&env, "check_and_up.sh", &["gpu"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"daemon_ok\":false"), "down at first: {}", text(&out));
    assert!(
        stdout.trim_end().ends_with('}') && stdout.contains("\"daemon_ok\":true"),
        "{}",
        text(&out)
    );

    // Submit with and without a custom shell; `--shell bash` is `bash -lc`, so `$0` is bash.
    for shell in ["", "bash", "sh"] {
        let out = script(&env, "submit.sh", &["gpu", "echo shell=$0", shell]);
        assert!(out.status.success(), "{}", text(&out));
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let out = script(&env, "watch_until_finish.sh", &["gpu", &id]);
        assert!(out.status.success(), "{}", text(&out));
        let result = String::from_utf8_lossy(&out.stdout);
        assert!(result.contains("\"exit_code\":0"), "--shell {shell:?} failed quietly: {result}");
    }

    // A chain of jobs stops at the first failure.
    let out = script(&env, "run_chain.sh", &["gpu", "true", "echo two", "exit 3", "echo never"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok: echo two") && !stdout.contains("never"), "{}", text(&out));

    // Triage a failure: the stderr tail and the exit code.
    let out = script(&env, "submit.sh", &["gpu", "echo boom >&2; exit 7"]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    script(&env, "watch_until_finish.sh", &["gpu", &id]);
    let out = script(&env, "triage.sh", &["gpu", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"line\":\"boom\""), "{}", text(&out));
    assert_eq!(stdout.trim_end().lines().last(), Some("7"), "{}", text(&out));

    // Watch a job to its end: a summary line, the job's exit code as the script's.
    let out = script(
        &env,
        "submit.sh",
        &["gpu", "for i in 1 2 3; do echo tick $i; sleep 0.2; done; exit 5"],
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = script(&env, "watch.sh", &["gpu", &id]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let watched = std::fs::read_to_string(env.dir.path().join("watch.out")).unwrap();
    for i in 1..=3 {
        assert!(watched.contains(&format!("\"line\":\"tick {i}\"")), "{watched}");
    }
    let summary: serde_json::Value = serde_json::from_str(watched.lines().last().unwrap()).unwrap();
    assert_eq!(
        (summary["type"].as_str(), summary["exit_code"].as_i64(), summary["status"].as_str()),
        (Some("summary"), Some(5), Some("finished")),
        "{summary}"
    );

    // Write a file, run a job on it, read its artifacts list and the artifact back.
    let work = env.path("work");
    let out = script(&env, "write_and_collect.sh", &["gpu", work.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "\"path\":\"model.txt\"\nlr=0.1", "{}", text(&out));
}

#[test]
fn artifacts_come_from_the_cwd_or_the_job_dir_and_a_bad_file_is_a_warning() {
    let env = TestEnv::new();
    let status = |cmd: &str| {
        let (code, lines) = env.run(&["exec", "run", "--cmd", cmd]);
        assert_eq!(code, 0, "{lines:?}");
        let id = lines[0]["exec_id"].as_str().unwrap().to_string();
        env.ok(&["exec", "result", "--id", &id])
    };
    let job = status(
        r#"printf '{"version":"1","artifacts":[{"name":"log","type":"file","path":"a.log"}]}' > "$CODEXD_JOB_DIR/artifacts.json""#,
    );
    assert_eq!(job["artifacts"], serde_json::json!([{"name":"log","type":"file","path":"a.log"}]));
    assert!(job.get("warning").is_none(), "{job}");
    let job = status(r#"echo '{"artifacts": nope' > "$CODEXD_JOB_DIR/artifacts.json""#);
    assert!(job.get("artifacts").is_none(), "{job}");
    assert!(job["warning"].as_str().unwrap().contains("not valid JSON"), "{job}");
    assert_eq!(job["state"], "succeeded", "a bad artifacts file is not the job's failure");
    let job = status("true");
    assert!(job.get("artifacts").is_none() && job.get("warning").is_none(), "{job}");
}

#[test]
fn machine_commands_speak_the_original_fields() {
    let (env, _sshd) = gpu_env();
    env.ok(&["machine", "up", "--machine", "gpu"]);
    let listing = env.ok(&["machine", "list", "--json", "--parallel", "1", "--timeout", "20s"]);
    assert_eq!(listing["total"], 2, "gpu and local: {listing}");
    assert_eq!(listing["daemon_ok"], 2, "{listing}");
    assert_eq!(listing["failed"], 0, "{listing}");
    assert_eq!(listing["ssh_ok"], 1, "{listing}");
    assert!(listing["checked_at"].is_string());
    assert_eq!(listing["machines"].as_array().unwrap().len(), 2);

    let ssh = env.ok(&[
        "machine",
        "ssh",
        "--machine",
        "gpu",
        "--cmd",
        "echo hi; echo err >&2; exit 3",
        "--json",
    ]);
    assert_eq!(ssh["ok"], false, "{ssh}");
    assert_eq!(ssh["code"], 3, "{ssh}");
    assert_eq!(ssh["stdout"], "hi\n", "{ssh}");
    assert!(ssh["stderr"].as_str().unwrap().contains("err"), "{ssh}");
    assert_eq!((ssh["forward_agent"].as_bool(), ssh["tty"].as_bool()), (Some(true), Some(false)));
}

#[test]
fn an_addr_in_the_original_url_form_is_read_as_host_port() {
    let env = TestEnv::with_config(
        "machines:\n  - name: h\n    addr: http://127.0.0.1:1/\n    token: t\n",
    );
    // Port 1 refuses: the point is that the URL parsed and the connection was tried.
    let e = env.err(&["exec", "list", "--machine", "h"], "connect_failed", 3);
    assert!(e["message"].as_str().unwrap().contains("127.0.0.1:1"), "{e}");
}

#[test]
fn codexd_reads_the_original_config_path_and_default_shell() {
    let env = TestEnv::new();
    let dir = env.home.join(".config").join("codexd");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.yaml"), "default_shell: sh\n").unwrap();
    let id = env.start("local", "echo $0");
    env.wait("local", &id);
    let (_, lines) = env.run(&["exec", "logs", "--id", &id]);
    assert_eq!(lines[0]["line"], "sh", "{lines:?}");
}

#[test]
fn jobs_get_pythonunbuffered_unless_env_defaults_or_the_request_say_otherwise() {
    let env = TestEnv::new();
    let echo = "echo \"[$PYTHONUNBUFFERED]\"";
    let line = |extra: &[&str]| {
        let mut args = vec!["exec", "run", "--cmd", echo];
        args.extend_from_slice(extra);
        let (code, lines) = env.run(&args);
        assert_eq!(code, 0, "{lines:?}");
        lines.iter().find(|l| l["type"] == "log").unwrap()["line"].as_str().unwrap().to_string()
    };
    assert_eq!(line(&[]), "[1]");
    assert_eq!(line(&["--env", "PYTHONUNBUFFERED=0"]), "[0]");
    // Python's own output shows before the job ends (a pipe would buffer it otherwise).
    if std::process::Command::new("python3").arg("-V").output().is_ok() {
        let id = env.start("local", "python3 -c 'import time; print(\"early\"); time.sleep(30)'");
        assert!(
            support::wait_until(std::time::Duration::from_secs(10), || {
                let (_, lines) = env.run(&["exec", "logs", "--id", &id]);
                lines.iter().any(|l| l["line"] == "early")
            }),
            "python's line stayed in its buffer"
        );
        env.ok(&["exec", "cancel", "--id", &id]);
    }
    std::fs::write(env.data_dir().join("config.yaml"), "env_defaults: {}\n").unwrap();
    assert_eq!(line(&[]), "[]");
    std::fs::write(env.data_dir().join("config.yaml"), "env_defaults: {MY_DEFAULT: x}\n").unwrap();
    let (_, lines) = env.run(&["exec", "run", "--cmd", "echo \"$MY_DEFAULT/$PYTHONUNBUFFERED\""]);
    assert!(lines.iter().any(|l| l["line"] == "x/"), "{lines:?}");
    std::fs::write(env.data_dir().join("config.yaml"), "env_defaults: {\"A B\": x}\n").unwrap();
    env.err(&["exec", "list"], "config_error", 2);
}

#[test]
fn logs_since_and_until_take_times_from_the_jobs_time_index() {
    let env = TestEnv::new();
    let id = env.start("local", "echo old; sleep 4; echo new; sleep 4; echo late");
    let lines_of = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["exec", "logs", "--id", &id];
        all.extend_from_slice(args);
        let (code, lines) = env.run(&all);
        assert_eq!(code, 0, "{args:?}: {lines:?}");
        lines.iter().filter_map(|l| l["line"].as_str().map(String::from)).collect()
    };
    let job_dir = env.data_dir().join("jobs").join(&id);
    // When the job's time index first counted `size` stdout bytes (Unix ms), if it has yet.
    let sampled_at = |size: u64| -> Option<u64> {
        let index = std::fs::read(job_dir.join("times")).ok()?;
        let word = |r: &[u8], k: usize| u64::from_le_bytes(r[k * 8..k * 8 + 8].try_into().unwrap());
        index.chunks_exact(24).find(|r| word(r, 1) >= size).map(|r| word(r, 0))
    };
    let appeared = |line: &str| {
        assert!(
            support::wait_until(Duration::from_secs(20), || lines_of(&[])
                .iter()
                .any(|l| l == line)),
            "{line} never appeared"
        );
        // A time after the line's sample in the index, in whole seconds as given below (so
        // the next whole second past the sample), and before the next line (4 s later).
        let size = std::fs::metadata(job_dir.join("stdout.log")).unwrap().len();
        let mut sampled = None;
        let indexed = support::wait_until(Duration::from_secs(20), || {
            sampled = sampled_at(size);
            sampled.is_some()
        });
        assert!(indexed, "{line} never reached the time index");
        let whole_second_past = || {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
            now.as_secs() * 1000 > sampled.unwrap()
        };
        assert!(support::wait_until(Duration::from_secs(5), whole_second_past));
        humantime::format_rfc3339(SystemTime::now()).to_string()
    };
    let after_old = appeared("old");
    let after_new = appeared("new");
    env.wait("local", &id);

    assert_eq!(lines_of(&["--since", &after_old]), ["new", "late"]);
    assert_eq!(lines_of(&["--until", &after_old]), ["old"]);
    assert_eq!(lines_of(&["--since", &after_old, "--until", &after_new]), ["new"]);
    assert_eq!(lines_of(&["--since", "1h"]), ["old", "new", "late"]);
    assert_eq!(lines_of(&["--since", &after_old, "--tail-lines", "1"]), ["late"]);
    // A bare number stays the byte offset of older scripts.
    assert_eq!(lines_of(&["--since", "4"]), ["new", "late"]);
    assert_eq!(lines_of(&["--offset", "4"]), ["new", "late"]);

    let e = env.err(&["exec", "logs", "--id", &id, "--since", "yesterday"], "usage", 2);
    assert!(e["message"].as_str().unwrap().contains("RFC 3339"), "{e}");
    env.err(&["exec", "logs", "--id", &id, "--until", "1m", "--follow"], "usage", 2);
    // A job from a codexd without the index says so instead of guessing.
    std::fs::remove_file(env.data_dir().join("jobs").join(&id).join("times")).unwrap();
    let e = env.err(&["exec", "logs", "--id", &id, "--since", "1h"], "invalid_argument", 4);
    assert!(e["message"].as_str().unwrap().contains("no time index"), "{e}");
}

/// The doctor report's check called `name`.
fn check(report: &serde_json::Value, name: &str) -> serde_json::Value {
    let checks = report["checks"].as_array().unwrap();
    checks.iter().find(|c| c["name"] == name).cloned().unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn exec_doctor_reports_every_check_with_a_hint_for_what_failed() {
    let (env, _sshd) = gpu_env();
    env.ok(&["machine", "up", "--machine", "gpu"]);
    let report = env.ok(&["exec", "doctor", "--machine", "gpu", "--json"]);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["machine"], "gpu");
    let names: Vec<&str> =
        report["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for name in [
        "ssh",
        "codexd",
        "data_dir",
        "python",
        "python3",
        "conda",
        "pixi",
        "nvidia-smi",
        "git",
        "rsync",
        "rg",
    ] {
        assert!(names.contains(&name), "{name} missing: {names:?}");
    }
    for c in report["checks"].as_array().unwrap() {
        assert_eq!(
            c["ok"].as_bool() == Some(false),
            c["hint"].is_string(),
            "a hint per failed check: {c}"
        );
    }

    // A tool that is missing (no GPU on this test machine: a fake-free PATH) is information
    // with a hint, not a failed report.
    let gpu = check(&report, "nvidia-smi");
    if gpu["ok"] == false {
        assert_eq!(gpu["required"], false, "{gpu}");
        assert!(gpu["hint"].is_string(), "{gpu}");
    }
    let data_dir = check(&report, "data_dir");
    assert!(data_dir["detail"].as_str().unwrap().contains("MiB free"), "{data_dir}");

    // An unreachable machine is a report too, not a crash.
    env.set_config("machines:\n  - name: gone\n    ssh: ssh://u@127.0.0.1:1\n    ssh_args: [\"-F\", \"/dev/null\"]\n");
    let (code, lines) = env.run(&["exec", "doctor", "--machine", "gone", "--json"]);
    assert_eq!(code, 1);
    assert_eq!(lines[0]["checks"][0]["name"], "ssh", "{lines:?}");
    assert_eq!(lines[0]["checks"][0]["ok"], false);
}
