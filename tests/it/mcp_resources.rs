//! Jobs as MCP resources and job-end notifications, with rmcp's client on MCP 2025-11-25
//! (`resources/subscribe`) and raw 2026-07-28 lines (`subscriptions/listen`), on a machine behind
//! a real `sshd`. The Python SDK's `Client.listen()` is in tests/it/mcp_current.rs.

use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, ReadResourceRequestParams, ResourceContents,
    ResourceUpdatedNotificationParam, SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::NotificationContext;
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::mcp::RawSession;
use crate::support::{Sshd, TestEnv};

const DEADLINE: Duration = Duration::from_secs(30);

/// A 2025-11-25 client that passes each `notifications/resources/updated` URI on.
#[derive(Clone)]
struct Notes(mpsc::UnboundedSender<String>);

impl ClientHandler for Notes {
    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.0.send(params.uri);
    }
}

/// A job on `machine` that runs until file `go` exists, then prints `released`.
fn held_job_cmd(go: &std::path::Path) -> String {
    format!("while [ ! -e {} ]; do sleep 0.05; done; echo released", go.display())
}

/// Waits for a notification about `uri` (others are skipped); returns how long it took.
async fn notified(notes: &mut mpsc::UnboundedReceiver<String>, uri: &str) -> Duration {
    let started = Instant::now();
    loop {
        let got = tokio::time::timeout(DEADLINE, notes.recv()).await;
        match got {
            Ok(Some(u)) if u == uri => return started.elapsed(),
            Ok(Some(_)) => continue,
            other => panic!("no notification for {uri}: {other:?}"),
        }
    }
}

