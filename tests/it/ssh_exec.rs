//! The `exec` command set against a machine reached through a real `sshd` on loopback.

use crate::support::{Sshd, TestEnv};

fn ssh_env(extra: &str) -> (TestEnv, Sshd) {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let remote = env.path("remote-data");
    env.set_config(&format!("machines:\n{}", sshd.machine_yaml("gpu", &remote, extra)));
    (env, sshd)
}

#[test]
fn the_whole_exec_set_over_ssh() {
    let (env, _sshd) = ssh_env("");
    let (code, lines) = env.run(&[
        "exec",
        "run",
        "--machine",
        "gpu",
        "--cwd",
        "/tmp",
        "--cmd",
        "echo remote; pwd; echo e >&2; exit 7",
    ]);
    assert_eq!(code, 7, "{lines:?}");
    let text: Vec<&str> = lines.iter().filter_map(|l| l["line"].as_str()).collect();
    assert!(text.contains(&"remote") && text.contains(&"/tmp") && text.contains(&"e"), "{text:?}");
    assert_eq!(lines.last().unwrap()["machine"], "gpu");

    let id = env.start("gpu", "for i in 1 2 3; do echo n$i; sleep 0.1; done");
    let (_, follow) =
        env.run(&["exec", "logs", "--machine", "gpu", "--id", &id, "--since", "0", "--follow"]);
    let text: Vec<&str> = follow.iter().filter_map(|l| l["line"].as_str()).collect();
    assert_eq!(text, ["n1", "n2", "n3"]);
    let result = env.ok(&["exec", "result", "--machine", "gpu", "--id", &id]);
    assert_eq!(result["state"], "succeeded");
    let (_, tail) =
        env.run(&["exec", "logs", "--machine", "gpu", "--id", &id, "--tail-lines", "1"]);
    assert_eq!(tail[0]["line"], "n3");

    let long = env.start("gpu", "sleep 60");
    let (code, _) =
        env.run(&["exec", "wait", "--machine", "gpu", "--id", &long, "--timeout", "200ms"]);
    assert_eq!(code, 124);
    let list = env.ok(&["exec", "list", "--machine", "gpu", "--state", "running"]);
    assert_eq!(list["jobs"][0]["exec_id"], long.as_str());
    assert_eq!(
        env.ok(&["exec", "cancel", "--machine", "gpu", "--id", &long])["state"],
        "cancelled"
    );
    assert_eq!(env.ok(&["exec", "rm", "--machine", "gpu", "--id", &id])["exec_id"], id.as_str());
    let pruned = env.ok(&["exec", "prune", "--machine", "gpu", "--keep", "0"]);
    assert_eq!(pruned["kept"], 0);
    // The jobs live in the configured remote data dir, not in the local store.
    assert!(!env.data_dir().join("jobs").join(&long).exists());
}

#[test]
fn login_shell_noise_on_stdout_does_not_break_a_call() {
    let noisy = "    ssh_control: false\n";
    let (env, sshd) = ssh_env(noisy);
    let remote = env.path("remote-data");
    let machine = sshd.machine_yaml("gpu", &remote, noisy).replace(
        &format!("codexd: {}", crate::support::CODEXD),
        &format!(
            "codexd: \"echo Welcome to the cluster; echo '{{\\\"type\\\":\\\"error\\\",\\\"id\\\":9}}'; {}\"",
            crate::support::CODEXD
        ),
    );
    env.set_config(&format!("machines:\n{machine}"));
    let id = env.start("gpu", "echo ok");
    assert_eq!(env.wait("gpu", &id)["state"], "succeeded");
}

#[test]
fn ssh_failures_have_their_own_codes() {
    let (env, sshd) = ssh_env("");
    let remote = env.path("remote-data");
    let missing = sshd
        .machine_yaml("gpu", &remote, "")
        .replace(&format!("codexd: {}", crate::support::CODEXD), "codexd: /nonexistent/codexd");
    env.set_config(&format!("machines:\n{missing}"));
    let e = env.err(&["exec", "list", "--machine", "gpu"], "codexd_not_found", 3);
    assert!(e["hint"].as_str().unwrap().contains("codexd"));

    let wrong_port = sshd.machine_yaml("gpu", &remote, "    ssh_control: false\n").replace(
        "ssh: testhost",
        "ssh: nobody@127.0.0.1\n    ssh_args: [\"-p\", \"1\", \"-o\", \"StrictHostKeyChecking=no\"]",
    );
    // Drop the first ssh_args line (the -F one) so the explicit port is used.
    let wrong_port: String =
        wrong_port.lines().filter(|l| !l.contains("\"-F\"")).map(|l| format!("{l}\n")).collect();
    env.set_config(&format!("machines:\n{wrong_port}"));
    env.err(&["exec", "list", "--machine", "gpu"], "ssh_failed", 3);
}

#[test]
fn calls_reuse_one_master_connection() {
    let (env, _sshd) = ssh_env("");
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let sockets = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(env.dir.path().join("cm"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_socket())
            .map(|e| e.path())
            .collect()
    };
    env.ok(&["exec", "list", "--machine", "gpu"]);
    let first = sockets();
    assert_eq!(first.len(), 1, "one ControlMaster socket");
    let mode = std::fs::metadata(env.dir.path().join("cm")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    for _ in 0..3 {
        env.ok(&["exec", "list", "--machine", "gpu"]);
    }
    assert_eq!(sockets(), first);
}

#[test]
fn a_burst_of_parallel_starts_fits_a_stock_sshd() {
    // sshd's defaults, stated: 10 sessions per connection, 10 unauthenticated connections.
    let env = TestEnv::new();
    let sshd = Sshd::start_with(env.dir.path(), "MaxSessions 10\nMaxStartups 10:30:100\n");
    let remote = env.path("remote-data");
    env.set_config(&format!("machines:\n{}", sshd.machine_yaml("gpu", &remote, "")));
    let children: Vec<_> = (0..60)
        .map(|i| {
            env.remote(&[
                "exec",
                "start",
                "--machine",
                "gpu",
                "--idempotency-key",
                &format!("burst-{i}"),
                "--cmd",
                "true",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let list = env.ok(&["exec", "list", "--machine", "gpu", "--limit", "1000"]);
    let mut keys: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["idempotency_key"].as_str().unwrap())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 60, "each job exists exactly once");
}
