//! The detached worker: one per job, started as `codexd worker --data-dir D --id ID`.
//!
//! The worker runs in a session of its own (so neither the ssh call nor a terminal can signal
//! it), starts the job with its stdout/stderr going straight into the log files, records pid,
//! start time and boot id, waits for the job, cleans up what the job left behind and records the
//! end. Its stdin and stdout are /dev/null and its stderr is `worker.log`: nothing of it holds
//! the ssh channel open, and `exec_start` answers as soon as it is spawned.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use super::gpu_queue::{self, GpuFiles};
use super::kill::JobTree;
use super::outcome::Outcome;
use super::store::{Change, JobSpec, JobStore, Updated, now_rfc3339};
use super::sys::{self, Exit};
use super::{artifacts, slurm, timeline};
use crate::error::{Context, Error, Result};
use crate::protocol::JobStatus;

/// Spawns the worker for job `id` and returns at once. The worker's log goes to `log_dir` (the
/// job's staging dir: the open file moves with it). The worker carries the job's id in its
/// environment, so that it is found as a process of the job before it has recorded itself.
pub fn spawn_worker(store: &JobStore, id: &str, log_dir: &Path) -> Result<()> {
    let exe = sys::codexd_exe().context(|| "finding the codexd executable".into())?;
    let log = super::store::open_log_for_append(&log_dir.join("worker.log"))?;
    let args = [
        "worker".as_ref(),
        "--data-dir".as_ref(),
        store.root().as_os_str(),
        "--id".as_ref(),
        id.as_ref(),
    ];
    sys::spawn_detached(&exe, &args, &[(sys::EXEC_ID_VAR, id.as_ref())], &log)
        .context(|| format!("starting the job's worker ({})", exe.display()))?;
    Ok(())
}

