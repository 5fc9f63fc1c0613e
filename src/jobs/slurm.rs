//! Slurm, driven through its own commands: `sbatch` submits a job whose only step is the job's
//! `codexd worker`; `squeue` (then `sacct`, when accounting exists) says where a job is;
//! `scancel` ends it. Slurm places the job, the worker runs it as on any machine, writing the
//! same status and logs into the job store (a file system shared with the compute nodes).
//!
//! How a running job whose worker recorded no end is read, from Slurm's state:
//! ```text
//! PENDING, REQUEUED, ...          queued (queue_reason: Slurm's reason)
//! RUNNING, COMPLETING, ...        running
//! CANCELLED                       cancelled
//! TIMEOUT, OUT_OF_MEMORY, FAILED  failed, Slurm's state and reason in `error`
//! NODE_FAIL, BOOT_FAIL, PREEMPTED lost, with Slurm's reason
//! COMPLETED, or unknown to Slurm  lost (the worker never recorded an end)
//! slurmctld unreachable           the job store's record, with a `warning`
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::outcome::Outcome;
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::Resources;

/// Set by Slurm in a job's environment: the worker is a Slurm job's step.
pub const SLURM_JOB_ID_VAR: &str = "SLURM_JOB_ID";

/// A Slurm command, found on codexd's PATH (as a login shell on the cluster sets it).
fn slurm_command(name: &str) -> Option<PathBuf> {
    super::sys::find_on_path(name, &std::env::var("PATH").unwrap_or_default())
}

/// `sbatch`, or `scheduler_unavailable` when this machine has none.
pub fn sbatch() -> Result<PathBuf> {
    slurm_command("sbatch").ok_or_else(|| {
        Error::new(
            ErrorCode::SchedulerUnavailable,
            "sbatch is not on codexd's PATH: this machine cannot submit Slurm jobs",
        )
        .with_hint("install Slurm's client commands, or set `scheduler: local` in codexd's config")
    })
}

/// The `sbatch` options for `resources`.
pub fn sbatch_args(resources: &Resources) -> Vec<String> {
    let mut args = Vec::new();
    let mut add = |flag: &str, value: Option<String>| {
        if let Some(v) = value {
            args.push(format!("--{flag}={v}"));
        }
    };
    add("gpus", resources.gpus.map(|n| n.to_string()));
    add("partition", resources.partition.clone());
    add("account", resources.account.clone());
    add("time", resources.time.clone());
    add("mem", resources.mem.clone());
    add("cpus-per-task", resources.cpus.map(|n| n.to_string()));
    args.extend(resources.slurm_args.iter().cloned());
    args
}

/// Submits job `id`'s worker (this very codexd binary) to Slurm with `resources`. Returns
/// Slurm's job id, or Slurm's own message when it refuses the job.
pub fn submit(
    sbatch: &Path,
    data_dir: &Path,
    id: &str,
    resources: &Resources,
) -> std::result::Result<String, String> {
    let exe =
        super::sys::codexd_exe().map_err(|e| format!("finding the codexd executable: {e}"))?;
    let quote = |p: &Path| crate::shell::shell_quote(&p.display().to_string());
    // The worker writes its own log into the job's dir once the job is in place; Slurm's
    // output file would have to exist before that.
    let script = format!(
        "#!/bin/sh\n# codex-runner job {id}: its only step is codexd's worker.\n\
         exec {} worker --data-dir {} --id {id}\n",
        quote(&exe),
        quote(data_dir)
    );
    batch(sbatch, &format!("codex-{}", &id[..id.len().min(8)]), data_dir, resources, &script)
}

/// Submits `script` as a batch job named `name` that starts in `chdir`, its output dropped.
/// Returns Slurm's job id, or Slurm's own message when it refuses the job.
pub fn batch(
    sbatch: &Path,
    name: &str,
    chdir: &Path,
    resources: &Resources,
    script: &str,
) -> std::result::Result<String, String> {
    let mut cmd = Command::new(sbatch);
    cmd.arg("--parsable")
        .arg(format!("--job-name={name}"))
        .arg("--output=/dev/null")
        .arg(format!("--chdir={}", chdir.display()))
        .args(sbatch_args(resources))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("sbatch: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(|e| format!("sbatch: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("sbatch: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // --parsable: `ID` or `ID;CLUSTER`.
    let job_id = stdout.trim().split(';').next().unwrap_or("").to_string();
    if out.status.success() && !job_id.is_empty() && job_id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(job_id)
    } else {
        Err(slurm_message("sbatch", &out))
    }
}

/// A Slurm command's complaint in one line (`sbatch: error: ...` lines joined).
fn slurm_message(what: &str, out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        format!("{what} failed ({})", out.status)
    } else {
        format!("Slurm refused the job: {}", lines.join("; "))
    }
}

