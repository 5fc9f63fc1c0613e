//! Writing a tree from a frame stream, and writing one file atomically.
//!
//! Every file is written to a temp file in its own directory (`.codex-sync.*.tmp`), given its
//! mode and mtime, then renamed over the old one: a reader, or a transfer cut at any byte,
//! sees the old file or the new one, never half of one (a cut leaves at most a temp file,
//! removed when the process ends normally, and never listed in a manifest). Nothing is written
//! through a symlink: every directory between the root and a file must be a real directory.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tempfile::NamedTempFile;

use super::frames::{ReadRef, copy_large, read_frame};
use super::manifest::{TEMP_PREFIX, system_time};
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::files::{FRAME_CHANGED, FRAME_OK};
use crate::protocol::{Frame, Skipped, TransferStats};

/// Copies exactly `size` bytes of `content` into a new temp file in `dir`.
pub fn write_temp(dir: &Path, content: &mut dyn Read, size: u64) -> Result<NamedTempFile> {
    let what = || format!("writing into {}", dir.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::file_io(what(), e))?;
    let copied = copy_large(&mut content.take(size), tmp.as_file_mut())
        .map_err(|e| Error::file_io(what(), e))?;
    if copied < size {
        return Err(Error::new(
            ErrorCode::ProtocolError,
            format!("the content ended after {copied} of {size} bytes"),
        ));
    }
    Ok(tmp)
}

/// Gives the temp file its mode and mtime and renames it to `target` (an empty directory in
/// the way is removed first).
pub fn finish(
    tmp: NamedTempFile,
    target: &Path,
    mode: u32,
    mtime: Option<SystemTime>,
) -> Result<()> {
    let what = || format!("replacing {}", target.display());
    set_mode(tmp.as_file(), mode).map_err(|e| Error::file_io(what(), e))?;
    if let Some(t) = mtime {
        tmp.as_file().set_modified(t).map_err(|e| Error::file_io(what(), e))?;
    }
    if std::fs::symlink_metadata(target).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir(target).map_err(|e| Error::file_io(what(), e))?;
    }
    tmp.persist(target).map_err(|e| Error::file_io(what(), e.error))?;
    Ok(())
}

#[cfg(unix)]
fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    let mut p = file.metadata()?.permissions();
    p.set_readonly(mode & 0o200 == 0);
    file.set_permissions(p)
}

/// Applies frames to the tree at `root`, counting what it did.
pub struct Applier {
    root: PathBuf,
    /// Directories under the root known to be real directories (not symlinks).
    checked: HashSet<PathBuf>,
    pub stats: TransferStats,
}

impl Applier {
    /// The root is created when missing.
    pub fn new(root: &Path) -> Result<Self> {
        let what = || format!("creating {}", root.display());
        std::fs::create_dir_all(root).map_err(|e| Error::file_io(what(), e))?;
        if !root.is_dir() {
            return Err(Error::invalid(format!("{} is not a directory", root.display())));
        }
        Ok(Applier { root: root.to_path_buf(), checked: HashSet::new(), stats: Default::default() })
    }

    /// Applies frames until the `end` frame.
    pub fn apply_stream(&mut self, r: &mut dyn BufRead) -> Result<()> {
        loop {
            match read_frame(r)? {
                Frame::End => return Ok(()),
                frame => self.apply(frame, r)?,
            }
        }
    }

    /// Applies one frame (a `file` frame reads its bytes from `r`). A path that cannot be
    /// written is skipped and reported; a full disk or a broken stream ends the transfer.
    pub fn apply(&mut self, frame: Frame, r: &mut dyn BufRead) -> Result<()> {
        match frame {
            Frame::File { path, size, mode, mtime_ns } => self.file(&path, size, mode, mtime_ns, r),
            Frame::Symlink { path, target } => self.step(&path, |a, p| a.symlink(p, &target)),
            Frame::Dir { path, mode } => self.step(&path, |a, p| a.dir(p, mode)),
            Frame::Meta { path, mode, mtime_ns } => {
                self.step(&path, |a, p| a.meta(p, mode, mtime_ns))
            }
            Frame::Delete { path } => self.step(&path, Applier::delete),
            Frame::End => Ok(()),
        }
    }

    /// Places `path` and runs `act` on it; a failure other than a full disk skips the path.
    fn step(
        &mut self,
        path: &str,
        act: impl FnOnce(&mut Self, &Path) -> io::Result<()>,
    ) -> Result<()> {
        let outcome = match self.place(path)? {
            Ok(target) => act(self, &target),
            Err(reason) => Err(io::Error::other(reason)),
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(e) => self.skip(path, e),
        }
    }

