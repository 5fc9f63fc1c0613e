//! Comparing a source manifest with a destination manifest, as rsync's quick check does: a
//! file whose size and mtime are the same is unchanged; one whose size differs is sent; one of
//! the same size with another mtime is a `check` (its content hash decides).

use std::collections::HashMap;

use crate::protocol::{Entry, FileKind, SyncDiff};

/// What the destination needs to become the source. With `delete`, destination paths the
/// source lacks are listed, deepest first.
pub fn diff(source: &[Entry], dest: &[Entry], delete: bool) -> SyncDiff {
    let by_path: HashMap<&str, &Entry> = dest.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut out = SyncDiff::default();
    for s in source {
        let Some(d) = by_path.get(s.path.as_str()) else {
            out.send.push(s.clone());
            continue;
        };
        let same_mode = s.mode == d.mode || s.kind == FileKind::Symlink;
        match (s.kind, d.kind) {
            (a, b) if a != b => out.send.push(s.clone()),
            (FileKind::File, _) if s.size != d.size => out.send.push(s.clone()),
            (FileKind::File, _) if s.mtime_ns != d.mtime_ns => out.check.push(s.clone()),
            (FileKind::Symlink, _) if s.target != d.target => out.send.push(s.clone()),
            _ if !same_mode => out.meta.push(s.clone()),
            _ => out.unchanged += 1,
        }
    }
    if delete {
        let wanted: std::collections::HashSet<&str> =
            source.iter().map(|e| e.path.as_str()).collect();
        let mut gone: Vec<String> = dest
            .iter()
            .filter(|d| !wanted.contains(d.path.as_str()))
            .map(|d| d.path.clone())
            .collect();
        // Children sort after their parent: reversed, a directory comes after its contents.
        gone.sort();
        gone.reverse();
        out.delete = gone;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, mtime_ns: i64) -> Entry {
        Entry {
            path: path.into(),
            kind: FileKind::File,
            size,
            mode: 0o644,
            mtime_ns,
            target: None,
            hash: None,
        }
    }

    #[test]
    fn quick_check_then_hash() {
        let src =
            [file("same", 1, 1), file("bigger", 2, 1), file("touched", 1, 2), file("new", 1, 1)];
        let mut exec = file("exec", 1, 1);
        exec.mode = 0o755;
        let dst =
            [file("same", 1, 1), file("bigger", 1, 1), file("touched", 1, 1), file("exec", 1, 1)];
        let mut src = src.to_vec();
        src.push(exec);
        let d = diff(&src, &dst, false);
        let paths = |v: &[Entry]| v.iter().map(|e| e.path.clone()).collect::<Vec<_>>();
        assert_eq!(paths(&d.send), ["bigger", "new"]);
        assert_eq!(paths(&d.check), ["touched"]);
        assert_eq!(paths(&d.meta), ["exec"]);
        assert_eq!(d.unchanged, 1);
        assert!(d.delete.is_empty());
    }

    #[test]
    fn deletions_come_deepest_first() {
        let dst = [file("a", 1, 1), file("a/b", 1, 1), file("a-b", 1, 1), file("keep", 1, 1)];
        let d = diff(&[file("keep", 1, 1)], &dst, true);
        assert_eq!(d.delete, ["a/b", "a-b", "a"]);
    }
}
