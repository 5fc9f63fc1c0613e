//! Fan-out: one command on several machines at once. `--machine a,b,c`, a glob
//! (`--machine 'gpu*'`), a group of the config (`groups: {lab: [gpu1, gpu2]}`) or `--all` run
//! the single-machine command once per machine, each as a `codex-remote` child of its own (the
//! same command line, the machine in `CODEX_REMOTE_MACHINE`), `--parallel`-bounded, and print
//! each child's JSON lines with `machine` first, as each machine finishes. The exit code is the
//! worst of the children's: the highest.
//!
//! `exec start --gpus N` with `--machine any` or a group places the job on one machine instead:
//! every candidate is asked for its GPUs in one parallel round (the `hello` that carries them),
//! and the job starts where N GPUs are free now, else where the GPU queue is shortest. Its
//! answer says where it went and why (`placement`). Nothing runs on the laptop beyond this
//! process, nothing new on the servers.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use super::output;
use crate::error::{Error, ErrorCode, Result, exit};
use crate::remote::config::{ANY, MachineConfig, RemoteConfig};
use crate::remote::deadline;
use crate::remote::provision::{CheckReport, check};

/// The commands that fan out, by their names.
const FANS_OUT: &[[&str; 2]] = &[
    ["exec", "start"],
    ["exec", "result"],
    ["exec", "cancel"],
    ["exec", "list"],
    ["machine", "check"],
    ["machine", "up"],
    ["file", "write"],
    ["sync", "push"],
];

/// Machines worked on at once by a fan-out (`CODEX_REMOTE_PARALLEL` changes it).
pub const DEFAULT_PARALLEL: usize = 32;

/// How long placement waits for a candidate's GPUs (a silent one is left out).
const PLACEMENT_TIMEOUT: Duration = Duration::from_secs(8);

/// Runs `f` on every item, `parallel` at a time; the results come back in the items' order.
pub fn parallel_map<T: Send, R: Send>(
    items: Vec<T>,
    parallel: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let mut results: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    let queue = Mutex::new(items.into_iter().enumerate());
    let done = Mutex::new(&mut results);
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| {
                loop {
                    // The lock is held for the take only: the work runs side by side.
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some((i, item)) = next else { break };
                    let result = f(item);
                    done.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                }
            });
        }
    });
    results.into_iter().map(|r| r.expect("every item ran")).collect()
}

/// How long past its timeout a check may take to kill its calls and report.
const CHECK_GRACE: Duration = Duration::from_secs(5);

/// Checks `configs`, `parallel` at a time, each given at most `timeout`; the reports come
/// back in the order of `configs`.
pub fn check_all(
    configs: Vec<MachineConfig>,
    parallel: usize,
    timeout: Duration,
) -> Vec<CheckReport> {
    parallel_map(configs, parallel, |config| {
        // Every call of the check ends by the timeout, its ssh child killed and reaped. The
        // check runs on a thread of its own all the same, so that one stuck elsewhere is
        // reported (the thread ends with the process).
        let (done_tx, done_rx) = mpsc::channel();
        let name = config.name.clone();
        std::thread::spawn(move || {
            let _ = done_tx.send(deadline::within(timeout, || check(&config)));
        });
        done_rx.recv_timeout(timeout + CHECK_GRACE).unwrap_or_else(|_| {
            let e = Error::new(
                ErrorCode::Timeout,
                format!("no answer within {}", humantime::format_duration(timeout)),
            );
            CheckReport::failed(&name, e)
        })
    })
}

/// What the command line asked of `--machine`: the command's names, the machine word and
/// whether `--all` was given.
pub struct Ask {
    path: Vec<String>,
    spec: Option<String>,
    all: bool,
    gpus: Option<u32>,
}

impl Ask {
    /// The ask of a parsed command line; `None` when it names no machine (nor `--all`).
    /// `global` is the `--machine` given before the command.
    pub fn of(matches: &clap::ArgMatches, global: Option<&str>) -> Option<Ask> {
        let mut path = Vec::new();
        let mut leaf = matches;
        while let Some((name, sub)) = leaf.subcommand() {
            path.push(name.to_string());
            leaf = sub;
        }
        let own = leaf.try_get_one::<String>("machine").ok().flatten().cloned();
        let all = leaf.try_get_one::<bool>("all").ok().flatten().copied().unwrap_or(false);
        let gpus = leaf.try_get_one::<u32>("gpus").ok().flatten().copied();
        let spec = own.or_else(|| global.map(str::to_string));
        (spec.is_some() || all).then_some(Ask { path, spec, all, gpus })
    }

