//! `codexd`: the server side. Everything lives in the library; see `codex_runner::daemon`.

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    codex_runner::daemon::codexd_cli::main()
}

#[cfg(not(target_os = "linux"))]
compile_error!(
    "codexd runs on Linux only (it uses /proc, setsid and a child subreaper); for this target \
     build codex-remote alone: cargo build --bin codex-remote"
);
#[cfg(not(target_os = "linux"))]
fn main() {}
