//! Directory handles: every write of a sync, an upload or `file write` is made *inside* an open
//! directory, by name (`openat`, `mkdirat`, `renameat`, `unlinkat` on Unix), and a directory is
//! entered from its parent's handle one name at a time with `O_NOFOLLOW | O_DIRECTORY`. A
//! symlink put in place of a directory makes the step fail (`ELOOP`/`ENOTDIR`), never leads the
//! write elsewhere, and a handle, unlike a path, cannot be swapped under the writer.
//!
//! On other systems (codex-remote builds for Windows) the same calls work by path.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::path::Path;

use super::manifest::TEMP_PREFIX;

/// What a name in a directory is, its symlinks not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

/// A fresh temp file's name in a directory (`.codex-sync.<uuid>.tmp`).
pub fn temp_name() -> OsString {
    format!("{TEMP_PREFIX}{}.tmp", uuid::Uuid::new_v4().simple()).into()
}

/// The special bits (setuid, setgid, sticky) cleared unless `keep` says otherwise.
pub fn plain_mode(mode: u32, keep: bool) -> u32 {
    if keep { mode & 0o7777 } else { mode & 0o777 }
}

#[cfg(unix)]
pub use unix::Dir;

#[cfg(unix)]
mod unix {
    use std::os::fd::{AsFd, OwnedFd};

    use rustix::fs::{AtFlags, FileType, Mode, OFlags};

    use super::*;

    /// An open directory.
    #[derive(Debug)]
    pub struct Dir(OwnedFd);

    const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

    impl Dir {
        /// Opens the directory at `path` (its own symlinks followed: the caller named it).
        pub fn open(path: &Path) -> io::Result<Dir> {
            Ok(Dir(rustix::fs::open(path, DIR_FLAGS, Mode::empty())?))
        }

        /// Enters the directory `name`, never through a symlink.
        pub fn child(&self, name: &OsStr) -> io::Result<Dir> {
            let flags = DIR_FLAGS | OFlags::NOFOLLOW;
            Ok(Dir(rustix::fs::openat(&self.0, name, flags, Mode::empty())?))
        }

        /// Makes the directory `name` (the umask applies).
        pub fn mkdir(&self, name: &OsStr) -> io::Result<()> {
            Ok(rustix::fs::mkdirat(&self.0, name, Mode::from_raw_mode(0o777))?)
        }

        /// What `name` is, not following a symlink.
        pub fn kind(&self, name: &OsStr) -> io::Result<Kind> {
            let st = rustix::fs::statat(&self.0, name, AtFlags::SYMLINK_NOFOLLOW)?;
            Ok(match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => Kind::Dir,
                FileType::RegularFile => Kind::File,
                FileType::Symlink => Kind::Symlink,
                _ => Kind::Other,
            })
        }

        /// A new temp file (mode 0600), locked while this process holds it so that a sweep
        /// leaves it alone; its name is returned with it.
        pub fn create_temp(&self) -> io::Result<(File, OsString)> {
            let name = temp_name();
            let flags =
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(&self.0, &name, flags, Mode::from_raw_mode(0o600))?;
            let file = File::from(fd);
            let _ = file.try_lock();
            Ok((file, name))
        }

        /// Opens `name` for its metadata, never through a symlink nor blocking on a fifo.
        pub fn open_no_follow(&self, name: &OsStr) -> io::Result<File> {
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
            Ok(File::from(rustix::fs::openat(&self.0, name, flags, Mode::empty())?))
        }

        /// Renames `from` to `to`, both in this directory.
        pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
            Ok(rustix::fs::renameat(&self.0, from, &self.0, to)?)
        }

        pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
            Ok(rustix::fs::unlinkat(&self.0, name, AtFlags::empty())?)
        }

        pub fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
            Ok(rustix::fs::unlinkat(&self.0, name, AtFlags::REMOVEDIR)?)
        }

        /// Makes the symlink `name` → `target`.
        pub fn symlink(&self, target: &str, name: &OsStr) -> io::Result<()> {
            Ok(rustix::fs::symlinkat(target, &self.0, name)?)
        }

        /// Sets the mode of this directory itself.
        pub fn set_mode(&self, mode: u32) -> io::Result<()> {
            Ok(rustix::fs::fchmod(self.0.as_fd(), Mode::from_raw_mode((mode & 0o7777) as _))?)
        }
    }
}

