//! Spawning the system OpenSSH client, so `~/.ssh/config`, agents, ProxyJump and keys just work.
//!
//! The request travels on ssh's stdin, never in the remote command line (no quoting bugs, no
//! secrets in `ps`). Connections are reused with ControlMaster/ControlPersist, the sockets in a
//! private 0700 directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, ErrorCode, Result};
use crate::lockfile::{self, LockGuard};
use crate::shell::shell_quote;

/// How long an idle master connection stays up.
const CONTROL_PERSIST: &str = "10m";

/// One ssh machine as the transport needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub destination: String,
    pub ssh_args: Vec<String>,
    /// The remote command that runs codexd.
    pub codexd: String,
    pub data_dir: Option<String>,
    /// Reuse one connection (ControlMaster).
    pub control: bool,
    /// ssh's `ConnectTimeout`: how long an unreachable host may take to fail.
    pub connect_timeout_secs: u64,
    /// `-A`: the laptop's agent is forwarded (to fetch a private project repo).
    pub forward_agent: bool,
}

/// `ConnectTimeout` unless the machine sets `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;

impl SshTarget {
    /// Checks the destination: one starting with `-` would be read by ssh as an option
    /// (`-oProxyCommand=...` runs a local command), so it is refused.
    pub fn validate(&self) -> Result<()> {
        let d = &self.destination;
        if d.is_empty()
            || d.starts_with('-')
            || d.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::new(
                ErrorCode::ConfigError,
                format!(
                    "ssh destination {d:?} refused: it is empty, starts with '-' or holds spaces"
                ),
            )
            .with_hint("use a host name from ~/.ssh/config or user@host"));
        }
        Ok(())
    }

    /// The remote command line: `codexd rpc [--data-dir DIR]`.
    pub fn remote_command(&self) -> String {
        self.codexd_command("rpc")
    }

    /// `codexd SUBCOMMAND [--data-dir DIR]` as a remote command line.
    pub fn codexd_command(&self, subcommand: &str) -> String {
        let mut cmd = format!("{} {subcommand}", self.codexd);
        if let Some(dir) = &self.data_dir {
            cmd.push_str(" --data-dir ");
            cmd.push_str(&shell_quote(dir));
        }
        cmd
    }

    /// `ssh [ssh_args] -T -o BatchMode=yes -o ConnectTimeout=N ...`: the options every ssh
    /// command of this machine starts with. The user's own ssh_args come first: for ssh, the
    /// first value given for an option wins.
    fn base_command(&self) -> Command {
        let mut cmd = Command::new(ssh_program());
        cmd.args(&self.ssh_args);
        cmd.args(["-T", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=15"]);
        cmd.args(["-o", "ServerAliveCountMax=3"]);
        cmd.arg("-o").arg(format!("ConnectTimeout={}", self.connect_timeout_secs));
        if self.forward_agent {
            cmd.arg("-A");
        }
        cmd
    }

    /// `ssh ... [control options] -- DEST REMOTE_CMD`, with the locks that keep this call within
    /// sshd's limits (see [`Connection`]).
    pub fn connect(&self, remote: &str, kind: CallKind) -> Result<Connection> {
        self.validate()?;
        let mut conn = Connection::plain(self.base_command());
        match self.control.then(control_dir).flatten() {
            Some(dir) => self.use_master(&dir, kind, &mut conn)?,
            None => no_master(&mut conn.command),
        }
        conn.command.arg("--").arg(&self.destination).arg(remote);
        Ok(conn)
    }

    /// `machine ssh`: the command with agent forwarding (`-A`) and a terminal when asked
    /// (`-t`; for ssh the last of `-T`/`-t` wins), through the master connection when there is
    /// one, without the session-slot locks (an interactive session may last for hours).
    pub fn interactive_command(&self, remote: &str, tty: bool) -> Result<Command> {
        self.validate()?;
        let mut cmd = self.base_command();
        if !self.forward_agent {
            cmd.arg("-A");
        }
        if tty {
            // `-tt`: a pty even when our own stdin is not a terminal (a script, an agent).
            cmd.arg("-tt");
        }
        match self.control_path() {
            Some(path) => master_options(&mut cmd, &path),
            None => no_master(&mut cmd),
        }
        cmd.arg("--").arg(&self.destination).arg(remote);
        Ok(cmd)
    }

    /// `ssh -O forward -L SPEC` to the running master: adds a local forward to it.
    /// `None` when this machine has no master connection.
    pub fn master_forward_command(&self, spec: &str) -> Option<Command> {
        let path = self.control_path()?;
        let mut cmd = self.base_command();
        cmd.arg("-o").arg(format!("ControlPath={}", path.display()));
        cmd.args(["-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes"]);
        cmd.args(["-O", "forward", "-L", spec]);
        cmd.arg("--").arg(&self.destination);
        Some(cmd)
    }

    /// `ssh -O check`: asks the master whether it runs ("Master running (pid=N)" on stderr).
    pub fn master_check_command(&self) -> Option<Command> {
        let path = self.control_path()?;
        let mut cmd = self.base_command();
        cmd.arg("-o").arg(format!("ControlPath={}", path.display()));
        cmd.args(["-O", "check", "--"]).arg(&self.destination);
        Some(cmd)
    }

    /// `ssh -N -L SPEC` on a connection of its own (no master), for a forward that lives
    /// apart from any master.
    pub fn own_forward_command(&self, spec: &str) -> Result<Command> {
        self.validate()?;
        let mut cmd = self.base_command();
        no_master(&mut cmd);
        cmd.args(["-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes"]);
        cmd.args(["-N", "-L", spec]);
        cmd.arg("--").arg(&self.destination);
        Ok(cmd)
    }

    /// The master connection's socket, when this machine uses one.
    fn control_path(&self) -> Option<PathBuf> {
        let dir = self.control.then(control_dir).flatten()?;
        Some(dir.join(self.connection_key()))
    }

    /// Routes the call through the machine's master connection, waiting for a session slot.
    fn use_master(&self, dir: &Path, kind: CallKind, conn: &mut Connection) -> Result<()> {
        let base = dir.join(self.connection_key());
        let slot = match kind {
            CallKind::Short => Some(take_slot(&base, "s", SHORT_SLOTS, true)?),
            CallKind::Long => take_slot(&base, "l", LONG_SLOTS, false).ok(),
        };
        let Some(slot) = slot.flatten() else {
            // Every long slot is taken: this call gets a connection of its own.
            no_master(&mut conn.command);
            return Ok(());
        };
        conn.slot = Some(slot);
        if !base.exists() {
            // One caller at a time creates the master; the others wait for its socket
            // instead of all connecting at once (sshd's MaxStartups drops those).
            let lock = lockfile::lock(&base.with_extension("master"))?;
            if !base.exists() {
                conn.master = Some(MasterPending { _lock: lock, socket: base.clone() });
            }
        }
        master_options(&mut conn.command, &base);
        Ok(())
    }

    /// A short stable name for this machine's connection (destination and ssh arguments).
    fn connection_key(&self) -> String {
        // FNV-1a: stable across processes and versions, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        // A master forwards the agent to its sessions only when it was started with -A, so
        // calls that forward it have a master of their own.
        let text = std::iter::once(self.destination.as_str())
            .chain(self.ssh_args.iter().map(String::as_str))
            .chain(self.forward_agent.then_some("-A"));
        for part in text {
            for b in part.bytes().chain(std::iter::once(0)) {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{h:016x}")
    }
}

/// Options that use (or start) the master connection at `socket`.
fn master_options(cmd: &mut Command, socket: &Path) {
    cmd.arg("-o").arg("ControlMaster=auto");
    cmd.arg("-o").arg(format!("ControlPath={}", socket.display()));
    cmd.arg("-o").arg(format!("ControlPersist={CONTROL_PERSIST}"));
}

/// Options for a connection of its own.
fn no_master(cmd: &mut Command) {
    cmd.args(["-o", "ControlMaster=no", "-o", "ControlPath=none"]);
}

/// Short calls answer at once; long calls (follow, wait) may hold a session for hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Short,
    Long,
}

/// Sessions of one master used at once by short calls (sshd's default MaxSessions is 10).
const SHORT_SLOTS: usize = 6;
/// Sessions used at once by long calls; a long call beyond them gets its own connection.
const LONG_SLOTS: usize = 3;

/// A prepared ssh command and the locks it holds while it runs.
pub struct Connection {
    pub command: Command,
    slot: Option<LockGuard>,
    master: Option<MasterPending>,
    /// Set when the connection is dropped (the call has ended): a master lock still held for
    /// it is released then, even if no master socket appeared (the host was unreachable).
    ended: Arc<AtomicBool>,
}

/// This caller is creating the master connection; others wait on the lock.
struct MasterPending {
    _lock: LockGuard,
    socket: PathBuf,
}

impl Connection {
    /// A command that needs no locks (the local machine).
    pub fn plain(command: Command) -> Self {
        Connection { command, slot: None, master: None, ended: Arc::default() }
    }

    /// Called once ssh is running: releases the master lock as soon as the master's socket
    /// exists or the call has ended, so waiting callers go on through it (and nobody waits
    /// on a lock held for a call that failed).
    pub fn started(&mut self) {
        if let Some(pending) = self.master.take() {
            let ended = self.ended.clone();
            std::thread::spawn(move || {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                while !pending.socket.exists()
                    && !ended.load(Ordering::SeqCst)
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                drop(pending);
            });
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.ended.store(true, Ordering::SeqCst);
    }
}

/// Starts `cmd` tied to this process: on Linux it gets SIGTERM when `codex-remote` ends, even
/// by SIGKILL (`PR_SET_PDEATHSIG`), so no ssh child (and no remote `codexd rpc` behind it) is
/// left behind. The signal comes when the *thread* that forked ends, so every tied child is
/// started by one thread that lives as long as the process. Elsewhere the child shares our
/// process group, and a kill of the group (a terminal's Ctrl-C) takes it along.
pub fn spawn_tied(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    #[cfg(target_os = "linux")]
    {
        crate::jobs::sys::die_with_parent(cmd);
        tied::spawn(cmd)
    }
    #[cfg(not(target_os = "linux"))]
    cmd.spawn()
}

#[cfg(target_os = "linux")]
mod tied {
    use std::process::{Child, Command};
    use std::sync::mpsc::{Sender, channel};
    use std::sync::{Mutex, OnceLock};

    type Spawned = (Command, std::io::Result<Child>);
    /// A command to spawn and where its child goes back.
    type Job = (Command, Sender<Spawned>);
    static SPAWNER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();

    /// Spawns `cmd` on the spawner thread (started on first use, never ended).
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
        let spawner = SPAWNER.get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            std::thread::Builder::new()
                .name("spawner".into())
                .spawn(move || {
                    for (mut cmd, back) in rx {
                        let child = cmd.spawn();
                        let _ = back.send((cmd, child));
                    }
                })
                .expect("starting the spawner thread");
            Mutex::new(tx)
        });
        let (back, answer) = channel();
        let owned = std::mem::replace(cmd, Command::new(""));
        let sent = spawner.lock().unwrap_or_else(|e| e.into_inner()).send((owned, back));
        if let Err(std::sync::mpsc::SendError((mut owned, _))) = sent {
            let child = owned.spawn();
            *cmd = owned;
            return child;
        }
        let (owned, child) = answer.recv().expect("the spawner thread answers");
        *cmd = owned;
        child
    }
}

