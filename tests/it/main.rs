//! Integration tests: the real `codex-remote` and `codexd` binaries, a private HOME per test,
//! and a real OpenSSH `sshd` on a loopback port for the ssh path.

mod bad_input;
mod cli_habits;
mod client_trust;
mod closed_pipes;
mod completions;
mod dashboard;
mod faults;
mod files;
mod formats;
mod fuzz_corpus;
mod go_scripts;
mod golden;
mod gpu;
mod idempotency;
mod local_exec;
mod machine;
mod mcp;
mod multi_user;
mod projects;
mod release;
mod rpc_session;
mod serve;
mod serve_load;
mod sessions;
mod slurm;
mod ssh_exec;
mod store_faults;
mod support;
mod sync;
mod sync_tar;
mod terminal_logs;
mod update;
