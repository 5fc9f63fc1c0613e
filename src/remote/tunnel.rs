//! `use_direct_addr: true`: one reusable local forward to the machine's `codexd serve`.
//!
//! Over the ControlMaster connection when there is one (`ssh -O forward`), else a detached
//! `ssh -N -L` of our own. The forward is remembered in `~/.cache/codex-remote/tunnels/` ([`super::cache`]) and
//! reused while its local end still answers.
//!
//! On Unix the local end is a socket file in that private 0700 dir
//! (`ssh -L DIR/NAME.sock:127.0.0.1:PORT`), spoken to by [`super::unix_http`]: no other user can
//! bind it, connect to it or put a file there, so nobody can sit in the path once the forward's
//! ssh dies. A remembered socket is reused only when it is a socket owned by us in that dir and
//! answers (and `/health` proves the token before anything is sent). On Windows the local end
//! is a loopback port: picked free, then bound by ssh with `ExitOnForwardFailure=yes`, so a
//! forward is never pointed at someone else's listener.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::cache::{self, CacheKind, RouteKey};
use super::config::MachineConfig;
use super::ssh::SshTarget;
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::DEFAULT_LISTEN;

/// Ports tried before giving up.
#[cfg(not(unix))]
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
    /// The local loopback port (Windows; `None` for a socket forward).
    #[serde(default)]
    pub local_port: Option<u16>,
    /// The local socket file (Unix).
    #[serde(default)]
    pub local_socket: Option<PathBuf>,
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

    /// The forward's local end: the remembered one while it answers, else a new forward.
    pub fn open(&self) -> Result<OpenForward> {
        if let Some(mut known) =
            cache::load::<OpenForward>(CacheKind::Tunnel, &self.machine, &self.route)
            && known.remote_port == self.remote_port
            && known.local().is_some_and(|end| end.answers())
        {
            known.reused = true;
            known.retry_count = 0;
            return Ok(known);
        }
        #[cfg(unix)]
        return self.open_socket();
        #[cfg(not(unix))]
        self.open_port()
    }

    /// A new forward to a socket file next to the cache entry (a stale one is replaced).
    #[cfg(unix)]
    fn open_socket(&self) -> Result<OpenForward> {
        let path = self.socket_path()?;
        if let Some(dir) = path.parent() {
            crate::platform::create_private_dir(dir)?;
        }
        let _ = std::fs::remove_file(&path);
        let end = LocalEnd::Socket(path.clone());
        let tunnel_pid = self.bind(&end)?.map_err(|(e, _)| e)?;
        let open = OpenForward {
            local_port: None,
            local_socket: Some(path),
            remote_port: self.remote_port,
            tunnel_pid,
            retry_count: 0,
            reused: false,
        };
        cache::save(CacheKind::Tunnel, &self.machine, &self.route, &open)?;
        Ok(open)
    }

    /// `<tunnels dir>/<name, cut short>-<route hash>.sock`: one socket per route (two configs
    /// may name a machine alike), short enough for a socket address (104 bytes on macOS).
    #[cfg(unix)]
    fn socket_path(&self) -> Result<PathBuf> {
        let json = cache::machine_file(CacheKind::Tunnel, &self.machine);
        let stem = json.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let route = serde_json::to_vec(&self.route).map_err(|e| Error::internal("encoding", e))?;
        let hash = blake3::hash(&route).to_hex();
        let name = format!("{}-{}.sock", stem.chars().take(24).collect::<String>(), &hash[..12]);
        let path = json.with_file_name(name);
        if path.as_os_str().len() > 100 {
            return Err(Error::new(
                ErrorCode::ConfigError,
                format!("the forward's socket path {} is too long for a socket", path.display()),
            )
            .with_hint("point XDG_CACHE_HOME (or HOME) at a shorter directory"));
        }
        Ok(path)
    }

    /// A new forward from a free loopback port, another one tried when it was taken meanwhile.
    #[cfg(not(unix))]
    fn open_port(&self) -> Result<OpenForward> {
        let mut last = None;
        for retry_count in 0..ATTEMPTS {
            let local_port = free_port()?;
            match self.bind(&LocalEnd::Port(local_port)).map_err(|e| (e, true)).and_then(|r| r) {
                Ok(tunnel_pid) => {
                    let open = OpenForward {
                        local_port: Some(local_port),
                        local_socket: None,
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

    /// Binds the local end to the remote port; returns the pid holding it. The outer
    /// error is final (ssh cannot reach the host: another local end will not help); the inner
    /// one is this end failing (a port maybe taken meanwhile), worth another port.
    fn bind(&self, end: &LocalEnd) -> Result<Result<Option<u32>, (Error, bool)>> {
        let spec = format!("{}:127.0.0.1:{}", end.spec(), self.remote_port);
        if let Some(forward) = self.ssh.master_forward_command(&spec) {
            // Start (or reuse) the master, then add the forward to it.
            super::ssh::run_remote(&self.ssh, "true", None)?;
            let out = super::ssh::run_captured(forward, None)?;
            if out.code == Some(0) && wait_end(end, None) {
                return Ok(Ok(self.master_pid()));
            }
            // A master of an older forward may hold the name: our own ssh binds it anew.
            #[cfg(unix)]
            let LocalEnd::Socket(path) = end;
            #[cfg(unix)]
            let _ = std::fs::remove_file(path);
        }
        let mut own = self.ssh.own_forward_command(&spec)?;
        own.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        detach(&mut own);
        let mut child = own.spawn().map_err(ssh_error)?;
        let pid = child.id();
        if wait_end(end, Some(&mut child)) {
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
            format!("ssh could not forward {} to the machine", end.spec()),
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

/// The local end of a forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalEnd {
    /// A loopback port (Windows).
    #[cfg(not(unix))]
    Port(u16),
    /// A socket file in our private tunnels dir (Unix).
    #[cfg(unix)]
    Socket(PathBuf),
}

impl OpenForward {
    /// Where the forward's local end is, if this entry names one this platform uses.
    pub fn local(&self) -> Option<LocalEnd> {
        #[cfg(unix)]
        return self.local_socket.clone().map(LocalEnd::Socket);
        #[cfg(not(unix))]
        self.local_port.map(LocalEnd::Port)
    }
}

impl LocalEnd {
    /// The local half of `ssh -L`.
    fn spec(&self) -> String {
        match self {
            #[cfg(not(unix))]
            LocalEnd::Port(port) => format!("127.0.0.1:{port}"),
            #[cfg(unix)]
            LocalEnd::Socket(path) => path.display().to_string(),
        }
    }

    /// The endpoint the HTTP door talks to: `127.0.0.1:PORT`, or `unix:PATH`
    /// ([`super::http`]).
    pub fn addr(&self) -> String {
        match self {
            #[cfg(not(unix))]
            LocalEnd::Port(port) => format!("127.0.0.1:{port}"),
            #[cfg(unix)]
            LocalEnd::Socket(path) => format!("unix:{}", path.display()),
        }
    }

    /// Whether it accepts a connection; a socket only when it is ours, in our private dir.
    fn answers(&self) -> bool {
        match self {
            #[cfg(not(unix))]
            LocalEnd::Port(port) => {
                use std::net::{SocketAddr, TcpStream};
                let addr = SocketAddr::from(([127, 0, 0, 1], *port));
                TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
            }
            #[cfg(unix)]
            LocalEnd::Socket(path) => {
                use std::os::unix::fs::{FileTypeExt, MetadataExt};
                let private = path.parent().is_some_and(|dir| {
                    dir == cache::machine_file(CacheKind::Tunnel, "").parent().unwrap_or(dir)
                        && crate::platform::create_private_dir(dir).is_ok()
                });
                let ours = std::fs::symlink_metadata(path).is_ok_and(|m| {
                    m.file_type().is_socket() && Some(m.uid()) == crate::platform::uid()
                });
                private && ours && std::os::unix::net::UnixStream::connect(path).is_ok()
            }
        }
    }
}

/// Waits until the local end accepts connections (or the ssh holding it exits).
fn wait_end(end: &LocalEnd, mut child: Option<&mut std::process::Child>) -> bool {
    let deadline = Instant::now() + OPEN_TIMEOUT;
    while Instant::now() < deadline {
        if end.answers() {
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

#[cfg(not(unix))]
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
