//! The frame stream of a bulk transfer ([`crate::protocol::files`]): one JSON line per frame,
//! a `file` frame followed by its bytes and a status byte. The sender reads each file once,
//! straight from the file to the stream, and says whether it changed while being read.

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::path::Path;

use crate::error::{Error, ErrorCode, Result};
use crate::protocol::files::{FRAME_CHANGED, FRAME_OK};
use crate::protocol::{Entry, FileKind, Frame, Response, ResponseLine};
use crate::tree::manifest::{mode_of, mtime_ns};
use crate::wire::{self, Line};

/// The longest frame line read (a path of a few KiB fits many times).
const MAX_FRAME_LINE: usize = 64 * 1024;

/// Writes one frame line (no flush: the stream is flushed when the request ends).
pub fn write_frame(w: &mut dyn Write, frame: &Frame) -> io::Result<()> {
    serde_json::to_writer(&mut *w, frame)?;
    w.write_all(b"\n")
}

/// `io::copy` with a 256 KiB buffer (its own is 8 KiB): fewer syscalls for big files.
pub fn copy_large(r: &mut dyn Read, w: &mut dyn io::Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Reads the next frame line.
pub fn read_frame(r: &mut dyn BufRead) -> Result<Frame> {
    let line = wire::read_line_capped(&mut ReadRef(r), MAX_FRAME_LINE)
        .map_err(|e| Error::io("reading the transfer", e))?;
    match line {
        Some(Line::Text(bytes)) => serde_json::from_slice(&bytes).map_err(|e| {
            // The peer answered an error instead of the frames it was asked for.
            match serde_json::from_slice::<crate::protocol::ResponseLine>(&bytes) {
                Ok(ResponseLine { response: Response::Error(body), .. }) => body.into(),
                _ => Error::new(ErrorCode::ProtocolError, format!("a bad frame: {e}")),
            }
        }),
        Some(Line::TooLong(n)) => {
            Err(Error::new(ErrorCode::ProtocolError, format!("a frame line of {n} bytes")))
        }
        None => Err(Error::new(ErrorCode::ProtocolError, "the transfer ended before its end")),
    }
}

/// `&mut dyn BufRead` as a sized `BufRead` (what [`wire::read_line_capped`] takes).
pub struct ReadRef<'a>(pub &'a mut dyn BufRead);

impl Read for ReadRef<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl BufRead for ReadRef<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.0.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        self.0.consume(n)
    }
}

/// What sending one path did.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// A file's bytes (its size), a symlink or a directory (0).
    Done(u64),
    /// The file changed while it was read: the receiver drops it.
    Changed,
    /// The path is gone or is no longer what the manifest said: nothing was sent.
    Vanished(String),
}

/// Sends the entry at `abs` as a frame: a file's bytes as they are now, never through a
/// symlink. `abs`'s parents must already be known to be real directories of the tree.
pub fn send_entry(w: &mut dyn Write, entry: &Entry, abs: &Path) -> Result<Sent> {
    let io_err = |e| Error::io(format!("sending {}", entry.path), e);
    let path = entry.path.clone();
    match entry.kind {
        FileKind::File => send_file(w, &path, abs),
        FileKind::Symlink => match std::fs::read_link(abs) {
            Ok(t) => {
                let target = t.to_string_lossy().into_owned();
                write_frame(w, &Frame::Symlink { path, target }).map_err(io_err)?;
                Ok(Sent::Done(0))
            }
            Err(e) => Ok(Sent::Vanished(e.to_string())),
        },
        FileKind::Dir => {
            write_frame(w, &Frame::Dir { path, mode: entry.mode }).map_err(io_err)?;
            Ok(Sent::Done(0))
        }
        FileKind::Other => Ok(Sent::Vanished("not a file, directory or symlink".into())),
    }
}

fn send_file(w: &mut dyn Write, path: &str, abs: &Path) -> Result<Sent> {
    let file = match open_no_follow(abs) {
        Ok(f) => f,
        Err(e) => return Ok(Sent::Vanished(e.to_string())),
    };
    let before = match file.metadata() {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Ok(Sent::Vanished("no longer a regular file".into())),
        Err(e) => return Ok(Sent::Vanished(e.to_string())),
    };
    let size = before.len();
    let io_err = |e| Error::io(format!("sending {path}"), e);
    let frame = Frame::File {
        path: path.to_string(),
        size,
        mode: mode_of(&before),
        mtime_ns: mtime_ns(&before),
    };
    write_frame(w, &frame).map_err(io_err)?;
    let copied = copy_large(&mut (&file).take(size), w).map_err(io_err)?;
    let mut changed = copied < size;
    if changed {
        // It shrank: the receiver still expects `size` bytes.
        io::copy(&mut io::repeat(0).take(size - copied), w).map_err(io_err)?;
    }
    let after = file.metadata().map_err(io_err)?;
    changed |= after.len() != size || mtime_ns(&after) != mtime_ns(&before);
    w.write_all(&[if changed { FRAME_CHANGED } else { FRAME_OK }]).map_err(io_err)?;
    Ok(if changed { Sent::Changed } else { Sent::Done(size) })
}

/// Opens a file for reading without following a symlink at its last component (one that
/// replaced the file since the walk could point anywhere).
pub fn open_no_follow(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    options.open(path)
}
