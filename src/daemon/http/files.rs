//! The file routes: the original tool's (`POST /v1/file/write|read`, [`original_files`]) and
//! ours (`POST /v1/files/write`, `GET /v1/files/read`). Files and trees over `/v1/rpc` stream
//! through [`super::stream`]. Same token, Host and `allowed_cwd_roots` rules as jobs (the
//! guard, and `checked_handle`).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response as HttpResponse;
use axum::routing::{get, post};
use serde::Deserialize;

use super::{
    FILE_BODY_LIMIT, HttpState, answer, answer_response, check_file_path, error_response,
    original_files, parse_body, query,
};
use crate::error::Error;
use crate::protocol::{Request, Response};

/// The file routes: the original tool's (`POST /v1/file/write|read`, its shapes, see
/// [`original_files`]) and ours (`POST /v1/files/write`, `GET /v1/files/read`; the `GET` of
/// `/v1/file/read` is ours too, the method tells them apart).
pub(super) fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/v1/file/write", post(original_files::file_write))
        .route("/v1/file/read", post(original_files::file_read).get(file_read))
        .route("/v1/files/write", post(file_write))
        .route("/v1/files/read", get(file_read))
        .layer(axum::extract::DefaultBodyLimit::max(FILE_BODY_LIMIT))
}

/// `POST /v1/files/write` (ours): `{"path", "content" | "content_b64", "mode": "0644", "mkdir"}`.
#[derive(Debug, Default, Deserialize)]
struct FileWriteBody {
    path: String,
    content: Option<String>,
    content_b64: Option<String>,
    mode: Option<String>,
    #[serde(default)]
    mkdir: bool,
}

async fn file_write(State(state): State<Arc<HttpState>>, body: Bytes) -> HttpResponse {
    use base64::Engine;
    let parsed = parse_body::<FileWriteBody>(&body, "file write").and_then(|b| {
        let bytes = match (b.content, b.content_b64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| Error::invalid(format!("content_b64: {e}")))?,
            _ => return Err(Error::invalid("give one of content and content_b64")),
        };
        let mode = b.mode.as_deref().map(crate::protocol::files::octal::parse).transpose();
        let req = crate::protocol::FileWriteRequest {
            path: b.path,
            size: bytes.len() as u64,
            mode: mode.map_err(Error::invalid)?,
            mkdir: b.mkdir,
            follow_symlinks: false,
            keep_special_bits: false,
        };
        Ok((req, bytes))
    });
    let (req, bytes) = match parsed {
        Ok(p) => p,
        Err(e) => return error_response(e),
    };
    let state2 = state.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let roots = &state2.daemon.config.allowed_cwd_roots;
        check_file_path(&req.path, roots)?;
        crate::daemon::files::file_write(&req, &mut &bytes[..], &state2.daemon.config)
    })
    .await;
    let answer = joined.unwrap_or_else(|e| Err(Error::internal("handler", e)));
    answer_response(answer.map(Response::FileWritten))
}

#[derive(Debug, Default, Deserialize)]
struct FileReadQuery {
    path: String,
    offset: Option<u64>,
    limit: Option<u64>,
}

/// `GET /v1/files/read?path=P&offset=N&limit=N` (also `GET /v1/file/read`): the `file_data`
/// object.
async fn file_read(
    State(state): State<Arc<HttpState>>,
    q: std::result::Result<Query<FileReadQuery>, QueryRejection>,
) -> HttpResponse {
    let req = query(q).map(|q| {
        Request::FileRead(crate::protocol::FileReadRequest {
            path: q.path,
            offset: q.offset,
            limit: q.limit,
        })
    });
    answer(&state, req).await
}
