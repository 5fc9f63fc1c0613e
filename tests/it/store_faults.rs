//! Faults of the job store, reproduced through the real binaries: pid reuse, a worker killed or
//! stopped before it recorded itself, a full disk, `codexd rpc` killed during `exec_start`, and
//! a prune of 10,000 jobs while jobs are started.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TestEnv, alive, json_lines, wait_until};

fn signal(pid: i32, sig: rustix::process::Signal) {
    let _ = rustix::process::kill_process(rustix::process::Pid::from_raw(pid).unwrap(), sig);
}

fn proc_field(pid: i32, index_after_comm: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(index_after_comm)?.parse().ok()
}

/// The start time of `pid` in clock ticks after boot.
fn start_time(pid: i32) -> u64 {
    proc_field(pid, 19).unwrap()
}

/// The live children of `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| proc_field(p, 1) == Some(pid as u64) && alive(p))
        .collect()
}

/// `codex-remote ARGS` with a worker-start deadline of 1 ms, so that a job whose worker has not
/// recorded itself is judged at once.
fn quick(env: &TestEnv, args: &[&str]) -> Value {
    let out = env.remote(args).env("CODEXD_WORKER_START_DEADLINE_MS", "1").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    json_lines(&out).pop().unwrap()
}

fn status_path(env: &TestEnv, id: &str) -> PathBuf {
    env.data_dir().join("jobs").join(id).join("status.json")
}

fn read_status(env: &TestEnv, id: &str) -> Value {
    serde_json::from_slice(&std::fs::read(status_path(env, id)).unwrap()).unwrap()
}

fn write_status(env: &TestEnv, id: &str, status: &Value) {
    std::fs::write(status_path(env, id), status.to_string()).unwrap()
}

/// A job as `exec_start` leaves it before its worker runs: `sleep 300`, not yet recorded.
fn job_without_worker(env: &TestEnv) -> String {
    let id = codex_runner::jobs::store::new_id();
    let dir = env.data_dir().join("jobs").join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    for log in ["stdout.log", "stderr.log"] {
        File::create(dir.join(log)).unwrap();
    }
    let spec = json!({"argv": ["sleep", "300"], "cwd": "/", "grace_ms": 500, "retention": 100});
    std::fs::write(dir.join("spec.json"), spec.to_string()).unwrap();
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let status = json!({
        "exec_id": id, "status": "running", "state": "running", "cmd": "sleep 300", "cwd": "/",
        "pid": null, "started_at": null, "finished_at": null, "exit_code": null, "signal": null,
        "duration_ms": null, "error": null, "created_at": now
    });
    write_status(env, &id, &status);
    id.to_string()
}

/// Starts the worker of a hand-made job the way `exec_start` does, while the test holds the
/// job's lock: the worker spawns the job, then waits to record itself. Returns the worker, the
/// job's pid and the lock.
fn worker_held_before_recording(env: &TestEnv, id: &str) -> (Child, i32, File) {
    let lock = File::create(env.data_dir().join("jobs").join(id).join("lock")).unwrap();
    lock.lock().unwrap();
    let data = env.data_dir();
    let worker = env
        .codexd(&["worker", "--data-dir", data.to_str().unwrap(), "--id", id])
        .env("CODEXD_EXEC_ID", id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let wpid = worker.id() as i32;
    let mut job = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            job = children_of(wpid).first().copied();
            job.is_some()
        }),
        "the worker never spawned the job"
    );
    (worker, job.unwrap(), lock)
}

