//! `codex-remote sync push|pull` over the real sshd, and every bad input of issue 13: paths
//! that climb out, odd names, a symlink loop, a file changing while it is sent, a full disk.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{Sshd, TestEnv};

pub fn ssh_env() -> (TestEnv, Sshd) {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let remote = env.path("remote-data");
    env.set_config(&format!("machines:\n{}", sshd.machine_yaml("gpu", &remote, "")));
    (env, sshd)
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write(path: PathBuf, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Every path under `root` with what it is: file content, link target or dir, and its mode.
pub fn listing(root: &Path) -> Vec<(String, String, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if meta.is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if meta.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else {
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()
            };
            let mode = if meta.is_symlink() { 0 } else { meta.permissions().mode() & 0o7777 };
            out.push((rel, what, mode));
        }
    }
    out.sort();
    out
}

fn push(env: &TestEnv, machine: &str, src: &Path, dst: &Path, extra: &[&str]) -> Value {
    // A trailing slash: the contents of `src` land in `dst` (rsync's rule).
    let src = format!("{}/", s(src));
    let mut args = vec!["sync", "push", "-m", machine, "--src", &src, "--dst", s(dst)];
    args.extend_from_slice(extra);
    summary(env, &args)
}

/// Runs a sync that must succeed; its summary (after any `progress` lines).
fn summary(env: &TestEnv, args: &[&str]) -> Value {
    let (code, lines) = env.run(args);
    assert_eq!(code, 0, "{args:?}: {lines:?}");
    let (last, progress) = lines.split_last().expect("a summary line");
    assert!(progress.iter().all(|l| l["type"] == "progress"), "{lines:?}");
    assert_eq!(last["type"], "sync", "{lines:?}");
    last.clone()
}

