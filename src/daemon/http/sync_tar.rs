//! The original tool's tree routes: `POST /v1/sync/upload?dst=P[&mkdir_p=true]` extracts a
//! gzip'ed tar body into a directory, `POST /v1/sync/download` (`{"path", "excludes"}`)
//! answers a directory as one. Same token, Host and `allowed_cwd_roots` rules as the file
//! routes; the tar is read and written in a blocking thread bridged with the body stream
//! ([`crate::tree::tarball`] does the work), so memory stays small whatever the tree's size.

use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Json, Response as HttpResponse};
use axum::routing::post;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::{
    BodyReader, CHANNEL_LINES, HttpState, REFUSED_BODY_DRAIN, check_file_path, error_response,
    parse_body,
};
use crate::daemon::files::resolve;
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::{SyncDownloadRequest, SyncUploaded, TreeFilter};
use crate::tree::{manifest, tarball};
use crate::wire::MAX_REQUEST_LINE;

/// The most compressed bytes one `/v1/sync/upload` body may carry (each file is also held to
/// `max_file_size`).
pub const UPLOAD_BODY_LIMIT: u64 = 4 << 30;

/// The tar's content type, both ways.
const TAR_GZ: &str = "application/x-tar+gzip";

pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/v1/sync/upload", post(upload))
        .route("/v1/sync/download", post(download))
        // The download's JSON body; the upload streams its body and counts it itself.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_LINE))
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    dst: String,
    /// `true` (or `1`, as Go's `strconv.ParseBool` reads it) creates `dst`.
    mkdir_p: Option<String>,
}

impl UploadQuery {
    fn mkdir_p(&self) -> bool {
        matches!(self.mkdir_p.as_deref(), Some("true" | "1" | "t" | "TRUE" | "True"))
    }
}

fn over_limit() -> Error {
    Error::new(
        ErrorCode::RequestTooLarge,
        format!("the upload is over {UPLOAD_BODY_LIMIT} bytes, the limit of /v1/sync/upload"),
    )
    .with_hint("upload the tree in parts, or use `codex-remote sync push` (no size limit)")
}

