//! GPUs for `--gpus N` jobs on a machine without a scheduler, with no daemon: each job's worker
//! waits its turn, and the store's files under one lock say who holds which GPU and who waits.
//!
//! ```text
//! <data_dir>/gpus/lock              flock: every read-modify-write of the files below
//! <data_dir>/gpus/held/<index>      the job holding GPU <index> and its worker (pid + start)
//! <data_dir>/gpus/queue/<id>        a job waiting for GPUs: its ask and its worker
//! <data_dir>/gpus/nvidia-smi.json   nvidia-smi's last answer ([`super::gpus`])
//! ```
//! A GPU is free when no job holds it, no compute process runs on it, and its memory used and
//! utilisation are at most the job's thresholds (codexd config `gpu_free_memory_mib`,
//! `gpu_free_util_percent`), so other users' work counts. Waiters are served in the order of
//! their job ids (UUID v7: the start time); an earlier waiter that cannot be served yet keeps
//! the free GPUs it could use from later ones, so a later small job never starves an earlier
//! large one. A holder or waiter whose worker is dead is reclaimed (its job settled `lost`).
//! GPUs picked on nvidia-smi's kept answer are checked again with a fresh one before they are
//! taken: another user's store is not this one, so a process of theirs that began within the
//! second the answer is kept sends the job back to the queue instead of onto a busy GPU.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::gpu_ask::GpuAsk;
use super::gpu_ask::join;
use super::gpus::{self, Smi};
use super::store::JobStore;
use super::sys;
use crate::error::{Context, Result};
use crate::lockfile::{self, LockGuard};
use crate::protocol::{Gpu, GpuReport, RunStatus};

/// How often a waiting worker looks again.
pub const POLL: Duration = Duration::from_millis(500);

/// The worker of a holder or waiter, to tell whether it still runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worker {
    pub exec_id: String,
    pub worker_pid: i32,
    pub worker_start_time: u64,
}

impl Worker {
    /// This process, as the worker of `exec_id`.
    pub fn me(exec_id: &str, start_time: u64) -> Worker {
        Worker {
            exec_id: exec_id.to_string(),
            worker_pid: sys::current_pid(),
            worker_start_time: start_time,
        }
    }

    fn alive(&self) -> bool {
        sys::is_alive(self.worker_pid, self.worker_start_time)
    }
}

/// A waiting job: its worker and ask.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Waiter {
    #[serde(flatten)]
    worker: Worker,
    ask: GpuAsk,
}

/// What the GPU files say, read under the lock with the dead reclaimed.
struct Board {
    smi: Smi,
    held: BTreeMap<u32, Worker>,
    /// Oldest first.
    queue: Vec<Waiter>,
}

/// The store's GPU files.
pub struct GpuFiles {
    dir: PathBuf,
}

impl GpuFiles {
    pub fn open(store: &JobStore) -> Result<GpuFiles> {
        let dir = gpus::gpus_dir(store.root())?;
        for sub in ["held", "queue"] {
            super::store::create_private_dir(&dir.join(sub))?;
        }
        Ok(GpuFiles { dir })
    }

    fn lock(&self) -> Result<LockGuard> {
        lockfile::lock(&self.dir.join("lock"))
    }

    fn held_path(&self, index: u32) -> PathBuf {
        self.dir.join("held").join(index.to_string())
    }

    fn queue_path(&self, id: &str) -> PathBuf {
        self.dir.join("queue").join(id)
    }

    /// Reads the board (under the lock), reclaiming holders and waiters whose worker is dead:
    /// their jobs are read through the store, which records them `lost` and ends what they
    /// left running, and a GPU is given back only once its job has ended.
    fn board(&self, store: &JobStore) -> Result<Board> {
        let mut held = BTreeMap::new();
        for (name, worker) in read_dir_json::<Worker>(&self.dir.join("held")) {
            let Ok(index) = name.parse::<u32>() else { continue };
            if worker.alive() || !ended(store, &worker.exec_id) {
                held.insert(index, worker);
            } else {
                remove(&self.held_path(index));
            }
        }
        let mut queue = Vec::new();
        for (name, waiter) in read_dir_json::<Waiter>(&self.dir.join("queue")) {
            if waiter.worker.alive() {
                queue.push(waiter);
            } else {
                let _ = ended(store, &waiter.worker.exec_id);
                remove(&self.queue_path(&name));
            }
        }
        queue.sort_by(|a, b| a.worker.exec_id.cmp(&b.worker.exec_id));
        Ok(Board { smi: gpus::query(store.root()), held, queue })
    }