    fn skip(&mut self, path: &str, e: io::Error) -> Result<()> {
        if matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded) {
            return Err(Error::file_io(path, e));
        }
        self.stats.skipped.push(Skipped { path: path.to_string(), reason: e.to_string() });
        Ok(())
    }

    /// The absolute target of `path`, its parents made and checked to be real directories;
    /// `Ok(Err(reason))` when it cannot be written. A path that climbs out is an error.
    fn place(&mut self, path: &str) -> Result<Result<PathBuf, String>> {
        let rel = super::rel_path(path)?;
        let mut dir = self.root.clone();
        let parents: Vec<_> = rel.iter().collect();
        for name in &parents[..parents.len() - 1] {
            dir.push(name);
            if self.checked.contains(&dir) {
                continue;
            }
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Ok(Err(format!("{} is a symlink or a file", dir.display())));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if let Err(e) = std::fs::create_dir(&dir) {
                        return Ok(Err(e.to_string()));
                    }
                }
                Err(e) => return Ok(Err(e.to_string())),
            }
            self.checked.insert(dir.clone());
        }
        Ok(Ok(self.root.join(rel)))
    }

    fn file(
        &mut self,
        path: &str,
        size: u64,
        mode: u32,
        mtime_ns: i64,
        r: &mut dyn BufRead,
    ) -> Result<()> {
        let target = match self.place(path)? {
            Ok(t) => t,
            Err(reason) => {
                discard(r, size + 1)?;
                return self.skip(path, io::Error::other(reason));
            }
        };
        let parent = target.parent().unwrap_or(&self.root).to_path_buf();
        // Any failure here ends the transfer: the rest of this file's bytes are unread.
        let tmp = write_temp(&parent, &mut ReadRef(r), size)?;
        let mut status = [0u8];
        r.read_exact(&mut status).map_err(|e| Error::io("reading the transfer", e))?;
        match status[0] {
            FRAME_OK => {}
            FRAME_CHANGED => {
                self.stats.changed.push(path.to_string());
                return Ok(());
            }
            other => {
                let msg = format!("a bad status byte {other} after {path}");
                return Err(Error::new(ErrorCode::ProtocolError, msg));
            }
        }
        self.commit(path, tmp, &target, mode, Some(system_time(mtime_ns)), size)
    }

    /// Writes exactly `size` bytes of `r` to `path` atomically, as a `file` frame without its
    /// status byte (a tar entry's bytes). A path that cannot be placed is skipped and reported.
    pub fn write_file(
        &mut self,
        path: &str,
        size: u64,
        mode: u32,
        mtime: Option<SystemTime>,
        r: &mut dyn Read,
    ) -> Result<()> {
        let target = match self.place(path)? {
            Ok(t) => t,
            Err(reason) => return self.skip(path, io::Error::other(reason)),
        };
        let parent = target.parent().unwrap_or(&self.root).to_path_buf();
        let tmp = write_temp(&parent, r, size)?;
        self.commit(path, tmp, &target, mode, mtime, size)
    }

    /// Renames a written temp file over `target` and counts it; a full disk ends the transfer,
    /// another failure skips the path.
    fn commit(
        &mut self,
        path: &str,
        tmp: NamedTempFile,
        target: &Path,
        mode: u32,
        mtime: Option<SystemTime>,
        size: u64,
    ) -> Result<()> {
        match finish(tmp, target, mode, mtime) {
            Ok(()) => {
                self.stats.files += 1;
                self.stats.bytes += size;
                Ok(())
            }
            Err(e) if e.code == ErrorCode::NoSpace => Err(e),
            Err(e) => {
                self.stats.skipped.push(Skipped { path: path.to_string(), reason: e.message });
                Ok(())
            }
        }
    }

    #[cfg(unix)]
    fn symlink(&mut self, target: &Path, link: &str) -> io::Result<()> {
        let parent = target.parent().unwrap_or(&self.root);
        let tmp = parent.join(format!("{TEMP_PREFIX}{}.tmp", uuid::Uuid::new_v4().simple()));
        std::os::unix::fs::symlink(link, &tmp)?;
        if std::fs::symlink_metadata(target).is_ok_and(|m| m.is_dir())
            && let Err(e) = std::fs::remove_dir(target)
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, target).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        self.stats.links += 1;
        Ok(())
    }

    #[cfg(not(unix))]
    fn symlink(&mut self, _target: &Path, _link: &str) -> io::Result<()> {
        Err(io::Error::other("symlinks are not made on this system"))
    }

    fn dir(&mut self, target: &Path, mode: u32) -> io::Result<()> {
        match std::fs::symlink_metadata(target) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                std::fs::remove_file(target)?;
                std::fs::create_dir(target)?;
            }
            Err(_) => std::fs::create_dir(target)?,
        }
        self.checked.insert(target.to_path_buf());
        set_mode(&File::open(target)?, mode)?;
        self.stats.dirs += 1;
        Ok(())
    }

    fn meta(&mut self, target: &Path, mode: u32, mtime_ns: i64) -> io::Result<()> {
        if std::fs::symlink_metadata(target)?.is_symlink() {
            return Ok(());
        }
        let file = File::open(target)?;
        set_mode(&file, mode)?;
        if !file.metadata()?.is_dir() {
            file.set_modified(system_time(mtime_ns))?;
        }
        self.stats.meta += 1;
        Ok(())
    }

    fn delete(&mut self, target: &Path) -> io::Result<()> {
        match std::fs::symlink_metadata(target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
            Ok(m) if m.is_dir() => std::fs::remove_dir(target).map_err(|e| {
                io::Error::other(format!("{e} (it holds files the sync leaves out)"))
            })?,
            Ok(_) => std::fs::remove_file(target)?,
        }
        self.checked.remove(target);
        self.stats.deleted += 1;
        Ok(())
    }
}

/// Reads and drops `n` bytes of the stream.
fn discard(r: &mut dyn BufRead, n: u64) -> Result<()> {
    let got = io::copy(&mut ReadRef(r).take(n), &mut io::sink())
        .map_err(|e| Error::io("reading the transfer", e))?;
    if got < n {
        return Err(Error::new(ErrorCode::ProtocolError, "the transfer ended inside a file"));
    }
    Ok(())
}
