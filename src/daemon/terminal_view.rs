//! The terminal view of a log: what a terminal would have shown. A line rewritten with `\r`
//! (a progress bar) shows its last state, ANSI escapes (colours, cursor moves) are dropped, and a
//! run of equal lines is one line with a count. Memory stays bounded: a line keeps at most
//! [`LINE_CAP`] bytes of its current and its last shown state, however long the raw line is.
//!
//! Tails are read from the end of the file in growing windows ([`tail`]), never the whole log:
//! the status reads the last line and the last Python traceback this way on every call.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{Context, Result};

/// The longest piece of one line kept (a longer state is cut, marked `partial`).
pub const LINE_CAP: usize = 64 * 1024;
/// The first window a tail reads from the end; it doubles until enough lines are found.
const FIRST_WINDOW: u64 = 16 * 1024;
/// Each line asked of a tail may cost this much reading before the tail settles for fewer.
const WINDOW_PER_LINE: u64 = 16 * 1024;
/// A tail reads at least this much before it settles for fewer lines than asked.
const MIN_SCAN: u64 = 1024 * 1024;

/// One line of the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewLine {
    /// Byte offset in the log where the shown text starts (after the `\r` that began it).
    pub offset: u64,
    pub text: String,
    /// How many times the line came in a row (1: once).
    pub repeated: u64,
    /// The line has no newline yet (the end of what was read), or was cut at [`LINE_CAP`].
    pub partial: bool,
}

/// Turns raw bytes into view lines as they are fed, in order.
pub struct Renderer {
    /// The bytes since the last `\r` or `\n`, and where they started.
    current: Vec<u8>,
    current_at: u64,
    /// The last non-empty state of this line, and where it started.
    shown: Vec<u8>,
    shown_at: u64,
    cut: bool,
    /// Offset of the next byte fed.
    pos: u64,
    /// The last line, held until a different one shows whether it repeats.
    held: Option<ViewLine>,
}

impl Renderer {
    /// A renderer whose first byte fed is at `pos` of the log.
    pub fn new(pos: u64) -> Renderer {
        Renderer {
            current: Vec::new(),
            current_at: pos,
            shown: Vec::new(),
            shown_at: pos,
            cut: false,
            pos,
            held: None,
        }
    }

    /// Offset where the line now being read starts (what a reader that stops here re-reads).
    pub fn line_start(&self) -> u64 {
        if self.shown.is_empty() { self.current_at } else { self.shown_at.min(self.current_at) }
    }

    /// Feeds the next bytes; `out` gets each line once the next different line has begun.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        out: &mut dyn FnMut(ViewLine) -> Result<()>,
    ) -> Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let at = rest.iter().position(|&b| b == b'\n' || b == b'\r');
            let (text, stop) = match at {
                Some(i) => (&rest[..i], Some(rest[i])),
                None => (rest, None),
            };
            let room = LINE_CAP.saturating_sub(self.current.len());
            self.cut |= text.len() > room;
            self.current.extend_from_slice(&text[..text.len().min(room)]);
            self.pos += text.len() as u64;
            match stop {
                Some(b'\r') => {
                    self.pos += 1;
                    self.end_state();
                    self.current_at = self.pos;
                }
                Some(_) => {
                    self.pos += 1;
                    self.end_line(false, out)?;
                }
                None => {}
            }
            rest = &rest[at.map_or(rest.len(), |i| i + 1)..];
        }
        Ok(())
    }

    /// The bytes fed end here: a line without its newline goes out as `partial`, then the held
    /// line.
    pub fn finish(mut self, out: &mut dyn FnMut(ViewLine) -> Result<()>) -> Result<()> {
        if !self.current.is_empty() || !self.shown.is_empty() {
            self.end_line(true, out)?;
        }
        if let Some(held) = self.held.take() {
            out(held)?;
        }
        Ok(())
    }

    /// Drops the line now being read (a follow that re-reads it once it is whole), then sends
    /// the held line.
    pub fn finish_whole_lines(mut self, out: &mut dyn FnMut(ViewLine) -> Result<()>) -> Result<()> {
        if let Some(held) = self.held.take() {
            out(held)?;
        }
        Ok(())
    }

    /// A `\r`: the state since the last one becomes the shown one, unless it shows nothing.
    fn end_state(&mut self) {
        if shows_something(&self.current) {
            std::mem::swap(&mut self.shown, &mut self.current);
            self.shown_at = self.current_at;
        }
        self.current.clear();
    }

    fn end_line(
        &mut self,
        partial: bool,
        out: &mut dyn FnMut(ViewLine) -> Result<()>,
    ) -> Result<()> {
        self.end_state();
        let text = String::from_utf8_lossy(&strip_ansi(&self.shown)).into_owned();
        let offset = if self.shown.is_empty() { self.current_at } else { self.shown_at };
        let line = ViewLine { offset, text, repeated: 1, partial: partial || self.cut };
        self.shown.clear();
        self.cut = false;
        self.current_at = self.pos;
        match &mut self.held {
            Some(held) if held.text == line.text && !held.partial && !line.partial => {
                held.repeated += 1;
            }
            _ => {
                if let Some(prev) = self.held.replace(line) {
                    out(prev)?;
                }
            }
        }
        Ok(())
    }
}

