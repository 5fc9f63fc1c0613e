//! `codex-remote machine check|ls|up|ssh`: is a machine ready, make it ready, or log into it.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::Serialize;

use super::exec::MachineArg;
use super::{Ctx, emit, usage};
use crate::error::{Error, ErrorCode, Result, exit};
use crate::protocol::{HelloRequest, Request, Response};
use crate::remote::config::MachineConfig;
use crate::remote::install::LocalBuilds;
use crate::remote::ssh::{SshTarget, run_remote};
use crate::remote::transport::{Machine, Route};
use crate::shell::shell_quote;

/// How long `up` waits for a started `serve` to answer.
const SERVE_START_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Subcommand)]
pub enum MachineCommand {
    /// Check that ssh works and codexd answers; prints a report (exit 0 when it could).
    Check(CheckArgs),
    /// Check every configured machine in parallel (a table on a terminal, JSON with --json).
    Ls(LsArgs),
    /// Install or upgrade codexd through ssh and, for HTTP machines, start `codexd serve`.
    Up(UpArgs),
    /// Run a command on the machine with agent forwarding and exit with its exit code.
    Ssh(SshArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    machine: MachineArg,
    /// Exit 1 when the machine is not ok.
    #[arg(long)]
    strict: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// JSON even on a terminal.
    #[arg(long)]
    json: bool,
    /// Exit 1 when a machine is not ok.
    #[arg(long)]
    strict: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    machine: MachineArg,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    #[command(flatten)]
    machine: MachineArg,
    /// The command to run (by the remote login shell).
    #[arg(long)]
    cmd: String,
    /// Allocate a terminal (for interactive commands).
    #[arg(long)]
    tty: bool,
}

pub fn run(ctx: &Ctx, cmd: MachineCommand) -> Result<u8> {
    match cmd {
        MachineCommand::Check(args) => {
            let config = ctx.config.machine(args.machine.machine.as_deref())?;
            let report = check(&config);
            emit(&report);
            Ok(if args.strict && !report.ok { exit::JOB_FAILED } else { exit::OK })
        }
        MachineCommand::Ls(args) => ls(ctx, args),
        MachineCommand::Up(args) => {
            let config = ctx.config.machine(args.machine.machine.as_deref())?;
            let report = up(&config);
            emit(&report);
            Ok(if report.ok { exit::OK } else { exit::TRANSPORT })
        }
        MachineCommand::Ssh(args) => ssh(ctx, args),
    }
}

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
    pub error: Option<String>,
    pub code: Option<ErrorCode>,
    pub checked_at: String,
}

