//! `doctor`'s `shared_store` check on a Slurm machine: is the job store on a file system the
//! compute nodes share? A job's worker runs on a compute node and writes its status and logs
//! into the store; if the node cannot see it, every job ends `lost`.
//!
//! The check writes a fresh token into `<data_dir>/probes/` on this (login) node and submits a
//! tiny batch job that reads it and writes it back with its node's name. The answer is the
//! token coming back (shared), the job ending without it (not shared), or the job still waiting
//! in the queue when the check's time is up: then its answer is read by the next `doctor`,
//! which does not submit another. A verification holds for a day.
//!
//! Files: `shared.token` (what the job must read), `shared.pending` (`SLURM_JOB_ID TOKEN` of the
//! probe in flight), `shared.seen` (the job's answer: the token it read, its node), `shared.ok`
//! (`NODE SLURM_JOB_ID` of the last verification; its mtime is when).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::Daemon;
use crate::jobs::slurm::{self, SlurmView};
use crate::protocol::{DoctorCheck, Resources};

/// The check's name in the report.
pub const NAME: &str = "shared_store";
/// How long the check waits for its probe job at least.
pub const PROBE_WAIT: Duration = Duration::from_secs(30);
/// How long a verification holds.
const VERIFIED_FOR: Duration = Duration::from_secs(24 * 3600);
/// After Slurm says the probe ended, how long its answer may take to show here (NFS caches).
const LATE_ANSWER: Duration = Duration::from_secs(3);

/// The check, waiting up to `wait` for the probe job.
pub fn check(daemon: &Daemon, wait: Duration) -> DoctorCheck {
    let root = daemon.store.root();
    let dir = root.join("probes");
    let mut check = DoctorCheck {
        name: NAME.into(),
        ok: false,
        required: true,
        detail: String::new(),
        hint: None,
    };
    match probe(daemon, &dir, wait) {
        Ok(Found::Shared { node, slurm_job_id, at }) => {
            check.ok = true;
            check.detail = format!(
                "{}: Slurm job {slurm_job_id} on node {node} read what this node wrote ({at})",
                root.display()
            );
        }
        Ok(Found::NotShared { slurm_job_id, why }) => {
            check.detail = format!("{}: Slurm job {slurm_job_id} {why}", root.display());
            check.hint = Some(
                "jobs run on compute nodes and write into the job store: put codexd's data dir \
                 on a file system the compute nodes share (on most clusters, your home), e.g. \
                 `data_dir: ~/.codexd` in codexd's config"
                    .into(),
            );
        }
        Ok(Found::Waiting { slurm_job_id, reason }) => {
            check.required = false;
            let reason = reason.map(|r| format!(" ({r})")).unwrap_or_default();
            check.detail = format!(
                "not verified yet: the probe, Slurm job {slurm_job_id}, still waits in the \
                 queue{reason}"
            );
            check.hint = Some("run `codex-remote exec doctor` again to read its answer".into());
        }
        Err(why) => {
            check.detail = why;
            check.hint = Some("check Slurm with `sinfo` and `sbatch --wrap true` there".into());
        }
    }
    check
}

enum Found {
    Shared { node: String, slurm_job_id: String, at: String },
    NotShared { slurm_job_id: String, why: String },
    Waiting { slurm_job_id: String, reason: Option<String> },
}