#[test]
fn push_then_pull_a_tree_with_a_symlink_an_ignored_file_an_exec_bit_and_a_deletion() {
    let (env, _sshd) = ssh_env();
    let src = env.path("src");
    write(src.join("a.txt"), "alpha\n");
    write(src.join("dir/b.txt"), "beta\n");
    write(src.join("dir/run.sh"), "#!/bin/sh\necho hi\n");
    std::fs::set_permissions(src.join("dir/run.sh"), std::fs::Permissions::from_mode(0o755))
        .unwrap();
    write(src.join(".gitignore"), "*.log\nbuild/\n");
    write(src.join("debug.log"), "ignored\n");
    write(src.join("build/out.bin"), "ignored too\n");
    write(src.join(".git/HEAD"), "ref: refs/heads/main\n");
    symlink("a.txt", src.join("link")).unwrap();
    let dst = env.path("remote-tree");

    let first = push(&env, "gpu", &src, &dst, &[]);
    assert_eq!(
        (first["type"].as_str(), first["files_sent"].as_u64(), first["machine"].as_str()),
        (Some("sync"), Some(5), Some("gpu")),
        "{first}"
    );
    for key in ["files_sent", "bytes_sent", "deleted", "unchanged", "elapsed_ms"] {
        assert!(first[key].is_u64(), "{key} in {first}");
    }
    assert!(
        !dst.join("debug.log").exists() && !dst.join("build").exists(),
        "ignored files stay home"
    );
    assert!(!dst.join(".git").exists(), ".git/ is left out by default");
    assert_eq!(std::fs::read_link(dst.join("link")).unwrap(), Path::new("a.txt"));
    assert_eq!(
        std::fs::metadata(dst.join("dir/run.sh")).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let want = |root: &Path| {
        listing(root)
            .into_iter()
            .filter(|(p, _, _)| {
                !p.ends_with(".log")
                    && !p.starts_with("build")
                    && !p.starts_with(".git/")
                    && p != ".git"
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(listing(&dst), want(&src));

    // Nothing changed: nothing travels.
    let again = push(&env, "gpu", &src, &dst, &[]);
    assert_eq!(
        (again["files_sent"].as_u64(), again["bytes_sent"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), Some(0), Some(6)),
        "{again}"
    );

    // A deletion reaches the machine only with --delete; a dry run changes nothing.
    std::fs::remove_file(src.join("dir/b.txt")).unwrap();
    write(src.join("a.txt"), "alpha 2\n");
    let kept = push(&env, "gpu", &src, &dst, &[]);
    assert_eq!(
        (kept["files_sent"].as_u64(), kept["deleted"].as_u64()),
        (Some(1), Some(0)),
        "{kept}"
    );
    assert!(dst.join("dir/b.txt").exists());
    let dry = push(&env, "gpu", &src, &dst, &["--delete", "--dry-run"]);
    assert_eq!(dry["would_delete"], serde_json::json!(["dir/b.txt"]), "{dry}");
    assert!(dst.join("dir/b.txt").exists());
    let deleted = push(&env, "gpu", &src, &dst, &["--delete"]);
    assert_eq!(deleted["deleted"], 1, "{deleted}");
    assert!(!dst.join("dir/b.txt").exists());
    assert_eq!(listing(&dst), want(&src));

    // Pull it back into a fresh directory, and incrementally into an edited one.
    let back = env.path("back");
    let pulled = summary(
        &env,
        &["sync", "pull", "-m", "gpu", "--src", &format!("{}/", s(&dst)), "--dst", s(&back)],
    );
    assert_eq!(pulled["direction"], "pull");
    assert_eq!(listing(&back), listing(&dst));
    write(back.join("extra.txt"), "local only\n");
    write(dst.join("dir/new.txt"), "made on the machine\n");
    let pulled = summary(
        &env,
        &[
            "sync",
            "pull",
            "-m",
            "gpu",
            "--src",
            &format!("{}/", s(&dst)),
            "--dst",
            s(&back),
            "--delete",
        ],
    );
    assert_eq!(
        (pulled["files_sent"].as_u64(), pulled["deleted"].as_u64()),
        (Some(1), Some(1)),
        "{pulled}"
    );
    assert_eq!(listing(&back), listing(&dst));
}

#[test]
fn odd_names_a_symlink_loop_and_excludes() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("new\nline.txt"), "newline\n");
    write(src.join("skip/me.tmp"), "x\n");
    write(src.join("keep.txt"), "keep\n");
    symlink(".", src.join("loop")).unwrap();
    symlink("self", src.join("self")).unwrap();
    symlink("/etc", src.join("outside")).unwrap();
    let bad = std::ffi::OsStr::from_bytes(b"bad\xffname");
    std::fs::write(src.join(bad), "not utf-8").unwrap();
    let dst = env.path("dst");
    let out = push(&env, "local", &src, &dst, &["--exclude", "*.tmp"]);
    assert_eq!(std::fs::read_to_string(dst.join("new\nline.txt")).unwrap(), "newline\n");
    assert_eq!(std::fs::read_link(dst.join("loop")).unwrap(), Path::new("."));
    assert_eq!(std::fs::read_link(dst.join("self")).unwrap(), Path::new("self"));
    assert_eq!(
        std::fs::read_link(dst.join("outside")).unwrap(),
        Path::new("/etc"),
        "copied as a link, not followed"
    );
    assert!(!dst.join("skip/me.tmp").exists());
    assert!(!dst.join(bad).exists());
    let skipped = out["skipped"].as_array().unwrap();
    assert!(skipped.iter().any(|s| s["reason"].as_str().unwrap().contains("UTF-8")), "{out}");
    // An excluded path on the destination is not deleted either.
    write(dst.join("skip/mine.tmp"), "theirs\n");
    push(&env, "local", &src, &dst, &["--exclude", "*.tmp", "--delete"]);
    assert!(dst.join("skip/mine.tmp").exists());
}

use std::os::unix::ffi::OsStrExt;

#[test]
fn paths_that_climb_out_of_the_destination_are_refused() {
    let env = TestEnv::new();
    let dst = env.path("dst");
    let outside = env.path("escaped");
    let root = s(&dst);
    let line = |v: Value| format!("{v}\n");
    // A frame stream that tries `..`.
    let mut input = line(serde_json::json!({"id": 1, "type": "sync_apply", "root": root}));
    input += &line(
        serde_json::json!({"frame": "file", "path": "../escaped", "size": 2, "mode": "0644", "mtime_ns": 0}),
    );
    input += "hi\0";
    let answers = env.rpc_raw(input.as_bytes());
    assert_eq!(answers.last().unwrap()["code"], "invalid_argument", "{answers:?}");
    assert!(!outside.exists());
    // A manifest that names `..` or an absolute path.
    for bad in ["../x", "/etc/passwd", "a/../../x"] {
        let mut input = line(
            serde_json::json!({"id": 2, "type": "sync_diff", "root": root, "direction": "push", "entries": 1}),
        );
        input += &line(
            serde_json::json!({"path": bad, "kind": "file", "size": 1, "mode": "0644", "mtime_ns": 0}),
        );
        let answers = env.rpc_raw(input.as_bytes());
        assert_eq!(answers.last().unwrap()["code"], "invalid_argument", "{bad}: {answers:?}");
    }
    // Asking to be sent a path outside the tree.
    let mut input =
        line(serde_json::json!({"id": 3, "type": "sync_send", "root": root, "paths": 1}));
    input += &line(serde_json::json!("../../etc/passwd"));
    let answers = env.rpc_raw(input.as_bytes());
    assert_eq!(answers.last().unwrap()["code"], "invalid_argument", "{answers:?}");
    // A directory of the tree that is a symlink to outside is never written through.
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    symlink(&outside, dst.join("sub")).unwrap();
    let mut input = line(serde_json::json!({"id": 4, "type": "sync_apply", "root": root}));
    input += &line(
        serde_json::json!({"frame": "file", "path": "sub/x", "size": 2, "mode": "0644", "mtime_ns": 0}),
    );
    input += "hi\0";
    input += &line(serde_json::json!({"frame": "end"}));
    let answers = env.rpc_raw(input.as_bytes());
    let last = answers.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["files"].as_u64()),
        (Some("sync_applied"), Some(0)),
        "{answers:?}"
    );
    assert_eq!(last["skipped"][0]["path"], "sub/x");
    assert!(!outside.join("x").exists());
}