/// The body of `codexd worker`. Returns the worker's exit code.
pub fn run_worker(data_dir: &Path, id: &str) -> Result<i32> {
    let store = JobStore::open(data_dir)?;
    // The worker is spawned before its job is renamed into place, under the store lock: once
    // the lock is free, the job exists whole, or its creator was killed and it never will.
    drop(store.lock_store()?);
    if store.existing_job_dir(id).is_err() {
        eprintln!("codexd worker: job {id} was never created (its creator was killed)");
        return Ok(0);
    }
    let spec = store.read_spec(id)?;
    let dir = store.job_dir(id)?;
    // A Slurm job's worker: Slurm's output went nowhere, the log is in the job's dir.
    let slurm_node = std::env::var_os(slurm::SLURM_JOB_ID_VAR).map(|_| {
        if let Ok(log) = super::store::open_log_for_append(&dir.join("worker.log")) {
            let _ = sys::redirect_stderr(&log);
        }
        std::env::var("SLURMD_NODENAME").unwrap_or_else(|_| sys::hostname())
    });
    let me = sys::current_pid();
    let me_stat =
        sys::proc_stat(me).ok_or_else(|| Error::internal("reading /proc/self", "gone"))?;
    if let Err(e) = sys::become_subreaper() {
        eprintln!("codexd worker: cannot become a child subreaper: {e}");
    }
    let tree = JobTree { exec_id: id, worker: Some((me, me_stat.start_time)) };

    let cancelled = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicI32::new(0));
    spawn_signal_thread(&store, id, me_stat.start_time, &cancelled, &started, spec.grace_ms)?;

    // A cancel that came before the worker (or while it waited for GPUs): the job never runs.
    let gpus = match store.read_cancel(id) {
        Some(_) => Err(Outcome::Cancelled(None)),
        None => wait_for_gpus(&store, id, &spec, me_stat.start_time, &cancelled),
    };
    let spawned = gpus.clone().and_then(|gpus| {
        prepare_and_spawn(&store, id, &dir, &spec, gpus.as_deref()).map_err(Outcome::StartFailed)
    });
    let release_gpus = || {
        if spec.gpus.is_some()
            && let Err(e) = GpuFiles::open(&store).and_then(|f| f.release(id))
        {
            eprintln!("codexd worker: cannot give back the GPUs of job {id}: {}", e.message);
        }
    };
    // Recorded under the job's lock: a cancel may have been recorded meanwhile.
    let now = now_rfc3339();
    let updated = store.update(id, |status| {
        status.worker_pid = Some(me);
        status.worker_start_time = Some(me_stat.start_time);
        status.boot_id = sys::boot_id();
        status.host = Some(sys::hostname());
        if slurm_node.is_some() {
            status.node = slurm_node.clone();
        }
        status.started_at = Some(now.clone());
        status.queue_reason = None;
        status.gpu_ids = gpus.ok().flatten();
        match &spawned {
            Ok(pid) => {
                status.pid = Some(*pid);
                status.pid_start_time = sys::proc_stat(*pid).map(|s| s.start_time);
            }
            Err(outcome) => status.finish(outcome.clone(), &now),
        }
        Ok(Change::Write)
    })?;
    let (started_status, child_pid) = match (updated, spawned) {
        (Updated::Ended(status), _) => {
            // Ended while this worker was held up (stopped, starved): end what it started and
            // leave the recorded end as it is.
            eprintln!(
                "codexd worker: job {id} already ended ({}); stopping",
                status.state.as_str()
            );
            tree.terminate(Duration::ZERO, true);
            release_gpus();
            return Ok(0);
        }
        (updated, Err(_)) => {
            release_gpus();
            updated.written()?;
            store.prune(spec.retention)?;
            return Ok(0);
        }
        // A start that cannot be recorded (a full disk) does not stop the job: readers find
        // this worker by the job's id in its environment, and the end is recorded in reserved
        // space.
        (Updated::Unwritten(status, e), Ok(pid)) => {
            eprintln!("codexd worker: cannot record the start of job {id}: {e}");
            (status, pid)
        }
        (updated, Ok(pid)) => (updated.into_status(), pid),
    };
    started.store(child_pid, Ordering::SeqCst);

    // The time index (`exec logs --since 10m`): sampled while the job runs, once more at its end.
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = timeline::Recorder::create(&dir).map(|r| r.run_until(sampling.clone()));
    let exit = wait_for(child_pid);
    // Whatever the job left running ends with it (as a Slurm step does); then its GPUs are free.
    tree.terminate(Duration::from_millis(spec.grace_ms), true);
    release_gpus();
    sampling.store(true, Ordering::SeqCst);
    if let Ok(sampler) = sampler {
        sampler.thread().unpark();
        let _ = sampler.join();
    }
    // Read after the job's processes are gone: a signal to the job and one to the worker
    // (Slurm's time limit sends both) come at about the same time.
    let was_cancelled = cancelled.load(Ordering::SeqCst);
    if was_cancelled && slurm_node.is_some() && store.read_cancel(id).is_none() {
        // Signalled by Slurm, not by a cancel: its time limit, a preemption, an `scancel` of
        // someone. Slurm's view of the job records the end ([`super::slurm`]).
        eprintln!("codexd worker: job {id} was ended by Slurm; its view decides the end");
        return Ok(0);
    }

    // Read before the lock: what the job's cwd holds never holds up a reader of the job.
    let found = artifacts::collect(Path::new(&spec.cwd), &dir);
    store
        .update(id, |status| {
            if status.worker_pid.is_none() {
                let cancel_requested_at = status.cancel_requested_at.take();
                *status = JobStatus { cancel_requested_at, ..started_status };
            }
            let outcome =
                if was_cancelled { Outcome::Cancelled(Some(exit)) } else { Outcome::of_exit(exit) };
            (status.artifacts, status.warning) = (found.artifacts, found.warning);
            status.finish(outcome, &now_rfc3339());
            Ok(Change::Write)
        })?
        .written()?;
    store.prune(spec.retention)?;
    Ok(0)
}

/// For a job that asked for GPUs: waits for them in the store's queue ([`gpu_queue`]),
/// recorded as its worker with the reason it waits (so it reads `queued`, can be cancelled and
/// is found lost if this worker dies). `Ok(None)` for a job that asked for none.
fn wait_for_gpus(
    store: &JobStore,
    id: &str,
    spec: &JobSpec,
    my_start_time: u64,
    cancelled: &AtomicBool,
) -> std::result::Result<Option<Vec<u32>>, Outcome> {
    let Some(ask) = &spec.gpus else {
        return Ok(None);
    };
    let me = gpu_queue::Worker::me(id, my_start_time);
    let mut record = |reason: &str| {
        let recorded = store.update(id, |status| {
            status.worker_pid = Some(me.worker_pid);
            status.worker_start_time = Some(my_start_time);
            status.boot_id = sys::boot_id();
            status.queue_reason = Some(reason.to_string());
            Ok(Change::Write)
        });
        if let Ok(Updated::Unwritten(_, e)) = recorded {
            eprintln!("codexd worker: cannot record that job {id} waits: {e}");
        }
    };
    record(&ask.waiting());
    match gpu_queue::wait_turn(store, &me, ask, cancelled, &mut record) {
        Ok(ids) => Ok(Some(ids)),
        Err(None) => Err(Outcome::Cancelled(None)),
        Err(Some(why)) => Err(Outcome::StartFailed(why)),
    }
}

