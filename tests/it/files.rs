//! `codex-remote file write|read|stat|ls`: byte-exact round trips over the real sshd, atomic
//! writes, and the inputs that are refused.

use std::path::Path;

use base64::Engine;

use crate::support::{Sshd, TestEnv};

fn ssh_env() -> (TestEnv, Sshd) {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let remote = env.path("remote-data");
    env.set_config(&format!("machines:\n{}", sshd.machine_yaml("gpu", &remote, "")));
    (env, sshd)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Pseudo-random bytes without a crate: every byte value, many times.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn files_round_trip_byte_exact_over_ssh() {
    let (env, _sshd) = ssh_env();
    let remote = env.path("remote-files");
    let cases: [(&str, Vec<u8>); 3] = [
        ("binary", (0..=255u8).cycle().take(1000).collect()),
        ("empty", vec![]),
        ("big", noise(10 << 20)),
    ];
    for (name, bytes) in &cases {
        let local = env.path(&format!("{name}.in"));
        std::fs::write(&local, bytes).unwrap();
        let dst = remote.join("sub").join(name);
        let w = env.ok(&[
            "file",
            "write",
            "-m",
            "gpu",
            "--dst",
            s(&dst),
            "--src",
            s(&local),
            "--mkdir",
        ]);
        assert_eq!(
            (w["type"].as_str(), w["size"].as_u64()),
            (Some("file_written"), Some(bytes.len() as u64)),
            "{w}"
        );
        assert_eq!(std::fs::read(&dst).unwrap(), *bytes, "{name} on the machine");
        let back = env.path(&format!("{name}.out"));
        let r = env.ok(&["file", "read", "-m", "gpu", "--path", s(&dst), "--dst", s(&back)]);
        assert_eq!(
            (r["bytes"].as_u64(), r["eof"].as_bool()),
            (Some(bytes.len() as u64), Some(true)),
            "{r}"
        );
        assert_eq!(std::fs::read(&back).unwrap(), *bytes, "{name} read back");
    }
    // The default output: one object with the bytes in base64; pages by offset lose nothing.
    let dst = remote.join("sub").join("binary");
    let whole = env.ok(&["file", "read", "-m", "gpu", "--path", s(&dst)]);
    let decode = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD.decode(v["data_b64"].as_str().unwrap()).unwrap()
    };
    assert_eq!(decode(&whole), cases[0].1);
    let mut offset = 0u64;
    let mut joined = Vec::new();
    loop {
        let page = env.ok(&[
            "file",
            "read",
            "-m",
            "gpu",
            "--path",
            s(&dst),
            "--offset",
            &offset.to_string(),
            "--limit",
            "300",
        ]);
        joined.extend(decode(&page));
        offset = page["next_offset"].as_u64().unwrap();
        if page["eof"] == true {
            break;
        }
    }
    assert_eq!(joined, cases[0].1);
    let raw =
        env.remote(&["file", "read", "-m", "gpu", "--path", s(&dst), "--raw"]).output().unwrap();
    assert_eq!(raw.stdout, cases[0].1);

    // A text write keeps the mode asked for; stat and ls describe it.
    let text = remote.join("run.sh");
    env.ok(&[
        "file",
        "write",
        "-m",
        "gpu",
        "--dst",
        s(&text),
        "--content",
        "echo hi\n",
        "--mode",
        "0750",
    ]);
    let stat = env.ok(&["file", "stat", "-m", "gpu", "--path", s(&text)]);
    assert_eq!(
        (stat["kind"].as_str(), stat["mode"].as_str(), stat["size"].as_u64()),
        (Some("file"), Some("0750"), Some(8))
    );
    let ls = env.ok(&["file", "ls", "-m", "gpu", "--path", s(&remote)]);
    let names: Vec<&str> =
        ls["entries"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(names, ["run.sh", "sub"]);
    let missing = env.ok(&["file", "stat", "-m", "gpu", "--path", s(&remote.join("nope"))]);
    assert_eq!(missing["exists"], false);
}

#[test]
fn writes_refuse_symlinks_missing_dirs_and_files_over_the_cap() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.data_dir()).unwrap();
    std::fs::write(env.data_dir().join("config.yaml"), "max_file_size: 10\n").unwrap();
    let dir = env.path("w");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("real"), "old").unwrap();
    std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
    let link = dir.join("link");
    env.err(&["file", "write", "--dst", s(&link), "--content", "new"], "invalid_argument", 4);
    assert_eq!(std::fs::read_to_string(dir.join("real")).unwrap(), "old");
    env.ok(&["file", "write", "--dst", s(&link), "--content", "new", "--follow-symlinks"]);
    assert_eq!(std::fs::read_to_string(dir.join("real")).unwrap(), "new");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink(), "the link stays a link");

    let e = env.err(
        &["file", "write", "--dst", s(&dir.join("big")), "--content", "01234567890"],
        "file_too_large",
        4,
    );
    assert!(e["message"].as_str().unwrap().contains("max_file_size"), "{e}");
    assert!(!dir.join("big").exists());
    env.err(
        &["file", "write", "--dst", s(&dir.join("a/b/c")), "--content", "x"],
        "file_not_found",
        4,
    );
    env.ok(&["file", "write", "--dst", s(&dir.join("a/b/c")), "--content", "x", "--mkdir"]);
    env.err(&["file", "read", "--path", s(&dir.join("nope"))], "file_not_found", 4);
    env.err(&["file", "read", "--path", s(&dir)], "invalid_argument", 4);
    // No temp file is left behind by the refused writes.
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().all(|n| !n.starts_with(".codex-sync")), "{left:?}");
}

