//! The handlers of `codexd`: one function per request, over the job store. Two doors lead into
//! them and answer the same way: `rpc` (stdio, one process per ssh call) and `http` (run by
//! `serve`, a long-lived process).

pub mod cli;
pub mod config;
pub mod files;
pub mod http;
pub mod logs;
pub mod rpc;
pub mod serve;
pub mod sync;

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, ErrorCode, Result};
use crate::jobs::store::{self, CancelFile, JobSpec, JobStore, now_rfc3339};
use crate::jobs::{sys, worker};
use crate::protocol::{
    CancelRequest, CommandSpec, ExecStartRequest, HelloResponse, JobRef, JobState, JobStatus,
    ListRequest, ListResponse, PruneRequest, PrunedResponse, RemovedResponse, Request, Response,
    RunStatus, StatusResponse, WaitRequest,
};
pub use config::DaemonConfig;

/// Where answer lines go. A streaming handler sends `log` lines through it before its final
/// answer; `closed` tells it that nobody is listening any more.
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
        match request {
            Request::Hello(_) => Ok(Response::Hello(self.hello())),
            Request::ExecStart(req) => self.exec_start(req).map(Response::Status),
            Request::ExecStatus(JobRef { exec_id }) => {
                self.store.status(exec_id).map(|s| Response::Status(StatusResponse::of(s)))
            }
            Request::ExecLogs(req) => {
                logs::exec_logs(&self.store, req, sink).map(Response::LogsEnd)
            }
            Request::ExecCancel(req) => self.exec_cancel(req).map(Response::Status),
            Request::ExecWait(req) => self.exec_wait(req, sink).map(Response::Status),
            Request::ExecList(req) => self.exec_list(req).map(Response::List),
            Request::ExecRm(JobRef { exec_id }) => {
                self.store.remove(exec_id)?;
                Ok(Response::Removed(RemovedResponse { exec_id: exec_id.clone() }))
            }
            Request::ExecPrune(req) => self.exec_prune(req).map(Response::Pruned),
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
        }
    }

    fn hello(&self) -> HelloResponse {
        HelloResponse {
            protocol: crate::protocol::PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_string(),
            capabilities: crate::protocol::CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            user: sys::user_name(),
            host: sys::hostname(),
            data_dir: self.store.root().display().to_string(),
        }
    }

    fn exec_start(&self, req: &ExecStartRequest) -> Result<StatusResponse> {
        let plan = StartPlan::from_request(req, &self.config)?;
        if let Some(key) = &req.idempotency_key {
            store::validate_key(key)?;
        }
        let (id, problem) = {
            let _lock = self.store.lock_store()?;
            if let Some(key) = &req.idempotency_key
                && let Some(id) = self.store.find_key(key)?
                && let Ok(job) = self.store.status(&id)
            {
                let mut answer = StatusResponse::of(job);
                answer.replayed = Some(true);
                return Ok(answer);
            }
            let id = store::new_id();
            let dir = self.store.job_dir(&id)?;
            let (status, spec) = plan.into_job(&id, &dir, req);
            self.store.create_job(&status, &spec)?;
            if let Some(key) = &req.idempotency_key {
                self.store.record_key(key, &id)?;
            }
            (id, worker::start_problem(&spec))
        };
        // A job that cannot start is answered as such at once, without a worker.
        let failure = match problem {
            Some(problem) => Some(problem),
            None => worker::spawn_worker(&self.store, &id).err().map(|e| e.message),
        };
        if let Some(message) = failure {
            self.record_start_failure(&id, &message)?;
        }
        self.store.status(&id).map(StatusResponse::of)
    }

    fn record_start_failure(&self, id: &str, message: &str) -> Result<()> {
        let _lock = self.store.lock_job(id)?;
        let mut status = self.store.read_status_raw(id)?;
        let now = now_rfc3339();
        status.state = JobState::StartFailed;
        status.status = RunStatus::Finished;
        status.error = Some(message.to_string());
        status.started_at = Some(now.clone());
        status.finished_at = Some(now);
        status.duration_ms = Some(0);
        self.store.write_status(&status)
    }

    fn exec_cancel(&self, req: &CancelRequest) -> Result<StatusResponse> {
        let id = &req.exec_id;
        let status = self.store.status(id)?;
        if status.status == RunStatus::Finished {
            let mut answer = StatusResponse::of(status);
            answer.message = Some(format!(
                "already finished ({}); nothing to cancel",
                answer.job.state.as_str()
            ));
            return Ok(answer);
        }
        let grace_ms = req.grace_ms.unwrap_or(DEFAULT_GRACE_MS);
        self.store.write_cancel(id, CancelFile { grace_ms })?;
        {
            let _lock = self.store.lock_job(id)?;
            let mut status = self.store.read_status_raw(id)?;
            if status.state == JobState::Running {
                status.cancel_requested_at.get_or_insert_with(now_rfc3339);
                self.store.write_status(&status)?;
            }
            if let (Some(pid), Some(start)) = (status.worker_pid, status.worker_start_time)
                && sys::is_alive(pid, start)
            {
                sys::signal_process(pid, rustix::process::Signal::TERM);
            }
        }
        // The worker escalates to KILL after the grace; give it that and a margin.
        let timeout = Duration::from_millis(grace_ms) + Duration::from_secs(15);
        let mut last = None;
        logs::poll_until(Some(timeout), || {
            let s = self.store.status(id)?;
            let done = s.status == RunStatus::Finished;
            last = Some(s);
            Ok(done)
        })?;
        let mut answer = StatusResponse::of(last.expect("polled at least once"));
        if answer.job.status == RunStatus::Running {
            answer.message = Some("cancel requested; the job has not ended yet".to_string());
        }
        Ok(answer)
    }

    fn exec_wait(&self, req: &WaitRequest, sink: &mut dyn Sink) -> Result<StatusResponse> {
        let timeout = req.timeout_ms.map(Duration::from_millis);
        let mut last = None;
        let ended = logs::poll_until(timeout, || {
            if sink.closed() {
                return Err(Error::internal("wait", "the client went away"));
            }
            let s = self.store.status(&req.exec_id)?;
            let done = s.status == RunStatus::Finished;
            last = Some(s);
            Ok(done)
        })?;
        let mut answer = StatusResponse::of(last.expect("polled at least once"));
        if !ended {
            answer.timed_out = Some(true);
        }
        Ok(answer)
    }

    fn exec_list(&self, req: &ListRequest) -> Result<ListResponse> {
        let limit = req.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        let mut jobs = Vec::new();
        for id in self.store.list_ids()? {
            if jobs.len() >= limit {
                break;
            }
            let Ok(job) = self.store.status(&id) else {
                continue;
            };
            if req.state.is_none_or(|s| s == job.state) {
                jobs.push(job);
            }
        }
        Ok(ListResponse { jobs })
    }

    fn exec_prune(&self, req: &PruneRequest) -> Result<PrunedResponse> {
        let removed = self.store.prune(req.keep.unwrap_or(self.config.retention_count))?;
        let kept = self.store.list_ids()?.len();
        Ok(PrunedResponse { removed, kept })
    }
}

