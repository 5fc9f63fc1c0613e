//! `codexd`: the server side. Everything lives in the library; see `codex_runner::daemon`.

fn main() -> std::process::ExitCode {
    codex_runner::daemon::cli::main()
}
