//! `codex-remote completions SHELL`: a script that completes the real command line.

use crate::support::TestEnv;

#[test]
fn completions_for_bash_zsh_and_fish() {
    let env = TestEnv::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef codex-remote"),
        ("fish", "complete -c codex-remote"),
    ] {
        let out = env.remote(&["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell} script lacks {marker:?}");
        for word in ["exec", "mcp", "idempotency-key", "tail-lines"] {
            assert!(script.contains(word), "{shell} script does not complete {word}");
        }
    }
    // Completions need no config: a broken one does not matter.
    env.set_config("machines: [[[");
    assert_eq!(env.remote(&["completions", "bash"]).output().unwrap().status.code(), Some(0));
    let (code, _) = env.run(&["completions", "tcsh"]);
    assert_eq!(code, 2);
}