fn probe(daemon: &Daemon, dir: &Path, wait: Duration) -> Result<Found, String> {
    let path = |name: &str| dir.join(name);
    let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    if let Some(found) = verified(&path("shared.ok")) {
        return Ok(found);
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let (slurm_job_id, token) = match in_flight(dir) {
        Some(pending) => pending,
        None => submit(daemon, dir)?,
    };
    let deadline = Instant::now() + wait;
    let mut ended_at: Option<Instant> = None;
    // Slurm was just asked (about a probe in flight) or just took the probe: ask again later.
    let mut next_ask = Instant::now() + Duration::from_secs(1);
    let mut reason = None;
    loop {
        if let Some((seen, node)) = answer(&path("shared.seen")) {
            let _ = std::fs::remove_file(path("shared.pending"));
            if seen != token {
                return Ok(Found::NotShared {
                    slurm_job_id,
                    why: format!("on node {node} did not find the token this node wrote"),
                });
            }
            let ok = path("shared.ok");
            std::fs::write(&ok, format!("{node} {slurm_job_id}\n")).map_err(|e| io(&ok, e))?;
            return verified(&ok).ok_or_else(|| format!("{}: cannot be read back", ok.display()));
        }
        if ended_at.is_some_and(|t| t.elapsed() >= LATE_ANSWER) {
            let _ = std::fs::remove_file(path("shared.pending"));
            return Ok(Found::NotShared {
                slurm_job_id,
                why: "ended without writing its answer into the job store: the compute node \
                      does not see it"
                    .into(),
            });
        }
        if Instant::now() >= deadline && ended_at.is_none() {
            return Ok(Found::Waiting { slurm_job_id, reason });
        }
        if ended_at.is_none() && Instant::now() >= next_ask {
            next_ask = Instant::now() + Duration::from_secs(1);
            let jobs = slurm::query(&[&slurm_job_id])?;
            match slurm::view(&slurm_job_id, jobs.get(&slurm_job_id), false) {
                SlurmView::Queued(why) => reason = why,
                SlurmView::Running => reason = None,
                SlurmView::Ended(_) => ended_at = Some(Instant::now()),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last verification, when it still holds.
fn verified(ok: &Path) -> Option<Found> {
    let when = std::fs::metadata(ok).and_then(|m| m.modified()).ok()?;
    if SystemTime::now().duration_since(when).unwrap_or_default() > VERIFIED_FOR {
        return None;
    }
    let text = std::fs::read_to_string(ok).ok()?;
    let (node, slurm_job_id) = text.trim().split_once(' ')?;
    Some(Found::Shared {
        node: node.into(),
        slurm_job_id: slurm_job_id.into(),
        at: format!("verified {}", humantime::format_rfc3339_seconds(when)),
    })
}

/// The probe a previous check left waiting, when it has answered or Slurm still has it.
fn in_flight(dir: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(dir.join("shared.pending")).ok()?;
    let (slurm_job_id, token) = text.trim().split_once(' ')?;
    if dir.join("shared.seen").exists() {
        return Some((slurm_job_id.into(), token.into()));
    }
    let jobs = slurm::query(&[slurm_job_id]).ok()?;
    match slurm::view(slurm_job_id, jobs.get(slurm_job_id), false) {
        SlurmView::Ended(_) => None,
        _ => Some((slurm_job_id.into(), token.into())),
    }
}

/// Writes a new token and submits the job that reads it back.
fn submit(daemon: &Daemon, dir: &Path) -> Result<(String, String), String> {
    let sbatch = slurm::sbatch().map_err(|e| e.message)?;
    let token = crate::auth::random_token().map_err(|e| e.message)?;
    let write = |name: &str, text: &str| -> Result<PathBuf, String> {
        let file = dir.join(name);
        std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
        Ok(file)
    };
    let _ = std::fs::remove_file(dir.join("shared.seen"));
    let token_file = write("shared.token", &token)?;
    let quote = |p: &Path| crate::shell::shell_quote(&p.display().to_string());
    let seen = dir.join("shared.seen");
    let script = format!(
        "#!/bin/sh\n# codex-runner: can a compute node read the job store?\n\
         t=$(cat {token} 2>/dev/null) || t=unreadable\n\
         printf '%s\\n%s\\n' \"$t\" \"$(hostname)\" > {seen}.$$ && mv {seen}.$$ {seen}\n",
        token = quote(&token_file),
        seen = quote(&seen),
    );
    // The smallest job the defaults allow: their partition, account and arguments, a minute.
    let defaults = &daemon.config.slurm_defaults;
    let resources = Resources {
        partition: defaults.partition.clone(),
        account: defaults.account.clone(),
        time: Some("1".into()),
        slurm_args: defaults.slurm_args.clone(),
        ..Resources::default()
    };
    let slurm_job_id =
        slurm::batch(&sbatch, "codex-probe", Path::new("/tmp"), &resources, &script)?;
    write("shared.pending", &format!("{slurm_job_id} {token}\n"))?;
    Ok((slurm_job_id, token))
}

/// The probe job's answer: (the token it read, its node).
fn answer(seen: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(seen).ok()?;
    let mut lines = text.lines();
    Some((lines.next()?.to_string(), lines.next().unwrap_or("?").to_string()))
}
