//! `codex-remote machine check|ls|up|ssh`: is a machine ready, make it ready, or log into it.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::exec::MachineArg;
use super::{Ctx, emit, output, parse_duration, usage};
use crate::error::{Error, ErrorCode, Result, exit};
use crate::remote::machine::{Machine, Route};
use crate::remote::provision::{CheckReport, check, up};

#[derive(Debug, Subcommand)]
pub enum MachineCommand {
    /// Check that ssh works and codexd answers; prints a report (exit 0 when it could).
    #[command(after_help = "Examples:
  codex-remote machine check --machine gpu1 --strict")]
    Check(CheckArgs),
    /// Check every configured machine in parallel (a table on a terminal, JSON with --json).
    #[command(alias = "list")]
    #[command(after_help = "Examples:
  codex-remote machine ls
  codex-remote --format text machine ls --timeout 20s
  codex-remote machine ls --json --strict")]
    Ls(LsArgs),
    /// Install or upgrade codexd through ssh and, for HTTP machines, start `codexd serve`.
    #[command(after_help = "Examples:
  codex-remote machine up --machine gpu1")]
    Up(UpArgs),
    /// Run a command on the machine with agent forwarding and exit with its exit code.
    #[command(after_help = "Examples:
  codex-remote machine ssh -m gpu1 --cmd nvidia-smi
  codex-remote machine ssh -m gpu1 --cmd htop --tty")]
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
    /// Machines checked at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
    /// Give up on a machine after this long (it is reported as not ok, code `timeout`).
    #[arg(long, value_parser = parse_duration, default_value = "8s")]
    timeout: Duration,
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
    /// Capture the output and print the original tool's object
    /// `{ok, ssh, forward_agent, tty, stdout, stderr, code}` (exit 0).
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, cmd: MachineCommand) -> Result<u8> {
    match cmd {
        MachineCommand::Check(args) => {
            let config = ctx.config.machine(args.machine.machine.as_deref())?;
            let report = check(&config);
            emit(&report)?;
            Ok(if args.strict && !report.ok { exit::JOB_FAILED } else { exit::OK })
        }
        MachineCommand::Ls(args) => ls(ctx, args),
        MachineCommand::Up(args) => {
            let config = ctx.config.machine(args.machine.machine.as_deref())?;
            let report = up(&config, &mut |stage| {
                output::note(&format!("machine up {}: {}", config.name, up_stage_text(stage)));
            });
            emit(&report)?;
            Ok(if report.ok { exit::OK } else { exit::TRANSPORT })
        }
        MachineCommand::Ssh(args) => ssh(ctx, args),
    }
}

/// What a stage of `machine up` is doing, for the progress notes on a terminal.
fn up_stage_text(stage: &str) -> &'static str {
    match stage {
        "ssh" => "asking the machine over ssh for its system and codexd version…",
        "install" => "installing codexd if it is missing or older…",
        "serve" => "starting codexd serve unless it answers…",
        "verify" => "checking a call through the machine's own route…",
        _ => "reading the config…",
    }
}

fn ls(ctx: &Ctx, args: LsArgs) -> Result<u8> {
    let mut configs = ctx.config.machines.clone();
    if !configs.iter().any(|m| m.name == crate::remote::config::LOCAL) {
        configs.push(ctx.config.machine(Some(crate::remote::config::LOCAL))?);
    }
    let reports = super::fanout::check_all(configs, usize::from(args.parallel), args.timeout);
    let all_ok = reports.iter().all(|r| r.ok);
    let tally = Tally::of(&reports);
    if !output::table(args.json) {
        #[derive(serde::Serialize)]
        struct Listing<'a> {
            #[serde(flatten)]
            tally: Tally,
            checked_at: String,
            machines: &'a [CheckReport],
        }
        emit(&Listing {
            tally,
            checked_at: crate::protocol::time::now_rfc3339(),
            machines: &reports,
        })?;
    } else {
        print_table(&reports, &tally);
    }
    Ok(if args.strict && !all_ok { exit::JOB_FAILED } else { exit::OK })
}

/// The original tool's summary of a `machine ls`.
#[derive(Debug, serde::Serialize)]
struct Tally {
    total: usize,
    ssh_ok: usize,
    daemon_ok: usize,
    failed: usize,
}

impl Tally {
    fn of(reports: &[CheckReport]) -> Self {
        Tally {
            total: reports.len(),
            ssh_ok: reports.iter().filter(|r| r.ssh_ok == Some(true)).count(),
            daemon_ok: reports.iter().filter(|r| r.daemon_ok).count(),
            failed: reports.iter().filter(|r| !r.ok).count(),
        }
    }
}

fn print_table(reports: &[CheckReport], tally: &Tally) {
    use std::io::Write;
    let yes_no = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "-",
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<16} {:<9} {:<4} {:<6} {:<9} {:>8} {:>10}  ERROR",
        "NAME", "TRANSPORT", "SSH", "DAEMON", "VERSION", "LATENCY", "GPUS FREE"
    );
    for r in reports {
        let latency = r.latency_ms.map_or("-".to_string(), |l| format!("{l} ms"));
        // "1/4": free of all; "-" without GPUs (or a codexd that cannot tell).
        let gpus = match &r.gpus {
            Some(g) if !g.gpus.is_empty() => {
                format!("{}/{}", g.gpus.iter().filter(|g| g.free).count(), g.gpus.len())
            }
            _ => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<16} {:<9} {:<4} {:<6} {:<9} {:>8} {:>10}  {}",
            r.name,
            r.transport,
            yes_no(r.ssh_ok),
            yes_no(Some(r.daemon_ok)),
            r.codexd_version.as_deref().unwrap_or("-"),
            latency,
            gpus,
            r.error.as_deref().unwrap_or("")
        );
    }
    let Tally { total, ssh_ok, daemon_ok, failed } = tally;
    let _ = writeln!(
        out,
        "\nsummary: total={total} ssh_ok={ssh_ok} daemon_ok={daemon_ok} failed={failed}"
    );
}

/// `ssh -A [-t] HOST CMD` with the terminal's stdio; the remote exit code is ours. With
/// `--json` the output is captured and printed as the original tool's object instead.
fn ssh(ctx: &Ctx, args: SshArgs) -> Result<u8> {
    let config = ctx.config.machine(args.machine.machine.as_deref())?;
    let machine = Machine::from_config(&config)?;
    if let Route::Local { .. } = machine.route {
        return Err(usage("the local machine needs no ssh"));
    }
    let target = machine.ssh.ok_or_else(|| usage("the machine has no `ssh:`"))?;
    let command = target.interactive_command(&args.cmd, args.tty)?;
    if args.json {
        let out = crate::remote::ssh::run_captured(command, None)?;
        emit(&serde_json::json!({
            "ok": out.code == Some(0),
            "ssh": target.destination,
            "forward_agent": true,
            "tty": args.tty,
            "stdout": out.stdout,
            "stderr": out.stderr,
            "code": out.code,
        }))?;
        return Ok(exit::OK);
    }
    let mut command = command;
    let status = command
        .status()
        .map_err(|e| Error::new(ErrorCode::SshFailed, format!("running ssh: {e}")))?;
    Ok(status.code().map_or(exit::TRANSPORT, |c| c as u8))
}