/// Takes a free slot lock among `n`; when none is free, waits for one if `wait`.
fn take_slot(base: &Path, kind: &str, n: usize, wait: bool) -> Result<Option<LockGuard>> {
    let path = |i: usize| base.with_extension(format!("{kind}{i}"));
    for i in 0..n {
        if let Some(guard) = lockfile::try_lock(&path(i))? {
            return Ok(Some(guard));
        }
    }
    if !wait {
        return Ok(None);
    }
    let i = std::process::id() as usize % n;
    lockfile::lock(&path(i)).map(Some)
}

/// The ssh binary: `CODEX_REMOTE_SSH` (for odd installs), else `ssh` from PATH (`ssh.exe`, the
/// Windows OpenSSH client, on Windows).
pub fn ssh_program() -> String {
    let default = if cfg!(windows) { "ssh.exe" } else { "ssh" };
    std::env::var("CODEX_REMOTE_SSH")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.into())
}

/// The private directory for ControlMaster sockets; `None` turns reuse off (no safe place).
///
/// Unix socket paths are short (about 104 bytes), so a long home falls back to /tmp.
#[cfg(unix)]
pub fn control_dir() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("CODEX_REMOTE_CONTROL_DIR").map(PathBuf::from),
        std::env::var_os("XDG_RUNTIME_DIR").map(|d| PathBuf::from(d).join("codex-remote")),
        Some(crate::platform::cache_dir().join("codex-remote").join("cm")),
        Some(PathBuf::from(format!("/tmp/codex-remote-{}", rustix::process::getuid().as_raw()))),
    ];
    // %C expands to 40 hex characters.
    candidates
        .into_iter()
        .flatten()
        .find(|dir| dir.as_os_str().len() + 41 < 100 && private_dir_ok(dir))
}

