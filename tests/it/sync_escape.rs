//! Nothing a sync, an upload or `file write` writes lands outside its destination, and no
//! setuid, setgid or sticky bit travels unless asked: a directory swapped for a symlink between
//! entries or frames, special bits on every write path, tar names and totals held to their caps,
//! temp files of a killed sync swept, `sync pull --dst FILE` a usage error.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::serve::{Serve, served, token};
use crate::support::{TestEnv, wait_until};
use crate::sync_tar::{RawEntry, raw_tgz, upload};

fn line(v: Value) -> String {
    format!("{v}\n")
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn temps(dir: &Path) -> Vec<String> {
    let names = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name());
    names
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".codex-sync."))
        .collect()
}

#[test]
fn an_upload_that_turns_a_directory_into_a_symlink_writes_nothing_outside() {
    let (env, serve, token) = served();
    let outside = env.home.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let dir = tar::EntryType::Directory;
    let link = tar::EntryType::Symlink;
    let entries: Vec<RawEntry> = vec![
        ("a", dir, b""),
        ("a", link, s(&outside).as_bytes()),
        ("a/escaped.txt", tar::EntryType::Regular, b"escaped"),
    ];
    let (status, v) = upload(&serve.addr, &token, "dst=in&mkdir_p=true", &raw_tgz(&entries));
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_argument")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("a/escaped.txt"), "{v}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "something landed outside");
}

