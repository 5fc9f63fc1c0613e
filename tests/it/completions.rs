//! `codex-remote completions SHELL`: a registration script that completes the real command
//! line, driven here through bash's own completion function.

use crate::support::{CODEX_REMOTE, TestEnv};

/// What bash offers for `words` (the last one being completed), with the script sourced.
fn bash_complete(env: &TestEnv, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "source <('{CODEX_REMOTE}' completions bash) || exit 9\n\
         COMP_WORDS=({words})\n\
         COMP_CWORD={cword}\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         COMP_TYPE=9\n\
         fn=$(complete -p codex-remote | sed -E 's/.* -F ([^ ]+) .*/\\1/')\n\
         \"$fn\" codex-remote \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        words = quoted.join(" "),
        cword = words.len() - 1
    );
    let out = env.command(std::path::Path::new("bash"), &["-c", &script]).output().unwrap();
    assert!(out.status.success(), "bash: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().to_string()).collect()
}

#[test]
fn bash_completes_subcommands_flags_values_machines_and_jobs() {
    let env = TestEnv::with_config(
        "machines:\n  - name: gpu-east\n    ssh: gpu-east\n  - name: gpu-west\n    ssh: gpu-west\n",
    );
    let top = bash_complete(&env, &["codex-remote", "e"]);
    assert!(top.contains(&"exec".to_string()), "{top:?}");
    let exec = bash_complete(&env, &["codex-remote", "exec", ""]);
    for word in ["start", "logs", "watch", "doctor"] {
        assert!(exec.contains(&word.to_string()), "exec <TAB>: {exec:?}");
    }
    let stream = bash_complete(&env, &["codex-remote", "exec", "logs", "--stream", ""]);
    assert_eq!(stream, ["stdout", "stderr", "both"], "--stream <TAB>");
    let machines = bash_complete(&env, &["codex-remote", "exec", "list", "--machine", "gpu"]);
    assert_eq!(machines, ["gpu-east", "gpu-west"], "--machine <TAB>");
    let states = bash_complete(&env, &["codex-remote", "exec", "list", "--state", "f"]);
    assert_eq!(states, ["failed", "finished"], "--state <TAB>");

    // Job ids of the default machine, newest first.
    env.set_config("machines: []\n");
    let older = env.start("local", "true");
    let newer = env.start("local", "true");
    let ids = bash_complete(&env, &["codex-remote", "exec", "result", ""]);
    assert_eq!(&ids[..2], [newer.as_str(), older.as_str()], "{ids:?}");
    assert!(ids.contains(&"last".to_string()));
}

#[test]
fn registration_scripts_for_zsh_and_fish_and_refusals() {
    let env = TestEnv::new();
    for (shell, marker) in [("bash", "complete"), ("zsh", "compdef"), ("fish", "complete")] {
        let out = env.remote(&["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell} script lacks {marker:?}: {script}");
        assert!(script.contains("codex-remote") || script.contains("codex_remote"), "{script}");
    }
    // Completions need no config: a broken one does not matter.
    env.set_config("machines: [[[");
    assert_eq!(env.remote(&["completions", "bash"]).output().unwrap().status.code(), Some(0));
    let (code, _) = env.run(&["completions", "tcsh"]);
    assert_eq!(code, 2);
}

#[test]
fn completion_follows_the_machine_on_the_line_and_completes_local_paths() {
    // The default machine cannot be reached: ids must come from the machine the line names.
    let env = TestEnv::with_config(
        "machines:\n  - name: far\n    ssh: far.invalid\ndefault_machine: far\n",
    );
    let id = env.start("local", "true");
    for flag in [["-m", "local"], ["--machine", "local"]] {
        let words = ["codex-remote", "exec", "result", flag[0], flag[1], ""];
        let ids = bash_complete(&env, &words);
        assert!(ids.contains(&id), "{flag:?}: {ids:?}");
    }
    let ids = bash_complete(&env, &["codex-remote", "-m", "local", "exec", "result", ""]);
    assert!(ids.contains(&id), "-m before the subcommand: {ids:?}");

    // `sync push --src` and `sync pull --dst` are local paths; the other ends are remote.
    let dir = env.path("tree");
    std::fs::create_dir_all(dir.join("alpha")).unwrap();
    std::fs::write(dir.join("alpine.txt"), "x").unwrap();
    let prefix = format!("{}/al", dir.display());
    let push = bash_complete(&env, &["codex-remote", "sync", "push", "--src", &prefix]);
    assert!(push.iter().any(|p| p.ends_with("alpha/")), "{push:?}");
    assert!(push.iter().any(|p| p.ends_with("alpine.txt")), "{push:?}");
    let pull = bash_complete(&env, &["codex-remote", "sync", "pull", "--dst", &prefix]);
    assert_eq!(pull.len(), 2, "{pull:?}");
    let remote = bash_complete(&env, &["codex-remote", "sync", "pull", "--src", &prefix]);
    assert!(remote.iter().all(|p| !p.ends_with("alpine.txt")), "{remote:?}");
}
