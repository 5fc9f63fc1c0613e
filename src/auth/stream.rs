//! A signed request's streamed body: the bytes after `/v1/rpc`'s request line, in chunks that
//! each carry a MAC under the request's own key ([`super::Signed::stream_key`]), so a relay can
//! change, reorder, drop, cut or add none of them (README "Security model").

use hmac::{KeyInit, Mac};

use super::HmacSha256;

/// The data bytes of each chunk a [`MacWriter`] sends (but the last).
pub const STREAM_CHUNK: usize = 64 << 10;

/// The most data bytes of one chunk a [`MacReader`] takes (so its memory stays bounded).
pub const MAX_STREAM_CHUNK: usize = 1 << 20;

/// The bit of a chunk's length word that marks the final chunk.
const FINAL_CHUNK: u32 = 1 << 31;

/// Bytes of a chunk's tag (HMAC-SHA256).
const TAG_BYTES: usize = 32;

/// The key of one signed request's streamed body ([`Signed::stream_key`]).
#[derive(Clone)]
pub struct StreamKey([u8; 32]);

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKey(..)")
    }
}

impl StreamKey {
    pub(super) fn new(key: [u8; 32]) -> Self {
        StreamKey(key)
    }

    /// The tag of chunk number `counter` with its length word `head`: the counter makes a
    /// reordered or dropped chunk fail, the word a changed length or end mark.
    fn tag(&self, counter: u64, head: [u8; 4], data: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key size");
        mac.update(&counter.to_be_bytes());
        mac.update(&head);
        mac.update(data);
        mac
    }
}

/// Writes a stream as authenticated chunks: each is a 4-byte big-endian length word (its top
/// bit marks the final chunk), the data, and `HMAC-SHA256(key, counter ‖ word ‖ data)`.
/// [`finish`](Self::finish) sends the final chunk; a writer dropped without it leaves a body
/// the reader refuses as truncated.
pub struct MacWriter<W: std::io::Write> {
    inner: W,
    key: StreamKey,
    counter: u64,
    buf: Vec<u8>,
}

impl<W: std::io::Write> MacWriter<W> {
    pub fn new(inner: W, key: StreamKey) -> Self {
        MacWriter { inner, key, counter: 0, buf: Vec::with_capacity(STREAM_CHUNK) }
    }

    fn emit(&mut self, last: bool) -> std::io::Result<()> {
        let word = self.buf.len() as u32 | if last { FINAL_CHUNK } else { 0 };
        let head = word.to_be_bytes();
        let tag = self.key.tag(self.counter, head, &self.buf).finalize().into_bytes();
        self.inner.write_all(&head)?;
        self.inner.write_all(&self.buf)?;
        self.inner.write_all(&tag)?;
        self.counter += 1;
        self.buf.clear();
        Ok(())
    }

    /// Sends what is buffered as the final chunk (an empty stream is one empty final chunk),
    /// flushes, and gives the inner writer back.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.emit(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: std::io::Write> std::io::Write for MacWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(STREAM_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == STREAM_CHUNK {
            self.emit(false)?;
        }
        Ok(n)
    }

    /// Sends what is buffered as a (shorter) chunk, so it reaches the reader now.
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.emit(false)?;
        }
        self.inner.flush()
    }
}

/// Reads what a [`MacWriter`] wrote, handing out only the data of chunks whose tag verified:
/// no byte of a changed, reordered, dropped or extra chunk, nor of one cut short, ever reaches
/// the caller. The first bad chunk fails this read and every later one (`InvalidData`) and
/// raises [`alarm`](Self::alarm); bytes after the final chunk fail it too.
pub struct MacReader<R: std::io::Read> {
    inner: R,
    key: StreamKey,
    counter: u64,
    buf: Vec<u8>,
    pos: usize,
    ended: bool,
    alarm: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<R: std::io::Read> MacReader<R> {
    pub fn new(inner: R, key: StreamKey) -> Self {
        let alarm = std::sync::Arc::default();
        MacReader { inner, key, counter: 0, buf: Vec::new(), pos: 0, ended: false, alarm }
    }

    /// Raised when a chunk failed: the caller can tell a forged body from a failed handler.
    pub fn alarm(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.alarm.clone()
    }

    fn failed(&self) -> bool {
        self.alarm.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn fail(&mut self, what: &str) -> std::io::Error {
        self.alarm.store(true, std::sync::atomic::Ordering::SeqCst);
        self.buf.clear();
        self.pos = 0;
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("signed body: {what}"))
    }

    /// Reads `out` whole; the end of the stream here is a truncation.
    fn read_part(&mut self, part: &'static str, out: &mut [u8]) -> std::io::Result<()> {
        match self.inner.read_exact(out) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(self.fail(&format!("the body ended in a chunk's {part} (cut short)")))
            }
            other => other,
        }
    }

    /// Reads and verifies the next chunk into `buf`.
    fn next_chunk(&mut self) -> std::io::Result<()> {
        let mut head = [0u8; 4];
        self.read_part("length", &mut head)?;
        let word = u32::from_be_bytes(head);
        let len = (word & !FINAL_CHUNK) as usize;
        if len > MAX_STREAM_CHUNK {
            return Err(self.fail("a chunk is over the size limit"));
        }
        let mut data = std::mem::take(&mut self.buf);
        data.resize(len, 0);
        self.read_part("data", &mut data)?;
        let mut tag = [0u8; TAG_BYTES];
        self.read_part("tag", &mut tag)?;
        if self.key.tag(self.counter, head, &data).verify_slice(&tag).is_err() {
            return Err(self.fail("a chunk is not the one the request's signature covers"));
        }
        self.counter += 1;
        if word & FINAL_CHUNK != 0 {
            // Nothing may follow the final chunk: its writer ends the body right after it.
            let mut probe = [0u8; 1];
            loop {
                match self.inner.read(&mut probe) {
                    Ok(0) => break,
                    Ok(_) => return Err(self.fail("bytes follow the final chunk")),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            self.ended = true;
        }
        self.buf = data;
        self.pos = 0;
        Ok(())
    }
}

impl<R: std::io::Read> std::io::BufRead for MacReader<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.pos == self.buf.len() && !self.ended {
            if self.failed() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "signed body: an earlier chunk failed",
                ));
            }
            self.next_chunk()?;
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }
}