    fn fans_out(&self) -> bool {
        FANS_OUT.iter().any(|names| self.path == names)
    }

    fn command_name(&self) -> String {
        self.path.join(" ")
    }
}

/// What a `--machine` word (or `--all`) selects.
#[derive(Debug, PartialEq, Eq)]
pub enum Selection {
    /// One machine named as such: today's single-machine command.
    One,
    /// Every machine of a list, glob, group or `--all`, in config order.
    Many(Vec<String>),
}

/// The machines `spec` names: a machine's own name is [`Selection::One`]; a comma list of
/// names, globs (`*`, `?`) and groups, a group, a glob, `--all` or `any` are
/// [`Selection::Many`] (config order, each once). A word that matches nothing is
/// `unknown_machine`.
pub fn select(config: &RemoteConfig, spec: Option<&str>, all: bool) -> Result<Selection> {
    let names = config.machine_names();
    let configured: Vec<String> = config.machines.iter().map(|m| m.name.clone()).collect();
    if all {
        if configured.is_empty() {
            return Err(Error::new(ErrorCode::UnknownMachine, "--all: no machine is configured"));
        }
        return Ok(Selection::Many(configured));
    }
    let Some(spec) = spec else { return Ok(Selection::One) };
    if names.iter().any(|n| n == spec) {
        return Ok(Selection::One);
    }
    let mut chosen = Vec::new();
    for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let matched: Vec<String> = if word == ANY {
            configured.clone()
        } else if let Some(members) = config.groups.get(word) {
            members.clone()
        } else if word.contains(['*', '?']) {
            names.iter().filter(|n| glob_matches(word, n)).cloned().collect()
        } else {
            names.iter().filter(|n| *n == word).cloned().collect()
        };
        if matched.is_empty() {
            let groups: Vec<&str> = config.groups.keys().map(String::as_str).collect();
            return Err(Error::new(
                ErrorCode::UnknownMachine,
                format!("no machine or group matches {word:?}"),
            )
            .with_hint(format!(
                "configured machines: {}; groups: {}",
                names.join(", "),
                if groups.is_empty() { "none".to_string() } else { groups.join(", ") }
            )));
        }
        chosen.extend(matched);
    }
    // Config order, each once (a machine in two groups of the list runs once).
    let order = |n: &String| names.iter().position(|m| m == n).unwrap_or(usize::MAX);
    chosen.sort_by_key(order);
    chosen.dedup();
    if chosen.is_empty() {
        return Err(Error::new(ErrorCode::UnknownMachine, format!("{spec:?} names no machine")));
    }
    Ok(Selection::Many(chosen))
}

/// `*` any run of characters, `?` one character; everything else as itself.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // The classic two-pointer match with a return point at the last `*`.
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Runs the command on the machines `ask` selects when it names more than one (or a group,
/// glob, list, `any`, `--all`): `Ok(Some(exit code))`. `Ok(None)`: one machine, the caller
/// runs the command as always. `args` is the whole command line as parsed.
pub fn run(config: &RemoteConfig, ask: &Ask, args: &[OsString]) -> Result<Option<u8>> {
    let machines = match select(config, ask.spec.as_deref(), ask.all)? {
        Selection::One => return Ok(None),
        Selection::Many(machines) => machines,
    };
    let spec = if ask.all { "--all".to_string() } else { ask.spec.clone().unwrap_or_default() };
    let placing = ask.path == ["exec", "start"] && ask.gpus.is_some();
    if ask.spec.as_deref() == Some(ANY) && !placing {
        return Err(usage(format!(
            "--machine any places `exec start --gpus N` on one machine; for every machine use --all \
             (not with {})",
            ask.command_name()
        )));
    }
    if !ask.fans_out() {
        let list: Vec<String> = FANS_OUT.iter().map(|n| n.join(" ")).collect();
        return Err(usage(format!(
            "`{}` runs on one machine, and {spec:?} names {}: {}",
            ask.command_name(),
            machines.len(),
            machines.join(", ")
        ))
        .with_hint(format!("these commands fan out to several machines: {}", list.join(", "))));
    }
    let child_args = without_machine(args.get(1..).unwrap_or_default());
    if let (true, Some(gpus)) = (placing, ask.gpus) {
        let placement = place(config, &machines, gpus)?;
        let extra = serde_json::to_value(&placement).expect("plain data");
        let code = run_child(&placement.machine, &child_args, Some(("placement", extra)));
        return Ok(Some(code));
    }
    let parallel = std::env::var("CODEX_REMOTE_PARALLEL")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_PARALLEL);
    let codes = parallel_map(machines, parallel, |name| run_child(&name, &child_args, None));
    Ok(Some(worst(&codes)))
}

