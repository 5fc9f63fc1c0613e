//! `doctor`: what a job on this machine will find. The job store (exists, ours, private,
//! writable, free space), and the tools jobs reach for (python, conda/pixi, `nvidia-smi`, git,
//! rsync, rg), each probed through the jobs' own shell (`bash -lc`, so a profile's conda or
//! module setup counts) with a time limit, so a hung driver cannot hang the answer. On a Slurm
//! machine, whether the compute nodes share the job store ([`shared_store`]).

use std::process::Command;
use std::time::Duration;

use super::{Daemon, shared_store};
use crate::error::{Error, Result};
use crate::protocol::{DoctorCheck, DoctorReport, DoctorRequest, Scheduler};

/// Time for a probe unless the request says otherwise.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Less free space than this in the data dir fails the check (logs fill it).
const MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;

/// The tools: (name, probe command, hint when missing).
const TOOLS: &[(&str, &str, &str)] = &[
    // Checked as jobs call them: a job running `python` where only `python3` exists exits 127.
    (
        "python",
        "python --version 2>&1",
        "jobs that run `python` exit 127 here: call python3, or install python-is-python3 / \
         activate an environment in ~/.bash_profile",
    ),
    ("python3", "python3 --version 2>&1", "install python3, or activate it in ~/.bash_profile"),
    ("conda", "conda --version 2>&1", "optional: install miniforge, or use pixi"),
    ("pixi", "pixi --version 2>&1", "optional: curl -fsSL https://pixi.sh/install.sh | bash"),
    (
        "nvidia-smi",
        "nvidia-smi --query-gpu=index,name,memory.used,memory.total,driver_version \
         --format=csv,noheader,nounits 2>&1",
        "no NVIDIA GPU or driver visible to jobs (CPU jobs still run)",
    ),
    ("git", "git --version 2>&1", "install git to run projects at a ref"),
    (
        "rsync",
        "command -v rsync >/dev/null && rsync --version 2>&1 | head -n 1",
        "optional: codex-remote sync needs no rsync",
    ),
    (
        "rg",
        "command -v rg >/dev/null && rg --version 2>&1 | head -n 1",
        "optional: install ripgrep",
    ),
];

/// Runs the checks asked (all when none are named); `ok` when the required ones pass. A name
/// that is no check is `invalid_argument`, naming the checks there are.
pub fn checks(daemon: &Daemon, req: &DoctorRequest) -> Result<DoctorReport> {
    let names =
        || ["data_dir", shared_store::NAME, "gpus"].into_iter().chain(TOOLS.iter().map(|t| t.0));
    if let Some(unknown) = req.checks.iter().find(|c| !names().any(|n| n == c.as_str())) {
        let known: Vec<&str> = names().collect();
        return Err(Error::invalid(format!(
            "no doctor check {unknown:?}; the checks are {}",
            known.join(", ")
        )));
    }
    let asked = |name: &str| req.checks.is_empty() || req.checks.iter().any(|c| c == name);
    let timeout = req.timeout_ms.map_or(PROBE_TIMEOUT, Duration::from_millis);
    let slurm = daemon.config.scheduler == Scheduler::Slurm && asked(shared_store::NAME);
    let shell = crate::shell::shell_words(&daemon.config.shell);
    // The probes are independent: run them side by side so the answer takes the longest one.
    let mut checks: Vec<DoctorCheck> = std::thread::scope(|s| {
        let wait = req.timeout_ms.map_or(shared_store::PROBE_WAIT, Duration::from_millis);
        let shared = slurm.then(|| s.spawn(move || shared_store::check(daemon, wait)));
        let handles: Vec<_> = TOOLS
            .iter()
            .filter(|(name, ..)| asked(name))
            .map(|&(name, cmd, hint)| {
                let shell = &shell;
                s.spawn(move || tool(shell, name, cmd, hint, timeout))
            })
            .collect();
        let store = asked("data_dir").then(|| data_dir(daemon));
        let probed = shared.into_iter().chain(handles).filter_map(|h| h.join().ok());
        store.into_iter().chain(probed).collect()
    });
    if asked("gpus") {
        checks.push(gpus(daemon));
    }
    let ok = checks.iter().all(|c| c.ok || !c.required);
    Ok(DoctorReport { ok, checks })
}

