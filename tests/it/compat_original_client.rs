//! The original Go tool's own `codex-remote` against our `codexd serve`, where its binaries are
//! at hand: `ORIGINAL_TOOL_DIR` (built by `scripts/build-original.sh DIR`, as the bench uses).
//! Its request shapes are tested without it in `original_api.rs`; this runs the real client:
//! `file write` (text, and binary from a file), `file read`, `exec start --script` (its upload
//! through file write to `/tmp`), `exec logs --tail-lines N` (it sends `tail=2000` too),
//! `exec result` and `exec cancel`, each answer checked field by field.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Value, json};

use crate::serve::Serve;
use crate::support::TestEnv;

/// The original's `codex-remote`, or a panic that says how to get it (the test is `#[ignore]`d,
/// so this runs only when asked for, and then must not pass without it).
fn original_client() -> PathBuf {
    let dir = std::env::var_os("ORIGINAL_TOOL_DIR").filter(|d| !d.is_empty()).unwrap_or_else(|| {
        panic!("set ORIGINAL_TOOL_DIR to the original tool's binaries: scripts/build-original.sh DIR")
    });
    let bin = Path::new(&dir).join("codex-remote");
    assert!(bin.is_file(), "{} is missing: scripts/build-original.sh {:?}", bin.display(), dir);
    bin
}

/// The original client, its config naming our serve `gpu`.
struct Original<'a> {
    env: &'a TestEnv,
    bin: PathBuf,
    config: PathBuf,
}

impl Original<'_> {
    /// Runs `codex-remote GROUP CMD --config C --machine gpu ARGS`: exit code, stdout, stderr.
    fn run(&self, group: &str, cmd: &str, args: &[&str]) -> (i32, String, String) {
        let config = self.config.to_str().unwrap();
        let mut all = vec![group, cmd, "--config", config, "--machine", "gpu"];
        all.extend_from_slice(args);
        let out = self.env.command(&self.bin, &all).output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    }

    /// The one JSON object a command prints, which must succeed.
    fn json(&self, group: &str, cmd: &str, args: &[&str]) -> Value {
        let (code, out, err) = self.run(group, cmd, args);
        assert_eq!(code, 0, "{group} {cmd} {args:?}: {out} {err}");
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out:?} {err}"))
    }
}

fn b64_decode(text: &Value) -> Vec<u8> {
    let text = text.as_str().unwrap_or_else(|| panic!("not base64 text: {text}"));
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

#[test]
#[ignore = "needs ORIGINAL_TOOL_DIR: the original Go tool's binaries (scripts/build-original.sh \
            DIR); CI has no Go toolchain nor the original's repository"]