    /// One look for the worker `me` of a job asking `ask`: its GPUs (now recorded as held, and
    /// the job out of the queue), or why it waits (the job in the queue), or why it never can.
    pub fn take_turn(&self, store: &JobStore, me: &Worker, ask: &GpuAsk) -> Result<Turn> {
        let _lock = self.lock()?;
        let board = self.board(store)?;
        let smi_gpus = match &board.smi {
            Smi::Gpus { gpus } => gpus,
            Smi::Missing => {
                self.leave_locked(&me.exec_id);
                return Ok(Turn::Never(board.smi.problem().unwrap_or_default()));
            }
            // A driver that fails now may answer again: wait, saying why.
            Smi::Failed { .. } => return Ok(Turn::Wait(board.smi.problem().unwrap_or_default())),
        };
        if let Some(why) = ask.impossible(smi_gpus) {
            self.leave_locked(&me.exec_id);
            return Ok(Turn::Never(why));
        }
        let mut queue = board.queue;
        if !queue.iter().any(|w| w.worker.exec_id == me.exec_id) {
            let waiter = Waiter { worker: me.clone(), ask: ask.clone() };
            crate::platform::write_json_atomic(&self.queue_path(&me.exec_id), &waiter)?;
            queue.push(waiter);
            queue.sort_by(|a, b| a.worker.exec_id.cmp(&b.worker.exec_id));
        }
        let free_for = |ask: &GpuAsk| free_gpus(smi_gpus, &board.held, ask);
        match pick(&queue, &me.exec_id, free_for) {
            (Some(ids), _) => {
                // The pick was made on an answer up to a second old: asked again now, a GPU
                // another user's process took meanwhile sends the job back to the queue.
                let fresh = gpus::query_fresh(store.root());
                let still_free = free_gpus(fresh.gpus(), &board.held, ask);
                let taken: Vec<u32> =
                    ids.iter().copied().filter(|id| !still_free.contains(id)).collect();
                if !taken.is_empty() {
                    return Ok(Turn::Wait(format!(
                        "{} (GPU {} taken by another process just now)",
                        ask.waiting(),
                        join(&taken)
                    )));
                }
                for id in &ids {
                    crate::platform::write_json_atomic(&self.held_path(*id), me)?;
                }
                self.leave_locked(&me.exec_id);
                Ok(Turn::Got(ids))
            }
            (None, free) => {
                let ahead = queue.iter().take_while(|w| w.worker.exec_id != me.exec_id).count();
                let mut why = format!("{} ({free} free", ask.waiting());
                if ahead > 0 {
                    why.push_str(&format!(", {ahead} job{} ahead", plural(ahead)));
                }
                why.push(')');
                Ok(Turn::Wait(why))
            }
        }
    }

    /// Takes job `id` out of the queue.
    pub fn leave(&self, id: &str) -> Result<()> {
        let _lock = self.lock()?;
        self.leave_locked(id);
        Ok(())
    }

    fn leave_locked(&self, id: &str) {
        remove(&self.queue_path(id));
    }

    /// Gives back every GPU job `id` holds.
    pub fn release(&self, id: &str) -> Result<()> {
        let _lock = self.lock()?;
        for (name, worker) in read_dir_json::<Worker>(&self.dir.join("held")) {
            if worker.exec_id == id {
                remove(&self.dir.join("held").join(name));
            }
        }
        Ok(())
    }

