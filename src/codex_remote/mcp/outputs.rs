//! The MCP tools' `outputSchema`s: what each tool's `structuredContent` holds. A tool answers its
//! own object, or (with `isError: true`) the CLI's error object; clients such as the TypeScript
//! SDK validate both against the schema, so each schema is `anyOf` the two.

use std::sync::Arc;

use rmcp::model::JsonObject;
use serde_json::{Value, json};

/// The schema of an object with `properties`, of which `required` are always present.
fn object(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required })
}

/// The answer or the error object, as a root schema of type object (as MCP asks).
fn answer_or_error(answer: Value) -> Arc<JsonObject> {
    let Value::Object(schema) = json!({ "type": "object", "anyOf": [answer, error()] }) else {
        unreachable!("a JSON object literal")
    };
    Arc::new(schema)
}

/// The CLI's error object (README "Errors and exit codes"); `job` when the error is about one.
fn error() -> Value {
    object(
        json!({
            "type": { "const": "error" },
            "code": { "type": "string", "description": "stable error code (README)" },
            "message": { "type": "string" },
            "hint": { "type": "string", "description": "what to do next" },
            "exec_id": { "type": "string" },
            "job": { "type": "object", "description": "the job the error is about" },
        }),
        &["type", "code", "message"],
    )
}

const STATES: [&str; 7] =
    ["queued", "running", "succeeded", "failed", "cancelled", "lost", "start_failed"];

/// A job's status object with the machine it is on (README "The status object").
fn job() -> Value {
    let nullable_int = json!({ "type": ["integer", "null"] });
    let nullable_text = json!({ "type": ["string", "null"] });
    object(
        json!({
            "exec_id": { "type": "string" },
            "machine": { "type": "string" },
            "status": { "enum": ["running", "finished"] },
            "state": { "enum": STATES },
            "cmd": { "type": "string" },
            "cwd": { "type": "string" },
            "pid": nullable_int,
            "started_at": nullable_text,
            "finished_at": nullable_text,
            "exit_code": nullable_int,
            "signal": nullable_int,
            "duration_ms": nullable_int,
            "error": nullable_text,
            "name": { "type": "string" },
            "labels": { "type": "object", "additionalProperties": { "type": "string" } },
            "argv": { "type": "array", "items": { "type": "string" } },
            "host": { "type": "string" },
            "created_at": { "type": "string" },
            "idempotency_key": { "type": "string" },
            "scheduler": { "enum": ["local", "slurm"] },
            "slurm_job_id": { "type": "string" },
            "node": { "type": "string", "description": "the compute node (a Slurm job)" },
            "resources": { "type": "object", "description": "what it asked of the scheduler" },
            "queue_reason": { "type": "string", "description": "why a queued job waits" },
            "gpu_ids": {
                "type": "array",
                "items": { "type": "integer" },
                "description": "the GPUs it was given (its CUDA_VISIBLE_DEVICES)",
            },
            "timed_out": { "type": "boolean", "description": "exec_wait ran out of time" },
            "replayed": { "type": "boolean", "description": "an earlier start with this key" },
            "message": { "type": "string" },
            "hint": { "type": "string" },
        }),
        &["exec_id", "machine", "status", "state", "cmd", "cwd", "exit_code", "created_at"],
    )
}

/// `exec_start`, `exec_status`, `exec_wait`, `exec_cancel`: the job's status.
pub fn job_status() -> Arc<JsonObject> {
    answer_or_error(job())
}

pub fn job_list() -> Arc<JsonObject> {
    answer_or_error(object(
        json!({
            "machine": { "type": "string" },
            "jobs": { "type": "array", "items": job(), "description": "newest first" },
        }),
        &["machine", "jobs"],
    ))
}

pub fn machines() -> Arc<JsonObject> {
    let entry = object(
        json!({
            "name": { "type": "string" },
            "default": { "type": "boolean" },
            "route": { "enum": ["local", "ssh", "http"] },
            "ssh": { "type": "string" },
            "addr": { "type": "string" },
            "ok": { "type": "boolean", "description": "its codexd answered (absent unchecked)" },
            "latency_ms": { "type": "integer" },
            "codexd_version": { "type": "string" },
            "protocol": { "type": "integer" },
            "compatible": { "type": "boolean" },
            "host": { "type": "string" },
            "user": { "type": "string" },
            "data_dir": { "type": "string" },
            "gpus": {
                "type": "object",
                "description": "the machine's GPUs (index, name, memory_used_mib, \
                    memory_total_mib, utilization_percent, processes, free, jobs holding it), \
                    the thresholds of free, the number of queued GPU jobs, or why none (error)",
            },
            "error": error_body(),
        }),
        &["name", "default"],
    );
    answer_or_error(object(
        json!({
            "machines": { "type": "array", "items": entry },
            "default_machine": { "type": ["string", "null"] },
        }),
        &["machines", "default_machine"],
    ))
}