#[test]
fn a_src_that_is_a_socket_or_a_device_is_refused() {
    let env = TestEnv::new();
    let sock = env.path("s.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let dst = env.path("out");
    for src in [s(&sock), "/dev/null"] {
        let e = env.err(&["file", "write", "--dst", s(&dst), "--src", src], "usage", 2);
        assert!(e["message"].as_str().unwrap().contains("not a regular file"), "{e}");
        let e = env.err(&["sync", "push", "--src", src, "--dst", s(&dst)], "usage", 2);
        assert!(e["message"].as_str().unwrap().contains("a socket, fifo or device"), "{e}");
    }
    assert!(!dst.exists());
}

/// A raw HTTP/1.1 POST with a body; the status and the body text.
pub fn post(addr: &str, path: &str, token: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut text = Vec::new();
    stream.read_to_end(&mut text).unwrap();
    let text = String::from_utf8_lossy(&text).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_string())
}

#[test]
fn over_http_paths_outside_the_home_and_allowed_roots_are_forbidden() {
    use crate::serve::{Serve, http};
    let env = TestEnv::new();
    let allowed = env.path("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(env.data_dir()).unwrap();
    std::fs::write(
        env.data_dir().join("config.yaml"),
        format!("allowed_cwd_roots: [\"{}\"]\n", allowed.display()),
    )
    .unwrap();
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, env.home.join("link-out")).unwrap();
    let serve = Serve::start(&env);
    let token = std::fs::read_to_string(env.data_dir().join("token")).unwrap().trim().to_string();

    // Our own file routes: inside the home and an allowed root work.
    let body = br#"{"path":"w/a.txt","content":"hi","mode":"0600","mkdir":true}"#;
    let (status, text) = post(&serve.addr, "/v1/files/write", &token, body);
    assert_eq!(status, 200, "{text}");
    assert_eq!(std::fs::read_to_string(env.home.join("w/a.txt")).unwrap(), "hi");
    let body = format!(r#"{{"path":"{}","content_b64":"AAEC"}}"#, allowed.join("b.bin").display());
    assert_eq!(post(&serve.addr, "/v1/files/write", &token, body.as_bytes()).0, 200);
    assert_eq!(std::fs::read(allowed.join("b.bin")).unwrap(), [0, 1, 2]);
    let get = |path: &str| {
        http(
            &serve.addr,
            &format!(
                "GET /v1/file/read?path={path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let (status, v) = get("w/a.txt");
    assert_eq!((status, v["data_b64"].as_str()), (200, Some("aGk=")), "{v}");

    // Absolute paths outside, `..` and a symlink out of the home are refused, nothing written.
    for path in [
        outside.join("x").display().to_string(),
        "../outside/x".to_string(),
        "link-out/x".to_string(),
    ] {
        let body = format!(r#"{{"path":"{path}","content":"no"}}"#);
        let (status, text) = post(&serve.addr, "/v1/files/write", &token, body.as_bytes());
        assert_eq!(status, 403, "{path}: {text}");
        assert!(text.contains("forbidden"), "{text}");
        assert_eq!(get(&path).0, 403, "{path}");
    }
    assert!(!outside.join("x").exists());
    assert_eq!(get("/etc/hostname").0, 403);

    // /v1/rpc: the bytes after the request line stream to the handler; the same rules hold.
    let mut body = br#"{"id":1,"type":"file_write","path":"w/rpc.bin","size":3}"#.to_vec();
    body.extend_from_slice(b"\n\xff\x00\n");
    let (status, text) = post(&serve.addr, "/v1/rpc", &token, &body);
    assert_eq!(status, 200);
    assert!(text.contains("file_written"), "{text}");
    assert_eq!(std::fs::read(env.home.join("w/rpc.bin")).unwrap(), b"\xff\x00\n");
    let line = format!(r#"{{"id":2,"type":"sync_apply","root":"{}"}}"#, outside.display());
    let body = format!("{line}\n{{\"frame\":\"end\"}}\n");
    let (_, text) = post(&serve.addr, "/v1/rpc", &token, body.as_bytes());
    assert!(text.contains("\"code\":\"forbidden\""), "{text}");
    let body = format!(r#"{{"id":3,"type":"file_ls","path":"{}"}}"#, outside.display());
    let (_, text) = post(&serve.addr, "/v1/rpc", &token, body.as_bytes());
    assert!(text.contains("\"code\":\"forbidden\""), "{text}");
}