#[test]
fn a_status_read_never_signals_a_process_that_reused_the_worker_pid() {
    let env = TestEnv::new();
    let id = env.start("local", "true");
    env.wait("local", &id);
    // An unrelated session: a leader and a `sleep` in its session.
    let pidfile = env.path("sleep.pid");
    let mut leader = Command::new("setsid")
        .args(["bash", "-c", &format!("sleep 300 & echo $! > {}; wait", pidfile.display())])
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    }));
    let sleep: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let session = proc_field(sleep, 3).unwrap() as i32;
    assert_ne!(session, sleep, "the sleep is a member, not the leader");
    // The job's status now names that leader as its worker, with another start time: the pid
    // was reused.
    let mut status = read_status(&env, &id);
    for field in ["finished_at", "exit_code", "duration_ms"] {
        status[field] = Value::Null;
    }
    status["status"] = json!("running");
    status["state"] = json!("running");
    status["worker_pid"] = json!(session);
    status["worker_start_time"] = json!(start_time(session) + 1);
    write_status(&env, &id, &status);

    let v = env.ok(&["exec", "result", "--id", &id]);
    assert_eq!(v["state"], "lost", "{v}");
    assert!(alive(sleep) && alive(session), "a process that reused the worker's pid was signalled");
    signal(session, rustix::process::Signal::KILL);
    signal(sleep, rustix::process::Signal::KILL);
    let _ = leader.wait();
}

#[test]
fn a_worker_killed_before_recording_leaves_a_running_job_that_cancel_ends() {
    let env = TestEnv::new();
    let id = job_without_worker(&env);
    let (mut worker, job, lock) = worker_held_before_recording(&env, &id);
    signal(worker.id() as i32, rustix::process::Signal::KILL);
    worker.wait().unwrap();
    drop(lock);
    assert!(alive(job));

    // Past the worker-start deadline, with no worker recorded: its job still runs.
    let v = quick(&env, &["exec", "result", "--id", &id]);
    assert_eq!(v["state"], "running", "a job whose process lives is not lost: {v}");
    assert_eq!(quick(&env, &["exec", "list"])["jobs"][0]["state"], "running");

    let v = quick(&env, &["exec", "cancel", "--id", &id, "--grace", "200ms"]);
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(!alive(job), "cancel left the job's process running");
    quick(&env, &["exec", "rm", "--id", &id]);
    assert!(!env.data_dir().join("jobs").join(&id).exists());
}

#[test]
fn a_stopped_worker_is_not_lost_and_stops_when_it_finds_its_job_ended() {
    let env = TestEnv::new();
    let id = job_without_worker(&env);
    let (mut worker, job, lock) = worker_held_before_recording(&env, &id);
    let wpid = worker.id() as i32;
    signal(wpid, rustix::process::Signal::STOP);
    drop(lock);
    let v = quick(&env, &["exec", "result", "--id", &id]);
    assert_eq!(v["state"], "running", "a stopped worker is not lost: {v}");

    // Ended meanwhile (as an older codexd marked such jobs lost): once it runs again, the
    // worker ends the job it started and leaves the recorded end alone.
    let mut status = read_status(&env, &id);
    status["status"] = json!("finished");
    status["state"] = json!("lost");
    status["error"] = json!("the worker never started");
    write_status(&env, &id, &status);
    signal(wpid, rustix::process::Signal::CONT);
    assert!(wait_until(Duration::from_secs(10), || worker.try_wait().unwrap().is_some()));
    assert!(wait_until(Duration::from_secs(10), || !alive(job)), "the job outlived its worker");
    let v = read_status(&env, &id);
    assert_eq!((v["state"].as_str(), &v["worker_pid"]), (Some("lost"), &Value::Null), "{v}");
}

#[test]
fn cancel_and_rm_of_a_lost_job_end_the_process_it_left() {
    let env = TestEnv::new();
    let mut jobs = Vec::new();
    for _ in 0..2 {
        let id = job_without_worker(&env);
        let (mut worker, job, lock) = worker_held_before_recording(&env, &id);
        signal(worker.id() as i32, rustix::process::Signal::KILL);
        worker.wait().unwrap();
        drop(lock);
        // Recorded lost (as an older codexd did) while its process lives on.
        let mut status = read_status(&env, &id);
        status["status"] = json!("finished");
        status["state"] = json!("lost");
        write_status(&env, &id, &status);
        jobs.push((id, job));
    }
    let (id, job) = &jobs[0];
    let v = env.ok(&["exec", "cancel", "--id", id, "--grace", "200ms"]);
    assert_eq!(v["state"], "lost", "{v}");
    assert!(v["message"].as_str().unwrap().contains("ended"), "{v}");
    assert!(!alive(*job));
    let (id, job) = &jobs[1];
    env.ok(&["exec", "rm", "--id", id]);
    assert!(!alive(*job), "rm removed a job whose process lives");
    assert!(!env.data_dir().join("jobs").join(id).exists());
}

