//! `use_direct_addr: true`: one reusable local forward to the machine's `codexd serve`.
//!
//! Over the ControlMaster connection when there is one (`ssh -O forward`), else a detached
//! `ssh -N -L` of our own. The forward is remembered in `~/.cache/codex-remote/tunnels/` and
//! reused while its port still answers. A port is picked free, then bound by ssh with
//! `ExitOnForwardFailure=yes`: if another process took it in between, ssh fails and another port
//! is tried, so a forward is never pointed at someone else's listener (and `/health` checks the
//! owner anyway).

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::MachineConfig;
use super::ssh::{SshTarget, control_dir};
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::DEFAULT_LISTEN;

/// Ports tried before giving up.
const ATTEMPTS: u32 = 5;
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a forward goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub machine: String,
    pub ssh: SshTarget,
    /// The remote `codexd serve` port (on the remote loopback).
    pub remote_port: u16,
}

/// An open forward, as remembered between calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenForward {
    pub local_port: u16,
    pub remote_port: u16,
    /// The ssh process that holds the forward (the master's, over a ControlMaster).
    pub tunnel_pid: Option<u32>,
    /// How many ports were tried before one was bound (0: the first, or reused).
    pub retry_count: u32,
    pub reused: bool,
}

impl Forward {
    pub fn of(ssh: &SshTarget, m: &MachineConfig) -> Result<Self> {
        let remote_port = match (m.daemon_port, &m.addr) {
            (Some(p), _) => p,
            (None, Some(addr)) => port_of(addr)?,
            (None, None) => port_of(DEFAULT_LISTEN)?,
        };
        Ok(Forward { machine: m.name.clone(), ssh: ssh.clone(), remote_port })
    }

    fn state_path(&self) -> PathBuf {
        let safe: String = (self.machine.chars())
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .collect();
        crate::platform::cache_dir()
            .join("codex-remote")
            .join("tunnels")
            .join(format!("{safe}.json"))
    }

    /// The forward's local port: the remembered one while it answers, else a new forward.
    pub fn open(&self) -> Result<OpenForward> {
        if let Ok(text) = std::fs::read_to_string(self.state_path())
            && let Ok(mut known) = serde_json::from_str::<OpenForward>(&text)
            && known.remote_port == self.remote_port
            && port_answers(known.local_port)
        {
            known.reused = true;
            known.retry_count = 0;
            return Ok(known);
        }
        let mut last = None;
        for retry_count in 0..ATTEMPTS {
            let local_port = free_port()?;
            match self.bind(local_port) {
                Ok(tunnel_pid) => {
                    let open = OpenForward {
                        local_port,
                        remote_port: self.remote_port,
                        tunnel_pid,
                        retry_count,
                        reused: false,
                    };
                    let path = self.state_path();
                    if let Some(dir) = path.parent() {
                        crate::platform::create_private_dir(dir)?;
                    }
                    crate::platform::write_json_atomic(&path, &open)?;
                    return Ok(open);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::new(ErrorCode::SshFailed, "no forward")))
    }

    /// Binds `127.0.0.1:local_port` to the remote port; returns the pid holding it.
    fn bind(&self, local_port: u16) -> Result<Option<u32>> {
        let spec = format!("127.0.0.1:{local_port}:127.0.0.1:{}", self.remote_port);
        if self.ssh.control && control_dir().is_some() {
            // Start (or reuse) the master, then add the forward to it.
            if super::ssh::run_remote(&self.ssh, "true", None).is_ok() {
                let cmd = self.ssh.command("true")?;
                // `-O forward` goes to the master; the trailing command is ignored.
                let args: Vec<_> = cmd.get_args().map(|a| a.to_os_string()).collect();
                let mut fwd = Command::new(cmd.get_program());
                let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
                fwd.args(&args[..split]);
                fwd.args(["-o", "ExitOnForwardFailure=yes", "-O", "forward", "-L", &spec]);
                fwd.args(&args[split..args.len() - 1]);
                let out = super::ssh::run_captured(fwd, None)?;
                if out.code == Some(0) && wait_port(local_port, None) {
                    let check = cmd_check(&args[..split], &args[split..args.len() - 1]);
                    return Ok(check);
                }
            }
        }
        let cmd = self.ssh.command("true")?;
        let args: Vec<_> = cmd.get_args().map(|a| a.to_os_string()).collect();
        let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
        let mut own = Command::new(cmd.get_program());
        own.args(&args[..split]);
        own.args(["-o", "ControlMaster=no", "-o", "ControlPath=none"]);
        own.args(["-o", "ExitOnForwardFailure=yes", "-N", "-L", &spec]);
        own.args(&args[split..args.len() - 1]);
        own.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        crate::platform::detach(&mut own);
        let mut child = own.spawn().map_err(ssh_error)?;
        let pid = child.id();
        if wait_port(local_port, Some(&mut child)) {
            // It lives on in its own session; the kernel re-parents it when we exit.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            return Ok(Some(pid));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(Error::new(
            ErrorCode::SshFailed,
            format!("ssh could not forward local port {local_port} to the machine"),
        ))
    }
}

fn ssh_error(e: std::io::Error) -> Error {
    Error::new(ErrorCode::SshFailed, format!("running ssh: {e}"))
}

/// The master's pid from `ssh -O check` ("Master running (pid=N)").
fn cmd_check(options: &[std::ffi::OsString], dest: &[std::ffi::OsString]) -> Option<u32> {
    let mut cmd = Command::new(super::ssh::ssh_program());
    cmd.args(options).args(["-O", "check"]).args(dest);
    let out = super::ssh::run_captured(cmd, None).ok()?;
    let rest = out.stderr.split("pid=").nth(1)?;
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

/// Waits until the local port accepts connections (or the ssh holding it exits).
fn wait_port(port: u16, mut child: Option<&mut std::process::Child>) -> bool {
    let deadline = Instant::now() + OPEN_TIMEOUT;
    while Instant::now() < deadline {
        if port_answers(port) {
            return true;
        }
        if let Some(c) = child.as_deref_mut()
            && c.try_wait().ok().flatten().is_some()
        {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

fn port_answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::internal("finding a free port", e))
}

/// The port of `host:port`.
pub fn port_of(addr: &str) -> Result<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| Error::new(ErrorCode::ConfigError, format!("{addr:?} is not host:port")))
}
