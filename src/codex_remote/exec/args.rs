//! The arguments of `codex-remote exec ...`: clap's view of each subcommand.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use clap_complete::engine::ArgValueCompleter;

use super::super::{parse_duration, parse_key_value};
use crate::protocol::{JobState, ListRequest, Resources, RunStatus, StreamSel};

#[derive(Debug, Subcommand)]
pub enum ExecCommand {
    /// Start a job and print its status at once (`exec_id`, `status: running`, ...).
    #[command(after_help = "Examples:
  codex-remote exec start -m gpu1 --cwd proj --cmd 'python train.py --lr 3e-4'
  codex-remote exec start -m gpu1 --env CUDA_VISIBLE_DEVICES=0 -- python train.py
  codex-remote exec start -m gpu1 --project trainer --ref main --cmd 'make test'")]
    Start(StartArgs),
    /// Print a job's status object.
    #[command(after_help = "Examples:
  codex-remote exec result last
  codex-remote exec result --machine gpu1 --id 019a2b3c")]
    Result(IdArgs),
    /// Print a job's output as NDJSON `log` lines, then a `logs_end` line with the next offsets.
    #[command(after_help = "Examples:
  codex-remote exec logs last --stream both --tail-lines 50
  codex-remote exec logs --machine gpu1 --id 019a2b3c --follow
  codex-remote exec logs last --since 10m --raw")]
    Logs(LogsArgs),
    /// Cancel a job: TERM to all its processes, a grace period, then KILL.
    #[command(after_help = "Examples:
  codex-remote exec cancel last
  codex-remote exec cancel --machine gpu1 --id 019a2b3c --grace 30s")]
    Cancel(CancelArgs),
    /// Wait until a job ends and print its status (exit 124 on --timeout).
    #[command(after_help = "Examples:
  codex-remote exec wait last --timeout 10m
  codex-remote exec wait --machine gpu1 --id 019a2b3c --exit-status")]
    Wait(WaitArgs),
    /// List jobs, newest first.
    #[command(after_help = "Examples:
  codex-remote exec list --machine gpu1 --state running
  codex-remote --format text exec list --limit 10")]
    List(ListArgs),
    /// Remove a finished job and its logs.
    #[command(after_help = "Examples:
  codex-remote exec rm --machine gpu1 --id 019a2b3c")]
    Rm(IdArgs),
    /// Remove old finished jobs, keeping the newest ones.
    #[command(after_help = "Examples:
  codex-remote exec prune --machine gpu1 --keep 20")]
    Prune(PruneArgs),
    /// Start a job, stream its output as NDJSON events and exit with its exit code.
    #[command(after_help = "Examples:
  codex-remote exec run --machine gpu1 --cmd nvidia-smi
  codex-remote --format text exec run -m gpu1 --cwd proj -- python train.py")]
    Run(RunArgs),
    /// Check what jobs on the machine will find: ssh, codexd and its version, the data dir,
    /// python, conda/pixi, nvidia-smi, git, rsync, rg (exit 1 when a required check fails).
    #[command(after_help = "Examples:
  codex-remote exec doctor --machine gpu1
  codex-remote exec doctor -m gpu1 --json --timeout 10s")]
    Doctor(DoctorArgs),
    /// Follow a running job's output as NDJSON, then print a `summary` line and exit with the
    /// job's exit code (the original tool's `exec watch`).
    #[command(after_help = "Examples:
  codex-remote exec watch --machine gpu1 --id 019a2b3c --full
  codex-remote exec watch last --stream stdout --tail 500")]
    Watch(WatchArgs),
}

#[derive(Debug, Args)]
pub struct MachineArg {
    /// The machine (a name from the config; default: `default_machine` or `local`). Commands
    /// that fan out also take `a,b,c`, a glob (`'gpu*'`) or a group; `exec start --gpus N`
    /// takes `any` or a group and picks one.
    #[arg(long, short = 'm', env = "CODEX_REMOTE_MACHINE", add = ArgValueCompleter::new(super::super::completions::machines))]
    pub machine: Option<String>,
    /// Every configured machine: one JSON line per machine (the commands that fan out; see
    /// README "Machine commands").
    #[arg(long)]
    pub all: bool,
}

/// A job, as `--id ID` or as the word after the command (`exec result ID`). A unique prefix
/// of an id, or `last` for the newest job, is resolved on the machine.
#[derive(Debug, Args)]
pub struct JobArg {
    /// The job's exec_id (a unique prefix of it, or `last` for the newest job, works too).
    #[arg(long = "id", value_name = "ID", conflicts_with = "job", add = ArgValueCompleter::new(super::super::completions::jobs))]
    pub(super) id: Option<String>,
    /// The same as --id.
    #[arg(value_name = "ID", required_unless_present = "id", add = ArgValueCompleter::new(super::super::completions::jobs))]
    pub(super) job: Option<String>,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub(super) machine: MachineArg,
    #[command(flatten)]
    pub(super) job: JobArg,
}

