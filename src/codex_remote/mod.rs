//! The `codex-remote` command line. JSON (or NDJSON) goes to stdout for agents and `jq`; human
//! text goes to stderr. A failure prints `{"type":"error","code":...,"message":...}` on stdout,
//! the message on stderr, and exits with the code's exit status (README "Exit codes").

pub mod completions;
pub mod dashboard;
pub mod exec;
pub mod file;
pub mod machine;
pub mod mcp;
pub mod sync;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use serde::Serialize;

use crate::error::{Error, ErrorCode, Result, exit};
use crate::protocol::{ErrorBody, OnMachine};
use crate::remote::config::RemoteConfig;
use crate::remote::transport::Machine;

#[derive(Debug, Parser)]
#[command(
    name = "codex-remote",
    about = "Start, watch and cancel jobs on remote machines over ssh",
    disable_version_flag = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(flatten)]
    version: crate::version::VersionArgs,
    /// Config file [default: ~/.config/codex-remote/config.yaml].
    #[arg(long, global = true, env = "CODEX_REMOTE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

// Parsed once per process: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Start, watch, tail and cancel jobs.
    #[command(subcommand)]
    Exec(exec::ExecCommand),
    /// Write, read, stat and list files on a machine.
    #[command(subcommand)]
    File(file::FileCommand),
    /// Sync a directory tree to a machine (push) or from it (pull), incrementally.
    #[command(subcommand)]
    Sync(sync::SyncCommand),
    /// Check, list, set up or log into machines.
    #[command(subcommand)]
    Machine(machine::MachineCommand),
    /// Serve the exec tools to a coding agent over MCP (Model Context Protocol) on stdio.
    Mcp(mcp::McpArgs),
    /// Print a shell completion script: `codex-remote completions bash > ...`.
    Completions(completions::CompletionsArgs),
    /// Serve a live web page of every machine and job (loopback only unless --listen says so).
    Dashboard(dashboard::DashboardArgs),
    /// Print the version (`--json`: with the git commit, protocol and target).
    Version {
        #[arg(long)]
        json: bool,
    },
    /// Replace this binary with a newer build from a release location (`--check`: only say).
    Update(crate::update::UpdateArgs),
}

/// Everything a command needs: the config and where its output goes.
pub struct Ctx {
    pub config: RemoteConfig,
}

impl Ctx {
    /// The machine `--machine` names (or the default one).
    pub fn machine(&self, name: Option<&str>) -> Result<Machine> {
        Machine::from_config(&self.config.machine(name)?)
    }
}

/// Runs `codex-remote` with the process's arguments.
pub fn main() -> ExitCode {
    // `COMPLETE=bash codex-remote ...`: the shell asks for candidates (see `completions`).
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let Some(command) = cli.command else {
        return crate::version::print_or_usage::<Cli>("codex-remote", &cli.version);
    };
    let result = match command {
        Command::Exec(cmd) => RemoteConfig::load(cli.config.as_deref())
            .and_then(|config| exec::run(&Ctx { config }, cmd)),
        Command::File(cmd) => RemoteConfig::load(cli.config.as_deref())
            .and_then(|config| file::run(&Ctx { config }, cmd)),
        Command::Sync(cmd) => RemoteConfig::load(cli.config.as_deref())
            .and_then(|config| sync::run(&Ctx { config }, cmd)),
        Command::Machine(cmd) => RemoteConfig::load(cli.config.as_deref())
            .and_then(|config| machine::run(&Ctx { config }, cmd)),
        // The MCP server reads the config at each call and keeps stdout for MCP messages.
        Command::Mcp(args) => return ExitCode::from(mcp::run(cli.config, args)),
        Command::Completions(args) => completions::run(args),
        Command::Dashboard(args) => RemoteConfig::load(cli.config.as_deref())
            .and_then(|config| dashboard::run(&Ctx { config }, args)),
        Command::Version { json } => {
            crate::update::print_version("codex-remote", json);
            Ok(exit::OK)
        }
        Command::Update(args) => RemoteConfig::load(cli.config.as_deref()).and_then(|config| {
            let report = crate::update::run("codex-remote", &args, config.update_url.as_deref())?;
            emit(&report)?;
            Ok(exit::OK)
        }),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // `| head` closed stdout: the reader has what it wanted.
        Err(e) if e.is_broken_pipe() => ExitCode::from(exit::OK),
        Err(e) => {
            report_error(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

/// clap's own errors: help and version as clap prints them; a wrong command line also as the
/// JSON error object every other failure prints (code `usage`, exit 2), so scripts that read
/// stdout see why.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("").trim_start_matches("error: ").to_string();
    #[derive(Serialize)]
    struct UsageLine<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        code: ErrorCode,
        message: &'a str,
    }
    let _ = emit(&UsageLine { kind: "error", code: ErrorCode::Usage, message: &first });
    eprint!("{text}");
    ExitCode::from(exit::USAGE)
}

/// Prints the error object on stdout and the message (and hint) on stderr.
pub fn report_error(e: &Error) {
    #[derive(Serialize)]
    struct ErrorLine<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        body: &'a ErrorBody,
    }
    let body = ErrorBody::from(e.clone());
    let _ = emit(&ErrorLine { kind: "error", body: &body });
    let hint = e.hint.as_deref().map(|h| format!("\n  hint: {h}")).unwrap_or_default();
    eprintln!("codex-remote: {}: {}{hint}", e.code, e.message);
}

/// Writes one JSON line to stdout. A closed stdout (`| head`) is an error whose
/// [`Error::is_broken_pipe`] holds; `main` ends quietly on it.
pub fn emit(value: &impl Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    crate::wire::write_line(&mut out, value).map_err(|e| Error::io("writing to stdout", e))
}

/// [`emit`] of a value with the machine it came from.
pub fn emit_on(machine: &Machine, value: &impl Serialize) -> Result<()> {
    emit(&OnMachine { value, machine: &machine.name })
}

/// Writes raw bytes to stdout or stderr (a closed pipe as in [`emit`]).
pub fn emit_raw(to_stderr: bool, bytes: &[u8]) -> Result<()> {
    let written = if to_stderr {
        let mut e = std::io::stderr().lock();
        e.write_all(bytes).and_then(|()| e.flush())
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(bytes).and_then(|()| o.flush())
    };
    written.map_err(|e| Error::io("writing the output", e))
}

/// Parses `KEY=VALUE`.
pub fn parse_key_value(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Parses a duration: `30s`, `5m`, `1h 30m`, `250ms`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    if let Ok(secs) = s.trim().parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(std::time::Duration::from_secs_f64(secs));
    }
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e} (e.g. 30s, 5m, 250ms)"))
}

/// A usage error found after argument parsing.
pub fn usage(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::Usage, message)
}
