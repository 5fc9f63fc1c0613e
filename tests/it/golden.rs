//! Golden wire texts: each message kind parsed and re-serialized, so a renamed field fails CI;
//! and a status file from an earlier version that must stay readable.

use codex_runner::protocol::{RequestLine, ResponseLine};
use serde_json::{Value, json};

use crate::support::TestEnv;

const STATUS: &str = r#""exec_id":"01a20e39-2841-766b-a16c-ac422b0e3096","status":"finished","state":"failed","cmd":"exit 3","cwd":"/home/u","pid":10,"started_at":"2026-11-24T15:42:36.613Z","finished_at":"2026-11-24T15:42:36.617Z","exit_code":3,"signal":null,"duration_ms":4,"error":null,"created_at":"2026-11-24T15:42:36.609Z""#;

/// A manifest entry (`sync_diff` lines and answers).
const ENTRY: &str =
    r#"{"path":"a.py","kind":"file","size":5,"mode":"0644","mtime_ns":1,"hash":"af1349b9"}"#;

/// The frames of a bulk transfer.
const FRAMES: &[&str] = &[
    r#"{"frame":"file","path":"a.py","size":5,"mode":"0644","mtime_ns":1}"#,
    r#"{"frame":"symlink","path":"l","target":"a.py"}"#,
    r#"{"frame":"dir","path":"d","mode":"0755"}"#,
    r#"{"frame":"meta","path":"a.py","mode":"0755","mtime_ns":2}"#,
    r#"{"frame":"delete","path":"old.txt"}"#,
    r#"{"frame":"end"}"#,
];

#[test]
fn every_frame_and_the_manifest_entry_round_trip() {
    use codex_runner::protocol::{Entry, Frame};
    for text in FRAMES {
        let frame: Frame = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        same_json(&serde_json::to_string(&frame).unwrap(), text);
    }
    let entry: Entry = serde_json::from_str(ENTRY).unwrap();
    same_json(&serde_json::to_string(&entry).unwrap(), ENTRY);
}