/// Windows' OpenSSH has no ControlMaster (it needs Unix sockets): one connection per call.
#[cfg(not(unix))]
pub fn control_dir() -> Option<PathBuf> {
    None
}

/// Creates `dir` 0700 if needed; `false` when it cannot be ours and private.
#[cfg(unix)]
fn private_dir_ok(dir: &std::path::Path) -> bool {
    crate::platform::create_private_dir(dir).is_ok()
}

/// The outcome of [`run_captured`].
pub struct Captured {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs an ssh command to its end with stdout and stderr in temp files, not pipes: a
/// ControlPersist master forked by this call inherits them and would hold a pipe open for
/// minutes. `stdin` is a file to send, or nothing.
pub fn run_captured(cmd: Command, stdin: Option<std::fs::File>) -> Result<Captured> {
    run_connection(Connection::plain(cmd), stdin)
}

/// [`run_captured`] for a prepared connection, holding its locks while it runs.
fn run_connection(mut conn: Connection, stdin: Option<std::fs::File>) -> Result<Captured> {
    let cmd = &mut conn.command;
    let temp = || tempfile::tempfile().map_err(|e| Error::internal("creating a temp file", e));
    let (mut out, mut err) = (temp()?, temp()?);
    let clone = |f: &std::fs::File| f.try_clone().map_err(|e| Error::internal("temp file", e));
    cmd.stdin(stdin.map_or(std::process::Stdio::null(), std::process::Stdio::from));
    cmd.stdout(clone(&out)?).stderr(clone(&err)?);
    let spawned = spawn_tied(cmd);
    conn.started();
    let status = spawned.and_then(|mut child| super::deadline::wait_child(&mut child)).map_err(
        |e| match e.kind() {
            std::io::ErrorKind::TimedOut => {
                Error::new(ErrorCode::Timeout, format!("{} did not end in time", ssh_program()))
            }
            _ => Error::new(ErrorCode::SshFailed, format!("running {}: {e}", ssh_program())),
        },
    )?;
    Ok(Captured { code: status.code(), stdout: read_temp(&mut out), stderr: read_temp(&mut err) })
}

/// What a call wrote into a temp file (stdout or stderr kept out of pipes), from its start.
pub fn read_temp(file: &mut std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut text);
    text
}

