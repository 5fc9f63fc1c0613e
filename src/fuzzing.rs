//! The checks behind the fuzz targets (`fuzz/fuzz_targets/*.rs`, run by `make fuzz` on nightly)
//! and behind the stable tests below that replay their checked-in corpus.
//!
//! Each entry takes arbitrary bytes and panics when an invariant breaks; whatever it returns
//! is fine. Not an API: hidden from the docs, Linux-only like the daemon.
//!
//! - [`request_line`]: the capped line reader of [`crate::wire`] against a model of it, and
//!   [`RequestLine::parse`] on every line (errors are `bad_request`/`unknown_type` and keep
//!   the `id`; what parses serializes and parses back the same).
//! - [`config`]: the bytes as `codex-remote`'s and `codexd`'s config files, YAML and JSON.
//! - [`http`]: the bytes as one HTTP request to `codexd serve`'s router over a fresh job store:
//!   never a panic or a hang, every non-2xx answer a JSON object with a `code`, nothing but
//!   `/health` answered 2xx on TCP without the token, and never a job that runs.
//! - [`sync_tar`], [`sync_frames`]: the bytes as an upload's tar and as a `sync_apply` frame
//!   stream, written into a fresh directory: nothing lands beside it, no special bit is set.
//!
//! Built with the `fuzzing` feature (fuzz/Cargo.toml turns it on) and for this crate's unit
//! tests; never part of the binaries.
#![doc(hidden)]

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request as HttpRequest, StatusCode, Uri};
use tower::ServiceExt;

use crate::daemon::http::{Door, HttpState, check_cwd, router};
use crate::daemon::{Daemon, DaemonConfig, Sink};
use crate::error::ErrorCode;
use crate::protocol::{ExecStartRequest, Request, RequestLine, Response, ResponseLine};
use crate::remote::config::RemoteConfig;
use crate::wire::{self, Line, MAX_REQUEST_LINE};

/// The fuzz targets, each with its corpus in `fuzz/corpus/<name>/`.
pub const TARGETS: &[&str] = &["request_line", "config", "http", "sync_tar", "sync_frames"];

/// Runs `data` through the check of the target called `target`.
pub fn check(target: &str, data: &[u8]) {
    match target {
        "request_line" => request_line(data),
        "config" => config(data),
        "http" => http(data),
        "sync_tar" => sync_tar(data),
        "sync_frames" => sync_frames(data),
        _ => panic!("no fuzz target {target:?}; known: {TARGETS:?}"),
    }
}

// ---- request lines ----

/// The capped reader, at several buffer sizes and caps, against [`model_lines`]; then each line
/// through [`check_request_line`], as `codexd rpc` would see it.
pub fn request_line(data: &[u8]) {
    for (buffer, cap) in [(8192, MAX_REQUEST_LINE), (1, MAX_REQUEST_LINE), (3, 16)] {
        let mut reader = BufReader::with_capacity(buffer, data);
        let mut lines = Vec::new();
        while let Some(line) = wire::read_line_capped(&mut reader, cap).expect("reading a slice") {
            lines.push(line);
        }
        assert_eq!(lines, model_lines(data, cap), "buffer {buffer}, cap {cap}");
    }
    for line in model_lines(data, MAX_REQUEST_LINE) {
        match line {
            Line::Text(text) if !text.iter().all(u8::is_ascii_whitespace) => {
                check_request_line(&text)
            }
            _ => {}
        }
    }
}

/// What `read_line_capped` must return for `data`: the pieces between newlines (a last piece
/// without one included), one CR stripped from their end, `TooLong` past `cap` (CR counted).
fn model_lines(data: &[u8], cap: usize) -> Vec<Line> {
    let mut pieces: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    let line = |p: &[u8]| match p {
        p if p.len() > cap => Line::TooLong(p.len()),
        [rest @ .., b'\r'] => Line::Text(rest.to_vec()),
        p => Line::Text(p.to_vec()),
    };
    pieces.into_iter().map(line).collect()
}