fn requests() -> Vec<String> {
    vec![
        r#"{"id":1,"type":"hello","protocol":1,"client_version":"0.1.0"}"#.into(),
        r#"{"type":"hello","gpus":true}"#.into(),
        r#"{"id":"a","type":"exec_start","cmd":"nvidia-smi","shell":"bash -lc","cwd":"~/w","env":{"A":"1"},"name":"n","labels":{"k":"v"},"idempotency_key":"k1"}"#.into(),
        r#"{"type":"exec_start","cmd":["python","train.py"]}"#.into(),
        r#"{"type":"exec_start","script":"echo hi\n"}"#.into(),
        r#"{"type":"exec_start","cmd":"make test","cwd":"sub","project":"p","ref":"v1.2"}"#.into(),
        r#"{"type":"exec_status","exec_id":"01a20e39-2841-766b-a16c-ac422b0e3096"}"#.into(),
        r#"{"type":"exec_logs","exec_id":"01a20e39-2841-766b-a16c-ac422b0e3096","stream":"both","tail":2000,"since":{"stdout":10,"stderr":0},"follow":true,"raw":true,"max_bytes":100}"#.into(),
        r#"{"type":"exec_logs","exec_id":"01a20e39-2841-766b-a16c-ac422b0e3096","stream":"stdout","tail_lines":5}"#.into(),
        r#"{"type":"exec_logs","exec_id":"01a20e39-2841-766b-a16c-ac422b0e3096","stream":"stderr","tail_lines":20,"view":"terminal"}"#.into(),
        r#"{"type":"exec_cancel","exec_id":"01a20e39-2841-766b-a16c-ac422b0e3096","grace_ms":5000}"#.into(),
        r#"{"type":"exec_wait","exec_id":"01a20e39-2841-766b-a16c-ac422b0e3096","timeout_ms":30000}"#.into(),
        r#"{"type":"exec_list","state":"running","limit":50}"#.into(),
        r#"{"type":"exec_rm","exec_id":"01a20e39-2841-766b-a16c-ac422b0e3096"}"#.into(),
        r#"{"type":"exec_prune","keep":200}"#.into(),
        r#"{"type":"exec_list","status":"finished","limit":5}"#.into(),
        r#"{"type":"exec_resolve","exec_id":"last"}"#.into(),
        r#"{"type":"doctor","timeout_ms":5000}"#.into(),
        r#"{"type":"doctor","timeout_ms":5000,"checks":["shared_store"]}"#.into(),
        r#"{"type":"exec_start","cmd":"python train.py","resources":{"gpus":2,"partition":"gpu","account":"lab","time":"2h","mem":"32G","cpus":8,"slurm_args":["--qos=high"]}}"#.into(),
        r#"{"type":"exec_start","cmd":"squeue","resources":{"local":true}}"#.into(),
        r#"{"type":"file_write","path":"~/w/a.py","size":5,"mode":"0644","mkdir":true,"follow_symlinks":true}"#.into(),
        r#"{"type":"file_read","path":"~/w/a.py","offset":0,"limit":65536}"#.into(),
        r#"{"type":"file_stat","path":"~/w"}"#.into(),
        r#"{"type":"file_ls","path":"~/w"}"#.into(),
        r#"{"type":"sync_diff","root":"~/w","direction":"push","exclude":["*.log"],"include_git":true,"no_gitignore":true,"delete":true,"entries":1}"#.into(),
        r#"{"type":"sync_apply","root":"~/w"}"#.into(),
        r#"{"type":"sync_send","root":"~/w","paths":1}"#.into(),
        r#"{"type":"gpus"}"#.into(),
        r#"{"type":"exec_start","cmd":"python train.py","resources":{"gpus":2,"gpu_ids":[0,3]}}"#.into(),
        r#"{"type":"exec_resolve","exec_id":"019a2b3c"}"#.into(),
        r#"{"type":"doctor","checks":["shared_store","gpus"]}"#.into(),
        r#"{"type":"exec_run","cmd":"echo hi","cwd":"proj","idempotency_key":"k1","raw":true}"#.into(),
        r#"{"type":"exec_status","exec_id":"last"}"#.into(),
        r#"{"type":"exec_logs","exec_id":"01a20e39","stream":"stdout","follow":true}"#.into(),
    ]
}