/// An error as a field of an answer (code, message, hint).
fn error_body() -> Value {
    object(
        json!({
            "code": { "type": "string" },
            "message": { "type": "string" },
            "hint": { "type": "string" },
        }),
        &["code", "message"],
    )
}

/// `exec_logs`: the page per stream as exact text, and where to read on.
pub fn logs_page() -> Arc<JsonObject> {
    let offsets = json!({
        "type": "object",
        "properties": { "stdout": { "type": "integer" }, "stderr": { "type": "integer" } },
    });
    let piece = object(
        json!({
            "offset": { "type": "integer", "description": "byte offset of `text` in the log" },
            "text": {
                "type": "string",
                "description": "the log's bytes from `offset` (invalid UTF-8 as U+FFFD); no \
                                newline at its end means the last line is not finished yet",
            },
            "lines": { "type": "integer" },
        }),
        &["offset", "text", "lines"],
    );
    answer_or_error(object(
        json!({
            "exec_id": { "type": "string" },
            "machine": { "type": "string" },
            "stdout": piece,
            "stderr": piece,
            "next_offset": offsets,
            "size": offsets,
            "more": { "type": "boolean", "description": "more is already written: read on" },
            "status": { "enum": ["running", "finished"] },
            "state": { "enum": STATES },
            "exit_code": { "type": ["integer", "null"] },
            "hint": { "type": "string" },
        }),
        &["exec_id", "machine", "next_offset", "size", "more", "status", "state", "exit_code"],
    ))
}

/// `file_read`: a page of the file (`text` when its bytes are UTF-8).
pub fn file_data() -> Arc<JsonObject> {
    answer_or_error(object(
        json!({
            "path": { "type": "string" },
            "machine": { "type": "string" },
            "offset": { "type": "integer" },
            "size": { "type": "integer", "description": "the file's size when it was read" },
            "data_b64": { "type": "string" },
            "text": { "type": "string", "description": "the same bytes, when they are UTF-8" },
            "next_offset": { "type": "integer", "description": "where the next page starts" },
            "eof": { "type": "boolean" },
        }),
        &["path", "machine", "offset", "size", "data_b64", "next_offset", "eof"],
    ))
}

/// `file_write`: the file written.
pub fn file_written() -> Arc<JsonObject> {
    answer_or_error(object(
        json!({
            "type": { "const": "file_written" },
            "path": { "type": "string", "description": "the absolute path written" },
            "machine": { "type": "string" },
            "size": { "type": "integer" },
            "mode": { "type": "string", "description": "octal, e.g. \"0644\"" },
        }),
        &["path", "machine", "size", "mode"],
    ))
}

/// `sync_push`, `sync_pull`: what travelled.
pub fn sync_summary() -> Arc<JsonObject> {
    let paths = json!({ "type": "array", "items": { "type": "string" } });
    let skipped = object(
        json!({ "path": { "type": "string" }, "reason": { "type": "string" } }),
        &["path", "reason"],
    );
    answer_or_error(object(
        json!({
            "type": { "const": "sync" },
            "machine": { "type": "string" },
            "direction": { "enum": ["push", "pull"] },
            "src": { "type": "string" },
            "dst": { "type": "string" },
            "files_sent": { "type": "integer" },
            "bytes_sent": { "type": "integer" },
            "deleted": { "type": "integer" },
            "unchanged": { "type": "integer" },
            "meta": { "type": "integer", "description": "only mode or mtime set" },
            "elapsed_ms": { "type": "integer" },
            "dry_run": { "type": "boolean" },
            "changed": { "description": "changed while read, left as they were", "type": "array", "items": { "type": "string" } },
            "skipped": { "type": "array", "items": skipped },
            "ignored": { "type": "integer", "description": "paths left out by .git/ and .gitignore rules (a directory counts once)" },
            "ignored_sample": { "description": "the first few ignored paths", "type": "array", "items": { "type": "string" } },
            "would_send": paths,
            "would_delete": paths,
        }),
        &["machine", "direction", "src", "dst", "files_sent", "bytes_sent", "deleted", "unchanged"],
    ))
}