/// A validated `exec_start`: what to run, where, with what environment.
struct StartPlan {
    argv: Vec<String>,
    display: String,
    cwd: String,
    env: BTreeMap<String, String>,
    script: Option<String>,
    grace_ms: u64,
    retention: usize,
}

impl StartPlan {
    fn from_request(req: &ExecStartRequest, config: &DaemonConfig) -> Result<Self> {
        let shell_text = req.shell.as_deref().unwrap_or(&config.shell);
        let shell: Vec<String> = shell_text.split_whitespace().map(String::from).collect();
        let needs_shell = !matches!(req.cmd, Some(CommandSpec::Argv(_)));
        if needs_shell && shell.is_empty() {
            return Err(Error::invalid("shell is empty; e.g. \"bash -lc\""));
        }
        let (argv, display, script) = match (&req.cmd, &req.script) {
            (Some(_), Some(_)) => return Err(Error::invalid("give cmd or script, not both")),
            (None, None) => return Err(Error::invalid("cmd is required")),
            (Some(CommandSpec::Shell(cmd)), None) => {
                if cmd.trim().is_empty() {
                    return Err(Error::invalid("cmd is empty"));
                }
                let mut argv = shell.clone();
                argv.push(cmd.clone());
                (argv, cmd.clone(), None)
            }
            (Some(CommandSpec::Argv(argv)), None) => {
                if argv.first().is_none_or(|a| a.is_empty()) {
                    return Err(Error::invalid("cmd is an empty argv list"));
                }
                (argv.clone(), argv.join(" "), None)
            }
            (None, Some(script)) => {
                if script.trim().is_empty() {
                    return Err(Error::invalid("script is empty"));
                }
                // argv is finished in into_job, once the job dir (the script's home) is known.
                (shell.clone(), "<script>".to_string(), Some(script.clone()))
            }
        };
        for (k, v) in &req.env {
            let bad = k.is_empty() || k.contains(['=', '\0']) || v.contains('\0');
            if bad {
                return Err(Error::invalid(format!("env name {k:?}: no '=' or NUL, not empty")));
            }
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(Error::invalid("cmd contains a NUL byte"));
        }
        let cwd = expand_cwd(req.cwd.as_deref(), &home_dir())?;
        Ok(StartPlan {
            argv,
            display,
            cwd,
            env: req.env.clone(),
            script,
            grace_ms: DEFAULT_GRACE_MS,
            retention: config.retention_count,
        })
    }

    fn into_job(self, id: &str, dir: &Path, req: &ExecStartRequest) -> (JobStatus, JobSpec) {
        let mut argv = self.argv;
        let mut display = self.display;
        if self.script.is_some() {
            let path = dir.join("script").display().to_string();
            argv.push(format!("exec {}", shell_quote(&path)));
            display = format!("script {path}");
        }
        let status = JobStatus {
            exec_id: id.to_string(),
            status: RunStatus::Running,
            state: JobState::Running,
            cmd: display,
            cwd: self.cwd.clone(),
            pid: None,
            started_at: None,
            finished_at: None,
            exit_code: None,
            signal: None,
            duration_ms: None,
            error: None,
            name: req.name.clone(),
            labels: req.labels.clone(),
            argv: argv.clone(),
            host: Some(sys::hostname()),
            created_at: now_rfc3339(),
            pid_start_time: None,
            worker_pid: None,
            worker_start_time: None,
            boot_id: None,
            idempotency_key: req.idempotency_key.clone(),
            cancel_requested_at: None,
        };
        let spec = JobSpec {
            argv,
            cwd: self.cwd,
            env: self.env,
            script: self.script,
            grace_ms: self.grace_ms,
            retention: self.retention,
        };
        (status, spec)
    }
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
    fn quoting() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
