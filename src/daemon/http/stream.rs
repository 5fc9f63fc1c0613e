//! Running handlers from async routes: the sinks that collect or stream answer lines, and
//! `POST /v1/rpc`, whose body is a request line followed by the bytes streamed to the handler
//! (files and sync).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response as HttpResponse};
use tokio::sync::mpsc;

use super::guard::{SignedBody, body_not_signed};
use super::{CHANNEL_LINES, HttpState, check_cwd, check_file_path};
use crate::auth;
use crate::daemon::Sink;
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::{OnMachine, Request, RequestLine, Response, ResponseLine, RunEvent};

/// Collects intermediate lines in memory (non-streaming answers).
struct CollectSink {
    lines: Vec<Response>,
    stopping: Arc<AtomicBool>,
}

impl Sink for CollectSink {
    fn send(&mut self, response: Response) -> std::io::Result<()> {
        self.lines.push(response);
        Ok(())
    }

    fn closed(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// Sends each answer line down a channel to a streaming HTTP body.
struct ChannelSink {
    tx: mpsc::Sender<Bytes>,
    lines: Lines,
    stopping: Arc<AtomicBool>,
}

/// How a streamed answer's lines are written.
pub(super) enum Lines {
    /// Protocol answer lines, with the request's `id` (`/v1/rpc`, `logs?follow=true`).
    Answers(Option<serde_json::Value>),
    /// `exec run`'s events (`POST /v1/exec/run`): a `log` line as is, the `logs_end` of the
    /// follow as `finished` with the job's final status; an error as an error.
    Run,
}

impl Sink for ChannelSink {
    fn send(&mut self, response: Response) -> std::io::Result<()> {
        let mut line = match (&self.lines, response) {
            // The original tool's streams (`logs?follow=true` without an id, `exec/run`) stay
            // as they were: heartbeats are for `/v1/rpc`'s clients.
            (Lines::Answers(None) | Lines::Run, Response::Heartbeat(_)) => return Ok(()),
            (Lines::Answers(id), response) => {
                serde_json::to_vec(&ResponseLine { id: id.clone(), response })?
            }
            (Lines::Run, Response::Log(line)) => serde_json::to_vec(&RunEvent::Log(&line))?,
            (Lines::Run, Response::LogsEnd(end)) => {
                serde_json::to_vec(&RunEvent::Finished(OnMachine::new(&end.job, "")))?
            }
            (Lines::Run, other) => serde_json::to_vec(&other)?,
        };
        line.push(b'\n');
        self.tx
            .blocking_send(Bytes::from(line))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }

    fn closed(&self) -> bool {
        self.tx.is_closed() || self.stopping.load(Ordering::SeqCst)
    }
}

impl HttpState {
    /// Runs `request` in a blocking thread; the intermediate lines come back with the answer.
    pub(super) async fn call(
        self: &Arc<Self>,
        request: Request,
    ) -> (Vec<Response>, Result<Response>) {
        let state = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut sink = CollectSink { lines: Vec::new(), stopping: state.stopping.clone() };
            let answer = state.checked_handle(&request, &mut sink);
            (sink.lines, answer)
        })
        .await;
        joined.unwrap_or_else(|e| (Vec::new(), Err(Error::internal("handler", e))))
    }

    /// Runs `request` in a blocking thread, streaming every answer line as NDJSON.
    pub(super) fn stream(
        self: &Arc<Self>,
        id: Option<serde_json::Value>,
        request: Request,
    ) -> HttpResponse {
        self.stream_lines(Lines::Answers(id), Bytes::new(), request)
    }

    /// As [`stream`](Self::stream), the lines written as `lines` says, after `first`.
    pub(super) fn stream_lines(
        self: &Arc<Self>,
        lines: Lines,
        first: Bytes,
        request: Request,
    ) -> HttpResponse {
        let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_LINES);
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            if !first.is_empty() && tx.blocking_send(first).is_err() {
                return;
            }
            let mut sink = ChannelSink { tx, lines, stopping: state.stopping.clone() };
            let answer = state
                .checked_handle(&request, &mut sink)
                .unwrap_or_else(|e| Response::Error(e.into()));
            let _ = sink.send(answer);
        });
        let body =
            tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |b| {
                Ok::<_, Infallible>(b)
            });
        ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(body)).into_response()
    }

    /// `Daemon::handle`, with serve's own check on where a job may run.
    fn checked_handle(&self, request: &Request, sink: &mut dyn Sink) -> Result<Response> {
        if let Request::ExecStart(start) = request {
            check_cwd(start, &self.daemon.config.allowed_cwd_roots)?;
        }
        if let Some(path) = request.target_path() {
            check_file_path(path, &self.daemon.config.allowed_cwd_roots)?;
        }
        self.daemon.handle(request, sink)
    }
}

/// `POST /v1/rpc`: one request line in, its answer lines out as NDJSON (as `codexd rpc`); the
/// bytes after the line stream to the handler (files and sync, see [`BytesSink`]).
pub(super) async fn rpc(
    State(state): State<Arc<HttpState>>,
    signed: Option<axum::Extension<SignedBody>>,
    body: Body,
) -> HttpResponse {
    rpc_with_bytes(state, signed.map(|s| s.0), body)
}

