//! The original tool parsed its flags with Go's `flag` package, which takes a long flag with
//! one dash as well as two (`-machine gpu -cmd "..."`, `-tail=500`); its users' scripts have
//! them. Before clap sees the command line, a word `-NAME` or `-NAME=VALUE` whose NAME is one
//! of our long flags (two letters or more) becomes `--NAME...`. Short flags (`-m`, `-f`) are
//! one letter and untouched, as is the value of a flag that takes one and everything after
//! `--` (the job's own argv).

use std::collections::HashMap;
use std::ffi::OsString;

/// Every long flag of `cmd` and its subcommands, and whether it takes a value.
fn long_flags(cmd: &clap::Command, into: &mut HashMap<String, bool>) {
    for arg in cmd.get_arguments() {
        if let Some(long) = arg.get_long() {
            into.insert(long.to_string(), arg.get_action().takes_values());
        }
    }
    for sub in cmd.get_subcommands() {
        long_flags(sub, into);
    }
}

/// `args` (the program name first) with single-dash long flags given their second dash.
pub fn rewrite(args: impl IntoIterator<Item = OsString>, cmd: &clap::Command) -> Vec<OsString> {
    let mut flags = HashMap::new();
    long_flags(cmd, &mut flags);
    let mut out = Vec::new();
    // The previous word was a flag that takes its value from the next word.
    let mut value_next = false;
    let mut rest_is_argv = false;
    for (i, arg) in args.into_iter().enumerate() {
        let Some(text) = arg.to_str().filter(|_| i > 0 && !rest_is_argv) else {
            out.push(arg);
            continue;
        };
        if std::mem::take(&mut value_next) {
            out.push(arg);
            continue;
        }
        if text == "--" {
            rest_is_argv = true;
            out.push(arg);
            continue;
        }
        let long = text.strip_prefix("--").or_else(|| {
            let name = text.strip_prefix('-')?;
            let key = name.split_once('=').map_or(name, |(k, _)| k);
            (key.len() >= 2 && flags.contains_key(key)).then_some(name)
        });
        match long {
            Some(name) => {
                value_next = !name.contains('=') && flags.get(name).copied().unwrap_or(false);
                out.push(OsString::from(format!("--{name}")));
            }
            None => out.push(arg),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn words(line: &str) -> Vec<String> {
        let cmd = crate::codex_remote::Cli::command();
        let args = line.split(' ').map(OsString::from);
        rewrite(args, &cmd).into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn go_style_long_flags_get_their_second_dash() {
        assert_eq!(
            words("codex-remote exec start -machine gpu -cmd -la -shell=bash"),
            ["codex-remote", "exec", "start", "--machine", "gpu", "--cmd", "-la", "--shell=bash"]
        );
        assert_eq!(
            words("codex-remote exec logs -m gpu -id x -tail-lines 5 -f"),
            ["codex-remote", "exec", "logs", "-m", "gpu", "--id", "x", "--tail-lines", "5", "-f"]
        );
        // Not ours, or after `--`: as given.
        assert_eq!(
            words("codex-remote exec run -nosuch -- python -version"),
            ["codex-remote", "exec", "run", "-nosuch", "--", "python", "-version"]
        );
    }
}