/// Opens the logs, checks the cwd and spawns the job in a process group of its own, on `gpus`
/// when it was given some. Returns the job's pid, or the one-line reason it could not start.
fn prepare_and_spawn(
    store: &JobStore,
    id: &str,
    dir: &Path,
    spec: &JobSpec,
    gpus: Option<&[u32]>,
) -> std::result::Result<i32, String> {
    use std::os::unix::process::CommandExt;
    if let Some(problem) = start_problem(spec) {
        return Err(problem);
    }
    let cwd = Path::new(&spec.cwd);
    if let Some(script) = &spec.script {
        write_script(&dir.join("script"), script).map_err(|e| e.message)?;
    }
    let open = |stream| {
        let path = store.log_path(id, stream).map_err(|e| e.message)?;
        super::store::open_log_for_append(&path).map_err(|e| e.message)
    };
    let stdout = open(crate::protocol::Stream::Stdout)?;
    let stderr = open(crate::protocol::Stream::Stderr)?;
    let (program, args) = spec.argv.split_first().ok_or("empty command")?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .envs(&spec.env)
        .env("CODEXD_EXEC_ID", id)
        .env("CODEXD_JOB_DIR", dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    if let Some(gpus) = gpus {
        let list = gpus.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        // nvidia-smi's indexes are in PCI bus order; CUDA's default order differs.
        if !spec.env.contains_key("CUDA_DEVICE_ORDER") {
            cmd.env("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
        }
        cmd.env("CUDA_VISIBLE_DEVICES", &list).env("CODEXD_GPUS", &list);
    }
    match cmd.spawn() {
        Ok(child) => Ok(child.id() as i32),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{program}: command not found"))
        }
        Err(e) => Err(format!("{program}: {e}")),
    }
}

/// Why `spec` cannot start, found without starting it: a missing cwd or program. Checked by
/// `exec_start` before it answers and again by the worker (the world may change in between).
pub fn start_problem(spec: &JobSpec) -> Option<String> {
    let cwd = Path::new(&spec.cwd);
    if !cwd.is_dir() {
        return Some(format!("cwd {} does not exist or is not a directory", spec.cwd));
    }
    let program = spec.argv.first()?;
    let found = if program.contains('/') {
        sys::runnable(&cwd.join(program))
    } else {
        let path = spec.env.get("PATH").cloned().or_else(|| std::env::var("PATH").ok());
        sys::find_on_path(program, &path.unwrap_or_default()).is_some()
    };
    (!found).then(|| format!("{program}: command not found"))
}

fn write_script(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o700)
        .open(path)
        .context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes()).context(|| format!("writing {}", path.display()))
}

/// Reaps children (orphans included: we are their subreaper) until `pid` has ended.
fn wait_for(pid: i32) -> Exit {
    loop {
        match sys::reap_any(true) {
            Ok(Some((p, exit))) if p == pid => return exit,
            Ok(_) => continue,
            // No children at all cannot happen while `pid` is ours; if it does, the job is gone.
            Err(_) => return Exit::Signal(signal_hook::consts::SIGKILL),
        }
    }
}

/// TERM, INT, HUP or USR1 to the worker cancels the job: TERM to every process of it, the
/// grace period from the cancel request, then KILL.
fn spawn_signal_thread(
    store: &JobStore,
    id: &str,
    my_start_time: u64,
    cancelled: &Arc<AtomicBool>,
    started: &Arc<AtomicI32>,
    default_grace_ms: u64,
) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context(|| "installing signal handlers".into())?;
    let (store, id) = (store.clone(), id.to_string());
    let (cancelled, started) = (cancelled.clone(), started.clone());
    let me = sys::current_pid();
    std::thread::spawn(move || {
        for _ in signals.forever() {
            if cancelled.swap(true, Ordering::SeqCst) {
                continue;
            }
            let grace = store.read_cancel(&id).map_or(default_grace_ms, |c| c.grace_ms);
            // The job may not be spawned yet; the main thread records `started` right after.
            while started.load(Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            let tree = JobTree { exec_id: &id, worker: Some((me, my_start_time)) };
            tree.terminate(Duration::from_millis(grace), false);
        }
    });
    Ok(())
}
