//! The handlers of `codexd`: one function per request, over the job store. Two doors lead into
//! them and answer the same way: `rpc` (stdio, one process per ssh call) and `http` (run by
//! `serve`, a long-lived process).

pub mod codexd_cli;
pub mod config;
pub mod doctor;
pub mod files;
pub mod http;
pub mod logs;
pub mod projects;
pub mod rpc;
pub mod scheduler;
pub mod serve;
mod shared_store;
mod start;
pub mod sync;
pub mod terminal_view;

use std::io::{self, BufRead, Write};
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, ErrorCode, Result};
use crate::jobs::gpu_queue::GpuFiles;
use crate::jobs::outcome::Outcome;
use crate::jobs::store::{self, CancelFile, Change, JobStore, Updated, now_rfc3339};
use crate::jobs::{sys, wait};
use crate::protocol::exec_id::is_go_era_id;
use crate::protocol::{
    CancelRequest, ExecId, GpuReport, HelloResponse, JobRef, JobStatus, ListRequest, ListResponse,
    LogView, LogsEnd, LogsRequest, PruneRequest, PrunedResponse, RemovedResponse, Request,
    ResolveRequest, Response, RunRequest, RunStatus, StatusResponse, StreamOffsets, StreamSel,
    WaitRequest,
};
pub use config::DaemonConfig;

/// Where answer lines go. A streaming handler sends `log` lines through it before its final
/// answer; `closed` tells it that nobody is listening any more.
/// A long answer's proof of life: a `heartbeat` line each
/// [`HEARTBEAT_EVERY`](crate::protocol::HEARTBEAT_EVERY) (the client's
/// idle deadline counts from the last line it got).
pub struct Heartbeats {
    last: std::time::Instant,
}

impl Heartbeats {
    pub fn new() -> Self {
        Heartbeats { last: std::time::Instant::now() }
    }

    /// Sends a heartbeat when one is due; a client that went away is an error.
    pub fn due(&mut self, sink: &mut dyn Sink) -> Result<()> {
        if self.last.elapsed() < crate::protocol::HEARTBEAT_EVERY {
            return Ok(());
        }
        self.last = std::time::Instant::now();
        sink.send(Response::Heartbeat(crate::protocol::Heartbeat {}))
            .map_err(|e| Error::internal("heartbeat", format!("the client went away: {e}")))
    }
}

impl Default for Heartbeats {
    fn default() -> Self {
        Self::new()
    }
}

pub trait Sink {
    fn send(&mut self, response: Response) -> io::Result<()>;
    fn closed(&self) -> bool;

    /// The bytes that follow the request line ([`Request::has_payload`]); `None` on a door
    /// that carries none.
    fn payload(&mut self) -> Option<&mut dyn BufRead> {
        None
    }

    /// Where raw bytes go before the final answer (`sync_send`'s frames); `None` on a door
    /// that carries none.
    fn raw_out(&mut self) -> Option<&mut dyn Write> {
        None
    }
}

/// Default time between TERM and KILL (as Slurm's KillWait).
pub const DEFAULT_GRACE_MS: u64 = 5000;
/// `exec_list` without a limit.
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// How long a cancel waits for a job's lock before it goes on without (the worker holding it
/// may be stuck; the job is signalled all the same).
const CANCEL_LOCK_WAIT: Duration = Duration::from_secs(2);

/// The handlers, bound to one job store.
pub struct Daemon {
    pub store: JobStore,
    pub config: DaemonConfig,
}

impl Daemon {
    pub fn new(config: DaemonConfig) -> Result<Self> {
        let store = JobStore::open(&config.data_dir)?;
        Ok(Daemon { store, config })
    }

