//! `codex-remote machine check|ls|up|ssh` against a real `sshd` on loopback.
//!
//! The sshd logs in as the current user with the real HOME, so every remote path here (the
//! install dir, the data dir) points into the test's temp dir: nothing is written to the home.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::{CODEXD, Sshd, TestEnv, alive, wait_until};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Machine `gpu` whose codexd is to be installed into `<tmp>/rbin` by `machine up`; the serve
/// that `up` starts in its data dir is stopped when the guard goes.
pub(crate) fn up_env(extra: &str) -> (TestEnv, Sshd, StopServe) {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let remote = env.path("remote-data");
    env.set_config(&up_config(&env, &sshd, &remote, extra));
    (env, sshd, StopServe(remote))
}

/// The config of [`up_env`] with the machine's data dir at `remote`.
fn up_config(env: &TestEnv, sshd: &Sshd, remote: &Path, extra: &str) -> String {
    let rbin = env.path("rbin");
    let extra = format!("    install_dir: {}\n{extra}", rbin.display());
    let machine = sshd
        .machine_yaml("gpu", remote, &extra)
        .replace(&format!("codexd: {CODEXD}"), &format!("codexd: {}/codexd", rbin.display()));
    format!("machines:\n{machine}")
}

/// Stops the `codexd serve` that `machine up` started in `data_dir`.
fn stop_serve(data_dir: &Path) {
    let Ok(text) = std::fs::read_to_string(data_dir.join("serve.json")) else { return };
    let info: Value = serde_json::from_str(&text).unwrap();
    let pid = info["pid"].as_i64().unwrap() as i32;
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::TERM,
    );
    assert!(wait_until(Duration::from_secs(15), || !alive(pid)), "serve stops on SIGTERM");
}

pub(crate) struct StopServe(PathBuf);

impl Drop for StopServe {
    fn drop(&mut self) {
        stop_serve(&self.0);
    }
}

