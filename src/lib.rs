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
//!
//! # Layers
//!
//! Lowest first; an import goes down or sideways, never up, never in a circle between files
//! (`tests/it/layers.rs` keeps this, naming the file and line of an import that breaks it):
//!
//! 1. the leaves: [`error`], [`wire`], [`platform`], [`lockfile`], [`shell`], [`config_file`],
//!    [`http_guard`], [`auth`], [`version`], [`update`]
//! 2. [`protocol`]: the wire types, and the times in them
//! 3. `jobs` (the job store and its worker, Linux) and [`tree`] (sync's trees)
//! 4. `daemon` (codexd's handlers and doors) and [`remote`] (machines and the doors to them;
//!    `remote::in_process` calls `daemon` sideways)
//! 5. [`codex_remote`]: codex-remote's commands, MCP server and dashboard
//! 6. `src/bin`: parse, call the library, return its exit code; only the binaries end the process
//!
//! When a lower module needs something from above, the thing moves down, or the code moves to
//! its one user. `fuzzing` (the fuzz targets' checks) is built only with the `fuzzing` feature.

pub mod auth;
pub mod codex_remote;
pub mod config_file;
// codexd and its job store are Linux-only (/proc, setsid, a child subreaper); codex-remote
// also builds for macOS and Windows (see `platform`).
#[cfg(target_os = "linux")]
pub mod daemon;
pub mod error;
// The fuzz targets' checks: built for fuzz/ (feature `fuzzing`) and for the corpus replay in
// this crate's unit tests, never into the binaries.
#[cfg(all(target_os = "linux", any(test, feature = "fuzzing")))]
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
