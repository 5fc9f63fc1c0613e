//! Writing a tree from a frame stream, and writing one file atomically.
//!
//! Every file is written to a temp file in its own directory (`.codex-sync.*.tmp`), given its
//! mode and mtime, then renamed over the old one: a reader, or a transfer cut at any byte,
//! sees the old file or the new one, never half of one (a cut leaves at most a temp file,
//! removed when the process ends normally, swept by the next sync after a kill, and never
//! listed in a manifest). Nothing is written through a symlink: every path is reached from the
//! root's directory handle one real directory at a time ([`super::at`]), and the temp file is
//! made and renamed inside its parent's handle. Setuid, setgid and sticky bits are cleared
//! unless kept ([`Applier::keep_special_bits`]).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::at::{Dir, Kind, Temp, plain_mode, temp_name};
use super::frames::{ReadRef, copy_large, read_frame};
use super::manifest::system_time;
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::files::{FRAME_CHANGED, FRAME_OK};
use crate::protocol::{Frame, Skipped, TransferStats};

/// Copies exactly `size` bytes of `content` into a new temp file in `dir`.
pub fn write_temp<'d>(dir: &'d Dir, content: &mut dyn Read, size: u64) -> Result<Temp<'d>> {
    let what = "writing a temp file";
    let mut tmp = Temp::new(dir).map_err(|e| Error::file_io(what, e))?;
    let copied =
        copy_large(&mut content.take(size), &mut tmp.file).map_err(|e| Error::file_io(what, e))?;
    if copied < size {
        return Err(Error::new(
            ErrorCode::ProtocolError,
            format!("the content ended after {copied} of {size} bytes"),
        ));
    }
    Ok(tmp)
}

