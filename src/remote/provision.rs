//! Whether a machine is ready (`machine check`) and making it ready (`machine up`): probe over
//! ssh, install codexd, start `codexd serve`, poll. The CLI, the dashboard and the MCP server
//! all call these.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::config::MachineConfig;
use super::install::LocalBuilds;
use super::machine::{Machine, Route};
use super::ssh::{SshTarget, run_remote};
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::{
    DoctorCheck, DoctorRequest, GpuReport, GpusRequest, HelloRequest, Request, Response, Scheduler,
    capability,
};
use crate::shell::shell_quote;

/// How long `up` waits for a started `serve` to answer.
const SERVE_START_TIMEOUT: Duration = Duration::from_secs(15);

/// What `machine check` prints.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub name: String,
    /// `ok` is `ssh_ok` (when ssh is used) and `daemon_ok`.
    pub ok: bool,
    /// `local`, `ssh` or `http`.
    pub transport: &'static str,
    /// `null` when the machine is not reached through ssh.
    pub ssh_ok: Option<bool>,
    pub daemon_ok: bool,
    pub latency_ms: Option<u64>,
    pub codexd_version: Option<String>,
    pub protocol: Option<u32>,
    pub user: Option<String>,
    /// HTTP machines: the remote `codexd serve` port (`daemon_port`, or the port of `addr`).
    pub daemon_port: Option<u16>,
    /// HTTP machines: the address calls go to (`addr`, or the local end of the forward).
    pub daemon_addr: Option<String>,
    /// Who runs the machine's jobs: `local` or `slurm`.
    pub scheduler: Option<Scheduler>,
    /// Slurm machines: whether the compute nodes share the job store (`doctor`'s
    /// `shared_store` check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_store: Option<DoctorCheck>,
    pub error: Option<String>,
    pub code: Option<ErrorCode>,
    pub checked_at: String,
    /// The machine's GPUs and the jobs holding them (a codexd with capability `gpus`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<GpuReport>,
}

impl CheckReport {
    /// A report that says only why the machine could not be checked.
    pub fn failed(name: &str, e: Error) -> Self {
        let mut report = CheckReport::new(name);
        report.error = Some(e.message);
        report.code = Some(e.code);
        report
    }

    fn new(name: &str) -> Self {
        CheckReport {
            name: name.to_string(),
            ok: false,
            transport: "local",
            ssh_ok: None,
            daemon_ok: false,
            latency_ms: None,
            codexd_version: None,
            protocol: None,
            user: None,
            daemon_port: None,
            daemon_addr: None,
            scheduler: None,
            shared_store: None,
            error: None,
            code: None,
            gpus: None,
            checked_at: crate::protocol::time::now_rfc3339(),
        }
    }
}

/// `daemon_ok` is `hello` answered (over `rpc` for ssh machines, after `/health` for HTTP ones).
pub fn check(config: &MachineConfig) -> CheckReport {
    check_on(config, None)
}

