//! Trees of files as sync sees them, the same code on both sides (codexd and codex-remote):
//! [`manifest`] walks a tree into entries (path, size, mtime, mode), [`diff`] compares two
//! manifests, [`frames`] carries files over a byte stream, [`apply`] writes what arrives, each
//! file atomically (a temp file in its directory, then a rename); [`tarball`] reads and writes
//! a tree as the original tool's tar.gz.

pub mod apply;
pub mod at;
pub mod diff;
pub mod frames;
pub mod manifest;
pub mod tarball;

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// A manifest or frame path as a relative path: `/`-separated names, none empty, `.` or `..`,
/// no NUL. Anything else could reach outside the tree, so it is refused.
pub fn rel_path(path: &str) -> Result<PathBuf> {
    let bad = |why: &str| Error::invalid(format!("path {} refused: {why}", shown(path)));
    if path.is_empty() || path.contains('\0') {
        return Err(bad("empty or holds a NUL byte"));
    }
    if path.starts_with('/') || path.contains('\\') && cfg!(windows) {
        return Err(bad("absolute"));
    }
    let mut out = PathBuf::new();
    for name in path.split('/') {
        match name {
            "" | "." => return Err(bad("an empty or `.` component")),
            ".." => return Err(bad("`..` would leave the tree")),
            _ => out.push(name),
        }
    }
    match out.components().all(|c| matches!(c, Component::Normal(_))) {
        true => Ok(out),
        false => Err(bad("not a plain relative path")),
    }
}

/// `path` quoted for a message, cut after 200 characters (a name may be KiBs long).
pub fn shown(path: &str) -> String {
    match path.char_indices().nth(200) {
        Some((cut, _)) => format!("{:?}… ({} bytes)", &path[..cut], path.len()),
        None => format!("{path:?}"),
    }
}

/// `root/rel` for a checked manifest path.
pub fn under(root: &Path, path: &str) -> Result<PathBuf> {
    Ok(root.join(rel_path(path)?))
}

/// Whether every directory between `root` and `root/rel` is a real directory (no symlink
/// leads the path out of the tree).
pub fn real_parents(root: &Path, rel: &Path) -> bool {
    let mut dir = root.to_path_buf();
    let names: Vec<_> = rel.iter().collect();
    names[..names.len().saturating_sub(1)].iter().all(|name| {
        dir.push(name);
        std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir())
    })
}

/// Reads `n` JSON lines of `T` from the bytes after a request line.
pub fn read_lines<T: serde::de::DeserializeOwned>(
    r: &mut dyn std::io::BufRead,
    n: u64,
) -> Result<Vec<T>> {
    use crate::error::ErrorCode;
    let mut out = Vec::with_capacity(n.min(1 << 20) as usize);
    for i in 0..n {
        let line = crate::wire::read_line_capped(&mut frames::ReadRef(r), 64 * 1024)
            .map_err(|e| Error::io("reading the request's lines", e))?;
        let Some(crate::wire::Line::Text(bytes)) = line else {
            let msg = format!("line {} of {n} is missing or too long", i + 1);
            return Err(Error::new(ErrorCode::BadRequest, msg));
        };
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(ErrorCode::BadRequest, format!("line {} of {n}: {e}", i + 1))
        })?;
        out.push(value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths() {
        assert_eq!(rel_path("a/b c/d\nx").unwrap(), PathBuf::from("a/b c/d\nx"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/.", "a\0b"] {
            assert!(rel_path(bad).is_err(), "{bad:?}");
        }
    }
}
