//! `codex-remote sync push|pull`: make a tree on the machine the same as a local one (push), or
//! the other way (pull), incrementally, through codexd in one session (no rsync needed).
//!
//! Both sides walk their tree ([`crate::tree::manifest`]); codexd compares ([`crate::tree::diff`]);
//! files of the same size whose mtime differs are hashed on both sides; then only what differs
//! travels, as a frame stream, each file replaced atomically. A file that changes while it is
//! read is sent once more at the end of the stream, then reported in `changed`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use clap_complete::engine::ArgValueCompleter;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

mod paths;

use super::exec::MachineArg;
use super::{Ctx, emit, output};
use crate::error::{Error, ErrorCode, Result, exit};
use crate::protocol::{
    Direction, Entry, FileKind, FileStat, Frame, PathRequest, Request, Response, Skipped,
    SyncApplyRequest, SyncDiff, SyncDiffRequest, SyncSendRequest, TransferStats, TreeFilter,
    capability,
};
use crate::remote::client::unexpected;
use crate::remote::machine::Machine;
use crate::remote::transport::Session;
use crate::tree::apply::Applier;
use crate::tree::frames::{Sent, read_frame, send_entry, write_frame};
use crate::tree::manifest::{Manifest, entry_of, hash_file, walk, walk_source};
pub use paths::landing;
use paths::{Roots, check_local_tree, local_source, names_contents, skipped_source};

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Make --dst on the machine the same as the local --src directory.
    #[command(after_help = "Examples:
  codex-remote sync push -m gpu1 --src . --dst '~/proj' --exclude data/ --delete
  codex-remote sync push -m gpu1 --src . --dst '~/proj' --dry-run")]
    Push(SyncArgs),
    /// Make the local --dst directory the same as --src on the machine.
    #[command(after_help = "Examples:
  codex-remote sync pull -m gpu1 --src '~/proj/results/' --dst results")]
    Pull(SyncArgs),
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    machine: MachineArg,
    /// The source directory (local for push; on the machine for pull, `~` is the remote home).
    /// rsync's rule: `dir/` (a trailing slash) or `.` syncs its contents into --dst; `dir`
    /// syncs the directory itself into `--dst/dir`.
    #[arg(long, add = ArgValueCompleter::new(super::completions::sync_src))]
    src: String,
    /// The destination directory (on the machine for push; local for pull). Created if missing.
    #[arg(long, add = ArgValueCompleter::new(super::completions::sync_dst))]
    dst: String,
    /// Leave out paths matching this glob (gitignore syntax; repeatable). Excluded paths on
    /// the destination are never deleted.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Delete destination paths the source does not have (nothing is removed without it).
    #[arg(long)]
    delete: bool,
    /// Print what would be sent and deleted; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Sync `.git/` too (left out by default).
    #[arg(long)]
    include_git: bool,
    /// Ignore `.gitignore` files (they are honoured by default).
    #[arg(long)]
    no_gitignore: bool,
    /// Keep setuid, setgid and sticky bits on the destination (cleared by default).
    #[arg(long)]
    keep_special_bits: bool,
    /// Accepted for the original tool's scripts: every sync goes through codexd here.
    #[arg(long, hide = true)]
    via_daemon: bool,
}

/// What a sync is asked to do.
#[derive(Debug, Clone)]
pub struct SyncPlan {
    pub direction: Direction,
    pub src: String,
    pub dst: String,
    pub filter: TreeFilter,
    /// Keep setuid, setgid and sticky bits (cleared by default).
    pub keep_special_bits: bool,
    pub delete: bool,
    pub dry_run: bool,
}

