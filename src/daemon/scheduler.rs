//! Who runs a new job: codexd's own worker (`scheduler: local`, or `--local` on a Slurm
//! machine) or Slurm, and with what resources. A machine without a scheduler refuses what
//! only a scheduler can honour, rather than ignoring it; GPUs it hands out itself
//! ([`crate::jobs::gpu_queue`]), after checking at the start that the ask can ever be met.

use std::path::Path;
use std::time::Duration;

use super::DaemonConfig;
use crate::error::{Error, Result};
use crate::jobs::gpu_queue::GpuAsk;
use crate::jobs::gpus::{self, Smi};
use crate::jobs::outcome::Outcome;
use crate::jobs::store::{Change, JobStore, now_rfc3339};
use crate::jobs::{slurm, wait};
use crate::protocol::{JobStatus, Resources, RunStatus, Scheduler, StatusResponse};

/// The scheduler of a start, and for Slurm the resources asked (codexd's defaults filled in,
/// the time in Slurm's form).
pub fn placement(
    asked: Option<&Resources>,
    config: &DaemonConfig,
) -> Result<(Scheduler, Option<Resources>)> {
    let none = Resources::default();
    let asked = asked.unwrap_or(&none);
    let flags = asked.scheduler_flags().join(", ");
    let slurm_only: Vec<&str> =
        asked.scheduler_flags().into_iter().filter(|f| !GPU_FLAGS.contains(f)).collect();
    match config.scheduler {
        Scheduler::Local if !slurm_only.is_empty() => Err(Error::invalid(format!(
            "{}: this machine runs jobs itself (codexd's scheduler is `local`), so it \
             cannot honour them (it honours --gpus and --gpu-ids)",
            slurm_only.join(", ")
        ))
        .with_hint(
            "drop these flags, or run on a machine whose codexd config says `scheduler: slurm`",
        )),
        Scheduler::Slurm if !asked.gpu_ids.is_empty() => Err(Error::invalid(
            "--gpu-ids pins GPUs of a machine without a scheduler; Slurm picks a job's GPUs",
        )
        .with_hint("ask for a number of GPUs with --gpus N")),
        Scheduler::Slurm if asked.local && !flags.is_empty() => Err(Error::invalid(format!(
            "--local runs the job on the login node, without Slurm: {flags} cannot go with it"
        ))),
        Scheduler::Local => Ok((Scheduler::Local, gpu_resources(asked)?)),
        Scheduler::Slurm if asked.local => Ok((Scheduler::Local, None)),
        Scheduler::Slurm => {
            let mut resources = asked.or_defaults(&config.slurm_defaults);
            if let Some(time) = &resources.time {
                resources.time = Some(slurm_time(time)?);
            }
            for (what, value) in [("partition", &resources.partition), ("mem", &resources.mem)] {
                if value.as_deref().is_some_and(|v| v.is_empty() || v.starts_with('-')) {
                    return Err(Error::invalid(format!("{what} {value:?} is not a value")));
                }
            }
            if resources.slurm_args.iter().any(|a| !a.starts_with('-')) {
                return Err(Error::invalid(
                    "each slurm argument is one sbatch option, e.g. --slurm-arg=--qos=high",
                ));
            }
            Ok((Scheduler::Slurm, Some(resources)))
        }
    }
}

/// The flags a machine without a scheduler honours.
const GPU_FLAGS: [&str; 2] = ["--gpus", "--gpu-ids"];

/// The GPUs a job on a machine without a scheduler asks for: `None` for none (`--gpus 0`),
/// `gpus` set to the count of `gpu_ids` when those pin them.
fn gpu_resources(asked: &Resources) -> Result<Option<Resources>> {
    let mut ids = asked.gpu_ids.clone();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != asked.gpu_ids.len() {
        return Err(Error::invalid("--gpu-ids names a GPU twice"));
    }
    let count = match (asked.gpus, ids.len() as u32) {
        (Some(n), pinned) if pinned > 0 && n != pinned => {
            return Err(Error::invalid(format!(
                "--gpus {n} and --gpu-ids with {pinned} GPUs disagree; give one of them"
            )));
        }
        (_, pinned) if pinned > 0 => pinned,
        (Some(n), _) => n,
        (None, _) => 0,
    };
    Ok((count > 0).then(|| Resources {
        gpus: Some(count),
        gpu_ids: asked.gpu_ids.clone(),
        ..Resources::default()
    }))
}

