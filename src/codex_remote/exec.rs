//! `codex-remote exec start|result|logs|cancel|wait|list|rm|prune|run`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use clap::{Args, Subcommand, ValueEnum};
use clap_complete::engine::ArgValueCompleter;
use serde::Serialize;

use super::{
    Ctx, emit, emit_on, emit_raw, original_fields, output, parse_duration, parse_key_value, usage,
};
use crate::error::{Error, ErrorCode, Result, exit};
use crate::protocol::{
    CancelRequest, CommandSpec, DoctorCheck, DoctorReport, DoctorRequest, ExecId, ExecStartRequest,
    JobRef, JobState, JobStatus, ListRequest, LogView, LogsEnd, LogsRequest, OnMachine,
    PruneRequest, Request, ResolveRequest, Resources, Response, RunEvent, RunStatus, Stream,
    StreamOffsets, StreamSel, Summary, WaitRequest, parse_log_time,
};
use crate::remote::client;
use crate::remote::transport::Machine;

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
    /// The machine (a name from the config; default: `default_machine` or `local`).
    #[arg(long, short = 'm', env = "CODEX_REMOTE_MACHINE", add = ArgValueCompleter::new(super::completions::machines))]
    pub machine: Option<String>,
}

/// A job, as `--id ID` or as the word after the command (`exec result ID`). A unique prefix
/// of an id, or `last` for the newest job, is resolved on the machine.
#[derive(Debug, Args)]
pub struct JobArg {
    /// The job's exec_id (a unique prefix of it, or `last` for the newest job, works too).
    #[arg(long = "id", value_name = "ID", conflicts_with = "job", add = ArgValueCompleter::new(super::completions::jobs))]
    id: Option<String>,
    /// The same as --id.
    #[arg(value_name = "ID", required_unless_present = "id", add = ArgValueCompleter::new(super::completions::jobs))]
    job: Option<String>,
}

impl JobArg {
    /// The whole id: as given when it is one, else resolved by the machine's codexd.
    pub fn resolve(&self, m: &Machine) -> Result<ExecId> {
        resolve_id(m, self.id.as_deref().or(self.job.as_deref()).unwrap_or_default())
    }
}

/// A job id as a user gives it (whole, a unique prefix, or `last`), resolved by the machine's
/// codexd when it is not whole. The CLI and the MCP server take the same ids.
pub fn resolve_id(m: &Machine, given: &str) -> Result<ExecId> {
    if let Ok(id) = ExecId::parse(given) {
        return Ok(id);
    }
    let req = Request::ExecResolve(ResolveRequest { exec_id: given.to_string() });
    match m.call(&req, &mut |_| Ok(()))? {
        Response::Resolved(r) => Ok(r.exec_id),
        other => Err(client::unexpected(&other)),
    }
}

#[derive(Debug, Args)]
pub struct IdArgs {
    #[command(flatten)]
    machine: MachineArg,
    #[command(flatten)]
    job: JobArg,
}

/// `exec run`: a start, and what Ctrl-C does.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    start: StartArgs,
    /// On Ctrl-C leave the job running and exit 130 (default: cancel it as `exec cancel` does,
    /// print its end and exit with its code; a second Ctrl-C leaves at once).
    #[arg(long)]
    detach_on_interrupt: bool,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    machine: MachineArg,
    /// A shell command, run by the shell (default `bash -lc`).
    #[arg(long, conflicts_with = "script")]
    cmd: Option<String>,
    /// A local script file whose text is sent and run with the shell.
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// Working directory on the machine (`~` is the remote home; the default).
    #[arg(long)]
    cwd: Option<String>,
    /// Environment variable for the job (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    env: Vec<(String, String)>,
    /// The shell for --cmd and --script, as words (default `bash -lc`).
    #[arg(long)]
    shell: Option<String>,
    /// A name for the job.
    #[arg(long)]
    name: Option<String>,
    /// A label for the job (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    labels: Vec<(String, String)>,
    /// A retried start with the same key returns the first job instead of running it again.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Run in a checkout of this project of codexd's config (`projects:`); --cwd is then a
    /// path inside the repo.
    #[arg(long, value_name = "ID")]
    project: Option<String>,
    /// The branch, tag or commit of --project to run at [default: HEAD, the default branch,
    /// fetched first].
    #[arg(long = "ref", value_name = "REF", requires = "project")]
    git_ref: Option<String>,
    /// Forward the ssh agent to this call (`ssh -A`), so codexd can fetch a private repo with
    /// your key (as the machine key `forward_agent: true`).
    #[arg(long)]
    forward_agent: bool,
    #[command(flatten)]
    resources: ResourceArgs,
    /// The command as an argv list, run without a shell: `exec start -- python train.py`.
    #[arg(last = true, value_name = "ARGV")]
    argv: Vec<String>,
}

