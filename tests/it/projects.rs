//! `exec start --project P --ref REF`: jobs in a worktree of a local test repository at a
//! branch, a tag and a commit; concurrent starts; the refusals; worktrees removed with their job.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{CODEXD, Sshd, TestEnv, wait_until};

/// A repository with `v.txt` = 1 (tag `v1`), then 2 (branch `main`), and 3 on branch
/// `feature`; returns its path and the commit of `feature`.
fn test_repo(dir: &Path) -> (PathBuf, String) {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    commit(&repo, "1");
    git(&repo, &["tag", "v1"]);
    commit(&repo, "2");
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    commit(&repo, "3");
    let feature = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "-q", "main"]);
    (repo, feature)
}

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(repo).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn commit(repo: &Path, v: &str) {
    std::fs::write(repo.join("v.txt"), v).unwrap();
    std::fs::write(repo.join("sub").join("w.txt"), format!("sub {v}")).unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", v]);
}

/// codexd's config with project `demo` (the test repo) and `broken` (no such repo).
fn codexd_config(repo: &Path, missing: &Path) -> String {
    format!(
        "projects:\n  - id: demo\n    repo_url: {}\n  - id: broken\n    repo_url: file://{}\n",
        repo.display(),
        missing.display()
    )
}

/// A local env whose codexd knows the test repo.
fn local_env() -> (TestEnv, PathBuf, String) {
    let env = TestEnv::new();
    let (repo, feature) = test_repo(env.dir.path());
    std::fs::create_dir_all(env.data_dir()).unwrap();
    let config = codexd_config(&repo, &env.path("missing"));
    std::fs::write(env.data_dir().join("config.yaml"), config).unwrap();
    (env, repo, feature)
}

/// The job's stdout, once it ended.
fn output(env: &TestEnv, machine: &str, id: &str) -> String {
    let end = env.wait(machine, id);
    assert_eq!(end["state"], "succeeded", "{end}");
    let (_, lines) = env.run(&["exec", "logs", "-m", machine, "--id", id]);
    lines.iter().filter(|l| l["type"] == "log").map(|l| l["line"].as_str().unwrap()).collect()
}

fn start(env: &TestEnv, machine: &str, git_ref: Option<&str>, cmd: &str) -> Value {
    let mut args = vec!["exec", "start", "-m", machine, "--project", "demo", "--cmd", cmd];
    if let Some(r) = git_ref {
        args.extend(["--ref", r]);
    }
    env.ok(&args)
}

#[test]
fn runs_at_a_branch_a_tag_and_a_commit() {
    let (env, repo, feature) = local_env();
    let main = git(&repo, &["rev-parse", "main"]);
    let v1 = git(&repo, &["rev-parse", "v1"]);
    for (git_ref, want, commit) in [
        (Some("main"), "2", &main),
        (Some("v1"), "1", &v1),
        (Some(feature.as_str()), "3", &feature),
        (None, "2", &main),
    ] {
        let job = start(&env, "local", git_ref, "cat v.txt");
        let id = job["exec_id"].as_str().unwrap();
        assert_eq!(output(&env, "local", id), want, "{git_ref:?}");
        assert_eq!(job["project"], "demo");
        assert_eq!(job["ref"], git_ref.unwrap_or("HEAD"));
        assert_eq!(job["commit"].as_str(), Some(commit.as_str()), "{job}");
        let worktree = job["worktree"].as_str().unwrap();
        assert_eq!(job["cwd"].as_str(), Some(worktree));
        assert!(worktree.starts_with(env.data_dir().to_str().unwrap()), "{worktree}");
    }
    // cwd is inside the repo; a branch is fetched again, so a new commit is seen.
    let job = env.ok(&[
        "exec",
        "start",
        "--project",
        "demo",
        "--ref",
        "v1",
        "--cwd",
        "sub",
        "--cmd",
        "cat w.txt",
    ]);
    assert_eq!(output(&env, "local", job["exec_id"].as_str().unwrap()), "sub 1");
    commit(&repo, "4");
    let job = start(&env, "local", Some("main"), "cat v.txt");
    assert_eq!(output(&env, "local", job["exec_id"].as_str().unwrap()), "4");
    // A plain job has none of the project fields.
    let plain = env.ok(&["exec", "start", "--cmd", "true"]);
    assert!(plain.get("project").is_none() && plain.get("worktree").is_none(), "{plain}");
}

#[test]
fn two_concurrent_starts_on_one_project() {
    let (env, _repo, _) = local_env();
    let env = std::sync::Arc::new(env);
    let starts: Vec<_> = (0..2)
        .map(|_| {
            let env = env.clone();
            std::thread::spawn(move || start(&env, "local", Some("main"), "cat v.txt"))
        })
        .collect();
    let jobs: Vec<Value> = starts.into_iter().map(|t| t.join().unwrap()).collect();
    assert_ne!(jobs[0]["worktree"], jobs[1]["worktree"]);
    for job in &jobs {
        assert_eq!(output(&env, "local", job["exec_id"].as_str().unwrap()), "2");
    }
}

