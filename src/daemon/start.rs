//! Starting a job: `exec_start` validates the request into a [`StartPlan`], checks out a
//! project's worktree before the store lock, then under it replays an earlier job of the
//! idempotency key or builds the new job whole and starts its worker (or submits it to Slurm).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use super::{
    DEFAULT_GRACE_MS, Daemon, DaemonConfig, config, expand_cwd, home_dir, projects, scheduler,
    shell_quote, valid_env_name,
};
use crate::error::{Error, ErrorCode, Result};
use crate::jobs::gpu_queue::GpuAsk;
use crate::jobs::outcome::Outcome;
use crate::jobs::store::{self, JobSpec, now_rfc3339};
use crate::jobs::{slurm, sys, worker};
use crate::protocol::{
    Checkout, CommandSpec, ExecId, ExecStartRequest, JobState, JobStatus, Resources, Scheduler,
    StatusResponse,
};
/// A start that ran out of disk in the job store is `no_space` (nothing of the job is left).
fn no_space_if_full(e: Error) -> Error {
    if !(e.is_io(io::ErrorKind::StorageFull) || e.is_io(io::ErrorKind::QuotaExceeded)) {
        return e;
    }
    Error { code: ErrorCode::NoSpace, ..e }
        .with_hint("free some space on the disk of codexd's data dir (`codex-remote exec prune`)")
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
    pub(super) fn exec_start(&self, req: &ExecStartRequest) -> Result<StatusResponse> {
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
        id: &ExecId,
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
            exec_id: id.clone(),
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
            stored_state: None,
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
