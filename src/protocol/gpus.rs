//! A machine's GPUs as codexd sees them: the `gpus` request (capability `gpus`) and its answer.
//!
//! ```text
//! {"type":"gpus"}
//! {"type":"gpus","gpus":[{"index":0,"uuid":"GPU-5d1e","name":"NVIDIA A100","memory_used_mib":3,
//!   "memory_total_mib":40960,"utilization_percent":0,"processes":0,"free":true,"jobs":[]}],
//!   "free_memory_mib":1024,"free_util_percent":10,"queued":1}
//! {"type":"gpus","gpus":[],"free_memory_mib":1024,"free_util_percent":10,"queued":0,
//!   "error":"no nvidia-smi on codexd's PATH"}
//! ```
//! `free` is what a `--gpus N` job would take now: no codexd job holds it, and its memory used
//! and utilisation (by anyone's processes) are at most the two thresholds, with no compute
//! process on it. `jobs` are the codexd jobs that hold it; `queued` counts the jobs waiting.

use serde::{Deserialize, Serialize};

/// `gpus`: what the machine's GPUs are doing (no fields yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpusRequest {}

/// One GPU, from `nvidia-smi` and the job store's allocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// nvidia-smi's index (PCI bus order), as `CUDA_VISIBLE_DEVICES` takes it with
    /// `CUDA_DEVICE_ORDER=PCI_BUS_ID`.
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_used_mib: u64,
    pub memory_total_mib: u64,
    pub utilization_percent: u32,
    /// Compute processes on it (anyone's, as far as nvidia-smi can see them).
    pub processes: u32,
    /// A `--gpus` job could take it now.
    pub free: bool,
    /// The codexd jobs that hold it.
    #[serde(default)]
    pub jobs: Vec<String>,
}

/// The answer to `gpus`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuReport {
    pub gpus: Vec<Gpu>,
    /// The thresholds of "free" (codexd config `gpu_free_memory_mib`, `gpu_free_util_percent`).
    pub free_memory_mib: u64,
    pub free_util_percent: u32,
    /// Jobs waiting for GPUs.
    pub queued: usize,
    /// Why there are no GPUs to report (no `nvidia-smi`, or it failed): not an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
