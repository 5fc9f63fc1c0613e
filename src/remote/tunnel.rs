//! `use_direct_addr: true`: one reusable local forward to the machine's `codexd serve`.
//!
//! Over the ControlMaster connection when there is one (`ssh -O forward`), else a detached
//! `ssh -N -L` of our own. The forward is remembered in `~/.cache/codex-remote/tunnels/` ([`super::cache`]) and
//! reused while its port still answers. A port is picked free, then bound by ssh with
//! `ExitOnForwardFailure=yes`: if another process took it in between, ssh fails and another port
//! is tried, so a forward is never pointed at someone else's listener (and `/health` checks the
//! owner anyway).

use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::cache::{self, CacheKind, RouteKey};
use super::config::MachineConfig;
use super::ssh::SshTarget;
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
    /// The machine's route identity: a forward remembered for another config is not reused.
    pub route: RouteKey,
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
    pub fn of(ssh: &SshTarget, m: &MachineConfig, route: RouteKey) -> Result<Self> {
        let remote_port = match (m.daemon_port, &m.host_port()?) {
            (Some(p), _) => p,
            (None, Some(addr)) => port_of(addr)?,
            (None, None) => port_of(DEFAULT_LISTEN)?,
        };
        Ok(Forward { machine: m.name.clone(), ssh: ssh.clone(), remote_port, route })
    }

    /// The forward's local port: the remembered one while it answers, else a new forward.
    pub fn open(&self) -> Result<OpenForward> {
        if let Some(mut known) =
            cache::load::<OpenForward>(CacheKind::Tunnel, &self.machine, &self.route)
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
            match self.bind(local_port).map_err(|e| (e, true)).and_then(|r| r) {
                Ok(tunnel_pid) => {
                    let open = OpenForward {
                        local_port,
                        remote_port: self.remote_port,
                        tunnel_pid,
                        retry_count,
                        reused: false,
                    };
                    cache::save(CacheKind::Tunnel, &self.machine, &self.route, &open)?;
                    return Ok(open);
                }
                Err((e, true)) => return Err(e),
                Err((e, false)) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::new(ErrorCode::SshFailed, "no forward")))
    }

    /// Binds `127.0.0.1:local_port` to the remote port; returns the pid holding it. The outer
    /// error is final (ssh cannot reach the host: another local port will not help); the inner
    /// one is this port failing (maybe taken meanwhile), worth another port.
    fn bind(&self, local_port: u16) -> Result<Result<Option<u32>, (Error, bool)>> {
        let spec = format!("127.0.0.1:{local_port}:127.0.0.1:{}", self.remote_port);
        if let Some(forward) = self.ssh.master_forward_command(&spec) {
            // Start (or reuse) the master, then add the forward to it.
            super::ssh::run_remote(&self.ssh, "true", None)?;
            let out = super::ssh::run_captured(forward, None)?;
            if out.code == Some(0) && wait_port(local_port, None) {
                return Ok(Ok(self.master_pid()));
            }
        }
        let mut own = self.ssh.own_forward_command(&spec)?;
        own.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        detach(&mut own);
        let mut child = own.spawn().map_err(ssh_error)?;
        let pid = child.id();
        if wait_port(local_port, Some(&mut child)) {
            // It lives on in its own session; the kernel re-parents it when we exit.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            return Ok(Ok(Some(pid)));
        }
        let _ = child.kill();
        let _ = child.wait();
        let err = Error::new(
            ErrorCode::SshFailed,
            format!("ssh could not forward local port {local_port} to the machine"),
        );
        Ok(Err((err, false)))
    }

    /// The master's pid from `ssh -O check` ("Master running (pid=N)").
    fn master_pid(&self) -> Option<u32> {
        let out = super::ssh::run_captured(self.ssh.master_check_command()?, None).ok()?;
        let rest = out.stderr.split("pid=").nth(1)?;
        rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
    }
}

fn ssh_error(e: std::io::Error) -> Error {
    Error::new(ErrorCode::SshFailed, format!("running ssh: {e}"))
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

/// Lets a child outlive this process and the terminal: a session of its own on Linux
/// (`setsid`, in `jobs::sys` with the crate's other unsafe calls), a process group of its own
/// elsewhere on Unix; on Windows a child is not ended with its parent anyway.
fn detach(cmd: &mut std::process::Command) {
    #[cfg(target_os = "linux")]
    crate::jobs::sys::start_new_session(cmd);
    #[cfg(all(unix, not(target_os = "linux")))]
    std::os::unix::process::CommandExt::process_group(cmd, 0);
    #[cfg(not(unix))]
    let _ = cmd;
}
