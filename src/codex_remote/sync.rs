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

use super::exec::MachineArg;
use super::{Ctx, emit, output, usage};
use crate::error::{Error, ErrorCode, Result, exit};
use crate::protocol::{
    Direction, Entry, FileKind, FileStat, Frame, PathRequest, Request, Response, Skipped,
    SyncApplyRequest, SyncDiff, SyncDiffRequest, SyncSendRequest, TransferStats, TreeFilter,
    capability,
};
use crate::remote::client::unexpected;
use crate::remote::transport::{Machine, Session};
use crate::tree::apply::Applier;
use crate::tree::frames::{Sent, read_frame, send_entry, write_frame};
use crate::tree::manifest::{Manifest, entry_of, hash_file, walk, walk_source};
use crate::tree::rel_path;

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

/// What a push's local `--src` is: `None` for a directory, its metadata for a file (rsync copies
/// a single file); anything else is refused.
fn local_source(src: &str) -> Result<Option<std::fs::Metadata>> {
    match std::fs::metadata(src) {
        Ok(meta) if meta.is_dir() => Ok(None),
        Ok(meta) if meta.is_file() => Ok(Some(meta)),
        Ok(_) => Err(usage(format!(
            "--src {src} is a socket, fifo or device: sync takes a directory or a file"
        ))),
        Err(e) => Err(usage(format!("--src {src}: {e}"))),
    }
}

