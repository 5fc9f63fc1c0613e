//! A job's artifacts list, as the original tool read it: when the job ends, the first of
//! `<cwd>/.codex/artifacts.json` and `<job dir>/artifacts.json` (the job finds its directory in
//! `CODEXD_JOB_DIR`) that exists is read, and its `artifacts` array goes into the status's
//! `artifacts` field: `{"version":"1","artifacts":[{"name","type","path"},...]}`. The entries
//! are kept as the job wrote them. A file that is not JSON, has no `artifacts` array or is
//! larger than [`MAX_BYTES`] is not an error of the job: the status says why in `warning`.
//!
//! The cwd may be shared with other users (a 1777 scratch dir), who can plant anything there.
//! The worker reads only what cannot hold it up: each step below the cwd is opened with
//! `O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC` from the step before (a symlink at `.codex` or at
//! `artifacts.json` is refused, not followed), and what was opened is read only when `fstat`
//! says it is a regular file: a FIFO, a socket or a device is a warning, never a read.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

/// The largest artifacts file read (the list goes into every status answer).
pub const MAX_BYTES: u64 = 256 * 1024;

/// What a job's artifacts file gave: the list, or why there is none.
#[derive(Debug, Default, PartialEq)]
pub struct Found {
    pub artifacts: Option<Vec<serde_json::Value>>,
    pub warning: Option<String>,
}

/// The files looked at, in order: a base directory and the steps beneath it.
fn candidates<'a>(cwd: &'a Path, job_dir: &'a Path) -> [(&'a Path, &'static [&'static str]); 2] {
    [(cwd, &[".codex", "artifacts.json"]), (job_dir, &["artifacts.json"])]
}

/// Reads the first artifacts file that exists, of `<cwd>/.codex/artifacts.json` and
/// `<job_dir>/artifacts.json`.
pub fn collect(cwd: &Path, job_dir: &Path) -> Found {
    for (base, steps) in candidates(cwd, job_dir) {
        let path = steps.iter().fold(base.to_path_buf(), |path, step| path.join(step));
        let warn = |why: String| Found {
            artifacts: None,
            warning: Some(format!("{}: {why}; no artifacts recorded", path.display())),
        };
        return match open_regular(base, steps) {
            Ok(None) => continue,
            Ok(Some(file)) => read_list(file).unwrap_or_else(warn),
            Err(why) => warn(why),
        };
    }
    Found::default()
}

/// Opens `base/steps...` step by step without following a symlink or blocking; `Ok(None)` when
/// it does not exist, `Err(why)` when it is not a regular file that can be opened.
fn open_regular(base: &Path, steps: &[&str]) -> Result<Option<File>, String> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let refused = |e: Errno| match e {
        Errno::NOENT => None,
        Errno::LOOP | Errno::NOTDIR => {
            Some("is a symlink or not where a directory was expected".into())
        }
        e => Some(format!("cannot be opened ({})", std::io::Error::from(e))),
    };
    let mut fd: OwnedFd = match rustix::fs::open(base, flags | OFlags::DIRECTORY, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => return refused(e).map_or(Ok(None), Err),
    };
    for (i, step) in steps.iter().enumerate() {
        let dir = if i + 1 < steps.len() { OFlags::DIRECTORY } else { OFlags::empty() };
        fd = match rustix::fs::openat(&fd, *step, flags | dir, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => return refused(e).map_or(Ok(None), Err),
        };
    }
    let file = File::from(fd);
    match file.metadata() {
        Ok(meta) if meta.is_file() => Ok(Some(file)),
        Ok(_) => Err("is not a regular file (a FIFO, socket or device is never read)".into()),
        Err(e) => Err(format!("cannot be read ({e})")),
    }
}

/// The list in an open artifacts file, or why there is none.
fn read_list(file: File) -> Result<Found, String> {
    let mut bytes = Vec::new();
    if let Err(e) = file.take(MAX_BYTES + 1).read_to_end(&mut bytes) {
        return Err(format!("cannot be read ({e})"));
    }
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!("larger than {} KiB", MAX_BYTES / 1024));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("not valid JSON ({e})"))?;
    match value.get("artifacts") {
        Some(serde_json::Value::Array(list)) if list.is_empty() => Ok(Found::default()),
        Some(serde_json::Value::Array(list)) => {
            Ok(Found { artifacts: Some(list.clone()), warning: None })
        }
        _ => Err("has no `artifacts` array".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_file_that_exists_is_read_and_a_bad_one_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let (cwd, job) = (dir.path().join("cwd"), dir.path().join("job"));
        std::fs::create_dir_all(cwd.join(".codex")).unwrap();
        std::fs::create_dir_all(&job).unwrap();
        let files = [cwd.join(".codex").join("artifacts.json"), job.join("artifacts.json")];
        assert_eq!(collect(&cwd, &job), Found::default());

        std::fs::write(&files[1], r#"{"version":"1","artifacts":[{"name":"m","path":"m.pt"}]}"#)
            .unwrap();
        let found = collect(&cwd, &job);
        assert_eq!(found.artifacts.unwrap()[0]["path"], "m.pt");

        std::fs::write(&files[0], "{not json").unwrap();
        let found = collect(&cwd, &job);
        assert_eq!(found.artifacts, None);
        assert!(found.warning.unwrap().contains("not valid JSON"));

        std::fs::write(&files[0], r#"{"artifacts":{}}"#).unwrap();
        assert!(collect(&cwd, &job).warning.unwrap().contains("no `artifacts` array"));
        std::fs::write(&files[0], r#"{"artifacts":[]}"#).unwrap();
        assert_eq!(collect(&cwd, &job), Found::default());
    }

    #[test]
    fn a_fifo_or_a_symlink_is_a_warning_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let (cwd, job) = (dir.path().join("cwd"), dir.path().join("job"));
        std::fs::create_dir_all(cwd.join(".codex")).unwrap();
        std::fs::create_dir_all(&job).unwrap();
        let planted = cwd.join(".codex").join("artifacts.json");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &planted,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o666),
            0,
        )
        .unwrap();
        let found = collect(&cwd, &job);
        assert!(found.warning.unwrap().contains("not a regular file"));

        std::fs::remove_file(&planted).unwrap();
        let elsewhere = dir.path().join("elsewhere.json");
        std::fs::write(&elsewhere, r#"{"artifacts":[{"path":"x"}]}"#).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &planted).unwrap();
        assert!(collect(&cwd, &job).warning.unwrap().contains("symlink"));

        std::fs::remove_file(&planted).unwrap();
        std::fs::remove_dir(cwd.join(".codex")).unwrap();
        std::os::unix::fs::symlink(dir.path(), cwd.join(".codex")).unwrap();
        std::fs::rename(&elsewhere, dir.path().join("artifacts.json")).unwrap();
        assert!(collect(&cwd, &job).warning.unwrap().contains("symlink"));
    }
}
