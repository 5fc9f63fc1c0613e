//! The `codexd` command line (the `codexd` binary is only its `main`): `rpc`, `serve`, `token`,
//! and the hidden `worker` the handlers spawn.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use super::{Daemon, DaemonConfig};
use crate::error::{Result, exit};
use crate::jobs::{sys, worker};

#[derive(Debug, Parser)]
#[command(
    name = "codexd",
    about = "Runs jobs for codex-remote on this machine",
    disable_version_flag = true,
    args_conflicts_with_subcommands = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(flatten)]
    version: crate::version::VersionArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Answer JSON request lines from stdin on stdout until EOF (run by `ssh HOST codexd rpc`).
    Rpc {
        /// Job store directory [default: ~/.codexd; env CODEXD_DATA_DIR].
        #[arg(long)]
        data_dir: Option<String>,
        /// Config file [default: ~/.codexd/config.yaml when present].
        #[arg(long, env = "CODEXD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Serve the same requests over loopback HTTP and a Unix socket until SIGTERM/SIGINT.
    Serve {
        /// Job store directory [default: ~/.codexd; env CODEXD_DATA_DIR].
        #[arg(long)]
        data_dir: Option<String>,
        /// Config file [default: ~/.codexd/config.yaml when present].
        #[arg(long, env = "CODEXD_CONFIG")]
        config: Option<PathBuf>,
        /// TCP address, overriding the config's `listen` (port 0 picks a free port).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Print the token `serve` wants on TCP as JSON (generated into <data_dir>/token if missing).
    Token {
        #[arg(long)]
        data_dir: Option<String>,
        #[arg(long, env = "CODEXD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the version (`--json`: with the git commit, protocol and target).
    Version {
        #[arg(long)]
        json: bool,
    },
    /// Replace this binary with a newer build from a release location (`--check`: only say).
    Update {
        #[command(flatten)]
        args: crate::update::UpdateArgs,
        #[arg(long, env = "CODEXD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run one job (started by `rpc`; not for people).
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        id: String,
    },
}

/// Runs `codexd` with the process's arguments.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return crate::version::clap_exit(&e),
    };
    let Some(command) = cli.command else {
        return crate::version::print_or_usage::<Cli>("codexd", &cli.version);
    };
    let result = match command {
        Command::Rpc { data_dir, config } => rpc(config, data_dir),
        Command::Serve { data_dir, config, listen } => {
            DaemonConfig::load(config.as_deref(), data_dir.as_deref()).and_then(|mut c| {
                if let Some(listen) = listen {
                    c.listen = listen;
                }
                super::serve::run(c)
            })
        }
        Command::Token { data_dir, config } => {
            DaemonConfig::load(config.as_deref(), data_dir.as_deref())
                .and_then(|c| super::serve::token(&c))
                .and_then(|t| {
                    crate::wire::write_line(&mut std::io::stdout(), &t)
                        .map_err(|e| crate::error::Error::internal("writing", e))?;
                    Ok(exit::OK)
                })
        }
        Command::Worker { data_dir, id } => worker::run_worker(&data_dir, &id).map(|c| c as u8),
        Command::Version { json } => {
            crate::update::print_version("codexd", json);
            Ok(exit::OK)
        }
        Command::Update { args, config } => DaemonConfig::load(config.as_deref(), None)
            .and_then(|c| crate::update::run("codexd", &args, c.update_url.as_deref()))
            .and_then(|report| {
                crate::wire::write_line(&mut std::io::stdout(), &report)
                    .map_err(|e| crate::error::Error::io("writing", e))?;
                Ok(exit::OK)
            }),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("codexd: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn rpc(config: Option<PathBuf>, data_dir: Option<String>) -> Result<u8> {
    sys::ignore_hangups();
    let stdin = std::io::stdin();
    // Not a `StdoutLock`: the answers of a `concurrent` session are written from threads.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
    let daemon =
        match DaemonConfig::load(config.as_deref(), data_dir.as_deref()).and_then(Daemon::new) {
            Ok(d) => d,
            Err(e) => {
                // Still speak the protocol: the client reads this line as the answer.
                let line = crate::protocol::ResponseLine {
                    id: None,
                    response: crate::protocol::Response::Error(e.clone().into()),
                };
                let _ = crate::wire::write_line(&mut out, &line);
                return Err(e);
            }
        };
    // A large buffer: file_write and sync_apply stream their bytes through stdin.
    let mut input = std::io::BufReader::with_capacity(256 * 1024, stdin.lock());
    match super::rpc::serve(&daemon, &mut input, &mut out) {
        Ok(()) => {}
        // The client went away (closed pipe): not an error of ours.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            let _ = out.flush();
            eprintln!("codexd rpc: {e}");
            return Ok(exit::TRANSPORT);
        }
    }
    Ok(exit::OK)
}
