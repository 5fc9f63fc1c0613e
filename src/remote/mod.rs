//! The laptop side: the machine list and how `codex-remote` reaches a machine's `codexd`.
//!
//! Read in this order: [`config`] (the machine list), [`cache`] (per-machine caches, one rule),
//! [`machine`] (`Machine`, `Route`: a configured machine as data, no calls),
//! [`ssh`] (every ssh command line), the doors [`pipe`] (`ssh HOST codexd rpc`, or a local
//! `codexd rpc`), [`http`] (`codexd serve`) and `in_process` (`local` on Linux: the handlers
//! in this process), [`answer`] (reading an answer, whichever door), [`deadline`] (how long a
//! call may wait),
//! [`transport`] (picks a door, retries, the version check with [`compat`]), [`mux`] (the shared
//! sessions of long-lived clients), [`tunnel`] (the
//! `use_direct_addr` forward), [`install`] and [`provision`] (`machine check`/`up`), and
//! [`client`] (typed calls shared by the CLI, the MCP server and the dashboard).

pub mod answer;
pub mod cache;
pub mod client;
pub mod compat;
pub mod config;
pub mod deadline;
pub mod http;
#[cfg(target_os = "linux")]
pub mod in_process;
pub mod install;
pub mod machine;
pub mod mux;
pub mod pipe;
pub mod provision;
pub mod ssh;
pub mod transport;
pub mod tunnel;
#[cfg(unix)]
pub mod unix_http;
