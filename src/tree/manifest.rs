//! Walking a tree into a manifest: every file, directory and symlink under the root with its
//! size, mtime and mode, in name order. `.gitignore` files are honoured (ripgrep's `ignore`
//! crate), `.git/` is left out unless asked for, `--exclude` globs too. Symlinks are entries
//! of their own and never followed, so a link to `/` or a loop is just a link. Sockets, fifos,
//! devices and names that are not UTF-8 are left out and reported as skipped. The walk of a
//! sync's source also counts what the `.git/` and `.gitignore` rules left out ([`walk_source`]),
//! so a summary can say so.

use std::collections::HashSet;
use std::fs::Metadata;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ignore::WalkBuilder;
use ignore::overrides::{Override, OverrideBuilder};

use crate::error::{Error, Result};
use crate::protocol::{Entry, FileKind, Skipped, TreeFilter};

/// The prefix of the temp files [`super::apply`] writes: never part of a manifest.
pub const TEMP_PREFIX: &str = ".codex-sync.";

/// How many ignored paths a manifest names ([`Manifest::ignored_sample`]).
pub const IGNORED_SAMPLE: usize = 5;

/// A tree's entries and what its walk left out.
#[derive(Debug, Default)]
pub struct Manifest {
    pub entries: Vec<Entry>,
    pub skipped: Vec<Skipped>,
    /// The sync temp files met on the way (a live sync's, or one a killed sync left).
    pub temps: Vec<std::path::PathBuf>,
    /// With [`walk_source`]: how many paths the `.git/` and `.gitignore` rules left out (an
    /// ignored directory counts once, its contents not at all), and the first few, in name
    /// order, a directory with a trailing `/`.
    pub ignored: u64,
    pub ignored_sample: Vec<String>,
}

/// Walks `root` (a directory; a missing one is an empty tree).
pub fn walk(root: &Path, filter: &TreeFilter) -> Result<Manifest> {
    walk_counting(root, filter, false)
}

/// Walks a sync's source: [`walk`], and counts what the ignore rules left out.
pub fn walk_source(root: &Path, filter: &TreeFilter) -> Result<Manifest> {
    walk_counting(root, filter, true)
}

