//! The original tool's tree routes through a real `codexd serve`: `POST /v1/sync/upload`
//! (a tar.gz streamed into a directory, as the Go client sends it) and `POST /v1/sync/download`
//! (a directory back as a tar.gz), and every entry or path that must be refused.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::serve::{Serve, served, token};
use crate::support::TestEnv;
use crate::sync::listing;

const TAR_GZ: &str = "application/x-tar+gzip";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// As the Go client: POST with `dst` (and `mkdir_p`) in the query, the Bearer token, and the
/// tar.gz streamed as a chunked body.
pub fn upload(addr: &str, token: &str, query: &str, tgz: &[u8]) -> (u16, Value) {
    let mut body = tgz;
    let mut resp = agent()
        .post(format!("http://{addr}/v1/sync/upload?{query}"))
        .header("Authorization", format!("Bearer {token}"))
        .content_type(TAR_GZ)
        .send(ureq::SendBody::from_reader(&mut body))
        .unwrap();
    (resp.status().as_u16(), resp.body_mut().read_json().unwrap())
}

/// `POST /v1/sync/download`: the status, the content type and the raw body.
fn download(addr: &str, token: &str, req: &Value) -> (u16, String, Vec<u8>) {
    let mut resp = agent()
        .post(format!("http://{addr}/v1/sync/download"))
        .header("Authorization", format!("Bearer {token}"))
        .send_json(req)
        .unwrap();
    let kind = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    let body = resp.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap();
    (resp.status().as_u16(), kind.unwrap_or_default(), body)
}

