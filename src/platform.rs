//! What differs between the systems `codex-remote` runs on (Linux, macOS, Windows): where the
//! home, config and cache directories are, and how a file or directory is made private.
//! `codexd` is Linux-only; its OS calls are in `jobs::sys`. This is the lowest layer: it imports
//! nothing of the crate but `error`.
//!
//! | | Linux, macOS | Windows |
//! |---|---|---|
//! | home | `$HOME` | `%USERPROFILE%` |
//! | config | `$XDG_CONFIG_HOME`, else `~/.config` | `%APPDATA%` |
//! | cache | `$XDG_CACHE_HOME`, else `~/.cache` | `%LOCALAPPDATA%` |
//!
//! macOS uses the XDG places, as command-line tools there do (git, gh, ...), so one config
//! path works on a Mac and on Linux alike.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|p| !p.is_empty()).map(PathBuf::from)
}

/// A system's environment variables, as the directory rules below read them.
type Env<'a> = &'a dyn Fn(&str) -> Option<PathBuf>;

fn home_in(windows: bool, env: Env) -> PathBuf {
    let home = if windows { env("USERPROFILE").or_else(|| env("HOME")) } else { env("HOME") };
    home.unwrap_or_else(|| PathBuf::from(if windows { r"C:\" } else { "/" }))
}

fn config_in(windows: bool, env: Env) -> PathBuf {
    if windows {
        env("APPDATA").unwrap_or_else(|| home_in(windows, env).join("AppData").join("Roaming"))
    } else {
        env("XDG_CONFIG_HOME").unwrap_or_else(|| home_in(windows, env).join(".config"))
    }
}

fn cache_in(windows: bool, env: Env) -> PathBuf {
    if windows {
        env("LOCALAPPDATA").unwrap_or_else(|| home_in(windows, env).join("AppData").join("Local"))
    } else {
        env("XDG_CACHE_HOME").unwrap_or_else(|| home_in(windows, env).join(".cache"))
    }
}

/// The user's home directory.
pub fn home_dir() -> PathBuf {
    home_in(cfg!(windows), &env_path)
}

/// Where per-user config files go (`codex-remote/config.yaml` below it).
pub fn config_dir() -> PathBuf {
    config_in(cfg!(windows), &env_path)
}

/// Where per-user caches go (`codex-remote/` below it).
pub fn cache_dir() -> PathBuf {
    cache_in(cfg!(windows), &env_path)
}

/// Creates `dir` (and its parents) readable by its owner only: 0700 on Unix; on Windows the
/// user profile's own ACLs already keep others out.
///
/// On Unix the last component must end up ours: a directory owned by another user, or a
/// symlink another user planted (say `/tmp/codex-remote-UID` pointing at our home), is refused,
/// and the mode is tightened through a descriptor of the checked directory (`fchmod`), never by
/// a path that could lead elsewhere. A symlink of our own to a directory of our own (a data dir
/// moved to a bigger disk) is fine.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    let fail = |e| Error::internal(format!("creating {}", dir.display()), e);
    #[cfg(unix)]
    {
        use rustix::fs::{Mode, OFlags};
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let me = rustix::process::getuid().as_raw();
        let refuse = |why: &str| {
            Error::internal(
                format!("using {} as a private directory", dir.display()),
                format!("refused: {why}"),
            )
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        // The common case, a directory that exists and is no symlink, in one call.
        let fd = match rustix::fs::open(dir, flags | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(fd) => fd,
            Err(_) => {
                std::fs::DirBuilder::new().mode(0o700).recursive(true).create(dir).map_err(fail)?;
                let link = std::fs::symlink_metadata(dir).map_err(fail)?;
                let mut flags = flags;
                if link.file_type().is_symlink() {
                    if link.uid() != me {
                        return Err(refuse("it is a symlink of another user"));
                    }
                } else {
                    flags |= OFlags::NOFOLLOW;
                }
                rustix::fs::open(dir, flags, Mode::empty())
                    .map_err(|e| fail(std::io::Error::from(e)))?
            }
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| fail(std::io::Error::from(e)))?;
        if stat.st_uid != me {
            return Err(refuse("it belongs to another user"));
        }
        if stat.st_mode & 0o077 != 0 {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700)).map_err(|e| {
                Error::internal(format!("chmod 0700 {}", dir.display()), std::io::Error::from(e))
            })?;
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).map_err(fail)?;
    Ok(())
}

/// Options that create a file readable by its owner only (0600 on Unix): the one way a private
/// file is opened (logs, locks, the serve token, idempotency keys, the time index).
pub fn private_file_options() -> OpenOptions {
    let options = OpenOptions::new();
    #[cfg(unix)]
    let options = {
        let mut options = options;
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
    };
    options
}

/// Creates `path` new with `bytes` and fsyncs it; `mode` on Unix (0600 for a private file). A
/// name that exists is refused (`AlreadyExists`): two racing creators cannot both win. The name
/// itself is durable once its directory is synced ([`sync_dir`]).
pub fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes the names in `dir` durable (a rename into it, a new file): an fsync of the directory
/// on Unix; Windows has no directory handle to sync.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// This user's uid (`None` on Windows).
pub fn uid() -> Option<u32> {
    #[cfg(unix)]
    return Some(rustix::process::getuid().as_raw());
    #[cfg(not(unix))]
    None
}

/// Writes `value` as JSON to `path` whole: see [`write_bytes_atomic`].
pub fn write_json_atomic(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::internal("encoding", e))?;
    bytes.push(b'\n');
    write_bytes_atomic(path, &bytes)
}

/// Writes `bytes` to `path` whole and durably: a private temp file in the same directory,
/// fsynced, renamed over `path`, then the directory fsynced (on Unix; Windows has no directory
/// handle to sync). A reader never sees half a file, and after a crash the file is old or new.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let fail = |e: std::io::Error| Error::io(format!("writing {}", path.display()), e);
    // tempfile creates the file readable by its owner only (0600 on Unix).
    let mut tmp = tempfile::Builder::new().prefix(".tmp").tempfile_in(dir).map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    sync_dir(dir).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<PathBuf> {
        let vars: Vec<(String, PathBuf)> =
            vars.iter().map(|(k, v)| (k.to_string(), PathBuf::from(v))).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn windows_uses_the_profile_and_appdata() {
        let env = env_of(&[
            ("USERPROFILE", r"C:\Users\ada"),
            ("APPDATA", r"C:\Users\ada\AppData\Roaming"),
            ("HOME", "/ignored/when/USERPROFILE/is/set"),
        ]);
        assert_eq!(home_in(true, &env), PathBuf::from(r"C:\Users\ada"));
        assert_eq!(config_in(true, &env), PathBuf::from(r"C:\Users\ada\AppData\Roaming"));
        let bare = env_of(&[("USERPROFILE", "C:/Users/ada")]);
        assert_eq!(cache_in(true, &bare), Path::new("C:/Users/ada").join("AppData").join("Local"));
    }

    #[test]
    fn unix_uses_xdg_then_the_home() {
        let env = env_of(&[("HOME", "/home/ada"), ("XDG_CACHE_HOME", "/var/cache/ada")]);
        assert_eq!(config_in(false, &env), PathBuf::from("/home/ada/.config"));
        assert_eq!(cache_in(false, &env), PathBuf::from("/var/cache/ada"));
        assert_eq!(home_in(false, &env_of(&[])), PathBuf::from("/"));
    }
}