    /// Answers one request; intermediate lines go to `sink`, the final answer is returned.
    pub fn handle(&self, request: &Request, sink: &mut dyn Sink) -> Result<Response> {
        // A prefix or `last` (capability `id_refs`) is resolved before the store is read.
        let resolved;
        let request = match request.exec_id() {
            Some(given) if given.len() != 36 && !matches!(request, Request::ExecResolve(_)) => {
                let mut whole = request.clone();
                if let Some(id) = whole.job_mut() {
                    *id = self.resolve(given)?;
                }
                resolved = whole;
                &resolved
            }
            _ => request,
        };
        match request {
            Request::Hello(h) => {
                let gpus = h.gpus.then(|| self.gpus().ok()).flatten();
                Ok(Response::Hello(HelloResponse { gpus, ..self.hello() }))
            }
            Request::ExecStart(req) => self.exec_start(req).map(Response::Status),
            Request::ExecStatus(JobRef { exec_id }) => {
                self.store.status(exec_id).map(|s| Response::Status(self.with_tails(s)))
            }
            Request::ExecLogs(req) => {
                logs::exec_logs(&self.store, req, sink).map(Response::LogsEnd)
            }
            Request::ExecCancel(req) => self.exec_cancel(req).map(Response::Status),
            Request::ExecWait(req) => self.exec_wait(req, sink).map(Response::Status),
            Request::ExecList(req) => self.exec_list(req).map(Response::List),
            Request::ExecRm(JobRef { exec_id }) => {
                self.store.remove(exec_id)?;
                Ok(Response::Removed(RemovedResponse { exec_id: exec_id.to_string() }))
            }
            Request::ExecPrune(req) => self.exec_prune(req).map(Response::Pruned),
            Request::Doctor(req) => doctor::checks(self, req).map(Response::Doctor),
            Request::ExecResolve(ResolveRequest { exec_id }) => {
                self.resolve(exec_id).map(|exec_id| Response::Resolved(JobRef { exec_id }))
            }
            Request::FileWrite(req) => {
                let content = sink.payload().ok_or_else(|| {
                    Error::new(ErrorCode::BadRequest, "file_write needs its bytes after the line")
                })?;
                files::file_write(req, content, &self.config).map(Response::FileWritten)
            }
            Request::FileRead(req) => files::file_read(req).map(Response::FileData),
            Request::FileStat(req) => files::file_stat(req).map(Response::FileStat),
            Request::FileLs(req) => files::file_ls(req).map(Response::FileList),
            Request::SyncDiff(req) => sync::sync_diff(req, sink).map(Response::SyncDiff),
            Request::SyncApply(req) => sync::sync_apply(req, sink).map(Response::SyncApplied),
            Request::SyncSend(req) => sync::sync_send(req, sink).map(Response::SyncSent),
            Request::Gpus(_) => self.gpus().map(Response::Gpus),
            Request::ExecRun(req) => self.exec_run(req, sink).map(Response::LogsEnd),
        }
    }

    /// A status answer with where the job stands: its last lines (and traceback).
    fn with_tails(&self, job: JobStatus) -> StatusResponse {
        let tails = logs::status_tails(&self.store, &job);
        StatusResponse { tails, ..StatusResponse::of(job) }
    }

    pub fn hello(&self) -> HelloResponse {
        HelloResponse {
            protocol: crate::protocol::PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_string(),
            capabilities: crate::protocol::CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            user: sys::user_name(),
            host: sys::hostname(),
            data_dir: self.store.root().display().to_string(),
            scheduler: self.config.scheduler,
            gpus: None,
        }
    }

    /// The machine's GPUs, who holds them and how many jobs wait ([`crate::jobs::gpu_queue`]).
    pub fn gpus(&self) -> Result<GpuReport> {
        let (memory, util) = (self.config.gpu_free_memory_mib, self.config.gpu_free_util_percent);
        GpuFiles::open(&self.store)?.report(&self.store, memory, util)
    }

