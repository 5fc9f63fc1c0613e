//! `version` and `update --check|--yes` for both binaries: replace the running binary with the
//! one a release location holds, after checking it.
//!
//! A release location is a `dist/` as `make build-linux` (`scripts/build-dist.sh`) writes it:
//! `SHA256SUMS` and `<os>-<arch>/<binary>`, served over `http://` or read from a directory
//! (`--from URL|DIR`, or `update_url` in the config). The new binary is downloaded next to the
//! running one, its SHA-256 checked against `SHA256SUMS`, and asked for `--version --json`;
//! only then is the running binary renamed aside and the new one renamed over it, and the old
//! one is deleted only once the new one, in place, answers `--version` again. A wrong checksum,
//! an unreachable location or a new binary that does not run changes nothing and says why.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorCode, Result};
use crate::version::{BuildInfo, VERSION};

/// The largest binary downloaded.
const MAX_BINARY: u64 = 512 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Only report whether the release location holds a newer build.
    #[arg(long)]
    pub check: bool,
    /// Replace this binary (without it, nothing is changed).
    #[arg(long)]
    pub yes: bool,
    /// Replace it even when the release is not newer (a reinstall).
    #[arg(long)]
    pub force: bool,
    /// The release location: an `http://` URL or a directory holding `SHA256SUMS` and
    /// `<os>-<arch>/<binary>` [default: `update_url` in the config].
    #[arg(long, value_name = "URL|DIR")]
    pub from: Option<String>,
}

/// What `update` prints.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateReport {
    pub binary: &'static str,
    pub current_version: &'static str,
    pub latest_version: String,
    pub update_available: bool,
    /// `<os>-<arch>/<binary>` in the release.
    pub asset: String,
    pub sha256: String,
    pub source: String,
    /// This run replaced the binary.
    pub updated: bool,
    pub path: String,
}

/// The `dist/` name of this system: `linux-x86_64`, `darwin-aarch64`, `windows-x86_64`, ...
pub fn platform_dir() -> String {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    format!("{os}-{}", std::env::consts::ARCH)
}

/// Runs `update` for `binary` (`codexd` or `codex-remote`) with the configured location.
pub fn run(
    binary: &'static str,
    args: &UpdateArgs,
    configured: Option<&str>,
) -> Result<UpdateReport> {
    let source = args.from.as_deref().or(configured).ok_or_else(|| {
        Error::new(ErrorCode::ConfigError, "no release location to update from")
            .with_hint("pass --from URL|DIR (a dist/ made by `make build-linux`, served over http:// or a directory), or set `update_url` in the config")
    })?;
    let source = Source::parse(source)?;
    let exe_name = if cfg!(windows) { format!("{binary}.exe") } else { binary.to_string() };
    let asset = format!("{}/{exe_name}", platform_dir());
    let sums = String::from_utf8_lossy(&source.fetch("SHA256SUMS")?).into_owned();
    let sha256 = sums
        .lines()
        .find_map(|l| {
            let (hash, name) = l.split_once(char::is_whitespace)?;
            (name.trim_start().trim_start_matches('*') == asset).then(|| hash.to_lowercase())
        })
        .ok_or_else(|| {
            Error::invalid(format!("{} lists no {asset}", source.describe("SHA256SUMS")))
                .with_hint("build it there with `make build-linux` (or build-all)")
        })?;
    let bytes = source.fetch(&asset)?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != sha256 {
        return Err(Error::new(
            ErrorCode::ChecksumMismatch,
            format!(
                "{} has SHA-256 {actual}, but SHA256SUMS says {sha256}: nothing was changed",
                source.describe(&asset)
            ),
        ));
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("finding this executable", e))?;
    let staged = Staged::write(&exe, &bytes)?;
    let latest = staged.version()?;
    let update_available = crate::version::compare(&latest, VERSION).is_gt();
    let mut report = UpdateReport {
        binary,
        current_version: VERSION,
        latest_version: latest,
        update_available,
        asset,
        sha256,
        source: source.to_string(),
        updated: false,
        path: exe.display().to_string(),
    };
    if args.check || !(update_available || args.force) {
        return Ok(report);
    }
    if !args.yes {
        return Err(Error::new(
            ErrorCode::Usage,
            format!(
                "{binary} {VERSION} would be replaced by {} from {}: add --yes to do it",
                report.latest_version, report.source
            ),
        ));
    }
    staged.replace(&exe)?;
    report.updated = true;
    Ok(report)
}