/// A blocking reader over a request body, fed by a task that forwards its chunks.
pub(super) struct BodyReader {
    rx: mpsc::Receiver<std::result::Result<Bytes, String>>,
    chunk: Bytes,
}

impl BodyReader {
    pub(super) fn of(body: Body) -> std::io::BufReader<BodyReader> {
        std::io::BufReader::with_capacity(256 * 1024, BodyReader::raw(body))
    }

    /// The reader without a buffer (for a caller that wraps it first).
    pub(super) fn raw(body: Body) -> BodyReader {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut stream = body.into_data_stream();
            while let Some(chunk) = tokio_stream::StreamExt::next(&mut stream).await {
                if tx.send(chunk.map_err(|e| e.to_string())).await.is_err() {
                    break;
                }
            }
        });
        BodyReader { rx, chunk: Bytes::new() }
    }
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// The answer side of a streamed `/v1/rpc`: the bytes after the request line as its
/// authentication allows them to be read, and answer lines and raw bytes into one body.
struct BytesSink {
    /// `None`: a signed request of version 1 (an older client), whose bytes after the line its
    /// signature does not cover: not read at all.
    input: Option<Box<dyn std::io::BufRead + Send>>,
    /// Raised when a chunk failed its MAC or a version-1 request's bytes were asked for.
    forged: Arc<AtomicBool>,
    out: ChannelSink,
    raw: ChannelWriter,
}

impl BytesSink {
    /// The reader of the bytes after the line: as they come on an unsigned door (the Unix
    /// socket, Bearer); with a version-2 signature, only the data of chunks whose MAC verified.
    fn tail(
        input: std::io::BufReader<BodyReader>,
        signed: Option<&SignedBody>,
    ) -> (Option<Box<dyn std::io::BufRead + Send>>, Arc<AtomicBool>) {
        match signed {
            None => (Some(Box::new(input)), Arc::default()),
            Some(SignedBody { stream: Some(key), .. }) => {
                let chunks = auth::MacReader::new(input, key.clone());
                let forged = chunks.alarm();
                (Some(Box::new(chunks)), forged)
            }
            Some(SignedBody { stream: None, .. }) => (None, Arc::default()),
        }
    }
}

/// The answer to a request whose bytes after the line were forged or not signed: nothing of a
/// chunk that failed reached the handler.
fn tail_refused() -> Error {
    Error::new(
        ErrorCode::Unauthorized,
        "the bytes after the request line are not the ones the request's signature covers \
         (changed, reordered, cut short or extended on the way, or sent by a client older than \
         the chunked signature): the request stopped there",
    )
    .with_hint(
        "another process may sit between this client and codexd; upgrade codex-remote if it is \
         older than codexd",
    )
}

/// Raw bytes down the answer channel.
struct ChannelWriter(mpsc::Sender<Bytes>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink for BytesSink {
    fn send(&mut self, response: Response) -> std::io::Result<()> {
        self.out.send(response)
    }
    fn closed(&self) -> bool {
        self.out.closed()
    }
    fn payload(&mut self) -> Option<&mut dyn std::io::BufRead> {
        if self.input.is_none() {
            self.forged.store(true, Ordering::SeqCst);
        }
        self.input.as_deref_mut().map(|r| r as &mut dyn std::io::BufRead)
    }
    fn raw_out(&mut self) -> Option<&mut dyn std::io::Write> {
        Some(&mut self.raw)
    }
}

/// With `signed`, the request line must have its digest and the bytes after it come in chunks
/// under its key ([`BytesSink::tail`]); a forged chunk ends the request `unauthorized`.
fn rpc_with_bytes(state: Arc<HttpState>, signed: Option<SignedBody>, body: Body) -> HttpResponse {
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_LINES);
    let mut input = BodyReader::of(body);
    tokio::task::spawn_blocking(move || {
        let line = crate::wire::read_line_capped(&mut input, crate::wire::MAX_REQUEST_LINE);
        let parsed = match line {
            Ok(Some(crate::wire::Line::Text(bytes)))
                if signed
                    .as_ref()
                    .is_some_and(|s| !auth::same_secret(&auth::sha256_hex(&bytes), &s.digest)) =>
            {
                Err(Box::new((None, body_not_signed())))
            }
            Ok(Some(crate::wire::Line::Text(bytes))) => RequestLine::parse(&bytes),
            _ => Err(Box::new((None, Error::new(ErrorCode::BadRequest, "no request line")))),
        };
        let stopping = state.stopping.clone();
        let (id, request) = match parsed {
            Ok(RequestLine { id, request }) => (id, Ok(request)),
            Err(rejected) => (rejected.0, Err(rejected.1)),
        };
        let out = ChannelSink { tx: tx.clone(), lines: Lines::Answers(id), stopping };
        let (input, forged) = BytesSink::tail(input, signed.as_ref());
        let mut sink = BytesSink { input, forged, out, raw: ChannelWriter(tx) };
        let answer = request.and_then(|r| state.checked_handle(&r, &mut sink));
        let answer = match answer {
            _ if sink.forged.load(Ordering::SeqCst) => Response::Error(tail_refused().into()),
            Ok(answer) => answer,
            Err(e) => Response::Error(e.into()),
        };
        let _ = sink.send(answer);
    });
    let body = tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |b| {
        Ok::<_, Infallible>(b)
    });
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(body)).into_response()
}