fn walk_counting(root: &Path, filter: &TreeFilter, count_ignored: bool) -> Result<Manifest> {
    let mut manifest = Manifest::default();
    if std::fs::symlink_metadata(root).is_err() {
        return Ok(manifest);
    }
    if let Some(name) = &filter.only {
        return walk_one(root, name);
    }
    let mut overrides = OverrideBuilder::new(root);
    for glob in &filter.exclude {
        overrides
            .add(&format!("!{glob}"))
            .map_err(|e| Error::invalid(format!("exclude {glob:?}: {e}")))?;
    }
    let overrides = overrides.build().map_err(|e| Error::invalid(format!("exclude: {e}")))?;
    let excluded = overrides.clone();
    let include_git = filter.include_git;
    let gitignore = !filter.no_gitignore;
    let gits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let gits_seen = gits.clone();
    let mut builder = WalkBuilder::new(root);
    builder
        .hidden(false)
        .parents(false)
        .ignore(false)
        .git_global(false)
        .git_ignore(gitignore)
        .git_exclude(gitignore)
        .require_git(false)
        .follow_links(false)
        .overrides(overrides)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(move |e| {
            let name = e.file_name().to_string_lossy();
            let is_dir = e.file_type().is_some_and(|t| t.is_dir());
            let temp_dir = name.starts_with(TEMP_PREFIX) && is_dir;
            if !include_git && name == ".git" {
                // Left out here, so counted here: no second look needed for `.git`.
                if let Ok(mut seen) = gits_seen.lock() {
                    seen.push((e.path().to_path_buf(), is_dir));
                }
                return false;
            }
            !temp_dir
        });
    for item in builder.build() {
        let entry = match item {
            Ok(entry) => entry,
            Err(e) => {
                manifest.skipped.push(Skipped { path: String::new(), reason: e.to_string() });
                continue;
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            manifest.temps.push(entry.into_path());
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let Some(path) = slash_path(rel) else {
            let path = rel.to_string_lossy().into_owned();
            manifest.skipped.push(Skipped { path, reason: "the name is not UTF-8".into() });
            continue;
        };
        match entry.metadata() {
            Ok(meta) => match entry_of(path, entry.path(), &meta) {
                Ok(e) => manifest.entries.push(e),
                Err(skip) => manifest.skipped.push(skip),
            },
            Err(e) => manifest.skipped.push(Skipped { path, reason: e.to_string() }),
        }
    }
    if count_ignored {
        let gits = std::mem::take(&mut *gits.lock().unwrap_or_else(|e| e.into_inner()));
        let mut ignored: Vec<String> = gits
            .into_iter()
            .filter_map(|(abs, is_dir)| {
                let rel = slash_path(abs.strip_prefix(root).ok()?)?;
                Some(if is_dir { format!("{rel}/") } else { rel })
            })
            .collect();
        if gitignore {
            ignored.extend(gitignored_paths(root, &excluded, &manifest));
        }
        ignored.sort();
        manifest.ignored = ignored.len() as u64;
        ignored.truncate(IGNORED_SAMPLE);
        manifest.ignored_sample = ignored;
    }
    Ok(manifest)
}

/// The one entry `name` directly under `root` (a single-file sync), or none if it is missing.
fn walk_one(root: &Path, name: &str) -> Result<Manifest> {
    let mut manifest = Manifest::default();
    if name.contains('/') {
        return Err(Error::invalid(format!("only {}: a name, not a path", super::shown(name))));
    }
    let abs = root.join(super::rel_path(name)?);
    if let Ok(meta) = std::fs::symlink_metadata(&abs) {
        match entry_of(name.to_string(), &abs, &meta) {
            Ok(e) => manifest.entries.push(e),
            Err(skip) => manifest.skipped.push(skip),
        }
    }
    Ok(manifest)
}

/// The paths `.gitignore` rules left out: the names in the directories the walk yielded under a
/// directory with a `.gitignore` (all of them when `.git/info/exclude` exists) that are neither
/// an entry, nor skipped, nor `.git` (counted as the walk met it), nor a sync temp, nor
/// excluded by the user's globs. This reads those directories once more (names only, no stat),
/// which the `ignore` crate offers no hook to avoid; a tree without ignore files pays nothing.
fn gitignored_paths(root: &Path, excluded: &Override, manifest: &Manifest) -> Vec<String> {
    let mut ruled: Vec<&str> = manifest
        .entries
        .iter()
        .filter_map(|e| match e.path.as_str() {
            ".gitignore" => Some(""),
            path => path.strip_suffix("/.gitignore"),
        })
        .collect();
    if root.join(".git/info/exclude").is_file() {
        ruled.push("");
    }
    if ruled.is_empty() {
        return Vec::new();
    }
    let under_rules = |dir: &str| {
        ruled.iter().any(|r| r.is_empty() || dir == *r || dir.starts_with(&format!("{r}/")))
    };
    let mut known: HashSet<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
    known.extend(manifest.skipped.iter().map(|s| s.path.as_str()));
    let dirs = std::iter::once("")
        .chain(manifest.entries.iter().filter(|e| e.kind == FileKind::Dir).map(|e| &*e.path))
        .filter(|dir| under_rules(dir));
    let mut ignored = Vec::new();
    for dir in dirs {
        let Ok(names) = std::fs::read_dir(root.join(dir)) else { continue };
        for child in names.flatten() {
            let Some(name) = child.file_name().to_str().map(str::to_string) else { continue };
            let path = if dir.is_empty() { name.clone() } else { format!("{dir}/{name}") };
            if known.contains(path.as_str()) || name.starts_with(TEMP_PREFIX) || name == ".git" {
                continue;
            }
            let is_dir = child.file_type().is_ok_and(|t| t.is_dir());
            if excluded.matched(root.join(&path), is_dir).is_ignore() {
                continue;
            }
            ignored.push(if is_dir { format!("{path}/") } else { path });
        }
    }
    ignored
}

/// `a/b/c` for a relative path, or `None` when a name is not UTF-8.
fn slash_path(rel: &Path) -> Option<String> {
    let names: Option<Vec<&str>> = rel.iter().map(|n| n.to_str()).collect();
    Some(names?.join("/"))
}

/// The entry for `path` (at `abs`, not followed if a symlink), or why it is skipped.
pub fn entry_of(path: String, abs: &Path, meta: &Metadata) -> Result<Entry, Skipped> {
    let kind = kind_of(meta);
    let target = match kind {
        FileKind::Symlink => match std::fs::read_link(abs) {
            Ok(t) => match t.to_str() {
                Some(t) => Some(t.to_string()),
                None => return Err(Skipped { path, reason: "a link target not UTF-8".into() }),
            },
            Err(e) => return Err(Skipped { path, reason: e.to_string() }),
        },
        FileKind::Other => {
            return Err(Skipped { path, reason: "not a file, directory or symlink".into() });
        }
        _ => None,
    };
    Ok(Entry {
        path,
        kind,
        size: if kind == FileKind::Dir { 0 } else { meta.len() },
        mode: mode_of(meta),
        mtime_ns: mtime_ns(meta),
        target,
        hash: None,
    })
}

pub fn kind_of(meta: &Metadata) -> FileKind {
    let t = meta.file_type();
    if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_dir() {
        FileKind::Dir
    } else if t.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    }
}

/// The permission bits (setuid, setgid, sticky and rwx).
#[cfg(unix)]
pub fn mode_of(meta: &Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

/// Windows has no modes: what Unix would show for it.
#[cfg(not(unix))]
pub fn mode_of(meta: &Metadata) -> u32 {
    match (meta.is_dir(), meta.permissions().readonly()) {
        (true, _) => 0o755,
        (false, true) => 0o444,
        (false, false) => 0o644,
    }
}

pub fn mtime_ns(meta: &Metadata) -> i64 {
    match meta.modified().map(|t| t.duration_since(UNIX_EPOCH)) {
        Ok(Ok(d)) => d.as_nanos() as i64,
        Ok(Err(before)) => -(before.duration().as_nanos() as i64),
        Err(_) => 0,
    }
}

pub fn system_time(mtime_ns: i64) -> SystemTime {
    let d = Duration::from_nanos(mtime_ns.unsigned_abs());
    if mtime_ns >= 0 { UNIX_EPOCH + d } else { UNIX_EPOCH - d }
}

/// The BLAKE3 hash of a file's content, in hex.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(hasher.finalize().to_hex().to_string())
}
