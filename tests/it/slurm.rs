//! A machine that is a Slurm login node: the real binaries through the loopback sshd, a codexd
//! with `scheduler: slurm`, and a real one-node Slurm (scripts/slurm-lab.sh, started once per
//! test process and left running for the next; `.ci/run` stops it). Without Slurm installed
//! these tests skip, except in CI (`CI=true`), where that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{CODEXD, Sshd, TestEnv, alive, wait_until};

/// The lab's directory: one per machine, so a new test process takes over the last one's.
fn lab_dir() -> PathBuf {
    std::env::temp_dir().join("codex-slurm-lab")
}

/// The running lab's `slurm.conf`, or `None` (skip) when Slurm is not installed here.
fn lab() -> Option<&'static Path> {
    static LAB: OnceLock<Option<PathBuf>> = OnceLock::new();
    LAB.get_or_init(|| {
        let installed = ["slurmctld", "slurmd", "munged"]
            .iter()
            .all(|d| Path::new("/usr/sbin").join(d).is_file());
        if !installed {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "Slurm is not installed: .ci/run installs slurm-wlm and munge"
            );
            eprintln!("skipping the Slurm tests: slurm-wlm and munge are not installed");
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-lab.sh");
        let out = Command::new("bash").arg(script).arg("start").arg(lab_dir()).output().unwrap();
        assert!(out.status.success(), "slurm-lab: {}", String::from_utf8_lossy(&out.stderr));
        Some(lab_dir().join("slurm.conf"))
    })
    .as_deref()
}

/// A Slurm command against the lab; its stdout.
fn slurm(conf: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).env("SLURM_CONF", conf).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test env with machine `gpu`: a codexd whose config says `scheduler: slurm`, and whose
/// Slurm commands use `conf`. `path` replaces codexd's PATH when given.
fn slurm_env_with(conf: &Path, path: Option<&str>) -> (TestEnv, Sshd) {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let codexd_yaml = env.path("codexd.yaml");
    std::fs::write(&codexd_yaml, "scheduler: slurm\nslurm:\n  time: 10m\n").unwrap();
    let path = path.map(|p| format!("PATH={p} ")).unwrap_or_default();
    let machine = sshd.machine_yaml("gpu", &env.path("remote-data"), "").replace(
        &format!("codexd: {CODEXD}"),
        &format!(
            "codexd: {path}SLURM_CONF={} CODEXD_CONFIG={} {CODEXD}",
            conf.display(),
            codexd_yaml.display()
        ),
    );
    env.set_config(&format!("machines:\n{machine}"));
    (env, sshd)
}

fn slurm_env(conf: &Path) -> (TestEnv, Sshd) {
    slurm_env_with(conf, None)
}

fn result(env: &TestEnv, id: &str) -> Value {
    env.ok(&["exec", "result", "--machine", "gpu", "--id", id])
}

/// Starts `cmd` in /tmp with `flags`; its status.
fn start(env: &TestEnv, flags: &[&str], cmd: &str) -> Value {
    let mut args = vec!["exec", "start", "--machine", "gpu", "--cwd", "/tmp"];
    args.extend(flags);
    args.extend(["--cmd", cmd]);
    env.ok(&args)
}

/// Starts a job Slurm holds in its queue (until released or cancelled); its status and id.
fn start_held(env: &TestEnv) -> (Value, String) {
    let held = start(env, &["--slurm-arg=--hold"], "echo never");
    let id = held["exec_id"].as_str().unwrap().to_string();
    (held, id)
}

/// Polls the job until `cond` holds of its status (60 s); the last status.
fn until(env: &TestEnv, id: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(60), || {
        last = result(env, id);
        cond(&last)
    });
    assert!(ok, "{what}: {last}");
    last
}

fn stdout_lines(env: &TestEnv, id: &str) -> Vec<String> {
    let (_, lines) = env.run(&["exec", "logs", "--machine", "gpu", "--id", id, "--since", "0"]);
    lines.iter().filter_map(|l| l["line"].as_str().map(String::from)).collect()
}

