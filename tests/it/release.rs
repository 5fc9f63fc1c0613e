//! Releases: `--version` of both binaries, the version check against the remote codexd's
//! `hello`, and the static (musl) codexd that `make test` builds and names in `CODEXD_MUSL`.

use std::io::Write;
use std::process::Stdio;

use serde_json::Value;

use crate::support::{CODEX_REMOTE, CODEXD, TestEnv, json_lines};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn version_json(bin: &str) -> Value {
    let out = std::process::Command::new(bin).args(["--version", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines.into_iter().next().unwrap()
}

#[test]
fn version_names_the_release_commit_and_protocol() {
    let remote = version_json(CODEX_REMOTE);
    let daemon = version_json(CODEXD);
    assert_eq!(
        (remote["name"].as_str(), daemon["name"].as_str()),
        (Some("codex-remote"), Some("codexd"))
    );
    for v in [&remote, &daemon] {
        assert_eq!(v["version"], VERSION, "{v}");
        assert_eq!(v["protocol"], 1, "{v}");
        assert!(v["commit"].as_str().is_some_and(|c| !c.is_empty()), "{v}");
    }
    assert_eq!(remote["commit"], daemon["commit"]);
    let out = std::process::Command::new(CODEXD).arg("--version").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let commit = daemon["commit"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("codexd {VERSION} (commit {commit}, protocol 1, ")),
        "{text}"
    );
}

/// A stand-in codexd that answers `hello` as `version`/`protocol` and anything else with an
/// empty list, and records every request line it gets in `<script>.log`.
fn fake_codexd(env: &TestEnv, version: &str, protocol: u32) -> std::path::PathBuf {
    let path = env.path("fake-codexd");
    let script = format!(
        r#"#!/usr/bin/env bash
while IFS= read -r line; do
  printf '%s\n' "$line" >> "$0.log"
  id=$(printf '%s' "$line" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
  case "$line" in
    *'"type":"hello"'*) echo "{{\"id\":\"$id\",\"type\":\"hello\",\"protocol\":{protocol},\"version\":\"{version}\",\"capabilities\":[],\"user\":\"u\",\"host\":\"h\",\"data_dir\":\"/d\"}}" ;;
    *) echo "{{\"id\":\"$id\",\"type\":\"list\",\"jobs\":[]}}" ;;
  esac
done
"#
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    env.set_config(&format!("machines:\n  - name: local\n    codexd: {}\n", path.display()));
    path
}

fn received(fake: &std::path::Path) -> Vec<String> {
    let log = std::fs::read_to_string(fake.with_extension("log")).unwrap_or_default();
    log.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["type"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_older_codexd_is_named_and_the_call_goes_on() {
    let env = TestEnv::new();
    let fake = fake_codexd(&env, "0.0.9", 1);
    for _ in 0..2 {
        let out = env.remote(&["exec", "list"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert_eq!(json_lines(&out)[0]["jobs"], serde_json::json!([]));
        let expected = format!(
            "codexd on local is 0.0.9 (protocol 1); this codex-remote is {VERSION} (protocol 1): upgrade it"
        );
        assert!(stderr.contains(&expected), "{stderr}");
    }
    // The hello rode on the first call's session; the second call used the cached answer.
    assert_eq!(received(&fake), ["hello", "exec_list", "exec_list"]);
}

#[test]
fn another_protocol_is_refused_before_the_request_is_sent() {
    let env = TestEnv::new();
    let fake = fake_codexd(&env, "9.0.0", 2);
    let err = env.err(&["exec", "list"], "protocol_mismatch", 3);
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("codexd on local is 9.0.0 (protocol 2)"), "{message}");
    assert!(err["hint"].as_str().unwrap().contains("upgrade codex-remote"), "{err}");
    assert_eq!(
        received(&fake),
        ["hello"],
        "the request must not reach a codexd of another protocol"
    );
    // Nothing is cached for an incompatible codexd: the next call asks again.
    env.err(&["exec", "list"], "protocol_mismatch", 3);
    assert_eq!(received(&fake), ["hello", "hello"]);
}

/// Whether an ELF file asks for a program interpreter (is dynamically linked).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "64-bit ELF expected");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

#[test]
fn the_static_linux_codexd_answers_hello() {
    let Some(path) = std::env::var_os("CODEXD_MUSL") else {
        // CI runs `make test`, which builds the musl codexd: unset there is a broken setup.
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CODEXD_MUSL unset under CI: run the tests with `make test` (it builds the musl codexd)"
        );
        eprintln!("skipped: CODEXD_MUSL unset (`make test` builds the musl codexd and sets it)");
        return;
    };
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("CODEXD_MUSL={}: {e} (run `make codexd-musl`)", path.display()));
    assert!(!has_interpreter(&bytes), "{} is dynamically linked", path.display());
    assert!(has_interpreter(&std::fs::read(CODEXD).unwrap()), "the check must tell them apart");

    let env = TestEnv::new();
    let mut child = std::process::Command::new(&path)
        .arg("rpc")
        .env("HOME", &env.home)
        .env_remove("CODEXD_DATA_DIR")
        .env_remove("CODEXD_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{\"id\":7,\"type\":\"hello\"}\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!((lines[0]["type"].as_str(), lines[0]["id"].as_i64()), (Some("hello"), Some(7)));
    assert_eq!(
        (lines[0]["version"].as_str(), lines[0]["protocol"].as_i64()),
        (Some(VERSION), Some(1))
    );
    let version = std::process::Command::new(&path).args(["--version", "--json"]).output().unwrap();
    let version: Value = serde_json::from_slice(&version.stdout).unwrap();
    assert_eq!(version["target"], "x86_64-unknown-linux-musl");
}
