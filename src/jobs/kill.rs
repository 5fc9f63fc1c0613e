//! Signalling a job and escalating: TERM to everything the job started, a grace period, then
//! KILL until nothing is left.
//!
//! "Everything the job started" is found from /proc: every live process in the worker's
//! session (the worker is its leader, so the id cannot be reused while it lives) or descending
//! from the worker. The worker is a child
//! subreaper, so a grandchild that double-forks or calls `setsid` is re-parented to it and still
//! found (as in Slurm's proctrack or systemd's scopes, without needing cgroups).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::sys::{self, ProcStat};

/// How long KILL may take before we stop trying (a process in uninterruptible sleep).
const KILL_DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// The processes that belong to a job run by the worker `worker_pid` (itself excluded).
#[derive(Debug, Clone, Copy)]
pub struct JobTree {
    pub worker_pid: i32,
    /// Whether the worker still lives. When it does not, its pid may be reused, so only its
    /// session (kept alive by the job's own processes) names the job.
    pub worker_alive: bool,
}

impl JobTree {
    /// The live processes of the job, from one scan of /proc.
    pub fn members(&self) -> Vec<i32> {
        let procs = sys::all_processes();
        let parent: HashMap<i32, i32> = procs.iter().map(|p| (p.pid, p.ppid)).collect();
        procs
            .iter()
            .filter(|p| p.pid != self.worker_pid && p.is_live() && self.owns(p, &parent))
            .map(|p| p.pid)
            .collect()
    }

    fn owns(&self, p: &ProcStat, parent: &HashMap<i32, i32>) -> bool {
        if p.session == self.worker_pid {
            return true;
        }
        if !self.worker_alive {
            return false;
        }
        // Walk up the parent chain; bounded in case of a cycle seen mid-scan.
        let mut cur = p.ppid;
        for _ in 0..4096 {
            if cur == self.worker_pid {
                return true;
            }
            match parent.get(&cur) {
                Some(&next) if next > 1 => cur = next,
                _ => return false,
            }
        }
        false
    }

    fn signal_all(&self, sig: Signal) -> usize {
        let members = self.members();
        for &pid in &members {
            sys::signal_process(pid, sig);
        }
        members.len()
    }

    /// TERM to every process of the job, up to `grace` for them to exit, then KILL until none is
    /// left. `reap` collects exited children meanwhile (only the thread that owns reaping may).
    /// Returns whether the tree is empty at the end.
    pub fn terminate(&self, grace: Duration, reap: bool) -> bool {
        let reap_some = || {
            if reap {
                while let Ok(Some(_)) = sys::reap_any(false) {}
            }
        };
        if self.signal_all(Signal::TERM) == 0 {
            return true;
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            reap_some();
            if self.members().is_empty() {
                return true;
            }
            std::thread::sleep(POLL);
        }
        let deadline = Instant::now() + KILL_DEADLINE;
        while Instant::now() < deadline {
            if self.signal_all(Signal::KILL) == 0 {
                return true;
            }
            std::thread::sleep(POLL);
            reap_some();
        }
        self.members().is_empty()
    }
}