/// The summary line of a sync.
#[derive(Debug, Default, Serialize)]
pub struct SyncSummary {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub direction: &'static str,
    pub src: String,
    pub dst: String,
    pub files_sent: u64,
    pub bytes_sent: u64,
    pub deleted: u64,
    pub unchanged: u64,
    /// Files whose content was the same but whose mode or mtime was set.
    pub meta: u64,
    pub elapsed_ms: u64,
    pub dry_run: bool,
    /// Files that changed while they were read, twice: left as they were.
    pub changed: Vec<String>,
    /// Paths left out (not UTF-8, sockets, devices, unwritable), with the reason.
    pub skipped: Vec<Skipped>,
    /// Paths the source's walk left out by the `.git/` and `.gitignore` rules (an ignored
    /// directory counts once), and the first few of them; `--include-git --no-gitignore` copy
    /// them too.
    pub ignored: u64,
    pub ignored_sample: Vec<String>,
    /// With --dry-run: what would be sent and deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_send: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_delete: Option<Vec<String>>,
}

pub fn run(ctx: &Ctx, cmd: SyncCommand) -> Result<u8> {
    let (direction, args) = match cmd {
        SyncCommand::Push(a) => (Direction::Push, a),
        SyncCommand::Pull(a) => (Direction::Pull, a),
    };
    let m = ctx.machine(args.machine.machine.as_deref())?;
    let plan = SyncPlan {
        direction,
        src: args.src,
        dst: args.dst,
        filter: TreeFilter {
            exclude: args.exclude,
            include_git: args.include_git,
            no_gitignore: args.no_gitignore,
            only: None,
        },
        keep_special_bits: args.keep_special_bits,
        delete: args.delete,
        dry_run: args.dry_run,
    };
    let mut progress = Progress::new(&m.name);
    let summary = sync(&m, &plan, &mut progress)?;
    progress.done();
    if summary.ignored > 0 && output::text() {
        eprintln!("{}", ignored_note(&summary, "--include-git --no-gitignore"));
    }
    let original = super::original_fields::sync(plan.delete, &plan.filter.exclude);
    super::original_fields::emit_on_with(&m, &summary, original)?;
    Ok(if summary.changed.is_empty() { exit::OK } else { exit::JOB_FAILED })
}

