//! rsync's path rules for sync: where a tree or a single file lands (a trailing `/` means the
//! contents), what a local `--src`/`--dst` may be, and the roots a single file is synced
//! between.

use std::path::PathBuf;

use crate::codex_remote::usage;
use crate::error::{Error, Result};
use crate::protocol::{Direction, Frame, Skipped};
use crate::tree::rel_path;

/// What a push's local `--src` is: `None` for a directory, its metadata for a file (rsync copies
/// a single file); anything else is refused.
pub(super) fn local_source(src: &str) -> Result<Option<std::fs::Metadata>> {
    match std::fs::metadata(src) {
        Ok(meta) if meta.is_dir() => Ok(None),
        Ok(meta) if meta.is_file() => Ok(Some(meta)),
        Ok(_) => Err(usage(format!(
            "--src {src} is a socket, fifo or device: sync takes a directory or a file"
        ))),
        Err(e) => Err(usage(format!("--src {src}: {e}"))),
    }
}

/// A pull's local tree must be a directory (or missing: it is created).
pub(super) fn check_local_tree(tree: &str, dst: &str) -> Result<()> {
    match std::fs::metadata(tree) {
        Ok(meta) if !meta.is_dir() => Err(usage(format!("--dst {dst} is not a directory"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(usage(format!("--dst {dst}: a parent is not a directory")))
        }
        _ => Ok(()),
    }
}

pub(super) fn skipped_source(skip: Skipped) -> Error {
    usage(format!("--src {}: {}", skip.path, skip.reason))
}

/// Whether a path ends in `/` (or names `.`, `..` or `~`): rsync reads it as a directory's
/// contents.
pub(super) fn names_contents(path: &str) -> bool {
    matches!(last_name(path), "" | "." | ".." | "~")
}

pub(super) fn last_name(path: &str) -> &str {
    let separator = |c: char| c == '/' || (cfg!(windows) && c == '\\');
    path.rsplit(separator).next().unwrap_or_default()
}

/// rsync's path rule: the directory that becomes the same as `src`. A `src` ending in `/` (or
/// naming `.`, `..` or `~`) means its contents, which go into `dst` itself; any other `src` is
/// the directory itself, which goes into `dst/<its name>`.
pub fn landing(src: &str, dst: &str) -> String {
    if names_contents(src) {
        return dst.to_string();
    }
    let name = last_name(src);
    let parent = dst.trim_end_matches(|c: char| c == '/' || (cfg!(windows) && c == '\\'));
    if parent.is_empty() && dst.is_empty() {
        return name.to_string();
    }
    format!("{parent}/{name}")
}

/// rsync's rule for a single file: into `dst` when it ends in `/` or is a directory, else
/// `dst` is the file's new name. The directory and the name there; `here` stands for an
/// empty directory (`~` on the machine, `.` locally).
pub(super) fn file_landing(src: &str, dst: &str, dst_is_dir: bool, here: &str) -> (String, String) {
    if dst_is_dir || names_contents(dst) {
        let dir = if dst.is_empty() { here } else { dst };
        return (dir.to_string(), last_name(src).to_string());
    }
    split_path(dst, here)
}

/// A file's path as its directory (`here` if it has none) and its name.
pub(super) fn split_path(path: &str, here: &str) -> (String, String) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/".to_string(), name.to_string()),
        Some((dir, name)) => (dir.to_string(), name.to_string()),
        None => (here.to_string(), path.to_string()),
    }
}

/// Where a sync reads and writes. For a single file, `one` names it in each root (`--dst
/// d/b.txt` renames it); manifest and frame paths carry its name on the machine.
pub(super) struct Roots {
    pub(super) local: PathBuf,
    pub(super) remote: String,
    pub(super) one: Option<OneFile>,
}

pub(super) struct OneFile {
    pub(super) local: String,
    pub(super) remote: String,
}

