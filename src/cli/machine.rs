//! `codex-remote machine check|ls|up|ssh`: is a machine ready, make it ready, or log into it.

use std::io::IsTerminal;

use clap::{Args, Subcommand};

use super::exec::MachineArg;
use super::{Ctx, emit, usage};
use crate::error::{Error, ErrorCode, Result, exit};
use crate::remote::machine::{CheckReport, check, up};
use crate::remote::transport::{Machine, Route};

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
            emit(&report)?;
            Ok(if args.strict && !report.ok { exit::JOB_FAILED } else { exit::OK })
        }
        MachineCommand::Ls(args) => ls(ctx, args),
        MachineCommand::Up(args) => {
            let config = ctx.config.machine(args.machine.machine.as_deref())?;
            let report = up(&config);
            emit(&report)?;
            Ok(if report.ok { exit::OK } else { exit::TRANSPORT })
        }
        MachineCommand::Ssh(args) => ssh(ctx, args),
    }
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
        emit(&serde_json::json!({ "machines": reports }))?;
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

/// `ssh -A [-t] HOST CMD` with the terminal's stdio; the remote exit code is ours.
fn ssh(ctx: &Ctx, args: SshArgs) -> Result<u8> {
    let config = ctx.config.machine(args.machine.machine.as_deref())?;
    let machine = Machine::from_config(&config)?;
    if let Route::Local { .. } = machine.route {
        return Err(usage("the local machine needs no ssh"));
    }
    let target = machine.ssh.ok_or_else(|| usage("the machine has no `ssh:`"))?;
    let status = target
        .interactive_command(&args.cmd, args.tty)?
        .status()
        .map_err(|e| Error::new(ErrorCode::SshFailed, format!("running ssh: {e}")))?;
    Ok(status.code().map_or(exit::TRANSPORT, |c| c as u8))
}
