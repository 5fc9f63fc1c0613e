//! The laptop side: the machine list and how `codex-remote` reaches a machine's `codexd`.

pub mod client;
pub mod compat;
pub mod config;
pub mod http;
pub mod install;
pub mod ssh;
pub mod transport;
pub mod tunnel;
