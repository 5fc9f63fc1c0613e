//! sync as the original tool's users know it from rsync: a single file as `--src` (both
//! directions, over the loopback sshd), and nothing left out silently: the summary counts
//! what `.git/` and `.gitignore` rules left out, and text output says so on stderr.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::TestEnv;
use crate::sync::{s, ssh_env};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn sync(env: &TestEnv, way: &str, src: &str, dst: &str) -> Value {
    let lines = env.ok(&["sync", way, "-m", "gpu", "--src", src, "--dst", dst]);
    assert_eq!(lines["type"], "sync", "{lines}");
    lines
}

#[test]
fn a_single_file_as_src_is_copied_as_rsync_copies_it_both_ways() {
    let (env, _sshd) = ssh_env();
    let local = env.path("local");
    write(&local.join("a.txt"), "alpha\n");
    let remote = env.home.join("remote");

    // Push into a directory named with a trailing slash (created): d/a.txt.
    let d = format!("{}/", s(&remote.join("d")));
    let v = sync(&env, "push", s(&local.join("a.txt")), &d);
    assert_eq!((&v["files_sent"], &v["ignored"]), (&json!(1), &json!(0)), "{v}");
    assert_eq!(std::fs::read_to_string(remote.join("d/a.txt")).unwrap(), "alpha\n");
    assert_eq!(names(&remote.join("d")), ["a.txt"]);
    // Again: unchanged, nothing sent.
    let v = sync(&env, "push", s(&local.join("a.txt")), &d);
    assert_eq!((&v["files_sent"], &v["unchanged"]), (&json!(0), &json!(1)), "{v}");
    // An existing directory without the slash: into it.
    write(&local.join("a.txt"), "alpha 2\n");
    sync(&env, "push", s(&local.join("a.txt")), s(&remote.join("d")));
    assert_eq!(std::fs::read_to_string(remote.join("d/a.txt")).unwrap(), "alpha 2\n");
    // A name that is not a directory: the file gets it; the rest of d is left alone, even
    // with --delete (rsync deletes only inside a directory it syncs).
    let (a, b) = (local.join("a.txt"), remote.join("d/b.txt"));
    let args = ["sync", "push", "-m", "gpu", "--src", s(&a), "--dst", s(&b)];
    let v = env.ok(&[&args[..], &["--delete"]].concat());
    assert_eq!((&v["files_sent"], &v["deleted"]), (&json!(1), &json!(0)), "{v}");
    assert_eq!(std::fs::read_to_string(&b).unwrap(), "alpha 2\n");
    assert_eq!(names(&remote.join("d")), ["a.txt", "b.txt"]);

    // Pull the same ways: into a directory, into an existing one, to a new name.
    write(&remote.join("r.txt"), "remote\n");
    let back = env.path("back");
    sync(&env, "pull", s(&remote.join("r.txt")), &format!("{}/", s(&back)));
    assert_eq!(std::fs::read_to_string(back.join("r.txt")).unwrap(), "remote\n");
    write(&remote.join("r.txt"), "remote 2\n");
    let v = sync(&env, "pull", s(&remote.join("r.txt")), s(&back));
    assert_eq!(v["files_sent"], 1, "{v}");
    assert_eq!(std::fs::read_to_string(back.join("r.txt")).unwrap(), "remote 2\n");
    let v = sync(&env, "pull", s(&remote.join("r.txt")), s(&back.join("renamed.txt")));
    assert_eq!(v["files_sent"], 1, "{v}");
    assert_eq!(names(&back), ["r.txt", "renamed.txt"]);
    let v = sync(&env, "pull", s(&remote.join("r.txt")), s(&back.join("renamed.txt")));
    assert_eq!((&v["files_sent"], &v["unchanged"]), (&json!(0), &json!(1)), "{v}");

    // A missing --src is an error both ways, never an empty tree (which --delete would mirror).
    let (code, _) = env.run(&["sync", "push", "-m", "gpu", "--src", "/nonexistent", "--dst", "x"]);
    assert_eq!(code, 2);
    for src in ["/nonexistent/r.txt", "/nonexistent/"] {
        let args = ["sync", "pull", "-m", "gpu", "--src", src, "--dst", s(&back), "--delete"];
        let v = env.err(&args, "file_not_found", 4);
        assert!(v["message"].as_str().unwrap().contains("does not exist"), "{v}");
    }
    assert_eq!(names(&back), ["r.txt", "renamed.txt"]);
}