#[test]
fn slurm_a_held_job_is_queued_then_runs_and_succeeds_with_its_logs() {
    let Some(conf) = lab() else { return };
    let (env, _sshd) = slurm_env(conf);
    let started = start(
        &env,
        &["--slurm-arg=--hold", "--cpus", "1", "--mem", "100M"],
        "echo out; echo err >&2; sleep 2; echo done",
    );
    let id = started["exec_id"].as_str().unwrap().to_string();
    assert_eq!((&started["status"], &started["scheduler"]), (&json!("running"), &json!("slurm")));
    let slurm_id = started["slurm_job_id"].as_str().expect("a Slurm job").to_string();
    assert_eq!(started["resources"]["slurm_args"], json!(["--hold"]));
    assert_eq!(started["resources"]["time"], "0:10:00", "the config's default, in Slurm's form");
    let queued = until(&env, &id, "queued", |s| s["state"] == "queued");
    assert_eq!(queued["status"], "running", "queued is not finished: {queued}");
    assert_eq!(queued["queue_reason"], "JobHeldUser");
    let listed = env.ok(&["exec", "list", "--machine", "gpu", "--state", "queued"]);
    assert_eq!(listed["jobs"][0]["exec_id"], id.as_str());

    slurm(conf, "scontrol", &["release", &slurm_id]);
    let running = until(&env, &id, "running", |s| s["state"] == "running" && !s["pid"].is_null());
    assert!(running["node"].is_string(), "{running}");
    let done = env.wait("gpu", &id);
    assert_eq!((&done["state"], &done["exit_code"]), (&json!("succeeded"), &json!(0)), "{done}");
    assert_eq!(stdout_lines(&env, &id), ["out", "done"]);
}

#[test]
fn slurm_a_failing_job_fails_with_its_exit_code() {
    let Some(conf) = lab() else { return };
    let (env, _sshd) = slurm_env(conf);
    let (code, lines) =
        env.run(&["exec", "run", "--machine", "gpu", "--cwd", "/tmp", "--cmd", "echo bad; exit 3"]);
    assert_eq!(code, 3, "{lines:?}");
    let last = lines.last().unwrap();
    assert_eq!((&last["state"], &last["scheduler"]), (&json!("failed"), &json!("slurm")));
}