/// `bytes` without ANSI escape sequences (CSI `ESC [ … final`, OSC `ESC ] … BEL|ESC \`, and
/// two-byte `ESC x`) or other control characters but the tab.
pub fn strip_ansi(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    out.extend(Visible { bytes, i: 0 });
    out
}

/// Whether `bytes` show anything once escapes and control characters are gone (without
/// building the stripped copy: a progress bar has one state per `\r`).
fn shows_something(bytes: &[u8]) -> bool {
    Visible { bytes, i: 0 }.next().is_some()
}

/// The bytes of `bytes` a terminal shows, in order (see [`strip_ansi`]).
struct Visible<'a> {
    bytes: &'a [u8],
    i: usize,
}

impl Iterator for Visible<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let bytes = self.bytes;
        while self.i < bytes.len() {
            let b = bytes[self.i];
            if b == 0x1b {
                self.i += 1;
                match bytes.get(self.i) {
                    Some(b'[') => {
                        self.i += 1;
                        while self.i < bytes.len() && !(0x40..=0x7e).contains(&bytes[self.i]) {
                            self.i += 1;
                        }
                        self.i += 1;
                    }
                    Some(b']') => {
                        while self.i < bytes.len() && bytes[self.i] != 0x07 && bytes[self.i] != 0x1b
                        {
                            self.i += 1;
                        }
                        // ESC \ ends it as BEL does.
                        self.i += if bytes.get(self.i) == Some(&0x1b) { 2 } else { 1 };
                    }
                    Some(_) => self.i += 1,
                    None => {}
                }
                continue;
            }
            self.i += 1;
            if b >= 0x20 || b == b'\t' {
                return Some(b);
            }
        }
        None
    }
}

/// The last `lines` lines of the view of `path` between `from` and `end`, read backwards in
/// windows that double, so a 50 MB progress bar costs a few of them, not the file. Reading stops
/// after about `max(1 MiB, 16 KiB per line)`: older lines than that are not shown.
pub fn tail(path: &Path, from: u64, end: u64, lines: u64) -> Result<Vec<ViewLine>> {
    let limit = MIN_SCAN.max(lines.saturating_mul(WINDOW_PER_LINE));
    tail_within(path, from, end, lines, limit)
}

/// [`tail`] reading at most about `limit` bytes.
pub fn tail_within(
    path: &Path,
    from: u64,
    end: u64,
    lines: u64,
    limit: u64,
) -> Result<Vec<ViewLine>> {
    if lines == 0 || end <= from {
        return Ok(Vec::new());
    }
    let mut file = File::open(path).context(|| format!("opening {}", path.display()))?;
    let mut window = FIRST_WINDOW.min(limit.max(1));
    loop {
        let start = end.saturating_sub(window).max(from);
        let whole = start == from || window >= limit;
        let mut got = render_from(&mut file, path, start, end, from)?;
        // The oldest line may have begun before the window: it is only sure with one more.
        let sure = if whole { got.len() } else { got.len().saturating_sub(1) };
        if sure as u64 >= lines || whole {
            let keep = (lines as usize).min(sure);
            got.drain(..got.len() - keep);
            return Ok(got);
        }
        window = window.saturating_mul(2).min(limit);
    }
}