#[test]
fn a_file_changing_while_it_is_sent_is_sent_again_or_reported() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("steady.txt"), "steady\n");
    let grow = src.join("grow.log.txt");
    std::fs::write(&grow, vec![b'x'; 4 << 20]).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, grow) = (stop.clone(), grow.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(grow).unwrap();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                f.write_all(b"more\n").unwrap();
            }
        })
    };
    let dst = env.path("dst");
    let out = env
        .remote(&["sync", "push", "--src", &format!("{}/", s(&src)), "--dst", s(&dst)])
        .output()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    let summary = crate::support::json_lines(&out).pop().unwrap();
    assert_eq!(std::fs::read_to_string(dst.join("steady.txt")).unwrap(), "steady\n");
    let reported = out.status.code() == Some(1);
    if reported {
        // Changed during both tries: reported and never half-written on the other side.
        assert_eq!(summary["changed"], serde_json::json!(["grow.log.txt"]), "{summary}");
        assert!(!dst.join("grow.log.txt").exists());
    } else {
        // The writer was not scheduled while one of the tries read (a loaded machine): what
        // arrived is one whole state of the file, never a torn one.
        assert_eq!((out.status.code(), &summary["files_sent"]), (Some(0), &2.into()), "{summary}");
        let sent = std::fs::read(dst.join("grow.log.txt")).unwrap();
        let (head, tail) = sent.split_at(4 << 20);
        assert!(head.iter().all(|&b| b == b'x') && tail.len() % 5 == 0, "a torn copy");
        assert!(tail.chunks(5).all(|c| c == b"more\n"), "a torn copy");
    }
    // Once it stops changing, the next run completes it.
    let done = push(&env, "local", &src, &dst, &[]);
    if reported {
        assert_eq!(done["files_sent"], 1, "{done}");
    }
    assert_eq!(std::fs::read(dst.join("grow.log.txt")).unwrap(), std::fs::read(&grow).unwrap());
}

/// A 1 MiB tmpfs, unmounted when the test ends.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: PathBuf) -> SmallDisk {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(ok.success(), "mounting a tmpfs needs root (the tests and CI run as root)");
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_on_the_receiving_side_is_a_clear_error_and_old_files_stay() {
    let env = TestEnv::new();
    let disk = SmallDisk::mount(env.path("small"));
    let dst = disk.0.join("tree");
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(dst.join("keep.txt"), "old\n").unwrap();
    let src = env.path("src");
    write(src.join("big.bin"), &"z".repeat(2 << 20));
    write(src.join("keep.txt"), "new content\n");
    let e = env.err(
        &["sync", "push", "--src", &format!("{}/", s(&src)), "--dst", s(&dst)],
        "no_space",
        4,
    );
    assert!(e["message"].as_str().unwrap().contains("No space left"), "{e}");
    assert_eq!(std::fs::read_to_string(dst.join("keep.txt")).unwrap(), "old\n");
    let left: Vec<_> = std::fs::read_dir(&dst).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["keep.txt"], "no half file, no temp file");
    // The same for a single file write.
    let big = env.path("big.in");
    std::fs::write(&big, vec![0u8; 2 << 20]).unwrap();
    env.err(&["file", "write", "--dst", s(&dst.join("keep.txt")), "--src", s(&big)], "no_space", 4);
    assert_eq!(std::fs::read_to_string(dst.join("keep.txt")).unwrap(), "old\n");
}

/// Issue 29 point 4: rsync's path rule, both ways. `--src tree/` syncs the contents into
/// `--dst`; `--src tree` syncs the directory itself into `--dst/tree`.
#[test]
fn src_with_and_without_a_trailing_slash_land_as_rsync_has_it() {
    let (env, _sshd) = ssh_env();
    let tree = env.path("tree");
    write(tree.join("a.txt"), "a");
    let remote = env.path("remote");
    let src = s(&tree);
    summary(&env, &["sync", "push", "-m", "gpu", "--src", src, "--dst", s(&remote)]);
    assert_eq!(std::fs::read_to_string(remote.join("tree/a.txt")).unwrap(), "a");
    assert!(!remote.join("a.txt").exists());
    summary(&env, &["sync", "push", "-m", "gpu", "--src", &format!("{src}/"), "--dst", s(&remote)]);
    assert_eq!(std::fs::read_to_string(remote.join("a.txt")).unwrap(), "a");

    let back = env.path("back");
    let rsrc = s(&remote.join("tree")).to_string();
    summary(&env, &["sync", "pull", "-m", "gpu", "--src", &rsrc, "--dst", s(&back)]);
    assert_eq!(std::fs::read_to_string(back.join("tree/a.txt")).unwrap(), "a");
    assert!(!back.join("a.txt").exists());
    summary(&env, &["sync", "pull", "-m", "gpu", "--src", &format!("{rsrc}/"), "--dst", s(&back)]);
    assert_eq!(std::fs::read_to_string(back.join("a.txt")).unwrap(), "a");
}