    /// The GPUs as `gpus` reports them, "free" by `ask`'s thresholds.
    pub fn report(
        &self,
        store: &JobStore,
        free_memory_mib: u64,
        free_util_percent: u32,
    ) -> Result<GpuReport> {
        let _lock = self.lock()?;
        let board = self.board(store)?;
        let ask = GpuAsk { count: 0, ids: Vec::new(), free_memory_mib, free_util_percent };
        let free = free_gpus(board.smi.gpus(), &board.held, &ask);
        let gpus = (board.smi.gpus().iter())
            .map(|g| Gpu {
                free: free.contains(&g.index),
                jobs: board.held.get(&g.index).map(|w| vec![w.exec_id.clone()]).unwrap_or_default(),
                ..g.clone()
            })
            .collect();
        Ok(GpuReport {
            gpus,
            free_memory_mib,
            free_util_percent,
            queued: board.queue.len(),
            error: board.smi.problem(),
        })
    }
}

/// The outcome of one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// These GPUs are the job's now.
    Got(Vec<u32>),
    /// Not yet, for this reason (the job's `queue_reason`).
    Wait(String),
    /// Never on this machine, for this reason.
    Never(String),
}

/// Waits until the worker `me` gets its GPUs: `Ok(ids)`, or `Err(None)` when `cancelled` was
/// set (or the job's cancel file appeared) first, `Err(Some(why))` when it never can.
/// `waiting` hears each new reason to wait.
pub fn wait_turn(
    store: &JobStore,
    me: &Worker,
    ask: &GpuAsk,
    cancelled: &AtomicBool,
    waiting: &mut dyn FnMut(&str),
) -> std::result::Result<Vec<u32>, Option<String>> {
    let files = GpuFiles::open(store).map_err(|e| Some(e.message))?;
    let is_cancelled =
        || cancelled.load(Ordering::SeqCst) || store.read_cancel(&me.exec_id).is_some();
    let mut last_reason = String::new();
    loop {
        if is_cancelled() {
            let _ = files.leave(&me.exec_id);
            return Err(None);
        }
        match files.take_turn(store, me, ask).map_err(|e| Some(e.message))? {
            Turn::Got(ids) => return Ok(ids),
            Turn::Never(why) => return Err(Some(why)),
            Turn::Wait(why) => {
                if why != last_reason {
                    waiting(&why);
                    last_reason = why;
                }
            }
        }
        // Short naps, so a cancel is seen at once.
        for _ in 0..10 {
            if is_cancelled() {
                break;
            }
            std::thread::sleep(POLL / 10);
        }
    }
}

/// The GPUs free for `ask`: not held, no compute process, memory and utilisation at most its
/// thresholds.
fn free_gpus(gpus: &[Gpu], held: &BTreeMap<u32, Worker>, ask: &GpuAsk) -> Vec<u32> {
    gpus.iter()
        .filter(|g| {
            !held.contains_key(&g.index)
                && g.processes == 0
                && g.memory_used_mib <= ask.free_memory_mib
                && g.utilization_percent <= ask.free_util_percent
        })
        .map(|g| g.index)
        .collect()
}

/// The GPUs `me` gets now, if any, and how many free GPUs are left to it: the queue (oldest
/// first) is served in order from what is free; each earlier waiter keeps back what it takes
/// or, if it cannot be served yet, the free GPUs it could use.
fn pick(
    queue: &[Waiter],
    me: &str,
    free_for: impl Fn(&GpuAsk) -> Vec<u32>,
) -> (Option<Vec<u32>>, usize) {
    let mut kept_back: Vec<u32> = Vec::new();
    for waiter in queue {
        let ask = &waiter.ask;
        let free: Vec<u32> = free_for(ask).into_iter().filter(|g| !kept_back.contains(g)).collect();
        let (wanted, served) = if ask.ids.is_empty() {
            let wanted: Vec<u32> = free.iter().copied().take(ask.count as usize).collect();
            let served = wanted.len() == ask.count as usize;
            (wanted, served)
        } else {
            let wanted: Vec<u32> = ask.ids.iter().copied().filter(|g| free.contains(g)).collect();
            let served = wanted.len() == ask.ids.len();
            (wanted, served)
        };
        if waiter.worker.exec_id == me {
            let left = if ask.ids.is_empty() { free.len() } else { wanted.len() };
            return (served.then_some(wanted), left);
        }
        kept_back.extend(wanted);
    }
    (None, 0)
}

