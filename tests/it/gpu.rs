//! GPUs on a machine without a scheduler (`--gpus N`, `--gpu-ids`): the real binaries through
//! the loopback sshd, and a fake `nvidia-smi` on the PATH of the machine's codexd that prints
//! what the test writes into two files (the GPUs, and the compute processes on them). When a
//! real `nvidia-smi` is on this machine, `gpu_the_real_nvidia_smi_is_read` runs against it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::{CODEXD, Sshd, TestEnv, wait_until};

/// A GPU line as nvidia-smi prints it: idle, or busy (memory used, utilisation).
fn gpu_line(index: u32, memory_used: u32, util: u32) -> String {
    format!("{index}, GPU-{index}, NVIDIA Test GPU, {memory_used}, 16384, {util}\n")
}

fn idle(n: u32) -> String {
    (0..n).map(|i| gpu_line(i, 0, 0)).collect()
}

/// A machine `gpu` whose codexd sees the fake nvidia-smi.
struct GpuBox {
    env: TestEnv,
    _sshd: Sshd,
    gpus_file: PathBuf,
    apps_file: PathBuf,
}

impl GpuBox {
    fn new(gpus: &str) -> GpuBox {
        let env = TestEnv::new();
        let sshd = Sshd::start(env.dir.path());
        let bin = env.path("fakebin");
        std::fs::create_dir_all(&bin).unwrap();
        let (gpus_file, apps_file) = (env.path("gpus.csv"), env.path("apps.csv"));
        std::fs::write(&gpus_file, gpus).unwrap();
        std::fs::write(&apps_file, "").unwrap();
        let script = format!(
            "#!/bin/sh\ncase \"$*\" in\n  *--query-compute-apps*) cat {apps} ;;\n  *) cat {gpus} ;;\nesac\n",
            apps = apps_file.display(),
            gpus = gpus_file.display()
        );
        write_executable(&bin.join("nvidia-smi"), &script);
        let codexd_yaml = env.path("codexd.yaml");
        std::fs::write(&codexd_yaml, "gpu_free_memory_mib: 1024\ngpu_free_util_percent: 10\n")
            .unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let machine = sshd.machine_yaml("gpu", &env.path("remote-data"), "").replace(
            &format!("codexd: {CODEXD}"),
            &format!("codexd: PATH={path} CODEXD_CONFIG={} {CODEXD}", codexd_yaml.display()),
        );
        env.set_config(&format!("machines:\n{machine}"));
        GpuBox { env, _sshd: sshd, gpus_file, apps_file }
    }

    fn set_gpus(&self, text: &str) {
        std::fs::write(&self.gpus_file, text).unwrap();
    }

    /// Starts `cmd` in the test's dir with `flags`; its id.
    fn start(&self, flags: &[&str], cmd: &str) -> String {
        let dir = self.env.dir.path().display().to_string();
        let mut args = vec!["exec", "start", "--machine", "gpu", "--cwd", &dir];
        args.extend(flags);
        args.extend(["--cmd", cmd]);
        let v = self.env.ok(&args);
        assert_eq!(v["status"], "running", "{v}");
        v["exec_id"].as_str().unwrap().to_string()
    }

    /// A job that holds its GPUs until [`GpuBox::release`]: it prints its GPUs first.
    fn start_holding(&self, flags: &[&str]) -> String {
        let go = self.env.dir.path().join("go-$CODEXD_EXEC_ID");
        let cmd = format!(
            "echo cuda=$CUDA_VISIBLE_DEVICES codexd=$CODEXD_GPUS; \
             while [ ! -e {} ]; do sleep 0.05; done",
            go.display()
        );
        self.start(flags, &cmd)
    }

    fn release(&self, id: &str) {
        std::fs::write(self.env.dir.path().join(format!("go-{id}")), "").unwrap();
    }

    fn status(&self, id: &str) -> Value {
        self.env.ok(&["exec", "result", "--machine", "gpu", "--id", id])
    }

    /// Polls the job until `cond` holds of its status (20 s); the last status.
    fn until(&self, id: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(Duration::from_secs(20), || {
            last = self.status(id);
            cond(&last)
        });
        assert!(ok, "{what}: {last}");
        last
    }

    fn running(&self, id: &str) -> Value {
        self.until(id, "running", |s| s["state"] == "running" && !s["pid"].is_null())
    }

    fn queued(&self, id: &str) -> Value {
        self.until(id, "queued", |s| s["state"] == "queued")
    }

    fn wait(&self, id: &str) -> Value {
        self.env.wait("gpu", id)
    }