impl<R: std::io::Read> std::io::Read for MacReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let avail = std::io::BufRead::fill_buf(self)?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        std::io::BufRead::consume(self, n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::random_token;
    use crate::auth::tests::sample;

    fn framed(key: &StreamKey, data: &[u8]) -> Vec<u8> {
        let mut w = MacWriter::new(Vec::new(), key.clone());
        std::io::Write::write_all(&mut w, data).unwrap();
        w.finish().unwrap()
    }

    /// What a reader hands out before it fails (or all of it), and whether it failed.
    fn unframed(key: &StreamKey, body: &[u8]) -> (Vec<u8>, bool) {
        let mut r = MacReader::new(body, key.clone());
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut r, &mut buf) {
                Ok(0) => return (got, r.alarm().load(std::sync::atomic::Ordering::SeqCst)),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return (got, true),
            }
        }
    }

    fn stream_key() -> StreamKey {
        let (token, signed) = sample();
        signed.stream_key(&token)
    }

    /// One chunk's length on the wire: word, data, tag.
    const WIRE_CHUNK: usize = 4 + STREAM_CHUNK + TAG_BYTES;

    #[test]
    fn a_chunked_stream_round_trips_at_every_size() {
        let key = stream_key();
        for len in [0, 1, STREAM_CHUNK - 1, STREAM_CHUNK, 3 * STREAM_CHUNK + 5] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let body = framed(&key, &data);
            assert_eq!(unframed(&key, &body), (data, false), "{len} bytes");
        }
    }

    #[test]
    fn a_stream_key_is_the_requests_own() {
        let (token, signed) = sample();
        let key = signed.stream_key(&token);
        let body = framed(&key, b"frames");
        let mut other = signed.clone();
        other.nonce = random_token().unwrap();
        for wrong in [other.stream_key(&token), signed.stream_key("other-token")] {
            assert_eq!(unframed(&wrong, &body), (Vec::new(), true));
        }
    }

    #[test]
    fn a_tampered_reordered_truncated_or_extended_stream_fails() {
        let key = stream_key();
        let data: Vec<u8> = (0..3 * STREAM_CHUNK + 5).map(|i| (i % 251) as u8).collect();
        let body = framed(&key, &data);
        assert_eq!(body.len(), 3 * WIRE_CHUNK + 4 + 5 + TAG_BYTES);
        let chunk = |i: usize| body[i * WIRE_CHUNK..(i + 1) * WIRE_CHUNK].to_vec();
        let last = body[3 * WIRE_CHUNK..].to_vec();
        let mut flipped = body.clone();
        flipped[WIRE_CHUNK + 100] ^= 1;
        let mut bad_tag = body.clone();
        bad_tag[2 * WIRE_CHUNK - 1] ^= 0x80;
        let mut not_final = body.clone();
        not_final[3 * WIRE_CHUNK] &= 0x7f;
        let reordered = [chunk(1), chunk(0), chunk(2), last.clone()].concat();
        let dropped = [chunk(0), chunk(2), last.clone()].concat();
        let repeated = [chunk(0), chunk(0), chunk(1), chunk(2), last.clone()].concat();
        let mut extended = body.clone();
        extended.extend_from_slice(&framed(&key, b"more"));
        let mut one_more = body.clone();
        one_more.push(b'x');
        let cases: [(&str, Vec<u8>, usize); 10] = [
            ("a data byte flipped in chunk 1", flipped, STREAM_CHUNK),
            ("a tag byte flipped in chunk 1", bad_tag, STREAM_CHUNK),
            ("the final mark cleared", not_final, 3 * STREAM_CHUNK),
            ("chunks 0 and 1 swapped", reordered, 0),
            ("chunk 1 dropped", dropped, STREAM_CHUNK),
            ("chunk 0 repeated", repeated, STREAM_CHUNK),
            ("the final chunk dropped", body[..3 * WIRE_CHUNK].to_vec(), 3 * STREAM_CHUNK),
            ("cut in chunk 2", body[..2 * WIRE_CHUNK + 10].to_vec(), 2 * STREAM_CHUNK),
            ("another stream appended", extended, 3 * STREAM_CHUNK),
            ("one byte appended", one_more, 3 * STREAM_CHUNK),
        ];
        for (what, body, good) in cases {
            let (got, failed) = unframed(&key, &body);
            assert!(failed, "{what}: not refused");
            // Only whole chunks that verified came out, and nothing of the bad one.
            assert_eq!(got, data[..good], "{what}");
        }
    }

    #[test]
    fn a_chunk_over_the_limit_is_refused_before_it_is_read() {
        let key = stream_key();
        let word = (MAX_STREAM_CHUNK as u32 + 1).to_be_bytes();
        assert_eq!(unframed(&key, &word), (Vec::new(), true));
    }
}
