//! Finding a job's processes and ending them: TERM to everything the job started, a grace
//! period, then KILL until nothing is left.
//!
//! A process belongs to the job when that is proven, from one scan of /proc:
//! - it carries the job's id in `CODEXD_EXEC_ID` (set on the worker and the job, inherited by
//!   what they start) and runs as this user; or
//! - the recorded worker (pid + start time) still holds its pid, and the process is in the
//!   worker's session (the worker is its leader) or descends from it (the worker is a child
//!   subreaper, so a grandchild that double-forks or calls `setsid` is re-parented to it).
//!
//! A session id alone proves nothing once the worker is gone: its pid may now belong to another
//! process, whose session is not ours. Every signal re-checks pid + start time through a pidfd
//! at the moment it is sent ([`sys::signal_if_same`]), so a pid reused meanwhile is spared.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::sys::{self, ProcStat};

/// How long KILL may take before we stop trying (a process in uninterruptible sleep).
const KILL_DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// The processes of job `exec_id`, whose worker recorded itself as `worker` (pid, start time).
#[derive(Debug, Clone, Copy)]
pub struct JobTree<'a> {
    pub exec_id: &'a str,
    pub worker: Option<(i32, u64)>,
}

impl JobTree<'_> {
    /// The live processes of the job (never the calling process), from one scan of /proc.
    pub fn members(&self) -> Vec<ProcStat> {
        let procs = sys::all_processes();
        let me = sys::current_pid();
        // The worker's session and descendants are ours only while the worker holds its pid
        // (a zombie still does).
        let worker = self.worker.and_then(|(pid, start)| {
            procs.iter().any(|p| p.pid == pid && p.start_time == start).then_some(pid)
        });
        let parent: HashMap<i32, i32> = procs.iter().map(|p| (p.pid, p.ppid)).collect();
        procs
            .into_iter()
            .filter(|p| p.pid != me && p.is_live())
            .filter(|p| {
                worker.is_some_and(|w| p.session == w || descends_from(p, w, &parent))
                    || sys::exec_id_of(p.pid).as_deref() == Some(self.exec_id)
            })
            .collect()
    }

    /// Whether any process of the job lives.
    pub fn alive(&self) -> bool {
        !self.members().is_empty()
    }

    fn signal_all(&self, sig: Signal) -> usize {
        let members = self.members();
        for p in &members {
            sys::signal_if_same(p.pid, p.start_time, sig);
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
            if !self.alive() {
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
        !self.alive()
    }
}

/// Whether `p` descends from `ancestor`; bounded in case of a cycle seen mid-scan.
fn descends_from(p: &ProcStat, ancestor: i32, parent: &HashMap<i32, i32>) -> bool {
    let mut cur = p.ppid;
    for _ in 0..4096 {
        if cur == ancestor {
            return true;
        }
        match parent.get(&cur) {
            Some(&next) if next > 1 => cur = next,
            _ => return false,
        }
    }
    false
}

/// The ids of the jobs that have a live process tagged with their id, from one scan of /proc
/// (for pruning many jobs at once).
pub fn jobs_with_live_processes() -> std::collections::HashSet<String> {
    let me = sys::current_pid();
    sys::all_processes()
        .into_iter()
        .filter(|p| p.pid != me && p.is_live())
        .filter_map(|p| sys::exec_id_of(p.pid))
        .collect()
}