    fn stdout(&self, id: &str) -> String {
        let (_, lines) =
            self.env.run(&["exec", "logs", "--machine", "gpu", "--id", id, "--since", "0"]);
        let lines: Vec<&str> = lines.iter().filter_map(|l| l["line"].as_str()).collect();
        lines.join("\n")
    }

    /// Waits until the job's stdout has `text` (a running job's first line may still be on its
    /// way to the log).
    fn printed(&self, id: &str, text: &str) {
        let mut out = String::new();
        let ok = wait_until(Duration::from_secs(10), || {
            out = self.stdout(id);
            out.contains(text)
        });
        assert!(ok, "{text:?} not in the output of {id}: {out}");
    }
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn gpu_ids(status: &Value) -> Vec<u64> {
    let ids = status["gpu_ids"].as_array().unwrap_or_else(|| panic!("no gpu_ids: {status}"));
    ids.iter().map(|v| v.as_u64().unwrap()).collect()
}

fn millis(time: &Value) -> i128 {
    let t = humantime::parse_rfc3339(time.as_str().unwrap()).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i128
}

#[test]
fn gpu_three_jobs_on_two_free_gpus_run_two_at_once_and_the_third_when_one_frees() {
    let gpu = GpuBox::new(&idle(2));
    let ids: Vec<String> = (0..3).map(|_| gpu.start_holding(&["--gpus", "1"])).collect();
    let (a, b) = (gpu.running(&ids[0]), gpu.running(&ids[1]));
    let (ga, gb) = (gpu_ids(&a), gpu_ids(&b));
    assert_ne!(ga, gb, "two jobs on one GPU: {a} {b}");
    let third = gpu.queued(&ids[2]);
    assert_eq!(third["status"], "running", "a queued job has not finished: {third}");
    let reason = third["queue_reason"].as_str().unwrap();
    assert!(reason.starts_with("waiting for 1 free GPU (0 free"), "{reason}");
    assert!(third["pid"].is_null() && third["gpu_ids"].is_null(), "{third}");
    let listed = gpu.env.ok(&["exec", "list", "--machine", "gpu", "--state", "queued"]);
    let queued: Vec<&str> =
        listed["jobs"].as_array().unwrap().iter().map(|j| j["exec_id"].as_str().unwrap()).collect();
    assert_eq!(queued, [ids[2].as_str()]);
    // Each job sees its GPU.
    gpu.printed(&ids[0], &format!("cuda={} codexd={}", ga[0], ga[0]));

    gpu.release(&ids[0]);
    let first = gpu.wait(&ids[0]);
    assert_eq!(first["state"], "succeeded", "{first}");
    let third = gpu.running(&ids[2]);
    assert_eq!(gpu_ids(&third), ga, "the third job takes the freed GPU");
    let gap = millis(&third["started_at"]) - millis(&first["finished_at"]);
    assert!(gap <= 1500, "the third job started {gap} ms after a GPU freed");
    eprintln!("GPU freed -> next job started: {gap} ms");
    for id in &ids[1..] {
        gpu.release(id);
        assert_eq!(gpu.wait(id)["state"], "succeeded");
    }
}

#[test]
fn gpu_a_gpu_busy_with_a_foreign_process_is_skipped_and_the_machine_reports_it() {
    // GPU 0: someone's memory and load; GPU 1: a compute process; GPU 2: idle.
    let gpu = GpuBox::new(&format!(
        "{}{}{}",
        gpu_line(0, 9000, 95),
        gpu_line(1, 200, 0),
        gpu_line(2, 0, 0)
    ));
    std::fs::write(&gpu.apps_file, "GPU-1, 4242\n").unwrap();
    let first = gpu.start_holding(&["--gpus", "1"]);
    assert_eq!(gpu_ids(&gpu.running(&first)), [2]);
    let second = gpu.start_holding(&["--gpus", "1"]);
    let queued = gpu.queued(&second);
    assert!(queued["queue_reason"].as_str().unwrap().contains("(0 free"), "{queued}");

    let check = gpu.env.ok(&["machine", "check", "--machine", "gpu"]);
    let gpus = check["gpus"]["gpus"].as_array().unwrap_or_else(|| panic!("{check}"));
    assert_eq!(gpus.len(), 3, "{check}");
    assert_eq!(
        (gpus[0]["memory_used_mib"].as_u64(), gpus[0]["free"].as_bool()),
        (Some(9000), Some(false))
    );
    assert_eq!((gpus[1]["processes"].as_u64(), gpus[1]["free"].as_bool()), (Some(1), Some(false)));
    assert_eq!(gpus[2]["jobs"], serde_json::json!([first]), "{check}");
    assert_eq!(check["gpus"]["queued"], 1);
    let doctor = gpu.env.ok(&["exec", "doctor", "--machine", "gpu"]);
    let checks = doctor["checks"].as_array().unwrap();
    let gpus_check =
        checks.iter().find(|c| c["name"] == "gpus").unwrap_or_else(|| panic!("{doctor}"));
    assert!(
        gpus_check["detail"].as_str().unwrap().contains(&format!("held by {first}")),
        "{gpus_check}"
    );

    // The other user's work on GPU 0 ends: the queued job takes it.
    gpu.set_gpus(&format!("{}{}{}", gpu_line(0, 3, 0), gpu_line(1, 200, 0), gpu_line(2, 0, 0)));
    assert_eq!(gpu_ids(&gpu.running(&second)), [0]);
    for id in [&first, &second] {
        gpu.release(id);
        gpu.wait(id);
    }
}

#[test]
fn gpu_twenty_jobs_from_two_clients_at_once_never_share_a_gpu() {
    let gpu = GpuBox::new(&idle(4));
    let marks = gpu.env.dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // mkdir is atomic: a second job on a GPU in use fails.
    let cmd = format!(
        "m={}/gpu-$CUDA_VISIBLE_DEVICES; mkdir $m || {{ echo DOUBLE; exit 3; }}; sleep 0.3; rmdir $m",
        marks.display()
    );
    let ids: Vec<String> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| (0..10).map(|_| gpu.start(&["--gpus", "1"], &cmd)).collect::<Vec<_>>())
            })
            .collect();
        clients.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(ids.len(), 20);
    for id in &ids {
        let end = gpu.wait(id);
        assert_eq!(end["state"], "succeeded", "{end}\n{}", gpu.stdout(id));
        assert_eq!(gpu_ids(&end).len(), 1);
    }
    let check = gpu.env.ok(&["machine", "check", "--machine", "gpu"]);
    let gpus = check["gpus"]["gpus"].as_array().unwrap();
    assert!(
        gpus.iter().all(|g| g["free"] == true && g["jobs"] == serde_json::json!([])),
        "{check}"
    );
}