#[test]
fn the_summary_counts_what_git_and_gitignore_left_out_and_text_says_so() {
    let (env, _sshd) = ssh_env();
    let tree = env.path("tree");
    write(&tree.join(".git/HEAD"), "ref: refs/heads/main\n");
    write(&tree.join(".gitignore"), "target/\n*.log\n");
    write(&tree.join("src/main.rs"), "fn main() {}\n");
    write(&tree.join("target/debug/app"), "binary");
    write(&tree.join("src/run.log"), "log");
    write(&tree.join("data/big.bin"), "data");
    let dst = env.home.join("copy");
    let src = format!("{}/", s(&tree));

    // Push: .git/, target/ and src/run.log ignored (a directory counts once); --exclude'd
    // paths are the user's own choice and not counted.
    let args = ["sync", "push", "-m", "gpu", "--src", &src, "--dst", s(&dst)];
    let v = env.ok(&[&args[..], &["--exclude", "data/"]].concat());
    assert_eq!(v["ignored"], 3, "{v}");
    assert_eq!(v["ignored_sample"], json!([".git/", "src/run.log", "target/"]), "{v}");
    assert!(!dst.join("target").exists() && !dst.join(".git").exists());

    // Text output: one line on stderr says how many and how to copy them too.
    let out = env.remote(&[&args[..], &["--format", "text"]].concat()).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let note: Vec<_> = stderr.lines().filter(|l| l.contains("left out")).collect();
    assert_eq!(note.len(), 1, "{stderr}");
    assert!(note[0].contains("left out 3 ignored paths (.git/, src/run.log, target/"), "{stderr}");
    assert!(note[0].contains("--include-git --no-gitignore"), "{stderr}");

    // Everything: nothing ignored, and no note.
    let v = env.ok(&[&args[..], &["--include-git", "--no-gitignore"]].concat());
    assert_eq!((&v["ignored"], &v["ignored_sample"]), (&json!(0), &json!([])), "{v}");
    assert_eq!(std::fs::read_to_string(dst.join("target/debug/app")).unwrap(), "binary");
    let out = env
        .remote(&[&args[..], &["--include-git", "--no-gitignore", "--format", "text"]].concat())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("left out"));

    // Pull: codexd's walk of the source counts, and the summary carries it.
    let back = env.path("back");
    let v = sync(&env, "pull", &format!("{}/", s(&dst)), s(&back));
    assert_eq!(v["ignored"], 3, "{v}");
    assert_eq!(v["ignored_sample"], json!([".git/", "src/run.log", "target/"]), "{v}");
    assert!(back.join("data/big.bin").is_file() && !back.join("target").exists());
}

#[test]
fn a_nested_gitignore_counts_in_its_own_subtree_and_git_alone_is_counted_too() {
    let env = TestEnv::new();
    let tree = env.path("tree");
    write(&tree.join(".git/HEAD"), "ref: refs/heads/main\n");
    write(&tree.join("lib/.gitignore"), "*.tmp\n");
    write(&tree.join("lib/x.tmp"), "x");
    write(&tree.join("lib/deep/y.tmp"), "y");
    write(&tree.join("other/z.tmp"), "z");
    let out = env.path("out");
    let args = ["sync", "push", "-m", "local", "--src", s(&tree), "--dst", s(&out)];
    let v = env.ok(&args);
    assert_eq!(v["ignored"], 3, "{v}");
    assert_eq!(v["ignored_sample"], json!([".git/", "lib/deep/y.tmp", "lib/x.tmp"]), "{v}");
    assert!(out.join("tree/other/z.tmp").is_file());
    // No ignore file and no .git: nothing to count.
    std::fs::remove_dir_all(tree.join(".git")).unwrap();
    std::fs::remove_file(tree.join("lib/.gitignore")).unwrap();
    let v = env.ok(&args);
    assert_eq!((&v["ignored"], &v["ignored_sample"]), (&json!(0), &json!([])), "{v}");
}
