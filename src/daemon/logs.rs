//! Reading a job's logs by byte offset: tails, pages from an offset, and follow.
//!
//! Every `log` line carries the byte offset of its first byte and the answer ends with the next
//! offset per stream, so a poller that passes it back as `since` never loses or repeats a byte.
//! Memory stays O(chunk): files are read in blocks, never whole. The terminal view
//! ([`terminal_view`]) renders the same bytes as a terminal shows them; its `tail_lines` and the
//! status's last lines are read backwards from the end.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;

use super::Sink;
use super::terminal_view::{self, Renderer, ViewLine};
use crate::error::{Context, Error, Result};
use crate::jobs::store::JobStore;
use crate::jobs::timeline;
use crate::protocol::{
    JobState, JobStatus, LogChunk, LogLine, LogTails, LogView, LogsEnd, LogsRequest, Response,
    RunStatus, Stream, StreamOffsets, parse_log_time,
};

/// `tail` when the request gives no `since`, `tail` or `tail_lines` (as the original tool).
pub const DEFAULT_TAIL_BYTES: u64 = 2000;
/// At most this much per stream in one non-follow answer unless `max_bytes` says otherwise.
pub const DEFAULT_PAGE_BYTES: u64 = 4 * 1024 * 1024;
/// Read block, and the longest piece of a line sent as one `log` line.
const BLOCK: usize = 64 * 1024;
/// How often `follow` looks for new output when nothing wakes it: the poll under inotify (a
/// partial line that stopped growing is sent after one), and the whole of it without.
const FOLLOW_TICK: Duration = Duration::from_millis(50);
/// Milliseconds to use instead of [`FOLLOW_TICK`] (tests: a poll too slow to hide a missed
/// wake-up).
pub const FOLLOW_TICK_ENV: &str = "CODEXD_FOLLOW_POLL_MS";

/// One log being read from `pos`.
struct Cursor {
    stream: Stream,
    path: PathBuf,
    pos: u64,
    /// Size seen at the last follow tick, to flush a partial line that stopped growing.
    last_size: u64,
}

pub fn exec_logs(store: &JobStore, req: &LogsRequest, sink: &mut dyn Sink) -> Result<LogsEnd> {
    if req.tail.is_some() && req.tail_lines.is_some() {
        return Err(Error::invalid("give tail (bytes) or tail_lines, not both"));
    }
    if req.follow && req.until_time.is_some() {
        return Err(Error::invalid(
            "until_time reads what was written before a time: not with follow",
        ));
    }
    if req.raw && req.view == LogView::Terminal {
        return Err(Error::invalid("raw sends the bytes themselves: not with view terminal"));
    }
    let dir = store.existing_job_dir(&req.exec_id)?;
    let window = TimeWindow::of(req, &dir)?;
    let max = req.max_bytes.unwrap_or(DEFAULT_PAGE_BYTES).max(1);
    let mut cursors = Vec::new();
    let mut sizes = StreamOffsets::default();
    for &stream in req.stream.streams() {
        let path = store.log_path(&req.exec_id, stream)?;
        let size = file_len(&path)?;
        sizes.set(stream, size);
        let bounds = window.bounds(stream, size);
        let pos = match req.tail_lines {
            Some(lines) if req.view == LogView::Terminal => {
                send_view_tail(stream, &path, req, bounds, lines, sink)?
            }
            _ => start_offset(req, stream, &path, bounds)?,
        };
        cursors.push(Cursor { stream, path, pos, last_size: size });
    }

    let mut more = false;
    if req.follow {
        follow(store, req, sink, &mut cursors)?;
    } else {
        for c in &mut cursors {
            // With until_time, the log ends where the job had written up to that time.
            let (_, size) = window.bounds(c.stream, sizes.get(c.stream).unwrap_or(0));
            let end = size.min(c.pos.saturating_add(max));
            more |= end < size;
            send_range(c, end, true, req, sink)?;
        }
    }

    let job = store.status(&req.exec_id)?;
    let mut next_offset = StreamOffsets::default();
    for c in &cursors {
        next_offset.set(c.stream, c.pos);
        if req.follow {
            sizes.set(c.stream, file_len(&c.path)?);
        }
    }
    Ok(LogsEnd {
        exec_id: req.exec_id.clone(),
        next_offset,
        size: sizes,
        more,
        status: job.status,
        state: job.state,
        exit_code: job.exit_code,
        job,
    })
}