/// Whether job `id` has ended (or is gone), read through the store so that a job whose worker
/// died is recorded `lost`, its leftover processes ended.
fn ended(store: &JobStore, id: &str) -> bool {
    store.status(id).map_or(true, |s| s.status == RunStatus::Finished)
}

/// The JSON files of `dir`, by name; files that cannot be read are skipped.
fn read_dir_json<T: serde::de::DeserializeOwned>(dir: &Path) -> Vec<(String, T)> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            if name.starts_with('.') {
                return None;
            }
            let value = serde_json::from_slice(&fs::read(e.path()).ok()?).ok()?;
            Some((name, value))
        })
        .collect()
}

fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path).context(|| format!("removing {}", path.display()))
        && e.io_kind != Some(std::io::ErrorKind::NotFound)
    {
        eprintln!("codexd: {}", e.message);
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(id: &str, count: u32, ids: &[u32]) -> Waiter {
        let worker = Worker { exec_id: id.into(), worker_pid: 1, worker_start_time: 1 };
        let ask = GpuAsk { count, ids: ids.to_vec(), free_memory_mib: 1024, free_util_percent: 10 };
        Waiter { worker, ask }
    }

    #[test]
    fn the_oldest_waiter_is_served_first_and_keeps_back_what_it_could_use() {
        let free = |_: &GpuAsk| vec![0, 2];
        let queue = [waiter("a", 1, &[]), waiter("b", 1, &[]), waiter("c", 1, &[])];
        assert_eq!(pick(&queue, "a", free), (Some(vec![0]), 2));
        assert_eq!(pick(&queue, "b", free), (Some(vec![2]), 1));
        assert_eq!(pick(&queue, "c", free), (None, 0));
        // An earlier large job keeps the one free GPU from a later small one.
        let queue = [waiter("a", 3, &[]), waiter("b", 1, &[])];
        assert_eq!(pick(&queue, "a", |_: &GpuAsk| vec![1]), (None, 1));
        assert_eq!(pick(&queue, "b", |_: &GpuAsk| vec![1]), (None, 0));
        // An earlier job pinned to a busy GPU keeps nothing else back.
        let queue = [waiter("a", 1, &[3]), waiter("b", 1, &[])];
        assert_eq!(pick(&queue, "a", free).0, None);
        assert_eq!(pick(&queue, "b", free), (Some(vec![0]), 2));
        assert_eq!(pick(&queue, "x", free), (None, 0));
    }

    #[test]
    fn free_means_unheld_idle_and_without_processes() {
        let gpu = |index, mem, util, processes| Gpu {
            index,
            uuid: format!("GPU-{index}"),
            name: "g".into(),
            memory_used_mib: mem,
            memory_total_mib: 16384,
            utilization_percent: util,
            processes,
            free: false,
            jobs: Vec::new(),
        };
        let gpus = [
            gpu(0, 0, 0, 0),
            gpu(1, 5000, 0, 0),
            gpu(2, 0, 90, 0),
            gpu(3, 0, 0, 1),
            gpu(4, 1024, 10, 0),
        ];
        let held = BTreeMap::from([(
            4,
            Worker { exec_id: "x".into(), worker_pid: 1, worker_start_time: 1 },
        )]);
        let ask = waiter("a", 1, &[]).ask;
        assert_eq!(free_gpus(&gpus, &BTreeMap::new(), &ask), [0, 4]);
        assert_eq!(free_gpus(&gpus, &held, &ask), [0]);
        assert_eq!(ask.impossible(&gpus), None);
        assert!(GpuAsk { count: 6, ..ask.clone() }.impossible(&gpus).is_some());
        assert!(GpuAsk { ids: vec![9], ..ask }.impossible(&gpus).is_some());
    }
}
