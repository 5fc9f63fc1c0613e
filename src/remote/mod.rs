//! The laptop side: the machine list and how `codex-remote` reaches a machine's `codexd`.

pub mod config;
pub mod ssh;
pub mod transport;
