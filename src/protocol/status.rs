//! The status object of a job: what `status.json` holds on disk and every `status` answer
//! carries (README "The status object").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::resources::{Resources, Scheduler};

/// The two values existing clients rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Finished,
}

/// The outcome of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting in the scheduler's queue (`status` is `running`: not finished).
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Lost,
    StartFailed,
}

impl JobState {
    pub fn status(self) -> RunStatus {
        match self {
            JobState::Queued | JobState::Running => RunStatus::Running,
            _ => RunStatus::Finished,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Lost => "lost",
            JobState::StartFailed => "start_failed",
        }
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
            format!(
                "unknown state {s:?}: queued, running, succeeded, failed, cancelled, lost, \
                 start_failed"
            )
        })
    }
}

/// The status of one job: `status.json` on disk and the `status` answer on the wire.
///
/// The fields up to `error` are always present (null when unknown), so scripts can rely on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub exec_id: String,
    pub status: RunStatus,
    pub state: JobState,
    /// The command as given (a string, or the argv joined for display).
    pub cmd: String,
    pub cwd: String,
    pub pid: Option<i32>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The argv the worker executed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub created_at: String,
    /// Start time of `pid` in clock ticks since boot (from /proc), to tell a reused pid apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_start_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// When a cancel was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested_at: Option<String>,
    /// The `artifacts` array of the job's artifacts file, read when it ended
    /// (`src/jobs/artifacts.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Vec<serde_json::Value>>,
    /// Something about the job worth knowing that is not an error of it (e.g. an artifacts
    /// file that could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Where the job's code came from, for a job started with a `project`.
    #[serde(flatten)]
    pub checkout: Option<Checkout>,
    /// Who runs the job: `local` (codexd's worker on this machine) or `slurm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<Scheduler>,
    /// The Slurm job that runs the job's worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job_id: Option<String>,
    /// The compute node the job runs or ran on (a Slurm job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What the job asked of the scheduler, with codexd's defaults filled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Why a `queued` job waits: Slurm's words (`Priority`, `Resources`, `JobHeldUser`), or
    /// codexd's for a job waiting for GPUs ("waiting for 2 free GPUs (1 free)").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_reason: Option<String>,
    /// The GPUs a `--gpus` job was given on a machine without a scheduler (nvidia-smi's
    /// indexes, its `CUDA_VISIBLE_DEVICES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_ids: Option<Vec<u32>>,
}

/// The git checkout a project job runs in: the project, the ref asked for, the commit it
/// resolved to, and the worktree (removed with the job). The last two are absent when the
/// checkout failed (`start_failed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    pub project: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
}

impl Checkout {
    /// A checkout that did not happen: the project and ref alone.
    pub fn failed(project: &str, git_ref: &str) -> Self {
        Checkout {
            project: project.to_string(),
            git_ref: git_ref.to_string(),
            commit: None,
            worktree: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::serde_tags;

    #[test]
    fn each_state_names_itself_as_serde_does() {
        let tags = serde_tags::<JobState>(r#""?""#);
        assert_eq!(tags.len(), 7);
        for tag in tags {
            let state: JobState = tag.parse().unwrap();
            assert_eq!(state.as_str(), tag);
        }
    }
}