#[test]
fn gpu_a_queued_job_cancelled_never_runs_and_the_next_one_does() {
    let gpu = GpuBox::new(&idle(1));
    let holder = gpu.start_holding(&["--gpus", "1"]);
    gpu.running(&holder);
    let ran = gpu.env.dir.path().join("cancelled-ran");
    let cancelled = gpu.start(&["--gpus", "1"], &format!("touch {}", ran.display()));
    let next = gpu.start_holding(&["--gpus", "1"]);
    gpu.queued(&cancelled);
    gpu.queued(&next);
    let answer = gpu.env.ok(&["exec", "cancel", "--machine", "gpu", "--id", &cancelled]);
    assert_eq!(answer["state"], "cancelled", "{answer}");
    assert!(answer["pid"].is_null(), "it never ran: {answer}");
    gpu.release(&holder);
    gpu.wait(&holder);
    assert_eq!(gpu_ids(&gpu.running(&next)), [0]);
    assert!(!ran.exists(), "the cancelled job ran");
    assert_eq!(gpu.status(&cancelled)["state"], "cancelled");
    gpu.release(&next);
    gpu.wait(&next);
}

/// Issue 26, point 10: another user's process begins on the GPU a job picked, within the second
/// nvidia-smi's answer is kept (each user's store keeps its own, so only the driver can tell).
/// The fake nvidia-smi reports that process from its second process listing on: the first one
/// (asked by `exec start`) is what the pick sees. The pick is checked with a fresh listing, and
/// the job goes back to the queue until the GPU is free again.
#[test]
fn gpu_a_gpu_taken_by_another_user_between_the_pick_and_the_start_is_not_used() {
    let gpu = GpuBox::new(&idle(1));
    let (count, foreign) = (gpu.env.path("apps-count"), gpu.env.path("foreign"));
    std::fs::write(&foreign, "").unwrap();
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in\n  *--query-compute-apps*)\n    n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 ))\n    echo $n > {count}\n    if [ $n -ge 2 ] && [ -e {foreign} ]; then echo 'GPU-0, 4242'; fi ;;\n  *) cat {gpus} ;;\nesac\n",
        count = count.display(),
        foreign = foreign.display(),
        gpus = gpu.gpus_file.display()
    );
    write_executable(&gpu.env.path("fakebin").join("nvidia-smi"), &script);

    let id = gpu.start_holding(&["--gpus", "1"]);
    let queued = gpu.queued(&id);
    let reason = queued["queue_reason"].as_str().unwrap();
    assert!(reason.contains("(0 free") || reason.contains("taken by another process"), "{queued}");
    assert!(!gpu.stdout(&id).contains("cuda="), "the job never ran on the taken GPU");

    std::fs::remove_file(&foreign).unwrap();
    assert_eq!(gpu_ids(&gpu.running(&id)), [0]);
    gpu.release(&id);
    gpu.wait(&id);
}