/// What a `--gpus` job of a machine without a scheduler waits for, checked now against
/// nvidia-smi: no driver, or fewer GPUs than asked, is refused at once rather than queued
/// forever.
pub fn gpu_ask(resources: &Resources, config: &DaemonConfig) -> Result<GpuAsk> {
    let ask = GpuAsk {
        count: resources.gpus.unwrap_or(0),
        ids: resources.gpu_ids.clone(),
        free_memory_mib: config.gpu_free_memory_mib,
        free_util_percent: config.gpu_free_util_percent,
    };
    let smi = gpus::query(&config.data_dir);
    let problem = match &smi {
        Smi::Gpus { gpus } => ask.impossible(gpus),
        _ => smi.problem(),
    };
    match problem {
        Some(why) => Err(Error::invalid(format!("--gpus: {why}")).with_hint(
            "see the machine's GPUs with `codex-remote machine check`; without --gpus the job \
             runs at once",
        )),
        None => Ok(ask),
    }
}

/// Submits the staged job `status` to Slurm (its worker as the only step) and records the
/// Slurm job in it; `Err` with Slurm's own message when Slurm refuses it.
pub fn submit(
    sbatch: &Path,
    store: &JobStore,
    id: &str,
    status: &mut JobStatus,
) -> std::result::Result<(), String> {
    // The worker runs elsewhere, maybe in another directory: it needs the store's whole path.
    let data_dir = std::fs::canonicalize(store.root())
        .map_err(|e| format!("{}: {e}", store.root().display()))?;
    let resources = status.resources.clone().unwrap_or_default();
    status.slurm_job_id = Some(slurm::submit(sbatch, &data_dir, id, &resources)?);
    Ok(())
}

/// Cancels a running Slurm job: a queued one is `scancel`led and recorded `cancelled`; a
/// started one gets TERM, the grace and KILL from its worker (the batch step's process), as on
/// any machine. `scancel` is the last word either way. The answer waits as for a local job.
pub fn cancel(
    store: &JobStore,
    id: &str,
    slurm_job_id: &str,
    grace: Duration,
) -> Result<StatusResponse> {
    let requested = store.update(id, |status| {
        if status.cancel_requested_at.is_some() {
            return Ok(Change::Keep);
        }
        status.cancel_requested_at = Some(now_rfc3339());
        Ok(Change::Write)
    })?;
    let worker_started = requested.written()?.status().worker_pid.is_some();
    if worker_started {
        slurm::scancel(slurm_job_id, &["--batch", "--signal=TERM"]);
    } else {
        // A worker starting meanwhile finds the cancel request and does not run the job.
        slurm::scancel(slurm_job_id, &[]);
        let ended = store.update(id, |status| {
            if status.worker_pid.is_some() {
                return Ok(Change::Keep);
            }
            status.finish(Outcome::Cancelled(None), &now_rfc3339());
            Ok(Change::Write)
        })?;
        ended.written()?;
    }
    let (mut last, ended) = wait::wait_finished(store, id, Some(grace + MARGIN), || Ok(()))?;
    slurm::scancel(slurm_job_id, &[]);
    if !ended {
        (last, _) = wait::wait_finished(store, id, Some(MARGIN), || Ok(()))?;
    }
    let mut answer = StatusResponse::of(last);
    if answer.job.status == RunStatus::Running {
        answer.message = Some("cancel requested; the job has not ended yet".to_string());
    }
    Ok(answer)
}

/// How long a cancel waits beyond the grace (the worker's KILL, Slurm's KillWait).
const MARGIN: Duration = Duration::from_secs(15);

/// A time limit in Slurm's form: `2h`, `90m`, `5s` become `H:MM:SS`; Slurm's own forms
/// (`30`, `1-00:00:00`, `2:00:00`) pass as they are.
pub fn slurm_time(text: &str) -> Result<String> {
    let text = text.trim();
    if let Ok(d) = humantime::parse_duration(text) {
        let secs = d.as_secs().max(1);
        return Ok(format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60));
    }
    let slurm_form = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit() || b == b':' || b == b'-')
        && text.as_bytes()[0].is_ascii_digit();
    if slurm_form {
        Ok(text.to_string())
    } else {
        Err(Error::invalid(format!(
            "time {text:?}: give a duration (2h, 90m, 1h30m) or Slurm's form (1-00:00:00)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_become_slurms_form() {
        assert_eq!(slurm_time("2h").unwrap(), "2:00:00");
        assert_eq!(slurm_time("1h30m").unwrap(), "1:30:00");
        assert_eq!(slurm_time("5s").unwrap(), "0:00:05");
        assert_eq!(slurm_time("1-00:00:00").unwrap(), "1-00:00:00");
        assert!(slurm_time("soon").is_err());
        assert!(slurm_time("-1").is_err());
    }
}
