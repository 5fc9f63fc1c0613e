//! Test scaffolding: a private HOME, config and data dir per test, the real binaries, and a real
//! OpenSSH `sshd` on a loopback port.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const CODEX_REMOTE: &str = env!("CARGO_BIN_EXE_codex-remote");
pub const CODEXD: &str = env!("CARGO_BIN_EXE_codexd");

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Says why a test cannot run its real part here; under `CI=true` (where .ci/run installs what
/// the tests need) that is a failure, never a silent pass.
pub fn skip(why: &str) {
    assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "cannot run here: {why}");
    eprintln!("skipped: {why}");
}

/// One test's world: a temporary HOME (so `~/.codexd` and `~/.config` are private) and config.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub config: PathBuf,
}

impl TestEnv {
    pub fn new() -> Self {
        Self::with_config("machines: []\n")
    }

    pub fn with_config(yaml: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("cr").tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, yaml).unwrap();
        TestEnv { dir, home, config }
    }

    pub fn set_config(&self, yaml: &str) {
        std::fs::write(&self.config, yaml).unwrap();
    }

    /// The local machine's job store.
    pub fn data_dir(&self) -> PathBuf {
        self.home.join(".codexd")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn apply_env(&self, cmd: &mut Command) {
        cmd.env("HOME", &self.home)
            .env("CODEX_REMOTE_CONFIG", &self.config)
            .env("CODEX_REMOTE_CONTROL_DIR", self.dir.path().join("cm"))
            .env_remove("CODEXD_DATA_DIR")
            .env_remove("CODEXD_CONFIG")
            .env_remove("CODEX_REMOTE_MACHINE")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_CACHE_HOME")
            // codexd's `env_defaults` are tested: the caller's own must not mask them.
            .env_remove("PYTHONUNBUFFERED");
    }

    /// `codex-remote ARGS` with this env.
    pub fn remote(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(CODEX_REMOTE);
        cmd.args(args).stdin(Stdio::null());
        self.apply_env(&mut cmd);
        cmd
    }

    /// `PROGRAM ARGS` with this env (e.g. a copy of a binary).
    pub fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null());
        self.apply_env(&mut cmd);
        cmd
    }

    /// `codexd ARGS` with this env.
    pub fn codexd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(CODEXD);
        cmd.args(args);
        self.apply_env(&mut cmd);
        cmd
    }

    /// Runs `codex-remote ARGS`; returns the exit code and every stdout line as JSON.
    pub fn run(&self, args: &[&str]) -> (i32, Vec<Value>) {
        let out = self.remote(args).output().unwrap();
        (out.status.code().unwrap_or(-1), json_lines(&out))
    }

    /// Runs `codex-remote ARGS`, expecting one JSON object and exit 0.
    pub fn ok(&self, args: &[&str]) -> Value {
        let out = self.remote(args).output().unwrap();
        let lines = json_lines(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "codex-remote {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(lines.len(), 1, "one JSON line expected from {args:?}: {lines:?}");
        lines.into_iter().next().unwrap()
    }

    /// Runs `codex-remote ARGS`, expecting a JSON error with `code` and exit status `exit`.
    pub fn err(&self, args: &[&str], code: &str, exit: i32) -> Value {
        let out = self.remote(args).output().unwrap();
        let lines = json_lines(&out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(exit), "exit of {args:?}: {lines:?} {stderr}");
        let last = lines.last().cloned().unwrap_or(Value::Null);
        assert_eq!(last["type"], "error", "{args:?}: {lines:?}");
        assert_eq!(last["code"], code, "{args:?}: {lines:?}");
        assert!(!last["message"].as_str().unwrap_or("").is_empty());
        assert!(!stderr.trim().is_empty(), "a human message on stderr");
        last
    }

    /// Sends raw request bytes to `codexd rpc` on the local store; returns the answer lines.
    pub fn rpc_raw(&self, input: &[u8]) -> Vec<Value> {
        let mut child = self
            .codexd(&["rpc"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        json_lines(&out)
    }

    /// Starts `cmd` on `machine` and returns its exec_id.
    pub fn start(&self, machine: &str, cmd: &str) -> String {
        let v = self.ok(&["exec", "start", "--machine", machine, "--cmd", cmd]);
        assert_eq!(v["status"], "running", "{v}");
        v["exec_id"].as_str().unwrap().to_string()
    }

    /// Waits until the worker of a job has recorded it (pid set) and returns its status.
    pub fn started(&self, machine: &str, id: &str) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(Duration::from_secs(10), || {
            last = self.ok(&["exec", "result", "--machine", machine, "--id", id]);
            !last["pid"].is_null()
        });
        assert!(ok, "the worker never recorded the job: {last}");
        last
    }

    /// Waits for a job to end and returns its status.
    pub fn wait(&self, machine: &str, id: &str) -> Value {
        self.ok(&["exec", "wait", "--machine", machine, "--id", id, "--timeout", "60s"])
    }

    /// A listing of the store (paths and sizes and status texts) to compare before/after.
    pub fn store_snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        snapshot(&self.data_dir(), &self.data_dir(), &mut out);
        out.sort();
        out
    }
}

