//! Typed calls to a machine's `codexd`: one function per request kind, shared by the `exec`
//! commands and the MCP server so both build requests and read answers the same way.

use super::machine::Machine;
use crate::error::Result;
use crate::protocol::{
    ExecStartRequest, HelloRequest, HelloResponse, ListRequest, ListResponse, LogsEnd, LogsRequest,
    Request, Response, RunRequest, StatusResponse,
};

/// `exec_start`. A start without an idempotency key gets one, so a retry of this call (by the
/// transport after a dropped connection) never runs the job twice; a start answered in this
/// process has no transport to retry, and no key to record.
pub fn start(m: &Machine, req: ExecStartRequest) -> Result<StatusResponse> {
    status(m, Request::ExecStart(with_key(m, req)))
}

fn with_key(m: &Machine, mut req: ExecStartRequest) -> ExecStartRequest {
    if req.idempotency_key.is_none() && !m.answers_in_process() {
        req.idempotency_key = Some(format!("auto-{}", uuid::Uuid::now_v7().simple()));
    }
    req
}

/// `exec_run` (capability `exec_run`): the start and the follow in one call. The `started`
/// line and the `log`/`chunk` lines go to `on_line`; returns the `logs_end`. A key makes a
/// retried call start nothing twice, as [`start`].
pub fn run(
    m: &Machine,
    req: ExecStartRequest,
    raw: bool,
    on_line: &mut dyn FnMut(Response) -> Result<()>,
) -> Result<LogsEnd> {
    let req = RunRequest { start: with_key(m, req), raw };
    match m.call(&Request::ExecRun(req), on_line)? {
        Response::LogsEnd(end) => Ok(end),
        other => Err(unexpected(&other)),
    }
}

/// A request answered by a status object (`exec_start`, `_status`, `_wait`, `_cancel`).
pub fn status(m: &Machine, req: Request) -> Result<StatusResponse> {
    match m.call(&req, &mut |_| Ok(()))? {
        Response::Status(s) => Ok(s),
        other => Err(unexpected(&other)),
    }
}

/// `exec_list`.
pub fn list(m: &Machine, req: ListRequest) -> Result<ListResponse> {
    match m.call(&Request::ExecList(req), &mut |_| Ok(()))? {
        Response::List(list) => Ok(list),
        other => Err(unexpected(&other)),
    }
}

/// `hello`: the machine's codexd version, protocol and capabilities.
pub fn hello(m: &Machine) -> Result<HelloResponse> {
    let req = Request::Hello(HelloRequest::from_this_client());
    match m.call(&req, &mut |_| Ok(()))? {
        Response::Hello(h) => Ok(h),
        other => Err(unexpected(&other)),
    }
}

/// `exec_logs`: `log`/`chunk` lines go to `on_line` as they arrive; returns the `logs_end`.
pub fn logs(
    m: &Machine,
    req: &LogsRequest,
    on_line: &mut dyn FnMut(Response) -> Result<()>,
) -> Result<LogsEnd> {
    match m.call(&Request::ExecLogs(req.clone()), on_line)? {
        Response::LogsEnd(end) => Ok(end),
        other => Err(unexpected(&other)),
    }
}

// Lives with the answer reading, below the doors that use it too (pipe, mux).
pub use super::answer::unexpected;