/// What a job asks of a Slurm machine's scheduler (a `scheduler: local` machine honours only
/// `--gpus` and `--gpu-ids`: the job waits for free GPUs of the machine).
#[derive(Debug, Args)]
#[command(next_help_heading = "Scheduler (GPUs; the rest on a Slurm machine)")]
pub struct ResourceArgs {
    /// GPUs for the job: Slurm's, or free GPUs of a machine without a scheduler (the job is
    /// queued until N are free, then runs with CUDA_VISIBLE_DEVICES set to them).
    #[arg(long, value_name = "N")]
    gpus: Option<u32>,
    /// These GPUs (nvidia-smi's indexes) of a machine without a scheduler, e.g. 0,3; the job
    /// waits until they are free.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    gpu_ids: Vec<u32>,
    /// The Slurm partition.
    #[arg(long, value_name = "P")]
    partition: Option<String>,
    /// The time limit: 2h, 90m, 1h30m, or Slurm's own form (1-00:00:00).
    #[arg(long, value_name = "T")]
    time: Option<String>,
    /// Memory, as Slurm writes it: 32G, 500M.
    #[arg(long, value_name = "M")]
    mem: Option<String>,
    /// CPUs for the job.
    #[arg(long, value_name = "N")]
    cpus: Option<u32>,
    /// One more sbatch argument, e.g. --slurm-arg=--qos=high (repeatable).
    #[arg(long = "slurm-arg", value_name = "ARG", allow_hyphen_values = true)]
    slurm_args: Vec<String>,
    /// Run on the machine itself (a login node) without the scheduler: short tools only.
    #[arg(long, conflicts_with_all = ["gpus", "gpu_ids", "partition", "time", "mem", "cpus", "slurm_args"])]
    local: bool,
}