/// Runs a sync, telling `progress` about each file sent.
pub fn sync(m: &Machine, plan: &SyncPlan, progress: &mut dyn Tick) -> Result<SyncSummary> {
    let started = Instant::now();
    let local_file = match plan.direction {
        Direction::Push => local_source(&plan.src)?,
        Direction::Pull => None,
    };
    let tree = landing(&plan.src, &plan.dst);
    // The session (ssh, codexd's start, hello, a stat where rsync's rule needs one) opens
    // while the local tree is walked.
    let (local, opened) = std::thread::scope(|scope| {
        let opening = scope.spawn(|| open(m, plan, local_file.is_some()));
        let local = match (plan.direction, &local_file) {
            (_, Some(_)) => Ok(Manifest::default()),
            (Direction::Push, None) => walk_source(Path::new(&plan.src), &plan.filter),
            (Direction::Pull, None) => walk(Path::new(&tree), &plan.filter),
        };
        let opened = opening.join().unwrap_or_else(|_| Err(Error::internal("ssh", "panicked")));
        (local, opened)
    });
    let (mut session, remote_stat) = opened?;
    let mut local = local?;
    let remote_file = remote_stat.as_ref().filter(|s| s.kind == Some(FileKind::File));
    let roots = match (plan.direction, &local_file, remote_file) {
        (Direction::Push, Some(meta), _) => {
            let dst_is_dir = remote_stat.is_some_and(|s| s.kind == Some(FileKind::Dir));
            let roots = Roots::one_file(plan.direction, &plan.src, &plan.dst, dst_is_dir);
            let (name, abs) = (roots.remote_name(), roots.local_file());
            local.entries = vec![entry_of(name, &abs, meta).map_err(skipped_source)?];
            roots
        }
        (Direction::Pull, _, Some(_)) => {
            let dst_is_dir = std::fs::metadata(&plan.dst).is_ok_and(|m| m.is_dir());
            let roots = Roots::one_file(plan.direction, &plan.src, &plan.dst, dst_is_dir);
            let (name, abs) = (roots.remote_name(), roots.local_file());
            local = Manifest::default();
            if let Ok(meta) = std::fs::symlink_metadata(&abs) {
                local.entries.extend(entry_of(name, &abs, &meta).ok());
            }
            roots
        }
        (Direction::Push, _, _) => {
            Roots { local: PathBuf::from(&plan.src), remote: tree, one: None }
        }
        (Direction::Pull, _, _) => {
            check_local_tree(&tree, &plan.dst)?;
            Roots { local: PathBuf::from(tree), remote: plan.src.clone(), one: None }
        }
    };
    if plan.direction == Direction::Pull && !plan.dry_run {
        // What an interrupted pull into this tree left behind (no live writer holds it).
        crate::tree::at::sweep_temps(&local.temps);
    }
    let mut filter = plan.filter.clone();
    filter.only = roots.one.as_ref().map(|one| one.remote.clone());
    let req = SyncDiffRequest {
        root: roots.remote.clone(),
        direction: plan.direction,
        filter,
        // rsync deletes only inside a directory it syncs.
        delete: plan.delete && roots.one.is_none(),
        entries: local.entries.len() as u64,
    };
    let mut diff = match session.exchange(
        &Request::SyncDiff(req),
        &mut |w| {
            for e in &local.entries {
                serde_json::to_writer(&mut *w, e).map_err(|e| Error::internal("encoding", e))?;
                w.write_all(b"\n").map_err(|e| Error::io("sending the manifest", e))?;
            }
            Ok(())
        },
        &mut |_| Ok(()),
    )? {
        Response::SyncDiff(d) => d,
        other => return Err(unexpected(&other)),
    };
    if let Some(one) = &roots.one {
        // A codexd older than `only` walked the whole directory: its one file alone counts.
        let theirs = |e: &Entry| e.path == one.remote;
        diff.send.retain(theirs);
        diff.check.retain(theirs);
        diff.meta.retain(theirs);
        diff.delete.clear();
        (diff.ignored, diff.ignored_sample) = (0, Vec::new());
    }
    let mut summary = SyncSummary {
        kind: "sync",
        direction: match plan.direction {
            Direction::Push => "push",
            Direction::Pull => "pull",
        },
        src: plan.src.clone(),
        dst: plan.dst.clone(),
        dry_run: plan.dry_run,
        ..Default::default()
    };
    (summary.ignored, summary.ignored_sample) = match plan.direction {
        Direction::Push => (local.ignored, local.ignored_sample),
        Direction::Pull => (diff.ignored, std::mem::take(&mut diff.ignored_sample)),
    };
    summary.skipped = local.skipped;
    summary.skipped.extend(diff.skipped.iter().cloned());
    let work = Work::of(diff, &roots);
    summary.unchanged = work.unchanged;
    progress.total(&work.send);
    if plan.dry_run {
        summary.files_sent = work.send.iter().filter(|e| e.kind != FileKind::Dir).count() as u64;
        summary.bytes_sent = work.send.iter().map(|e| e.size).sum();
        summary.deleted = work.delete.len() as u64;
        summary.meta = work.meta.len() as u64;
        summary.would_send = Some(work.send.iter().map(|e| e.path.clone()).collect());
        summary.would_delete = Some(work.delete);
        session.close()?;
        summary.elapsed_ms = started.elapsed().as_millis() as u64;
        return Ok(summary);
    }
    let stats = match plan.direction {
        Direction::Push => push(&mut session, plan, &roots, &work, progress)?,
        Direction::Pull => pull(&mut session, plan, &roots, &work, progress)?,
    };
    session.close()?;
    summary.files_sent = stats.files + stats.links;
    summary.bytes_sent = stats.bytes;
    summary.deleted = stats.deleted;
    summary.meta = stats.meta;
    summary.changed = stats.changed;
    summary.skipped.extend(stats.skipped);
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

/// Opens the session and stats, in it, the remote path rsync's rule depends on: a pull's
/// `--src` (a file or a directory; missing is an error, as in rsync, never an empty tree that
/// `--delete` would mirror), the `--dst` of a single file's push unless a trailing `/` says it
/// is a directory.
fn open<'m>(
    m: &'m Machine,
    plan: &SyncPlan,
    local_file: bool,
) -> Result<(Session<'m>, Option<FileStat>)> {
    let mut session = m.session(capability::SYNC)?;
    let path = match plan.direction {
        Direction::Pull => &plan.src,
        Direction::Push if local_file && !names_contents(&plan.dst) => &plan.dst,
        Direction::Push => return Ok((session, None)),
    };
    let stat = match session.call(&Request::FileStat(PathRequest { path: path.clone() }))? {
        Response::FileStat(stat) => stat,
        other => return Err(unexpected(&other)),
    };
    if plan.direction == Direction::Pull && !stat.exists {
        let message = format!("--src {} does not exist on {}", plan.src, m.name);
        return Err(Error::new(ErrorCode::FileNotFound, message));
    }
    Ok((session, Some(stat)))
}

