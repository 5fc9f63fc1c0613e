//! `version` and `update` on both binaries, against a `dist/` served by a local HTTP server.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use sha2::Digest;

use crate::support::{CODEX_REMOTE, CODEXD, TestEnv, wait_until};

/// `python3 -m http.server` on a free port, serving `dir`; stopped when dropped.
struct HttpServer(Child, u16);

impl HttpServer {
    fn serve(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "http.server came up");
        HttpServer(child, port)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.1)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn platform() -> String {
    format!("linux-{}", std::env::consts::ARCH)
}

/// A `dist/` as build-dist.sh lays it out, holding the given binaries.
fn dist(env: &TestEnv, binaries: &[(&str, &str)]) -> PathBuf {
    let dist = env.path("dist");
    let dir = dist.join(platform());
    std::fs::create_dir_all(&dir).unwrap();
    let mut sums = String::new();
    for (name, from) in binaries {
        std::fs::copy(from, dir.join(name)).unwrap();
        let hash = hex::encode(sha2::Sha256::digest(std::fs::read(from).unwrap()));
        sums.push_str(&format!("{hash}  {}/{name}\n", platform()));
    }
    std::fs::write(dist.join("SHA256SUMS"), sums).unwrap();
    dist
}

/// A copy of `binary` that updates may replace.
fn installed(env: &TestEnv, name: &str, binary: &str) -> PathBuf {
    let dir = env.path("install");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::copy(binary, &path).unwrap();
    path
}

fn json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap_or(Value::Null)
}

#[test]
fn update_checks_replaces_and_refuses_what_does_not_match() {
    let env = TestEnv::new();
    let dist = dist(&env, &[("codex-remote", CODEX_REMOTE), ("codexd", CODEXD)]);
    let server = HttpServer::serve(&dist);
    let exe = installed(&env, "codex-remote", CODEX_REMOTE);
    let run = |args: &[&str]| env.command(&exe, args).output().unwrap();

    let out = run(&["update", "--check", "--from", &server.url()]);
    let check = json(&out);
    assert_eq!(out.status.code(), Some(0), "{check}");
    assert_eq!(check["update_available"], false, "the same build: {check}");
    assert_eq!(check["latest_version"], check["current_version"]);
    assert_eq!(check["asset"], format!("{}/codex-remote", platform()));

    // Not newer and no --force: nothing to do, nothing changed.
    let inode = std::fs::metadata(&exe).unwrap().ino();
    let out = run(&["update", "--yes", "--from", &server.url()]);
    assert_eq!((out.status.code(), json(&out)["updated"].as_bool()), (Some(0), Some(false)));
    assert_eq!(std::fs::metadata(&exe).unwrap().ino(), inode);

    // A reinstall replaces the file atomically and leaves no old copy behind.
    let out = run(&["update", "--yes", "--force", "--from", &server.url()]);
    assert_eq!(
        (out.status.code(), json(&out)["updated"].as_bool()),
        (Some(0), Some(true)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(std::fs::metadata(&exe).unwrap().ino(), inode, "a new file");
    assert!(env.command(&exe, &["--version"]).status().unwrap().success());
    let left: Vec<_> = std::fs::read_dir(exe.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["codex-remote"], "no .old nor staged file left");

    // Without --yes it changes nothing and says how.
    let out = run(&["update", "--force", "--from", &server.url()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));

    // A wrong checksum changes nothing.
    let before = std::fs::read(&exe).unwrap();
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    let bad = sums.replacen(&sums[..8], "00000000", 1);
    std::fs::write(dist.join("SHA256SUMS"), bad).unwrap();
    let out = run(&["update", "--yes", "--force", "--from", &server.url()]);
    assert_eq!(
        (out.status.code(), json(&out)["code"].as_str()),
        (Some(4), Some("checksum_mismatch"))
    );
    assert_eq!(std::fs::read(&exe).unwrap(), before);
    std::fs::write(dist.join("SHA256SUMS"), sums).unwrap();

    // An unreachable location changes nothing.
    let out = run(&["update", "--yes", "--force", "--from", "http://127.0.0.1:1"]);
    assert_eq!((out.status.code(), json(&out)["code"].as_str()), (Some(3), Some("connect_failed")));
    assert_eq!(std::fs::read(&exe).unwrap(), before);

    // No location: says which key to set.
    let out = run(&["update", "--check"]);
    assert_eq!(json(&out)["code"], "config_error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("update_url"));

    // A directory works as a location, and `update_url` in the config is read.
    let mut config = std::fs::OpenOptions::new().append(true).open(&env.config).unwrap();
    writeln!(config, "update_url: {}", dist.display()).unwrap();
    let out = run(&["update", "--check"]);
    assert_eq!(json(&out)["source"], dist.display().to_string());

    // codexd updates itself the same way.
    let codexd = installed(&env, "codexd", CODEXD);
    let out = env
        .command(&codexd, &["update", "--yes", "--force", "--from", &server.url()])
        .output()
        .unwrap();
    assert_eq!(
        (out.status.code(), json(&out)["updated"].as_bool()),
        (Some(0), Some(true)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn both_binaries_have_a_version_command() {
    let env = TestEnv::new();
    for (binary, name) in [(CODEX_REMOTE, "codex-remote"), (CODEXD, "codexd")] {
        let out = env.command(Path::new(binary), &["version"]).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{name} ")));
        let out = env.command(Path::new(binary), &["version", "--json"]).output().unwrap();
        assert_eq!(json(&out)["name"], name);
    }
}
