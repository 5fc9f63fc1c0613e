//! The `sync_*` handlers, codexd's half of `codex-remote sync push|pull`: compare the client's
//! manifest with this side's tree (`sync_diff`), write a frame stream into a tree
//! (`sync_apply`), send the files a client asks for as a frame stream (`sync_send`). The bytes
//! come from and go to the door's stream ([`super::Sink`]), so memory stays the manifest's.

use std::io::{BufWriter, Write};

use super::Sink;
use super::files::resolve;
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::{
    Direction, Entry, Frame, Skipped, SyncApplyRequest, SyncDiff, SyncDiffRequest, SyncSendRequest,
    TransferStats,
};
use crate::tree::apply::Applier;
use crate::tree::frames::{Sent, send_entry, write_frame};
use crate::tree::manifest::{entry_of, hash_file, walk, walk_source};
use crate::tree::{diff, read_lines, real_parents, rel_path};

fn no_payload() -> Error {
    Error::new(ErrorCode::BadRequest, "this door carries no bytes after a request line")
}

pub fn sync_diff(req: &SyncDiffRequest, sink: &mut dyn Sink) -> Result<SyncDiff> {
    let root = resolve(&req.root)?;
    // This side's walk runs while the client's manifest arrives.
    let (theirs, ours) = std::thread::scope(|scope| {
        // In a pull this tree is the source: what its walk leaves out is counted.
        let walker = scope.spawn(|| match req.direction {
            Direction::Pull => walk_source(&root, &req.filter),
            Direction::Push => walk(&root, &req.filter),
        });
        let theirs = read_lines::<Entry>(sink.payload().ok_or_else(no_payload)?, req.entries);
        let ours = walker.join().unwrap_or_else(|_| Err(Error::internal("walk", "panicked")));
        Ok::<_, Error>((theirs?, ours?))
    })?;
    for e in &theirs {
        rel_path(&e.path)?;
    }
    if req.direction == Direction::Push {
        // What an interrupted sync into this tree left behind (no live writer holds it).
        crate::tree::at::sweep_temps(&ours.temps);
    }
    let (source, dest) = match req.direction {
        Direction::Push => (&theirs, &ours.entries),
        Direction::Pull => (&ours.entries, &theirs),
    };
    let mut answer = diff::diff(source, dest, req.delete);
    // The client hashes its side of each `check`; this side's hash goes with it.
    let mut unreadable = Vec::new();
    for e in &mut answer.check {
        match hash_file(&root.join(rel_path(&e.path)?)) {
            Ok(h) => e.hash = Some(h),
            Err(_) => unreadable.push(e.path.clone()),
        }
    }
    let (gone, kept): (Vec<_>, Vec<_>) =
        answer.check.into_iter().partition(|e| unreadable.contains(&e.path));
    answer.check = kept;
    answer.send.extend(gone);
    answer.skipped = ours.skipped;
    answer.ignored = ours.ignored;
    answer.ignored_sample = ours.ignored_sample;
    Ok(answer)
}

pub fn sync_apply(req: &SyncApplyRequest, sink: &mut dyn Sink) -> Result<TransferStats> {
    let root = resolve(&req.root)?;
    let mut applier = Applier::new(&root)?.keep_special_bits(req.keep_special_bits);
    applier.apply_stream(sink.payload().ok_or_else(no_payload)?)?;
    Ok(applier.stats)
}

pub fn sync_send(req: &SyncSendRequest, sink: &mut dyn Sink) -> Result<TransferStats> {
    let root = resolve(&req.root)?;
    let paths: Vec<String> = read_lines(sink.payload().ok_or_else(no_payload)?, req.paths)?;
    let rels = paths.iter().map(|p| rel_path(p)).collect::<Result<Vec<_>>>()?;
    let mut out = BufWriter::with_capacity(256 * 1024, sink.raw_out().ok_or_else(no_payload)?);
    let mut stats = TransferStats::default();
    for (path, rel) in paths.into_iter().zip(rels) {
        let abs = root.join(&rel);
        let entry = match std::fs::symlink_metadata(&abs) {
            Ok(meta) if real_parents(&root, &rel) => entry_of(path.clone(), &abs, &meta),
            Ok(_) => Err(Skipped { path: path.clone(), reason: "under a symlink".into() }),
            Err(e) => Err(Skipped { path: path.clone(), reason: e.to_string() }),
        };
        let entry = match entry {
            Ok(e) => e,
            Err(skip) => {
                stats.skipped.push(skip);
                continue;
            }
        };
        match send_entry(&mut out, &entry, &abs)? {
            Sent::Done(bytes) => {
                stats.files += 1;
                stats.bytes += bytes;
            }
            Sent::Changed => stats.changed.push(path),
            Sent::Vanished(reason) => stats.skipped.push(Skipped { path, reason }),
        }
    }
    write_frame(&mut out, &Frame::End).map_err(|e| Error::io("sending", e))?;
    out.flush().map_err(|e| Error::io("sending", e))?;
    Ok(stats)
}
