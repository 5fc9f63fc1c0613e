//! What `nvidia-smi` says about this machine's GPUs, asked at most once a second for the whole
//! store: the answer is kept in `<data_dir>/gpus/nvidia-smi.json` with its time, so twenty
//! queued workers polling do not run twenty driver queries. No `nvidia-smi`, or one that
//! fails, is an answer ([`Smi::Missing`], [`Smi::Failed`]), not an error.
//!
//! ```text
//! nvidia-smi --query-gpu=index,uuid,name,memory.used,memory.total,utilization.gpu
//!            --format=csv,noheader,nounits        0, GPU-5d1e, NVIDIA A100, 3, 40960, 0
//! nvidia-smi --query-compute-apps=gpu_uuid,pid --format=csv,noheader,nounits
//!                                                 GPU-5d1e, 4242
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::sys;
use crate::protocol::Gpu;

const QUERY_GPUS: [&str; 2] = [
    "--query-gpu=index,uuid,name,memory.used,memory.total,utilization.gpu",
    "--format=csv,noheader,nounits",
];
const QUERY_APPS: [&str; 2] =
    ["--query-compute-apps=gpu_uuid,pid", "--format=csv,noheader,nounits"];
/// How long an answer of nvidia-smi stands.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// A driver query that takes longer is hung.
const SMI_TIMEOUT: Duration = Duration::from_secs(10);

/// What nvidia-smi said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Smi {
    Gpus {
        gpus: Vec<Gpu>,
    },
    /// No `nvidia-smi` on codexd's PATH: no NVIDIA driver here.
    Missing,
    Failed {
        message: String,
    },
}

impl Smi {
    /// Why there are no GPUs to use, in a sentence; `None` when nvidia-smi answered.
    pub fn problem(&self) -> Option<String> {
        match self {
            Smi::Gpus { .. } => None,
            Smi::Missing => Some("no nvidia-smi on codexd's PATH (no NVIDIA driver)".into()),
            Smi::Failed { message } => Some(format!("nvidia-smi failed: {message}")),
        }
    }

    pub fn gpus(&self) -> &[Gpu] {
        match self {
            Smi::Gpus { gpus } => gpus,
            _ => &[],
        }
    }
}

/// The answer as kept in the store.
#[derive(Debug, Serialize, Deserialize)]
struct Cached {
    at_ms: u64,
    smi: Smi,
}

/// Where the store's GPU files live (`gpus/`, created 0700).
pub fn gpus_dir(store_root: &Path) -> crate::error::Result<PathBuf> {
    let dir = store_root.join("gpus");
    super::store::create_private_dir(&dir)?;
    Ok(dir)
}

/// nvidia-smi's answer, at most [`FRESH_FOR`] old (asked now when the kept one is older).
pub fn query(store_root: &Path) -> Smi {
    let now = now_ms();
    let Ok(dir) = gpus_dir(store_root) else {
        return query_now();
    };
    let path = dir.join("nvidia-smi.json");
    let kept = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Cached>(&b).ok());
    if let Some(kept) = kept
        && kept.at_ms <= now
        && now - kept.at_ms < FRESH_FOR.as_millis() as u64
    {
        return kept.smi;
    }
    ask_and_keep(&path, now)
}

/// nvidia-smi's answer asked now, never the kept one (kept for the next [`query`]): the
/// re-check of GPUs just picked, which another user's process may have taken meanwhile (each
/// user's store keeps its own answer, so only the driver knows).
pub fn query_fresh(store_root: &Path) -> Smi {
    match gpus_dir(store_root) {
        Ok(dir) => ask_and_keep(&dir.join("nvidia-smi.json"), now_ms()),
        Err(_) => query_now(),
    }
}

