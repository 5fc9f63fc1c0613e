//! The `file_*` handlers: write a file atomically from the bytes after the request line, read
//! a page of one, stat a path, list a directory. Paths are `~`-expanded and relative to the
//! home, as a job's cwd.

use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use base64::Engine;

use super::{DaemonConfig, expand_cwd, home_dir};
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::files::MAX_READ_CHUNK;
use crate::protocol::{
    FileData, FileKind, FileList, FileReadRequest, FileStat, FileWriteRequest, FileWritten,
    PathRequest,
};
use crate::tree::apply::{finish, write_temp};
use crate::tree::at::{Dir, Kind, plain_mode};
use crate::tree::manifest::{kind_of, mode_of};

/// A request's path on this machine: `~`, `~/x` and relative paths are from the home.
pub fn resolve(path: &str) -> Result<PathBuf> {
    if path.is_empty() {
        return Err(Error::invalid("the path is empty"));
    }
    Ok(PathBuf::from(expand_cwd(Some(path), &home_dir())?))
}

/// The mode a written file gets unless the request names one.
const DEFAULT_MODE: u32 = 0o644;

pub fn file_write(
    req: &FileWriteRequest,
    content: &mut dyn BufRead,
    config: &DaemonConfig,
) -> Result<FileWritten> {
    if req.size > config.max_file_size {
        return Err(Error::new(
            ErrorCode::FileTooLarge,
            format!("{} bytes is over max_file_size ({} bytes)", req.size, config.max_file_size),
        )
        .with_hint(
            "raise max_file_size in ~/.codexd/config.yaml on the machine, or use sync push",
        ));
    }
    if let Some(mode) = req.mode.filter(|m| *m > 0o7777) {
        return Err(Error::invalid(format!("mode {mode:o} is over 07777")));
    }
    let mut target = resolve(&req.path)?;
    let current = std::fs::symlink_metadata(&target).ok();
    if current.as_ref().is_some_and(|m| m.is_symlink()) {
        if !req.follow_symlinks {
            return Err(Error::invalid(format!(
                "{} is a symlink; it is not followed unless asked (--follow-symlinks)",
                target.display()
            )));
        }
        target = std::fs::canonicalize(&target)
            .map_err(|e| Error::file_io(format!("following {}", target.display()), e))?;
    }
    if current.as_ref().is_some_and(|m| m.is_dir()) || req.path.ends_with('/') {
        return Err(Error::invalid(format!("{} is a directory", target.display())));
    }
    let parent = target.parent().unwrap_or(Path::new("/")).to_path_buf();
    if !parent.is_dir() {
        if !req.mkdir {
            return Err(Error::new(
                ErrorCode::FileNotFound,
                format!("the directory {} does not exist", parent.display()),
            )
            .with_hint("pass --mkdir (mkdir: true) to create it"));
        }
        std::fs::create_dir_all(&parent)
            .map_err(|e| Error::file_io(format!("creating {}", parent.display()), e))?;
    }
    let Some(name) = target.file_name() else {
        return Err(Error::invalid(format!("{} names no file", target.display())));
    };
    // The temp file is made and renamed inside the parent's handle: a parent swapped for a
    // symlink after this cannot move the write elsewhere.
    let dir = Dir::open(&parent)
        .map_err(|e| Error::file_io(format!("opening {}", parent.display()), e))?;
    let existing_mode = match dir.kind(name) {
        Ok(Kind::File) => dir.open_no_follow(name).and_then(|f| f.metadata()).ok(),
        _ => None,
    }
    .map(|m| mode_of(&m));
    let mode = req.mode.or(existing_mode).unwrap_or(DEFAULT_MODE);
    let mode = plain_mode(mode, req.keep_special_bits);
    let tmp = write_temp(&dir, content, req.size)?;
    finish(tmp, name, mode, None)?;
    Ok(FileWritten { path: target.display().to_string(), size: req.size, mode })
}

pub fn file_read(req: &FileReadRequest) -> Result<FileData> {
    let path = resolve(&req.path)?;
    let what = || format!("reading {}", path.display());
    let mut file = std::fs::File::open(&path).map_err(|e| Error::file_io(what(), e))?;
    let meta = file.metadata().map_err(|e| Error::file_io(what(), e))?;
    if !meta.is_file() {
        let hint = if meta.is_dir() { "a directory: use file ls" } else { "not a regular file" };
        return Err(Error::invalid(format!("{}: {hint}", path.display())));
    }
    let size = meta.len();
    let offset = req.offset.unwrap_or(0);
    if offset > size {
        return Err(Error::invalid(format!("offset {offset} is past the end ({size} bytes)")));
    }
    let limit = req.limit.unwrap_or(MAX_READ_CHUNK).min(MAX_READ_CHUNK);
    file.seek(SeekFrom::Start(offset)).map_err(|e| Error::file_io(what(), e))?;
    let mut data = Vec::with_capacity(limit.min(size - offset) as usize);
    file.take(limit).read_to_end(&mut data).map_err(|e| Error::file_io(what(), e))?;
    let next_offset = offset + data.len() as u64;
    Ok(FileData {
        path: path.display().to_string(),
        offset,
        size,
        data_b64: base64::engine::general_purpose::STANDARD.encode(&data),
        next_offset,
        eof: next_offset >= size,
    })
}

pub fn file_stat(req: &PathRequest) -> Result<FileStat> {
    let path = resolve(&req.path)?;
    Ok(stat_of(path.display().to_string(), &path))
}

/// What `path` is (not following a symlink), named `name`.
fn stat_of(name: String, path: &Path) -> FileStat {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return FileStat {
            path: name,
            exists: false,
            kind: None,
            size: None,
            mode: None,
            mtime: None,
            target: None,
        };
    };
    let kind = kind_of(&meta);
    let target = (kind == FileKind::Symlink)
        .then(|| std::fs::read_link(path).ok().map(|t| t.to_string_lossy().into_owned()))
        .flatten();
    FileStat {
        path: name,
        exists: true,
        kind: Some(kind),
        size: Some(meta.len()),
        mode: Some(mode_of(&meta)),
        mtime: meta.modified().ok().map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        target,
    }
}

pub fn file_ls(req: &PathRequest) -> Result<FileList> {
    let path = resolve(&req.path)?;
    let what = || format!("listing {}", path.display());
    let dir = std::fs::read_dir(&path).map_err(|e| match e.raw_os_error() {
        Some(20) => Error::invalid(format!("{} is not a directory", path.display())),
        _ => Error::file_io(what(), e),
    })?;
    let mut entries = Vec::new();
    for entry in dir {
        let entry = entry.map_err(|e| Error::file_io(what(), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        entries.push(stat_of(name, &entry.path()));
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(FileList { path: path.display().to_string(), entries })
}