/// Streams new output until the job has finished and everything it wrote is sent.
fn follow(
    store: &JobStore,
    req: &LogsRequest,
    sink: &mut dyn Sink,
    cursors: &mut [Cursor],
) -> Result<()> {
    let mut heartbeat = super::Heartbeats::new();
    let tick = std::env::var(FOLLOW_TICK_ENV)
        .ok()
        .and_then(|ms| ms.trim().parse().ok())
        .map_or(FOLLOW_TICK, Duration::from_millis);
    let mut dirs = vec![store.existing_job_dir(&req.exec_id)?];
    dirs.extend(cursors.iter().filter_map(|c| c.path.parent().map(Path::to_path_buf)));
    let mut wake = FileWake::watching(&dirs);
    loop {
        // Read the status before the logs: once it says finished, one more pass sends all.
        let finished = store.status(&req.exec_id)?.status == RunStatus::Finished;
        for c in cursors.iter_mut() {
            let size = file_len(&c.path)?;
            // A partial last line is held back while it grows, and sent once it stops.
            let flush = finished || size == c.last_size;
            c.last_size = size;
            send_range(c, size, flush, req, sink)?;
        }
        if finished {
            return Ok(());
        }
        if sink.closed() {
            return Err(Error::internal("follow", "the client went away"));
        }
        heartbeat.due(sink)?;
        wake.wait(tick);
    }
}

/// Wakes a follow as soon as a file in the job's directories changes (inotify: a log grew,
/// the status was replaced), so a line goes out as it lands; the poll stays as the fallback
/// where inotify is missing or full (`None`: sleep the tick).
struct FileWake {
    inotify: Option<rustix::fd::OwnedFd>,
}

impl FileWake {
    fn watching(dirs: &[PathBuf]) -> FileWake {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        let watch = || -> rustix::io::Result<rustix::fd::OwnedFd> {
            let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
            let events = WatchFlags::MODIFY | WatchFlags::MOVED_TO | WatchFlags::CREATE;
            for dir in dirs {
                inotify::add_watch(&fd, dir.as_path(), events)?;
            }
            Ok(fd)
        };
        FileWake { inotify: watch().ok() }
    }

    /// Returns after a change or `tick`, whichever comes first, with the events drained.
    fn wait(&mut self, tick: Duration) {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let Some(fd) = &self.inotify else {
            std::thread::sleep(tick);
            return;
        };
        let timeout = Timespec::try_from(tick).unwrap_or(Timespec { tv_sec: 1, tv_nsec: 0 });
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        if rustix::event::poll(&mut fds, Some(&timeout)).is_err() {
            std::thread::sleep(tick);
        }
        let mut buf = [std::mem::MaybeUninit::uninit(); 4096];
        let mut events = rustix::fs::inotify::Reader::new(fd, &mut buf);
        while events.next().is_ok() {}
    }
}

fn file_len(path: &PathBuf) -> Result<u64> {
    Ok(std::fs::metadata(path).context(|| format!("reading {}", path.display()))?.len())
}

/// The part of the logs `since_time` and `until_time` select, as offsets from the job's time
/// index ([`timeline`]): where each stream starts and ends.
struct TimeWindow {
    since: Option<timeline::Sizes>,
    until: Option<timeline::Sizes>,
}

impl TimeWindow {
    fn of(req: &LogsRequest, dir: &Path) -> Result<TimeWindow> {
        let now = SystemTime::now();
        let at = |given: &Option<String>, name: &str| -> Result<Option<timeline::Sizes>> {
            let Some(text) = given else { return Ok(None) };
            let ms =
                parse_log_time(text, now).map_err(|e| Error::invalid(format!("{name}: {e}")))?;
            let sizes = timeline::sizes_at(dir, ms).context(|| "reading the time index".into())?;
            sizes.map(Some).ok_or_else(|| {
                Error::invalid(format!(
                    "{name}: job {} has no time index (a codexd from before `logs_time` started \
                     it); read it by offset or --tail",
                    req.exec_id
                ))
            })
        };
        Ok(TimeWindow {
            since: at(&req.since_time, "since_time")?,
            until: at(&req.until_time, "until_time")?,
        })
    }