impl Roots {
    /// A single file `src` synced to `dst` by rsync's rule.
    pub(super) fn one_file(direction: Direction, src: &str, dst: &str, dst_is_dir: bool) -> Roots {
        // A path without a directory is under the home on the machine, the current one here.
        let (src_here, dst_here) = match direction {
            Direction::Push => (".", "~"),
            Direction::Pull => ("~", "."),
        };
        let (src_dir, src_name) = split_path(src, src_here);
        let (dst_dir, dst_name) = file_landing(src, dst, dst_is_dir, dst_here);
        let (local, remote, one) = match direction {
            Direction::Push => (src_dir, dst_dir, OneFile { local: src_name, remote: dst_name }),
            Direction::Pull => (dst_dir, src_dir, OneFile { local: dst_name, remote: src_name }),
        };
        Roots { local: PathBuf::from(local), remote, one: Some(one) }
    }

    pub(super) fn remote_name(&self) -> String {
        self.one.as_ref().map(|one| one.remote.clone()).unwrap_or_default()
    }

    pub(super) fn local_file(&self) -> PathBuf {
        self.local.join(self.one.as_ref().map(|one| one.local.as_str()).unwrap_or_default())
    }

    /// The local file of a manifest path.
    pub(super) fn local_path(&self, path: &str) -> Result<PathBuf> {
        match &self.one {
            Some(one) if one.remote == path => Ok(self.local.join(&one.local)),
            _ => Ok(self.local.join(rel_path(path)?)),
        }
    }

    /// A frame from the machine, named as the local file.
    pub(super) fn local_frame(&self, frame: Frame) -> Frame {
        let Some(one) = &self.one else { return frame };
        let local = |path: String| if path == one.remote { one.local.clone() } else { path };
        match frame {
            Frame::File { path, size, mode, mtime_ns } => {
                Frame::File { path: local(path), size, mode, mtime_ns }
            }
            Frame::Symlink { path, target } => Frame::Symlink { path: local(path), target },
            Frame::Meta { path, mode, mtime_ns } => {
                Frame::Meta { path: local(path), mode, mtime_ns }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Direction, Roots, file_landing, landing};

    #[test]
    fn a_single_file_lands_as_rsync_lands_it() {
        let at = |dst, is_dir| file_landing("src/a.txt", dst, is_dir, "~");
        let pair = |d: &str, n: &str| (d.to_string(), n.to_string());
        assert_eq!(at("d/", false), pair("d/", "a.txt"));
        assert_eq!(at("d", true), pair("d", "a.txt"));
        assert_eq!(at("d/b.txt", false), pair("d", "b.txt"));
        assert_eq!(at("b.txt", false), pair("~", "b.txt"));
        assert_eq!(at("/b.txt", false), pair("/", "b.txt"));
        assert_eq!(at("~", false), pair("~", "a.txt"));
        assert_eq!(at(".", false), pair(".", "a.txt"));
        assert_eq!(at("", false), pair("~", "a.txt"));
        // A pull: the file's directory on the machine, its new name here.
        let roots = Roots::one_file(Direction::Pull, "r.txt", "out/x.txt", false);
        let one = roots.one.as_ref().unwrap();
        assert_eq!((roots.local.to_str(), roots.remote.as_str()), (Some("out"), "~"));
        assert_eq!((one.local.as_str(), one.remote.as_str()), ("x.txt", "r.txt"));
        let roots = Roots::one_file(Direction::Push, "a.txt", "d/", false);
        let one = roots.one.as_ref().unwrap();
        assert_eq!((roots.local.to_str(), roots.remote.as_str()), (Some("."), "d/"));
        assert_eq!((one.local.as_str(), one.remote.as_str()), ("a.txt", "a.txt"));
    }

    #[test]
    fn a_trailing_slash_means_the_contents_as_rsync_has_it() {
        assert_eq!(landing("tree/", "out"), "out");
        assert_eq!(landing("tree", "out"), "out/tree");
        assert_eq!(landing("a/tree", "out/"), "out/tree");
        assert_eq!(landing(".", "out"), "out");
        assert_eq!(landing("./", "out"), "out");
        assert_eq!(landing("a/.", "out"), "out");
        assert_eq!(landing("~", "out"), "out");
        assert_eq!(landing("~/proj", "~/x"), "~/x/proj");
        assert_eq!(landing("tree", "/"), "/tree");
        assert_eq!(landing("tree", ""), "tree");
    }
}