fn check_request_line(line: &[u8]) {
    match RequestLine::parse(line) {
        Ok(parsed) => {
            let text = serde_json::to_vec(&parsed).expect("a parsed request serializes");
            let again = RequestLine::parse(&text).unwrap_or_else(|e| {
                panic!("{} does not parse back: {:?}", String::from_utf8_lossy(&text), e.1)
            });
            assert_eq!(again.request, parsed.request, "the request changed through JSON");
            // Exactly, floats too (serde_json's `float_roundtrip`: `1e81` stays `1e81`).
            assert_eq!(again.id, parsed.id, "the id changed through JSON");
        }
        Err(rejected) => {
            let (id, err) = *rejected;
            let codes = [ErrorCode::BadRequest, ErrorCode::UnknownType, ErrorCode::InvalidId];
            assert!(codes.contains(&err.code), "refused with {err}");
            let value: Option<serde_json::Value> = serde_json::from_slice(line).ok();
            let sent_id = value.as_ref().and_then(|v| v.get("id")).cloned();
            assert_eq!(id, sent_id, "the error must echo the request's id ({err})");
        }
    }
}

// ---- config files ----

/// The bytes as `codex-remote`'s config and as `codexd`'s, once as `.yaml` and once as `.json`.
pub fn config(data: &[u8]) {
    thread_local! { static FILES: ConfigFuzz = ConfigFuzz::new(); }
    FILES.with(|f| f.check(data));
}

/// A private directory the fuzzed config files are written to (the loaders read files).
struct ConfigFuzz {
    dir: tempfile::TempDir,
}

impl ConfigFuzz {
    fn new() -> Self {
        ConfigFuzz { dir: scratch_dir("codex-fuzz-config") }
    }

    fn check(&self, data: &[u8]) {
        for name in ["config.yaml", "config.json"] {
            let path = self.dir.path().join(name);
            std::fs::write(&path, data).expect("writing the fuzzed config");
            match RemoteConfig::load(Some(&path)) {
                Ok(config) => self.check_remote(&config),
                Err(e) => assert_eq!(e.code, ErrorCode::ConfigError, "{e}"),
            }
            if let Err(e) = DaemonConfig::load(Some(&path), None) {
                assert_eq!(e.code, ErrorCode::ConfigError, "{e}");
            }
        }
    }

    /// What `load` promises: names unique and not blank, each machine found by its name, and
    /// the config reads back the same after writing it as JSON.
    fn check_remote(&self, config: &RemoteConfig) {
        let mut names = std::collections::HashSet::new();
        for m in &config.machines {
            assert!(!m.name.trim().is_empty(), "a blank machine name was accepted");
            assert!(names.insert(&m.name), "machine {:?} accepted twice", m.name);
            assert_eq!(config.machine(Some(&m.name)).expect("a listed machine").name, m.name);
        }
        let _ = config.machine(None);
        let path = self.dir.path().join("written.json");
        std::fs::write(&path, serde_json::to_vec(config).expect("a config serializes"))
            .expect("writing the config back");
        let again = RemoteConfig::load(Some(&path)).expect("a written config loads");
        assert_eq!(&again, config, "the config changed on its way through JSON");
    }
}

// ---- codexd serve's HTTP door ----

/// The token of the fuzzed TCP listener (`Authorization: Bearer fuzz-token`).
pub const FUZZ_TOKEN: &str = "fuzz-token";
/// A `Host` name the fuzzed TCP listener accepts besides the loopback ones.
pub const FUZZ_ALLOWED_HOST: &str = "gpu1";
/// Longer than any answer to a fuzzed request takes (no job ever runs).
const ANSWER_DEADLINE: Duration = Duration::from_secs(20);