    /// Where `stream` (`size` bytes now) starts and ends in the window.
    fn bounds(&self, stream: Stream, size: u64) -> (u64, u64) {
        let pick = |s: timeline::Sizes| if stream == Stream::Stdout { s.0 } else { s.1 };
        let end = self.until.map_or(size, |u| pick(u).min(size));
        (self.since.map_or(0, pick).min(end), end)
    }
}

/// Where reading starts for one stream whose window is `from..size` (all of it when no time
/// was given).
fn start_offset(
    req: &LogsRequest,
    stream: Stream,
    path: &PathBuf,
    (from, size): (u64, u64),
) -> Result<u64> {
    let since = req.since.and_then(|s| s.get(stream));
    if let Some(since) = since
        && since > size
        && req.until_time.is_none()
    {
        return Err(Error::invalid(format!(
            "{} offset {since} is past the end of the log ({size} bytes)",
            stream.as_str()
        )));
    }
    let timed = req.since_time.is_some() || req.until_time.is_some();
    let base = since.unwrap_or(0).max(from).min(size);
    let tail = match (req.tail, req.tail_lines, since.is_some() || timed) {
        (Some(bytes), _, _) => Some(line_start_from(path, size.saturating_sub(bytes), size)?),
        (None, Some(lines), _) => Some(tail_lines_start(path, size, lines)?),
        (None, None, false) => {
            Some(line_start_from(path, size.saturating_sub(DEFAULT_TAIL_BYTES), size)?)
        }
        (None, None, true) => None,
    };
    Ok(tail.map_or(base, |t| t.max(base)))
}

/// The first line start at or after `from` (`size` if none): a byte tail that lands inside a
/// line drops that line's end, as the original tool did, rather than print a fragment.
fn line_start_from(path: &PathBuf, from: u64, size: u64) -> Result<u64> {
    if from == 0 || from >= size {
        return Ok(from);
    }
    let mut file = File::open(path).context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; BLOCK];
    // The byte before `from` says whether a line starts there.
    let mut pos = from - 1;
    while pos < size {
        let n = (BLOCK as u64).min(size - pos) as usize;
        file.seek(SeekFrom::Start(pos)).context(|| "seeking".into())?;
        file.read_exact(&mut buf[..n]).context(|| format!("reading {}", path.display()))?;
        if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
            return Ok(pos + i as u64 + 1);
        }
        pos += n as u64;
    }
    Ok(size)
}