/// `exec run`: a start, and what Ctrl-C does.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub(super) start: StartArgs,
    /// On Ctrl-C leave the job running and exit 130 (default: cancel it as `exec cancel` does,
    /// print its end and exit with its code; a second Ctrl-C leaves at once).
    #[arg(long)]
    pub(super) detach_on_interrupt: bool,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub(super) machine: MachineArg,
    /// A shell command, run by the shell (default `bash -lc`).
    #[arg(long, conflicts_with = "script")]
    pub(super) cmd: Option<String>,
    /// A local script file whose text is sent and run with the shell.
    #[arg(long, value_name = "FILE")]
    pub(super) script: Option<PathBuf>,
    /// Working directory on the machine (`~` is the remote home; the default).
    #[arg(long)]
    pub(super) cwd: Option<String>,
    /// Environment variable for the job (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(super) env: Vec<(String, String)>,
    /// The shell for --cmd and --script, as words (default `bash -lc`).
    #[arg(long)]
    pub(super) shell: Option<String>,
    /// A name for the job.
    #[arg(long)]
    pub(super) name: Option<String>,
    /// A label for the job (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(super) labels: Vec<(String, String)>,
    /// A retried start with the same key returns the first job instead of running it again.
    #[arg(long)]
    pub(super) idempotency_key: Option<String>,
    /// Run in a checkout of this project of codexd's config (`projects:`); --cwd is then a
    /// path inside the repo.
    #[arg(long, value_name = "ID")]
    pub(super) project: Option<String>,
    /// The branch, tag or commit of --project to run at [default: HEAD, the default branch,
    /// fetched first].
    #[arg(long = "ref", value_name = "REF", requires = "project")]
    pub(super) git_ref: Option<String>,
    /// Forward the ssh agent to this call (`ssh -A`), so codexd can fetch a private repo with
    /// your key (as the machine key `forward_agent: true`).
    #[arg(long)]
    pub(super) forward_agent: bool,
    #[command(flatten)]
    pub(super) resources: ResourceArgs,
    /// The command as an argv list, run without a shell: `exec start -- python train.py`.
    #[arg(last = true, value_name = "ARGV")]
    pub(super) argv: Vec<String>,
}

/// What a job asks of a Slurm machine's scheduler (a `scheduler: local` machine honours only
/// `--gpus` and `--gpu-ids`: the job waits for free GPUs of the machine).
#[derive(Debug, Args)]
#[command(next_help_heading = "Scheduler (GPUs; the rest on a Slurm machine)")]
pub struct ResourceArgs {
    /// GPUs for the job: Slurm's, or free GPUs of a machine without a scheduler (the job is
    /// queued until N are free, then runs with CUDA_VISIBLE_DEVICES set to them).
    #[arg(long, value_name = "N")]
    pub(super) gpus: Option<u32>,
    /// These GPUs (nvidia-smi's indexes) of a machine without a scheduler, e.g. 0,3; the job
    /// waits until they are free.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub(super) gpu_ids: Vec<u32>,
    /// The Slurm partition.
    #[arg(long, value_name = "P")]
    pub(super) partition: Option<String>,
    /// The time limit: 2h, 90m, 1h30m, or Slurm's own form (1-00:00:00).
    #[arg(long, value_name = "T")]
    pub(super) time: Option<String>,
    /// Memory, as Slurm writes it: 32G, 500M.
    #[arg(long, value_name = "M")]
    pub(super) mem: Option<String>,
    /// CPUs for the job.
    #[arg(long, value_name = "N")]
    pub(super) cpus: Option<u32>,
    /// One more sbatch argument, e.g. --slurm-arg=--qos=high (repeatable).
    #[arg(long = "slurm-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub(super) slurm_args: Vec<String>,
    /// Run on the machine itself (a login node) without the scheduler: short tools only.
    #[arg(long, conflicts_with_all = ["gpus", "gpu_ids", "partition", "time", "mem", "cpus", "slurm_args"])]
    pub(super) local: bool,
}

