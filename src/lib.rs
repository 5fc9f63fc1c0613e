//! codex-runner: run jobs on remote GPU machines over the SSH setup you already have.
//!
//! Two binaries share this library:
//! - `codexd` runs on the server. `codexd rpc` is started by `ssh HOST codexd rpc` for each call,
//!   answers JSON request lines ([`protocol`], framed by [`wire`]) and exits. Jobs run in detached
//!   workers ([`jobs::worker`]) that keep their state in the job store ([`jobs::store`]).
//! - `codex-remote` runs next to the coding agent. It reads its machine list ([`remote::config`]),
//!   reaches a machine through ssh or a local child process ([`remote::transport`]) and prints
//!   JSON for agents and scripts ([`codex_remote`]).
//!
//! A call flows: `codex-remote exec start` -> `ssh HOST codexd rpc` (request on stdin) ->
//! [`daemon::Daemon::handle`] -> job store + worker -> one answer line on stdout -> JSON printed.

pub mod auth;
pub mod codex_remote;
pub mod config_file;
// codexd and its job store are Linux-only (/proc, setsid, a child subreaper); codex-remote
// also builds for macOS and Windows (see `platform`).
#[cfg(target_os = "linux")]
pub mod daemon;
pub mod error;
pub mod fuzzing;
pub mod http_accept;
pub mod http_guard;
#[cfg(target_os = "linux")]
pub mod jobs;
pub mod lockfile;
pub mod platform;
pub mod protocol;
pub mod remote;
pub mod shell;
pub mod tree;
pub mod update;
pub mod version;
pub mod wire;
