//! The `codex-remote` command line. JSON (or NDJSON) goes to stdout for agents and `jq`; human
//! text goes to stderr. A failure prints `{"type":"error","code":...,"message":...}` on stdout,
//! the message on stderr, and exits with the code's exit status (README "Exit codes").

pub mod completions;
pub mod dashboard;
pub mod exec;
pub mod fanout;
pub mod file;
pub mod machine;
pub mod mcp;
pub mod original_fields;
pub mod output;
pub mod single_dash;
pub mod skills;
pub mod sync;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::Serialize;

use crate::error::{Error, ErrorCode, Result, exit};
use crate::protocol::{ErrorBody, OnMachine};
use crate::remote::config::RemoteConfig;
use crate::remote::machine::Machine;

#[derive(Debug, Parser)]
#[command(
    name = "codex-remote",
    about = "Start, watch and cancel jobs on remote machines over ssh",
    disable_version_flag = true,
    arg_required_else_help = true,
    after_help = "Examples:
  codex-remote machine ls
  codex-remote exec run --machine gpu1 --cmd nvidia-smi
  codex-remote exec logs last --follow"
)]
struct Cli {
    #[command(flatten)]
    version: crate::version::VersionArgs,
    /// Config file [default: ~/.config/codex-remote/config.yaml].
    #[arg(long, global = true, env = "CODEX_REMOTE_CONFIG")]
    config: Option<PathBuf>,
    /// Output: `json`, one JSON object per line (the default), or `text` for people: tables,
    /// a job's own bytes for `exec run`/`logs`/`watch`, `key: value` lines for the rest.
    #[arg(long, global = true, value_enum, env = "CODEX_REMOTE_FORMAT")]
    format: Option<output::Format>,
    /// The machine of the command (as `--machine` after it, which wins).
    #[arg(long, short = 'm', value_name = "NAME", add = clap_complete::engine::ArgValueCompleter::new(completions::machines))]
    machine: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

// Parsed once per process: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Start, watch, tail and cancel jobs.
    #[command(subcommand)]
    #[command(after_help = "Examples:
  codex-remote exec run -m gpu1 --cmd nvidia-smi
  codex-remote exec start -m gpu1 --cmd 'python train.py' --name train
  codex-remote exec logs last --follow")]
    Exec(exec::ExecCommand),
    /// Write, read, stat and list files on a machine.
    #[command(subcommand)]
    #[command(after_help = "Examples:
  codex-remote file write -m gpu1 --dst notes.txt --content 'hello'
  codex-remote file read -m gpu1 --path notes.txt --raw")]
    File(file::FileCommand),
    /// Sync a directory tree to a machine (push) or from it (pull), incrementally.
    #[command(subcommand)]
    #[command(after_help = "Examples:
  codex-remote sync push -m gpu1 --src . --dst '~/proj'
  codex-remote sync pull -m gpu1 --src '~/proj/results' --dst results")]
    Sync(sync::SyncCommand),
    /// Check, list, set up or log into machines.
    #[command(subcommand)]
    #[command(after_help = "Examples:
  codex-remote machine ls
  codex-remote machine up --machine gpu1")]
    Machine(machine::MachineCommand),
    /// Serve the exec tools to a coding agent over MCP (Model Context Protocol) on stdio.
    #[command(after_help = "Examples:
  codex-remote mcp
  codex-remote --config ~/work/codex-remote.yaml mcp")]
    Mcp(mcp::McpArgs),
    /// Print a shell completion script: `codex-remote completions bash > ...`.
    #[command(after_help = "Examples:
  codex-remote completions bash > ~/.local/share/bash-completion/completions/codex-remote
  codex-remote completions zsh > ~/.zfunc/_codex-remote")]
    Completions(completions::CompletionsArgs),
    /// Serve a live web page of every machine and job (loopback only unless --listen says so).
    #[command(after_help = "Examples:
  codex-remote dashboard --open
  codex-remote dashboard --listen 127.0.0.1:9000")]
    Dashboard(dashboard::DashboardArgs),
    /// Install the Agent Skills for Codex and Claude Code (`SKILL.md` folders with scripts).
    #[command(subcommand)]
    #[command(after_help = "Examples:
  codex-remote skills install
  codex-remote skills install --dir .claude/skills")]
    Skills(skills::SkillsCommand),
    /// Print the version (`--json`: with the git commit, protocol and target).
    #[command(after_help = "Examples:
  codex-remote version
  codex-remote version --json")]
    Version {
        /// Print one JSON object with the git commit, protocol version and target.
        #[arg(long)]
        json: bool,
    },
    /// Replace this binary with a newer build from a release location (`--check`: only say).
    #[command(after_help = "Examples:
  codex-remote update --check
  codex-remote update --yes --from /mnt/share/codex-runner/dist")]
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
    clap_complete::CompleteEnv::with_factory(command).complete();
    let args: Vec<std::ffi::OsString> = single_dash::rewrite(std::env::args_os(), &command());
    let parsed = command()
        .try_get_matches_from(&args)
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return usage_error(e),
    };
    output::choose(cli.format);
    let global_machine = cli.machine.clone();
    // `--machine` before the subcommand names the machine of the call (as after it).
    let load = |path: Option<&std::path::Path>| {
        RemoteConfig::load(path).map(|mut config| {
            if let Some(name) = &global_machine {
                config.default_machine = Some(name.clone());
            }
            config
        })
    };
    let Some(command) = cli.command else {
        return crate::version::print_or_usage::<Cli>("codex-remote", &cli.version);
    };
    // Several machines (a list, glob, group, `--all`): one child per machine (`fanout`).
    if let Some(ask) = fanout::Ask::of(&matches, cli.machine.as_deref()) {
        match RemoteConfig::load(cli.config.as_deref()).and_then(|c| fanout::run(&c, &ask, &args)) {
            Ok(Some(code)) => return ExitCode::from(code),
            Ok(None) => {}
            Err(e) => {
                report_error(&e);
                return ExitCode::from(e.exit_code());
            }
        }
    }
    let result = match command {
        Command::Exec(cmd) => {
            load(cli.config.as_deref()).and_then(|config| exec::run(&Ctx { config }, cmd))
        }
        Command::File(cmd) => {
            load(cli.config.as_deref()).and_then(|config| file::run(&Ctx { config }, cmd))
        }
        Command::Sync(cmd) => {
            load(cli.config.as_deref()).and_then(|config| sync::run(&Ctx { config }, cmd))
        }
        Command::Machine(cmd) => {
            load(cli.config.as_deref()).and_then(|config| machine::run(&Ctx { config }, cmd))
        }
        // The MCP server reads the config at each call and keeps stdout for MCP messages.
        Command::Mcp(args) => return ExitCode::from(mcp::run(cli.config, args)),
        Command::Completions(args) => completions::run(args),
        Command::Skills(cmd) => skills::run(cmd),
        Command::Dashboard(args) => {
            load(cli.config.as_deref()).and_then(|config| dashboard::run(&Ctx { config }, args))
        }
        Command::Version { json } => {
            crate::update::print_version("codex-remote", json);
            Ok(exit::OK)
        }
        Command::Update(args) => load(cli.config.as_deref()).and_then(|config| {
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

/// The command line's definition, with an environment variable that is set but empty taken as
/// unset (`CODEX_REMOTE_FORMAT=` is no format, not a wrong one).
fn command() -> clap::Command {
    without_empty_env(Cli::command())
}

fn without_empty_env(mut cmd: clap::Command) -> clap::Command {
    let empty = |a: &clap::Arg| {
        a.get_env().is_some_and(|name| std::env::var_os(name).is_some_and(|v| v.is_empty()))
    };
    let ids: Vec<clap::Id> =
        cmd.get_arguments().filter(|a| empty(a)).map(|a| a.get_id().clone()).collect();
    for id in ids {
        cmd = cmd.mut_arg(id, |a| a.env(None));
    }
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, without_empty_env);
    }
    cmd
}

/// clap's own errors: help and version as clap prints them; a wrong command line also as the
/// JSON error object every other failure prints (code `usage`, exit 2), so scripts that read
/// stdout see why.
fn usage_error(e: clap::Error) -> ExitCode {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return crate::version::clap_exit(&e);
    }
    let text = e.render().to_string();
    let args = std::env::args_os().map(|a| a.to_string_lossy().into_owned());
    if output::text_in_args(args) {
        crate::error::stderr_line(text.trim_end());
        return ExitCode::from(exit::USAGE);
    }
    let first = text.lines().next().unwrap_or("").trim_start_matches("error: ").to_string();
    // What is missing is on the next lines of clap's text: the JSON names it too.
    let missing = match e.get(clap::error::ContextKind::InvalidArg) {
        Some(clap::error::ContextValue::Strings(names))
            if e.kind() == ErrorKind::MissingRequiredArgument =>
        {
            names.clone()
        }
        _ => Vec::new(),
    };
    let message = match missing.is_empty() {
        true => first,
        false => format!("{} {}", first.trim_end_matches(':'), missing.join(", ")),
    };
    #[derive(Serialize)]
    struct UsageLine<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        missing: &'a [String],
    }
    let line =
        UsageLine { kind: "error", code: ErrorCode::Usage, message: &message, missing: &missing };
    let _ = emit(&line);
    crate::error::stderr_line(text.trim_end());
    ExitCode::from(exit::USAGE)
}