/// A pull's local tree must be a directory (or missing: it is created).
fn check_local_tree(tree: &str, dst: &str) -> Result<()> {
    match std::fs::metadata(tree) {
        Ok(meta) if !meta.is_dir() => Err(usage(format!("--dst {dst} is not a directory"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(usage(format!("--dst {dst}: a parent is not a directory")))
        }
        _ => Ok(()),
    }
}

fn skipped_source(skip: Skipped) -> Error {
    usage(format!("--src {}: {}", skip.path, skip.reason))
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

/// Whether a path ends in `/` (or names `.`, `..` or `~`): rsync reads it as a directory's
/// contents.
fn names_contents(path: &str) -> bool {
    matches!(last_name(path), "" | "." | ".." | "~")
}

fn last_name(path: &str) -> &str {
    let separator = |c: char| c == '/' || (cfg!(windows) && c == '\\');
    path.rsplit(separator).next().unwrap_or_default()
}

/// rsync's path rule: the directory that becomes the same as `src`. A `src` ending in `/` (or
/// naming `.`, `..` or `~`) means its contents, which go into `dst` itself; any other `src` is
/// the directory itself, which goes into `dst/<its name>`.
pub fn landing(src: &str, dst: &str) -> String {
    if names_contents(src) {
        return dst.to_string();
    }
    let name = last_name(src);
    let parent = dst.trim_end_matches(|c: char| c == '/' || (cfg!(windows) && c == '\\'));
    if parent.is_empty() && dst.is_empty() {
        return name.to_string();
    }
    format!("{parent}/{name}")
}

/// rsync's rule for a single file: into `dst` when it ends in `/` or is a directory, else
/// `dst` is the file's new name. The directory and the name there; `here` stands for an
/// empty directory (`~` on the machine, `.` locally).
fn file_landing(src: &str, dst: &str, dst_is_dir: bool, here: &str) -> (String, String) {
    if dst_is_dir || names_contents(dst) {
        let dir = if dst.is_empty() { here } else { dst };
        return (dir.to_string(), last_name(src).to_string());
    }
    split_path(dst, here)
}

/// A file's path as its directory (`here` if it has none) and its name.
fn split_path(path: &str, here: &str) -> (String, String) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/".to_string(), name.to_string()),
        Some((dir, name)) => (dir.to_string(), name.to_string()),
        None => (here.to_string(), path.to_string()),
    }
}

/// Where a sync reads and writes. For a single file, `one` names it in each root (`--dst
/// d/b.txt` renames it); manifest and frame paths carry its name on the machine.
struct Roots {
    local: PathBuf,
    remote: String,
    one: Option<OneFile>,
}

struct OneFile {
    local: String,
    remote: String,
}

impl Roots {
    /// A single file `src` synced to `dst` by rsync's rule.
    fn one_file(direction: Direction, src: &str, dst: &str, dst_is_dir: bool) -> Roots {
        // A path without a directory is under the home on the machine, the current one here.
        let (src_here, dst_here) = match direction {
            Direction::Push => (".", "~"),
            Direction::Pull => ("~", "."),
        };
        let (src_dir, src_name) = split_path(src, src_here);
        let (dst_dir, dst_name) = file_landing(src, dst, dst_is_dir, dst_here);
        let (local, remote, one) = match direction {
            Direction::Push => (src_dir, dst_dir, OneFile { local: src_name, remote: dst_name }),
            Direction::Pull => (dst_dir, src_dir, OneFile { local: dst_name, remote: src_name }),
        };
        Roots { local: PathBuf::from(local), remote, one: Some(one) }
    }

    fn remote_name(&self) -> String {
        self.one.as_ref().map(|one| one.remote.clone()).unwrap_or_default()
    }

    fn local_file(&self) -> PathBuf {
        self.local.join(self.one.as_ref().map(|one| one.local.as_str()).unwrap_or_default())
    }

    /// The local file of a manifest path.
    fn local_path(&self, path: &str) -> Result<PathBuf> {
        match &self.one {
            Some(one) if one.remote == path => Ok(self.local.join(&one.local)),
            _ => Ok(self.local.join(rel_path(path)?)),
        }
    }

    /// A frame from the machine, named as the local file.
    fn local_frame(&self, frame: Frame) -> Frame {
        let Some(one) = &self.one else { return frame };
        let local = |path: String| if path == one.remote { one.local.clone() } else { path };
        match frame {
            Frame::File { path, size, mode, mtime_ns } => {
                Frame::File { path: local(path), size, mode, mtime_ns }
            }
            Frame::Symlink { path, target } => Frame::Symlink { path: local(path), target },
            Frame::Meta { path, mode, mtime_ns } => {
                Frame::Meta { path: local(path), mode, mtime_ns }
            }
            other => other,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::{Direction, Roots, file_landing, landing};

    #[test]
    fn a_single_file_lands_as_rsync_lands_it() {
        let at = |dst, is_dir| file_landing("src/a.txt", dst, is_dir, "~");
        let pair = |d: &str, n: &str| (d.to_string(), n.to_string());
        assert_eq!(at("d/", false), pair("d/", "a.txt"));
        assert_eq!(at("d", true), pair("d", "a.txt"));
        assert_eq!(at("d/b.txt", false), pair("d", "b.txt"));
        assert_eq!(at("b.txt", false), pair("~", "b.txt"));
        assert_eq!(at("/b.txt", false), pair("/", "b.txt"));
        assert_eq!(at("~", false), pair("~", "a.txt"));
        assert_eq!(at(".", false), pair(".", "a.txt"));
        assert_eq!(at("", false), pair("~", "a.txt"));
        // A pull: the file's directory on the machine, its new name here.
        let roots = Roots::one_file(Direction::Pull, "r.txt", "out/x.txt", false);
        let one = roots.one.as_ref().unwrap();
        assert_eq!((roots.local.to_str(), roots.remote.as_str()), (Some("out"), "~"));
        assert_eq!((one.local.as_str(), one.remote.as_str()), ("x.txt", "r.txt"));
        let roots = Roots::one_file(Direction::Push, "a.txt", "d/", false);
        let one = roots.one.as_ref().unwrap();
        assert_eq!((roots.local.to_str(), roots.remote.as_str()), (Some("."), "d/"));
        assert_eq!((one.local.as_str(), one.remote.as_str()), ("a.txt", "a.txt"));
    }

    #[test]
    fn a_trailing_slash_means_the_contents_as_rsync_has_it() {
        assert_eq!(landing("tree/", "out"), "out");
        assert_eq!(landing("tree", "out"), "out/tree");
        assert_eq!(landing("a/tree", "out/"), "out/tree");
        assert_eq!(landing(".", "out"), "out");
        assert_eq!(landing("./", "out"), "out");
        assert_eq!(landing("a/.", "out"), "out");
        assert_eq!(landing("~", "out"), "out");
        assert_eq!(landing("~/proj", "~/x"), "~/x/proj");
        assert_eq!(landing("tree", "/"), "/tree");
        assert_eq!(landing("tree", ""), "tree");
    }
}
