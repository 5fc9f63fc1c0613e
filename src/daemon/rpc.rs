//! `codexd rpc`: answers request lines from stdin on stdout until EOF, then exits.
//!
//! One process per ssh call (CGI style): no daemon, no port. Only protocol lines go to stdout;
//! anything for humans goes to stderr.

use std::io::{self, BufRead, Write};

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

/// Serves requests from `input` to `output` until EOF or until the reader of `output` is gone.
pub fn serve(daemon: &Daemon, input: &mut impl BufRead, output: &mut impl Write) -> io::Result<()> {
    while let Some(line) = wire::read_line_capped(input, MAX_REQUEST_LINE)? {
        let mut sink = StdoutSink { input: &mut *input, out: output, id: None };
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
        let mut payload_left = false;
        let answer = match request {
            Ok(RequestLine { id, request }) => {
                sink.id = id;
                let answer = answer(daemon, &request, &mut sink);
                // A refused request's bytes may be partly unread: the session cannot go on.
                payload_left = request.has_payload() && matches!(answer, Response::Error(_));
                answer
            }
            Err(rejected) => {
                let (id, err) = *rejected;
                sink.id = id;
                Response::Error(err.into())
            }
        };
        sink.send(answer)?;
        if payload_left {
            break;
        }
    }
    Ok(())
}

fn answer(daemon: &Daemon, request: &Request, sink: &mut dyn Sink) -> Response {
    daemon.handle(request, sink).unwrap_or_else(|e| Response::Error(e.into()))
}