/// Where a release is.
enum Source {
    Url(String),
    Dir(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Url(u) => f.write_str(u),
            Source::Dir(d) => write!(f, "{}", d.display()),
        }
    }
}

impl Source {
    fn parse(text: &str) -> Result<Self> {
        let text = text.trim().trim_end_matches('/');
        if text.starts_with("https://") {
            return Err(Error::new(
                ErrorCode::ConfigError,
                format!("{text}: https is not built into this binary"),
            )
            .with_hint("serve the dist/ over http:// on a trusted network, or download it and pass --from DIR"));
        }
        if text.starts_with("http://") {
            return Ok(Source::Url(text.to_string()));
        }
        Ok(Source::Dir(PathBuf::from(text)))
    }

    fn describe(&self, name: &str) -> String {
        match self {
            Source::Url(u) => format!("{u}/{name}"),
            Source::Dir(d) => d.join(name).display().to_string(),
        }
    }

    fn fetch(&self, name: &str) -> Result<Vec<u8>> {
        let what = self.describe(name);
        match self {
            Source::Dir(dir) => {
                let file = std::fs::File::open(dir.join(name)).map_err(|e| {
                    Error::new(ErrorCode::ConnectFailed, format!("reading {what}: {e}"))
                })?;
                let mut bytes = Vec::new();
                file.take(MAX_BINARY).read_to_end(&mut bytes).map_err(|e| {
                    Error::new(ErrorCode::ConnectFailed, format!("reading {what}: {e}"))
                })?;
                Ok(bytes)
            }
            Source::Url(_) => {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_connect(Some(std::time::Duration::from_secs(10)))
                    .build()
                    .into();
                let mut resp = agent.get(&what).call().map_err(|e| {
                    Error::new(ErrorCode::ConnectFailed, format!("fetching {what}: {e}"))
                })?;
                resp.body_mut().with_config().limit(MAX_BINARY).read_to_vec().map_err(|e| {
                    Error::new(ErrorCode::ConnectFailed, format!("fetching {what}: {e}"))
                })
            }
        }
    }
}

/// The new binary, written next to the running one (same file system, so renames are atomic).
struct Staged {
    path: PathBuf,
}

impl Staged {
    fn write(exe: &Path, bytes: &[u8]) -> Result<Self> {
        let dir = exe.parent().unwrap_or(Path::new("."));
        let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or("binary");
        let path = dir.join(format!(".{name}.new.{}", std::process::id()));
        let fail = |e| Error::io(format!("writing {}", path.display()), e);
        match crate::platform::write_new_file(&path, bytes, 0o755) {
            Ok(()) => Ok(Staged { path }),
            // A name that was there is not ours to remove.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(fail(e)),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(fail(e))
            }
        }
    }

    /// The new binary's version, from its own `--version --json`: proof that it runs here.
    fn version(&self) -> Result<String> {
        let (version, status) = crate::version::reported_by(&self.path)
            .map_err(|e| Error::internal(format!("running {}", self.path.display()), e))?;
        version.ok_or_else(|| {
            Error::new(
                ErrorCode::Internal,
                format!("the new binary does not run here ({status}): nothing was changed"),
            )
        })
    }

    /// Puts the new binary in place: the old one aside, the new one in, the old one removed
    /// once the new one answers `--version` in place (put back otherwise).
    fn replace(self, exe: &Path) -> Result<()> {
        let old = exe.with_extension("old");
        std::fs::rename(exe, &old)
            .map_err(|e| Error::io(format!("moving {} aside", exe.display()), e))?;
        if let Err(e) = std::fs::rename(&self.path, exe) {
            let _ = std::fs::rename(&old, exe);
            return Err(Error::io(format!("putting the new {} in place", exe.display()), e));
        }
        let runs = std::process::Command::new(exe)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !runs {
            let _ = std::fs::rename(&old, exe);
            return Err(Error::new(
                ErrorCode::Internal,
                format!("the new {} did not run in place; the old one is back", exe.display()),
            ));
        }
        let _ = std::fs::remove_file(&old);
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `version`: the version line, or `--json`.
pub fn print_version(binary: &'static str, json: bool) {
    BuildInfo::of(binary).print(json);
}