#[test]
fn machine_up_installs_codexd_starts_serve_and_exec_start_works_right_after() {
    let port = free_port();
    let (env, _sshd, stop) = up_env(&format!("    addr: 127.0.0.1:{port}\n"));
    let remote = &stop.0;
    let installed = env.path("rbin").join("codexd");

    let (code, before) = env.run(&["machine", "check", "--machine", "gpu"]);
    assert_eq!(code, 0, "{before:?}");
    assert_eq!(
        (before[0]["ok"].as_bool(), before[0]["daemon_ok"].as_bool()),
        (Some(false), Some(false))
    );
    let (code, _) = env.run(&["machine", "check", "--machine", "gpu", "--strict"]);
    assert_eq!(code, 1);

    let up = env.ok(&["machine", "up", "--machine", "gpu"]);
    assert_eq!(
        (
            up["ok"].as_bool(),
            up["stage"].as_str(),
            up["installed"].as_bool(),
            up["started"].as_bool()
        ),
        (Some(true), Some("ready"), Some(true), Some(true)),
        "{up}"
    );
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(CODEXD).unwrap());
    assert_eq!(mode(&installed) & 0o111, 0o111);
    // The serve's log may hold what jobs print about themselves: private.
    assert_eq!(mode(&remote.join("serve.log")), 0o600);

    // Right after: a job over HTTP, with the token fetched over ssh on first use.
    let id = env.start("gpu", "echo up-and-running");
    assert_eq!(env.wait("gpu", &id)["state"], "succeeded");
    assert!(remote.join("jobs").join(&id).is_dir(), "the job is in the machine's data dir");
    assert!(env.home.join(".cache/codex-remote/tokens/gpu.json").is_file());

    let again = env.ok(&["machine", "up", "--machine", "gpu"]);
    assert_eq!(
        (again["ok"].as_bool(), again["installed"].as_bool(), again["started"].as_bool()),
        (Some(true), Some(false), Some(false)),
        "{again}"
    );
    let check = env.ok(&["machine", "check", "--machine", "gpu", "--strict"]);
    assert_eq!(
        (check["ssh_ok"].as_bool(), check["daemon_ok"].as_bool(), check["transport"].as_str()),
        (Some(true), Some(true), Some("http")),
        "{check}"
    );
    assert_eq!(check["codexd_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(check["protocol"], 1);
}

pub(crate) fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn machine_up_without_a_codexd_key_ends_ready_or_not_ok_and_names_the_path() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let rbin = env.path("rbin");
    let installed = format!("{}/codexd", rbin.display());
    let machine = sshd.machine_yaml(
        "gpu",
        &env.path("remote-data"),
        &format!("    install_dir: {}\n", rbin.display()),
    );
    let without_key: String = machine
        .lines()
        .filter(|l| !l.trim().starts_with("codexd:"))
        .map(|l| l.to_string() + "\n")
        .collect();
    env.set_config(&format!("machines:\n{without_key}"));

    // Before: every call says codexd is missing and how to install it.
    let e = env.err(&["exec", "list", "--machine", "gpu"], "codexd_not_found", 3);
    assert!(e["message"].as_str().unwrap().contains("machine gpu"), "{e}");
    assert!(e["hint"].as_str().unwrap().contains("machine up --machine gpu"), "{e}");

    // `up` installs into install_dir, then finds that calls (`codexd` on the PATH) cannot
    // reach it: not ok, with the line to add, never `ok: true` with every call failing.
    let (code, lines) = env.run(&["machine", "up", "--machine", "gpu"]);
    let up = &lines[0];
    assert_eq!(code, 3, "{up}");
    assert_eq!(
        (up["ok"].as_bool(), up["stage"].as_str(), up["installed"].as_bool()),
        (Some(false), Some("verify"), Some(true)),
        "{up}"
    );
    assert_eq!(up["codexd_path"], installed.as_str());
    assert!(up["hint"].as_str().unwrap().contains(&format!("codexd: {installed}")), "{up}");
    assert!(Path::new(&installed).is_file());

    // With that line, it is ready and calls work.
    env.set_config(&format!("machines:\n{without_key}    codexd: {installed}\n"));
    let up = env.ok(&["machine", "up", "--machine", "gpu"]);
    assert_eq!((up["ok"].as_bool(), up["stage"].as_str()), (Some(true), Some("ready")), "{up}");
    env.ok(&["exec", "list", "--machine", "gpu"]);
}

