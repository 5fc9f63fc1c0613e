//! Integration tests: the real `codex-remote` and `codexd` binaries, a private HOME per test,
//! and a real OpenSSH `sshd` on a loopback port for the ssh path.

mod bad_input;
mod client_trust;
mod completions;
mod dashboard;
mod faults;
mod files;
mod golden;
mod local_exec;
mod machine;
mod mcp;
mod release;
mod serve;
mod ssh_exec;
mod support;
mod sync;