/// The fan-out's exit code: the highest of the machines' (0 only when every one exited 0).
pub fn worst(codes: &[u8]) -> u8 {
    codes.iter().copied().max().unwrap_or(exit::OK)
}

fn usage(message: String) -> Error {
    Error::new(ErrorCode::Usage, message)
}

/// The command line without `--machine`/`-m` (and its value) and `--all`, up to a `--`.
fn without_machine(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        match text.as_ref() {
            "--" => {
                out.push(arg.clone());
                out.extend(iter.cloned());
                break;
            }
            "--machine" | "-m" => {
                iter.next();
            }
            "--all" => {}
            t if t.starts_with("--machine=") => {}
            t if t.starts_with("-m") && !t.starts_with("--") => {}
            _ => out.push(arg.clone()),
        }
    }
    out
}

/// Runs `codex-remote ARGS` for `machine` and prints its stdout lines tagged with the machine
/// (and `extra`); its stderr lines go to ours as `[machine] line`. Returns its exit code.
fn run_child(machine: &str, args: &[OsString], extra: Option<(&str, Value)>) -> u8 {
    let exe = std::env::current_exe().unwrap_or_else(|_| "codex-remote".into());
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env("CODEX_REMOTE_MACHINE", machine)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match crate::remote::ssh::spawn_tied(&mut cmd) {
        Ok(child) => child,
        Err(e) => {
            let e = Error::internal("starting codex-remote for a machine", e);
            print_tagged(machine, &error_line(&e), extra.as_ref());
            return e.exit_code();
        }
    };
    let stderr = child.stderr.take().expect("piped");
    let relay = std::thread::spawn({
        let machine = machine.to_string();
        move || {
            for line in BufReader::new(stderr).lines().map_while(std::io::Result::ok) {
                crate::error::stderr_line(&format!("[{machine}] {line}"));
            }
        }
    });
    let mut stdout = Vec::new();
    let _ = child.stdout.take().expect("piped").read_to_end(&mut stdout);
    let code = match child.wait() {
        Ok(status) => status.code().map_or(exit::TRANSPORT, |c| c.clamp(0, 255) as u8),
        Err(_) => exit::TRANSPORT,
    };
    let _ = relay.join();
    let text = String::from_utf8_lossy(&stdout);
    let mut printed = false;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        printed = true;
        print_tagged(machine, line, extra.as_ref());
    }
    if !printed && code != exit::OK {
        let e = Error::new(
            ErrorCode::Internal,
            format!("codex-remote for machine {machine} exited with {code} and printed nothing"),
        );
        print_tagged(machine, &error_line(&e), extra.as_ref());
    }
    code
}

fn error_line(e: &Error) -> String {
    #[derive(Serialize)]
    struct ErrorLine {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        body: crate::protocol::ErrorBody,
    }
    let line = ErrorLine { kind: "error", body: e.clone().into() };
    serde_json::to_string(&line).expect("plain data")
}

