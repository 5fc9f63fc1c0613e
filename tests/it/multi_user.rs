//! Another Unix user of the same machine gets nothing of yours (issue 12, points 1, 2 and 8).
//!
//! A second user is created with `useradd` for the test and removed with `userdel -r` after
//! it. The attacker's side runs as that user: this very test binary, re-executed under its uid
//! to run [`other_user_side`] (ignored in normal runs), told by `MULTI_USER_ATTACK` what to do.
//! It reports on stdout in lines starting with [`REPORT`]. Not root or no `useradd`: skipped
//! with a message, except under `CI=true` (CI runs as root), where it fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use crate::client_trust::{assert_only_challenges, impostor};
use crate::dashboard::{DashboardProcess, http, local_jobs};
use crate::support::TestEnv;

/// The prefix of the attacker's report lines (libtest writes its own lines on stdout too).
const REPORT: &str = "ATTACK ";
/// The token of the victim's HTTP machine: it must never reach the attacker.
const TOKEN: &str = "victims-token-3f9a";

/// A Unix user made for one test; `userdel -r` when dropped.
struct OtherUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl OtherUser {
    /// `None` (after saying why) when users cannot be created here; under `CI=true` that fails.
    fn create() -> Option<OtherUser> {
        let why = if !rustix::process::getuid().is_root() {
            Some("not root")
        } else if Command::new("useradd").arg("--help").output().is_err() {
            Some("no useradd (Debian package passwd)")
        } else {
            None
        };
        if let Some(why) = why {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "multi-user tests: {why}");
            eprintln!("skipped: the multi-user tests need root and useradd: {why}");
            return None;
        }
        let name = format!("crtest{}", std::process::id());
        let out = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", &name])
            .output()
            .unwrap();
        assert!(out.status.success(), "useradd: {}", String::from_utf8_lossy(&out.stderr));
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let home = PathBuf::from(format!("/home/{name}"));
        Some(OtherUser { name, uid, gid, home })
    }

    /// Starts [`other_user_side`] as this user with `attack` and `vars`.
    fn attack(&self, attack: &str, vars: &[(&str, &str)]) -> Attacker {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "multi_user::other_user_side", "--nocapture"])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.home)
            .env("MULTI_USER_ATTACK", attack)
            .envs(vars.iter().copied())
            .uid(self.uid)
            .gid(self.gid)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Attacker { child, stdout }
    }
}

