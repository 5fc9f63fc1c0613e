//! The original tool's file API, with its request and answer shapes, so its client (`file
//! write|read`, `exec start --script`) works against `codexd serve` unchanged:
//!
//! - `POST /v1/file/write` `{"path", "content": <base64>, "mode": <integer, e.g. 420>,
//!   "mkdir_p": bool}` answers `{"ok": true, "path", "bytes_written"}` (plus ours: `type`,
//!   `size`, `mode` as octal text);
//! - `POST /v1/file/read` `{"path"}` answers `{"ok": true, "path", "content": <base64>, "size"}`
//!   (plus `type`), the whole file up to `max_file_size`.
//!
//! The path must be absolute and inside the home, the data dir, `/tmp` or `allowed_cwd_roots`
//! (the original's roots; symlinks resolved). A refusal is our JSON error with the original's
//! `error` text beside it and the original's status (400, 403, 404, 413). The write is ours:
//! atomic, a symlink at the path refused. Our own shape (`content` as text or `content_b64`,
//! `mode` as octal text, `mkdir`) lives at its own path, `POST /v1/files/write`, so a request is
//! never guessed from the fields it lacks.
//!
//! `POST /v1/exec/{id}/cancel` answers our status object with the original's `canceled: true`
//! beside it ([`with_canceled`]): its client prints the answer, and its scripts read that field.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Json, Response as HttpResponse};
use base64::Engine;
use serde::Deserialize;

use super::{HttpState, answer_response, check_inside, http_status};
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::{ErrorBody, FileWriteRequest, Response};

/// The mode of a file the request names none for (the original's default, whatever the file
/// it replaces had).
const DEFAULT_MODE: u32 = 0o644;

/// `POST /v1/file/write`'s body, as the original's client marshals it (`mode` and `mkdir_p`
/// left out when zero).
#[derive(Debug, Deserialize)]
struct WriteBody {
    #[serde(default)]
    path: String,
    /// Base64 (standard alphabet, padded).
    #[serde(default)]
    content: String,
    /// The permission bits as an integer (`420` is 0644); 0 or absent: 0644.
    #[serde(default)]
    mode: i64,
    #[serde(default)]
    mkdir_p: bool,
}

/// `POST /v1/file/read`'s body.
#[derive(Debug, Deserialize)]
struct ReadBody {
    #[serde(default)]
    path: String,
}

/// A refusal as the original's client reads it (the status, `error`) and as ours does
/// (`type`, `code`, `message`, `hint`).
fn refusal(e: Error) -> HttpResponse {
    let status = http_status(e.code);
    let mut body = serde_json::to_value(Response::Error(ErrorBody::from(e))).unwrap_or_default();
    body["error"] = body["message"].clone();
    (status, Json(body)).into_response()
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| Error::new(ErrorCode::BadRequest, format!("invalid request body: {e}")))
}

/// The request's path, checked as the original checks it: given, absolute, inside its roots.
fn allowed_path(state: &HttpState, path: &str) -> Result<PathBuf> {
    if path.is_empty() {
        return Err(Error::new(ErrorCode::BadRequest, "path is required"));
    }
    if !Path::new(path).is_absolute() {
        return Err(Error::new(ErrorCode::BadRequest, format!("path must be absolute: {path}")));
    }
    let config = &state.daemon.config;
    let roots: Vec<PathBuf> = config
        .allowed_cwd_roots
        .iter()
        .cloned()
        .chain([config.data_dir.clone(), PathBuf::from("/tmp")])
        .collect();
    check_inside(Path::new(path), "path", &roots)?;
    Ok(PathBuf::from(path))
}

/// Runs `work` in a blocking thread and answers its JSON, or its refusal.
async fn blocking(
    work: impl FnOnce() -> Result<serde_json::Value> + Send + 'static,
) -> HttpResponse {
    let joined = tokio::task::spawn_blocking(work).await;
    match joined.unwrap_or_else(|e| Err(Error::internal("handler", e))) {
        Ok(v) => Json(v).into_response(),
        Err(e) => refusal(e),
    }
}

pub async fn file_write(State(state): State<Arc<HttpState>>, body: Bytes) -> HttpResponse {
    blocking(move || {
        let req: WriteBody = parse(&body)?;
        let path = allowed_path(&state, &req.path)?;
        let data =
            base64::engine::general_purpose::STANDARD.decode(req.content.as_bytes()).map_err(
                |e| Error::new(ErrorCode::BadRequest, format!("invalid base64 content: {e}")),
            )?;
        // As the original: the permission bits of a positive mode, else 0644.
        let mode = if req.mode > 0 { req.mode as u32 & 0o777 } else { DEFAULT_MODE };
        let write = FileWriteRequest {
            path: path.display().to_string(),
            size: data.len() as u64,
            mode: Some(mode),
            mkdir: req.mkdir_p,
            follow_symlinks: false,
            keep_special_bits: false,
        };
        let written =
            crate::daemon::files::file_write(&write, &mut &data[..], &state.daemon.config)?;
        Ok(serde_json::json!({
            "type": "file_written",
            "ok": true,
            "path": req.path,
            "bytes_written": data.len(),
            "size": written.size,
            "mode": format!("{:04o}", written.mode),
        }))
    })
    .await
}

pub async fn file_read(State(state): State<Arc<HttpState>>, body: Bytes) -> HttpResponse {
    blocking(move || {
        let req: ReadBody = parse(&body)?;
        let path = allowed_path(&state, &req.path)?;
        let what = || format!("reading {}", path.display());
        let file = std::fs::File::open(&path).map_err(|e| Error::file_io(what(), e))?;
        let meta = file.metadata().map_err(|e| Error::file_io(what(), e))?;
        if meta.is_dir() {
            return Err(Error::new(ErrorCode::BadRequest, "path is a directory"));
        }
        let max = state.daemon.config.max_file_size;
        if meta.len() > max {
            return Err(Error::new(
                ErrorCode::FileTooLarge,
                format!("{} bytes is over max_file_size ({max} bytes)", meta.len()),
            )
            .with_hint("read it in pages with `codex-remote file read --offset N`"));
        }
        let mut data = Vec::with_capacity(meta.len() as usize);
        // The file may grow after the check: never more than the cap.
        file.take(max).read_to_end(&mut data).map_err(|e| Error::file_io(what(), e))?;
        Ok(serde_json::json!({
            "type": "file_content",
            "ok": true,
            "path": req.path,
            "content": base64::engine::general_purpose::STANDARD.encode(&data),
            "size": data.len(),
        }))
    })
    .await
}

/// A cancel's answer: the job's status, with the original's `canceled: true` beside it.
pub fn with_canceled(answer: Result<Response>) -> HttpResponse {
    match answer {
        Ok(status @ Response::Status(_)) => {
            let mut v = serde_json::to_value(&status).unwrap_or_default();
            v["canceled"] = serde_json::Value::Bool(true);
            Json(v).into_response()
        }
        other => answer_response(other),
    }
}