/// The one line on stderr that says what the walk left out and how to copy it too.
pub fn ignored_note(summary: &SyncSummary, flags: &str) -> String {
    let more = if summary.ignored > summary.ignored_sample.len() as u64 { ", ..." } else { "" };
    format!(
        "left out {} ignored path{} ({}{more}: .git/ and .gitignore rules); \
         {flags} copy everything",
        summary.ignored,
        if summary.ignored == 1 { "" } else { "s" },
        summary.ignored_sample.join(", "),
    )
}

/// What a diff leaves to do once the `check` files are hashed on this side.
struct Work {
    send: Vec<Entry>,
    meta: Vec<Entry>,
    delete: Vec<String>,
    unchanged: u64,
}

impl Work {
    fn of(diff: SyncDiff, roots: &Roots) -> Work {
        let SyncDiff { mut send, check, mut meta, delete, mut unchanged, .. } = diff;
        for e in check {
            let ours = roots.local_path(&e.path).ok().and_then(|p| hash_file(&p).ok());
            if ours.is_some() && ours == e.hash {
                unchanged += 1;
                meta.push(e);
            } else {
                send.push(e);
            }
        }
        // Parents before children, as the walk made them.
        send.sort_by(|a, b| a.path.cmp(&b.path));
        Work { send, meta, delete, unchanged }
    }
}

fn push(
    session: &mut Session,
    plan: &SyncPlan,
    roots: &Roots,
    work: &Work,
    progress: &mut dyn Tick,
) -> Result<TransferStats> {
    let mut changed_twice = Vec::new();
    let req = Request::SyncApply(SyncApplyRequest {
        root: roots.remote.clone(),
        keep_special_bits: plan.keep_special_bits,
    });
    let answer = session.exchange(
        &req,
        &mut |w| {
            let io = |e| Error::io("sending", e);
            for path in &work.delete {
                write_frame(w, &Frame::Delete { path: path.clone() }).map_err(io)?;
            }
            let mut again = Vec::new();
            for e in &work.send {
                match send_entry(w, e, &roots.local_path(&e.path)?)? {
                    Sent::Changed => again.push(e),
                    Sent::Done(bytes) => progress.sent(&e.path, bytes),
                    Sent::Vanished(_) => {}
                }
            }
            for e in again {
                match send_entry(w, e, &roots.local_path(&e.path)?)? {
                    Sent::Changed => changed_twice.push(e.path.clone()),
                    Sent::Done(bytes) => progress.sent(&e.path, bytes),
                    Sent::Vanished(_) => {}
                }
            }
            for e in &work.meta {
                let frame =
                    Frame::Meta { path: e.path.clone(), mode: e.mode, mtime_ns: e.mtime_ns };
                write_frame(w, &frame).map_err(io)?;
            }
            write_frame(w, &Frame::End).map_err(io)
        },
        &mut |_| Ok(()),
    )?;
    let Response::SyncApplied(mut stats) = answer else { return Err(unexpected(&answer)) };
    stats.changed = changed_twice;
    Ok(stats)
}