/// Runs `remote` on the target with `stdin`; its stdout when it succeeds, else the failure.
pub fn run_remote(
    target: &SshTarget,
    remote: &str,
    stdin: Option<std::fs::File>,
) -> Result<String> {
    let out = run_connection(target.connect(remote, CallKind::Short)?, stdin)?;
    if out.code == Some(0) {
        return Ok(out.stdout);
    }
    Err(classify_failure(out.code, &out.stderr, true).0)
}

/// What a failed ssh call means, from its exit status and stderr.
pub fn classify_failure(exit: Option<i32>, stderr: &str, via_ssh: bool) -> (Error, bool) {
    let text = stderr.trim();
    // The last lines say what went wrong; earlier ones are login noise.
    let lines: Vec<&str> = text.lines().collect();
    let short = lines[lines.len().saturating_sub(6)..].join("\n");
    let not_found = exit == Some(127)
        || text.contains("command not found")
        || (text.contains("No such file or directory") && exit != Some(255));
    if not_found {
        let err = Error::new(
            ErrorCode::CodexdNotFound,
            format!("the remote codexd command is missing: {short}"),
        )
        .with_hint(
            "set `codexd: ~/.local/bin/codexd` (where `machine up` installs it) for the machine \
             in the config: that directory is often not on the PATH of `ssh HOST cmd`; if it \
             was never installed, run `codex-remote machine up --machine NAME` first",
        );
        return (err, false);
    }
    // 255 is ssh's own failure; from a local process or over HTTP it means nothing special.
    if via_ssh && exit == Some(255) {
        // Failures that another try within seconds will not mend: an unreachable or refusing
        // host fails at once, within ssh's ConnectTimeout, instead of after every retry.
        // ("Control socket connect(...): Connection refused" is only a stale master socket:
        // ssh goes on without it, so only `connect to host` lines count.)
        let unreachable = ["Connection refused", "timed out", "No route", "unreachable"];
        // A host that does not answer within ConnectTimeout ("Connection to H port P timed
        // out", "Connection timed out during banner exchange") will not answer on a retry either.
        let fatal = [
            "Permission denied",
            "Host key verification failed",
            "Could not resolve",
            "timed out during banner exchange",
        ]
        .iter()
        .any(|p| text.contains(p))
            || text.lines().any(|l| l.starts_with("Connection to ") && l.ends_with("timed out"))
            || text.lines().any(|l| {
                l.contains("connect to host") && unreachable.iter().any(|p| l.contains(p))
            });
        let message = if short.is_empty() { "ssh failed".to_string() } else { short };
        let mut err = Error::new(ErrorCode::SshFailed, message);
        if let Some(hint) = no_agent_hint(text, std::env::var_os("SSH_AUTH_SOCK").is_some()) {
            err = err.with_hint(hint);
        }
        return (err, !fatal);
    }
    let err = Error::new(
        ErrorCode::ProtocolError,
        format!(
            "codexd exited ({}) without answering: {short}",
            exit.map_or("signal".to_string(), |c| c.to_string())
        ),
    );
    (err, false)
}

