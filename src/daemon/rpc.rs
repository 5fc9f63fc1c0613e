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

/// Writes answer lines for one request, each carrying the request's id.
struct StdoutSink<'a, W: Write> {
    out: &'a mut W,
    id: Option<serde_json::Value>,
}

impl<W: Write> Sink for StdoutSink<'_, W> {
    fn send(&mut self, response: Response) -> io::Result<()> {
        wire::write_line(self.out, &ResponseLine { id: self.id.clone(), response })
    }

    fn closed(&self) -> bool {
        sys::stdout_closed()
    }
}

/// Serves requests from `input` to `output` until EOF or until the reader of `output` is gone.
pub fn serve(daemon: &Daemon, input: &mut impl BufRead, output: &mut impl Write) -> io::Result<()> {
    while let Some(line) = wire::read_line_capped(input, MAX_REQUEST_LINE)? {
        let mut sink = StdoutSink { out: output, id: None };
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
        let answer = match request {
            Ok(RequestLine { id, request }) => {
                sink.id = id;
                answer(daemon, &request, &mut sink)
            }
            Err(rejected) => {
                let (id, err) = *rejected;
                sink.id = id;
                Response::Error(err.into())
            }
        };
        sink.send(answer)?;
    }
    Ok(())
}

fn answer(daemon: &Daemon, request: &Request, sink: &mut dyn Sink) -> Response {
    daemon.handle(request, sink).unwrap_or_else(|e| Response::Error(e.into()))
}
