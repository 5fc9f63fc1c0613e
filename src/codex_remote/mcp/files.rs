//! The MCP tools for files and sync: `file_read`, `file_write`, `sync_push`, `sync_pull`, in a
//! router of their own that [`super::McpServer::new`] adds to the exec tools.

use base64::Engine;
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::inputs::{Arguments, bad_argument, input_schema};
use super::{McpServer, ToolResult, outputs};
use crate::codex_remote::file::{Content, write_content};
use crate::codex_remote::sync::{Quiet, SyncPlan, SyncSummary, ignored_note, sync};
use crate::protocol::files::{MAX_READ_CHUNK, octal};
use crate::protocol::{Direction, FileReadRequest, OnMachine, Request, Response, TreeFilter};
use crate::remote::client::unexpected;

/// `file_read` returns at most this many bytes unless told otherwise.
pub const DEFAULT_READ_BYTES: u64 = 64 * 1024;

const MACHINE_DOC: &str = "The machine: a name from the `machines` tool. Default: the config's \
                           `default_machine`, else `local` (this computer).";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileReadInput {
    #[schemars(description = MACHINE_DOC)]
    pub machine: Option<String>,
    /// The file on the machine; `~` and relative paths are from the remote home.
    pub path: String,
    /// Byte offset to start at: 0 (the default), or the `next_offset` of the previous call.
    pub offset: Option<u64>,
    /// At most this many bytes in this answer (default 65536, at most 8388608). `eof: false`
    /// means there is more: call again with `offset` = `next_offset`.
    #[schemars(range(min = 1, max = 8388608))]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileWriteInput {
    #[schemars(description = MACHINE_DOC)]
    pub machine: Option<String>,
    /// The file on the machine; `~` and relative paths are from the remote home. It is replaced
    /// atomically (readers see the old or the new file, never half).
    pub path: String,
    /// The new content as text. Give exactly one of `content` and `content_b64`.
    pub content: Option<String>,
    /// The new content as base64 (for binary files).
    pub content_b64: Option<String>,
    /// The mode in octal, e.g. "0755" (default: the replaced file's, else "0644").
    pub mode: Option<String>,
    /// Create missing parent directories (default false).
    pub mkdir: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncInput {
    #[schemars(description = MACHINE_DOC)]
    pub machine: Option<String>,
    /// The source directory (or a single file): local for sync_push, on the machine for
    /// sync_pull. rsync's rule: `dir/` syncs its contents into dst, `dir` the directory itself
    /// into dst/dir.
    pub src: String,
    /// The destination directory: on the machine for sync_push, local for sync_pull. Created
    /// when missing. For a single file: the file's new name unless it is a directory or ends in /.
    pub dst: String,
    /// Globs (gitignore syntax) of paths to leave out, e.g. ["*.ckpt", "data/"]. `.gitignore`
    /// files are honoured and `.git/` is left out anyway.
    pub exclude: Option<Vec<String>>,
    /// Delete destination files the source does not have (default false: nothing is removed).
    pub delete: Option<bool>,
    /// Only report what would be sent and deleted (default false).
    pub dry_run: Option<bool>,
    /// Sync `.git/` too (default false).
    pub include_git: Option<bool>,
    /// Sync what `.gitignore` files leave out too (default false).
    pub no_gitignore: Option<bool>,
}

#[tool_router(router = files_tool_router, vis = "pub(super)")]
impl McpServer {
    #[tool(
        input_schema = input_schema::<FileReadInput>(),
        output_schema = outputs::file_data(),
        description = "Read a page of a file on a machine (default 64 KiB): `data_b64` holds the \
                       bytes, `text` the same as text when they are UTF-8. `size` is the file's \
                       size; while `eof` is false, call again with `offset` = `next_offset` to \
                       read on without losing or repeating a byte.",
        annotations(title = "Read a file", read_only_hint = true, open_world_hint = true)
    )]
    async fn file_read(&self, Arguments(input): Arguments<FileReadInput>) -> ToolResult {
        let limit = input.max_bytes.unwrap_or(DEFAULT_READ_BYTES);
        if !(1..=MAX_READ_CHUNK).contains(&limit) {
            return Err(bad_argument(format!("max_bytes must be 1..={MAX_READ_CHUNK}")));
        }
        let req = FileReadRequest { path: input.path, offset: input.offset, limit: Some(limit) };
        self.on_machine(input.machine, move |m| {
            let data = match m.call(&Request::FileRead(req), &mut |_| Ok(()))? {
                Response::FileData(d) => d,
                other => return Err(unexpected(&other).into()),
            };
            let mut value = OnMachine::new(&data, &m.name).to_value();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.data_b64.as_bytes())
                .unwrap_or_default();
            if let Ok(text) = String::from_utf8(bytes) {
                value["text"] = text.into();
            }
            let line = format!(
                "{}: bytes {}..{} of {}{}",
                data.path,
                data.offset,
                data.next_offset,
                data.size,
                if data.eof { " (end)" } else { "; more: call again with offset=next_offset" }
            );
            Ok((value, line))
        })
        .await
    }

    #[tool(
        input_schema = input_schema::<FileWriteInput>(),
        output_schema = outputs::file_written(),
        description = "Write a file on a machine, atomically (a temp file renamed over the old \
                       one), with `content` (text) or `content_b64` (binary). A symlink at `path` \
                       is refused; a missing directory is an error unless `mkdir` is true. Files \
                       over codexd's max_file_size (64 MiB) are refused: use sync_push.",
        annotations(
            title = "Write a file",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn file_write(&self, Arguments(input): Arguments<FileWriteInput>) -> ToolResult {
        let bytes =
            match (&input.content, &input.content_b64) {
                (Some(text), None) => text.clone().into_bytes(),
                (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| bad_argument(format!("content_b64 is not base64: {e}")))?,
                _ => return Err(bad_argument("give exactly one of `content` and `content_b64`")),
            };
        let mode = match &input.mode {
            Some(m) => Some(octal::parse(m).map_err(bad_argument)?),
            None => None,
        };
        let mkdir = input.mkdir.unwrap_or(false);
        let path = input.path;
        self.on_machine(input.machine, move |m| {
            let answer =
                write_content(m, &path, Content::Bytes(&bytes), mode, mkdir, false, false)?;
            let line = match &answer {
                Response::FileWritten(w) => {
                    format!("wrote {} bytes to {} on {}", w.size, w.path, m.name)
                }
                other => other.kind().to_string(),
            };
            Ok((OnMachine::new(&answer, &m.name).to_value(), line))
        })
        .await
    }

    #[tool(
        input_schema = input_schema::<SyncInput>(),
        output_schema = outputs::sync_summary(),
        description = "Copy a local directory tree (`src`) to a machine (`dst`), incrementally \
                       like rsync, with rsync's path rule: `src/` (a trailing slash) or `.` \
                       copies its contents into `dst`; `src` without one copies the directory \
                       itself into `dst/<its name>`; a single file goes into `dst` (a directory \
                       or ending in /) or becomes `dst`. Only changed files travel, each replaced atomically; symlinks \
                       are copied as links; `.gitignore` is honoured and `.git/` left out \
                       (counted in `ignored`). Nothing \
                       is deleted unless `delete` is true. Returns {files_sent, bytes_sent, \
                       deleted, unchanged, elapsed_ms, changed, skipped, ignored}. Run it before exec_start \
                       so the job sees your latest edits.",
        annotations(
            title = "Push a directory to a machine",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn sync_push(&self, Arguments(input): Arguments<SyncInput>) -> ToolResult {
        self.sync_tool(Direction::Push, input).await
    }

    #[tool(
        input_schema = input_schema::<SyncInput>(),
        output_schema = outputs::sync_summary(),
        description = "Copy a directory tree on a machine (`src`) to a local directory (`dst`), \
                       with rsync's path rule (`src/` copies its contents into `dst`; `src` \
                       without a trailing slash copies the directory into `dst/<its name>`), \
                       incrementally (only changed files travel, each replaced atomically): e.g. \
                       a job's results; a single file as `src` too. Nothing local is deleted \
                       unless `delete` is true. Returns {files_sent, bytes_sent, deleted, \
                       unchanged, elapsed_ms, changed, skipped, ignored}.",
        annotations(
            title = "Pull a directory from a machine",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn sync_pull(&self, Arguments(input): Arguments<SyncInput>) -> ToolResult {
        self.sync_tool(Direction::Pull, input).await
    }
}

impl McpServer {
    async fn sync_tool(&self, direction: Direction, input: SyncInput) -> ToolResult {
        let plan = SyncPlan {
            direction,
            src: input.src,
            dst: input.dst,
            filter: TreeFilter {
                exclude: input.exclude.unwrap_or_default(),
                include_git: input.include_git.unwrap_or(false),
                no_gitignore: input.no_gitignore.unwrap_or(false),
                ..Default::default()
            },
            keep_special_bits: false,
            delete: input.delete.unwrap_or(false),
            dry_run: input.dry_run.unwrap_or(false),
        };
        self.on_machine(input.machine, move |m| {
            let summary: SyncSummary = sync(m, &plan, &mut Quiet)?;
            let line = format!(
                "{} {} -> {} on {}: {} files ({} bytes) sent, {} deleted, {} unchanged{}{}{}",
                summary.direction,
                summary.src,
                summary.dst,
                m.name,
                summary.files_sent,
                summary.bytes_sent,
                summary.deleted,
                summary.unchanged,
                if summary.dry_run { " (dry run: nothing changed)" } else { "" },
                if summary.changed.is_empty() {
                    String::new()
                } else {
                    format!("; changed while sent, left as they were: {:?}", summary.changed)
                },
                match summary.ignored {
                    0 => String::new(),
                    _ => format!("; {}", ignored_note(&summary, "include_git and no_gitignore")),
                }
            );
            Ok((json!(OnMachine::new(&summary, &m.name)), line))
        })
        .await
    }
}
