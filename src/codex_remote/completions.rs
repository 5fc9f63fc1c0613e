//! Shell completion: `codex-remote completions bash|zsh|fish` prints a registration script that
//! asks `codex-remote` itself for candidates as you type (clap's dynamic completion,
//! `COMPLETE=bash codex-remote` prints the same), so machine names come from the config, job ids
//! (newest first) from the default machine, and `--state`/`--stream` offer their values. A
//! static script cannot know machines or jobs, and clap's static bash script loses its way in
//! subcommands of a binary with a `-` in its name.

use std::ffi::OsStr;

use clap::{Args, ValueEnum};
use clap_complete::engine::CompletionCandidate;

use crate::error::{Error, Result, exit};
use crate::protocol::{JobState, ListRequest};
use crate::remote::config::RemoteConfig;
use crate::remote::transport::Machine;

/// The shells with a registration script.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for; e.g. `source <(codex-remote completions bash)` in ~/.bashrc.
    #[arg(value_enum)]
    shell: Shell,
}

/// Prints the registration script of `args.shell` (this binary run with `COMPLETE=<shell>`).
pub fn run(args: CompletionsArgs) -> Result<u8> {
    let shell = args.shell.to_possible_value().expect("no skipped values").get_name().to_string();
    let exe = std::env::current_exe().map_err(|e| Error::io("finding this executable", e))?;
    let out = std::process::Command::new(exe)
        .env("COMPLETE", &shell)
        .output()
        .map_err(|e| Error::io("writing the completion script", e))?;
    super::emit_raw(false, &out.stdout)?;
    Ok(exit::OK)
}

fn matching(current: &OsStr, values: impl IntoIterator<Item = String>) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy();
    values.into_iter().filter(|v| v.starts_with(&*prefix)).map(CompletionCandidate::new).collect()
}

/// `--machine`: the configured machines and `local`.
pub fn machines(current: &OsStr) -> Vec<CompletionCandidate> {
    let names = RemoteConfig::load(None).map(|c| c.machine_names()).unwrap_or_default();
    matching(current, names)
}

/// A job: the ids on the default machine (or `CODEX_REMOTE_MACHINE`), newest first, with their
/// state and command as help; and `last`.
pub fn jobs(current: &OsStr) -> Vec<CompletionCandidate> {
    let listed = RemoteConfig::load(None).and_then(|config| {
        let name = std::env::var("CODEX_REMOTE_MACHINE").ok().filter(|n| !n.is_empty());
        let m = Machine::from_config(&config.machine(name.as_deref())?)?;
        crate::remote::client::list(&m, ListRequest { limit: Some(50), ..Default::default() })
    });
    let prefix = current.to_string_lossy();
    let mut out: Vec<CompletionCandidate> = listed
        .map(|l| l.jobs)
        .unwrap_or_default()
        .into_iter()
        .filter(|j| j.exec_id.starts_with(&*prefix))
        .map(|j| {
            let help = format!("{} {}", j.state.as_str(), j.cmd);
            CompletionCandidate::new(j.exec_id).help(Some(help.into()))
        })
        .collect();
    out.extend(matching(current, ["last".to_string()]));
    out
}

/// `--state`: the states and the two statuses.
pub fn states(current: &OsStr) -> Vec<CompletionCandidate> {
    let states = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Lost,
        JobState::StartFailed,
    ];
    let names = states.iter().map(|s| s.as_str().to_string()).chain(["finished".to_string()]);
    matching(current, names)
}