/// The bytes as one HTTP request to serve's router, over a job store of its own:
///
/// ```text
/// [unix ]METHOD TARGET [VERSION]      "unix " picks the Unix-socket listener (no token, any Host)
/// Name: value                         header lines, up to an empty line
///
/// body                                the rest
/// ```
pub fn http(data: &[u8]) {
    thread_local! { static SERVER: HttpFuzz = HttpFuzz::new(); }
    SERVER.with(|s| s.check(data));
}

/// One fuzzed request, as hyper would hand it to the router.
struct FuzzedRequest {
    unix: bool,
    method: Method,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
}

impl FuzzedRequest {
    /// `None` for what hyper itself refuses (a bad method, target or header) before any router.
    fn parse(data: &[u8]) -> Option<Self> {
        let (head, body) =
            match find(data, b"\r\n\r\n").map(|i| (i, 4)).or(find(data, b"\n\n").map(|i| (i, 2))) {
                Some((i, sep)) => (&data[..i], &data[i + sep..]),
                None => (data, &data[data.len()..]),
            };
        let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let first = lines.next()?;
        let (unix, first) = match first.strip_prefix(b"unix ") {
            Some(rest) => (true, rest),
            None => (false, first),
        };
        let mut words = first.split(|&b| b == b' ');
        let method = Method::from_bytes(words.next()?).ok()?;
        let uri = Uri::try_from(words.next()?).ok()?;
        let mut headers = Vec::new();
        for line in lines {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = HeaderName::from_bytes(&line[..colon]).ok()?;
            let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
            headers.push((name, value));
        }
        Some(FuzzedRequest { unix, method, uri, headers, body: body.to_vec() })
    }