impl Drop for OtherUser {
    fn drop(&mut self) {
        let out = Command::new("userdel").args(["-r", &self.name]).output();
        if let Some(out) = out.ok().filter(|o| !o.status.success()) {
            eprintln!("userdel -r {}: {}", self.name, String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// The attacker's process: its stdin open until [`Attacker::finish`], its report lines.
struct Attacker {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Attacker {
    /// The next report line (without the prefix).
    fn next_report(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.stdout.read_line(&mut line).unwrap() > 0, "the attacker ended early");
            if let Some(report) = line.trim_end().strip_prefix(REPORT) {
                return report.to_string();
            }
        }
    }

    /// Closes its stdin (the signal to stop), waits for it to succeed; its last report lines.
    fn finish(mut self) -> Vec<String> {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the attacker's side failed: {rest}");
        rest.lines().filter_map(|l| l.strip_prefix(REPORT)).map(str::to_string).collect()
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        // A test that failed half way leaves no process of the other user behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The attacker's side, run as the other user by the tests below (never on its own).
#[test]
#[ignore = "run as another user by the multi_user tests"]
fn other_user_side() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    match var("MULTI_USER_ATTACK").as_str() {
        // Listens where the victim's machine points and claims to be the victim's codexd.
        "impostor" => {
            let (port, seen) = impostor(var("VICTIM_USER"), var("VICTIM_UID").parse().unwrap());
            report(&port.to_string());
            std::io::stdin().read_to_end(&mut Vec::new()).unwrap();
            for request in seen.lock().unwrap().iter() {
                report(&serde_json::to_string(request).unwrap());
            }
        }
        // Asks the victim's dashboard for its page, secret and API without the token.
        "dashboard" => {
            let port: u16 = var("DASHBOARD_PORT").parse().unwrap();
            let host = format!("127.0.0.1:{port}");
            let start = r#"{"machine":"local","cmd":"id > /tmp/owned"}"#;
            let json = ("Content-Type", "application/json");
            let guessed = ("X-Dashboard-Secret", "0".repeat(64));
            for (method, path) in [("GET", "/"), ("GET", "/api/jobs"), ("POST", "/api/jobs")] {
                let headers = [("Host", host.as_str()), json, (guessed.0, guessed.1.as_str())];
                let r = http(port, method, path, &headers, start);
                let secret = r.body.contains("dashboard-secret");
                report(&format!("{method} {path} {} secret={secret}", r.status));
            }
        }
        // Plants a symlink where the victim's client makes its fallback control dir.
        "plant" => {
            let target = PathBuf::from(var("PLANT_TARGET"));
            if var("PLANT_OWN_TARGET") == "1" {
                std::fs::create_dir_all(&target).unwrap();
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            std::os::unix::fs::symlink(&target, var("PLANT_LINK")).unwrap();
            report("planted");
        }
        // Plants a FIFO at `<cwd>/.codex/artifacts.json` in a shared (1777) job cwd: a worker
        // that opened it to read would block until someone opened the other end.
        "fifo" => {
            let codex = PathBuf::from(var("SHARED_CWD")).join(".codex");
            std::fs::create_dir(&codex).unwrap();
            std::fs::set_permissions(&codex, std::fs::Permissions::from_mode(0o755)).unwrap();
            rustix::fs::mknodat(
                rustix::fs::CWD,
                codex.join("artifacts.json"),
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o666),
                0,
            )
            .unwrap();
            report("planted");
        }
        other => panic!("unknown attack {other:?}"),
    }
}

/// One report line of the attacker's side, on its stdout at once.
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{REPORT}{line}").unwrap();
    out.flush().unwrap();
}

#[test]
fn another_user_cannot_pose_as_your_codexd_nor_use_your_dashboard_or_control_dir() {
    let Some(other) = OtherUser::create() else { return };
    let me = rustix::process::getuid().as_raw();

    // Point 1: B listens where A's HTTP machine points and claims to be A's codexd.
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let uid = me.to_string();
    let mut b = other.attack("impostor", &[("VICTIM_USER", user.trim()), ("VICTIM_UID", &uid)]);
    let port = b.next_report();
    let env = TestEnv::with_config(&format!(
        "machines:\n  - name: gpu\n    addr: 127.0.0.1:{port}\n    token: {TOKEN}\n"
    ));
    let e = env.err(&["exec", "list", "--machine", "gpu"], "foreign_daemon", 3);
    assert!(e["message"].as_str().unwrap().contains("did not prove"), "{e}");
    let requests: Vec<String> =
        b.finish().iter().map(|r| serde_json::from_str(r).unwrap()).collect();
    assert_only_challenges(&requests, TOKEN);

    // Point 2: B knows the port of A's dashboard, not its token.
    let dash = DashboardProcess::start(&env, "127.0.0.1:0");
    let b = other.attack("dashboard", &[("DASHBOARD_PORT", &dash.port().to_string())]);
    let answers = b.finish();
    assert_eq!(
        answers,
        [
            "GET / 401 secret=false",
            "GET /api/jobs 401 secret=false",
            "POST /api/jobs 401 secret=false"
        ]
    );
    assert_eq!(local_jobs(&env), 0, "the refused POST started no job");
    drop(dash);

    // Point 8: B plants `/tmp/codex-remote-<A's uid>` (A's last fallback for ControlMaster
    // sockets) as a symlink to a directory of A's, or of B's own.
    fallback_control_dir_planted_by_another_user(&other, &env);
}

/// Point 8 of issue 12; `env`'s client reaches the fallback through a cache dir too long for a
/// socket path, with no `CODEX_REMOTE_CONTROL_DIR` nor `XDG_RUNTIME_DIR`.
fn fallback_control_dir_planted_by_another_user(other: &OtherUser, env: &TestEnv) {
    let link = PathBuf::from(format!("/tmp/codex-remote-{}", rustix::process::getuid().as_raw()));
    if std::fs::symlink_metadata(&link).is_ok() {
        eprintln!("skipped the planted control dir: {} exists (not the test's)", link.display());
        return;
    }
    let _cleanup = RemoveOnDrop(link.clone());
    env.set_config(
        "machines:\n  - name: gone\n    ssh: ssh://u@127.0.0.1:1\n    ssh_args: [\"-F\", \"/dev/null\"]\n",
    );
    let long_cache = env.path(&"c".repeat(100));
    let exec_list = || {
        let out = env
            .remote(&["exec", "list", "--machine", "gone"])
            .env_remove("CODEX_REMOTE_CONTROL_DIR")
            .env("XDG_CACHE_HOME", &long_cache)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    };
    // Unplanted, the client makes the fallback its own: so the test reaches it.
    exec_list();
    let made = std::fs::symlink_metadata(&link).expect("the fallback control dir is used");
    assert!(made.is_dir() && made.permissions().mode() & 0o777 == 0o700, "{made:?}");
    std::fs::remove_dir_all(&link).unwrap();

    let own_target = env.path("victim-home");
    std::fs::create_dir(&own_target).unwrap();
    std::fs::set_permissions(&own_target, std::fs::Permissions::from_mode(0o755)).unwrap();
    let b_target = other.home.join("target");
    for (target, b_owns) in [(&own_target, false), (&b_target, true)] {
        let vars = [
            ("PLANT_LINK", link.to_str().unwrap()),
            ("PLANT_TARGET", target.to_str().unwrap()),
            ("PLANT_OWN_TARGET", if b_owns { "1" } else { "0" }),
        ];
        assert_eq!(other.attack("plant", &vars).finish(), ["planted"]);
        assert_eq!(std::fs::symlink_metadata(&link).unwrap().uid(), other.uid);
        exec_list();
        let meta = std::fs::metadata(target).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{} was chmodded", target.display());
        assert_eq!(meta.uid(), if b_owns { other.uid } else { rustix::process::getuid().as_raw() });
        assert!(empty(target), "nothing was created in {}", target.display());
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        std::fs::remove_file(&link).unwrap();
    }
}

fn empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

/// Removes a path (a dir or a symlink) the test made, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0).or_else(|_| std::fs::remove_dir_all(&self.0));
    }
}

/// Issue 26, point 7: another user plants a FIFO at `.codex/artifacts.json` in a shared job cwd.
/// The worker never opens it to read (it would block there, holding the job's lock): the job
/// ends normally with a warning, a cancel of another job there answers within seconds, and
/// both jobs can be removed after.
#[test]
fn a_fifo_planted_in_a_shared_cwd_never_holds_a_job_hostage() {
    let Some(other) = OtherUser::create() else { return };
    let env = TestEnv::new();
    let shared = tempfile::Builder::new().prefix("cr-shared").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let cwd = shared.path().to_str().unwrap();
    let b = other.attack("fifo", &[("SHARED_CWD", cwd)]);
    assert_eq!(b.finish(), ["planted"]);
    let planted = shared.path().join(".codex/artifacts.json");
    assert!(std::fs::symlink_metadata(&planted).unwrap().file_type().is_fifo());
    assert_ne!(
        std::fs::symlink_metadata(&planted).unwrap().uid(),
        rustix::process::getuid().as_raw()
    );

    let start = |cmd: &str| {
        let v = env.ok(&["exec", "start", "--cwd", cwd, "--cmd", cmd]);
        v["exec_id"].as_str().unwrap().to_string()
    };
    let ended = start("echo done");
    let v = env.ok(&["exec", "wait", "--id", &ended, "--timeout", "20s"]);
    assert_eq!(v["state"], "succeeded", "the job ended normally: {v}");
    assert!(v["warning"].as_str().unwrap_or("").contains("not a regular file"), "{v}");

    let running = start("sleep 300");
    env.started("local", &running);
    let begin = std::time::Instant::now();
    let v = env.ok(&["exec", "cancel", "--id", &running, "--grace", "200ms"]);
    let took = begin.elapsed();
    eprintln!("exec cancel of a job whose cwd holds a planted FIFO answered in {took:?}");
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(took < std::time::Duration::from_secs(10), "cancel took {took:?}");
    for id in [&ended, &running] {
        assert_eq!(env.ok(&["exec", "rm", "--id", id])["exec_id"], id.as_str());
    }
}