/// Runs `codex-remote ARGS` through a forward: its JSON answer and its `tunnel` line.
pub(crate) fn tunnel_telemetry(env: &TestEnv, args: &[&str]) -> (Value, Value) {
    let out = env.remote(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().rev().find(|l| l.contains("\"tunnel\"")).expect("telemetry");
    let answer = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (answer, serde_json::from_str(line).unwrap())
}

#[test]
fn two_configs_with_the_same_machine_name_never_share_a_forward() {
    let direct = || format!("    use_direct_addr: true\n    daemon_port: {}\n", free_port());
    let (env, sshd, _stop) = up_env(&direct());
    assert_eq!(env.ok(&["machine", "up", "--machine", "gpu"])["ok"], true);
    let (job, first) =
        tunnel_telemetry(&env, &["exec", "start", "--machine", "gpu", "--cmd", "true"]);

    // Another config file, the same name `gpu`, another serve (data dir and port).
    let remote = env.path("remote-data-2");
    let _stop_other = StopServe(remote.clone());
    let other = env.path("other.yaml");
    std::fs::write(&other, up_config(&env, &sshd, &remote, &direct())).unwrap();
    let other = other.to_str().unwrap();
    let up = env.ok(&["machine", "up", "--machine", "gpu", "--config", other]);
    assert_eq!(up["started"], true, "its own serve: {up}");
    let (list, second) = tunnel_telemetry(&env, &["exec", "list", "-m", "gpu", "--config", other]);
    assert!(first["local_socket"].is_string(), "{first}");
    assert_ne!(second["local_socket"], first["local_socket"], "{first} {second}");
    assert_eq!(list["jobs"], serde_json::json!([]), "not the first config's serve: {job}");
    assert!(remote.join("token").is_file());
}

/// `use_direct_addr` with `extra` machine keys: one forward, reused by the next call, reported
/// on stderr. Returns the forward's `tunnel_pid`.
fn forward_is_reused(extra: &str) -> i64 {
    let port = free_port();
    let (env, _sshd, _stop) =
        up_env(&format!("    use_direct_addr: true\n    daemon_port: {port}\n{extra}"));
    let up = env.ok(&["machine", "up", "--machine", "gpu"]);
    assert_eq!(up["ok"], true, "{up}");

    let telemetry = |args: &[&str]| tunnel_telemetry(&env, args).1;
    let first = telemetry(&["exec", "start", "--machine", "gpu", "--cmd", "echo via-forward"]);
    let keys = ["machine", "local_port", "local_socket", "exec_id", "tunnel_pid"];
    for key in keys.into_iter().chain(["health_latency", "retry_count"]) {
        assert!(first.get(key).is_some(), "{key} missing: {first}");
    }
    assert_eq!(first["machine"], "gpu");
    // On Unix the local end is a socket in the private tunnels dir, no TCP port.
    let socket = Path::new(first["local_socket"].as_str().expect("a socket forward"));
    assert_eq!(first["local_port"], Value::Null, "{first}");
    assert!(socket.starts_with(env.home.join(".cache/codex-remote/tunnels")), "{first}");
    assert_eq!(mode(socket.parent().unwrap()), 0o700);
    let id = first["exec_id"].as_str().unwrap().to_string();
    let second = telemetry(&["exec", "wait", "--machine", "gpu", "--id", &id]);
    assert_eq!(
        (second["local_socket"].clone(), second["reused"].as_bool()),
        (first["local_socket"].clone(), Some(true))
    );
    assert_eq!(second["exec_id"], id.as_str());
    // `exec run` makes many calls through the forward, and says so once.
    let out =
        env.remote(&["exec", "run", "--machine", "gpu", "--cmd", "echo once"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().filter(|l| l.contains("\"tunnel\"")).count(), 1, "{stderr}");
    first["tunnel_pid"].as_i64().expect("the pid holding the forward")
}

#[test]
fn use_direct_addr_forwards_over_the_control_master() {
    forward_is_reused("");
}

#[test]
fn use_direct_addr_without_a_master_runs_its_own_ssh_forward() {
    let pid = forward_is_reused("    ssh_control: false\n") as i32;
    // The forward's own ssh outlives the calls; end it (the test started it).
    assert!(alive(pid), "the forward's ssh is the reported pid");
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::TERM,
    );
    assert!(wait_until(Duration::from_secs(10), || !alive(pid)));
}

#[test]
fn check_ls_and_ssh_on_an_ssh_machine() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let remote = env.path("remote-data");
    let good = sshd.machine_yaml("gpu", &remote, "");
    let missing = sshd
        .machine_yaml("broken", &remote, "")
        .replace(&format!("codexd: {CODEXD}"), "codexd: /nonexistent/codexd");
    env.set_config(&format!("machines:\n{good}{missing}"));

    let ok = env.ok(&["machine", "check", "--machine", "gpu"]);
    assert_eq!((ok["ok"].as_bool(), ok["ssh_ok"].as_bool()), (Some(true), Some(true)), "{ok}");
    assert!(ok["latency_ms"].is_u64() && ok["checked_at"].is_string(), "{ok}");
    let bad = env.ok(&["machine", "check", "--machine", "broken"]);
    assert_eq!(
        (bad["ssh_ok"].as_bool(), bad["daemon_ok"].as_bool(), bad["code"].as_str()),
        (Some(true), Some(false), Some("codexd_not_found")),
        "{bad}"
    );
    assert!(bad["error"].as_str().is_some_and(|e| !e.is_empty()));

    let ls = env.ok(&["machine", "ls", "--json"]);
    let names: Vec<&str> =
        ls["machines"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gpu", "broken", "local"]);
    let (code, _) = env.run(&["machine", "ls", "--json", "--strict"]);
    assert_eq!(code, 1, "broken is not ok");

    let out = env
        .remote(&["machine", "ssh", "--machine", "gpu", "--cmd", "echo hello-$((6*7)); exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello-42");
}