impl ResourceArgs {
    /// The request's `resources`: `None` when no flag was given.
    fn resources(&self) -> Option<Resources> {
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
enum StreamArg {
    Stdout,
    Stderr,
    Both,
}

impl StreamArg {
    fn selection(self) -> StreamSel {
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
    machine: MachineArg,
    #[command(flatten)]
    job: JobArg,
    /// Which output to read [default: stdout; both with --follow].
    #[arg(long, value_enum)]
    stream: Option<StreamArg>,
    /// The last BYTES bytes (default 2000 when no --since/--tail-lines).
    #[arg(long, value_name = "BYTES")]
    tail: Option<u64>,
    /// The last N lines.
    #[arg(long, value_name = "N", conflicts_with = "tail")]
    tail_lines: Option<u64>,
    /// Start at this byte offset (a `next_offset` printed before); with `--stream both` it is
    /// stdout's offset. `--since N` (a bare number) is the same.
    #[arg(long, value_name = "OFFSET", conflicts_with = "since")]
    offset: Option<u64>,
    /// Only output written since TIME: a duration before now (`10m`, `1h30m`) or an RFC 3339
    /// time in UTC (`2026-01-01T00:30:00Z`), to about a second; a bare number is a byte offset
    /// (--offset).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only output written before TIME (the same forms); not with --follow.
    #[arg(long, value_name = "TIME", conflicts_with = "follow")]
    until: Option<String>,
    /// With `--stream both`: stderr's offset.
    #[arg(long, value_name = "OFFSET")]
    since_stderr: Option<u64>,
    /// Keep streaming until the job ends (both streams unless --stream says otherwise).
    #[arg(long, short = 'f')]
    follow: bool,
    /// Write the bytes themselves (stderr's to stderr) instead of NDJSON.
    #[arg(long)]
    raw: bool,
    /// Read at most this many bytes per stream, then stop (`more: true` says there is more).
    #[arg(long, value_name = "BYTES")]
    max_bytes: Option<u64>,
    /// `raw`: lines as written. `terminal`: as a terminal shows them (a `\r` progress bar at
    /// its last state, no ANSI colours, repeats once with `repeated`); --tail-lines counts
    /// these lines.
    #[arg(long, value_enum, default_value = "raw", conflicts_with = "raw")]
    view: ViewArg,
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
    machine: MachineArg,
    /// JSON even on a terminal.
    #[arg(long)]
    json: bool,
    /// Time for each probe on the machine.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    machine: MachineArg,
    /// The job's exec_id.
    #[command(flatten)]
    job: JobArg,
    /// Which output to follow.
    #[arg(long, value_enum, default_value = "both")]
    stream: StreamArg,
    /// Start with the last BYTES bytes of each stream.
    #[arg(long, value_name = "BYTES", default_value_t = 2000, conflicts_with = "full")]
    tail: u64,
    /// Start at the beginning of the output.
    #[arg(long)]
    full: bool,
    /// Accepted for the original tool's scripts: output is pushed as it is written, and this
    /// is only the pause before following again after a dropped connection.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    poll: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    machine: MachineArg,
    #[command(flatten)]
    job: JobArg,
    /// Time between TERM and KILL.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    grace: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    machine: MachineArg,
    #[command(flatten)]
    job: JobArg,
    /// Give up after this long (e.g. 30s); exit 124 with the running status.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<std::time::Duration>,
    /// Exit with the job's own exit code (128+signal when killed, 1 when lost), so that
    /// `exec wait --exit-status ID && next` chains.
    #[arg(long)]
    exit_status: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    machine: MachineArg,
    /// Only jobs in this state (queued, running, succeeded, failed, cancelled, lost, start_failed),
    /// or with this status (running, finished).
    #[arg(long, value_parser = parse_state_filter, add = ArgValueCompleter::new(super::completions::states))]
    state: Option<StateFilter>,
    /// At most this many jobs.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    machine: MachineArg,
    /// Finished jobs to keep (default: codexd's retention, 200).
    #[arg(long)]
    keep: Option<usize>,
}

/// `--state`: a state, or a status (`finished` is not a state but scripts ask for it).
#[derive(Debug, Clone, Copy)]
pub enum StateFilter {
    State(JobState),
    Status(RunStatus),
}

impl StateFilter {
    fn request(self) -> ListRequest {
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

pub fn run(ctx: &Ctx, cmd: ExecCommand) -> Result<u8> {
    // These exit with the job's code: a reader that stops early must not turn it into 0.
    match &cmd {
        ExecCommand::Run(_) | ExecCommand::Watch(_) => output::outlive_closed_stdout(),
        ExecCommand::Wait(args) if args.exit_status => output::outlive_closed_stdout(),
        _ => {}
    }
    match cmd {
        ExecCommand::Start(args) => start(ctx, args),
        ExecCommand::Result(args) => {
            let m = ctx.machine(args.machine.machine.as_deref())?;
            let exec_id = args.job.resolve(&m)?;
            let answer = client::status(&m, Request::ExecStatus(JobRef { exec_id }))?;
            emit_on(&m, &answer)?;
            Ok(exit::OK)
        }
        ExecCommand::Logs(args) => logs(ctx, args),
        ExecCommand::Cancel(args) => {
            let m = ctx.machine(args.machine.machine.as_deref())?;
            let grace_ms = Some(args.grace.as_millis() as u64);
            let exec_id = args.job.resolve(&m)?;
            let req = Request::ExecCancel(CancelRequest { exec_id, grace_ms });
            let answer = client::status(&m, req)?;
            original_fields::emit_on_with(&m, &answer, original_fields::canceled)?;
            Ok(exit::OK)
        }
        ExecCommand::Wait(args) => {
            let m = ctx.machine(args.machine.machine.as_deref())?;
            let timeout_ms = args.timeout.map(|t| t.as_millis() as u64);
            let exec_id = args.job.resolve(&m)?;
            let answer =
                client::status(&m, Request::ExecWait(WaitRequest { exec_id, timeout_ms }))?;
            emit_on(&m, &answer)?;
            Ok(match (answer.timed_out == Some(true), args.exit_status) {
                (true, _) => exit::TIMED_OUT,
                (false, true) => job_exit_code(&answer.job),
                (false, false) => exit::OK,
            })
        }
        ExecCommand::List(args) => {
            let m = ctx.machine(args.machine.machine.as_deref())?;
            let list = client::list(
                &m,
                ListRequest {
                    limit: Some(args.limit),
                    ..args.state.map_or_else(ListRequest::default, StateFilter::request)
                },
            )
            .map(|mut list| {
                // An older codexd ignores `status`: filter here too.
                if let Some(StateFilter::Status(s)) = args.state {
                    list.jobs.retain(|j| j.status == s);
                }
                list.jobs.truncate(args.limit);
                list
            })?;
            if output::text() {
                return print_jobs(&list.jobs).map(|()| exit::OK);
            }
            #[derive(Serialize)]
            struct Out<'a> {
                machine: &'a str,
                jobs: Vec<OnMachine<'a, &'a JobStatus>>,
            }
            let jobs = list.jobs.iter().map(|value| OnMachine { value, machine: &m.name });
            emit(&Out { machine: &m.name, jobs: jobs.collect() })?;
            Ok(exit::OK)
        }
        ExecCommand::Rm(args) => {
            let m = ctx.machine(args.machine.machine.as_deref())?;
            let exec_id = args.job.resolve(&m)?;
            let answer = m.call(&Request::ExecRm(JobRef { exec_id }), &mut |_| Ok(()))?;
            emit_on(&m, &answer)?;
            Ok(exit::OK)
        }
        ExecCommand::Prune(args) => {
            let m = ctx.machine(args.machine.machine.as_deref())?;
            let req = Request::ExecPrune(PruneRequest { keep: args.keep });
            let answer = m.call(&req, &mut |_| Ok(()))?;
            emit_on(&m, &answer)?;
            Ok(exit::OK)
        }
        ExecCommand::Run(args) => run_job(ctx, args),
        ExecCommand::Watch(args) => watch(ctx, args),
        ExecCommand::Doctor(args) => doctor(ctx, args),
    }
}

/// `exec list --format text`: one row per job, the command cut to fit.
fn print_jobs(jobs: &[JobStatus]) -> Result<()> {
    let now = std::time::SystemTime::now();
    let header = ["ID", "NAME", "STATE", "EXIT", "AGE", "CMD"];
    let mut rows = vec![header.map(String::from).to_vec()];
    for j in jobs {
        let exit = match (j.exit_code, j.signal) {
            (Some(code), _) => code.to_string(),
            (None, Some(sig)) => format!("sig {sig}"),
            (None, None) => "-".into(),
        };
        let started = j.started_at.as_deref().unwrap_or(&j.created_at);
        rows.push(vec![
            j.exec_id.to_string(),
            j.name.clone().unwrap_or_else(|| "-".into()),
            j.state.as_str().to_string(),
            exit,
            output::age(started, now),
            output::truncate(&j.cmd.replace('\n', " "), 50),
        ]);
    }
    emit_raw(false, output::columns(&rows).as_bytes())
}

fn start_request(args: &StartArgs) -> Result<ExecStartRequest> {
    let cmd = match (&args.cmd, args.argv.is_empty()) {
        (Some(_), false) => return Err(usage("give --cmd or an argv after --, not both")),
        (Some(c), true) => Some(CommandSpec::Shell(c.clone())),
        (None, false) => Some(CommandSpec::Argv(args.argv.clone())),
        (None, true) => None,
    };
    let script = match &args.script {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| usage(format!("reading --script {}: {e}", path.display())))?,
        ),
        None => None,
    };
    if cmd.is_none() && script.is_none() {
        return Err(usage("what to run: --cmd 'CMD', --script FILE, or -- ARGV..."));
    }
    Ok(ExecStartRequest {
        cmd,
        script,
        shell: args.shell.clone(),
        cwd: args.cwd.clone(),
        env: args.env.iter().cloned().collect::<BTreeMap<_, _>>(),
        name: args.name.clone(),
        labels: args.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        // None: client::start makes one, so a retried start never runs twice.
        idempotency_key: args.idempotency_key.clone(),
        project: args.project.clone(),
        git_ref: args.git_ref.clone(),
        resources: args.resources.resources().map(Box::new),
    })
}

/// The exit code for a job that ended `job`.
fn job_exit_code(job: &JobStatus) -> u8 {
    match (job.state, job.exit_code, job.signal) {
        (JobState::StartFailed, _, _) => exit::REMOTE,
        (_, Some(code), _) => (code & 0xff) as u8,
        (_, None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        (JobState::Succeeded, None, None) => exit::OK,
        _ => exit::JOB_FAILED,
    }
}

/// The machine a start goes to, with the agent forwarded when `--forward-agent` asks.
fn start_machine(ctx: &Ctx, args: &StartArgs) -> Result<Machine> {
    let m = ctx.machine(args.machine.machine.as_deref())?;
    Ok(if args.forward_agent { m.forwarding_agent() } else { m })
}

fn start(ctx: &Ctx, args: StartArgs) -> Result<u8> {
    let m = start_machine(ctx, &args)?;
    let req = start_request(&args)?;
    let answer = client::start(&m, req)?;
    original_fields::emit_on_with(&m, &answer, original_fields::base_url(&m))?;
    if answer.job.state == JobState::StartFailed {
        let message = answer.job.error.clone().unwrap_or_else(|| "the job could not start".into());
        crate::error::stderr_line(&format!("codex-remote: start_failed: {message}"));
        return Ok(exit::REMOTE);
    }
    Ok(exit::OK)
}

/// A `--since`/`--until` time, as given, once it is known to be one.
fn checked_time(text: String, flag: &str) -> Result<String> {
    parse_log_time(&text, std::time::SystemTime::now())
        .map_err(|e| usage(format!("{flag}: {e}")))?;
    Ok(text)
}

fn logs(ctx: &Ctx, args: LogsArgs) -> Result<u8> {
    let m = ctx.machine(args.machine.machine.as_deref())?;
    let stream = args
        .stream
        .unwrap_or(if args.follow { StreamArg::Both } else { StreamArg::Stdout })
        .selection();
    if args.since_stderr.is_some() && stream != StreamSel::Both {
        return Err(usage("--since-stderr goes with --stream both"));
    }
    // A bare number is the byte offset of old scripts; anything else a time, read by codexd
    // on its own clock (checked here first, for a usage error without a round trip).
    let (offset, since_time) = match args.since {
        Some(text) => match text.parse::<u64>() {
            Ok(offset) => (Some(offset), None),
            Err(_) => (None, Some(checked_time(text, "--since")?)),
        },
        None => (args.offset, None),
    };
    let until_time = args.until.map(|t| checked_time(t, "--until")).transpose()?;
    let since = StreamOffsets::from_since(stream, offset, args.since_stderr);
    let view = match args.view {
        ViewArg::Raw => LogView::Raw,
        ViewArg::Terminal => LogView::Terminal,
    };
    // Text is the job's own bytes, as --raw (the terminal view's lines as text).
    let raw = args.raw || (output::text() && view == LogView::Raw);
    let mut req = LogsRequest {
        exec_id: args.job.resolve(&m)?,
        stream,
        tail: args.tail,
        tail_lines: args.tail_lines,
        since,
        follow: args.follow,
        raw,
        max_bytes: args.max_bytes,
        since_time,
        until_time,
        view,
    };
    loop {
        let end = read_logs(&m, &req, None)?;
        // Without an explicit --max-bytes, page through to the end of the log.
        if end.more && args.max_bytes.is_none() {
            req.since = Some(end.next_offset);
            req.tail = None;
            req.tail_lines = None;
            continue;
        }
        if !raw && !output::text() {
            emit_on(&m, &Response::LogsEnd(end))?;
        }
        return Ok(exit::OK);
    }
}

/// Runs one `exec_logs` call, printing each line as it arrives. With `offsets`, lines at or
/// before the offsets already seen are skipped and the offsets are updated.
fn read_logs(
    m: &Machine,
    req: &LogsRequest,
    offsets: Option<&mut StreamOffsets>,
) -> Result<LogsEnd> {
    let mut seen = offsets;
    let mut on_line = |r: Response| -> Result<()> {
        match r {
            Response::Log(line) => {
                if let Some(seen) = seen.as_deref_mut() {
                    // Resuming after a dropped connection repeats the last line: skip it.
                    if seen.get(line.stream).is_some_and(|o| line.offset <= o) {
                        return Ok(());
                    }
                    seen.set(line.stream, line.offset);
                }
                if output::text() {
                    // The terminal view as text: the lines themselves.
                    let text = format!("{}\n", line.line);
                    emit_raw(line.stream == Stream::Stderr, text.as_bytes())?;
                } else {
                    emit(&RunEvent::Log(&line))?;
                }
            }
            Response::Chunk(chunk) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(chunk.data_b64.as_bytes())
                    .map_err(|e| Error::new(ErrorCode::ProtocolError, format!("bad chunk: {e}")))?;
                let mut skip = 0;
                if let Some(seen) = seen.as_deref_mut() {
                    // For bytes, `seen` is the end of what was printed: resuming starts there.
                    let printed = seen.get(chunk.stream).unwrap_or(0);
                    skip = printed.saturating_sub(chunk.offset).min(bytes.len() as u64) as usize;
                    seen.set(chunk.stream, printed.max(chunk.offset + bytes.len() as u64));
                }
                emit_raw(chunk.stream == Stream::Stderr, &bytes[skip..])?;
            }
            _ => {}
        }
        Ok(())
    };
    client::logs(m, req, &mut on_line)
}

/// `exec run`: start, follow both streams as NDJSON, exit with the job's code. Ctrl-C cancels
/// the job (as `srun` and `docker run` do), or detaches with `--detach-on-interrupt`.
fn run_job(ctx: &Ctx, run: RunArgs) -> Result<u8> {
    let args = run.start;
    // The start and the follow share one session (one ssh session, not two).
    crate::remote::mux::enable();
    let m = start_machine(ctx, &args)?;
    let req = start_request(&args)?;
    let started = client::start(&m, req)?;
    // From here on Ctrl-C cancels (or detaches); before, it simply stops us (the start
    // completes remotely).
    let detached = Arc::new(AtomicBool::new(false));
    watch_interrupts(&detached)?;
    // Text is the job's own bytes: no events on stdout.
    let events = !output::text();
    if events {
        emit(&RunEvent::Started(OnMachine { value: &started, machine: &m.name }))?;
    }
    let job = if started.job.state == JobState::StartFailed {
        if !events {
            let message = started.job.error.as_deref().unwrap_or("the job could not start");
            crate::error::stderr_line(&format!("codex-remote: start_failed: {message}"));
        }
        started.job
    } else {
        output::note(&format!(
            "started {} on {}, waiting for output…",
            started.job.exec_id, m.name
        ));
        let from = StreamOffsets::default().or_start(StreamSel::Both);
        let id = ExecId::parse(&started.job.exec_id)?;
        match follow_to_end(&m, &id, StreamSel::Both, Start::At(from), &detached, None)? {
            Some(job) => job,
            None if run.detach_on_interrupt => {
                report_detached(&m, &id)?;
                return Ok(exit::DETACHED);
            }
            None => match cancel_interrupted(&m, &id)? {
                Some(job) => job,
                None => return Ok(exit::DETACHED),
            },
        }
    };
    if events {
        emit(&RunEvent::Finished(OnMachine { value: &job, machine: &m.name }))?;
    }
    Ok(job_exit_code(&job))
}

/// `exec watch`: the original tool's attach: output as NDJSON `log` lines until the job ends,
/// then a `summary` line; exits with the job's code.
fn watch(ctx: &Ctx, args: WatchArgs) -> Result<u8> {
    let m = ctx.machine(args.machine.machine.as_deref())?;
    let detached = Arc::new(AtomicBool::new(false));
    watch_interrupts(&detached)?;
    let start =
        if args.full { Start::At(StreamOffsets::default()) } else { Start::Tail(args.tail) };
    let stream = args.stream.selection();
    let id = args.job.resolve(&m)?;
    let Some(job) = follow_to_end(&m, &id, stream, start, &detached, Some(args.poll))? else {
        report_detached(&m, &id)?;
        return Ok(exit::DETACHED);
    };
    if !output::text() {
        emit(&RunEvent::Summary(OnMachine { value: Summary::of(&job), machine: &m.name }))?;
    }
    Ok(job_exit_code(&job))
}

/// `exec doctor`: the transport and codexd checked from here, the rest by codexd there.
fn doctor(ctx: &Ctx, args: DoctorArgs) -> Result<u8> {
    let m = ctx.machine(args.machine.machine.as_deref())?;
    let check = |name: &str, ok: bool, detail: String, hint: Option<String>| DoctorCheck {
        name: name.into(),
        ok,
        required: true,
        detail,
        hint: if ok { None } else { hint },
    };
    let mut checks = Vec::new();
    let started = std::time::Instant::now();
    let door = m.route.door();
    let remote = client::hello(&m).and_then(|hello| {
        let elapsed = started.elapsed().as_millis();
        checks.push(check(door, true, format!("{} answered in {elapsed} ms", m.name), None));
        let same = hello.protocol == crate::protocol::PROTOCOL_VERSION;
        let detail = format!(
            "codexd {} (protocol {}) as {} on {}; this codex-remote is {}",
            hello.version,
            hello.protocol,
            hello.user,
            hello.host,
            crate::version::VERSION
        );
        let hint = Some(format!("codex-remote machine up --machine {}", m.name));
        checks.push(check("codexd", same, detail, hint));
        // `local` in-process: the handlers are this binary's; the worker is codexd's.
        #[cfg(target_os = "linux")]
        if let crate::remote::transport::Route::Local { codexd, in_process: true, .. } = &m.route {
            let (ok, detail) = crate::remote::in_process::worker_check(codexd);
            let hint = "install codexd from the same release as codex-remote, next to it";
            checks.push(check("worker", ok, detail, Some(hint.into())));
        }
        let timeout_ms = Some(args.timeout.as_millis() as u64);
        match m.call(
            &Request::Doctor(DoctorRequest { timeout_ms, ..DoctorRequest::default() }),
            &mut |_| Ok(()),
        )? {
            Response::Doctor(report) => Ok(report),
            other => Err(client::unexpected(&other)),
        }
    });
    match remote {
        Ok(report) => checks.extend(report.checks),
        Err(e) => {
            let name = if checks.is_empty() { door } else { "codexd" };
            let hint =
                e.hint.clone().or(Some(format!("codex-remote machine check --machine {}", m.name)));
            checks.push(check(name, false, format!("{}: {}", e.code, e.message), hint));
        }
    }
    let report = DoctorReport { ok: checks.iter().all(|c| c.ok || !c.required), checks };
    if output::table(args.json) {
        print_doctor(&m.name, &report);
    } else {
        original_fields::emit_on_with(&m, &report, original_fields::doctor(&report))?;
    }
    Ok(if report.ok { exit::OK } else { exit::JOB_FAILED })
}

fn print_doctor(machine: &str, report: &DoctorReport) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{machine}: {}", if report.ok { "ok" } else { "NOT OK" });
    for c in &report.checks {
        let mark = match (c.ok, c.required) {
            (true, _) => "ok  ",
            (false, true) => "FAIL",
            (false, false) => "-   ",
        };
        let _ = writeln!(out, "  {mark} {:<11} {}", c.name, c.detail);
        if let Some(hint) = &c.hint {
            let _ = writeln!(out, "       {:<11} hint: {hint}", "");
        }
    }
}

/// Where following starts.
enum Start {
    /// At these offsets (`None` per stream: 0).
    At(StreamOffsets),
    /// At the last BYTES bytes of each stream.
    Tail(u64),
}

/// Prints the job's output as `log` lines until it has ended and returns its final status;
/// `None` on Ctrl-C (the caller cancels or reports the detach). A dropped connection (laptop
/// asleep, network gone) follows again from the last line seen, without repeating it.
fn follow_to_end(
    m: &Machine,
    id: &ExecId,
    stream: StreamSel,
    start: Start,
    detached: &AtomicBool,
    pause: Option<std::time::Duration>,
) -> Result<Option<JobStatus>> {
    let mut seen = StreamOffsets::default();
    let mut failures = 0;
    loop {
        let resumed = seen != StreamOffsets::default();
        let (since, tail) = match &start {
            Start::Tail(bytes) if !resumed => (None, Some(*bytes)),
            Start::At(from) if !resumed => (Some(*from), None),
            _ => (Some(seen), None),
        };
        let since = since.map(|s| s.or_start(StreamSel::Both));
        let req = LogsRequest {
            exec_id: id.clone(),
            stream,
            tail,
            tail_lines: None,
            since,
            follow: true,
            raw: output::text(),
            max_bytes: None,
            since_time: None,
            until_time: None,
            view: LogView::Raw,
        };
        let result = read_logs(m, &req, Some(&mut seen));
        if detached.load(Ordering::SeqCst) {
            return Ok(None);
        }
        match result {
            Ok(end) => return Ok(Some(end.job)),
            Err(e)
                if matches!(
                    e.code,
                    ErrorCode::SshFailed | ErrorCode::ConnectFailed | ErrorCode::ProtocolError
                ) && failures < 5 =>
            {
                failures += 1;
                crate::error::stderr_line(&format!(
                    "codex-remote: {e}; following again ({failures}/5)"
                ));
                std::thread::sleep(pause.unwrap_or(std::time::Duration::from_secs(failures)));
            }
            Err(e) => return Err(e),
        }
    }
}

/// On Ctrl-C (SIGINT) or SIGTERM: sets `flag` (detached) and ends the transport child whose pid
/// is in [`CURRENT_CHILD`](crate::remote::pipe::CURRENT_CHILD) (0: none), so that a blocked read
/// returns (a request answered in this process sees [`crate::remote::pipe::INTERRUPTED`]). On
/// Windows the console delivers Ctrl-C to `ssh.exe` itself, so only the flag is set.
fn watch_interrupts(flag: &Arc<AtomicBool>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let fail = |e| Error::internal("installing signal handlers", e);
    #[cfg(unix)]
    {
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(fail)?;
        let flag = flag.clone();
        std::thread::spawn(move || {
            for _ in signals.forever() {
                flag.store(true, Ordering::SeqCst);
                crate::remote::pipe::INTERRUPTED.store(true, Ordering::SeqCst);
                let pid = crate::remote::pipe::CURRENT_CHILD.load(Ordering::SeqCst);
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
            }
        });
    }
    #[cfg(not(unix))]
    {
        for sig in [SIGINT, SIGTERM] {
            signal_hook::flag::register(sig, flag.clone()).map_err(fail)?;
        }
    }
    Ok(())
}

/// Prints the `detached` line and how to reattach: the job goes on.
fn report_detached(m: &Machine, id: &ExecId) -> Result<()> {
    let hint =
        format!("codex-remote exec logs --machine {} --id {id} --stream both --follow", m.name);
    if !output::text() {
        emit(&RunEvent::Detached { exec_id: id, machine: &m.name, hint: &hint })?;
    }
    crate::error::stderr_line(&format!(
        "codex-remote: detached; the job goes on. Reattach with:\n  {hint}"
    ));
    Ok(())
}

/// Ctrl-C on `exec run`: the normal cancel request (TERM, the grace, KILL) and the job's final
/// status once it has ended; `None` when a second Ctrl-C left before that (the job is left to
/// the cancel, a `detached` line says so).
fn cancel_interrupted(m: &Machine, id: &ExecId) -> Result<Option<JobStatus>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    crate::error::stderr_line(&format!(
        "codex-remote: interrupted: cancelling {id} (Ctrl-C again to leave at once)"
    ));
    let again = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, again.clone())
            .map_err(|e| Error::internal("installing signal handlers", e))?;
    }
    // The first Ctrl-C ended the follow's session and marked in-process calls interrupted.
    crate::remote::pipe::INTERRUPTED.store(false, Ordering::SeqCst);
    crate::remote::mux::close(&m.name);
    let (tx, rx) = std::sync::mpsc::channel();
    let (machine, exec_id) = (m.clone(), id.clone());
    std::thread::spawn(move || {
        let req = Request::ExecCancel(CancelRequest { exec_id, grace_ms: None });
        let _ = tx.send(client::status(&machine, req));
    });
    loop {
        let answer = rx.recv_timeout(std::time::Duration::from_millis(50));
        // A second Ctrl-C also cuts the cancel call short: whatever it answered, we leave.
        if again.load(Ordering::SeqCst) {
            report_detached(m, id)?;
            return Ok(None);
        }
        match answer {
            Ok(answer) => return answer.map(|a| Some(a.job)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::internal("cancel", "the cancel call ended without an answer"));
            }
        }
    }
}
