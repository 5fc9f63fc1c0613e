//! The Agent Skills: `codex-remote skills install` writes them where each agent looks, and each
//! skill's scripts run against a machine behind the loopback sshd and exit as its SKILL.md says.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{CODEX_REMOTE, Sshd, TestEnv};

/// `sh SCRIPT ARGS` with `codex-remote` on the PATH: the exit code and stdout.
fn script(env: &TestEnv, dir: &Path, name: &str, args: &[&str]) -> (i32, String) {
    let bin = Path::new(CODEX_REMOTE).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = env.command(Path::new("sh"), &[]);
    let out = cmd.arg(dir.join(name)).args(args).env("PATH", path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), stdout)
}

fn last_json(stdout: &str) -> Value {
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or("null");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn skills_install_where_each_agent_looks() {
    let env = TestEnv::new();
    let codex_home = env.path("codex-home");
    let out = env.remote(&["skills", "install"]).env("CODEX_HOME", &codex_home).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "skills_installed");
    assert_eq!(v["skills"].as_array().unwrap().len(), 5, "{v}");
    for root in [codex_home.join("skills"), env.home.join(".claude/skills")] {
        let skill = root.join("codex-remote-submit");
        assert!(skill.join("SKILL.md").is_file(), "{root:?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(skill.join("scripts/submit.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
    // What the binary carries is the repository's `skills/`.
    let dir = env.path("only");
    env.ok(&["skills", "install", "--dir", dir.to_str().unwrap()]);
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("skills");
    for entry in walk(&repo) {
        let rel = entry.strip_prefix(&repo).unwrap();
        assert_eq!(
            std::fs::read(dir.join(rel)).unwrap(),
            std::fs::read(&entry).unwrap(),
            "{rel:?}"
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn every_skill_script_runs_over_ssh_and_exits_as_its_skill_says() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let remote = env.path("remote-data");
    // `down`: ssh to a port nothing listens on (connection refused at once).
    let down = "  - name: down\n    ssh: root@127.0.0.1\n    ssh_args: [\"-p\", \"1\", \"-o\", \"BatchMode=yes\"]\n";
    env.set_config(&format!("machines:\n{}{down}", sshd.machine_yaml("gpu", &remote, "")));
    let skills = env.path("skills");
    env.ok(&["skills", "install", "--dir", skills.to_str().unwrap()]);
    let s = |name: &str, args: &[&str]| script(&env, &skills, name, args);

    // submit: the exec_id on stdout, exit 0; wait_result: the job's own exit code.
    let (code, id) = s("codex-remote-submit/scripts/submit.sh", &["gpu", "echo hi; exit 3"]);
    assert_eq!(code, 0, "{id}");
    let id = id.trim();
    assert_eq!(id.len(), 36, "{id}");
    let (code, out) = s("codex-remote-submit/scripts/wait_result.sh", &["gpu", id, "60s"]);
    assert_eq!(code, 3, "{out}");
    assert_eq!(last_json(&out)["state"], "failed");
    let (code, id) = s("codex-remote-submit/scripts/submit.sh", &["gpu", "sleep 30"]);
    assert_eq!(code, 0);
    let (code, _) = s("codex-remote-submit/scripts/wait_result.sh", &["gpu", id.trim(), "1s"]);
    assert_eq!(code, 124);
    env.ok(&["exec", "cancel", "--machine", "gpu", "--id", id.trim(), "--grace", "1s"]);
    // A missing cwd is refused: exit non-zero with the JSON error.
    let (code, out) = s("codex-remote-submit/scripts/submit.sh", &["gpu", "true", "/nonexistent"]);
    assert_ne!(code, 0, "{out}");

    // files: push a tree (exit 0), fetch a file back (exit 0), a missing one (exit 4).
    let tree = env.path("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/a.txt"), "alpha").unwrap();
    let dst = env.home.join("pushed");
    let (code, out) = s(
        "codex-remote-files/scripts/push_tree.sh",
        &["gpu", &format!("{}/", tree.display()), dst.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(last_json(&out)["ok"], true);
    let local = env.path("fetched.txt");
    let remote_file = dst.join("sub/a.txt");
    let (code, out) = s(
        "codex-remote-files/scripts/fetch_file.sh",
        &["gpu", remote_file.to_str().unwrap(), local.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(std::fs::read_to_string(&local).unwrap(), "alpha");
    let (code, out) =
        s("codex-remote-files/scripts/fetch_file.sh", &["gpu", "/nonexistent/x", "x"]);
    assert_eq!((code, last_json(&out)["code"].as_str()), (4, Some("file_not_found")), "{out}");

    // machine: ready, exit 0; an unknown machine is a config error, exit 2.
    let (code, out) = s("codex-remote-machine/scripts/check_machine.sh", &["gpu"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(last_json(&out)["ok"], true);
    let (code, _) = s("codex-remote-machine/scripts/check_machine.sh", &["nosuch"]);
    assert_eq!(code, 2);

    // gpus: the report, exit 0; no nvidia-smi here, so a GPU ask can never be met: exit 4.
    let (code, out) = s("codex-remote-gpus/scripts/gpu_status.sh", &["gpu"]);
    assert_eq!(code, 0, "{out}");
    // A machine that cannot be reached: exit 3, the report says why.
    let (code, out) = s("codex-remote-gpus/scripts/gpu_status.sh", &["down"]);
    assert_eq!((code, &last_json(&out)["daemon_ok"]), (3, &Value::Bool(false)), "{out}");
    let (code, out) = s("codex-remote-gpus/scripts/submit_gpu.sh", &["gpu", "1", "true"]);
    if which("nvidia-smi") {
        assert_eq!(code, 0, "{out}");
    } else {
        assert_eq!((code, last_json(&out)["code"].as_str()), (4, Some("invalid_argument")));
    }

    // troubleshoot: the doctor report (exit 0 healthy) and the job's status.
    let (code, out) = s("codex-remote-troubleshoot/scripts/triage.sh", &["gpu", id.trim()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"checks\""), "{out}");
}

fn which(program: &str) -> bool {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .any(|d| Path::new(d).join(program).is_file())
}