/// The view of `start..end`; a `start` inside the log begins at its first `\n` or `\r`, so no
/// line state is read from its middle.
fn render_from(
    file: &mut File,
    path: &Path,
    start: u64,
    end: u64,
    from: u64,
) -> Result<Vec<ViewLine>> {
    file.seek(SeekFrom::Start(start)).context(|| "seeking".into())?;
    let mut reader = (&mut *file).take(end - start);
    let mut buf = vec![0u8; (end - start).clamp(1, 64 * 1024) as usize];
    let mut lines = Vec::new();
    let mut renderer: Option<Renderer> = (start == from).then(|| Renderer::new(start));
    let mut pos = start;
    let mut out = |l: ViewLine| -> Result<()> {
        lines.push(l);
        Ok(())
    };
    loop {
        let n = reader.read(&mut buf).context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        if renderer.is_none() {
            match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    renderer = Some(Renderer::new(pos + i as u64 + 1));
                    chunk = &chunk[i + 1..];
                }
                None => chunk = &[],
            }
        }
        if let Some(r) = renderer.as_mut() {
            r.feed(chunk, &mut out)?;
        }
        pos += n as u64;
    }
    if let Some(r) = renderer {
        r.finish(&mut out)?;
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(bytes: &[u8]) -> Vec<ViewLine> {
        let mut lines = Vec::new();
        let mut r = Renderer::new(0);
        let mut out = |l: ViewLine| -> Result<()> {
            lines.push(l);
            Ok(())
        };
        r.feed(bytes, &mut out).unwrap();
        r.finish(&mut out).unwrap();
        lines
    }

    fn texts(lines: &[ViewLine]) -> Vec<(&str, u64)> {
        lines.iter().map(|l| (l.text.as_str(), l.repeated)).collect()
    }

    #[test]
    fn carriage_returns_show_the_last_state_and_crlf_keeps_the_line() {
        let lines = view(b"a\r 10%\r 50%\r100%\ndone\r\n");
        assert_eq!(texts(&lines), [("100%", 1), ("done", 1)]);
        assert_eq!(lines[0].offset, 12);
        assert_eq!(lines[1].offset, 17);
    }

    #[test]
    fn ansi_escapes_are_dropped_and_repeats_collapse() {
        let lines = view(b"\x1b[31mred\x1b[0m\nx\nx\nx\n\x1b]0;title\x07y");
        assert_eq!(texts(&lines), [("red", 1), ("x", 3), ("y", 1)]);
        assert!(lines[2].partial);
        assert_eq!(lines[1].offset, 13);
    }

    #[test]
    fn shows_something_agrees_with_strip_ansi() {
        for bytes in [
            &b""[..],
            b"\x1b[32m\x1b[0m",
            b"\x1b]0;title\x07",
            b"\x1b]0;t\x1b\\",
            b"\x07\x08",
            b"\x1b[1m x",
            b"\t",
            b"\x1b",
            b"\x1b[",
        ] {
            assert_eq!(shows_something(bytes), !strip_ansi(bytes).is_empty(), "{bytes:?}");
        }
    }

    #[test]
    fn a_line_split_across_feeds_is_one_line() {
        let mut lines = Vec::new();
        let mut r = Renderer::new(0);
        let mut out = |l: ViewLine| -> Result<()> {
            lines.push(l);
            Ok(())
        };
        r.feed(b"ab\rc", &mut out).unwrap();
        r.feed(b"d\ne", &mut out).unwrap();
        r.finish(&mut out).unwrap();
        assert_eq!(texts(&lines), [("cd", 1), ("e", 1)]);
    }

    #[test]
    fn tail_reads_only_the_end_of_a_long_progress_bar() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut content = b"start\n".to_vec();
        for i in 0..200_000 {
            content.extend_from_slice(format!("\r{:5.1}%|####|", i as f64 / 2000.0).as_bytes());
        }
        content.extend_from_slice(b"\nepoch 1 done\n");
        std::fs::write(&path, &content).unwrap();
        let end = content.len() as u64;
        let got = tail_within(&path, 0, end, 2, 64 * 1024).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].text, "100.0%|####|");
        assert_eq!(got[1].text, "epoch 1 done");
        // The window limit keeps the whole-file read away: "start" is not reached.
        let got = tail_within(&path, 0, end, 5, 64 * 1024).unwrap();
        assert!(got.iter().all(|l| l.text != "start"), "{got:?}");
        let got = tail_within(&path, 0, end, 5, u64::MAX).unwrap();
        assert_eq!(got[0].text, "start");
    }
}
