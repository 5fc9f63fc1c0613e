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
pub mod sync;
pub mod terminal_view;

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, ErrorCode, Result};
use crate::jobs::gpu_queue::{GpuAsk, GpuFiles};
use crate::jobs::outcome::Outcome;
use crate::jobs::store::{self, CancelFile, JobSpec, JobStore, now_rfc3339};
use crate::jobs::{slurm, sys, wait, worker};
use crate::protocol::exec_id::is_go_era_id;
use crate::protocol::{
    CancelRequest, Checkout, CommandSpec, ExecId, ExecStartRequest, GpuReport, HelloResponse,
    JobRef, JobState, JobStatus, ListRequest, ListResponse, LogView, LogsEnd, LogsRequest,
    PruneRequest, PrunedResponse, RemovedResponse, Request, ResolveRequest, Resources, Response,
    RunRequest, RunStatus, Scheduler, StatusResponse, StreamOffsets, StreamSel, WaitRequest,
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

/// A start that ran out of disk in the job store is `no_space` (nothing of the job is left).
fn no_space_if_full(e: Error) -> Error {
    if !(e.is_io(io::ErrorKind::StorageFull) || e.is_io(io::ErrorKind::QuotaExceeded)) {
        return e;
    }
    Error { code: ErrorCode::NoSpace, ..e }
        .with_hint("free some space on the disk of codexd's data dir (`codex-remote exec prune`)")
}

/// How long a cancel waits for a job's lock before it goes on without (the worker holding it
/// may be stuck; the job is signalled all the same).
const CANCEL_LOCK_WAIT: Duration = Duration::from_secs(2);

/// The handlers, bound to one job store.
pub struct Daemon {
    pub store: JobStore,
    pub config: DaemonConfig,
}

/// A key already used by another request: an error naming the first job, never a replay of it.
fn idempotency_conflict(key: &str, first: &JobStatus) -> Error {
    Error::new(
        ErrorCode::IdempotencyConflict,
        format!(
            "idempotency key {key:?} was used by job {} for another request ({})",
            first.exec_id, first.cmd
        ),
    )
    .with_hint(format!(
        "a key stands for one request: use a new key for a new command, or look at job {} \
         (exec status)",
        first.exec_id
    ))
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

    fn exec_start(&self, req: &ExecStartRequest) -> Result<StatusResponse> {
        let plan = StartPlan::from_request(req, &self.config)?;
        if let Some(key) = &req.idempotency_key {
            store::validate_key(key)?;
        }
        // A project is checked out before the store lock: a clone or fetch may take a while,
        // and other starts should not wait for it. A start that will replay checks out nothing.
        let id = store::new_id();
        let checkout = match &plan.project {
            Some((project, git_ref)) if !self.replays(req) => {
                Some(projects::check_out(project, git_ref, &self.store.worktree_dir(&id)))
            }
            _ => None,
        };
        if let Some(Ok(c)) = &checkout
            && let Err(e) = projects::cwd_inside(c, &plan.cwd)
        {
            self.store.release_worktree(&id);
            return Err(e);
        }
        let checked_out = checkout.as_ref().is_some_and(|c| c.is_ok());
        let created = self.create_job(req, plan, &id, checkout).map_err(no_space_if_full);
        if checked_out && !matches!(created, Ok(Created::New { .. })) {
            self.store.release_worktree(&id);
        }
        match created? {
            Created::Replay(answer) => Ok(*answer),
            Created::New { swept, status } => {
                if swept > 0 {
                    self.store.empty_trash();
                }
                self.store.status_just_started(*status).map(StatusResponse::of)
            }
        }
    }

    /// Under the store lock: the earlier job of the request's key, or the new job `id`, built
    /// whole and started.
    fn create_job(
        &self,
        req: &ExecStartRequest,
        plan: StartPlan,
        id: &ExecId,
        checkout: Option<std::result::Result<Checkout, String>>,
    ) -> Result<Created> {
        let _lock = self.store.lock_store()?;
        if let Some(key) = &req.idempotency_key
            && let Some(record) = self.store.find_key(key)?
            && let Ok(job) = self.store.status(&record.exec_id)
        {
            if record.fingerprint.is_some_and(|f| f != req.fingerprint()) {
                return Err(idempotency_conflict(key, &job));
            }
            let mut answer = StatusResponse::of(job);
            answer.replayed = Some(true);
            return Ok(Created::Replay(Box::new(answer)));
        }
        // What earlier creators killed mid-way left behind (they held this lock).
        let swept = self.store.sweep_staging().unwrap_or(0);
        let dir = self.store.job_dir(id)?;
        let (checkout, checkout_problem) = match (checkout, &plan.project) {
            (Some(Ok(c)), _) => (Some(c), None),
            (Some(Err(problem)), Some((project, git_ref))) => {
                (Some(Checkout::failed(&project.id, git_ref)), Some(problem))
            }
            _ => (None, None),
        };
        let sbatch = plan.sbatch.clone();
        let (mut status, spec) = plan.into_job(id, &dir, req, checkout);
        // A job that cannot start is answered as such at once, without a worker.
        let problem = checkout_problem.or_else(|| worker::start_problem(&spec));
        if let Some(problem) = &problem {
            status.finish(Outcome::StartFailed(problem.clone()), &now_rfc3339());
        }
        // Built whole aside, the key recorded, the worker started (it waits for this lock),
        // then one rename: a kill at any point leaves no job or a whole one.
        let staged = self.store.stage_job(&status, &spec)?;
        if let Some(key) = &req.idempotency_key {
            self.store.record_key(key, id, &req.fingerprint())?;
        }
        if problem.is_none() {
            let started = match &sbatch {
                Some(sbatch) => scheduler::submit(sbatch, &self.store, id, &mut status),
                None => worker::spawn_worker(&self.store, id, staged.dir()).map_err(|e| e.message),
            };
            if let Err(message) = started {
                status.finish(Outcome::StartFailed(message), &now_rfc3339());
            }
            if sbatch.is_some() || status.state == JobState::StartFailed {
                staged.write_status(&status)?;
            }
        }
        staged.commit()?;
        Ok(Created::New { swept, status: Box::new(status) })
    }

    /// Whether this start will replay an earlier job (its key names one).
    fn replays(&self, req: &ExecStartRequest) -> bool {
        let record = req.idempotency_key.as_deref().and_then(|k| self.store.find_key(k).ok());
        record.flatten().is_some_and(|r| self.store.status(&r.exec_id).is_ok())
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
        } else if let Some(_lock) = self.store.lock_job_within(id, CANCEL_LOCK_WAIT)? {
            let mut status = self.store.read_status_raw(id)?;
            if status.state == JobState::Running && status.cancel_requested_at.is_none() {
                status.cancel_requested_at = Some(now_rfc3339());
                if let Err(e) = self.store.write_status(&status) {
                    notes
                        .push(format!("cancel_requested_at could not be recorded ({})", e.message));
                }
            }
        } else {
            notes.push(
                "the job's lock is held by its worker: the worker was signalled and \
                        records the end"
                    .to_string(),
            );
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
        let Some(_lock) = self.store.lock_job_within(id, CANCEL_LOCK_WAIT)? else {
            notes.push(
                "the job's lock is held: its processes were ended, its end is \
                        recorded by whoever reads it next"
                    .to_string(),
            );
            return Ok(());
        };
        let mut status = self.store.read_status_raw(id)?;
        if status.state == JobState::Running && !self.store.tree(&status).alive() {
            status.finish(Outcome::Cancelled(None), &now_rfc3339());
            self.store.write_end(&status)?;
        }
        Ok(())
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

/// What the locked part of `exec_start` did.
enum Created {
    /// The request's key named an earlier job: its status, `replayed`.
    Replay(Box<StatusResponse>),
    /// A new job as recorded; `swept`: abandoned half-created jobs removed on the way.
    New { swept: usize, status: Box<JobStatus> },
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
    /// The project and ref to check out; `cwd` is then relative to the worktree.
    project: Option<(config::Project, String)>,
    scheduler: Scheduler,
    /// What a Slurm job asks of Slurm.
    resources: Option<Resources>,
    /// `sbatch`, for a job Slurm runs.
    sbatch: Option<std::path::PathBuf>,
    /// The GPUs a job codexd runs waits for.
    gpus: Option<GpuAsk>,
}

impl StartPlan {
    fn from_request(req: &ExecStartRequest, config: &DaemonConfig) -> Result<Self> {
        let shell_text = req.shell.as_deref().unwrap_or(&config.shell);
        let shell = crate::shell::shell_words(shell_text);
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
            if !valid_env_name(k) {
                return Err(Error::invalid(format!(
                    "env name {k:?}: letters, digits and _, not starting with a digit"
                )));
            }
            if v.contains('\0') {
                return Err(Error::invalid(format!("env {k}: the value contains a NUL byte")));
            }
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(Error::invalid("cmd contains a NUL byte"));
        }
        let (scheduler, resources) = scheduler::placement(req.resources.as_deref(), config)?;
        let sbatch = match scheduler {
            Scheduler::Slurm => Some(slurm::sbatch()?),
            Scheduler::Local => None,
        };
        let gpus = match (scheduler, &resources) {
            (Scheduler::Local, Some(r)) => Some(scheduler::gpu_ask(r, config)?),
            _ => None,
        };
        let (cwd, project) = match &req.project {
            Some(id) => {
                let project = projects::find(config, id)?.clone();
                let git_ref = req.git_ref.as_deref().unwrap_or(projects::DEFAULT_REF);
                projects::check_ref(git_ref)?;
                let cwd = projects::relative_cwd(req.cwd.as_deref())?;
                (cwd.display().to_string(), Some((project, git_ref.to_string())))
            }
            None if req.git_ref.is_some() => {
                return Err(Error::invalid("ref is given without a project"));
            }
            None => (expand_cwd(req.cwd.as_deref(), &home_dir())?, None),
        };
        Ok(StartPlan {
            project,
            scheduler,
            resources,
            sbatch,
            gpus,
            argv,
            display,
            cwd,
            // The request's variables win over codexd's `env_defaults`.
            env: config.env_defaults.clone().into_iter().chain(req.env.clone()).collect(),
            script,
            grace_ms: DEFAULT_GRACE_MS,
            retention: config.retention_count,
        })
    }

    /// The job's first status and spec; a project job's cwd is inside its worktree.
    fn into_job(
        self,
        id: &str,
        dir: &Path,
        req: &ExecStartRequest,
        checkout: Option<Checkout>,
    ) -> (JobStatus, JobSpec) {
        let cwd = match checkout.as_ref().and_then(|c| c.worktree.as_deref()) {
            Some(worktree) if self.cwd.is_empty() => worktree.to_string(),
            Some(worktree) => Path::new(worktree).join(&self.cwd).display().to_string(),
            None => self.cwd,
        };
        let mut argv = self.argv;
        let mut display = self.display;
        if self.script.is_some() {
            let path = dir.join("script").display().to_string();
            argv.push(format!("exec {}", shell_quote(&path)));
            display = format!("script {path}");
        }
        let status = JobStatus {
            exec_id: id.to_string(),
            status: JobState::Running.status(),
            state: JobState::Running,
            cmd: display,
            cwd: cwd.clone(),
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
            artifacts: None,
            warning: None,
            checkout,
            scheduler: Some(self.scheduler),
            slurm_job_id: None,
            node: None,
            resources: self.resources,
            // Until its worker has looked at the GPUs.
            queue_reason: self.gpus.as_ref().map(GpuAsk::waiting),
            gpu_ids: None,
        };
        let spec = JobSpec {
            argv,
            cwd,
            env: self.env,
            script: self.script,
            grace_ms: self.grace_ms,
            retention: self.retention,
            gpus: self.gpus,
        };
        (status, spec)
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