#[test]
fn slurm_cancel_while_queued_and_while_running() {
    let Some(conf) = lab() else { return };
    let (env, _sshd) = slurm_env(conf);
    let (held, held_id) = start_held(&env);
    let held_id = held_id.as_str();
    let cancelled = env.ok(&["exec", "cancel", "--machine", "gpu", "--id", held_id]);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let slurm_says = slurm(
        conf,
        "squeue",
        &["-h", "--states=all", "-o", "%T", "-j"]
            .iter()
            .copied()
            .chain([held["slurm_job_id"].as_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert_eq!(slurm_says.trim(), "CANCELLED");
    assert!(stdout_lines(&env, held_id).is_empty(), "it never ran");

    let long = start(&env, &[], "sleep 300");
    let id = long["exec_id"].as_str().unwrap();
    let running = until(&env, id, "running", |s| !s["pid"].is_null());
    let pid = running["pid"].as_i64().unwrap() as i32;
    let cancelled = env.ok(&["exec", "cancel", "--machine", "gpu", "--id", id, "--grace", "2s"]);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert!(wait_until(Duration::from_secs(10), || !alive(pid)), "the job's sleep is gone");
}

#[test]
fn slurm_a_time_limit_fails_the_job_with_timeout() {
    let Some(conf) = lab() else { return };
    let (env, _sshd) = slurm_env(conf);
    // Slurm's limits are whole minutes, checked every half minute or so.
    let started = start(&env, &["--time", "1m"], "echo started; sleep 600");
    let id = started["exec_id"].as_str().unwrap();
    assert_eq!(started["resources"]["time"], "0:01:00");
    let done = env.ok(&["exec", "wait", "--machine", "gpu", "--id", id, "--timeout", "180s"]);
    assert_eq!(done["state"], "failed", "{done}");
    assert!(done["error"].as_str().unwrap().contains("TIMEOUT"), "{done}");
    assert_eq!(stdout_lines(&env, id), ["started"]);
}

#[test]
fn slurm_a_worker_killed_on_the_node_is_lost_with_slurms_view() {
    let Some(conf) = lab() else { return };
    let (env, _sshd) = slurm_env(conf);
    let started = start(&env, &[], "sleep 300");
    let id = started["exec_id"].as_str().unwrap();
    let running = until(&env, id, "running", |s| !s["worker_pid"].is_null());
    let worker = running["worker_pid"].as_i64().unwrap() as i32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(worker).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let done = env.wait("gpu", id);
    assert_eq!(done["state"], "lost", "{done}");
    let error = done["error"].as_str().unwrap();
    assert!(error.contains("Slurm job") && error.contains("worker"), "{done}");
    let pid = running["pid"].as_i64().unwrap() as i32;
    assert!(wait_until(Duration::from_secs(10), || !alive(pid)), "nothing of the job is left");
}

#[test]
fn slurm_refusals_have_clear_codes() {
    let Some(conf) = lab() else { return };
    let (env, _sshd) = slurm_env(conf);
    let bad = ["exec", "start", "--machine", "gpu", "--cwd", "/tmp", "--cmd", "true"];
    for (flag, slurm_words) in [
        ("--partition=nope", "invalid partition"),
        ("--gpus=64", "node configuration is not available"),
    ] {
        let args: Vec<&str> = bad.iter().copied().chain([flag]).collect();
        let out = env.remote(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(4), "{flag}");
        let status: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(status["state"], "start_failed", "{flag}: {status}");
        let error = status["error"].as_str().unwrap();
        assert!(error.contains(slurm_words), "{flag}: Slurm's own message: {error}");
    }
    let both = ["exec", "start", "--machine", "gpu", "--local", "--gpus", "1", "--cmd", "true"];
    let out = env.remote(&both).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "--local with --gpus is a usage error");
    // --local runs on the login node, without Slurm.
    let local = start(&env, &["--local"], "echo here");
    assert_eq!(local["scheduler"], "local");
    assert!(local["slurm_job_id"].is_null());
    assert_eq!(env.wait("gpu", local["exec_id"].as_str().unwrap())["state"], "succeeded");

    // No sbatch on codexd's PATH: the scheduler is unavailable, and no job is made.
    let (env, _sshd) = slurm_env_with(conf, Some("/nonexistent"));
    env.err(&bad, "scheduler_unavailable", 4);
    let remote_jobs = std::fs::read_dir(env.path("remote-data").join("jobs")).unwrap().count();
    assert_eq!(remote_jobs, 0);
}

#[test]
fn slurm_unreachable_is_answered_from_the_files_with_a_warning() {
    let Some(conf) = lab() else { return };
    let (env, _sshd) = slurm_env(conf);
    let (_, id) = start_held(&env);
    let id = id.as_str();
    // The same store, read by a codexd whose Slurm is down (a controller port nobody serves).
    let down = env.path("down.conf");
    let text = std::fs::read_to_string(conf).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("SlurmctldPort=") {
                "SlurmctldPort=9".to_string()
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(&down, text).unwrap();
    let config = std::fs::read_to_string(&env.config).unwrap();
    env.set_config(&config.replace(
        &format!("SLURM_CONF={}", conf.display()),
        &format!("SLURM_CONF={}", down.display()),
    ));
    let seen = result(&env, id);
    assert_eq!((&seen["status"], &seen["state"]), (&json!("running"), &json!("running")), "{seen}");
    assert!(seen["warning"].as_str().unwrap().contains("Slurm cannot be asked"), "{seen}");
    env.set_config(&config);
    assert_eq!(result(&env, id)["state"], "queued");
    assert_eq!(env.ok(&["exec", "cancel", "--machine", "gpu", "--id", id])["state"], "cancelled");
}

/// `exec doctor`'s `shared_store` check of `env`'s machine `gpu`, and the report's exit code.
fn shared_store(env: &TestEnv) -> (i32, Value) {
    let (code, lines) = env.run(&["exec", "doctor", "--machine", "gpu", "--timeout", "20s"]);
    let report = lines.into_iter().next().expect("a report");
    let checks = report["checks"].as_array().expect("checks").clone();
    let check = checks.into_iter().find(|c| c["name"] == "shared_store");
    (code, check.unwrap_or_else(|| panic!("no shared_store check: {report}")))
}

#[test]
fn slurm_doctor_and_machine_check_verify_that_compute_nodes_share_the_store() {
    let Some(conf) = lab() else { return };
    let (env, _sshd) = slurm_env(conf);
    let (code, check) = shared_store(&env);
    assert_eq!((code, &check["ok"]), (0, &json!(true)), "{check}");
    let detail = check["detail"].as_str().unwrap();
    assert!(detail.contains("read what this node wrote"), "a probe job ran: {detail}");
    // The verification holds: machine check reads it without another job.
    let jobs_before = slurm(conf, "squeue", &["-h", "--states=all", "-n", "codex-probe"]);
    let report = env.ok(&["machine", "check", "--machine", "gpu"]);
    assert_eq!((&report["ok"], &report["scheduler"]), (&json!(true), &json!("slurm")), "{report}");
    assert_eq!(report["shared_store"]["ok"], true, "{report}");
    assert!(report["shared_store"]["detail"].as_str().unwrap().contains("verified"), "{report}");
    let jobs_after = slurm(conf, "squeue", &["-h", "--states=all", "-n", "codex-probe"]);
    assert_eq!(jobs_before.lines().count(), jobs_after.lines().count(), "no second probe job");

    // A compute node that sees another file system at the store's path: here an sbatch that
    // moves the job's paths elsewhere, as a node without the shared home would see them.
    let bin = env.path("nodes-elsewhere");
    std::fs::create_dir_all(&bin).unwrap();
    let real = Command::new("sh").args(["-c", "command -v sbatch"]).output().unwrap();
    let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
    let wrapper = bin.join("sbatch");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nsed 's#/remote-data/#/remote-data-elsewhere/#g' | {real} \"$@\"\n"),
    )
    .unwrap();
    let executable = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(&wrapper, executable).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let (env, _sshd) = slurm_env_with(conf, Some(&path));
    let (code, check) = shared_store(&env);
    assert_eq!(
        (code, &check["ok"], &check["required"]),
        (1, &json!(false), &json!(true)),
        "{check}"
    );
    let detail = check["detail"].as_str().unwrap();
    assert!(detail.contains("ended without writing its answer"), "{detail}");
    assert!(
        check["hint"].as_str().unwrap().contains("file system the compute nodes share"),
        "{check}"
    );
    let report = env.ok(&["machine", "check", "--machine", "gpu"]);
    assert_eq!((&report["ok"], &report["shared_store"]["ok"]), (&json!(false), &json!(false)));

    // A probe that waits in the queue past the check's time is not a failure, and the next
    // check reads its answer rather than submitting another.
    let (env, _sshd) = slurm_env(conf);
    std::fs::write(env.path("codexd.yaml"), "scheduler: slurm\nslurm:\n  extra_args: [--hold]\n")
        .unwrap();
    let args = ["exec", "doctor", "--machine", "gpu", "--timeout", "2s"];
    let (code, lines) = env.run(&args);
    let check = lines[0]["checks"].as_array().unwrap().iter().find(|c| c["name"] == "shared_store");
    let check = check.unwrap().clone();
    assert_eq!((code, &check["ok"], &check["required"]), (0, &json!(false), &json!(false)));
    let detail = check["detail"].as_str().unwrap();
    assert!(detail.contains("still waits in the queue (JobHeldUser)"), "{detail}");
    let probe = detail.split("Slurm job ").nth(1).unwrap().split(',').next().unwrap();
    slurm(conf, "scontrol", &["release", probe]);
    let (code, check) = shared_store(&env);
    assert_eq!((code, &check["ok"]), (0, &json!(true)), "{check}");
    assert!(check["detail"].as_str().unwrap().contains(&format!("Slurm job {probe} on")));
}

#[tokio::test]
async fn slurm_mcp_exec_start_takes_resources() {
    let Some(conf) = lab() else { return };
    let (env, _sshd) = slurm_env(conf);
    let (client, _) = crate::mcp::connect(&env).await;
    let args = json!({"machine": "gpu", "cmd": "echo mcp", "cwd": "/tmp",
                      "resources": {"cpus": 1, "slurm_args": ["--hold"]}});
    let started = crate::mcp::call(&client, "exec_start", args).await;
    assert_eq!(started["scheduler"], "slurm", "{started}");
    assert_eq!(started["resources"]["cpus"], 1);
    let id = started["exec_id"].as_str().unwrap();
    let cancelled =
        crate::mcp::call(&client, "exec_cancel", json!({"machine": "gpu", "exec_id": id})).await;
    assert_eq!(cancelled["state"], "cancelled");
    client.cancel().await.unwrap();
}

#[test]
fn a_machine_without_a_scheduler_refuses_resource_flags() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    env.set_config(&format!("machines:\n{}", sshd.machine_yaml("gpu", &env.path("r"), "")));
    let e = env.err(
        &["exec", "start", "--machine", "gpu", "--gpus", "1", "--cmd", "true"],
        "invalid_argument",
        4,
    );
    assert!(e["message"].as_str().unwrap().contains("--gpus"), "{e}");
    // --local asks for nothing a local machine cannot do.
    let local = env.ok(&["exec", "start", "--machine", "gpu", "--local", "--cmd", "true"]);
    assert_eq!(local["scheduler"], "local");
}