fn ask_and_keep(path: &Path, now: u64) -> Smi {
    let smi = query_now();
    let _ = crate::platform::write_json_atomic(path, &Cached { at_ms: now, smi: smi.clone() });
    smi
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// `nvidia-smi` on codexd's PATH.
pub fn nvidia_smi() -> Option<PathBuf> {
    sys::find_on_path("nvidia-smi", &std::env::var("PATH").unwrap_or_default())
}

/// Asks nvidia-smi now: the GPUs, then the compute processes on them.
fn query_now() -> Smi {
    let Some(program) = nvidia_smi() else {
        return Smi::Missing;
    };
    let run = |args: [&str; 2]| {
        let mut cmd = std::process::Command::new(&program);
        cmd.args(args);
        match sys::output_within(cmd, SMI_TIMEOUT) {
            Ok((true, text)) => Ok(text),
            Ok((false, text)) => Err(first_line(&text, "exited with an error")),
            Err(e) => Err(e),
        }
    };
    let mut gpus = match run(QUERY_GPUS).and_then(|text| parse_gpus(&text)) {
        Ok(gpus) => gpus,
        Err(message) => return Smi::Failed { message },
    };
    // A driver that cannot list processes still reports memory and utilisation.
    if let Ok(text) = run(QUERY_APPS) {
        for uuid in parse_apps(&text) {
            if let Some(gpu) = gpus.iter_mut().find(|g| g.uuid == uuid) {
                gpu.processes += 1;
            }
        }
    }
    Smi::Gpus { gpus }
}

fn first_line(text: &str, otherwise: &str) -> String {
    text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or(otherwise).to_string()
}

/// Parses `--query-gpu=index,uuid,name,memory.used,memory.total,utilization.gpu` (csv,
/// noheader, nounits), `free` and `jobs` left for the caller. A value nvidia-smi cannot give (`[N/A]`, `[Not Supported]`) reads 0; a
/// name may hold commas.
pub fn parse_gpus(text: &str) -> Result<Vec<Gpu>, String> {
    let number = |field: &str| field.trim().parse::<u64>().ok().unwrap_or(0);
    let mut gpus = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let n = fields.len();
        let index = fields.first().and_then(|i| i.parse::<u32>().ok());
        let (Some(index), true) = (index, n >= 6) else {
            return Err(format!("unexpected line {line:?}"));
        };
        gpus.push(Gpu {
            index,
            uuid: fields[1].to_string(),
            name: fields[2..n - 3].join(", "),
            memory_used_mib: number(fields[n - 3]),
            memory_total_mib: number(fields[n - 2]),
            utilization_percent: number(fields[n - 1]).min(100) as u32,
            processes: 0,
            free: false,
            jobs: Vec::new(),
        });
    }
    gpus.sort_by_key(|g| g.index);
    Ok(gpus)
}

/// Parses `--query-compute-apps=gpu_uuid,pid`: the GPU of each process; odd lines are skipped.
/// (Only their number counts: codexd cannot tell whose they are across users or containers.)
pub fn parse_apps(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let (uuid, pid) = line.split_once(',')?;
            pid.trim().parse::<i32>().ok()?;
            Some(uuid.trim().to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_parse_with_commas_in_names_and_unknown_values() {
        let text = "0, GPU-a, NVIDIA A100-SXM4-40GB, 3, 40960, 0\n\
                    1, GPU-b, Tesla, rev 2, [N/A], 16384, [Not Supported]\n";
        let gpus = parse_gpus(text).unwrap();
        assert_eq!(gpus.len(), 2);
        assert_eq!((gpus[0].index, gpus[0].uuid.as_str()), (0, "GPU-a"));
        assert_eq!((gpus[0].memory_used_mib, gpus[0].memory_total_mib), (3, 40960));
        assert_eq!(gpus[1].name, "Tesla, rev 2");
        assert_eq!((gpus[1].memory_used_mib, gpus[1].utilization_percent), (0, 0));
        assert!(parse_gpus("No devices were found\n").is_err());
        assert!(parse_gpus("").unwrap().is_empty());
    }

    #[test]
    fn apps_parse_and_skip_odd_lines() {
        let apps = parse_apps("GPU-a, 42\nGPU-b, [N/A]\n\nGPU-a, 7\n");
        assert_eq!(apps, ["GPU-a", "GPU-a"]);
    }
}
