//! Fleet commands over the loopback sshd: fan-out (`--machine a,b`, globs, groups, `--all`), the
//! exit code of a fan-out, and no orphans when `codex-remote` is killed mid-follow. The same
//! checks over a real delayed link are in `fleet_lab`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{CODEXD, Sshd, TestEnv, alive, wait_until};

/// A process of this machine: pid, parent, the program it runs, its command line.
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub exe: String,
    pub cmdline: String,
}

pub fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        if !alive(pid) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        out.push(Proc { pid, ppid, exe, cmdline });
    }
    out
}

/// The `codexd rpc` processes serving the store at `data_dir`.
pub fn rpcs_of(data_dir: &Path) -> Vec<i32> {
    let codexd = std::fs::canonicalize(CODEXD).unwrap().display().to_string();
    let marker = data_dir.display().to_string();
    processes()
        .into_iter()
        .filter(|p| p.exe == codexd && p.cmdline.contains(" rpc") && p.cmdline.contains(&marker))
        .map(|p| p.pid)
        .collect()
}

/// Starts a long job on `machine`, follows it with `codex-remote exec logs --follow`, SIGKILLs
/// that `codex-remote` mid-follow and asserts that within 2 s neither its ssh child nor the
/// remote `codexd rpc` of the follow is left.
pub fn no_orphan_after_a_killed_follow(env: &TestEnv, machine: &str, data_dir: &Path) {
    let id = env.start(machine, "echo started; sleep 60");
    let mut follow = env
        .remote(&["exec", "logs", "--follow", "--machine", machine, &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = follow.id() as i32;
    // Mid-follow: the follow's ssh child runs and so does the remote rpc answering it.
    let mut ssh_children = Vec::new();
    let following = wait_until(Duration::from_secs(15), || {
        ssh_children = processes().into_iter().filter(|p| p.ppid == pid).map(|p| p.pid).collect();
        !ssh_children.is_empty() && !rpcs_of(data_dir).is_empty()
    });
    assert!(following, "the follow never reached the remote codexd");
    let mut first = [0u8; 1];
    // The first bytes of the follow arrived: it is past its start.
    std::io::Read::read_exact(follow.stdout.as_mut().unwrap(), &mut first).unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let _ = follow.wait();
    let killed = Instant::now();
    let gone = wait_until(Duration::from_secs(2), || {
        ssh_children.iter().all(|p| !alive(*p)) && rpcs_of(data_dir).is_empty()
    });
    let left: Vec<i32> = ssh_children.iter().copied().filter(|p| alive(*p)).collect();
    assert!(
        gone,
        "2 s after the SIGKILL: ssh children {left:?} alive, remote rpcs {:?} ({:?})",
        rpcs_of(data_dir),
        killed.elapsed()
    );
    env.ok(&["exec", "cancel", "--machine", machine, "--id", &id]);
}

#[test]
fn fleet_a_killed_follow_leaves_no_ssh_child_nor_remote_rpc() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    let data = env.path("remote-data");
    env.set_config(&format!("machines:\n{}", sshd.machine_yaml("box", &data, "")));
    no_orphan_after_a_killed_follow(&env, "box", &data);
}

/// Machines `m1`..`m3` on the loopback sshd (stores of their own), `dead` on a closed port,
/// the group `lab` of m1 and m2.
fn fleet(env: &TestEnv, sshd: &Sshd) -> String {
    let mut yaml = String::from("machines:\n");
    for name in ["m1", "m2", "m3"] {
        yaml.push_str(&sshd.machine_yaml(name, &env.path(&format!("data-{name}")), ""));
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    yaml.push_str(&format!(
        "  - name: dead\n    ssh: ssh://nobody@127.0.0.1:{closed}\n    connect_timeout: 2\n"
    ));
    yaml.push_str("groups:\n  lab: [m1, m2]\n");
    yaml
}

fn by_machine(lines: &[Value]) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = lines
        .iter()
        .map(|l| (l["machine"].as_str().expect("every line names its machine").into(), l.clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn fleet_fan_out_prints_one_line_per_machine_and_exits_with_the_worst() {
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    env.set_config(&fleet(&env, &sshd));

    // A group: one line per member, each with `machine` first; all ok, exit 0.
    let (code, lines) = env.run(&["exec", "start", "--machine", "lab", "--cmd", "echo hi"]);
    assert_eq!(code, 0, "{lines:?}");
    let lines = by_machine(&lines);
    assert_eq!(lines.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(), ["m1", "m2"]);
    for (_, line) in &lines {
        assert_eq!(line.as_object().unwrap().keys().next().unwrap(), "machine", "{line}");
        assert_eq!(line["status"], "running", "{line}");
    }
    // `result` of each job on its own machine: a list (`a,b`) fans out as well.
    let id = lines[0].1["exec_id"].as_str().unwrap();
    let (code, out) = env.run(&["exec", "result", "--machine", "m1,m2", id]);
    let out = by_machine(&out);
    assert_eq!(code, 4, "m2 has no such job: {out:?}");
    assert_eq!(out[0].1["exec_id"], id, "{out:?}");
    assert_eq!(
        (out[1].1["type"].as_str(), out[1].1["code"].as_str()),
        (Some("error"), Some("job_not_found"))
    );

    // `--all` with a dead machine: every machine reported, the dead one as an error, and the
    // exit code says so (3: ssh); the whole run costs about one connect_timeout, not one each.
    let started = Instant::now();
    let (code, lines) = env.run(&["exec", "list", "--all"]);
    let took = started.elapsed();
    let lines = by_machine(&lines);
    let names: Vec<&str> = lines.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(names, ["dead", "m1", "m2", "m3"], "{lines:?}");
    assert_eq!(lines[0].1["code"], "ssh_failed", "{lines:?}");
    assert!(lines[1..].iter().all(|l| l.1["type"] != "error"), "{lines:?}");
    assert_eq!(code, 3);
    assert!(took < Duration::from_secs(8), "{took:?}");

    // A glob; and a single machine keeps its own output (no `machine` added).
    let (code, lines) = env.run(&["machine", "check", "--machine", "m?"]);
    assert_eq!((code, lines.len()), (0, 3), "{lines:?}");
    assert!(lines.iter().all(|l| l["ok"] == true), "{lines:?}");
    let single = env.ok(&["machine", "check", "--machine", "m1"]);
    assert!(single.get("machine").is_none(), "{single}");

    // A command that runs on one machine refuses a group; a word matching nothing is named.
    let e = env.err(&["exec", "logs", "--machine", "lab", "last"], "usage", 2);
    assert!(e["message"].as_str().unwrap().contains("m1, m2"), "{e}");
    let e = env.err(&["exec", "list", "--machine", "gpu*"], "unknown_machine", 2);
    assert!(e["message"].as_str().unwrap().contains("gpu*"), "{e}");
    let e = env.err(&["exec", "list", "--machine", "any"], "usage", 2);
    assert!(e["message"].as_str().unwrap().contains("--gpus"), "{e}");
}
