//! The `local` machine's third door: its requests answered inside this process by the handlers
//! of `codexd` ([`crate::daemon::Daemon`]), with no `codexd rpc` child to start. Jobs' workers
//! are still the `codexd` binary of the `local` machine ([`crate::jobs::sys::set_codexd_exe`]),
//! so a job outlives this process as it does over ssh.
//!
//! Requests with bytes after their line (files, sync) keep the child: they stream through its
//! stdin and stdout.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::daemon::{Daemon, DaemonConfig, Sink};
use crate::error::{Error, Result};
use crate::jobs::sys;
use crate::protocol::{Request, Response};

/// Answers `request` in this process, or `None` when it must go to a `codexd rpc` child: a
/// request with bytes, or a `codexd` that cannot be found (the child then fails with
/// `codexd_not_found`, naming it).
pub fn call(
    codexd: &Path,
    data_dir: Option<&str>,
    request: &Request,
    on_line: &mut dyn FnMut(Response) -> Result<()>,
) -> Option<Result<Response>> {
    if request.has_payload() {
        return None;
    }
    let codexd = executable(codexd)?;
    sys::set_codexd_exe(codexd);
    // As `codexd rpc --data-dir D` would read it, `CODEXD_CONFIG` included.
    let config = std::env::var_os("CODEXD_CONFIG").filter(|c| !c.is_empty()).map(PathBuf::from);
    let daemon = match DaemonConfig::load(config.as_deref(), data_dir).and_then(Daemon::new) {
        Ok(daemon) => daemon,
        Err(e) => return Some(Err(e)),
    };
    let mut sink = LineSink { on_line, refused: None };
    let answer = daemon.handle(request, &mut sink);
    Some(match sink.refused {
        Some(e) => Err(e),
        None => answer,
    })
}

/// What `exec doctor` says of the `codexd` that starts this process's workers: its path and
/// version (`codexd --version --json`), and whether that is this codex-remote's version (the
/// worker reads the job that these handlers wrote).
pub fn worker_check(codexd: &Path) -> (bool, String) {
    let Some(path) = executable(codexd) else {
        return (false, format!("no {} to start workers from", codexd.display()));
    };
    let ours = crate::version::VERSION;
    match crate::version::reported_by(&path) {
        Ok((Some(v), _)) => (
            v == ours,
            format!("answered in codex-remote {ours}; workers start from {} {v}", path.display()),
        ),
        _ => (false, format!("{} does not tell its version", path.display())),
    }
}

/// `codexd` as a file to start: a path as it is, a bare name looked up on `PATH`, runnable
/// either way.
fn executable(codexd: &Path) -> Option<PathBuf> {
    if codexd.components().count() > 1 {
        return sys::runnable(codexd).then(|| codexd.to_path_buf());
    }
    sys::find_on_path(codexd.to_str()?, &std::env::var("PATH").ok()?)
}

/// Hands a handler's intermediate lines to the caller; the caller refusing one (or Ctrl-C)
/// ends the request as a closed stdout ends it in `codexd rpc`.
struct LineSink<'a> {
    on_line: &'a mut dyn FnMut(Response) -> Result<()>,
    refused: Option<Error>,
}

impl Sink for LineSink<'_> {
    fn send(&mut self, response: Response) -> io::Result<()> {
        if self.refused.is_some() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        (self.on_line)(response).map_err(|e| {
            let closed = io::Error::new(io::ErrorKind::BrokenPipe, e.message.clone());
            self.refused = Some(e);
            closed
        })
    }

    fn closed(&self) -> bool {
        self.refused.is_some() || super::pipe::INTERRUPTED.load(Ordering::SeqCst)
    }
}
