//! Integration tests: the real `codex-remote` and `codexd` binaries, a private HOME per test,
//! and a real OpenSSH `sshd` on a loopback port for the ssh path.

mod bad_input;
mod cli_habits;
mod client_trust;
mod completions;
mod dashboard;
mod deadlines;
mod faults;
mod files;
mod formats;
mod go_scripts;
mod golden;
mod gpu;
mod idempotency;
mod layers;
mod local_exec;
mod machine;
mod mcp;
mod mcp_current;
mod multi_user;
mod original_api;
mod projects;
mod release;
mod rpc_session;
mod serve;
mod serve_load;
mod sessions;
mod skills;
mod slurm;
mod ssh_exec;
mod store_faults;
mod support;
mod sync;
mod sync_escape;
mod sync_tar;
mod update;