impl ResourceArgs {
    /// The request's `resources`: `None` when no flag was given.
    pub(super) fn resources(&self) -> Option<Resources> {
        let r = Resources {
            gpus: self.gpus,
            gpu_ids: self.gpu_ids.clone(),
            partition: self.partition.clone(),
            account: None,
            time: self.time.clone(),
            mem: self.mem.clone(),
            cpus: self.cpus,
            slurm_args: self.slurm_args.clone(),
            local: self.local,
        };
        (r != Resources::default()).then_some(r)
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum StreamArg {
    Stdout,
    Stderr,
    Both,
}

impl StreamArg {
    pub(super) fn selection(self) -> StreamSel {
        match self {
            StreamArg::Stdout => StreamSel::Stdout,
            StreamArg::Stderr => StreamSel::Stderr,
            StreamArg::Both => StreamSel::Both,
        }
    }
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub(super) machine: MachineArg,
    #[command(flatten)]
    pub(super) job: JobArg,
    /// Which output to read [default: stdout; both with --follow].
    #[arg(long, value_enum)]
    pub(super) stream: Option<StreamArg>,
    /// The last BYTES bytes (default 2000 when no --since/--tail-lines).
    #[arg(long, value_name = "BYTES")]
    pub(super) tail: Option<u64>,
    /// The last N lines.
    #[arg(long, value_name = "N", conflicts_with = "tail")]
    pub(super) tail_lines: Option<u64>,
    /// Start at this byte offset (a `next_offset` printed before); with `--stream both` it is
    /// stdout's offset. `--since N` (a bare number) is the same.
    #[arg(long, value_name = "OFFSET", conflicts_with = "since")]
    pub(super) offset: Option<u64>,
    /// Only output written since TIME: a duration before now (`10m`, `1h30m`) or an RFC 3339
    /// time in UTC (`2026-01-01T00:30:00Z`), to about a second; a bare number is a byte offset
    /// (--offset).
    #[arg(long, value_name = "TIME")]
    pub(super) since: Option<String>,
    /// Only output written before TIME (the same forms); not with --follow.
    #[arg(long, value_name = "TIME", conflicts_with = "follow")]
    pub(super) until: Option<String>,
    /// With `--stream both`: stderr's offset.
    #[arg(long, value_name = "OFFSET")]
    pub(super) since_stderr: Option<u64>,
    /// Keep streaming until the job ends (both streams unless --stream says otherwise).
    #[arg(long, short = 'f')]
    pub(super) follow: bool,
    /// Write the bytes themselves (stderr's to stderr) instead of NDJSON.
    #[arg(long)]
    pub(super) raw: bool,
    /// Read at most this many bytes per stream, then stop (`more: true` says there is more).
    #[arg(long, value_name = "BYTES")]
    pub(super) max_bytes: Option<u64>,
    /// `raw`: lines as written. `terminal`: as a terminal shows them (a `\r` progress bar at
    /// its last state, no ANSI colours, repeats once with `repeated`); --tail-lines counts
    /// these lines.
    #[arg(long, value_enum, default_value = "raw", conflicts_with = "raw")]
    pub(super) view: ViewArg,
}

/// `--view`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ViewArg {
    Raw,
    Terminal,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub(super) machine: MachineArg,
    /// JSON even on a terminal.
    #[arg(long)]
    pub(super) json: bool,
    /// Time for each probe on the machine.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub(super) timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub(super) machine: MachineArg,
    /// The job's exec_id.
    #[command(flatten)]
    pub(super) job: JobArg,
    /// Which output to follow.
    #[arg(long, value_enum, default_value = "both")]
    pub(super) stream: StreamArg,
    /// Start with the last BYTES bytes of each stream.
    #[arg(long, value_name = "BYTES", default_value_t = 2000, conflicts_with = "full")]
    pub(super) tail: u64,
    /// Start at the beginning of the output.
    #[arg(long)]
    pub(super) full: bool,
    /// Accepted for the original tool's scripts: output is pushed as it is written, and this
    /// is only the pause before following again after a dropped connection.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub(super) poll: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub(super) machine: MachineArg,
    #[command(flatten)]
    pub(super) job: JobArg,
    /// Time between TERM and KILL.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(super) grace: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub(super) machine: MachineArg,
    #[command(flatten)]
    pub(super) job: JobArg,
    /// Give up after this long (e.g. 30s); exit 124 with the running status.
    #[arg(long, value_parser = parse_duration)]
    pub(super) timeout: Option<std::time::Duration>,
    /// Exit with the job's own exit code (128+signal when killed, 1 when lost), so that
    /// `exec wait --exit-status ID && next` chains.
    #[arg(long)]
    pub(super) exit_status: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub(super) machine: MachineArg,
    /// Only jobs in this state (queued, running, succeeded, failed, cancelled, lost, start_failed),
    /// or with this status (running, finished).
    #[arg(long, value_parser = parse_state_filter, add = ArgValueCompleter::new(super::super::completions::states))]
    pub(super) state: Option<StateFilter>,
    /// At most this many jobs.
    #[arg(long, default_value_t = 50)]
    pub(super) limit: usize,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub(super) machine: MachineArg,
    /// Finished jobs to keep (default: codexd's retention, 200).
    #[arg(long)]
    pub(super) keep: Option<usize>,
}

/// `--state`: a state, or a status (`finished` is not a state but scripts ask for it).
#[derive(Debug, Clone, Copy)]
pub enum StateFilter {
    State(JobState),
    Status(RunStatus),
}

impl StateFilter {
    pub(super) fn request(self) -> ListRequest {
        match self {
            StateFilter::State(s) => ListRequest { state: Some(s), ..Default::default() },
            StateFilter::Status(s) => ListRequest { status: Some(s), ..Default::default() },
        }
    }
}

fn parse_state_filter(s: &str) -> std::result::Result<StateFilter, String> {
    match s {
        "finished" => Ok(StateFilter::Status(RunStatus::Finished)),
        other => {
            other.parse().map(StateFilter::State).map_err(|e: String| format!("{e}, finished"))
        }
    }
}