/// A small tmpfs mounted over a path (root only), unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(path.to_path_buf()))
    }

    /// Fills the disk to the last byte.
    fn fill(&self) {
        let mut f = File::create(self.0.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        loop {
            if let Err(e) = f.write_all(&block) {
                assert_eq!(e.raw_os_error(), Some(28), "ENOSPC expected: {e}");
                break;
            }
        }
        // Byte by byte into the last partial page.
        while f.write_all(&[0]).is_ok() {}
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_still_lists_and_reads_jobs_and_the_worker_records_why() {
    let env = TestEnv::new();
    let Some(disk) = SmallDisk::mount(&env.data_dir(), "2m") else {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "mounting a tmpfs needs root");
        eprintln!("skipped: cannot mount a tmpfs (not root)");
        return;
    };
    let victim = env.start("local", "echo before; sleep 300");
    let victim_status = env.started("local", &victim);
    let marker = env.path("go");
    let finisher = env.start(
        "local",
        // Writes nothing: the job itself must not fail on the full disk.
        &format!("while [ ! -e {} ]; do sleep 0.05; done", marker.display()),
    );
    env.started("local", &finisher);
    disk.fill();

    // The victim's worker dies while the disk is full: reads still answer, `lost` derived.
    let worker = victim_status["worker_pid"].as_i64().unwrap() as i32;
    signal(worker, rustix::process::Signal::KILL);
    // SIGKILL is delivered asynchronously: the list below must find the worker gone.
    assert!(wait_until(Duration::from_secs(10), || !alive(worker)), "the worker died");
    let job = victim_status["pid"].as_i64().unwrap() as i32;
    let list = env.ok(&["exec", "list"]);
    let states: Vec<(&str, &str)> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["exec_id"].as_str().unwrap(), j["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [(finisher.as_str(), "running"), (victim.as_str(), "lost")], "{list}");
    let v = env.ok(&["exec", "result", "--id", &victim]);
    assert_eq!(v["state"], "lost", "{v}");
    assert!(v["error"].as_str().unwrap().contains("no space left"), "{v}");
    assert!(!alive(job), "the lost job's process was ended");
    let (code, lines) = env.run(&["exec", "logs", "--id", &victim]);
    assert_eq!((code, &lines[0]["line"]), (0, &json!("before")), "{lines:?}");
    // Issue 27: `lost` is an end, recorded in the space `end.reserve` kept for it.
    let stored = read_status(&env, &victim);
    assert_eq!(stored["state"], "lost", "recorded in the reserve: {stored}");
    assert!(stored["error"].as_str().unwrap().contains("recorded in reserved space"), "{stored}");

    // A job that ends on the full disk has its end recorded, with the cause. (Recording the lost
    // job freed the blocks of its old status: the disk is filled again first.)
    disk.fill();
    File::create(&marker).unwrap();
    let v = env.wait("local", &finisher);
    assert_eq!(v["state"], "succeeded", "{v}");
    assert!(v["error"].as_str().unwrap().contains("no space left on device"), "{v}");
}

/// Issue 26, point 8: on a full job store, `exec start` answers `no_space` and leaves no half
/// job; `exec cancel` of a running job still stops it, and its end is recorded (in the space
/// the job set aside) as `cancelled`, never `running` forever.
#[test]
fn a_full_disk_answers_no_space_to_start_and_cancel_still_stops_a_job() {
    let env = TestEnv::new();
    let Some(disk) = SmallDisk::mount(&env.data_dir(), "2m") else {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "mounting a tmpfs needs root");
        eprintln!("skipped: cannot mount a tmpfs (not root)");
        return;
    };
    let running = env.start("local", "sleep 300");
    let job = env.started("local", &running)["pid"].as_i64().unwrap() as i32;
    disk.fill();

    let e = env.err(&["exec", "start", "--cmd", "true"], "no_space", 4);
    assert!(e["message"].as_str().unwrap().contains("No space left"), "{e}");
    let staged = std::fs::read_dir(env.data_dir().join("new")).map_or(0, |d| d.count());
    let jobs = std::fs::read_dir(env.data_dir().join("jobs")).unwrap().count();
    assert_eq!((staged, jobs), (0, 1), "the refused start left nothing");

    let v = env.ok(&["exec", "cancel", "--id", &running, "--grace", "200ms"]);
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(v["message"].as_str().unwrap_or("").contains("could not be written"), "{v}");
    assert!(!alive(job), "the job's process was ended");
    let recorded = read_status(&env, &running);
    assert_eq!(recorded["state"], "cancelled", "the end was recorded: {recorded}");
    assert!(recorded["error"].as_str().unwrap().contains("no space left on device"), "{recorded}");

    // Space back: the job is removed and new jobs start.
    std::fs::remove_file(env.data_dir().join("filler")).unwrap();
    env.ok(&["exec", "rm", "--id", &running]);
    let id = env.start("local", "true");
    assert_eq!(env.wait("local", &id)["state"], "succeeded");
}

/// A small random number generator (xorshift), seeded from the clock; the seed is printed.
struct Rng(u64);

impl Rng {
    fn from_clock() -> Rng {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                as u64;
        eprintln!("rng seed {nanos}");
        Rng(nanos | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Sends one `exec_start` to a `codexd rpc` and kills it after `delay`, or lets it answer when
/// `delay` is `None`. Returns how long the answer took.
fn start_and_kill(env: &TestEnv, key: &str, delay: Option<Duration>) -> Duration {
    let begin = Instant::now();
    let mut child = env
        .codexd(&["rpc"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = json!({"type": "exec_start", "cmd": "true", "idempotency_key": key});
    let mut stdin = child.stdin.take().unwrap();
    let _ = writeln!(stdin, "{line}");
    drop(stdin);
    if let Some(delay) = delay {
        std::thread::sleep(delay);
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    if delay.is_none() {
        let answer = &json_lines(&out)[0];
        assert_eq!(answer["type"], "status", "{answer}");
    }
    begin.elapsed()
}

#[test]
fn sigkill_of_codexd_during_exec_start_leaves_no_half_and_no_phantom_job() {
    const TRIALS: usize = 150;
    let env = TestEnv::new();
    // How long one start takes here, to spread the kills over it.
    let mut takes = Duration::ZERO;
    for i in 0..5 {
        takes = takes.max(start_and_kill(&env, &format!("warm-{i}"), None));
    }
    let span = (takes.as_micros() as u64 * 3 / 2).max(1);
    let mut rng = Rng::from_clock();
    let staging = env.data_dir().join("new");
    let count_staged = || std::fs::read_dir(&staging).map_or(0, |d| d.count());
    let (mut left_staged, deadline) = (0, Instant::now() + Duration::from_secs(60));
    let mut trials = 0;
    while trials < TRIALS && Instant::now() < deadline {
        let key = format!("trial-{trials}");
        start_and_kill(&env, &key, Some(Duration::from_micros(rng.below(span))));
        left_staged += count_staged();
        // The client retries with the same key, as `exec start` does after a transport error.
        start_and_kill(&env, &key, None);
        trials += 1;
    }
    assert_eq!(count_staged(), 0, "a start sweeps what killed starts left");

    let list = env.ok(&["exec", "list", "--limit", "100000"]);
    let jobs = list["jobs"].as_array().unwrap();
    let mut half = 0;
    let mut phantom = 0;
    let mut per_key = std::collections::HashMap::new();
    for job in jobs {
        let id = job["exec_id"].as_str().unwrap();
        let dir = env.data_dir().join("jobs").join(id);
        let whole = ["status.json", "spec.json", "stdout.log", "stderr.log", "end.reserve"]
            .iter()
            .all(|f| dir.join(f).is_file());
        half += usize::from(!whole);
        *per_key.entry(job["idempotency_key"].as_str().unwrap().to_string()).or_insert(0) += 1;
        let done = env.ok(&["exec", "wait", "--id", id, "--timeout", "20s"]);
        phantom += usize::from(done["state"] != "succeeded");
    }
    let doubled = per_key.values().filter(|&&n| n > 1).count();
    let pruned = env.ok(&["exec", "prune", "--keep", "100000"]);
    eprintln!(
        "{trials} SIGKILLs of codexd rpc within {span} us of exec_start: {} jobs, {half} half, \
         {phantom} phantom, {doubled} keys with two jobs; {left_staged} staged dirs left by \
         kills and swept; prune swept {}",
        jobs.len(),
        pruned["swept_temp"]
    );
    assert_eq!((half, phantom, doubled), (0, 0, 0));
    assert_eq!(per_key.len(), trials + 5, "every key has its job");
}

/// Writes `n` finished jobs straight into the store (as if they had run), fast.
fn finished_jobs(env: &TestEnv, n: usize) {
    let jobs = env.data_dir().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    for _ in 0..n {
        let id = codex_runner::jobs::store::new_id();
        let dir = jobs.join(&id);
        std::fs::create_dir(&dir).unwrap();
        let status = json!({
            "exec_id": id, "status": "finished", "state": "succeeded", "cmd": "true",
            "cwd": "/", "pid": 1, "started_at": now, "finished_at": now, "exit_code": 0,
            "signal": null, "duration_ms": 0, "error": null, "created_at": now
        });
        std::fs::write(dir.join("status.json"), status.to_string()).unwrap();
        std::fs::write(dir.join("stdout.log"), "out\n").unwrap();
        std::fs::write(dir.join("stderr.log"), "").unwrap();
    }
}

#[test]
fn exec_start_answers_in_normal_time_during_a_prune_of_10k_jobs() {
    const JOBS: usize = 10_000;
    let env = TestEnv::new();
    // Only the prune under test removes jobs (a worker prunes to the retention when it ends).
    std::fs::create_dir_all(env.data_dir()).unwrap();
    std::fs::write(env.data_dir().join("config.yaml"), "retention_count: 1000000\n").unwrap();
    env.ok(&["exec", "list"]);
    finished_jobs(&env, JOBS);
    let start_once = || {
        let begin = Instant::now();
        env.start("local", "true");
        begin.elapsed()
    };
    let alone = start_once();
    let begin = Instant::now();
    // The answer (10,000 ids) goes to a file: a pipe nobody reads would block the prune.
    let answer = env.path("pruned.json");
    let mut prune = env
        .remote(&["exec", "prune", "--keep", "0"])
        .stdout(File::create(&answer).unwrap())
        .spawn()
        .unwrap();
    let mut during = Vec::new();
    while prune.try_wait().unwrap().is_none() {
        during.push(start_once());
        assert!(begin.elapsed() < Duration::from_secs(300), "the prune does not end");
    }
    let prune_took = begin.elapsed();
    assert!(!during.is_empty(), "the prune ended before a start could be made");
    assert!(prune.wait().unwrap().success());
    let pruned: Value = serde_json::from_slice(&std::fs::read(&answer).unwrap()).unwrap();
    let removed = pruned["removed"].as_array().unwrap().len();
    let slowest = during.iter().max().copied().unwrap_or_default();
    eprintln!(
        "prune of {JOBS} finished jobs: {removed} removed in {prune_took:?}; {} exec_start \
         during it, slowest {slowest:?} (alone {alone:?})",
        during.len()
    );
    assert!(removed >= JOBS, "{removed}");
    assert!(slowest < Duration::from_secs(5), "exec_start waited {slowest:?} for the prune");
    assert!(!env.data_dir().join("trash").read_dir().unwrap().any(|_| true), "trash emptied");
}
