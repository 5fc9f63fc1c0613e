//! Records the git commit and the target triple for `--version` (`codex_runner::version`).
//!
//! Outside a git checkout (a source tarball) the commit is "unknown"; `CODEX_RUNNER_COMMIT`
//! overrides it for packagers.

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(dir).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&dir);
    println!("cargo:rerun-if-env-changed=CODEX_RUNNER_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    // Rebuild when HEAD moves: HEAD itself, the branch it points to, and packed refs.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(dir, &["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(dir, &["rev-parse", "--git-path", &name]) {
            println!("cargo:rerun-if-changed={}", dir.join(path).display());
        }
    }
    let commit = std::env::var("CODEX_RUNNER_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(dir, &["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=CODEX_RUNNER_COMMIT={commit}");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=CODEX_RUNNER_TARGET={target}");
}
