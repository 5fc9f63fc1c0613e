fn main() -> std::process::ExitCode {
    codex_runner::codex_remote::main()
}
