//! What a job asks of the GPUs (`--gpus N`, `--gpu-ids`), kept in its spec: the store records
//! it, the GPU queue ([`super::gpu_queue`]) serves it.

use serde::{Deserialize, Serialize};

use crate::protocol::Gpu;

/// What a job asks: `count` GPUs, or the ones in `ids`, free by these thresholds. Written in
/// the job's spec by `exec_start`, read by its worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuAsk {
    pub count: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<u32>,
    pub free_memory_mib: u64,
    pub free_util_percent: u32,
}

impl GpuAsk {
    /// The ask in words: "2 free GPUs", "GPUs 0,3".
    fn describe(&self) -> String {
        match self.ids.as_slice() {
            [] if self.count == 1 => "1 free GPU".to_string(),
            [] => format!("{} free GPUs", self.count),
            [id] => format!("GPU {id}"),
            ids => format!("GPUs {}", join(ids)),
        }
    }

    /// "waiting for 2 free GPUs": the queue reason before the first look.
    pub fn waiting(&self) -> String {
        format!("waiting for {}", self.describe())
    }

    /// Why the ask can never be met on these GPUs, if it cannot.
    pub fn impossible(&self, gpus: &[Gpu]) -> Option<String> {
        if let Some(id) = self.ids.iter().find(|id| !gpus.iter().any(|g| g.index == **id)) {
            return Some(format!("there is no GPU {id} here ({} GPUs)", gpus.len()));
        }
        (self.count as usize > gpus.len())
            .then(|| format!("{} GPUs asked, but this machine has {}", self.count, gpus.len()))
    }
}

pub(crate) fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}