/// Prints the error object on stdout and the message (and hint) on stderr.
pub fn report_error(e: &Error) {
    if !output::text() {
        let _ = emit(&ErrorBody::object(e));
    }
    let hint = e.hint.as_deref().map(|h| format!("\n  hint: {h}")).unwrap_or_default();
    crate::error::stderr_line(&format!("codex-remote: {}: {}{hint}", e.code, e.message));
}

/// Writes one JSON line to stdout (`key: value` lines with `--format text`). A closed stdout
/// (`| head`) is an error whose [`Error::is_broken_pipe`] holds; `main` ends quietly on it.
pub fn emit(value: &impl Serialize) -> Result<()> {
    if output::text() {
        let value = serde_json::to_value(value)
            .map_err(|e| Error::new(ErrorCode::Internal, format!("printing: {e}")))?;
        return emit_raw(false, output::key_values(&value).as_bytes());
    }
    let mut out = std::io::stdout().lock();
    let written = crate::wire::write_line(&mut out, value);
    outlived(false, written).map_err(|e| Error::io("writing to stdout", e))
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
    outlived(to_stderr, written).map_err(|e| Error::io("writing the output", e))
}

/// A closed stderr is never an error (the command's own code says how it went), nor a closed
/// stdout for a command whose exit code is the job's ([`output::outlive_closed_stdout`]).
fn outlived(to_stderr: bool, written: std::io::Result<()>) -> std::io::Result<()> {
    match written {
        Err(e)
            if e.kind() == std::io::ErrorKind::BrokenPipe
                && (to_stderr || output::outlives_closed_stdout()) =>
        {
            Ok(())
        }
        other => other,
    }
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

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::{CommandFactory, Parser};

    /// Every command (and group) of the tree, with its path of names.
    fn commands(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        out.push((path.clone(), cmd.clone()));
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            commands(sub, format!("{path} {}", sub.get_name()), out);
        }
    }

    /// The example command lines of a help text: the words of each `codex-remote ...` line
    /// after "Examples:", up to a shell operator (`> file` is the shell's, not ours).
    fn examples(after_help: &str) -> Vec<Vec<String>> {
        let (_, section) = after_help.split_once("Examples:").unwrap_or_default();
        section
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("codex-remote "))
            .map(|l| {
                let words = shlex::split(l).unwrap_or_else(|| panic!("bad quoting: {l}"));
                let ops = [">", ">>", "|", "&&", "||", ";"];
                words.into_iter().take_while(|w| !ops.contains(&w.as_str())).collect()
            })
            .collect()
    }

    #[test]
    fn every_command_has_examples_that_parse_and_every_argument_has_help() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut all = Vec::new();
        commands(&cmd, "codex-remote".into(), &mut all);
        assert!(all.len() > 25, "{}", all.len());
        for (path, cmd) in &all {
            let help = cmd.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            let lines = examples(&help);
            assert!((1..=3).contains(&lines.len()), "{path}: 1 to 3 examples, got {help:?}");
            for words in lines {
                // An example is of this command (or, for a group, of one of its commands).
                let line = words.join(" ");
                let named = words.iter().filter(|w| !w.starts_with('-')).cloned();
                let names: Vec<String> = named.collect();
                let own: Vec<&str> = path.split(' ').collect();
                assert!(
                    own.iter().all(|n| names.iter().any(|w| w == n)),
                    "{path}: example of another command: {line}"
                );
                if let Err(e) = Cli::try_parse_from(&words) {
                    panic!("{path}: example does not parse: {line}\n{e}");
                }
            }
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                assert!(
                    arg.get_help().is_some() || arg.get_long_help().is_some(),
                    "{path}: {} has no help",
                    arg.get_id()
                );
            }
        }
    }
}
