//! `codex-remote completions bash|zsh|fish`: the shell completion script, on stdout.

use clap::Args;
use clap_complete::Shell;

use crate::error::{Result, exit};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Writes the script for `cli` (the whole `codex-remote` command line) to stdout.
pub fn run(args: CompletionsArgs, mut cli: clap::Command) -> Result<u8> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cli, "codex-remote", &mut script);
    super::emit_raw(false, &script)?;
    Ok(exit::OK)
}