/// [`check`], its calls on a long-lived client's shared sessions when it passes them in.
pub fn check_on(
    config: &MachineConfig,
    sessions: Option<std::sync::Arc<dyn super::machine::SharedSessions>>,
) -> CheckReport {
    let mut report = CheckReport::new(&config.name);
    let machine = match Machine::from_config(config) {
        Ok(m) => match sessions {
            Some(sessions) => m.with_sessions(sessions),
            None => m,
        },
        Err(e) => return CheckReport::failed(&config.name, e),
    };
    if let Route::Http(h) = &machine.route {
        report.daemon_port = h
            .forward
            .as_ref()
            .map(|f| f.remote_port)
            .or_else(|| super::tunnel::port_of(&h.addr).ok());
        report.daemon_addr = match &h.forward {
            Some(_) => h.endpoint().ok().map(|(addr, _)| addr),
            None => Some(h.addr.clone()),
        };
    }
    let ssh = machine.ssh.clone();
    report.transport = machine.route.door();
    // Over `rpc` a working hello proves ssh too; HTTP machines probe ssh on its own.
    if let (Route::Http(_), Some(t)) = (&machine.route, &ssh) {
        report.ssh_ok = Some(ssh_probe(t).is_ok());
    }
    let started = Instant::now();
    // One call: the hello answer carries the GPUs (an older codexd leaves them out, below).
    let ask = HelloRequest { gpus: true, ..HelloRequest::default() };
    let hello = machine.call(&Request::Hello(ask), &mut |_| Ok(()));
    match hello {
        Ok(Response::Hello(mut h)) => {
            report.latency_ms = Some(started.elapsed().as_millis() as u64);
            report.daemon_ok = true;
            report.codexd_version = Some(h.version);
            report.protocol = Some(h.protocol);
            report.user = Some(h.user);
            report.scheduler = Some(h.scheduler);
            if matches!(machine.route, Route::Ssh(_)) {
                report.ssh_ok = Some(true);
            }
            if h.scheduler == Scheduler::Slurm {
                report.shared_store = Some(shared_store(&machine));
            }
            report.gpus = match h.gpus.take() {
                Some(gpus) => Some(gpus),
                None => gpu_report(&machine, &h.capabilities),
            };
        }
        Ok(_) => report.error = Some("hello was answered with something else".into()),
        Err(e) => {
            if matches!(machine.route, Route::Ssh(_)) {
                report.ssh_ok = Some(e.code != ErrorCode::SshFailed);
            }
            report.error = Some(e.message);
            report.code = Some(e.code);
        }
    }
    let store_ok = report.shared_store.as_ref().is_none_or(|c| c.ok || !c.required);
    report.ok = report.daemon_ok && report.ssh_ok != Some(false) && store_ok;
    report
}

/// How long `check` waits for a Slurm machine's probe job (a queued one is read next time).
const SHARED_STORE_WAIT: Duration = Duration::from_secs(5);

/// `doctor`'s `shared_store` check of a Slurm machine.
fn shared_store(machine: &Machine) -> DoctorCheck {
    let request = Request::Doctor(DoctorRequest {
        timeout_ms: Some(SHARED_STORE_WAIT.as_millis() as u64),
        checks: vec!["shared_store".into()],
    });
    let failed = |detail: String| DoctorCheck {
        name: "shared_store".into(),
        ok: false,
        required: true,
        detail,
        hint: Some("run `codex-remote exec doctor` for the whole report".into()),
    };
    match machine.call(&request, &mut |_| Ok(())) {
        Ok(Response::Doctor(mut report)) => {
            report.checks.pop().unwrap_or_else(|| failed("codexd did not run the check".into()))
        }
        Ok(_) => failed("doctor was answered with something else".into()),
        Err(e) => failed(e.message),
    }
}

/// The machine's GPUs, when its codexd can tell (capability `gpus`) and answers.
pub fn gpu_report(machine: &Machine, capabilities: &[String]) -> Option<GpuReport> {
    if !capabilities.iter().any(|c| c == capability::GPUS) {
        return None;
    }
    match machine.call(&Request::Gpus(GpusRequest {}), &mut |_| Ok(())) {
        Ok(Response::Gpus(gpus)) => Some(gpus),
        _ => None,
    }
}

fn ssh_probe(t: &SshTarget) -> Result<String> {
    run_remote(t, "true", None)
}

/// What `machine up` prints.
#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    pub name: String,
    pub ok: bool,
    /// The last stage reached: `config`, `ssh`, `install`, `serve`, `verify`, `ready`.
    pub stage: &'static str,
    pub message: String,
    pub hint: Option<String>,
    /// codexd was installed (or upgraded) by this run.
    pub installed: bool,
    /// `codexd serve` was started by this run.
    pub started: bool,
    pub codexd_version: Option<String>,
    pub codexd_path: Option<String>,
}