/// The hint for a key refused while no ssh agent is reachable: the key is likely in an agent
/// that this process cannot see (Codex starts MCP servers without `SSH_AUTH_SOCK`).
fn no_agent_hint(stderr: &str, agent_socket_set: bool) -> Option<&'static str> {
    (!agent_socket_set && stderr.contains("Permission denied (publickey")).then_some(
        "SSH_AUTH_SOCK is not set, so ssh cannot use a key held in an ssh agent; pass it through \
         (Codex: `env_vars = [\"SSH_AUTH_SOCK\"]` in the MCP server's config, see \
         examples/codex-config.toml), or name a key file for the machine: \
         `ssh_args: [\"-i\", \"~/.ssh/KEY\"]`",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_key_without_an_agent_says_so() {
        let denied = "git@gpu1: Permission denied (publickey).";
        assert!(no_agent_hint(denied, false).unwrap().contains("SSH_AUTH_SOCK"));
        assert_eq!(no_agent_hint(denied, true), None);
        assert_eq!(no_agent_hint("Connection refused", false), None);
    }

    fn target(dest: &str) -> SshTarget {
        SshTarget {
            destination: dest.into(),
            ssh_args: vec![],
            codexd: "codexd".into(),
            data_dir: Some("~/my jobs".into()),
            control: false,
            connect_timeout_secs: DEFAULT_CONNECT_TIMEOUT_SECS,
            forward_agent: false,
        }
    }

    #[test]
    fn refuses_option_like_destinations() {
        assert_eq!(
            target("-oProxyCommand=touch /tmp/x").validate().unwrap_err().code,
            ErrorCode::ConfigError
        );
        assert!(target("gpu1").validate().is_ok());
        assert!(target("a b").validate().is_err());
    }

    #[test]
    fn remote_command_quotes_the_data_dir() {
        assert_eq!(target("h").remote_command(), "codexd rpc --data-dir '~/my jobs'");
    }

    #[test]
    fn classifies_failures() {
        assert_eq!(
            classify_failure(Some(127), "bash: codexd: command not found", true).0.code,
            ErrorCode::CodexdNotFound
        );
        let (e, retry) =
            classify_failure(Some(255), "user@h: Permission denied (publickey).", true);
        assert_eq!((e.code, retry), (ErrorCode::SshFailed, false));
        let (e, retry) = classify_failure(
            Some(255),
            "mux_client_request_session: session request failed: Session open refused by peer",
            true,
        );
        assert_eq!((e.code, retry), (ErrorCode::SshFailed, true));
        let refused = "ssh: connect to host 127.0.0.1 port 1: Connection refused";
        assert!(!classify_failure(Some(255), refused, true).1);
        let silent =
            "Connection timed out during banner exchange\nConnection to 10.0.0.1 port 22 timed out";
        assert!(!classify_failure(Some(255), silent, true).1);
        // A local codexd that exits 255 is not an ssh failure.
        let (e, retry) = classify_failure(Some(255), "", false);
        assert_eq!((e.code, retry), (ErrorCode::ProtocolError, false));
    }
}