fn responses() -> Vec<String> {
    vec![
        r#"{"id":1,"type":"hello","protocol":1,"version":"0.1.0","capabilities":["exec"],"user":"u","host":"h","data_dir":"/d","scheduler":"slurm"}"#.into(),
        format!(r#"{{"id":"a","type":"status",{STATUS}}}"#),
        format!(r#"{{"type":"status",{STATUS},"timed_out":true,"replayed":true,"message":"m"}}"#),
        format!(r#"{{"type":"list","jobs":[{{{STATUS}}}]}}"#),
        format!(
            r#"{{"type":"status",{STATUS},"project":"p","ref":"v1.2","commit":"{c}","worktree":"/d/worktrees/x"}}"#,
            c = "0123456789abcdef0123456789abcdef01234567"
        ),
        r#"{"type":"log","stream":"stdout","offset":0,"line":"hi"}"#.into(),
        r#"{"type":"log","stream":"stderr","offset":3,"line":"par","partial":true}"#.into(),
        r#"{"type":"log","stream":"stdout","offset":9,"line":"epoch 1","repeated":3}"#.into(),
        format!(
            r#"{{"type":"status",{STATUS},"last_stdout":"step 1","last_stderr":"ValueError: boom","traceback":"Traceback (most recent call last):\nValueError: boom"}}"#
        ),
        r#"{"type":"chunk","stream":"stdout","offset":0,"data_b64":"aGkK"}"#.into(),
        format!(r#"{{"type":"logs_end","exec_id":"01a20e39-2841-766b-a16c-ac422b0e3096","next_offset":{{"stdout":3,"stderr":0}},"size":{{"stdout":3,"stderr":0}},"more":true,"status":"finished","state":"failed","exit_code":3,"job":{{{STATUS}}}}}"#),
        r#"{"type":"removed","exec_id":"01a20e39-2841-766b-a16c-ac422b0e3096"}"#.into(),
        r#"{"type":"pruned","removed":["01a20e39-2841-766b-a16c-ac422b0e3096"],"kept":3}"#.into(),
        r#"{"type":"resolved","exec_id":"01a20e39-2841-766b-a16c-ac422b0e3096"}"#.into(),
        r#"{"type":"doctor","ok":false,"checks":[{"name":"git","ok":false,"required":false,"detail":"not found","hint":"h"}]}"#.into(),
        r#"{"type":"pruned","removed":[],"kept":3,"swept_temp":1}"#.into(),
        r#"{"type":"error","code":"job_not_found","message":"no job x","hint":"h"}"#.into(),
        r#"{"type":"file_written","path":"/h/w/a.py","size":5,"mode":"0644"}"#.into(),
        r#"{"type":"file_data","path":"/h/w/a.py","offset":0,"size":5,"data_b64":"aGVsbG8=","next_offset":5,"eof":true}"#.into(),
        r#"{"type":"file_stat","path":"/h/w/l","exists":true,"kind":"symlink","size":4,"mode":"0777","mtime":"2026-11-24T15:42:36Z","target":"a.py"}"#.into(),
        r#"{"type":"file_list","path":"/h/w","entries":[{"path":"a.py","exists":true,"kind":"file"}]}"#.into(),
        format!(r#"{{"type":"sync_diff","send":[{ENTRY}],"check":[],"meta":[],"delete":["old.txt"],"unchanged":3,"skipped":[{{"path":"s","reason":"a socket"}}]}}"#),
        r#"{"type":"sync_applied","files":1,"bytes":5,"links":0,"dirs":0,"meta":0,"deleted":1,"changed":["log.txt"]}"#.into(),
        r#"{"type":"sync_sent","files":1,"bytes":5,"links":0,"dirs":0,"meta":0,"deleted":0}"#.into(),
        r#"{"type":"gpus","gpus":[{"index":0,"uuid":"GPU-5d1e","name":"NVIDIA A100","memory_used_mib":3,"memory_total_mib":40960,"utilization_percent":0,"processes":0,"free":false,"jobs":["01a20e39-2841-766b-a16c-ac422b0e3096"]}],"free_memory_mib":1024,"free_util_percent":10,"queued":1}"#.into(),
        r#"{"type":"gpus","gpus":[],"free_memory_mib":1024,"free_util_percent":10,"queued":0,"error":"no nvidia-smi on codexd's PATH (no NVIDIA driver)"}"#.into(),
        format!(r#"{{"type":"status",{STATUS},"scheduler":"local","resources":{{"gpus":1}},"gpu_ids":[1]}}"#),
        QUEUED_ON_SLURM.into(),
        r#"{"id":1,"type":"hello","protocol":1,"version":"0.1.0","capabilities":["exec"],"user":"u","host":"h","data_dir":"/d","scheduler":"local"}"#.into(),
        format!(
            r#"{{"type":"hello","protocol":1,"version":"0.1.0","capabilities":["gpus"],"user":"u","host":"h","data_dir":"/d","scheduler":"local","gpus":{{"gpus":[{GPU}],"free_memory_mib":1024,"free_util_percent":10,"queued":1}}}}"#
        ),
        format!(
            r#"{{"type":"status",{STATUS},"last_stdout":"step 1","last_stderr":"ValueError: boom","traceback":"Traceback (most recent call last):\n..."}}"#
        ),
        r#"{"type":"doctor","ok":true,"checks":[{"name":"git","ok":true,"required":false,"detail":"..."}]}"#.into(),
        format!(r#"{{"type":"gpus","gpus":[{GPU}],"free_memory_mib":1024,"free_util_percent":10,"queued":0}}"#),
        r#"{"type":"heartbeat"}"#.into(),
        format!(r#"{{"id":"a","type":"started",{STATUS}}}"#),
    ]
}

/// A GPU of a `gpus` answer.
const GPU: &str = r#"{"index":0,"uuid":"GPU-5d1e","name":"NVIDIA A100","memory_used_mib":3,"memory_total_mib":40960,"utilization_percent":0,"processes":0,"free":false,"jobs":["01a20e39-2841-766b-a16c-ac422b0e3096"]}"#;

/// A job waiting in Slurm's queue, as `exec result` prints it: not finished for the original
/// clients (`status: running`), `queued` with Slurm's reason.
const QUEUED_ON_SLURM: &str = r#"{"type":"status","exec_id":"01a20e39-2841-766b-a16c-ac422b0e3096","status":"running","state":"queued","cmd":"python train.py","cwd":"/home/u","pid":null,"started_at":"2026-11-24T15:42:36.613Z","finished_at":null,"exit_code":null,"signal":null,"duration_ms":null,"error":null,"created_at":"2026-11-24T15:42:36.609Z","scheduler":"slurm","slurm_job_id":"4242","resources":{"gpus":2,"partition":"gpu","time":"2:00:00"},"queue_reason":"Resources"}"#;

fn same_json(a: &str, b: &str) {
    let a: Value = serde_json::from_str(a).unwrap();
    let b: Value = serde_json::from_str(b).unwrap();
    assert_eq!(a, b);
}

#[test]
fn every_request_kind_round_trips() {
    for text in requests() {
        let parsed =
            RequestLine::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        same_json(&serde_json::to_string(&parsed).unwrap(), &text);
    }
}

#[test]
fn every_response_kind_round_trips() {
    for text in responses() {
        let parsed: ResponseLine =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        same_json(&serde_json::to_string(&parsed).unwrap(), &text);
    }
}

/// `Response::kind` names each answer by its serde tag, and every tag serde knows has a golden
/// text (serde lists its tags in the error for an unknown one).
#[test]
fn every_answer_tag_has_a_golden_text_and_kind_names_it() {
    let mut kinds = std::collections::BTreeSet::new();
    for text in responses() {
        let parsed: ResponseLine = serde_json::from_str(&text).unwrap();
        let tag: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.response.kind(), tag["type"], "{text}");
        kinds.insert(parsed.response.kind().to_owned());
    }
    let err = serde_json::from_str::<ResponseLine>(r#"{"type":"?"}"#).unwrap_err().to_string();
    let tags = err.split("expected one of ").nth(1).expect("serde lists the tags");
    let tags: std::collections::BTreeSet<String> =
        tags.split('`').skip(1).step_by(2).map(str::to_owned).collect();
    assert_eq!(kinds, tags);
}

/// The examples in the protocol's module docs (src/protocol/mod.rs) are golden texts: each one,
/// with its placeholders filled in, is one of the texts above.
#[test]
fn every_documented_example_is_a_golden_text() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/protocol/mod.rs"))
        .unwrap();
    let goldens: Vec<Value> = requests()
        .iter()
        .chain(responses().iter())
        .map(|text| serde_json::from_str(text).unwrap())
        .collect();
    let id = r#""01a20e39-2841-766b-a16c-ac422b0e3096""#;
    let examples = documented_examples(&doc);
    assert!(examples.len() > 40, "only {} examples found", examples.len());
    for example in examples {
        let filled = example
            .replace("STATUS", STATUS)
            .replace("[ENTRY]", &format!("[{ENTRY}]"))
            .replace("[GPU]", &format!("[{GPU}]"))
            .replace(":ID", &format!(":{id}"))
            .replace("[ID]", &format!("[{id}]"));
        let value: Value =
            serde_json::from_str(&filled).unwrap_or_else(|e| panic!("{example}: {e}"));
        assert!(goldens.contains(&value), "the documented {example} is not a golden text");
    }
}

/// The JSON objects of the ```text blocks of a module doc: an object starts a line and may
/// go on over indented lines; what follows it on its last line is commentary.
fn documented_examples(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut in_block, mut current, mut depth) = (false, String::new(), 0i32);
    for line in doc.lines().filter_map(|l| l.strip_prefix("//!")) {
        let line = line.trim();
        if line.starts_with("```") {
            in_block = line == "```text";
            continue;
        }
        if !in_block || (depth == 0 && !line.starts_with('{')) {
            continue;
        }
        let mut in_string = false;
        let mut escaped = false;
        for (i, c) in line.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_string => escaped = true,
                '"' => in_string = !in_string,
                '{' if !in_string => depth += 1,
                '}' if !in_string => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                current.push_str(&line[..=i]);
                out.push(std::mem::take(&mut current));
                break;
            }
        }
        if depth > 0 {
            current.push_str(line);
        }
    }
    out
}

/// The codes listed once: the `match` is exhaustive, so a new `ErrorCode` does not compile
/// until it is listed here (and so checked against the README). `Other` stands for a newer
/// peer's code and is never sent.
macro_rules! every_code {
    ($($code:ident),* $(,)?) => {{
        use codex_runner::error::ErrorCode;
        fn _listed(code: ErrorCode) {
            match code {
                $(ErrorCode::$code)|* | ErrorCode::Other => {}
            }
        }
        [$(ErrorCode::$code),*]
    }};
}

#[test]
fn error_codes_are_the_documented_ones() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let codes = every_code![
        BadRequest,
        RequestTooLarge,
        UnknownType,
        InvalidId,
        InvalidArgument,
        JobNotFound,
        JobRunning,
        IdempotencyConflict,
        StartFailed,
        Internal,
        UnknownMachine,
        ConfigError,
        Usage,
        SshFailed,
        ConnectFailed,
        CodexdNotFound,
        ProtocolError,
        ProtocolMismatch,
        Timeout,
        Unauthorized,
        Forbidden,
        ForeignDaemon,
        ChecksumMismatch,
        FileNotFound,
        FileTooLarge,
        NoSpace,
        SchedulerUnavailable,
    ];
    for code in codes {
        assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        assert!(readme.contains(&format!("`{}`", code.as_str())), "{code} is not in the README");
    }
}

#[test]
fn a_status_file_from_version_0_1_is_still_read() {
    let env = TestEnv::new();
    let id = "01a20e39-2841-766b-a16c-ac422b0e3096";
    let dir = env.data_dir().join("jobs").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/status-v1.json");
    std::fs::copy(fixture, dir.join("status.json")).unwrap();
    std::fs::write(dir.join("stdout.log"), "hello\n").unwrap();
    std::fs::write(dir.join("stderr.log"), "").unwrap();
    let v = env.ok(&["exec", "result", "--id", id]);
    assert_eq!((v["state"].as_str(), v["exit_code"].as_i64()), (Some("failed"), Some(3)));
    let (_, lines) = env.run(&["exec", "logs", "--id", id]);
    assert_eq!(lines[0]["line"], "hello");
    assert_eq!(env.ok(&["exec", "list"])["jobs"][0]["exec_id"], id);
}

#[test]
fn since_offsets_map_to_the_streams_read() {
    use codex_runner::protocol::{StreamOffsets, StreamSel};
    let offsets = |stdout, stderr| StreamOffsets { stdout, stderr };
    assert_eq!(StreamOffsets::from_since(StreamSel::Both, None, None), None);
    assert_eq!(
        StreamOffsets::from_since(StreamSel::Stdout, Some(5), None),
        Some(offsets(Some(5), None))
    );
    assert_eq!(
        StreamOffsets::from_since(StreamSel::Stderr, Some(5), None),
        Some(offsets(None, Some(5)))
    );
    assert_eq!(
        StreamOffsets::from_since(StreamSel::Both, Some(5), Some(7)),
        Some(offsets(Some(5), Some(7)))
    );
    assert_eq!(offsets(None, Some(7)).or_start(StreamSel::Both), offsets(Some(0), Some(7)));
    assert_eq!(StreamOffsets::default().or_start(StreamSel::Stderr), offsets(None, Some(0)));
}
