//! `codexd serve`: one long-lived process per data dir that answers over HTTP ([`super::http`])
//! on loopback TCP and on a 0600 Unix socket.
//!
//! It holds a flock on `<data_dir>/serve.lock` (a second `serve` says one is running), writes
//! `<data_dir>/serve.json` (pid, address, socket; for people and scripts on the server: which
//! `serve` runs and where; codex-remote does not read it), and stops gracefully on
//! SIGTERM/SIGINT. Jobs are the same files as in `rpc` mode and run in their own workers, so
//! stopping or killing `serve` never stops a job.

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::http::{self, Door, HttpState, Listener};
use super::{Daemon, DaemonConfig};
use crate::error::{Context, Error, ErrorCode, Result, exit};
use crate::jobs::store::write_json_atomic;
use crate::jobs::sys;

/// How long in-flight requests get after SIGTERM before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The `serving` line printed on stdout and kept in `<data_dir>/serve.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeInfo {
    #[serde(rename = "type")]
    pub kind: String,
    pub pid: i32,
    pub listen: String,
    pub unix_socket: Option<String>,
    pub version: String,
    pub user: String,
}

pub use crate::protocol::TokenInfo;

/// The token: `auth_token` from the config, else `<data_dir>/token`, generated (0600) if missing.
pub fn token(config: &DaemonConfig) -> Result<TokenInfo> {
    let token = match &config.auth_token {
        Some(t) => t.clone(),
        None => load_or_create_token(&config.data_dir.join("token"))?,
    };
    Ok(TokenInfo { token, user: sys::user_name(), uid: rustix::process::getuid().as_raw() })
}

fn load_or_create_token(path: &Path) -> Result<String> {
    if let Ok(text) = std::fs::read_to_string(path)
        && !text.trim().is_empty()
    {
        return Ok(text.trim().to_string());
    }
    if let Some(dir) = path.parent() {
        crate::jobs::store::create_private_dir(dir)?;
    }
    let token = crate::auth::random_token()?;
    // create_new: two racing first runs cannot each believe their own token.
    match crate::platform::write_new_file(path, token.as_bytes(), 0o600) {
        Ok(()) => {
            // The name made durable too: a token answered is a token a restart finds.
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            crate::platform::sync_dir(dir).context(|| format!("writing {}", path.display()))?;
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text =
                std::fs::read_to_string(path).context(|| format!("reading {}", path.display()))?;
            Ok(text.trim().to_string())
        }
        Err(e) => Err(Error::internal(format!("creating {}", path.display()), e)),
    }
}

/// Runs `codexd serve` until SIGTERM/SIGINT.
pub fn run(config: DaemonConfig) -> Result<u8> {
    let daemon = Arc::new(Daemon::new(config.clone())?);
    let _lock = lock_data_dir(&config.data_dir)?;
    let token = token(&config)?.token;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context(|| "starting the tokio runtime".into())?;
    let stopping = Arc::new(AtomicBool::new(false));
    let result = runtime.block_on(serve_until_signal(&config, daemon, token, stopping.clone()));
    // Blocking handlers see `stopping` and end; do not wait for them past the grace.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Some(sock) = &config.unix_socket {
        let _ = std::fs::remove_file(sock);
    }
    let _ = std::fs::remove_file(config.data_dir.join("serve.json"));
    result.map(|()| exit::OK)
}

async fn serve_until_signal(
    config: &DaemonConfig,
    daemon: Arc<Daemon>,
    token: String,
    stopping: Arc<AtomicBool>,
) -> Result<()> {
    let unix = match &config.unix_socket {
        Some(path) => Some(bind_unix(path)?),
        None => None,
    };
    let tcp = tokio::net::TcpListener::bind(&config.listen).await.map_err(|e| {
        Error::new(ErrorCode::ConfigError, format!("cannot listen on {}: {e}", config.listen))
            .with_hint("another process holds the port; choose another `listen` address")
    })?;
    let local = tcp.local_addr().context(|| "reading the bound address".into())?;
    if !local.ip().is_loopback() {
        eprintln!("codexd serve: warning: listening on {local}, which is not a loopback address");
    }
    let mut allowed_hosts = config.allowed_hosts.clone();
    allowed_hosts.push(local.ip().to_string());
    let nonces = Arc::new(crate::auth::Nonces::default());
    let tcp_state = Arc::new(HttpState {
        daemon: daemon.clone(),
        token: token.clone(),
        nonces: nonces.clone(),
        door: Door::Tcp { allowed_hosts },
        stopping: stopping.clone(),
    });
    let info = ServeInfo {
        kind: "serving".to_string(),
        pid: sys::current_pid(),
        listen: local.to_string(),
        unix_socket: config.unix_socket.as_ref().map(|p| p.display().to_string()),
        version: env!("CARGO_PKG_VERSION").to_string(),
        user: sys::user_name(),
    };
    write_json_atomic(&config.data_dir.join("serve.json"), &info)?;
    crate::wire::write_line(&mut std::io::stdout(), &info)
        .context(|| "writing the serving line".into())?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(http::serve(Listener::Tcp(tcp), tcp_state, stopped()));
    if let Some(unix) = unix {
        let stopping = stopping.clone();
        let unix_state = Arc::new(HttpState { daemon, token, nonces, door: Door::Unix, stopping });
        servers.spawn(http::serve(Listener::Unix(unix), unix_state, stopped()));
    }

    let signal = wait_for_signal();
    tokio::pin!(signal);
    tokio::select! {
        name = &mut signal => {
            eprintln!("codexd serve: {name}: stopping");
        }
        Some(ended) = servers.join_next() => {
            let _ = stop_tx.send(true);
            return match ended {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Error::internal("serving", e)),
                Err(e) => Err(Error::internal("serving", e)),
            };
        }
    }
    stopping.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while servers.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        eprintln!("codexd serve: requests still open after {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    Ok(())
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Takes `<data_dir>/serve.lock` for the life of the process; a second `serve` is refused.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File> {
    let path = data_dir.join("serve.lock");
    let mut file = crate::platform::private_file_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(Error::new(
                ErrorCode::Internal,
                format!(
                    "codexd serve is already running for {} (pid {})",
                    data_dir.display(),
                    pid.trim()
                ),
            )
            .with_hint("stop it first (kill -TERM PID), or use another data_dir"));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(Error::internal(format!("locking {}", path.display()), e));
        }
    }
    file.set_len(0).context(|| "truncating serve.lock".into())?;
    write!(file, "{}", sys::current_pid()).context(|| "writing serve.lock".into())?;
    Ok(file)
}

/// Binds the Unix socket 0600 from birth: created under umask 0177, so no other user can ever
/// connect, even for an instant. A stale socket (we hold the serve lock) is replaced.
fn bind_unix(path: &PathBuf) -> Result<tokio::net::UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::new(
                ErrorCode::ConfigError,
                format!("unix_socket {} exists and is not a socket", path.display()),
            ));
        }
        std::fs::remove_file(path).context(|| format!("removing stale {}", path.display()))?;
    }
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        crate::jobs::store::create_private_dir(dir)?;
    }
    let listener = sys::with_umask(0o177, || std::os::unix::net::UnixListener::bind(path))
        .context(|| format!("binding {}", path.display()))?;
    listener.set_nonblocking(true).context(|| "setting the socket non-blocking".into())?;
    tokio::net::UnixListener::from_std(listener).context(|| "registering the socket".into())
}