/// What Slurm says about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmJob {
    /// `PENDING`, `RUNNING`, `TIMEOUT` ... (`CANCELLED by 0` is `CANCELLED`).
    pub state: String,
    /// Why it waits or ended (`None` as Slurm writes it is left out).
    pub reason: Option<String>,
    /// The node(s), once it has some.
    pub node: Option<String>,
}

/// Where a job is, by Slurm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlurmView {
    /// Waiting in the queue, for this reason.
    Queued(Option<String>),
    /// Running (or completing, suspended); its node is the [`SlurmJob`]'s.
    Running,
    /// Ended in a way that decides the job's end: what to record.
    Ended(Outcome),
}

/// What Slurm says about each of `ids`: `Ok` with the jobs it knows (a job missing from the
/// map is unknown to Slurm), `Err` with why Slurm could not be asked (slurmctld down).
pub fn query(ids: &[&str]) -> std::result::Result<HashMap<String, SlurmJob>, String> {
    let mut found = HashMap::new();
    if ids.is_empty() {
        return Ok(found);
    }
    let squeue = slurm_command("squeue").ok_or("squeue is not on codexd's PATH")?;
    let out = Command::new(squeue)
        .args(["-h", "--states=all", "-o", "%i|%T|%r|%N", "-j"])
        .arg(ids.join(","))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("squeue: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // One id Slurm no longer knows is an error of squeue; several are left out of its answer.
    if !out.status.success() && !stderr.contains("Invalid job id") {
        return Err(format!("squeue: {}", stderr.trim()));
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((id, job)) = parse_squeue_line(line) {
            found.insert(id, job);
        }
    }
    let missing: Vec<&str> = ids.iter().copied().filter(|id| !found.contains_key(*id)).collect();
    found.extend(sacct(&missing));
    Ok(found)
}

/// `ID|STATE|REASON|NODES`, as `squeue -o '%i|%T|%r|%N'` writes it.
fn parse_squeue_line(line: &str) -> Option<(String, SlurmJob)> {
    let mut fields = line.trim().splitn(4, '|');
    let id = fields.next()?.trim().to_string();
    let state = fields.next()?.split_whitespace().next()?.to_string();
    let mut given = || {
        let s = fields.next()?.trim();
        (!s.is_empty() && s != "None" && s != "(null)").then(|| s.to_string())
    };
    let reason = given();
    let node = given();
    Some((id, SlurmJob { state, reason, node }))
}

/// What Slurm's accounting remembers of jobs `squeue` has forgotten (nothing when there is
/// no accounting).
fn sacct(ids: &[&str]) -> HashMap<String, SlurmJob> {
    let Some(sacct) = (!ids.is_empty()).then(|| slurm_command("sacct")).flatten() else {
        return HashMap::new();
    };
    let out = Command::new(sacct)
        .args(["-n", "-X", "-P", "-o", "JobID,State,Reason,NodeList", "-j"])
        .arg(ids.join(","))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let Some(out) = out.ok().filter(|o| o.status.success()) else {
        return HashMap::new();
    };
    String::from_utf8_lossy(&out.stdout).lines().filter_map(parse_squeue_line).collect()
}

/// How Slurm's view of a job whose worker recorded no end reads (the module's table).
/// `worker_started`: the worker had recorded itself, so a `FAILED` job is its death (lost).
pub fn view(slurm_job_id: &str, job: Option<&SlurmJob>, worker_started: bool) -> SlurmView {
    let Some(job) = job else {
        return SlurmView::Ended(Outcome::Lost(format!(
            "Slurm no longer knows job {slurm_job_id}, and its worker never recorded an end"
        )));
    };
    let why = || match &job.reason {
        Some(reason) => format!("Slurm job {slurm_job_id}: {} ({reason})", job.state),
        None => format!("Slurm job {slurm_job_id}: {}", job.state),
    };
    match job.state.as_str() {
        "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" => {
            SlurmView::Queued(job.reason.clone())
        }
        "RUNNING" | "COMPLETING" | "CONFIGURING" | "SUSPENDED" | "STAGE_OUT" | "SIGNALING"
        | "RESIZING" | "STOPPED" => SlurmView::Running,
        "CANCELLED" => SlurmView::Ended(Outcome::Cancelled(None)),
        "FAILED" if worker_started => SlurmView::Ended(Outcome::Lost(format!(
            "the worker died without recording an end (killed, OOM or crash); {}",
            why()
        ))),
        "TIMEOUT" | "OUT_OF_MEMORY" | "FAILED" | "DEADLINE" => {
            SlurmView::Ended(Outcome::Failed(why()))
        }
        "NODE_FAIL" | "BOOT_FAIL" | "PREEMPTED" => SlurmView::Ended(Outcome::Lost(why())),
        _ => SlurmView::Ended(Outcome::Lost(format!(
            "{}, but the job's worker never recorded an end",
            why()
        ))),
    }
}

/// `scancel` with `args`; whether Slurm took it. A job that has already ended is not an error
/// worth reporting.
pub fn scancel(slurm_job_id: &str, args: &[&str]) -> bool {
    let Some(scancel) = slurm_command("scancel") else {
        return false;
    };
    Command::new(scancel)
        .args(args)
        .arg(slurm_job_id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: &str, reason: Option<&str>) -> SlurmJob {
        SlurmJob { state: state.into(), reason: reason.map(String::from), node: None }
    }

    #[test]
    fn squeue_lines_parse() {
        let (id, j) = parse_squeue_line("12|PENDING|JobHeldUser|").unwrap();
        assert_eq!(
            (id.as_str(), j.state.as_str(), j.reason.as_deref()),
            ("12", "PENDING", Some("JobHeldUser"))
        );
        let (_, j) = parse_squeue_line("13|CANCELLED by 0|None|vm").unwrap();
        assert_eq!(
            (j.state.as_str(), j.reason, j.node.as_deref()),
            ("CANCELLED", None, Some("vm"))
        );
    }

    #[test]
    fn slurm_states_map_to_job_states() {
        assert_eq!(
            view("1", Some(&job("PENDING", Some("Priority"))), false),
            SlurmView::Queued(Some("Priority".into()))
        );
        assert_eq!(view("1", Some(&job("COMPLETING", None)), false), SlurmView::Running);
        assert_eq!(
            view("1", Some(&job("CANCELLED", None)), false),
            SlurmView::Ended(Outcome::Cancelled(None))
        );
        let SlurmView::Ended(Outcome::Failed(e)) =
            view("1", Some(&job("TIMEOUT", Some("TimeLimit"))), true)
        else {
            panic!("a timeout fails the job")
        };
        assert!(e.contains("TIMEOUT") && e.contains("TimeLimit"), "{e}");
        // A worker that had started and then died is lost; one that never started, failed.
        for (state, worker_started, lost) in [
            ("NODE_FAIL", false, true),
            ("PREEMPTED", false, true),
            ("FAILED", true, true),
            ("FAILED", false, false),
        ] {
            let got = view("1", Some(&job(state, None)), worker_started);
            let is_lost = matches!(got, SlurmView::Ended(Outcome::Lost(_)));
            let is_failed = matches!(got, SlurmView::Ended(Outcome::Failed(_)));
            assert_eq!((is_lost, is_failed), (lost, !lost), "{state} {worker_started}: {got:?}");
        }
        assert!(matches!(view("1", None, false), SlurmView::Ended(Outcome::Lost(_))));
    }

    #[test]
    fn resources_become_sbatch_options() {
        let r = Resources {
            gpus: Some(2),
            time: Some("2:00:00".into()),
            cpus: Some(8),
            slurm_args: vec!["--hold".into()],
            ..Resources::default()
        };
        assert_eq!(sbatch_args(&r), ["--gpus=2", "--time=2:00:00", "--cpus-per-task=8", "--hold"]);
    }
}