fn text(contents: &[ResourceContents]) -> Value {
    match &contents[0] {
        ResourceContents::TextResourceContents { text, mime_type, .. } => {
            assert_eq!(mime_type.as_deref(), Some("application/json"));
            serde_json::from_str(text).unwrap()
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
#[allow(deprecated)]
async fn a_2025_11_25_client_is_told_when_a_job_ends() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let remote = env.path("remote-data");
    env.set_config(&format!("machines:\n{}", sshd.machine_yaml("gpu", &remote, "")));
    let (tx, mut notes) = mpsc::unbounded_channel();
    let cmd = tokio::process::Command::from(env.remote(&["mcp"]));
    let transport = TokioChildProcess::new(cmd).unwrap();
    let client = tokio::time::timeout(DEADLINE, Notes(tx).serve(transport)).await.unwrap().unwrap();
    let caps = client.peer_info().unwrap().capabilities.resources.clone().unwrap();
    assert_eq!(caps.subscribe, Some(true));

    let listed = client.list_all_resources().await.unwrap();
    let uris: Vec<&str> = listed.iter().map(|r| r.uri.as_str()).collect();
    assert!(uris.contains(&"codex-remote://gpu/jobs"), "{uris:?}");
    let templates = client.list_all_resource_templates().await.unwrap();
    let templates: Vec<&str> = templates.iter().map(|t| t.uri_template.as_str()).collect();
    assert!(templates.contains(&"codex-remote://{machine}/jobs/{exec_id}"), "{templates:?}");

    let go = env.path("go");
    let start = |cmd: String| {
        CallToolRequestParams::new("exec_start")
            .with_arguments(json!({"machine": "gpu", "cmd": cmd}).as_object().unwrap().clone())
    };
    let started = client.call_tool(start(held_job_cmd(&go))).await.unwrap();
    let job = started.structured_content.unwrap();
    let exec_id = job["exec_id"].as_str().unwrap().to_string();
    let job_uri = format!("codex-remote://gpu/jobs/{exec_id}");
    let listing = "codex-remote://gpu/jobs".to_string();

    // A prefix in the URI works; the notification carries the URI as subscribed.
    let prefix_uri = format!("codex-remote://gpu/jobs/{}", &exec_id[..13]);
    let read = client.read_resource(ReadResourceRequestParams::new(&prefix_uri)).await.unwrap();
    assert_eq!(text(&read.contents)["status"], "running");
    client.subscribe(SubscribeRequestParams::new(&job_uri)).await.unwrap();
    client.subscribe(SubscribeRequestParams::new(&listing)).await.unwrap();
    client.subscribe(SubscribeRequestParams::new(&prefix_uri)).await.unwrap();
    client.unsubscribe(UnsubscribeRequestParams::new(&prefix_uri)).await.unwrap();

    // A job started while the listing is subscribed changes the listing.
    let other = client.call_tool(start("true".into())).await.unwrap();
    let other_id = other.structured_content.unwrap()["exec_id"].as_str().unwrap().to_string();
    notified(&mut notes, &listing).await;

    std::fs::write(&go, "").unwrap();
    let took = notified(&mut notes, &job_uri).await;
    eprintln!("job end → notification: {took:?}");
    let read = client.read_resource(ReadResourceRequestParams::new(&job_uri)).await.unwrap();
    let status = text(&read.contents);
    assert_eq!((&status["state"], &status["tail"]), (&json!("succeeded"), &json!("released\n")));
    let read = client.read_resource(ReadResourceRequestParams::new(&listing)).await.unwrap();
    let jobs = text(&read.contents)["jobs"].as_array().unwrap().clone();
    let ids: Vec<&str> = jobs.iter().map(|j| j["exec_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&exec_id.as_str()) && ids.contains(&other_id.as_str()), "{ids:?}");

    // A URI of no job, of no machine, or not ours: -32002 (resource not found).
    for uri in [
        "codex-remote://gpu/jobs/01a20e39-2841-766b-a16c-ac422b0e3096",
        "codex-remote://nowhere/jobs",
        "file:///etc/passwd",
    ] {
        let e = client.read_resource(ReadResourceRequestParams::new(uri)).await.unwrap_err();
        assert!(format!("{e:?}").contains("-32002"), "{uri}: {e:?}");
        assert!(client.subscribe(SubscribeRequestParams::new(uri)).await.is_err(), "{uri}");
    }
    client.cancel().await.unwrap();
}

/// 2026-07-28: `subscriptions/listen` over raw lines; a job cancelled through its task sends
/// the job's URI, with the listen request's id as `subscriptionId`.
#[test]
fn a_2026_07_28_listen_stream_is_told_when_a_job_ends() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let remote = env.path("remote-data");
    env.set_config(&format!("machines:\n{}", sshd.machine_yaml("gpu", &remote, "")));
    let mut s = RawSession::start(&env);
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw-listen", "version": "1"},
    });
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"_meta": meta,
        "name": "exec_start", "arguments": {"machine": "gpu", "cmd": "sleep 60"}}});
    s.send(call.to_string().as_bytes());
    let started = s.answer();
    let exec_id = started["result"]["structuredContent"]["exec_id"].as_str().unwrap().to_string();
    let uri = format!("codex-remote://gpu/jobs/{exec_id}");
    let listen = json!({"jsonrpc": "2.0", "id": "listen-1", "method": "subscriptions/listen",
        "params": {"_meta": meta, "notifications": {"resourceSubscriptions": [uri, "http://x"]}}});
    s.send(listen.to_string().as_bytes());
    let ack = s.answer();
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged", "{ack}");
    assert_eq!(ack["params"]["notifications"]["resourceSubscriptions"], json!([uri]), "{ack}");
    let cancel = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"_meta": meta,
        "name": "exec_cancel", "arguments": {"machine": "gpu", "exec_id": exec_id}}});
    s.send(cancel.to_string().as_bytes());
    let deadline = Instant::now() + DEADLINE;
    let mut answered = false;
    loop {
        assert!(Instant::now() < deadline, "no notification");
        let line = s.answer();
        if line["id"] == 2 {
            assert_eq!(line["result"]["structuredContent"]["state"], "cancelled", "{line}");
            answered = true;
        } else if line["method"] == "notifications/resources/updated" {
            assert_eq!(line["params"]["uri"], json!(uri), "{line}");
            let sub = &line["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"];
            assert_eq!(sub, "listen-1", "{line}");
            break;
        }
    }
    // The cancel's answer may come after the notification; either way it comes.
    while !answered {
        answered = s.answer()["id"] == 2;
    }
}