fn json_error(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// `tar czf - -C dir .`, as a shell client makes one (names start with `./`).
fn system_tgz(dir: &Path) -> Vec<u8> {
    let out = Command::new("tar").arg("czf").arg("-").arg("-C").arg(dir).arg(".").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn system_untar(tgz: &[u8], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.with_extension("tgz");
    std::fs::write(&file, tgz).unwrap();
    let out = Command::new("tar").arg("xzf").arg(&file).arg("-C").arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A tar entry as written: its name (even with `..`), its kind, its data or link target.
pub type RawEntry<'a> = (&'a str, tar::EntryType, &'a [u8]);

/// A tar.gz of raw entries, names written as given.
pub fn raw_tgz(entries: &[RawEntry]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, kind, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        if *kind == tar::EntryType::Symlink {
            header.set_link_name(std::str::from_utf8(data).unwrap()).unwrap();
            header.set_size(0);
        } else {
            header.set_size(data.len() as u64);
        }
        header.set_cksum();
        let data: &[u8] = if *kind == tar::EntryType::Regular { data } else { &[] };
        tar.append(&header, data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn sync_upload_and_download_round_trip_a_tree_as_the_go_client() {
    let (env, serve, token) = served();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::create_dir_all(src.join("data/deep")).unwrap();
    std::fs::create_dir_all(src.join("empty")).unwrap();
    std::fs::write(src.join("a.txt"), "hello\n").unwrap();
    std::fs::write(src.join("bin/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(src.join("bin/run.sh"), PermissionsExt::from_mode(0o755)).unwrap();
    let blob = bytes(300_000);
    std::fs::write(src.join("data/deep/blob.bin"), &blob).unwrap();
    symlink("bin/run.sh", src.join("run")).unwrap();
    symlink("/etc", src.join("etc-link")).unwrap();

    let (status, v) = upload(&serve.addr, &token, "dst=up/tree&mkdir_p=true", &system_tgz(&src));
    assert_eq!(status, 200, "{v}");
    let dst = env.home.join("up/tree");
    assert_eq!(v["ok"], true);
    assert_eq!(v["dst"], dst.display().to_string());
    assert_eq!(v["files_written"], 3, "{v}");
    assert_eq!(v["bytes_written"], 6 + 18 + blob.len() as u64, "{v}");
    assert_eq!(v["links"], 2, "{v}");
    assert_eq!(listing(&dst), listing(&src));
    assert_eq!(std::fs::read(dst.join("data/deep/blob.bin")).unwrap(), blob);
    let mode = std::fs::metadata(dst.join("bin/run.sh")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(std::fs::read_link(dst.join("etc-link")).unwrap(), Path::new("/etc"));
    // Again over the same tree: each file replaced, no temp file left.
    assert_eq!(upload(&serve.addr, &token, "dst=up/tree", &system_tgz(&src)).0, 200);
    assert_eq!(listing(&dst), listing(&src));

    // Without mkdir_p a missing dst is a JSON error.
    let (status, v) = upload(&serve.addr, &token, "dst=up/missing", &system_tgz(&src));
    assert_eq!((status, v["code"].as_str()), (404, Some("file_not_found")), "{v}");
    assert!(v["hint"].as_str().unwrap().contains("mkdir_p"), "{v}");
    assert!(!env.home.join("up/missing").exists());

    // The tree comes back whole, symlinks as links (never followed into /etc).
    let (status, kind, tgz) = download(&serve.addr, &token, &json!({"path": "up/tree"}));
    assert_eq!((status, kind.as_str()), (200, TAR_GZ), "{}", String::from_utf8_lossy(&tgz));
    let back = env.path("back");
    system_untar(&tgz, &back);
    assert_eq!(listing(&back), listing(&src));
    assert_eq!(std::fs::read(back.join("data/deep/blob.bin")).unwrap(), blob);

    // Excludes: a name at any depth (a directory is pruned whole) or a glob on base names.
    let req = json!({"path": dst.display().to_string(), "excludes": ["deep", "*.sh"]});
    let (status, _, tgz) = download(&serve.addr, &token, &req);
    assert_eq!(status, 200);
    let some = env.path("some");
    system_untar(&tgz, &some);
    let expected: Vec<_> = listing(&src)
        .into_iter()
        .filter(|(path, _, _)| !path.starts_with("data/deep") && !path.ends_with(".sh"))
        .collect();
    assert_eq!(listing(&some), expected);
}

#[test]
fn sync_upload_refuses_entries_that_climb_out_and_writes_nothing_outside() {
    let (env, serve, token) = served();
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let abs = outside.join("abs.txt").display().to_string();
    let escape = outside.display().to_string();
    let regular = tar::EntryType::Regular;
    let cases: Vec<(Vec<RawEntry>, &str)> = vec![
        (vec![("ok.txt", regular, b"fine"), ("../x.txt", regular, b"no")], ".."),
        (vec![("sub/../../x.txt", regular, b"no")], ".."),
        (vec![(abs.as_str(), regular, b"no")], "absolute"),
        (
            vec![
                ("esc", tar::EntryType::Symlink, escape.as_bytes()),
                ("esc/through.txt", regular, b"no"),
            ],
            "symlink",
        ),
        (vec![("fifo", tar::EntryType::Fifo, b"")], "fifo"),
        (vec![("dev", tar::EntryType::Char, b"")], "device"),
        (vec![("hard", tar::EntryType::Link, b"")], "hard link"),
    ];
    for (entries, why) in &cases {
        let (status, v) = upload(&serve.addr, &token, "dst=in&mkdir_p=true", &raw_tgz(entries));
        assert_eq!((status, v["code"].as_str()), (400, Some("invalid_argument")), "{why}: {v}");
        assert!(v["message"].as_str().unwrap().contains(why), "{why}: {v}");
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "something landed outside");
    assert!(!env.dir.path().join("x.txt").exists() && !env.home.join("x.txt").exists());
    assert_eq!(std::fs::read_to_string(env.home.join("in/ok.txt")).unwrap(), "fine");
    // The link itself is made (it is only a link), never written through.
    assert!(std::fs::symlink_metadata(env.home.join("in/esc")).unwrap().is_symlink());

    // Not a tar at all; a dst outside the home; over max_file_size.
    let (status, v) = upload(&serve.addr, &token, "dst=in", b"not a tar, not gzip either");
    assert_eq!((status, v["code"].as_str()), (400, Some("bad_request")), "{v}");
    let query = format!("dst={}&mkdir_p=true", outside.join("new").display());
    let (status, v) = upload(&serve.addr, &token, &query, &raw_tgz(&[("a", regular, b"a")]));
    assert_eq!((status, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    assert!(!outside.join("new").exists());

    // A wrong token is refused on both routes before anything is read.
    let (status, v) = upload(&serve.addr, "wrong", "dst=in", &raw_tgz(&[("w", regular, b"w")]));
    assert_eq!((status, v["code"].as_str()), (401, Some("unauthorized")), "{v}");
    assert!(!env.home.join("in/w").exists());
    let (status, _, body) = download(&serve.addr, "wrong", &json!({"path": "in"}));
    assert_eq!((status, json_error(&body)["code"].as_str()), (401, Some("unauthorized")));
}

#[test]
fn sync_download_refusals_are_json_errors() {
    let env = TestEnv::new();
    let config = env.path("codexd.yaml");
    let allowed = env.path("allowed");
    std::fs::create_dir_all(allowed.join("d")).unwrap();
    std::fs::write(&config, format!("allowed_cwd_roots: [\"{}\"]\n", allowed.display())).unwrap();
    let serve = Serve::start_with(&env, &["--config", config.to_str().unwrap()]);
    let token = token(&env);
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    symlink(&outside, env.home.join("link-out")).unwrap();
    std::fs::write(env.home.join("file.txt"), "x").unwrap();

    let cases = [
        (json!({"path": outside.display().to_string()}), 403, "forbidden"),
        (json!({"path": "link-out"}), 403, "forbidden"),
        (json!({"path": "/etc"}), 403, "forbidden"),
        (json!({"path": "no/such/dir"}), 404, "file_not_found"),
        (json!({"path": "file.txt"}), 400, "invalid_argument"),
        (json!({"path": ""}), 400, "invalid_argument"),
        (json!({"path": "~", "excludes": ["a[b"]}), 400, "invalid_argument"),
        (json!({"path": 7}), 400, "bad_request"),
    ];
    for (req, status, code) in cases {
        let (got, kind, body) = download(&serve.addr, &token, &req);
        assert!(kind.starts_with("application/json"), "{req}: {kind}");
        assert_eq!((got, json_error(&body)["code"].as_str()), (status, Some(code)), "{req}");
    }
    // An allowed root outside the home is served.
    let (status, kind, _) =
        download(&serve.addr, &token, &json!({"path": allowed.display().to_string()}));
    assert_eq!((status, kind.as_str()), (200, TAR_GZ));
}
