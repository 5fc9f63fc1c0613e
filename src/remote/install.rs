//! Which `codexd` binary to put on a machine (for `machine up`).
//!
//! codexd runs on Linux only. The best binary is the static (musl) build of this release,
//! `dist/linux-<arch>/codexd` from `make build-linux`: it runs on any Linux of that
//! architecture, old glibc or none. It is looked for in `$CODEX_REMOTE_DIST`, in the `dist/`
//! that holds this codex-remote (`dist/<os>-<arch>/codex-remote`), and in the `dist/` of the
//! checkout it was built in (`target/<profile>/codex-remote`). Only when there is none, and this
//! computer is a Linux of the same architecture, is the `codexd` next to codex-remote used.

use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorCode, Result};

/// Where this codex-remote runs and where it looks for builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalBuilds {
    /// `std::env::consts::OS` of this computer (`linux`, `macos`, `windows`).
    pub os: String,
    /// Its architecture (`x86_64`, `aarch64`).
    pub arch: String,
    /// `dist/` directories, best first.
    pub dist_dirs: Vec<PathBuf>,
    /// The directory of the codex-remote executable.
    pub exe_dir: Option<PathBuf>,
}

impl LocalBuilds {
    /// This process's view: see the module docs for the `dist/` directories searched.
    pub fn current() -> Self {
        let exe_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
        let mut dist_dirs: Vec<PathBuf> = std::env::var_os("CODEX_REMOTE_DIST")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .into_iter()
            .collect();
        if let Some(dir) = &exe_dir {
            // dist/<os>-<arch>/codex-remote, or <checkout>/target/<profile>/codex-remote.
            dist_dirs.extend(dir.parent().map(Path::to_path_buf));
            dist_dirs.extend(dir.ancestors().nth(2).map(|checkout| checkout.join("dist")));
        }
        LocalBuilds {
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            dist_dirs,
            exe_dir,
        }
    }
}

/// The `dist/` name of an architecture as `uname -m` prints it (`arm64` and `amd64` too).
pub fn dist_arch(uname_m: &str) -> Option<&'static str> {
    match uname_m.trim() {
        "x86_64" | "amd64" => Some("x86_64"),
        "aarch64" | "arm64" | "aarch64_be" => Some("aarch64"),
        _ => None,
    }
}

/// The codexd binary to install on a machine whose `uname -s` / `uname -m` are `remote_os` /
/// `remote_arch`: `dist/linux-<arch>/codexd` first, then (on a Linux of the same architecture)
/// the codexd next to codex-remote.
pub fn codexd_for(remote_os: &str, remote_arch: &str, local: &LocalBuilds) -> Result<PathBuf> {
    if !remote_os.trim().eq_ignore_ascii_case("linux") {
        return Err(Error::new(
            ErrorCode::InvalidArgument,
            format!("the machine runs {}; codexd runs on Linux only", remote_os.trim()),
        ));
    }
    let arch = dist_arch(remote_arch).ok_or_else(|| {
        Error::new(
            ErrorCode::InvalidArgument,
            format!(
                "no codexd build for the architecture {:?} (x86_64 and aarch64 are built)",
                remote_arch.trim()
            ),
        )
    })?;
    let static_build = local
        .dist_dirs
        .iter()
        .map(|d| d.join(format!("linux-{arch}")).join("codexd"))
        .find(|p| p.is_file());
    if let Some(path) = static_build {
        return Ok(path);
    }
    let same_system = local.os == "linux" && dist_arch(&local.arch) == Some(arch);
    let sibling =
        local.exe_dir.as_ref().map(|d| d.join("codexd")).filter(|p| same_system && p.is_file());
    sibling.ok_or_else(|| {
        let searched: Vec<String> = local.dist_dirs.iter().map(|d| d.display().to_string()).collect();
        Error::new(
            ErrorCode::CodexdNotFound,
            format!("no codexd for linux-{arch} here (searched: {})", searched.join(", ")),
        )
        .with_hint("build it with `make build-linux` (dist/linux-<arch>/codexd), or set CODEX_REMOTE_DIST to a release's dist/ directory")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"codexd").unwrap();
    }

    fn local(os: &str, arch: &str, root: &Path) -> LocalBuilds {
        LocalBuilds {
            os: os.into(),
            arch: arch.into(),
            dist_dirs: vec![root.join("missing"), root.join("dist")],
            exe_dir: Some(root.join("bin")),
        }
    }

    #[test]
    fn the_static_build_wins_wherever_codex_remote_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        touch(&root.join("dist/linux-aarch64/codexd"));
        touch(&root.join("bin/codexd"));
        for (os, arch) in [("macos", "aarch64"), ("windows", "x86_64"), ("linux", "aarch64")] {
            let got = codexd_for("Linux", "arm64", &local(os, arch, root)).unwrap();
            assert_eq!(got, root.join("dist/linux-aarch64/codexd"), "{os} {arch}");
        }
    }

    #[test]
    fn the_sibling_codexd_only_for_the_same_linux() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        touch(&root.join("bin/codexd"));
        let got = codexd_for("Linux", "x86_64", &local("linux", "x86_64", root)).unwrap();
        assert_eq!(got, root.join("bin/codexd"));
        // A Mac's own codexd (if any) would not run on Linux; another arch would not either.
        let err = codexd_for("Linux", "x86_64", &local("macos", "x86_64", root)).unwrap_err();
        assert_eq!(err.code, ErrorCode::CodexdNotFound);
        assert!(err.hint.unwrap().contains("make build-linux"));
        assert!(codexd_for("Linux", "aarch64", &local("linux", "x86_64", root)).is_err());
    }

    #[test]
    fn only_linux_machines_of_known_arches() {
        let tmp = tempfile::tempdir().unwrap();
        let l = local("linux", "x86_64", tmp.path());
        assert_eq!(codexd_for("Darwin", "arm64", &l).unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(
            codexd_for("Linux", "riscv64", &l).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(dist_arch("amd64\n"), Some("x86_64"));
    }
}