/// One line of a machine: a JSON object gets `machine` first (and `extra`); text lines (with
/// `--format text`) are prefixed with `machine: `. Whole lines, so machines never interleave.
fn print_tagged(machine: &str, line: &str, extra: Option<&(&str, Value)>) {
    let tagged = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(fields)) if !output::text() => {
            let mut out = Map::new();
            out.insert("machine".into(), Value::String(machine.to_string()));
            out.extend(fields.into_iter().filter(|(k, _)| k != "machine"));
            if let Some((key, value)) = extra {
                out.insert(key.to_string(), value.clone());
            }
            Value::Object(out).to_string()
        }
        _ if output::text() => format!("{machine}: {line}"),
        Ok(other) => serde_json::json!({ "machine": machine, "value": other }).to_string(),
        Err(_) => serde_json::json!({ "machine": machine, "line": line }).to_string(),
    };
    let mut out = std::io::stdout().lock();
    // A closed stdout ends nothing here: the children's exit codes still make ours.
    let _ = writeln!(out, "{tagged}").and_then(|()| out.flush());
}

/// Where `exec start --gpus N` went and why.
#[derive(Debug, Serialize)]
pub struct Placement {
    #[serde(skip)]
    pub machine: String,
    /// `free_gpus`: N GPUs were free there; `shortest_queue`: nowhere had N free, and its GPU
    /// queue was the shortest.
    pub reason: &'static str,
    pub gpus: u32,
    pub candidates: Vec<Candidate>,
}

/// One machine asked during placement.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub machine: String,
    /// GPUs a `--gpus` job could take now (`null`: the machine did not answer).
    pub free_gpus: Option<usize>,
    pub total_gpus: Option<usize>,
    /// Jobs waiting for GPUs there.
    pub queued: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Candidate {
    fn of(report: &CheckReport) -> Self {
        let gpus = report.gpus.as_ref().filter(|_| report.ok);
        Candidate {
            machine: report.name.clone(),
            free_gpus: gpus.map(|g| g.gpus.iter().filter(|g| g.free).count()),
            total_gpus: gpus.map(|g| g.gpus.len()),
            queued: gpus.map(|g| g.queued),
            error: match (&report.error, gpus) {
                (Some(e), _) => Some(e.clone()),
                (None, None) => Some("codexd reports no GPUs".into()),
                (None, Some(_)) => None,
            },
        }
    }
}

/// Asks every candidate for its GPUs at once and picks one for a job of `gpus` GPUs.
fn place(config: &RemoteConfig, machines: &[String], gpus: u32) -> Result<Placement> {
    let configs = machines.iter().map(|m| config.machine(Some(m))).collect::<Result<Vec<_>>>()?;
    let parallel = configs.len();
    let reports = check_all(configs, parallel, PLACEMENT_TIMEOUT);
    let candidates: Vec<Candidate> = reports.iter().map(Candidate::of).collect();
    choose(candidates, gpus)
}

