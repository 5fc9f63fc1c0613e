//! Where serve lets a job run and a file or sync path point: inside the home dir or
//! `allowed_cwd_roots`, with symlinks resolved.

use std::path::{Component, Path, PathBuf};

use super::super::{expand_cwd, home_dir};
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::ExecStartRequest;

/// Refuses a cwd outside the home and `allowed_cwd_roots`, with symlinks resolved.
pub(crate) fn check_cwd(req: &ExecStartRequest, roots: &[PathBuf]) -> Result<()> {
    let cwd = PathBuf::from(expand_cwd(req.cwd.as_deref(), &home_dir())?);
    check_inside(&cwd, "cwd", roots)
}

/// Refuses a path outside the home and `allowed_cwd_roots`, with symlinks resolved.
pub(super) fn check_inside(cwd: &Path, what: &str, roots: &[PathBuf]) -> Result<()> {
    let home = home_dir();
    let resolved = resolve_existing(cwd)?;
    let inside = std::iter::once(home.as_path())
        .chain(roots.iter().map(PathBuf::as_path))
        .filter_map(|r| r.canonicalize().ok())
        .any(|r| resolved.starts_with(r));
    if inside {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::Forbidden,
        format!("{what} {} is outside the home dir and allowed_cwd_roots", cwd.display()),
    )
    .with_hint("add the directory to allowed_cwd_roots in codexd's config"))
}

/// The path with the symlinks of its longest existing prefix resolved; the missing rest may not
/// climb with `..`.
fn resolve_existing(path: &Path) -> Result<PathBuf> {
    let mut missing = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        if let Ok(real) = cur.canonicalize() {
            return Ok(missing.iter().rev().fold(real, |p, c: &std::ffi::OsString| p.join(c)));
        }
        let Some(name) = cur.file_name().map(|n| n.to_os_string()) else {
            return Err(Error::invalid(format!("cwd {} cannot be resolved", path.display())));
        };
        if matches!(cur.components().next_back(), Some(Component::ParentDir)) {
            return Err(Error::invalid("cwd climbs with .. below a missing directory"));
        }
        missing.push(name);
        cur.pop();
    }
}

/// Refuses a file or sync path outside the home and `allowed_cwd_roots` (symlinks resolved).
pub fn check_file_path(path: &str, roots: &[PathBuf]) -> Result<()> {
    check_inside(&crate::daemon::files::resolve(path)?, "path", roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_dirs_resolve_through_their_existing_parent() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        assert_eq!(resolve_existing(&dir.path().join("a/b")).unwrap(), real.join("a/b"));
        assert!(resolve_existing(&dir.path().join("a/../../x")).is_err());
    }
}