/// Gives the temp file its mode and mtime and renames it to `name` in its directory (an empty
/// directory in the way is removed first).
pub fn finish(tmp: Temp<'_>, name: &OsStr, mode: u32, mtime: Option<SystemTime>) -> Result<()> {
    let what = || format!("replacing {}", Path::new(name).display());
    set_mode(&tmp.file, mode).map_err(|e| Error::file_io(what(), e))?;
    if let Some(t) = mtime {
        tmp.file.set_modified(t).map_err(|e| Error::file_io(what(), e))?;
    }
    tmp.place(name).map_err(|e| Error::file_io(what(), e))
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

/// Applies frames to the tree at `root`, counting what it did. Each path is reached from the
/// root's handle one directory at a time, never through a symlink; the handle of the last
/// parent is kept for the next path (frames come parents first, files of a directory together)
/// and dropped when a frame replaces or removes that directory or one above it.
pub struct Applier {
    root: Dir,
    /// The last parent entered: its path under the root and its handle.
    parent: Option<(PathBuf, Dir)>,
    /// Keep setuid, setgid and sticky bits (cleared by default).
    keep_special_bits: bool,
    pub stats: TransferStats,
}

/// Where a path goes: its parent's handle and its name there, or why it cannot be written.
type Placed<'a> = std::result::Result<(&'a Dir, &'a OsStr), String>;

impl Applier {
    /// The root is created when missing.
    pub fn new(root: &Path) -> Result<Self> {
        let what = || format!("creating {}", root.display());
        std::fs::create_dir_all(root).map_err(|e| Error::file_io(what(), e))?;
        if !root.is_dir() {
            return Err(Error::invalid(format!("{} is not a directory", root.display())));
        }
        let dir = Dir::open(root).map_err(|e| Error::file_io(what(), e))?;
        Ok(Applier { root: dir, parent: None, keep_special_bits: false, stats: Default::default() })
    }

    /// Keeps setuid, setgid and sticky bits of the modes it is sent.
    pub fn keep_special_bits(mut self, keep: bool) -> Self {
        self.keep_special_bits = keep;
        self
    }

    fn mode(&self, mode: u32) -> u32 {
        plain_mode(mode, self.keep_special_bits)
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
            Frame::File { path, size, mode, mtime_ns } => {
                let mtime = Some(system_time(mtime_ns));
                self.file(&path, size, mode, mtime, r, true)
            }
            Frame::Symlink { path, target } => {
                self.step(&path, |d, n| symlink(d, n, &target)).map(|done| {
                    self.stats.links += done as u64;
                })
            }
            Frame::Dir { path, mode } => {
                let mode = self.mode(mode);
                self.step(&path, |d, n| dir(d, n, mode)).map(|done| {
                    self.stats.dirs += done as u64;
                })
            }
            Frame::Meta { path, mode, mtime_ns } => {
                let mode = self.mode(mode);
                self.step(&path, |d, n| meta(d, n, mode, mtime_ns)).map(|done| {
                    self.stats.meta += done as u64;
                })
            }
            Frame::Delete { path } => self.step(&path, delete).map(|done| {
                self.stats.deleted += done as u64;
            }),
            Frame::End => Ok(()),
        }
    }

    /// Places `path` and runs `act` in its parent; a failure other than a full disk skips the
    /// path. Answers whether it was done (`act` answers whether it counts).
    fn step(
        &mut self,
        path: &str,
        act: impl FnOnce(&Dir, &OsStr) -> io::Result<bool>,
    ) -> Result<bool> {
        let rel = super::rel_path(path)?;
        self.forget_under(&rel);
        let outcome = match self.place(&rel) {
            Ok((dir, name)) => act(dir, name),
            Err(reason) => Err(io::Error::other(reason)),
        };
        match outcome {
            Ok(counted) => Ok(counted),
            Err(e) => self.skip(path, e).map(|()| false),
        }
    }

    /// Drops the kept parent handle when `rel` is it or one of its parents (the frame about
    /// to run may replace it).
    fn forget_under(&mut self, rel: &Path) {
        if self.parent.as_ref().is_some_and(|(p, _)| p.starts_with(rel)) {
            self.parent = None;
        }
    }

    fn skip(&mut self, path: &str, e: io::Error) -> Result<()> {
        if matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded) {
            return Err(Error::file_io(path, e));
        }
        self.stats.skipped.push(Skipped { path: path.to_string(), reason: e.to_string() });
        Ok(())
    }

    /// The handle of `rel`'s parent (entered from the root, missing directories made) and
    /// `rel`'s last name, or why it cannot be written.
    fn place<'a>(&'a mut self, rel: &'a Path) -> Placed<'a> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = rel.file_name().unwrap_or_default();
        if parent.as_os_str().is_empty() {
            return Ok((&self.root, name));
        }
        if self.parent.as_ref().is_none_or(|(p, _)| p != parent) {
            self.parent = None;
            let mut dir: Option<Dir> = None;
            let mut at = PathBuf::new();
            for step in parent.iter() {
                at.push(step);
                dir = Some(enter(dir.as_ref().unwrap_or(&self.root), &at, step)?);
            }
            self.parent = Some((parent.to_path_buf(), dir.expect("a parent was entered")));
        }
        let (_, dir) = self.parent.as_ref().expect("the parent was just kept");
        Ok((dir, name))
    }

    /// Writes exactly `size` bytes of `content` to `path` atomically. With `status` (a `file`
    /// frame) the status byte after the bytes is read from it and a changed file dropped; a
    /// path that cannot be placed is skipped (a frame's bytes read and dropped).
    fn file(
        &mut self,
        path: &str,
        size: u64,
        mode: u32,
        mtime: Option<SystemTime>,
        r: &mut dyn BufRead,
        status: bool,
    ) -> Result<()> {
        let rel = super::rel_path(path)?;
        self.forget_under(&rel);
        let mode = self.mode(mode);
        let (dir, name) = match self.place(&rel) {
            Ok(placed) => placed,
            Err(reason) => {
                discard(r, size + status as u64)?;
                return self.skip(path, io::Error::other(reason));
            }
        };
        // Any failure here ends the transfer: the rest of this file's bytes are unread.
        let tmp = write_temp(dir, &mut ReadRef(r), size)?;
        if status {
            let mut byte = [0u8];
            r.read_exact(&mut byte).map_err(|e| Error::io("reading the transfer", e))?;
            match byte[0] {
                FRAME_OK => {}
                FRAME_CHANGED => {
                    drop(tmp);
                    self.stats.changed.push(path.to_string());
                    return Ok(());
                }
                other => {
                    let msg = format!("a bad status byte {other} after {path}");
                    return Err(Error::new(ErrorCode::ProtocolError, msg));
                }
            }
        }
        // A full disk ends the transfer, another failure skips the path.
        match finish(tmp, name, mode, mtime) {
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
        self.file(path, size, mode, mtime, &mut io::BufReader::with_capacity(0, r), false)
    }
}