#[test]
fn sync_apply_frames_that_turn_a_directory_into_a_symlink_write_nothing_outside() {
    let env = TestEnv::new();
    let dst = env.path("dst");
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let mut input = line(json!({"id": 1, "type": "sync_apply", "root": s(&dst)}));
    input += &line(json!({"frame": "dir", "path": "a", "mode": "0755"}));
    input += &line(
        json!({"frame": "file", "path": "a/in.txt", "size": 2, "mode": "0644", "mtime_ns": 0}),
    );
    input += "in\0";
    input += &line(json!({"frame": "delete", "path": "a/in.txt"}));
    input += &line(json!({"frame": "symlink", "path": "a", "target": s(&outside)}));
    input += &line(
        json!({"frame": "file", "path": "a/escaped.txt", "size": 2, "mode": "0644", "mtime_ns": 0}),
    );
    input += "hi\0";
    input += &line(json!({"frame": "end"}));
    let answers = env.rpc_raw(input.as_bytes());
    let last = answers.last().unwrap();
    assert_eq!(last["type"], "sync_applied", "{answers:?}");
    assert_eq!(last["skipped"][0]["path"], "a/escaped.txt", "{answers:?}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "something landed outside");
    assert!(std::fs::symlink_metadata(dst.join("a")).unwrap().is_symlink());
}

#[test]
fn special_bits_are_cleared_on_apply_and_file_write_unless_kept() {
    let env = TestEnv::new();
    let (dst, kept) = (env.path("dst"), env.path("kept"));
    for (root, keep) in [(&dst, false), (&kept, true)] {
        let mut input = line(
            json!({"id": 1, "type": "sync_apply", "root": s(root), "keep_special_bits": keep}),
        );
        input += &line(
            json!({"frame": "file", "path": "python3", "size": 2, "mode": "4755", "mtime_ns": 0}),
        );
        input += "py\0";
        input += &line(json!({"frame": "dir", "path": "shared", "mode": "3777"}));
        input += &line(json!({"frame": "end"}));
        let answers = env.rpc_raw(input.as_bytes());
        assert_eq!(answers.last().unwrap()["files"], 1, "{answers:?}");
    }
    assert_eq!((mode(&dst.join("python3")), mode(&dst.join("shared"))), (0o755, 0o777));
    assert_eq!((mode(&kept.join("python3")), mode(&kept.join("shared"))), (0o4755, 0o3777));

    let write = |name: &str, mode: Value, keep: bool| {
        let path = env.path(name);
        let req = json!({"id": 2, "type": "file_write", "path": s(&path), "size": 2, "mode": mode,
                         "keep_special_bits": keep});
        let answers = env.rpc_raw(format!("{}hi", line(req)).as_bytes());
        (answers[0].clone(), path)
    };
    for m in ["4755", "6755"] {
        let (answer, path) = write(&format!("w{m}"), json!(m), false);
        assert_eq!(answer["type"], "file_written", "{answer}");
        assert_eq!(mode(&path), 0o755, "--mode {m}");
    }
    let (answer, path) = write("kept-w", json!("4755"), true);
    assert_eq!(answer["type"], "file_written", "{answer}");
    assert_eq!(mode(&path), 0o4755);
    for m in [json!(4294967295u64), json!("77777"), json!(0o10000)] {
        let (answer, path) = write("huge", m.clone(), false);
        assert_eq!(answer["code"], "invalid_argument", "{m}: {answer}");
        assert!(!path.exists());
    }
}

#[test]
fn sync_pull_and_push_of_a_setuid_file_leave_it_plain_unless_kept() {
    let env = TestEnv::new();
    let src = env.home.join("theirs");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("python3"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("python3"), PermissionsExt::from_mode(0o4755)).unwrap();
    let pulled = env.path("pulled");
    env.ok(&[
        "sync",
        "pull",
        "-m",
        "local",
        "--src",
        &format!("{}/", s(&src)),
        "--dst",
        s(&pulled),
    ]);
    assert_eq!(mode(&pulled.join("python3")), 0o755);
    let kept = env.path("kept");
    let contents = format!("{}/", s(&src));
    let args = ["sync", "pull", "-m", "local", "--src", &contents, "--dst", s(&kept)];
    env.ok(&[&args[..], &["--keep-special-bits"]].concat());
    assert_eq!(mode(&kept.join("python3")), 0o4755);
    let pushed = env.home.join("pushed");
    env.ok(&[
        "sync",
        "push",
        "-m",
        "local",
        "--src",
        &format!("{}/", s(&src)),
        "--dst",
        s(&pushed),
    ]);
    assert_eq!(mode(&pushed.join("python3")), 0o755);

    // A --dst that is a file is a usage error, not an internal one.
    let file = env.path("a-file");
    std::fs::write(&file, "x").unwrap();
    env.err(
        &["sync", "pull", "-m", "local", "--src", &format!("{}/", s(&src)), "--dst", s(&file)],
        "usage",
        2,
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

#[test]
fn sync_pull_into_a_path_under_a_file_is_a_usage_error() {
    let env = TestEnv::new();
    let src = env.home.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let file = env.path("a-file");
    std::fs::write(&file, "x").unwrap();
    let dst = file.join("sub");
    env.err(
        &["sync", "pull", "-m", "local", "--src", &format!("{}/", s(&src)), "--dst", s(&dst)],
        "usage",
        2,
    );
}

#[test]
fn the_temp_file_of_a_killed_sync_is_swept_by_the_next_sync() {
    let env = TestEnv::new();
    let dst = env.home.join("dst");
    std::fs::create_dir_all(dst.join("sub")).unwrap();
    let mut rpc = env
        .codexd(&["rpc"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = rpc.stdin.take().unwrap();
    let mut input = line(json!({"id": 1, "type": "sync_apply", "root": s(&dst)}));
    input += &line(
        json!({"frame": "file", "path": "sub/big", "size": 1 << 20, "mode": "0644", "mtime_ns": 0}),
    );
    stdin.write_all(input.as_bytes()).unwrap();
    stdin.write_all(&[7u8; 4096]).unwrap();
    stdin.flush().unwrap();
    assert!(wait_until(Duration::from_secs(20), || !temps(&dst.join("sub")).is_empty()));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(rpc.id() as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    rpc.wait().unwrap();
    drop(stdin);
    assert_eq!(temps(&dst.join("sub")).len(), 1, "the killed sync's temp file stays");

    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/small"), "s").unwrap();
    env.ok(&["sync", "push", "-m", "local", "--src", &format!("{}/", s(&src)), "--dst", s(&dst)]);
    assert_eq!(temps(&dst.join("sub")), Vec::<String>::new());
    assert_eq!(std::fs::read_to_string(dst.join("sub/small")).unwrap(), "s");
}

/// A gzip'ed tar whose first entry is a GNU long name of `len` zero bytes.
fn long_name_bomb(len: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_mode(0o644);
    header.set_size(len as u64);
    header.set_cksum();
    gz.write_all(header.as_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut left = len.next_multiple_of(512);
    while left > 0 {
        let n = left.min(zeros.len());
        gz.write_all(&zeros[..n]).unwrap();
        left -= n;
    }
    let mut file = tar::Header::new_gnu();
    file.set_path("x").unwrap();
    file.set_size(0);
    file.set_cksum();
    gz.write_all(file.as_bytes()).unwrap();
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap()
}

fn vm_size_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_long_name_bomb_is_refused_within_an_address_space_limit_and_not_echoed() {
    let (env, serve, token) = served();
    // codexd serve may grow by 96 MiB from here: a 128 MiB name held whole would not fit.
    let limit = (vm_size_kib(serve.pid()) + 96 * 1024) * 1024;
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &serve.pid().to_string(), &format!("--as={limit}:{limit}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, v) =
        upload(&serve.addr, &token, "dst=in&mkdir_p=true", &long_name_bomb(128 << 20));
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_argument")), "{v}");
    assert!(v["message"].as_str().unwrap().len() < 300, "{v}");
    // A long name just over PATH_MAX, of real characters, is refused and quoted cut.
    let name = "n".repeat(5000);
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    tar.append_data(&mut header, &name, &b"x"[..]).unwrap();
    let (status, v) = upload(&serve.addr, &token, "dst=in", &tar.into_inner().unwrap());
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_argument")), "{v}");
    assert!(v["message"].as_str().unwrap().len() < 500, "{v}");
    // The serve is still there.
    let ok = raw_tgz(&[("fine.txt", tar::EntryType::Regular, b"fine")]);
    assert_eq!(upload(&serve.addr, &token, "dst=in", &ok).0, 200);
    assert_eq!(std::fs::read_to_string(env.home.join("in/fine.txt")).unwrap(), "fine");
}

#[test]
fn an_upload_over_max_upload_bytes_is_refused_and_leaves_no_file() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.data_dir()).unwrap();
    std::fs::write(env.data_dir().join("config.yaml"), "max_upload_bytes: 100000\n").unwrap();
    let serve = Serve::start(&env);
    let token = token(&env);
    let big = vec![0u8; 200_000];
    let tgz = raw_tgz(&[("big.bin", tar::EntryType::Regular, &big)]);
    assert!(tgz.len() < 10_000, "the gzip is small: {}", tgz.len());
    let (status, v) = upload(&serve.addr, &token, "dst=in&mkdir_p=true", &tgz);
    assert_eq!((status, v["code"].as_str()), (413, Some("request_too_large")), "{v}");
    assert!(!env.home.join("in/big.bin").exists());
    assert_eq!(temps(&env.home.join("in")), Vec::<String>::new());
}