    fn exec_cancel(&self, req: &CancelRequest) -> Result<StatusResponse> {
        let id = &req.exec_id;
        let grace = Duration::from_millis(req.grace_ms.unwrap_or(DEFAULT_GRACE_MS));
        let status = self.store.status(id)?;
        if status.status == RunStatus::Finished {
            // A lost job may have left a process behind (its worker was never recorded).
            let leftover = self.store.tree(&status).alive();
            if leftover {
                self.store.tree(&status).terminate(grace, false);
            }
            let mut answer = StatusResponse::of(status);
            let state = answer.job.state.as_str();
            answer.message = Some(if leftover {
                format!("already finished ({state}); the processes it left were ended")
            } else {
                format!("already finished ({state}); nothing to cancel")
            });
            return Ok(answer);
        }
        let cancel_file = CancelFile { grace_ms: grace.as_millis() as u64 };
        if let Some(slurm_job_id) = store::slurm_job_of(&status) {
            self.store.write_cancel(id, cancel_file)?;
            return scheduler::cancel(&self.store, id, slurm_job_id, grace);
        }
        // What could not be done on the way, said in the answer: the job is stopped all the
        // same (a full disk, a worker that holds the job's lock).
        let mut notes = Vec::new();
        if let Err(e) = self.store.write_cancel(id, cancel_file) {
            notes.push(format!(
                "the cancel request could not be written ({}): the job was signalled, with its \
                 own grace",
                e.message
            ));
        }
        // The worker is signalled first (by pid and start time): it ends the job's processes,
        // TERM, the grace, KILL, and records the end, in reserved space on a full disk.
        let status = self.store.read_status_raw(id)?;
        let worker_signalled =
            status.worker_pid.zip(status.worker_start_time).is_some_and(|(pid, start)| {
                sys::signal_if_same(pid, start, rustix::process::Signal::TERM)
            });
        if !worker_signalled {
            self.cancel_without_worker(id, grace, &mut notes)?;
        } else {
            let requested = self.store.update_within(id, CANCEL_LOCK_WAIT, |status| {
                if status.cancel_requested_at.is_some() {
                    return Ok(Change::Keep);
                }
                status.cancel_requested_at = Some(now_rfc3339());
                Ok(Change::Write)
            })?;
            match requested {
                Some(Updated::Unwritten(_, e)) => {
                    notes.push(format!("cancel_requested_at could not be recorded ({})", e.message))
                }
                Some(_) => {}
                None => notes.push(
                    "the job's lock is held by its worker: the worker was signalled and \
                     records the end"
                        .to_string(),
                ),
            }
        }
        // The worker escalates to KILL after the grace; give it that and a margin.
        let timeout = grace + Duration::from_secs(15);
        let (last, _) = wait::wait_finished(&self.store, id, Some(timeout), || Ok(()))?;
        let mut answer = StatusResponse::of(last);
        if answer.job.status == RunStatus::Running {
            notes.insert(0, "cancel requested; the job has not ended yet".to_string());
        }
        if !notes.is_empty() {
            answer.message = Some(notes.join("; "));
        }
        Ok(answer)
    }

    /// Cancels a running job whose worker is not there to do it (not recorded yet, or gone):
    /// ends every process of the job (a worker still starting included) and records the end.
    fn cancel_without_worker(
        &self,
        id: &str,
        grace: Duration,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        let status = self.store.read_status_raw(id)?;
        self.store.tree(&status).terminate(grace, false);
        let ended = self.store.update_within(id, CANCEL_LOCK_WAIT, |status| {
            if self.store.tree(status).alive() {
                return Ok(Change::Keep);
            }
            status.finish(Outcome::Cancelled(None), &now_rfc3339());
            Ok(Change::Write)
        })?;
        match ended {
            Some(updated) => updated.written().map(drop),
            None => {
                notes.push(
                    "the job's lock is held: its processes were ended, its end is \
                     recorded by whoever reads it next"
                        .to_string(),
                );
                Ok(())
            }
        }
    }

    fn exec_wait(&self, req: &WaitRequest, sink: &mut dyn Sink) -> Result<StatusResponse> {
        let timeout = req.timeout_ms.map(Duration::from_millis);
        let mut heartbeat = Heartbeats::new();
        let (last, ended) = wait::wait_finished(&self.store, &req.exec_id, timeout, || {
            if sink.closed() {
                return Err(Error::internal("wait", "the client went away"));
            }
            heartbeat.due(sink)
        })?;
        let mut answer = self.with_tails(last);
        if !ended {
            answer.timed_out = Some(true);
        }
        Ok(answer)
    }

    fn exec_list(&self, req: &ListRequest) -> Result<ListResponse> {
        let limit = req.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        // Newest first, a page of `limit` jobs at a time with one look at Slurm per page (not
        // one per job), and no more pages read than the answer needs.
        let mut jobs = Vec::new();
        for page in self.store.list_ids()?.chunks(limit.max(1)) {
            jobs.extend(
                (self.store.statuses(page).into_iter())
                    .filter(|job| req.state.is_none_or(|s| s == job.state))
                    .filter(|job| req.status.is_none_or(|s| s == job.status)),
            );
            if jobs.len() >= limit {
                break;
            }
        }
        jobs.truncate(limit);
        Ok(ListResponse { jobs })
    }