fn snapshot(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        if p.is_dir() {
            out.push((rel, Vec::new()));
            snapshot(root, &p, out);
        } else {
            out.push((rel, std::fs::read(&p).unwrap_or_default()));
        }
    }
}

/// Parses every stdout line as JSON (panics on a line that is not: stdout is JSON only).
pub fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON on stdout: {l:?}: {e}"))
        })
        .collect()
}

/// Whether a process is alive (not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit_once(')').and_then(|(_, r)| r.trim().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A real OpenSSH server on a loopback port, with its own host key, client key and ssh config.
pub struct Sshd {
    child: Child,
    /// An ssh config file with `Host testhost` pointing at this server.
    pub ssh_config: PathBuf,
}

impl Sshd {
    pub fn sshd_path() -> PathBuf {
        for p in ["/usr/sbin/sshd", "/usr/local/sbin/sshd"] {
            if Path::new(p).is_file() {
                return PathBuf::from(p);
            }
        }
        panic!("sshd is not installed: the ssh tests need openssh-server (.ci/run installs it)");
    }

    pub fn start(dir: &Path) -> Sshd {
        Self::start_with(dir, "")
    }

    /// Makes `dir` (an sshd's own) with a host key, a client key and the client key
    /// authorized.
    pub fn keys(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        for key in ["host_key", "client_key"] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(key))
                .status()
                .unwrap();
            assert!(status.success());
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
    }

    /// The sshd options of a test server whose keys are in `dir` (see [`Sshd::keys`]).
    pub fn server_options(dir: &Path) -> String {
        format!(
            "HostKey {d}/host_key\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin yes\nPubkeyAuthentication yes\nPrintMotd no\nLogLevel ERROR\n",
            d = dir.display()
        )
    }

    /// `CMD -D -e -f CONFIG` (CMD runs sshd, maybe through a wrapper), its stderr in `log`.
    pub fn spawn_daemon(mut cmd: Command, config: &Path, log: &Path) -> Child {
        let log = std::fs::File::create(log).unwrap();
        cmd.args(["-D", "-e", "-f"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Starts sshd; `extra` is appended to its config (e.g. `MaxSessions 2`).
    pub fn start_with(dir: &Path, extra: &str) -> Sshd {
        let sshd = Self::sshd_path();
        let dir = dir.join("sshd");
        Self::keys(&dir);
        for attempt in 0..5 {
            let port = free_port();
            let config = dir.join("sshd_config");
            let options = Self::server_options(&dir);
            std::fs::write(
                &config,
                format!("Port {port}\nListenAddress 127.0.0.1\n{options}{extra}\n"),
            )
            .unwrap();
            let child = Self::spawn_daemon(Command::new(&sshd), &config, &dir.join("sshd.log"));
            let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
            std::fs::write(dir.join("known_hosts"), format!("[127.0.0.1]:{port} {host_pub}"))
                .unwrap();
            let ssh_config = dir.join("ssh_config");
            std::fs::write(
                &ssh_config,
                format!(
                    "Host testhost\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  \
                     IdentityFile {d}/client_key\n  IdentitiesOnly yes\n  \
                     UserKnownHostsFile {d}/known_hosts\n  GlobalKnownHostsFile /dev/null\n  \
                     StrictHostKeyChecking yes\n  LogLevel ERROR\n",
                    user = current_user(),
                    d = dir.display()
                ),
            )
            .unwrap();
            let mut sshd = Sshd { child, ssh_config };
            let up = wait_until(Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            if up {
                return sshd;
            }
            let _ = sshd.child.kill();
            eprintln!("sshd did not come up on port {port} (attempt {attempt})");
        }
        panic!("sshd would not start; see {}/sshd.log", dir.display());
    }

    /// A machine entry for the config, with the given extra YAML lines (indented 4).
    pub fn machine_yaml(&self, name: &str, data_dir: &Path, extra: &str) -> String {
        format!(
            "  - name: {name}\n    ssh: testhost\n    ssh_args: [\"-F\", \"{cfg}\"]\n    \
             codexd: {codexd}\n    data_dir: {data}\n{extra}",
            cfg = self.ssh_config.display(),
            codexd = CODEXD,
            data = data_dir.display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // End ControlMaster connections this test opened.
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("cm")) {
            for e in entries.flatten() {
                let _ = Command::new("ssh")
                    .arg("-o")
                    .arg(format!("ControlPath={}", e.path().display()))
                    .args(["-O", "exit", "x"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Reads JSON lines from a child's stdout until EOF in a thread: each line is sent on the
/// returned channel as it comes, and the thread returns them all.
pub fn relay_json_lines(
    stdout: impl std::io::Read + Send + 'static,
) -> (std::sync::mpsc::Receiver<Value>, std::thread::JoinHandle<Vec<Value>>) {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
            let _ = tx.send(v.clone());
            lines.push(v);
        }
        lines
    });
    (rx, reader)
}