/// Enters `name` of `from` (made when missing), never through a symlink; `at` names it in
/// errors.
fn enter(from: &Dir, at: &Path, name: &OsStr) -> std::result::Result<Dir, String> {
    let refused = |e: io::Error| match e.raw_os_error() {
        Some(code) if code == rustix_eloop() || code == rustix_enotdir() => {
            format!("{} is a symlink or a file", at.display())
        }
        _ => format!("{}: {e}", at.display()),
    };
    match from.child(name) {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            from.mkdir(name).or_else(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(refused(e)),
            })?;
            from.child(name).map_err(refused)
        }
        Err(e) => Err(refused(e)),
    }
}

#[cfg(unix)]
fn rustix_eloop() -> i32 {
    rustix::io::Errno::LOOP.raw_os_error()
}

#[cfg(unix)]
fn rustix_enotdir() -> i32 {
    rustix::io::Errno::NOTDIR.raw_os_error()
}

#[cfg(not(unix))]
fn rustix_eloop() -> i32 {
    -1
}

#[cfg(not(unix))]
fn rustix_enotdir() -> i32 {
    -1
}

/// Makes the symlink `name` → `link` in `dir` (a temp link renamed over what was there).
fn symlink(dir: &Dir, name: &OsStr, link: &str) -> io::Result<bool> {
    let tmp = temp_name();
    dir.symlink(link, &tmp)?;
    let placed = (|| {
        if dir.kind(name).is_ok_and(|k| k == Kind::Dir) {
            dir.remove_dir(name)?;
        }
        dir.rename(&tmp, name)
    })();
    if placed.is_err() {
        let _ = dir.remove_file(&tmp);
    }
    placed.map(|()| true)
}

/// Makes `name` a directory of `mode` (a file or symlink in the way is removed).
fn dir(parent: &Dir, name: &OsStr, mode: u32) -> io::Result<bool> {
    match parent.kind(name) {
        Ok(Kind::Dir) => {}
        Ok(_) => {
            parent.remove_file(name)?;
            parent.mkdir(name)?;
        }
        Err(_) => parent.mkdir(name)?,
    }
    parent.child(name)?.set_mode(mode)?;
    Ok(true)
}

/// Sets the mode and mtime of `name` (a symlink is left alone).
fn meta(dir: &Dir, name: &OsStr, mode: u32, mtime_ns: i64) -> io::Result<bool> {
    if dir.kind(name)? == Kind::Symlink {
        return Ok(false);
    }
    let file = dir.open_no_follow(name)?;
    set_mode(&file, mode)?;
    if !file.metadata()?.is_dir() {
        file.set_modified(system_time(mtime_ns))?;
    }
    Ok(true)
}

fn delete(dir: &Dir, name: &OsStr) -> io::Result<bool> {
    match dir.kind(name) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
        Ok(Kind::Dir) => dir
            .remove_dir(name)
            .map_err(|e| io::Error::other(format!("{e} (it holds files the sync leaves out)")))?,
        Ok(_) => dir.remove_file(name)?,
    }
    Ok(true)
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