/// The machine with N free GPUs (the most free; then the shortest queue; then config order),
/// else the one with the shortest GPU queue among those with N GPUs at all.
pub fn choose(candidates: Vec<Candidate>, gpus: u32) -> Result<Placement> {
    let need = gpus as usize;
    let able = |c: &&Candidate| c.total_gpus.is_some_and(|t| t >= need);
    let free_now = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| able(c) && c.free_gpus.is_some_and(|f| f >= need))
        .min_by_key(|(i, c)| (std::cmp::Reverse(c.free_gpus), c.queued, *i))
        .map(|(_, c)| (c.machine.clone(), "free_gpus"));
    let queued = || {
        candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| able(c))
            .min_by_key(|(i, c)| (c.queued, std::cmp::Reverse(c.free_gpus), *i))
            .map(|(_, c)| (c.machine.clone(), "shortest_queue"))
    };
    let Some((machine, reason)) = free_now.or_else(queued) else {
        let answered = candidates.iter().any(|c| c.total_gpus.is_some());
        let why: Vec<String> = candidates
            .iter()
            .map(|c| match (&c.error, c.total_gpus) {
                (Some(e), _) => format!("{}: {e}", c.machine),
                (None, t) => format!("{}: {} GPUs", c.machine, t.unwrap_or(0)),
            })
            .collect();
        let code = if answered { ErrorCode::InvalidArgument } else { ErrorCode::SshFailed };
        return Err(Error::new(
            code,
            format!("no machine can take a job of {gpus} GPUs ({})", why.join("; ")),
        )
        .with_hint("`codex-remote machine ls` shows each machine's GPUs"));
    };
    Ok(Placement { machine, reason, gpus, candidates })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(args: &[&str]) -> Vec<String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        without_machine(&args).iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    fn config() -> RemoteConfig {
        let text = "machines:\n  - {name: gpu1, ssh: a}\n  - {name: gpu2, ssh: b}\n  - {name: cpu1, ssh: c}\n\
                    groups:\n  lab: [gpu2, gpu1]\n";
        crate::config_file::parse_yaml_or_json(text, std::path::Path::new("c.yaml")).unwrap()
    }

    fn many(names: &[&str]) -> Selection {
        Selection::Many(names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn a_name_is_one_machine_and_lists_globs_groups_and_all_are_many() {
        let c = config();
        assert_eq!(select(&c, Some("gpu1"), false).unwrap(), Selection::One);
        assert_eq!(select(&c, Some(crate::remote::config::LOCAL), false).unwrap(), Selection::One);
        assert_eq!(select(&c, None, false).unwrap(), Selection::One);
        assert_eq!(select(&c, Some("cpu1,gpu1"), false).unwrap(), many(&["gpu1", "cpu1"]));
        assert_eq!(select(&c, Some("gpu*"), false).unwrap(), many(&["gpu1", "gpu2"]));
        assert_eq!(select(&c, Some("lab"), false).unwrap(), many(&["gpu1", "gpu2"]));
        assert_eq!(
            select(&c, Some("lab,gpu?,cpu1"), false).unwrap(),
            many(&["gpu1", "gpu2", "cpu1"])
        );
        assert_eq!(select(&c, None, true).unwrap(), many(&["gpu1", "gpu2", "cpu1"]));
        assert_eq!(select(&c, Some(ANY), false).unwrap(), many(&["gpu1", "gpu2", "cpu1"]));
        let e = select(&c, Some("gpu1,tpu*"), false).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownMachine);
        assert!(e.message.contains("tpu*"), "{}", e.message);
    }

    #[test]
    fn globs_match_runs_and_single_characters() {
        assert!(glob_matches("gpu*", "gpu12"));
        assert!(glob_matches("*1", "gpu1"));
        assert!(glob_matches("g?u*2", "gpu12"));
        assert!(!glob_matches("gpu?", "gpu12"));
        assert!(!glob_matches("cpu*", "gpu1"));
        assert!(glob_matches("*", ""));
    }

    #[test]
    fn the_machine_flag_is_taken_out_up_to_a_double_dash() {
        assert_eq!(
            strip(&[
                "exec",
                "start",
                "--machine",
                "lab",
                "--cmd",
                "-m",
                "--all",
                "-mx",
                "--",
                "-m"
            ]),
            ["exec", "start", "--cmd", "--", "-m"]
        );
        assert_eq!(strip(&["--machine=lab", "exec", "list", "-m", "g"]), ["exec", "list"]);
    }

    #[test]
    fn the_worst_exit_code_is_the_highest() {
        assert_eq!(worst(&[0, 0]), 0);
        assert_eq!(worst(&[0, 3, 1]), 3);
        assert_eq!(worst(&[124, 3]), 124);
        assert_eq!(worst(&[]), 0);
    }

    fn candidate(machine: &str, free: usize, total: usize, queued: usize) -> Candidate {
        Candidate {
            machine: machine.into(),
            free_gpus: Some(free),
            total_gpus: Some(total),
            queued: Some(queued),
            error: None,
        }
    }

    #[test]
    fn placement_takes_free_gpus_first_then_the_shortest_queue() {
        let down = Candidate {
            machine: "down".into(),
            free_gpus: None,
            total_gpus: None,
            queued: None,
            error: Some("ssh: connect timed out".into()),
        };
        let all = vec![
            down.clone(),
            candidate("busy", 0, 4, 3),
            candidate("one", 1, 4, 0),
            candidate("two", 2, 2, 1),
        ];
        let p = choose(all.clone(), 2).unwrap();
        assert_eq!((p.machine.as_str(), p.reason), ("two", "free_gpus"));
        let p = choose(all.clone(), 1).unwrap();
        assert_eq!((p.machine.as_str(), p.reason), ("two", "free_gpus"));
        let p = choose(all.clone(), 3).unwrap();
        assert_eq!((p.machine.as_str(), p.reason), ("one", "shortest_queue"));
        assert_eq!(choose(all, 8).unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(choose(vec![down], 1).unwrap_err().code, ErrorCode::SshFailed);
    }
}
