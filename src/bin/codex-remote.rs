fn main() -> std::process::ExitCode {
    codex_runner::cli::main()
}