    fn header_contains(&self, name: &HeaderName, needle: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, v)| n == name && find(v.as_bytes(), needle.as_bytes()).is_some())
    }

    fn has_header(&self, name: &HeaderName) -> bool {
        self.headers.iter().any(|(n, _)| n == name)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A scratch directory with `codexd`'s config, the cwd roots and one job store per request.
struct HttpFuzz {
    dir: tempfile::TempDir,
    config: PathBuf,
    roots: Vec<PathBuf>,
    /// A file inside the allowed roots: as a cwd it passes serve's check and fails the start.
    not_a_dir: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl HttpFuzz {
    fn new() -> Self {
        let dir = scratch_dir("codex-fuzz-http");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("creating the cwd root");
        let not_a_dir = root.join("not-a-dir");
        std::fs::write(&not_a_dir, b"").expect("creating the non-directory cwd");
        let config = dir.path().join("codexd.yaml");
        let text = format!(
            "auth_token: {FUZZ_TOKEN}\nallowed_hosts: [{FUZZ_ALLOWED_HOST}]\n\
             allowed_cwd_roots: [{}]\nunix_socket: \"\"\n",
            root.display()
        );
        std::fs::write(&config, text).expect("writing codexd's config");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        HttpFuzz { dir, config, roots: vec![root], not_a_dir, runtime }
    }

    fn check(&self, data: &[u8]) {
        let Some(mut req) = FuzzedRequest::parse(data) else {
            return;
        };
        let store = tempfile::tempdir_in(self.dir.path()).expect("a job store dir");
        let config = DaemonConfig::load(Some(&self.config), store.path().to_str())
            .expect("the fuzz config loads");
        let daemon = Arc::new(Daemon::new(config).expect("opening the job store"));
        let state = Arc::new(HttpState {
            daemon: daemon.clone(),
            token: FUZZ_TOKEN.to_string(),
            nonces: Default::default(),
            door: if req.unix {
                Door::Unix
            } else {
                Door::Tcp { allowed_hosts: vec![FUZZ_ALLOWED_HOST.to_string()] }
            },
            stopping: Arc::new(AtomicBool::new(false)),
        });
        let body = std::mem::take(&mut req.body);
        req.body = self.defuse(&req, body);
        let mut http_req = HttpRequest::builder().method(req.method.clone()).uri(req.uri.clone());
        for (name, value) in &req.headers {
            http_req = http_req.header(name, value);
        }
        let http_req = http_req.body(Body::from(req.body.clone())).expect("parts were checked");
        let (status, ndjson, body) = self.runtime.block_on(async {
            let answer = tokio::time::timeout(ANSWER_DEADLINE, async {
                let response = router(state).oneshot(http_req).await.expect("infallible");
                let (parts, body) = response.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.expect("the body reads");
                let ndjson = parts
                    .headers
                    .get("content-type")
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/x-ndjson"));
                (parts.status, ndjson, body)
            });
            answer.await.unwrap_or_else(|_| panic!("no whole answer within {ANSWER_DEADLINE:?}"))
        });
        check_answer(&req, status, ndjson, &body);
        assert_no_job_runs(&daemon);
    }

    /// A request that would start a job gets a cwd where no job can start (a file in the
    /// allowed roots): the fuzzer must never run a command. One serve refuses keeps its cwd.
    fn defuse(&self, req: &FuzzedRequest, body: Vec<u8>) -> Vec<u8> {
        if req.method != Method::POST {
            return body;
        }
        let cwd = Some(self.not_a_dir.display().to_string());
        match req.uri.path() {
            "/v1/exec" => match serde_json::from_slice::<ExecStartRequest>(&body) {
                Ok(mut start) if check_cwd(&start, &self.roots).is_ok() => {
                    start.cwd = cwd;
                    serde_json::to_vec(&start).expect("a request serializes")
                }
                _ => body,
            },
            "/v1/rpc" => match RequestLine::parse(&body) {
                Ok(RequestLine { id, request: Request::ExecStart(mut start) })
                    if check_cwd(&start, &self.roots).is_ok() =>
                {
                    start.cwd = cwd;
                    let line = RequestLine { id, request: Request::ExecStart(start) };
                    serde_json::to_vec(&line).expect("a request serializes")
                }
                _ => body,
            },
            _ => body,
        }
    }
}

/// The promises of serve's answers (a HEAD answer has no body to check).
fn check_answer(req: &FuzzedRequest, status: StatusCode, ndjson: bool, body: &[u8]) {
    let shown = || format!("{status} {}", String::from_utf8_lossy(body));
    if !req.unix && status.is_success() {
        let token = req.header_contains(&axum::http::header::AUTHORIZATION, FUZZ_TOKEN);
        assert!(token || req.uri.path() == "/health", "answered without the token: {}", shown());
        let origin = req.has_header(&axum::http::header::ORIGIN);
        assert!(!origin, "answered a request with an Origin: {}", shown());
    }
    if req.method == Method::HEAD {
        return;
    }
    if !status.is_success() {
        let value: serde_json::Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("a non-2xx answer that is not JSON ({e}): {}", shown()));
        assert!(value["code"].is_string(), "a non-2xx answer without a code: {}", shown());
        assert_ne!(value["code"], "internal", "an internal error: {}", shown());
    } else if ndjson {
        let lines: Vec<ResponseLine> = (body.split(|&b| b == b'\n').filter(|l| !l.is_empty()))
            .map(|l| serde_json::from_slice(l).unwrap_or_else(|e| panic!("{e}: {}", shown())))
            .collect();
        let last = lines.last().unwrap_or_else(|| panic!("an empty NDJSON answer: {}", shown()));
        assert!(last.response.is_final(), "NDJSON without a final line: {}", shown());
        if let Response::Error(e) = &last.response {
            assert_ne!(e.code, ErrorCode::Internal, "an internal error: {}", shown());
        }
    } else {
        let parsed = serde_json::from_slice::<serde_json::Value>(body);
        assert!(parsed.is_ok(), "a 2xx answer that is not JSON: {}", shown());
    }
}

/// The job store holds no running job: [`HttpFuzz::defuse`] missed a way to start one.
fn assert_no_job_runs(daemon: &Daemon) {
    struct Discard;
    impl Sink for Discard {
        fn send(&mut self, _: Response) -> std::io::Result<()> {
            Ok(())
        }
        fn closed(&self) -> bool {
            false
        }
    }
    let list = RequestLine::parse(br#"{"type":"exec_list","state":"running"}"#).expect("valid");
    match daemon.handle(&list.request, &mut Discard) {
        Ok(Response::List(list)) => {
            assert!(list.jobs.is_empty(), "a fuzzed request started a job: {:?}", list.jobs)
        }
        other => panic!("listing the fuzzed store: {other:?}"),
    }
}

/// A private temporary directory, on a tmpfs when there is one (job creation fsyncs).
fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    tempfile::Builder::new().prefix(prefix).tempdir_in(base).expect("a scratch directory")
}

// ---- trees written from a tar or from frames ----

/// The bytes as a `/v1/sync/upload` body (gzip'ed or not), extracted into `dst` in a fresh
/// directory: whatever the answer, nothing lands beside `dst` and no special bit is set.
pub fn sync_tar(data: &[u8]) {
    let limits = crate::tree::tarball::Limits { max_file_size: 1 << 20, max_total: 8 << 20 };
    written_beneath(|dst| {
        let _ = crate::tree::tarball::extract(&mut &data[..], dst, limits);
    });
}

/// The bytes as the frame stream of a `sync_apply`, the same checks as [`sync_tar`].
pub fn sync_frames(data: &[u8]) {
    written_beneath(|dst| {
        let mut applier = crate::tree::apply::Applier::new(dst).expect("the destination");
        let _ = applier.apply_stream(&mut &data[..]);
    });
}

/// Runs `write` on `top/dst` in a fresh `top`; then only `dst` is in `top`, and nothing under
/// it has a setuid, setgid or sticky bit.
fn written_beneath(write: impl FnOnce(&Path)) {
    use std::os::unix::fs::PermissionsExt;
    let top = tempfile::tempdir().expect("a temp dir");
    let dst = top.path().join("dst");
    std::fs::create_dir(&dst).expect("the destination");
    write(&dst);
    let beside: Vec<_> = std::fs::read_dir(top.path())
        .expect("reading the temp dir")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(beside, ["dst"], "something landed beside the destination");
    let mut dirs = vec![dst];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("reading the tree") {
            let path = entry.expect("an entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("an entry's metadata");
            let mode = meta.permissions().mode();
            assert_eq!(mode & 0o7000, 0, "{} has mode {mode:o}", path.display());
            if meta.is_dir() {
                dirs.push(path);
            }
        }
    }
}

/// The checked-in fuzz corpus (`fuzz/corpus/<target>/`) replayed through the targets' checks:
/// CI keeps what the fuzzer learned without nightly or libFuzzer (`make fuzz` runs the fuzzer).
#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::path::{Path, PathBuf};

    /// The corpus files of `target`, sorted.
    fn corpus(target: &str) -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} is empty", dir.display());
        files
    }

    /// Runs every corpus file of `target` through its check, naming the file that fails.
    fn replay(target: &str) {
        for file in corpus(target) {
            let data = std::fs::read(&file).unwrap();
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| super::check(target, &data))) {
                let why = (panic.downcast_ref::<String>().map(String::as_str))
                    .or(panic.downcast_ref::<&str>().copied())
                    .unwrap_or("?");
                panic!("{} fails the {target} check: {why}", file.display());
            }
        }
    }

    #[test]
    fn every_target_has_a_corpus() {
        for target in super::TARGETS {
            assert!(!corpus(target).is_empty());
        }
    }

    #[test]
    fn request_line_corpus() {
        replay("request_line");
    }

    #[test]
    fn config_corpus() {
        replay("config");
    }

    #[test]
    fn http_corpus() {
        replay("http");
    }

    #[test]
    fn sync_tar_corpus() {
        replay("sync_tar");
    }

    #[test]
    fn sync_frames_corpus() {
        replay("sync_frames");
    }
}
