//! `codex-remote dashboard`: one page, served by this process, showing every machine and job.
//!
//! The page (`dashboard/page.html`, `app.js`, `app.css`) is embedded in the binary. Its JSON API
//! calls the machines through the same [`Machine::call`] as the `exec` commands, on tokio's
//! blocking pool, over one shared session per machine ([`crate::remote::mux`]); job output
//! reaches the page as server-sent events fed by offset-based reads of `exec_logs` (`jobs.rs`). What keeps a browser's other tabs out is in `guard.rs`.

mod guard;
mod jobs;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Args;
use serde::Serialize;

use super::{Ctx, emit};
use crate::error::{Error, ErrorCode, Result, exit};
use crate::remote::config::{LOCAL, MachineConfig, RemoteConfig};
use crate::remote::machine::{Machine, SharedSessions};
use crate::remote::mux::SessionPool;

const PAGE: &str = include_str!("dashboard/page.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

/// How often every machine is checked in the background.
const CHECK_EVERY: Duration = Duration::from_secs(15);

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Where to listen. Every request needs the token of the printed URL (then a cookie).
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Open the page (the URL with the token) in the default browser.
    #[arg(long)]
    open: bool,
}

/// Everything the handlers share.
pub struct Dashboard {
    config: RemoteConfig,
    /// The configured machines, and `local`.
    machines: Vec<MachineConfig>,
    guard: guard::Guard,
    health: Mutex<BTreeMap<String, MachineHealth>>,
    /// The pages' polling goes on one shared session per machine, not one ssh session a read.
    sessions: Arc<SessionPool>,
}

/// What the page shows for one machine.
#[derive(Debug, Clone, Default, Serialize)]
struct MachineHealth {
    name: String,
    /// The last check (`machine check`'s report), `null` before the first one ends.
    check: Option<serde_json::Value>,
    checking: bool,
    /// The last or running `machine up`.
    up: Option<UpProgress>,
}

#[derive(Debug, Clone, Serialize)]
struct UpProgress {
    running: bool,
    started_at: String,
    /// `machine up`'s report once it has ended.
    report: Option<serde_json::Value>,
}

impl Dashboard {
    /// A dashboard for `config` that will be reached at `addr` (the bound address).
    pub fn new(config: RemoteConfig, addr: SocketAddr) -> Result<Arc<Self>> {
        let mut machines = config.machines.clone();
        if !machines.iter().any(|m| m.name == LOCAL) {
            machines.insert(0, MachineConfig { name: LOCAL.to_string(), ..Default::default() });
        }
        let health = machines
            .iter()
            .map(|m| (m.name.clone(), MachineHealth { name: m.name.clone(), ..Default::default() }))
            .collect();
        Ok(Arc::new(Dashboard {
            config,
            machines,
            guard: guard::Guard::new(addr)?,
            health: Mutex::new(health),
            sessions: SessionPool::new(),
        }))
    }

    /// The URL to open, with the token.
    pub fn url(&self) -> String {
        self.guard.url()
    }

    fn machine(&self, name: &str) -> Result<Machine> {
        let config = self.machine_config(name)?;
        Ok(Machine::from_config(&config)?.with_sessions(self.sessions.clone()))
    }

    fn machine_config(&self, name: &str) -> Result<MachineConfig> {
        self.config.machine(Some(name))
    }

    fn update_health(&self, name: &str, change: impl FnOnce(&mut MachineHealth)) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = health.get_mut(name) {
            change(h);
        }
    }
}

/// `codex-remote dashboard`: binds, prints the URL, serves until Ctrl-C.
pub fn run(ctx: &Ctx, args: DashboardArgs) -> Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal("starting the async runtime", e))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| {
            Error::new(ErrorCode::Usage, format!("cannot listen on {}: {e}", args.listen))
        })?;
        let addr = listener.local_addr().map_err(|e| Error::internal("reading the address", e))?;
        let dashboard = Dashboard::new(ctx.config.clone(), addr)?;
        let url = dashboard.url();
        crate::error::stderr_line(&format!("codex-remote: dashboard at {url} (Ctrl-C stops it)"));
        emit(&serde_json::json!({ "type": "listening", "url": url }))?;
        let opened = if args.open { open_browser(&url, addr.port()) } else { None };
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let served = serve(listener, dashboard, shutdown).await;
        if let Some(page) = opened {
            let _ = std::fs::remove_file(page);
        }
        served
    })?;
    Ok(exit::OK)
}

/// Serves the dashboard on an already bound listener until `shutdown` completes, with the
/// header time-out and connection caps of [`crate::http_accept`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    dashboard: Arc<Dashboard>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let checker = tokio::spawn(check_forever(dashboard.clone()));
    let listener = crate::http_accept::Listener::Tcp(listener);
    let served =
        crate::http_accept::serve("codex-remote dashboard", listener, router(dashboard), shutdown)
            .await
            .map_err(|e| Error::internal("serving the dashboard", e));
    checker.abort();
    served
}

fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/api/machines", get(machines))
        .route("/api/machines/{name}/up", post(machine_up))
        .route("/api/jobs", get(jobs::list).post(jobs::start))
        .route("/api/jobs/{machine}/{id}", get(jobs::status))
        .route("/api/jobs/{machine}/{id}/cancel", post(jobs::cancel))
        .route("/api/jobs/{machine}/{id}/logs", get(jobs::logs))
        .layer(axum::middleware::from_fn_with_state(dashboard.clone(), guard::check))
        .with_state(dashboard)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The page, with this process's secret in a meta tag: only a page served here can read it.