fn pull(
    session: &mut Session,
    plan: &SyncPlan,
    roots: &Roots,
    work: &Work,
    progress: &mut dyn Tick,
) -> Result<TransferStats> {
    let mut applier = Applier::new(&roots.local)?.keep_special_bits(plan.keep_special_bits);
    let none: &mut dyn std::io::BufRead = &mut &[][..];
    for path in &work.delete {
        applier.apply(Frame::Delete { path: path.clone() }, none)?;
    }
    let mut paths: Vec<&str> = work.send.iter().map(|e| e.path.as_str()).collect();
    for round in 0..2 {
        if paths.is_empty() {
            break;
        }
        let before = applier.stats.changed.len();
        let req = SyncSendRequest { root: roots.remote.clone(), paths: paths.len() as u64 };
        let answer = session.exchange(
            &Request::SyncSend(req),
            &mut |w| {
                for p in &paths {
                    serde_json::to_writer(&mut *w, p)
                        .map_err(|e| Error::internal("encoding", e))?;
                    w.write_all(b"\n").map_err(|e| Error::io("sending", e))?;
                }
                Ok(())
            },
            &mut |r| loop {
                match read_frame(r)? {
                    Frame::End => return Ok(()),
                    frame => {
                        let (path, size) = match &frame {
                            Frame::File { path, size, .. } => (path.clone(), *size),
                            other => (format!("{other:?}"), 0),
                        };
                        applier.apply(roots.local_frame(frame), r)?;
                        progress.sent(&path, size);
                    }
                }
            },
        )?;
        let Response::SyncSent(_) = answer else { return Err(unexpected(&answer)) };
        let changed: Vec<String> = applier.stats.changed.drain(before..).collect();
        if round == 0 {
            paths = work
                .send
                .iter()
                .map(|e| e.path.as_str())
                .filter(|p| changed.iter().any(|c| c == p))
                .collect();
        } else {
            applier.stats.changed.extend(changed);
        }
    }
    for e in &work.meta {
        let frame = Frame::Meta { path: e.path.clone(), mode: e.mode, mtime_ns: e.mtime_ns };
        applier.apply(roots.local_frame(frame), none)?;
    }
    Ok(applier.stats)
}

/// Told about the progress of a transfer.
pub trait Tick {
    fn total(&mut self, _send: &[Entry]) {}
    fn sent(&mut self, _path: &str, _bytes: u64) {}
}

/// No progress (the MCP tools).
pub struct Quiet;
impl Tick for Quiet {}

/// A bar on stderr when it is a terminal, and an NDJSON `progress` line on stdout each second
/// of a transfer that lasts more than one.
struct Progress<'a> {
    machine: &'a str,
    bar: ProgressBar,
    started: Instant,
    last: Instant,
    files: u64,
    bytes: u64,
    files_total: u64,
    bytes_total: u64,
}

#[derive(Serialize)]
struct ProgressLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    files_sent: u64,
    bytes_sent: u64,
    files_total: u64,
    bytes_total: u64,
    elapsed_ms: u64,
    machine: &'a str,
}

impl<'a> Progress<'a> {
    fn new(machine: &'a str) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let now = Instant::now();
        Progress {
            machine,
            bar,
            started: now,
            last: now,
            files: 0,
            bytes: 0,
            files_total: 0,
            bytes_total: 0,
        }
    }

    fn done(&self) {
        self.bar.finish_and_clear();
    }
}

impl Tick for Progress<'_> {
    fn total(&mut self, send: &[Entry]) {
        self.files_total = send.iter().filter(|e| e.kind != FileKind::Dir).count() as u64;
        self.bytes_total = send.iter().map(|e| e.size).sum();
        self.bar.set_length(self.bytes_total);
        // The transfer starts now: a progress line only after a second of it.
        self.started = Instant::now();
        self.last = self.started;
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
        {
            self.bar.set_style(style);
        }
    }

    fn sent(&mut self, path: &str, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
        self.bar.inc(bytes);
        self.bar.set_message(path.to_string());
        let now = Instant::now();
        // With --format text the bar is the progress (on a terminal); no lines on stdout.
        if now - self.last >= Duration::from_secs(1) && !output::text() {
            self.last = now;
            let _ = emit(&ProgressLine {
                kind: "progress",
                files_sent: self.files,
                bytes_sent: self.bytes,
                files_total: self.files_total,
                bytes_total: self.bytes_total,
                elapsed_ms: (now - self.started).as_millis() as u64,
                machine: self.machine,
            });
        }
    }
}
