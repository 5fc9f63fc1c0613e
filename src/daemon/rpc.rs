//! `codexd rpc`: answers request lines from stdin on stdout until EOF, then exits.
//!
//! One process per ssh call (CGI style): no daemon, no port. Only protocol lines go to stdout;
//! anything for humans goes to stderr.

use std::io::{self, BufRead, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Daemon, Sink};
use crate::error::{Error, ErrorCode};
use crate::jobs::sys;
use crate::protocol::{Request, RequestLine, Response, ResponseLine};
use crate::wire::{self, Line, MAX_REQUEST_LINE};

/// Writes answer lines for one request, each carrying the request's id; the bytes that follow
/// a request line are read from the same stdin.
struct StdoutSink<'a, R: BufRead, W: Write> {
    input: &'a mut R,
    out: &'a mut W,
    id: Option<serde_json::Value>,
}

impl<R: BufRead, W: Write> Sink for StdoutSink<'_, R, W> {
    fn send(&mut self, response: Response) -> io::Result<()> {
        wire::write_line(self.out, &ResponseLine { id: self.id.clone(), response })
    }

    fn closed(&self) -> bool {
        sys::stdout_closed()
    }

    fn payload(&mut self) -> Option<&mut dyn BufRead> {
        Some(&mut *self.input)
    }

    fn raw_out(&mut self) -> Option<&mut dyn Write> {
        Some(&mut *self.out)
    }
}

/// Writes the answer lines of a request served on a thread of its own (a `concurrent`
/// session): one line at a time under the lock, so answers to different ids never interleave.
struct SharedSink<'a, W: Write> {
    out: &'a Mutex<&'a mut W>,
    id: Option<serde_json::Value>,
}

impl<W: Write> Sink for SharedSink<'_, W> {
    fn send(&mut self, response: Response) -> io::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        wire::write_line(&mut **out, &ResponseLine { id: self.id.clone(), response })
    }

    fn closed(&self) -> bool {
        sys::stdout_closed()
    }
}

/// Requests of one `concurrent` session in flight on threads at most; past that a request is
/// answered in turn, which holds up reading the next (back pressure, not an error).
const MAX_IN_FLIGHT: usize = 64;

/// Serves requests from `input` to `output` until EOF or until the reader of `output` is gone.
///
/// Requests are answered in turn, unless a `hello` asked for a `concurrent` session: then each
/// later request without a payload runs on a thread of its own and its answer goes out when it
/// is ready, carrying its id. A request with a payload (files, sync) is still served in turn:
/// its bytes follow its line on stdin (and `sync_send`'s answer bytes go out whole).
pub fn serve(
    daemon: &Daemon,
    input: &mut impl BufRead,
    output: &mut (impl Write + Send),
) -> io::Result<()> {
    let out = Mutex::new(output);
    let in_flight = AtomicUsize::new(0);
    let mut concurrent = false;
    std::thread::scope(|scope| {
        while let Some(line) = wire::read_line_capped(input, MAX_REQUEST_LINE)? {
            let request = match line {
                Line::Text(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => continue,
                Line::Text(bytes) => RequestLine::parse(&bytes),
                Line::TooLong(n) => Err(Box::new((
                    None,
                    Error::new(
                        ErrorCode::RequestTooLarge,
                        format!("request line of {n} bytes; the limit is {MAX_REQUEST_LINE}"),
                    ),
                ))),
            };
            let RequestLine { id, request } = match request {
                Ok(line) => line,
                Err(rejected) => {
                    let (id, err) = *rejected;
                    SharedSink { out: &out, id }.send(Response::Error(err.into()))?;
                    continue;
                }
            };
            if concurrent
                && !request.has_payload()
                && in_flight.fetch_add(1, Ordering::SeqCst) < MAX_IN_FLIGHT
            {
                let (out, in_flight) = (&out, &in_flight);
                scope.spawn(move || {
                    let mut sink = SharedSink { out, id };
                    let answer = answer(daemon, &request, &mut sink);
                    // A reader gone is the session's end: the reading loop sees it too.
                    let _ = sink.send(answer);
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                });
                continue;
            }
            if concurrent && !request.has_payload() {
                in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            // In turn: the output is held for the whole answer (sync_send writes raw bytes).
            let mut guard = out.lock().unwrap_or_else(|e| e.into_inner());
            let mut sink = StdoutSink { input: &mut *input, out: &mut **guard, id };
            let answer = answer(daemon, &request, &mut sink);
            let failed = matches!(answer, Response::Error(_));
            sink.send(answer)?;
            // A refused request's bytes may be partly unread: the session cannot go on.
            if request.has_payload() && failed {
                break;
            }
            if let Request::Hello(hello) = &request {
                concurrent |= hello.concurrent && !failed;
            }
        }
        Ok(())
    })
}

fn answer(daemon: &Daemon, request: &Request, sink: &mut dyn Sink) -> Response {
    daemon.handle(request, sink).unwrap_or_else(|e| Response::Error(e.into()))
}
