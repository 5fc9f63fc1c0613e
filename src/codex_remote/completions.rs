//! Shell completion: `codex-remote completions bash|zsh|fish` prints a registration script that
//! asks `codex-remote` itself for candidates as you type (clap's dynamic completion,
//! `COMPLETE=bash codex-remote` prints the same), so machine names come from the config, job ids
//! (newest first) from the default machine, and `--state`/`--stream` offer their values. A
//! static script cannot know machines or jobs, and clap's static bash script loses its way in
//! subcommands of a binary with a `-` in its name.

use std::ffi::OsStr;

use clap::{Args, ValueEnum};
use clap_complete::engine::{CompletionCandidate, PathCompleter, ValueCompleter};

use crate::error::{Error, Result, exit};
use crate::protocol::{JobState, ListRequest};
use crate::remote::config::RemoteConfig;
use crate::remote::machine::Machine;

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

/// A job: the ids on the machine the line names (`-m`/`--machine`), else `CODEX_REMOTE_MACHINE`,
/// else the default one, newest first, with their state and command as help; and `last`.
pub fn jobs(current: &OsStr) -> Vec<CompletionCandidate> {
    let listed = RemoteConfig::load(None).and_then(|config| {
        let on_line = machine_on_line(std::env::args());
        let name = on_line.or_else(|| std::env::var("CODEX_REMOTE_MACHINE").ok());
        let name = name.filter(|n| !n.is_empty());
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
            CompletionCandidate::new(j.exec_id.to_string()).help(Some(help.into()))
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

/// The machine the words being completed name (`-m NAME`, `-mNAME`, `--machine NAME`,
/// `--machine=NAME`; the last one wins), if any.
fn machine_on_line(words: impl IntoIterator<Item = String>) -> Option<String> {
    let mut words = words.into_iter();
    let mut found = None;
    while let Some(word) = words.next() {
        if word == "-m" || word == "--machine" {
            found = words.next().or(found);
        } else if let Some(name) = word.strip_prefix("--machine=") {
            found = Some(name.to_string());
        } else if let Some(name) = word.strip_prefix("-m").filter(|n| !n.is_empty()) {
            found = Some(name.to_string());
        }
    }
    found
}

/// `sync --src`: local paths for `push` (for `pull` it is a path on the machine: nothing).
pub fn sync_src(current: &OsStr) -> Vec<CompletionCandidate> {
    local_paths_unless(current, "pull")
}

/// `sync --dst`: local paths for `pull`.
pub fn sync_dst(current: &OsStr) -> Vec<CompletionCandidate> {
    local_paths_unless(current, "push")
}

fn local_paths_unless(current: &OsStr, remote_for: &str) -> Vec<CompletionCandidate> {
    if std::env::args().any(|w| w == remote_for) {
        return Vec::new();
    }
    PathCompleter::any().complete(current)
}

#[cfg(test)]
mod tests {
    use super::machine_on_line;

    #[test]
    fn the_machine_on_the_line_is_the_last_one_named() {
        let words = |line: &str| line.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(machine_on_line(words("codex-remote exec result")), None);
        assert_eq!(machine_on_line(words("x -m gpu1 exec result")).as_deref(), Some("gpu1"));
        let line = words("x exec result --machine=a -mb");
        assert_eq!(machine_on_line(line).as_deref(), Some("b"));
        let line = words("x exec result --machine c ");
        assert_eq!(machine_on_line(line).as_deref(), Some("c"));
    }
}