/// Makes the machine ready; running it again changes nothing. `on_stage` hears each stage as
/// it begins (`ssh`, `install`, `serve`, `verify`).
pub fn up(config: &MachineConfig, on_stage: &mut dyn FnMut(&'static str)) -> UpReport {
    let mut report = UpReport {
        name: config.name.clone(),
        ok: false,
        stage: "config",
        message: String::new(),
        hint: None,
        installed: false,
        started: false,
        codexd_version: None,
        codexd_path: None,
    };
    if let Err(e) = up_stages(config, &mut report, on_stage) {
        report.ok = false;
        report.message = e.message;
        report.hint = e.hint;
    }
    report
}

fn up_stages(
    config: &MachineConfig,
    report: &mut UpReport,
    on_stage: &mut dyn FnMut(&'static str),
) -> Result<()> {
    let mut enter = |report: &mut UpReport, stage: &'static str| {
        report.stage = stage;
        on_stage(stage);
    };
    let machine = Machine::from_config(config)?;
    if let Route::Local { .. } = machine.route {
        report.ok = true;
        report.stage = "ready";
        report.message = "the local machine runs the codexd next to codex-remote".into();
        return Ok(());
    }
    let ssh = machine.ssh.clone().ok_or_else(|| {
        Error::new(ErrorCode::ConfigError, "machine up needs `ssh:` to reach the machine")
    })?;
    let install_dir = config.install_dir.clone().unwrap_or_else(|| "~/.local/bin".to_string());
    let installed_path = format!("{}/codexd", install_dir.trim_end_matches('/'));
    // The command that is checked: the configured one, else the install location.
    let codexd_cmd = config.codexd.clone().unwrap_or_else(|| installed_path.clone());
    report.codexd_path = Some(codexd_cmd.clone());

    enter(report, "ssh");
    let probe = format!(
        "uname -s; uname -m; {} --version 2>/dev/null || echo missing",
        remote_word(&codexd_cmd)
    );
    let out = run_remote(&ssh, &probe, None)?;
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let (os, arch, version_line) = match lines.as_slice() {
        [os, arch, .., last] => (*os, *arch, *last),
        _ => return Err(Error::new(ErrorCode::ProtocolError, format!("unexpected probe: {out}"))),
    };
    // `codexd 0.1.0 (commit …, protocol 1, …)`: the version is the word after the name, as
    // `machine up` reports it after installing (one format either way).
    let remote_version = (version_line.strip_prefix("codexd "))
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_string);
    let local_version = env!("CARGO_PKG_VERSION");

    enter(report, "install");
    let mut current = remote_version
        .as_deref()
        .is_some_and(|v| crate::version::compare(v, local_version).is_ge());
    // Not at the install location, but the machine's own route already reaches a current
    // codexd (on its PATH, say): nothing to install.
    let mut remote_version = remote_version;
    if !current
        && matches!(machine.route, Route::Ssh(_))
        && let Ok(Response::Hello(hello)) =
            machine.call(&Request::Hello(HelloRequest::default()), &mut |_| Ok(()))
        && crate::version::compare(&hello.version, local_version).is_ge()
    {
        current = true;
        remote_version = Some(hello.version);
        report.codexd_path = Some(config.codexd.clone().unwrap_or_else(|| "codexd".into()));
    }
    if !current {
        // The static dist/ build when there is one (old servers), else this build's own.
        let binary = crate::remote::install::codexd_for(os, arch, &LocalBuilds::current())?;
        let script = format!(
            "set -e; d={dir}; mkdir -p \"$d\"; t=\"$d/.codexd.tmp.$$\"; cat > \"$t\"; \
             chmod 755 \"$t\"; mv -f \"$t\" \"$d/codexd\"; \"$d/codexd\" --version",
            dir = remote_word(&install_dir)
        );
        let file = std::fs::File::open(&binary)
            .map_err(|e| Error::internal(format!("opening {}", binary.display()), e))?;
        run_remote(&ssh, &script, Some(file))?;
        report.installed = true;
    }
    report.codexd_version = Some(local_version.to_string()).filter(|_| !current).or(remote_version);
    if report.installed && config.codexd.as_deref() != Some(installed_path.as_str()) {
        report.hint = Some(format!(
            "codexd was installed as {installed_path}; set `codexd: {installed_path}` for the \
             machine unless that dir is on the PATH of `ssh HOST cmd`"
        ));
    }

    if let Route::Http(h) = &machine.route {
        enter(report, "serve");
        let hello = Request::Hello(HelloRequest::default());
        // One probe, without the transport's retries: a serve that is not running is the
        // common case here.
        let running = h.endpoint().is_ok_and(|(addr, _)| h.health(&addr, None).is_ok());
        if !running || machine.call(&hello, &mut |_| Ok(())).is_err() {
            let listen = match &h.forward {
                Some(f) => format!("127.0.0.1:{}", f.remote_port),
                None => h.addr.clone(),
            };
            let start = match &config.daemon_cmd {
                Some(cmd) => cmd.clone(),
                None => serve_command(&codexd_cmd, config.data_dir.as_deref(), &listen),
            };
            run_remote(&ssh, &start, None)?;
            report.started = true;
            let deadline = Instant::now() + SERVE_START_TIMEOUT;
            let mut last = None;
            while Instant::now() < deadline {
                match machine.call(&hello, &mut |_| Ok(())) {
                    Ok(_) => {
                        last = None;
                        break;
                    }
                    Err(e) if matches!(e.code, ErrorCode::ConnectFailed | ErrorCode::SshFailed) => {
                        last = Some(e)
                    }
                    Err(e) => return Err(e),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Some(e) = last {
                return Err(e.with_hint("see serve.log in the machine's data dir"));
            }
        }
    }
    // Ready means a call through the machine's own route works: a codexd installed where that
    // route does not find it is not ready.
    if let Route::Ssh(_) = &machine.route {
        enter(report, "verify");
        let hello = Request::Hello(HelloRequest::default());
        if let Err(e) = machine.call(&hello, &mut |_| Ok(())) {
            return Err(match e.code {
                ErrorCode::CodexdNotFound => Error::new(
                    ErrorCode::CodexdNotFound,
                    format!(
                        "codexd is at {codexd_cmd} on {}, but calls run `{}`, which is not found \
                         there",
                        config.name,
                        config.codexd.as_deref().unwrap_or("codexd")
                    ),
                )
                .with_hint(format!(
                    "add `codexd: {codexd_cmd}` to machine {:?} in the config (or put {install_dir} \
                     on the PATH of `ssh HOST cmd`), then run machine up again",
                    config.name
                )),
                _ => e,
            });
        }
    }
    report.stage = "ready";
    report.ok = true;
    report.message = match (report.installed, report.started) {
        (false, false) => "already up to date; nothing changed".to_string(),
        (true, false) => "codexd installed".to_string(),
        (false, true) => "codexd serve started".to_string(),
        (true, true) => "codexd installed and serve started".to_string(),
    };
    Ok(())
}

/// `setsid CODEXD serve ... &`, detached from the ssh session, its output in serve.log.
fn serve_command(codexd: &str, data_dir: Option<&str>, listen: &str) -> String {
    let dir = remote_word(data_dir.unwrap_or("~/.codexd"));
    let data_flag = data_dir.map(|_| format!(" --data-dir {dir}")).unwrap_or_default();
    format!(
        "umask 077 && mkdir -p {dir} && chmod 700 {dir} && {{ setsid {codexd} serve{data_flag} \
         --listen {listen} </dev/null >>{dir}/serve.log 2>&1 & }}",
        codexd = remote_word(codexd),
        listen = shell_quote(listen)
    )
}

/// A path for the remote shell: `~/x` becomes `"$HOME"/'x'`, anything else is quoted.
fn remote_word(path: &str) -> String {
    match path.strip_prefix("~/") {
        Some(rest) => format!("\"$HOME\"/{}", shell_quote(rest)),
        None if path == "~" => "\"$HOME\"".to_string(),
        None => shell_quote(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths_keep_the_home_unquoted() {
        assert_eq!(remote_word("~/.local/bin"), "\"$HOME\"/'.local/bin'");
        assert_eq!(remote_word("/opt/x y"), "'/opt/x y'");
    }
}