/// `daemon_ok` is `hello` answered (over `rpc` for ssh machines, after `/health` for HTTP ones).
pub fn check(config: &MachineConfig) -> CheckReport {
    let mut report = CheckReport {
        name: config.name.clone(),
        ok: false,
        transport: "local",
        ssh_ok: None,
        daemon_ok: false,
        latency_ms: None,
        codexd_version: None,
        protocol: None,
        user: None,
        error: None,
        code: None,
        checked_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    };
    let machine = match Machine::from_config(config) {
        Ok(m) => m,
        Err(e) => {
            report.error = Some(e.message);
            report.code = Some(e.code);
            return report;
        }
    };
    let ssh = match &machine.route {
        Route::Local { .. } => None,
        Route::Ssh(t) => Some(t.clone()),
        Route::Http(h) => h.ssh.clone(),
    };
    report.transport = match machine.route {
        Route::Local { .. } => "local",
        Route::Ssh(_) => "ssh",
        Route::Http(_) => "http",
    };
    // Over `rpc` a working hello proves ssh too; HTTP machines probe ssh on its own.
    if let (Route::Http(_), Some(t)) = (&machine.route, &ssh) {
        report.ssh_ok = Some(ssh_probe(t).is_ok());
    }
    let started = Instant::now();
    let hello = machine.call(&Request::Hello(HelloRequest::default()), &mut |_| Ok(()));
    match hello {
        Ok(Response::Hello(h)) => {
            report.latency_ms = Some(started.elapsed().as_millis() as u64);
            report.daemon_ok = true;
            report.codexd_version = Some(h.version);
            report.protocol = Some(h.protocol);
            report.user = Some(h.user);
            if matches!(machine.route, Route::Ssh(_)) {
                report.ssh_ok = Some(true);
            }
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
    report.ok = report.daemon_ok && report.ssh_ok != Some(false);
    report
}

fn ssh_probe(t: &SshTarget) -> Result<String> {
    run_remote(t, "true", None)
}

fn ls(ctx: &Ctx, args: LsArgs) -> Result<u8> {
    let mut configs = ctx.config.machines.clone();
    if !configs.iter().any(|m| m.name == crate::remote::config::LOCAL) {
        configs.push(ctx.config.machine(Some(crate::remote::config::LOCAL))?);
    }
    let reports: Vec<CheckReport> = std::thread::scope(|s| {
        let handles: Vec<_> = configs.iter().map(|c| s.spawn(move || check(c))).collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let all_ok = reports.iter().all(|r| r.ok);
    if args.json || !std::io::stdout().is_terminal() {
        emit(&serde_json::json!({ "machines": reports }));
    } else {
        print_table(&reports);
    }
    Ok(if args.strict && !all_ok { exit::JOB_FAILED } else { exit::OK })
}

fn print_table(reports: &[CheckReport]) {
    use std::io::Write;
    let yes_no = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "-",
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<16} {:<9} {:<4} {:<6} {:<9} {:>8}  ERROR",
        "NAME", "TRANSPORT", "SSH", "DAEMON", "VERSION", "LATENCY"
    );
    for r in reports {
        let latency = r.latency_ms.map_or("-".to_string(), |l| format!("{l} ms"));
        let _ = writeln!(
            out,
            "{:<16} {:<9} {:<4} {:<6} {:<9} {:>8}  {}",
            r.name,
            r.transport,
            yes_no(r.ssh_ok),
            yes_no(Some(r.daemon_ok)),
            r.codexd_version.as_deref().unwrap_or("-"),
            latency,
            r.error.as_deref().unwrap_or("")
        );
    }
}

/// What `machine up` prints.
#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    pub name: String,
    pub ok: bool,
    /// The last stage reached: `config`, `ssh`, `install`, `serve`, `ready`.
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

/// Makes the machine ready; running it again changes nothing.
pub fn up(config: &MachineConfig) -> UpReport {
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
    if let Err(e) = up_stages(config, &mut report) {
        report.ok = false;
        report.message = e.message;
        report.hint = e.hint;
    }
    report
}

fn up_stages(config: &MachineConfig, report: &mut UpReport) -> Result<()> {
    let machine = Machine::from_config(config)?;
    let ssh = match &machine.route {
        Route::Local { .. } => {
            report.ok = true;
            report.stage = "ready";
            report.message = "the local machine runs the codexd next to codex-remote".into();
            return Ok(());
        }
        Route::Ssh(t) => t.clone(),
        Route::Http(h) => h.ssh.clone().ok_or_else(|| {
            Error::new(ErrorCode::ConfigError, "machine up needs `ssh:` to reach the machine")
        })?,
    };
    let install_dir = config.install_dir.clone().unwrap_or_else(|| "~/.local/bin".to_string());
    let installed_path = format!("{}/codexd", install_dir.trim_end_matches('/'));
    // The command that is checked: the configured one, else the install location.
    let codexd_cmd = config.codexd.clone().unwrap_or_else(|| installed_path.clone());
    report.codexd_path = Some(codexd_cmd.clone());

    report.stage = "ssh";
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
    let remote_version = version_line.strip_prefix("codexd ").map(str::to_string);
    let local_version = env!("CARGO_PKG_VERSION");

    report.stage = "install";
    let current = remote_version.as_deref().is_some_and(|v| !older(v, local_version));
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
        report.stage = "serve";
        let hello = Request::Hello(HelloRequest::default());
        // One probe, without the transport's retries: a serve that is not running is the
        // common case here.
        let running = h.endpoint().is_ok_and(|(addr, _)| h.health(&addr).is_ok());
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
                    Err(e) if e.code == ErrorCode::SshFailed => last = Some(e),
                    Err(e) => return Err(e),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Some(e) = last {
                return Err(e.with_hint("see serve.log in the machine's data dir"));
            }
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
        "mkdir -p {dir} && chmod 700 {dir} && {{ setsid {codexd} serve{data_flag} --listen \
         {listen} </dev/null >>{dir}/serve.log 2>&1 & }}",
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

/// Whether version `a` is older than `b` (numeric dotted versions).
fn older(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> {
        v.split(['.', '-']).map(|p| p.parse().unwrap_or(0)).take(3).collect()
    };
    parse(a) < parse(b)
}

/// `ssh -A [-t] HOST CMD` with the terminal's stdio; the remote exit code is ours.
fn ssh(ctx: &Ctx, args: SshArgs) -> Result<u8> {
    let config = ctx.config.machine(args.machine.machine.as_deref())?;
    let machine = Machine::from_config(&config)?;
    let target = match &machine.route {
        Route::Ssh(t) => t.clone(),
        Route::Http(h) => h.ssh.clone().ok_or_else(|| usage("the machine has no `ssh:`"))?,
        Route::Local { .. } => return Err(usage("the local machine needs no ssh")),
    };
    let mut cmd = target.command(&args.cmd)?;
    let mut argv: Vec<_> = cmd.get_args().map(|a| a.to_os_string()).collect();
    let split = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    // After `-T`: for ssh the last of -T/-t wins.
    let extra: &[&str] = if args.tty { &["-A", "-t"] } else { &["-A"] };
    for (i, flag) in extra.iter().enumerate() {
        argv.insert(split + i, (*flag).into());
    }
    let program = cmd.get_program().to_os_string();
    cmd = std::process::Command::new(program);
    cmd.args(argv);
    let status =
        cmd.status().map_err(|e| Error::new(ErrorCode::SshFailed, format!("running ssh: {e}")))?;
    Ok(status.code().map_or(exit::TRANSPORT, |c| c as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(older("0.1.0", "0.2.0"));
        assert!(older("0.9.0", "0.10.0"));
        assert!(!older("0.1.0", "0.1.0"));
        assert!(!older("1.0.0", "0.9.9"));
    }

    #[test]
    fn remote_paths_keep_the_home_unquoted() {
        assert_eq!(remote_word("~/.local/bin"), "\"$HOME\"/'.local/bin'");
        assert_eq!(remote_word("/opt/x y"), "'/opt/x y'");
    }
}