async fn page(State(d): State<Arc<Dashboard>>) -> Response {
    let html = PAGE.replace("{{SECRET}}", d.guard.secret());
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

async fn machines(State(d): State<Arc<Dashboard>>) -> Response {
    let health = d.health.lock().unwrap_or_else(|e| e.into_inner());
    let list: Vec<MachineHealth> =
        d.machines.iter().filter_map(|m| health.get(&m.name).cloned()).collect();
    axum::Json(serde_json::json!({ "machines": list })).into_response()
}

/// Starts `machine up` in the background; the page sees its progress in `/api/machines`.
async fn machine_up(State(d): State<Arc<Dashboard>>, Path(name): Path<String>) -> Response {
    let config = match d.machine_config(&name) {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    let mut already = false;
    d.update_health(&name, |h| {
        already = h.up.as_ref().is_some_and(|u| u.running);
        if !already {
            h.up = Some(UpProgress {
                running: true,
                started_at: crate::protocol::time::now_rfc3339(),
                report: None,
            });
        }
    });
    if !already {
        let d = d.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let up_name = name.clone();
            let sessions = d.sessions.clone();
            let report = blocking(move || {
                let report = machine_up_report(&config);
                // The next calls go to the codexd that `up` may have replaced.
                sessions.close(&up_name);
                Ok(report)
            })
            .await;
            let report =
                report.unwrap_or_else(|e| serde_json::json!({"ok": false, "message": e.message}));
            d.update_health(&name, |h| {
                if let Some(up) = &mut h.up {
                    up.running = false;
                    up.report = Some(report);
                }
            });
            check_one(&d, &name).await;
        });
    }
    (StatusCode::ACCEPTED, axum::Json(serde_json::json!({ "type": "up_started", "name": name })))
        .into_response()
}

/// Checks every machine now and then, all at once.
async fn check_forever(d: Arc<Dashboard>) {
    loop {
        let names: Vec<String> = d.machines.iter().map(|m| m.name.clone()).collect();
        let checks: Vec<_> = names
            .into_iter()
            .map(|name| {
                let d = d.clone();
                tokio::spawn(async move { check_one(&d, &name).await })
            })
            .collect();
        for c in checks {
            let _ = c.await;
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

async fn check_one(d: &Arc<Dashboard>, name: &str) {
    let Ok(config) = d.machine_config(name) else { return };
    d.update_health(name, |h| h.checking = true);
    let sessions = d.sessions.clone();
    let report = blocking(move || Ok(machine_check_report(&config, sessions))).await;
    let report = report.unwrap_or_else(|e| serde_json::json!({"ok": false, "error": e.message}));
    d.update_health(name, |h| {
        h.checking = false;
        h.check = Some(report);
    });
}

/// `machine check`'s report as JSON.
fn machine_check_report(config: &MachineConfig, sessions: Arc<SessionPool>) -> serde_json::Value {
    let report = crate::remote::provision::check_on(config, Some(sessions));
    serde_json::to_value(report).unwrap_or_default()
}

/// `machine up`'s report as JSON: the last stage reached, its message and hint.
fn machine_up_report(config: &MachineConfig) -> serde_json::Value {
    serde_json::to_value(crate::remote::provision::up(config, &mut |_| {})).unwrap_or_default()
}

/// Runs a blocking transport call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal("a dashboard worker thread", e))?
}

/// An error as the JSON the page shows, with an HTTP status that fits its code.
fn error_response(e: &Error) -> Response {
    let status =
        StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(crate::protocol::ErrorBody::object(e))).into_response()
}

/// Opens the dashboard in the desktop's browser (`$BROWSER` if set, else the platform's opener)
/// without the token in any argv (which every user reads in `/proc/*/cmdline`): the opener gets
/// a 0600 page in a 0700 dir of ours that redirects to `url`, as Jupyter does. The opener is
/// waited for (no zombie). Returns the page, removed when the dashboard stops; failing to open is
/// not an error (the URL is printed).
fn open_browser(url: &str, port: u16) -> Option<std::path::PathBuf> {
    let dir = crate::platform::cache_dir().join("codex-remote").join("dashboard");
    let page = dir.join(format!("open-{port}.html"));
    let escaped = url.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;");
    let html = format!(
        "<!DOCTYPE html>\n<meta charset=\"utf-8\">\n<meta http-equiv=\"refresh\" \
         content=\"0; url={escaped}\">\n<title>codex-remote dashboard</title>\n\
         <p><a href=\"{escaped}\">Open the dashboard</a></p>\n"
    );
    let written = crate::platform::create_private_dir(&dir)
        .and_then(|()| crate::platform::write_bytes_atomic(&page, html.as_bytes()));
    if let Err(e) = written {
        crate::error::stderr_line(&format!(
            "codex-remote: could not write {}: {e}; open the URL yourself",
            page.display()
        ));
        return None;
    }
    let target = if cfg!(windows) { page.display().to_string() } else { file_url(&page) };
    let (opener, args): (String, &[&str]) = match std::env::var("BROWSER") {
        Ok(b) if !b.is_empty() => (b, &[]),
        _ if cfg!(windows) => ("cmd".into(), &["/C", "start", ""]),
        _ if cfg!(target_os = "macos") => ("open".into(), &[]),
        _ => ("xdg-open".into(), &[]),
    };
    let spawned = std::process::Command::new(&opener)
        .args(args)
        .arg(&target)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match spawned {
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
        }
        Err(e) => crate::error::stderr_line(&format!(
            "codex-remote: could not run {opener}: {e}; open the URL yourself"
        )),
    }
    Some(page)
}

/// `file://` and the path, its bytes other than unreserved ones and `/` percent-encoded.
fn file_url(path: &std::path::Path) -> String {
    let mut out = String::from("file://");
    for b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(b) {
            out.push(*b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