#[test]
fn gpu_a_worker_killed_while_holding_a_gpu_gives_it_back_and_its_job_is_lost() {
    let gpu = GpuBox::new(&idle(1));
    let holder = gpu.start(&["--gpus", "1"], "sleep 300");
    let held = gpu.running(&holder);
    let waiting = gpu.start_holding(&["--gpus", "1"]);
    gpu.queued(&waiting);
    let worker = held["worker_pid"].as_i64().unwrap() as i32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(worker).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert_eq!(gpu_ids(&gpu.running(&waiting)), [0]);
    let lost = gpu.status(&holder);
    assert_eq!(lost["state"], "lost", "{lost}");
    let job_pid = held["pid"].as_i64().unwrap() as i32;
    assert!(
        wait_until(Duration::from_secs(10), || !crate::support::alive(job_pid)),
        "its sleep lives on"
    );
    gpu.release(&waiting);
    gpu.wait(&waiting);
}

#[test]
fn gpu_the_queue_is_first_come_first_served() {
    let gpu = GpuBox::new(&idle(2));
    let (a, b) = (gpu.start_holding(&["--gpus", "1"]), gpu.start_holding(&["--gpus", "1"]));
    gpu.running(&a);
    gpu.running(&b);
    let large = gpu.start_holding(&["--gpus", "2"]);
    gpu.queued(&large);
    let small = gpu.start_holding(&["--gpus", "1"]);
    let reason = gpu.queued(&small)["queue_reason"].as_str().unwrap().to_string();
    assert!(reason.contains("1 job ahead"), "{reason}");
    gpu.release(&a);
    gpu.wait(&a);
    // One GPU is free: the earlier large job keeps it from the later small one.
    let large_waits = gpu.until(&large, "the large job sees 1 free", |s| {
        s["queue_reason"].as_str().is_some_and(|r| r.contains("(1 free"))
    });
    assert_eq!(large_waits["state"], "queued");
    gpu.release(&b);
    gpu.wait(&b);
    // The small job holds what it gets until released: had it jumped the queue, the large one
    // would never run on both GPUs.
    assert_eq!(gpu_ids(&gpu.running(&large)), [0, 1]);
    assert_eq!(gpu.status(&small)["state"], "queued", "the small job jumped the queue");
    gpu.release(&large);
    gpu.wait(&large);
    gpu.running(&small);
    gpu.release(&small);
    assert_eq!(gpu.wait(&small)["state"], "succeeded");
}

#[test]
fn gpu_pinned_gpus_wait_for_exactly_those() {
    let gpu = GpuBox::new(&idle(2));
    let on1 = gpu.start_holding(&["--gpu-ids", "1"]);
    assert_eq!(gpu_ids(&gpu.running(&on1)), [1]);
    let pinned = gpu.start_holding(&["--gpu-ids", "1"]);
    let reason = gpu.queued(&pinned)["queue_reason"].as_str().unwrap().to_string();
    assert!(reason.starts_with("waiting for GPU 1"), "{reason}");
    // GPU 0 is free: a later job asking for any GPU takes it, past the pinned one.
    let any = gpu.start_holding(&["--gpus", "1"]);
    assert_eq!(gpu_ids(&gpu.running(&any)), [0]);
    gpu.release(&on1);
    assert_eq!(gpu_ids(&gpu.running(&pinned)), [1]);
    gpu.printed(&pinned, "cuda=1 codexd=1");
    for id in [&on1, &pinned, &any] {
        gpu.release(id);
        gpu.wait(id);
    }
}

