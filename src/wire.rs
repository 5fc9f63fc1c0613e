//! JSON-lines framing: read one line with a size cap, write one line and flush. Nothing else.

use std::io::{self, BufRead, Write};

use serde::Serialize;

/// The longest request line `codexd` accepts (a script of a few hundred KiB fits).
pub const MAX_REQUEST_LINE: usize = 4 * 1024 * 1024;

/// One line read by [`read_line_capped`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The line's bytes, without the newline.
    Text(Vec<u8>),
    /// The line was longer than the cap; its bytes were skipped up to the next newline.
    TooLong(usize),
}

/// Reads one `\n`-terminated line, holding at most `cap` bytes in memory whatever its length.
/// Returns `None` at end of input.
pub fn read_line_capped(reader: &mut impl BufRead, cap: usize) -> io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let mut total = 0usize;
    let mut seen_any = false;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            if !seen_any {
                return Ok(None);
            }
            break;
        }
        seen_any = true;
        let (piece, done) = match memchr_newline(chunk) {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        total += piece.len();
        if total <= cap {
            buf.extend_from_slice(piece);
        }
        let used = done.unwrap_or(chunk.len());
        reader.consume(used);
        if done.is_some() {
            break;
        }
    }
    if total > cap {
        return Ok(Some(Line::TooLong(total)));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(Line::Text(buf)))
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// Writes `value` as one JSON line and flushes, so the peer sees it at once.
pub fn write_line(writer: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    // One write for the whole line: an unbuffered pipe to ssh would otherwise get each JSON
    // token as a write of its own, and small writes cost round trips over TCP (Nagle).
    writer.write_all(&line_bytes(value)?)?;
    writer.flush()
}

/// `value` as one JSON line, newline included.
pub fn line_bytes(value: &impl Serialize) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_long_lines_and_keeps_going() {
        let input = format!("{}\nok\n", "x".repeat(100));
        let mut r = io::BufReader::with_capacity(16, input.as_bytes());
        assert_eq!(read_line_capped(&mut r, 10).unwrap(), Some(Line::TooLong(100)));
        assert_eq!(read_line_capped(&mut r, 10).unwrap(), Some(Line::Text(b"ok".to_vec())));
        assert_eq!(read_line_capped(&mut r, 10).unwrap(), None);
    }

    #[test]
    fn last_line_without_newline_is_a_line() {
        let mut r = io::BufReader::new(&b"a\r\nb"[..]);
        assert_eq!(read_line_capped(&mut r, 10).unwrap(), Some(Line::Text(b"a".to_vec())));
        assert_eq!(read_line_capped(&mut r, 10).unwrap(), Some(Line::Text(b"b".to_vec())));
        assert_eq!(read_line_capped(&mut r, 10).unwrap(), None);
    }
}