/// The offset where the last `lines` lines of the first `size` bytes begin (a last line without
/// a newline counts). Scans backwards block by block: memory does not grow with the log.
pub fn tail_lines_start(path: &PathBuf, size: u64, lines: u64) -> Result<u64> {
    if lines == 0 || size == 0 {
        return Ok(size);
    }
    let mut file = File::open(path).context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; BLOCK];
    let mut end = size;
    // The newline that ends the last line does not start a line.
    let mut newlines_needed = lines + 1;
    let mut first_block = true;
    while end > 0 {
        let start = end.saturating_sub(BLOCK as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start)).context(|| "seeking".into())?;
        file.read_exact(&mut buf[..n]).context(|| format!("reading {}", path.display()))?;
        let mut slice = &buf[..n];
        if first_block {
            first_block = false;
            if slice.last() != Some(&b'\n') {
                // An unterminated last line is a line: count as if it had its newline.
                newlines_needed -= 1;
            } else {
                slice = &slice[..n - 1];
                newlines_needed -= 1;
            }
        }
        for (i, &b) in slice.iter().enumerate().rev() {
            if b == b'\n' {
                newlines_needed -= 1;
                if newlines_needed == 0 {
                    return Ok(start + i as u64 + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

/// Terminal view with `tail_lines`: sends the last `lines` lines of `from..end` (after `since`)
/// and answers where reading goes on (`end`).
fn send_view_tail(
    stream: Stream,
    path: &Path,
    req: &LogsRequest,
    (from, end): (u64, u64),
    lines: u64,
    sink: &mut dyn Sink,
) -> Result<u64> {
    let since = req.since.and_then(|s| s.get(stream)).unwrap_or(0);
    for line in terminal_view::tail(path, since.max(from).min(end), end, lines)? {
        send_view_line(stream, line, sink)?;
    }
    Ok(end)
}

fn send_view_line(stream: Stream, l: ViewLine, sink: &mut dyn Sink) -> Result<()> {
    let repeated = (l.repeated > 1).then_some(l.repeated);
    let line = LogLine { stream, offset: l.offset, line: l.text, partial: l.partial, repeated };
    sink.send(Response::Log(line)).map_err(client_gone)
}

/// Where a job stands, for its status: the last line of each stream from the last
/// [`LAST_LINE_BYTES`] of its log and, for a failed job, the last Python traceback from the last
/// [`STATUS_TAIL_BYTES`] of stderr. A log that cannot be read gives nothing.
pub fn status_tails(store: &JobStore, job: &JobStatus) -> LogTails {
    let lines = |stream: Stream, window: u64| -> Vec<ViewLine> {
        let read = || -> Result<Vec<ViewLine>> {
            let path = store.log_path(&job.exec_id, stream)?;
            let size = file_len(&path)?;
            terminal_view::tail_within(&path, 0, size, u64::MAX, window)
        };
        read().unwrap_or_default()
    };
    let last = |lines: &[ViewLine]| {
        lines.iter().rev().find(|l| !l.text.trim().is_empty()).map(|l| l.text.clone())
    };
    let failed = matches!(job.state, JobState::Failed | JobState::Lost)
        || job.exit_code.is_some_and(|c| c != 0);
    // A failed job's stderr is read once, with the traceback's window.
    let stderr = lines(Stream::Stderr, if failed { STATUS_TAIL_BYTES } else { LAST_LINE_BYTES });
    LogTails {
        last_stdout: last(&lines(Stream::Stdout, LAST_LINE_BYTES)),
        last_stderr: last(&stderr),
        traceback: failed.then(|| last_traceback(&stderr)).flatten(),
    }
}

/// How much of each log a status reads from the end for its last line: a status must stay
/// cheap (every `exec_status`, `exec_wait` and `tasks/get` has one).
pub const LAST_LINE_BYTES: u64 = 4 * 1024;
/// How much of a failed job's stderr the status reads from the end for its traceback.
pub const STATUS_TAIL_BYTES: u64 = 16 * 1024;
pub const TRACEBACK_CAP: usize = 4 * 1024;

/// The last `Traceback (most recent call last):` and its lines up to the exception line (the
/// first line after it that is not indented), cut to its last [`TRACEBACK_CAP`] bytes.
fn last_traceback(lines: &[ViewLine]) -> Option<String> {
    let start =
        lines.iter().rposition(|l| l.text.starts_with("Traceback (most recent call last)"))?;
    let mut text = String::new();
    for (i, l) in lines[start..].iter().enumerate() {
        text.push_str(&l.text);
        text.push('\n');
        if i > 0 && !l.text.starts_with([' ', '\t']) {
            break;
        }
    }
    if text.len() > TRACEBACK_CAP {
        let mut cut = text.len() - TRACEBACK_CAP;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        let from = text[cut..].find('\n').map_or(cut, |i| cut + i + 1);
        text = format!("{}\n  ...\n{}", lines[start].text, &text[from..]);
    }
    Some(text.trim_end().to_string())
}

/// Sends the bytes of `c` from `c.pos` up to `end` and advances `c.pos`. Without `flush`, a
/// last piece with no newline is held back (not sent, `pos` stays before it).
fn send_range(
    c: &mut Cursor,
    end: u64,
    flush: bool,
    req: &LogsRequest,
    sink: &mut dyn Sink,
) -> Result<()> {
    if c.pos >= end {
        return Ok(());
    }
    let mut file = File::open(&c.path).context(|| format!("opening {}", c.path.display()))?;
    file.seek(SeekFrom::Start(c.pos)).context(|| "seeking".into())?;
    let mut reader = file.take(end - c.pos);
    let mut buf = vec![0u8; BLOCK];
    if req.view == LogView::Terminal {
        let mut renderer = Renderer::new(c.pos);
        let stream = c.stream;
        let mut out = |l: ViewLine| send_view_line(stream, l, sink);
        loop {
            let n = reader.read(&mut buf).context(|| "reading log".into())?;
            if n == 0 {
                break;
            }
            renderer.feed(&buf[..n], &mut out)?;
        }
        // Without `flush`, the line being written is read again, whole, at the next pass.
        c.pos = if flush { end } else { renderer.line_start() };
        return if flush {
            renderer.finish(&mut out)
        } else {
            renderer.finish_whole_lines(&mut out)
        };
    }
    if req.raw {
        loop {
            let n = reader.read(&mut buf).context(|| "reading log".into())?;
            if n == 0 {
                return Ok(());
            }
            let data_b64 = base64::engine::general_purpose::STANDARD.encode(&buf[..n]);
            sink.send(Response::Chunk(LogChunk { stream: c.stream, offset: c.pos, data_b64 }))
                .map_err(client_gone)?;
            c.pos += n as u64;
        }
    }
    // `pending` holds the start of a line not yet ended; it never exceeds BLOCK.
    let mut pending: Vec<u8> = Vec::with_capacity(BLOCK);
    loop {
        let n = reader.read(&mut buf).context(|| "reading log".into())?;
        if n == 0 {
            break;
        }
        let mut rest = &buf[..n];
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            pending.extend_from_slice(&rest[..i]);
            send_line(c, &pending, false, sink)?;
            c.pos += 1;
            pending.clear();
            rest = &rest[i + 1..];
        }
        pending.extend_from_slice(rest);
        if pending.len() >= BLOCK {
            // A very long line goes out in pieces, each marked partial.
            send_line(c, &pending, true, sink)?;
            pending.clear();
        }
    }
    if flush && !pending.is_empty() {
        send_line(c, &pending, true, sink)?;
    }
    Ok(())
}

/// Sends one line (or piece) starting at `c.pos` and advances `c.pos` past its bytes.
fn send_line(c: &mut Cursor, bytes: &[u8], partial: bool, sink: &mut dyn Sink) -> Result<()> {
    let line = String::from_utf8_lossy(bytes).into_owned();
    let (stream, offset) = (c.stream, c.pos);
    sink.send(Response::Log(LogLine { stream, offset, line, partial, repeated: None }))
        .map_err(client_gone)?;
    c.pos += bytes.len() as u64;
    Ok(())
}

/// A log line could not be written: the reader has gone.
fn client_gone(e: std::io::Error) -> Error {
    Error::internal("writing the answer", e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_log(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    #[test]
    fn a_byte_tail_starts_at_a_line_start() {
        let (_dir, path) = tmp_log(b"alpha\nbeta\ngamma\n");
        // Inside "beta": its end is dropped; at a line start: kept; no newline after: nothing.
        assert_eq!(line_start_from(&path, 8, 17).unwrap(), 11);
        assert_eq!(line_start_from(&path, 6, 17).unwrap(), 6);
        assert_eq!(line_start_from(&path, 0, 17).unwrap(), 0);
        let (_dir, path) = tmp_log(b"alpha\nbeta");
        assert_eq!(line_start_from(&path, 8, 10).unwrap(), 10);
    }

    #[test]
    fn tail_lines_counts_from_the_end() {
        let (_d, p) = tmp_log(b"a\nb\nc\n");
        assert_eq!(tail_lines_start(&p, 6, 1).unwrap(), 4);
        assert_eq!(tail_lines_start(&p, 6, 2).unwrap(), 2);
        assert_eq!(tail_lines_start(&p, 6, 9).unwrap(), 0);
        let (_d, p) = tmp_log(b"a\nb\nc");
        assert_eq!(tail_lines_start(&p, 5, 1).unwrap(), 4);
        assert_eq!(tail_lines_start(&p, 5, 2).unwrap(), 2);
    }

    #[test]
    fn tail_lines_crosses_blocks() {
        let mut content = Vec::new();
        for i in 0..50_000 {
            content.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let (_d, p) = tmp_log(&content);
        let start = tail_lines_start(&p, content.len() as u64, 20_000).unwrap() as usize;
        let tail = std::str::from_utf8(&content[start..]).unwrap();
        assert_eq!(tail.lines().count(), 20_000);
        assert!(tail.starts_with("line 30000\n"));
    }
}