/// `POST /v1/sync/upload?dst=P[&mkdir_p=true]`: the tar (gzip'ed or not) in the body, written
/// into `dst`; answers `{"ok", "dst", "files_written", "bytes_written", "dirs", "links"}`.
async fn upload(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    q: std::result::Result<Query<UploadQuery>, QueryRejection>,
    body: Body,
) -> HttpResponse {
    let q = match super::query(q) {
        Ok(q) => q,
        Err(e) => return error_response(e),
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    if declared.and_then(|v| v.parse::<u64>().ok()).is_some_and(|n| n > UPLOAD_BODY_LIMIT) {
        return error_response(over_limit());
    }
    let over = Arc::new(AtomicBool::new(false));
    let capped =
        Capped { inner: BodyReader::raw(body), left: UPLOAD_BODY_LIMIT, over: over.clone() };
    let mut body = BufReader::with_capacity(256 * 1024, capped);
    let joined = tokio::task::spawn_blocking(move || {
        let config = &state.daemon.config;
        let limits = tarball::Limits {
            max_file_size: config.max_file_size,
            max_total: config.max_upload_bytes,
        };
        let extracted = upload_dst(&q, &config.allowed_cwd_roots)
            .and_then(|dst| Ok((tarball::extract(&mut body, &dst, limits)?, dst)));
        let (stats, dst) = extracted.map_err(|e| {
            if over.load(Ordering::SeqCst) {
                return over_limit();
            }
            // The client may still be sending: it gets the error, not a reset.
            let _ = io::copy(&mut (&mut body).take(REFUSED_BODY_DRAIN as u64), &mut io::sink());
            e
        })?;
        Ok(SyncUploaded {
            ok: true,
            dst: dst.display().to_string(),
            files_written: stats.files,
            bytes_written: stats.bytes,
            dirs: stats.dirs,
            links: stats.links,
        })
    })
    .await;
    match joined.unwrap_or_else(|e| Err(Error::internal("handler", e))) {
        Ok(done) => Json(done).into_response(),
        Err(e) => error_response(e),
    }
}

/// The checked directory an upload goes into, made when `mkdir_p` asks for it.
fn upload_dst(q: &UploadQuery, roots: &[PathBuf]) -> Result<PathBuf> {
    check_file_path(&q.dst, roots)?;
    let dst = resolve(&q.dst)?;
    match std::fs::metadata(&dst) {
        Ok(m) if m.is_dir() => Ok(dst),
        Ok(_) => Err(Error::invalid(format!("dst {} is not a directory", dst.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound && q.mkdir_p() => {
            std::fs::create_dir_all(&dst)
                .map_err(|e| Error::file_io(format!("creating {}", dst.display()), e))?;
            Ok(dst)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::new(
            ErrorCode::FileNotFound,
            format!("dst {} does not exist", dst.display()),
        )
        .with_hint("pass mkdir_p=true to create it")),
        Err(e) => Err(Error::file_io(format!("reading {}", dst.display()), e)),
    }
}

/// `POST /v1/sync/download` with `{"path", "excludes"}`: the tree at `path` as a gzip'ed tar
/// (`application/x-tar+gzip`). A refusal (outside the allowed roots, missing, not a
/// directory, a bad glob) is a JSON error; a failure after the tar began cuts the body short.
async fn download(State(state): State<Arc<HttpState>>, body: Bytes) -> HttpResponse {
    let req = match parse_body::<SyncDownloadRequest>(&body, "sync download") {
        Ok(req) => req,
        Err(e) => return error_response(e),
    };
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_LINES);
    let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
    tokio::task::spawn_blocking(move || {
        let (root, tree) = match walk_checked(&req, &state.daemon.config.allowed_cwd_roots) {
            Ok(walked) => walked,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        if ready_tx.send(Ok(())).is_err() {
            return;
        }
        let mut out = io::BufWriter::with_capacity(256 * 1024, BodyWriter(tx.clone()));
        let packed = tarball::pack(&root, &tree, &mut out)
            .and_then(|_| out.flush().map_err(|e| Error::io("sending the tree", e)));
        if let Err(e) = packed {
            let _ = tx.blocking_send(Err(io::Error::other(e.message)));
        }
    });
    match ready_rx.await {
        Ok(Ok(())) => {
            let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
            ([(header::CONTENT_TYPE, TAR_GZ)], body).into_response()
        }
        Ok(Err(e)) => error_response(e),
        Err(e) => error_response(Error::internal("handler", e)),
    }
}

/// The checked root of a download and its entries (symlinks not followed, `.git` and
/// `.gitignore`d files included as the original did, `excludes` left out).
fn walk_checked(
    req: &SyncDownloadRequest,
    roots: &[PathBuf],
) -> Result<(PathBuf, manifest::Manifest)> {
    check_file_path(&req.path, roots)?;
    let root = resolve(&req.path)?;
    let meta = std::fs::metadata(&root)
        .map_err(|e| Error::file_io(format!("reading {}", root.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::invalid(format!("path {} is not a directory", root.display())));
    }
    let filter = TreeFilter {
        exclude: req.excludes.clone(),
        include_git: true,
        no_gitignore: true,
        ..Default::default()
    };
    let tree = manifest::walk(&root, &filter)?;
    Ok((root, tree))
}

/// The upload body, failing once more than `left` bytes came (and saying so in `over`).
struct Capped {
    inner: BodyReader,
    left: u64,
    over: Arc<AtomicBool>,
}

impl Read for Capped {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => self.left = left,
            None => {
                self.over.store(true, Ordering::SeqCst);
                return Err(io::Error::other("the upload is over its limit"));
            }
        }
        Ok(n)
    }
}

/// Bytes down the download's body channel; an `Err` item cuts the body.
struct BodyWriter(mpsc::Sender<io::Result<Bytes>>);

impl Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