#[test]
fn gpu_asks_that_can_never_be_met_are_refused_at_once() {
    let gpu = GpuBox::new(&idle(2));
    let jobs_dir = gpu.env.path("remote-data/jobs");
    let jobs = || std::fs::read_dir(&jobs_dir).map_or(0, |d| d.count());
    for (flags, says) in [
        (&["--gpus", "3"][..], "3 GPUs asked, but this machine has 2"),
        (&["--gpu-ids", "5"][..], "no GPU 5"),
        (&["--gpu-ids", "0,0"][..], "twice"),
        (&["--gpus", "1", "--gpu-ids", "0,1"][..], "disagree"),
        (&["--gpus", "1", "--partition", "p"][..], "--partition"),
    ] {
        let mut args = vec!["exec", "start", "--machine", "gpu"];
        args.extend(flags);
        args.extend(["--cmd", "true"]);
        let e = gpu.env.err(&args, "invalid_argument", 4);
        assert!(e["message"].as_str().unwrap().contains(says), "{flags:?}: {e}");
    }
    assert_eq!(jobs(), 0, "nothing was started");
    // --gpus 0 is today's job: no GPUs, no queue.
    let id = gpu.start(&["--gpus", "0"], "echo cuda=${CUDA_VISIBLE_DEVICES-unset}");
    let end = gpu.wait(&id);
    assert!(end["gpu_ids"].is_null() && end["resources"].is_null(), "{end}");
    assert!(gpu.stdout(&id).contains("cuda=unset"));
    // No nvidia-smi at all.
    std::fs::remove_file(gpu.env.path("fakebin/nvidia-smi")).unwrap();
    // and no answer of it kept from before (codexd keeps one for a second)
    std::fs::remove_file(gpu.env.path("remote-data/gpus/nvidia-smi.json")).unwrap();
    let args = ["exec", "start", "--machine", "gpu", "--gpus", "1", "--cmd", "true"];
    let e = gpu.env.err(&args, "invalid_argument", 4);
    assert!(e["message"].as_str().unwrap().contains("no nvidia-smi"), "{e}");
    assert!(e["hint"].as_str().is_some(), "{e}");
    let check = gpu.env.ok(&["machine", "check", "--machine", "gpu"]);
    assert!(check["gpus"]["error"].as_str().unwrap().contains("nvidia-smi"), "{check}");
}

#[test]
#[ignore = "needs an NVIDIA GPU and its nvidia-smi: run by hand there with --ignored"]
fn gpu_the_real_nvidia_smi_is_read() {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path.split(':').any(|d| Path::new(d).join("nvidia-smi").is_file());
    assert!(found, "no nvidia-smi on PATH: this test is for a machine with an NVIDIA GPU");
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    env.set_config(&format!("machines:\n{}", sshd.machine_yaml("gpu", &env.path("r"), "")));
    let check = env.ok(&["machine", "check", "--machine", "gpu"]);
    let gpus = check["gpus"]["gpus"].as_array().unwrap_or_else(|| panic!("{check}"));
    assert!(!gpus.is_empty(), "nvidia-smi lists no GPU: {check}");
    let v = env.ok(&["exec", "start", "--machine", "gpu", "--gpus", "1", "--cmd", "nvidia-smi -L"]);
    let id = v["exec_id"].as_str().unwrap();
    if gpus.iter().any(|g| g["free"] == true) {
        let end = env.wait("gpu", id);
        assert_eq!(end["state"], "succeeded", "{end}");
        assert_eq!(end["gpu_ids"].as_array().map(Vec::len), Some(1), "{end}");
    } else {
        // Every GPU is busy (other users' work counts): the job waits its turn, and says why.
        let status = env.ok(&["exec", "result", "--machine", "gpu", "--id", id]);
        assert_eq!(status["state"], "queued", "{status}");
        let reason = status["queue_reason"].as_str().unwrap_or_default();
        assert!(reason.contains("waiting for 1 free GPU"), "{status}");
        env.ok(&["exec", "cancel", "--machine", "gpu", "--id", id]);
    }
}

#[tokio::test]
async fn gpu_mcp_starts_a_gpu_job_and_machines_reports_the_gpus() {
    let gpu = GpuBox::new(&idle(1));
    let holder = gpu.start_holding(&["--gpus", "1"]);
    gpu.running(&holder);
    let (client, _) = crate::mcp::connect(&gpu.env).await;
    let dir = gpu.env.dir.path().display().to_string();
    let args = serde_json::json!({"machine": "gpu", "cmd": "true", "cwd": dir,
                                  "resources": {"gpus": 1}});
    let started = crate::mcp::call(&client, "exec_start", args).await;
    let id = started["exec_id"].as_str().unwrap().to_string();
    assert_eq!(gpu.queued(&id)["resources"]["gpus"], 1);
    let machines =
        crate::mcp::call(&client, "machines", serde_json::json!({"machine": "gpu"})).await;
    let report = &machines["machines"][0]["gpus"];
    assert_eq!(report["gpus"][0]["jobs"], serde_json::json!([holder]), "{machines}");
    assert_eq!(report["queued"], 1, "{machines}");
    client.cancel().await.unwrap();
    gpu.release(&holder);
    assert_eq!(gpu.wait(&id)["state"], "succeeded");
}