/// The GPUs `--gpus` jobs would get: each with its memory, utilisation, and who holds it.
fn gpus(daemon: &Daemon) -> DoctorCheck {
    let (ok, detail) = match daemon.gpus() {
        Err(e) => (false, e.message),
        Ok(report) if report.gpus.is_empty() => {
            (false, report.error.unwrap_or_else(|| "nvidia-smi lists no GPU".into()))
        }
        Ok(report) => {
            let gpus: Vec<String> = report.gpus.iter().map(describe_gpu).collect();
            (true, format!("{}; {} job(s) queued", gpus.join("; "), report.queued))
        }
    };
    DoctorCheck {
        name: "gpus".into(),
        ok,
        required: false,
        detail,
        hint: (!ok).then(|| "--gpus jobs need NVIDIA GPUs and nvidia-smi; others run".into()),
    }
}

/// One GPU in a line: "0 NVIDIA A100 3/40960 MiB 0% free" or "... held by ID".
pub fn describe_gpu(g: &crate::protocol::Gpu) -> String {
    let state = match (g.jobs.as_slice(), g.free) {
        ([], true) => "free".to_string(),
        ([], false) => format!("busy ({} processes)", g.processes),
        (jobs, _) => format!("held by {}", jobs.join(", ")),
    };
    format!(
        "{} {} {}/{} MiB {}% {state}",
        g.index, g.name, g.memory_used_mib, g.memory_total_mib, g.utilization_percent
    )
}

fn data_dir(daemon: &Daemon) -> DoctorCheck {
    use std::os::unix::fs::MetadataExt;
    let root = daemon.store.root();
    let mut check = DoctorCheck {
        name: "data_dir".into(),
        ok: false,
        required: true,
        detail: root.display().to_string(),
        hint: None,
    };
    let problem = match std::fs::metadata(root) {
        Err(e) => Some(format!("cannot read it: {e}")),
        Ok(m) if m.uid() != rustix::process::getuid().as_raw() => {
            Some("it belongs to another user".into())
        }
        Ok(m) if m.mode() & 0o077 != 0 => {
            Some(format!("mode {:o}: others can read the job logs", m.mode() & 0o777))
        }
        Ok(_) => tempfile::tempfile_in(root).err().map(|e| format!("not writable: {e}")),
    };
    let free = rustix::fs::statvfs(root).ok().map(|s| s.f_bavail * s.f_frsize);
    if let Some(free) = free {
        check.detail = format!("{} ({} MiB free)", root.display(), free / (1024 * 1024));
    }
    match (problem, free) {
        (Some(p), _) => {
            check.detail = format!("{}: {p}", root.display());
            check.hint = Some(format!("fix it with: chmod 700 {}", root.display()));
        }
        (None, Some(free)) if free < MIN_FREE_BYTES => {
            check.hint = Some("free space there (old jobs: codex-remote exec prune)".into());
        }
        (None, _) => check.ok = true,
    }
    check
}

fn tool(shell: &[String], name: &str, cmd: &str, hint: &str, timeout: Duration) -> DoctorCheck {
    let (ok, detail) = match probe(shell, cmd, timeout) {
        Ok(out) if out.0 => (true, out.1),
        Ok(out) => (false, if out.1.is_empty() { "not found".into() } else { out.1 }),
        Err(e) => (false, e),
    };
    DoctorCheck {
        name: name.into(),
        ok,
        required: false,
        detail,
        hint: (!ok).then(|| hint.to_string()),
    }
}

/// Runs `cmd` with the jobs' shell; (exited 0, its output trimmed to a few lines).
fn probe(shell: &[String], cmd: &str, timeout: Duration) -> Result<(bool, String), String> {
    let (program, args) = shell.split_first().ok_or("no shell configured")?;
    let mut command = Command::new(program);
    command.args(args).arg(cmd);
    let (ok, text) = crate::jobs::sys::output_within(command, timeout)?;
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).take(8).collect();
    Ok((ok, lines.join("; ")))
}
