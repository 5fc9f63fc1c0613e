//! What this build is: the crate version, the git commit (recorded by `build.rs`), the protocol
//! version and the target. Both binaries print it with `--version` (`--version --json`).

use clap::Args;
use serde::Serialize;

/// The wire protocol's version (re-exported as `protocol::PROTOCOL_VERSION`): bumped when a
/// change would break an older peer.
pub const PROTOCOL_VERSION: u32 = 1;
/// The crate version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// `git rev-parse --short HEAD` at build time, or "unknown" outside git.
pub const COMMIT: &str = env!("CODEX_RUNNER_COMMIT");
/// The target triple this binary was built for.
pub const TARGET: &str = env!("CODEX_RUNNER_TARGET");

/// `--version [--json]`, flattened into both command lines (clap's own version flag is off).
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Print the version, git commit and protocol version.
    #[arg(short = 'V', long)]
    pub version: bool,
    /// With --version: print it as one JSON object.
    #[arg(long, requires = "version")]
    pub json: bool,
}

/// For a command line without a subcommand: prints the version if `--version` was given, else
/// clap's "missing subcommand" usage error (exit 2).
pub fn print_or_usage<C: clap::CommandFactory>(
    name: &'static str,
    args: &VersionArgs,
) -> std::process::ExitCode {
    if !args.version {
        let e =
            C::command().error(clap::error::ErrorKind::MissingSubcommand, "a command is needed");
        return clap_exit(&e);
    }
    BuildInfo::of(name).print(args.json);
    std::process::ExitCode::SUCCESS
}

/// A clap error (or help, or version) printed as clap's `.exit()` prints it, and its exit code
/// (0 for help, 2 for a usage error) for `main` to return: the library never exits the process.
pub fn clap_exit(e: &clap::Error) -> std::process::ExitCode {
    let _ = e.print();
    std::process::ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

/// The version the binary at `path` reports with `--version --json`: `None` when it exits with
/// a failure or prints no version. `Err` when it cannot be run.
pub fn reported_by(
    path: &std::path::Path,
) -> std::io::Result<(Option<String>, std::process::ExitStatus)> {
    let out = std::process::Command::new(path).args(["--version", "--json"]).output()?;
    let info: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
    let version = info.as_ref().and_then(|i| i["version"].as_str()).map(String::from);
    Ok((version.filter(|_| out.status.success()), out.status))
}

/// The `--version --json` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildInfo {
    pub name: &'static str,
    pub version: &'static str,
    pub commit: &'static str,
    pub protocol: u32,
    pub target: &'static str,
}

impl BuildInfo {
    pub fn of(name: &'static str) -> Self {
        BuildInfo {
            name,
            version: VERSION,
            commit: COMMIT,
            protocol: PROTOCOL_VERSION,
            target: TARGET,
        }
    }

    /// `codexd 0.1.0 (commit abc1234, protocol 1, x86_64-unknown-linux-musl)`.
    pub fn text(&self) -> String {
        let BuildInfo { name, version, commit, protocol, target } = self;
        format!("{name} {version} (commit {commit}, protocol {protocol}, {target})")
    }

    /// Prints the version line (or JSON) on stdout.
    pub fn print(&self, json: bool) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = if json {
            crate::wire::write_line(&mut out, self)
        } else {
            writeln!(out, "{}", self.text()).and_then(|()| out.flush())
        };
    }
}

/// Orders two dotted versions by their numeric parts (`0.10.0` > `0.9.1`); text after a `-`
/// (pre-release) is ignored.
pub fn compare(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| -> Vec<u64> {
        let core = v.split(['-', '+']).next().unwrap_or("");
        core.split('.').map(|p| p.parse().unwrap_or(0)).collect()
    };
    parts(a).cmp(&parts(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn version_text_names_everything() {
        let text = BuildInfo::of("codexd").text();
        assert!(text.starts_with(&format!("codexd {VERSION} (commit ")), "{text}");
        assert!(text.contains(&format!("protocol {PROTOCOL_VERSION}")), "{text}");
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare("0.10.0", "0.9.1"), Ordering::Greater);
        assert_eq!(compare("0.1.0", "0.1.0"), Ordering::Equal);
        assert_eq!(compare("0.1.0-rc1", "0.1.0"), Ordering::Equal);
        assert_eq!(compare("0.0.9", "0.1.0"), Ordering::Less);
    }
}
