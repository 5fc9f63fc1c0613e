//! What a job asks of a cluster's scheduler: `exec_start`'s `resources` (capability
//! `resources`), and the scheduler that placed a job (`scheduler` in the status object).
//!
//! ```text
//! {"type":"exec_start","cmd":"python train.py","resources":{"gpus":2,"partition":"gpu",
//!   "time":"2h","mem":"32G","cpus":8,"slurm_args":["--qos=high"]}}
//! {"type":"exec_start","cmd":"ls","resources":{"local":true}}    on the login node anyway
//! {"type":"exec_start","cmd":"python train.py","resources":{"gpu_ids":[0,3]}}
//!                                               pins GPUs (capability `gpus`, no scheduler)
//! ```
//! On a machine without a scheduler only `gpus` and `gpu_ids` are honoured: the job waits,
//! `queued` with codexd's `queue_reason`, until that many GPUs are free ([`crate::jobs::gpus`]).
//! A status of a job placed by Slurm adds `"scheduler":"slurm","slurm_job_id":"42",
//! "node":"gpu-a1","resources":{...}` and, while it waits in the queue, `"state":"queued"`
//! (`status` stays `running`) with Slurm's `queue_reason` (`Priority`, `Resources`, ...).

use serde::{Deserialize, Serialize};

/// Who runs a job: codexd itself (`local`) or Slurm (`slurm`, through `sbatch`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scheduler {
    #[default]
    Local,
    Slurm,
}

impl Scheduler {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduler::Local => "local",
            Scheduler::Slurm => "slurm",
        }
    }
}

/// What a job asks of the scheduler. Every field is optional; codexd's `slurm:` config fills
/// in what the request leaves out, and the status records the result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Resources {
    /// GPUs for the job (`sbatch --gpus`; without a scheduler, free GPUs of the machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// These GPUs (nvidia-smi's indexes) of a machine without a scheduler: the job waits until
    /// they are all free.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_ids: Vec<u32>,
    /// The Slurm partition (`sbatch --partition`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// The Slurm account (`sbatch --account`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The time limit: `2h`, `90m`, `1h30m`, or Slurm's own form (`1-00:00:00`, `30`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Memory for the job, as Slurm writes it (`32G`, `500M`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<String>,
    /// CPUs for the job's one task (`sbatch --cpus-per-task`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// More `sbatch` arguments, each one word (`--qos=high`, `--constraint=a100`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slurm_args: Vec<String>,
    /// Run on this machine (a cluster's login node) without the scheduler: short tools only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
}

impl Resources {
    /// The fields set that only a scheduler can honour, by their flag names (`--gpus`, ...).
    pub fn scheduler_flags(&self) -> Vec<&'static str> {
        let set = [
            ("--gpus", self.gpus.is_some()),
            ("--gpu-ids", !self.gpu_ids.is_empty()),
            ("--partition", self.partition.is_some()),
            ("--account", self.account.is_some()),
            ("--time", self.time.is_some()),
            ("--mem", self.mem.is_some()),
            ("--cpus", self.cpus.is_some()),
            ("--slurm-arg", !self.slurm_args.is_empty()),
        ];
        set.into_iter().filter(|(_, on)| *on).map(|(flag, _)| flag).collect()
    }

    /// These resources, with `defaults` filling in what they leave out; `slurm_args` are the
    /// defaults' first, then these (a later `sbatch` option wins).
    pub fn or_defaults(&self, defaults: &Resources) -> Resources {
        Resources {
            gpus: self.gpus.or(defaults.gpus),
            gpu_ids: self.gpu_ids.clone(),
            partition: self.partition.clone().or_else(|| defaults.partition.clone()),
            account: self.account.clone().or_else(|| defaults.account.clone()),
            time: self.time.clone().or_else(|| defaults.time.clone()),
            mem: self.mem.clone().or_else(|| defaults.mem.clone()),
            cpus: self.cpus.or(defaults.cpus),
            slurm_args: defaults.slurm_args.iter().chain(&self.slurm_args).cloned().collect(),
            local: self.local,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_wins_over_the_defaults_and_args_add_up() {
        let defaults = Resources {
            partition: Some("gpu".into()),
            time: Some("1h".into()),
            slurm_args: vec!["--qos=low".into()],
            ..Resources::default()
        };
        let asked = Resources {
            time: Some("2h".into()),
            gpus: Some(2),
            slurm_args: vec!["--qos=high".into()],
            ..Resources::default()
        };
        let got = asked.or_defaults(&defaults);
        assert_eq!((got.partition.as_deref(), got.time.as_deref()), (Some("gpu"), Some("2h")));
        assert_eq!(got.slurm_args, ["--qos=low", "--qos=high"]);
        assert_eq!(got.scheduler_flags(), ["--gpus", "--partition", "--time", "--slurm-arg"]);
        assert!(Resources { local: true, ..Resources::default() }.scheduler_flags().is_empty());
    }
}