#[cfg(not(unix))]
pub use other::Dir;

#[cfg(not(unix))]
mod other {
    use std::path::PathBuf;

    use super::*;

    /// A directory by path (no `openat` here).
    #[derive(Debug)]
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn open(path: &Path) -> io::Result<Dir> {
            match std::fs::metadata(path)?.is_dir() {
                true => Ok(Dir(path.to_path_buf())),
                false => Err(io::Error::other(format!("{} is not a directory", path.display()))),
            }
        }

        pub fn child(&self, name: &OsStr) -> io::Result<Dir> {
            let path = self.0.join(name);
            match std::fs::symlink_metadata(&path)?.is_dir() {
                true => Ok(Dir(path)),
                false => {
                    Err(io::Error::other(format!("{} is a symlink or a file", path.display())))
                }
            }
        }

        pub fn mkdir(&self, name: &OsStr) -> io::Result<()> {
            std::fs::create_dir(self.0.join(name))
        }

        pub fn kind(&self, name: &OsStr) -> io::Result<Kind> {
            let m = std::fs::symlink_metadata(self.0.join(name))?;
            Ok(match m.file_type() {
                t if t.is_symlink() => Kind::Symlink,
                t if t.is_dir() => Kind::Dir,
                t if t.is_file() => Kind::File,
                _ => Kind::Other,
            })
        }

        pub fn create_temp(&self) -> io::Result<(File, OsString)> {
            let name = temp_name();
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(self.0.join(&name))?;
            let _ = file.try_lock();
            Ok((file, name))
        }

        pub fn open_no_follow(&self, name: &OsStr) -> io::Result<File> {
            if self.kind(name)? == Kind::Symlink {
                return Err(io::Error::other("a symlink"));
            }
            File::open(self.0.join(name))
        }

        pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
            std::fs::rename(self.0.join(from), self.0.join(to))
        }

        pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
            std::fs::remove_file(self.0.join(name))
        }

        pub fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
            std::fs::remove_dir(self.0.join(name))
        }

        pub fn symlink(&self, _target: &str, _name: &OsStr) -> io::Result<()> {
            Err(io::Error::other("symlinks are not made on this system"))
        }

        pub fn set_mode(&self, mode: u32) -> io::Result<()> {
            let mut p = std::fs::metadata(&self.0)?.permissions();
            p.set_readonly(mode & 0o200 == 0);
            std::fs::set_permissions(&self.0, p)
        }
    }
}

/// A temp file in a directory, removed when dropped unless renamed into place.
pub struct Temp<'a> {
    pub file: File,
    dir: &'a Dir,
    name: OsString,
    placed: bool,
}

impl<'a> Temp<'a> {
    pub fn new(dir: &'a Dir) -> io::Result<Temp<'a>> {
        let (file, name) = dir.create_temp()?;
        Ok(Temp { file, dir, name, placed: false })
    }

    /// Renames the temp file to `target` in its directory (an empty directory in the way is
    /// removed first).
    pub fn place(mut self, target: &OsStr) -> io::Result<()> {
        if self.dir.kind(target).is_ok_and(|k| k == Kind::Dir) {
            self.dir.remove_dir(target)?;
        }
        self.dir.rename(&self.name, target)?;
        self.placed = true;
        Ok(())
    }
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if !self.placed {
            let _ = self.dir.remove_file(&self.name);
        }
    }
}

/// Removes the sync temp files at `paths` that no live writer holds (a writer locks its temp
/// file until it is renamed): what a killed sync left behind. Answers how many went.
pub fn sweep_temps(paths: &[std::path::PathBuf]) -> u64 {
    let mut removed = 0;
    for path in paths {
        if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let Ok(file) = super::frames::open_no_follow(path) else { continue };
        if file.try_lock().is_ok() && std::fs::remove_file(path).is_ok() {
            removed += 1;
        }
    }
    removed
}