fn the_original_client_drives_our_serve() {
    let bin = original_client();
    let env = TestEnv::new();
    let serve = Serve::start(&env);
    let token = std::fs::read_to_string(env.data_dir().join("token")).unwrap();
    let config = env.path("original-remote.yaml");
    std::fs::write(
        &config,
        format!(
            "machines:\n  - name: gpu\n    addr: http://{}\n    token: {}\n",
            serve.addr,
            token.trim()
        ),
    )
    .unwrap();
    let orig = Original { env: &env, bin, config };

    // file write: text with --mkdir, then binary from a file with a mode.
    let text = env.home.join("orig/new/dir/t.txt");
    let v = orig.json(
        "file",
        "write",
        &["--dst", text.to_str().unwrap(), "--content", "hi there", "--mkdir"],
    );
    assert_eq!(
        (&v["ok"], &v["path"], &v["bytes_written"]),
        (&json!(true), &json!(text.display().to_string()), &json!(8)),
        "{v}"
    );
    assert_eq!(std::fs::read_to_string(&text).unwrap(), "hi there");
    assert_eq!(std::fs::metadata(&text).unwrap().permissions().mode() & 0o777, 0o644);
    let binary: Vec<u8> = (0..=255u8).rev().chain(0..=255).collect();
    let local = env.path("blob.bin");
    std::fs::write(&local, &binary).unwrap();
    let remote_bin = env.home.join("orig/new/dir/blob.bin");
    let args = ["--dst", remote_bin.to_str().unwrap(), "--src", local.to_str().unwrap()];
    let v = orig.json("file", "write", &[&args[..], &["--mode", "0600"]].concat());
    assert_eq!((&v["ok"], &v["bytes_written"]), (&json!(true), &json!(512)), "{v}");
    assert_eq!(std::fs::read(&remote_bin).unwrap(), binary, "the bytes, not their base64");
    assert_eq!(std::fs::metadata(&remote_bin).unwrap().permissions().mode() & 0o777, 0o600);

    // file read: the JSON with base64 content, and to a local file with --dst.
    let v = orig.json("file", "read", &["--path", remote_bin.to_str().unwrap()]);
    assert_eq!((&v["ok"], &v["size"]), (&json!(true), &json!(512)), "{v}");
    assert_eq!(v["path"], remote_bin.display().to_string());
    assert_eq!(b64_decode(&v["content"]), binary);
    let fetched = env.path("fetched.bin");
    let (code, _, err) = orig.run(
        "file",
        "read",
        &["--path", remote_bin.to_str().unwrap(), "--dst", fetched.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&fetched).unwrap(), binary);
    // A missing file: its client reports the error and exits 1.
    let (code, _, err) = orig.run("file", "read", &["--path", "/tmp/codex-compat-missing"]);
    assert_eq!(code, 1, "{err}");

    // exec start --script: uploaded to /tmp through file write, then run.
    let script = env.path("job.sh");
    std::fs::write(&script, "#!/bin/sh\nprintf 'one\\ntwo\\nthree\\n'\necho oops >&2\n").unwrap();
    let v = orig.json("exec", "start", &["--script", script.to_str().unwrap()]);
    assert_eq!(v["machine"], "gpu", "{v}");
    assert_eq!(v["base_url"], format!("http://{}", serve.addr), "{v}");
    assert!(v["status"].is_string(), "{v}");
    let id = v["exec_id"].as_str().unwrap().to_string();
    env.wait("local", &id);

    // exec result: the status object with the fields its skills read.
    let v = orig.json("exec", "result", &["--id", &id]);
    assert_eq!(
        (&v["exec_id"], &v["status"], &v["exit_code"]),
        (&json!(id), &json!("finished"), &json!(0)),
        "{v}"
    );
    // The rest of its `execMeta`: the uploaded script as `cmd`, `cwd`, `pid`, the times.
    let cmd = v["cmd"].as_str().unwrap_or_default();
    assert!(cmd.starts_with("/tmp/codex-script-") && cmd.ends_with(".sh"), "{v}");
    assert_eq!(v["cwd"], env.home.display().to_string(), "{v}");
    assert!(v["pid"].is_u64(), "{v}");
    assert!(v["started_at"].is_string() && v["finished_at"].is_string(), "{v}");

    // exec logs --tail-lines 2 (with its tail=2000 beside it): the last two lines as NDJSON
    // with `stream` and `line`; --stream stderr.
    let (code, out, err) = orig.run("exec", "logs", &["--id", &id, "--tail-lines", "2"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let texts: Vec<_> = lines.iter().filter(|v| v["line"].is_string()).collect();
    assert_eq!(texts.len(), 2, "{out}");
    assert_eq!((&texts[0]["line"], &texts[0]["stream"]), (&json!("two"), &json!("stdout")));
    assert_eq!(texts[1]["line"], "three");
    let (code, out, err) = orig.run("exec", "logs", &["--id", &id, "--stream", "stderr"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.contains("\"line\":\"oops\"")), "{out}");

    // exec cancel of a running job: `canceled`, and the job ends cancelled.
    let v = orig.json("exec", "start", &["--cmd", "sleep 30"]);
    let sleeper = v["exec_id"].as_str().unwrap().to_string();
    let v = orig.json("exec", "cancel", &["--id", &sleeper]);
    assert_eq!(v["canceled"], true, "{v}");
    assert_eq!(env.wait("local", &sleeper)["state"], "cancelled");
    let v = orig.json("exec", "result", &["--id", &sleeper]);
    assert_eq!((&v["status"], &v["state"]), (&json!("finished"), &json!("cancelled")), "{v}");
    // An unknown id: an error and exit 1, not an empty success.
    let (code, _, _) =
        orig.run("exec", "result", &["--id", "01900000-0000-7000-8000-000000000000"]);
    assert_eq!(code, 1);
}
