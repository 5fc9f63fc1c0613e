//! Fault tests: things killed for real.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{Sshd, TestEnv, alive, wait_until};

fn kill(pid: i32, sig: rustix::process::Signal) {
    let _ = rustix::process::kill_process(rustix::process::Pid::from_raw(pid).unwrap(), sig);
}

#[test]
fn a_worker_killed_with_sigkill_reads_lost_and_its_job_is_ended() {
    let env = TestEnv::new();
    let id = &env.start("local", "sleep 60");
    let start = env.started("local", id);
    let worker = start["worker_pid"].as_i64().unwrap() as i32;
    let job = start["pid"].as_i64().unwrap() as i32;
    kill(worker, rustix::process::Signal::KILL);
    assert!(wait_until(Duration::from_secs(5), || !alive(worker)));
    let v = env.ok(&["exec", "result", "--id", id]);
    assert_eq!(
        (v["status"].as_str(), v["state"].as_str()),
        (Some("finished"), Some("lost")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("worker"), "{v}");
    assert!(wait_until(Duration::from_secs(5), || !alive(job)), "the orphaned job is ended");
    // `lost` is recorded for good, and wait returns at once.
    assert_eq!(env.wait("local", id)["state"], "lost");
}

#[test]
fn a_worker_whose_pid_was_reused_reads_lost() {
    let env = TestEnv::new();
    let id = env.start("local", "sleep 60");
    env.started("local", &id);
    let status_path = env.data_dir().join("jobs").join(&id).join("status.json");
    // Same pid, another start time: a different process now holds the pid.
    let mut status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&status_path).unwrap()).unwrap();
    let worker = status["worker_pid"].as_i64().unwrap() as i32;
    status["worker_start_time"] = (status["worker_start_time"].as_u64().unwrap() + 1).into();
    std::fs::write(&status_path, status.to_string()).unwrap();
    let v = env.ok(&["exec", "result", "--id", &id]);
    assert_eq!(v["state"], "lost", "{v}");
    kill(worker, rustix::process::Signal::KILL);
}

#[test]
fn cancel_leaves_no_process_even_one_that_ignores_term_and_left_the_group() {
    let env = TestEnv::new();
    let pids = env.path("pids");
    // The job ignores TERM; a grandchild starts its own session (leaves the process group)
    // and ignores TERM too; a great-grandchild double-forks away.
    let cmd = format!(
        "trap '' TERM; \
         setsid bash -c 'trap \"\" TERM; echo $$ >> {p}; sleep 300' & \
         ( ( trap '' TERM; echo $BASHPID >> {p}; exec sleep 300 ) & ) ; \
         echo $$ >> {p}; sleep 300 & wait",
        p = pids.display()
    );
    let id = env.start("local", &cmd);
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&pids).map(|s| s.lines().count() >= 3).unwrap_or(false)
    }));
    let pids: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert!(pids.iter().all(|&p| alive(p)));
    let v = env.ok(&["exec", "cancel", "--id", &id, "--grace", "500ms"]);
    assert_eq!(v["state"], "cancelled", "{v}");
    for p in pids {
        assert!(!alive(p), "process {p} of the job survived the cancel");
    }
}

#[test]
fn jobs_end_when_their_leftover_background_processes_are_cleaned_up() {
    let env = TestEnv::new();
    let pidfile = env.path("bg");
    let id =
        env.start("local", &format!("sleep 300 & echo $! > {}; echo main done", pidfile.display()));
    let v = env.wait("local", &id);
    assert_eq!(v["state"], "succeeded");
    let bg: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(!alive(bg), "a process the job left running was not ended");
}

#[test]
fn two_clients_start_50_jobs_each_at_once_and_each_exists_once() {
    let env = TestEnv::new();
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let children: Vec<_> = (0..50)
                .map(|i| {
                    let key = format!("c{c}-{i}");
                    env.remote(&[
                        "exec",
                        "start",
                        "--idempotency-key",
                        &key,
                        "--cmd",
                        &format!("echo {key}"),
                    ])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
                })
                .collect();
            children
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for child in clients.into_iter().flatten() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(ids.insert(v["exec_id"].as_str().unwrap().to_string()));
    }
    assert_eq!(ids.len(), 100);
    let list = env.ok(&["exec", "list", "--limit", "1000"]);
    let jobs = list["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 100);
    let mut keys: Vec<&str> = jobs.iter().map(|j| j["idempotency_key"].as_str().unwrap()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 100);
    for j in jobs {
        let id = j["exec_id"].as_str().unwrap();
        assert!(ids.contains(id));
        let done = env.wait("local", id);
        assert_eq!(done["state"], "succeeded");
    }
}

#[test]
fn killing_the_ssh_client_during_exec_start_still_runs_the_job() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let remote = env.path("remote-data");
    let entered = env.path("entered");
    // A codexd wrapper that, once it has the request, waits long enough for us to kill ssh (a
    // `hello` first, the version check's, is answered at once).
    let slow = env.path("slow-codexd");
    std::fs::write(
        &slow,
        format!(
            "#!/bin/bash\ntrap '' HUP PIPE\nIFS= read -r line\n\
             case \"$line\" in *'\"type\":\"hello\"'*) printf '%s\\n' \"$line\" | {codexd} \"$@\"; \
             IFS= read -r line;; esac\ntouch {entered}\nsleep 1\n\
             printf '%s\\n' \"$line\" | exec {codexd} \"$@\"\n",
            entered = entered.display(),
            codexd = crate::support::CODEXD
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    let machine = sshd
        .machine_yaml("gpu", &remote, "    ssh_control: false\n")
        .replace(crate::support::CODEXD, slow.to_str().unwrap());
    env.set_config(&format!("machines:\n{machine}"));

    let out_file = env.path("out");
    let mut cmd = env.remote(&[
        "exec",
        "start",
        "--machine",
        "gpu",
        "--name",
        "survivor",
        "--cmd",
        &format!("sleep 0.5; echo made it > {}; echo job-output", out_file.display()),
    ]);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    assert!(wait_until(Duration::from_secs(10), || entered.exists()), "the request reached codexd");
    // Kill codex-remote and its ssh client together.
    rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let _ = child.wait();
    assert!(wait_until(Duration::from_secs(15), || out_file.exists()), "the job ran to its end");

    let normal = sshd.machine_yaml("gpu", &remote, "");
    env.set_config(&format!("machines:\n{normal}"));
    let list = env.ok(&["exec", "list", "--machine", "gpu"]);
    let job = &list["jobs"].as_array().unwrap()[0];
    assert_eq!(job["name"], "survivor");
    let id = job["exec_id"].as_str().unwrap();
    assert_eq!(env.wait("gpu", id)["state"], "succeeded");
    let (_, lines) = env.run(&["exec", "logs", "--machine", "gpu", "--id", id]);
    assert_eq!(lines[0]["line"], "job-output");
}