#[test]
fn refusals_name_what_is_wrong() {
    let (env, _repo, _) = local_env();
    let e =
        env.err(&["exec", "start", "--project", "nope", "--cmd", "true"], "invalid_argument", 4);
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("demo") && message.contains("broken"), "{message}");
    for cwd in ["../x", "/tmp", "a/../../b", "~/x"] {
        let args = ["exec", "start", "--project", "demo", "--cwd", cwd, "--cmd", "true"];
        env.err(&args, "invalid_argument", 4);
    }
    let option_like = ["exec", "start", "--project", "demo", "--ref=-x", "--cmd", "true"];
    env.err(&option_like, "invalid_argument", 4);
    // A ref the repo lacks, and a repo that is not there: start_failed, with git's words.
    for (project, git_ref, words) in
        [("demo", "no-such-ref", "no-such-ref"), ("broken", "main", "not appear to be a git")]
    {
        let args = ["exec", "start", "--project", project, "--ref", git_ref, "--cmd", "true"];
        let (code, lines) = env.run(&args);
        assert_eq!(code, 4, "{lines:?}");
        let job = &lines[0];
        assert_eq!(job["state"], "start_failed", "{job}");
        let error = job["error"].as_str().unwrap();
        assert!(error.contains(words) && error.contains("fatal"), "{error}");
        assert_eq!((job["project"].as_str(), job["ref"].as_str()), (Some(project), Some(git_ref)));
        assert!(job.get("worktree").is_none(), "{job}");
    }
}

#[test]
fn a_worktree_stays_while_its_job_runs_and_goes_with_it() {
    let (env, _repo, _) = local_env();
    let running = start(&env, "local", Some("v1"), "while [ ! -e go ]; do sleep 0.05; done");
    let done = start(&env, "local", Some("v1"), "true");
    let (run_id, done_id) =
        (running["exec_id"].as_str().unwrap(), done["exec_id"].as_str().unwrap());
    let run_tree = PathBuf::from(running["worktree"].as_str().unwrap());
    let done_tree = PathBuf::from(done["worktree"].as_str().unwrap());
    env.wait("local", done_id);
    env.err(&["exec", "rm", "--id", run_id], "job_running", 4);
    env.ok(&["exec", "prune", "--keep", "0"]);
    assert!(run_tree.join("v.txt").is_file(), "the running job's worktree is kept");
    assert!(!done_tree.exists(), "the pruned job's worktree is removed");
    std::fs::write(run_tree.join("go"), "").unwrap();
    env.wait("local", run_id);
    env.ok(&["exec", "rm", "--id", run_id]);
    assert!(!run_tree.exists(), "exec rm removes the worktree");
    let mirror = env.data_dir().join("projects").join("demo.git");
    let list = git(&mirror, &["worktree", "list", "--porcelain"]);
    assert!(!list.contains("worktrees/"), "git forgot the worktrees: {list}");
}

#[test]
fn runs_at_a_tag_over_ssh_with_the_agent_forwarded() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let (repo, _) = test_repo(env.dir.path());
    let remote = env.path("remote-data");
    let codexd_yaml = env.path("codexd.yaml");
    std::fs::write(&codexd_yaml, codexd_config(&repo, &env.path("missing"))).unwrap();
    // The remote codexd reads this config, never the real ~/.codexd.
    let machine = sshd.machine_yaml("gpu", &remote, "").replace(
        &format!("codexd: {CODEXD}"),
        &format!("codexd: CODEXD_CONFIG={} {CODEXD}", codexd_yaml.display()),
    );
    env.set_config(&format!("machines:\n{machine}"));
    let job = env.ok(&[
        "exec",
        "start",
        "-m",
        "gpu",
        "--forward-agent",
        "--project",
        "demo",
        "--ref",
        "v1",
        "--cmd",
        "cat v.txt; git rev-parse HEAD",
    ]);
    let id = job["exec_id"].as_str().unwrap();
    let commit = git(&repo, &["rev-parse", "v1"]);
    assert_eq!(output(&env, "gpu", id), format!("1{commit}"));
    assert_eq!(job["commit"].as_str(), Some(commit.as_str()));
    let worktree = PathBuf::from(job["worktree"].as_str().unwrap());
    assert!(worktree.starts_with(&remote), "{worktree:?}");
    env.ok(&["exec", "rm", "-m", "gpu", "--id", id]);
    assert!(wait_until(Duration::from_secs(5), || !worktree.exists()));
}

/// Issue 26, point 10: a committed symlink out of the repo (`escape -> /etc`) is not a cwd.
#[test]
fn a_cwd_through_a_committed_symlink_out_of_the_repo_is_refused() {
    let (env, repo, _) = local_env();
    std::os::unix::fs::symlink("/etc", repo.join("escape")).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "escape"]);
    let args = ["exec", "start", "-m", "local", "--project", "demo", "--cwd", "escape"];
    let e = env.err(&[&args[..], &["--cmd", "pwd"]].concat(), "invalid_argument", 4);
    assert!(e["message"].as_str().unwrap().contains("symlink"), "{e}");
    // A real directory of the repo is still a cwd.
    let started = env.ok(&[
        "exec",
        "start",
        "-m",
        "local",
        "--project",
        "demo",
        "--cwd",
        "sub",
        "--cmd",
        "pwd",
    ]);
    let out = output(&env, "local", started["exec_id"].as_str().unwrap());
    assert!(out.ends_with("/sub"), "{out}");
}