    /// `exec_run`: the start, a `started` line, then the follow of both streams to the end.
    fn exec_run(&self, req: &RunRequest, sink: &mut dyn Sink) -> Result<LogsEnd> {
        let started = self.exec_start(&req.start)?;
        let exec_id = ExecId::parse(&started.job.exec_id)?;
        sink.send(Response::Started(started)).map_err(|e| Error::io("sending", e))?;
        let follow = LogsRequest {
            exec_id,
            stream: StreamSel::Both,
            since: Some(StreamOffsets::default().or_start(StreamSel::Both)),
            tail: None,
            tail_lines: None,
            follow: true,
            raw: req.raw,
            max_bytes: None,
            since_time: None,
            until_time: None,
            view: LogView::Raw,
        };
        logs::exec_logs(&self.store, &follow, sink)
    }

    /// The whole id for `given`: an id, a unique prefix of one, or `last` (the newest job).
    fn resolve(&self, given: &str) -> Result<ExecId> {
        if let Ok(id) = ExecId::parse(given) {
            return Ok(id);
        }
        let ids = self.store.list_ids()?;
        if given == "last" {
            return ids.into_iter().next().ok_or_else(|| {
                Error::new(ErrorCode::JobNotFound, "no jobs yet, so no `last` job")
            });
        }
        let hex_like = given.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        if given.is_empty() || given.len() >= 36 || !hex_like {
            return ExecId::parse(given);
        }
        let mut found: Vec<ExecId> = ids.into_iter().filter(|id| id.starts_with(given)).collect();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 if is_go_era_id(given) => ExecId::parse(given),
            0 => Err(Error::new(ErrorCode::JobNotFound, format!("no job starts with {given}"))),
            many => Err(Error::invalid(format!(
                "{given} starts {many} jobs: {}{}",
                found.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                if many > 5 { ", ..." } else { "" }
            ))
            .with_hint("give more of the id")),
        }
    }

    fn exec_prune(&self, req: &PruneRequest) -> Result<PrunedResponse> {
        let pruned = self.store.prune(req.keep.unwrap_or(self.config.retention_count))?;
        let kept = self.store.list_ids()?.len();
        Ok(PrunedResponse { removed: pruned.removed, kept, swept_temp: Some(pruned.swept_temp) })
    }
}

/// Whether `name` can name an environment variable: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The home directory of the user codexd runs as.
pub use crate::platform::home_dir;

/// `~` and `~/x` are the home; a relative path is relative to the home; default is the home.
pub fn expand_cwd(cwd: Option<&str>, home: &Path) -> Result<String> {
    let cwd = cwd.unwrap_or("~");
    if cwd.contains('\0') {
        return Err(Error::invalid("cwd contains a NUL byte"));
    }
    let path = if cwd == "~" {
        home.to_path_buf()
    } else if let Some(rest) = cwd.strip_prefix("~/") {
        home.join(rest)
    } else if cwd.starts_with('~') {
        return Err(Error::new(ErrorCode::InvalidArgument, "~user paths are not supported"));
    } else {
        home.join(cwd)
    };
    Ok(path.display().to_string())
}

pub use crate::shell::shell_quote;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cwd_expansion() {
        let home = Path::new("/home/u");
        assert_eq!(expand_cwd(None, home).unwrap(), "/home/u");
        assert_eq!(expand_cwd(Some("~/w"), home).unwrap(), "/home/u/w");
        assert_eq!(expand_cwd(Some("w"), home).unwrap(), "/home/u/w");
        assert_eq!(expand_cwd(Some("/tmp"), home).unwrap(), "/tmp");
        assert!(expand_cwd(Some("~root"), home).is_err());
    }

    #[test]
    fn env_names() {
        for good in ["A", "_x", "CUDA_VISIBLE_DEVICES", "a1"] {
            assert!(valid_env_name(good), "{good}");
        }
        for bad in ["", "1A", "BAD NAME", "A=B", "A-B", "É"] {
            assert!(!valid_env_name(bad), "{bad}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
