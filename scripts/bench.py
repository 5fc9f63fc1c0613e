#!/usr/bin/env python3
"""codex-runner benchmark: every figure is measured in this run, side by side with its baseline.

The machines are noisy, so targets are ratios against a baseline run interleaved with ours (A, B,
A, B, ...), or bounds on a median. Prints one table: figure, measured, target, PASS/FAIL.
Run through `make bench` (scripts/bench.sh installs what it needs and builds the binaries).
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# BENCH_BIN: other binaries (e.g. a copy of an older build, for before/after figures).
BIN = os.environ.get("BENCH_BIN") or os.path.join(ROOT, "target", "release")
REMOTE = os.path.join(BIN, "codex-remote")
CODEXD = os.path.join(BIN, "codexd")
GIB = 1 << 30

WORK = tempfile.mkdtemp(prefix="crbench")
HOME = os.path.join(WORK, "home")
os.makedirs(HOME)
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "XDG_"))}
ENV.update(HOME=HOME, CODEX_REMOTE_CONFIG=os.path.join(WORK, "config.yaml"),
           CODEX_REMOTE_CONTROL_DIR=os.path.join(WORK, "cm"))
RESULTS = []


def record(name, measured, target, ok):
    RESULTS.append((name, measured, target, "PASS" if ok else "FAIL"))
    print(f"  {name}: {measured} (target {target}) {'PASS' if ok else 'FAIL'}", file=sys.stderr)


def run(cmd, stdin_bytes=None, env=None):
    """Runs cmd; returns (seconds, peak RSS KiB of the process and its waited children, stdout)."""
    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin_bytes is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or ENV)
    out, err = p.communicate(stdin_bytes)
    elapsed = time.perf_counter() - start
    # communicate() reaped it; the rusage of our reaped children gives the peak RSS.
    return elapsed, p.returncode, out, err


def peak_rss_kib(cmd, stdin_bytes=None, env=None):
    """Runs cmd under GNU time; returns (seconds, exit code, peak RSS in KiB).

    GNU time forks from a ~1 MiB process: a child forked from this Python process would carry
    Python's own RSS into its high-water mark before exec. The figure includes that ~1 MiB.
    """
    with tempfile.NamedTemporaryFile(mode="r") as out:
        start = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-q", "-f", "%M", "-o", out.name] + cmd, input=stdin_bytes,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env or ENV)
        elapsed = time.perf_counter() - start
        return elapsed, p.returncode, int(out.read().split()[-1])


def ok_json(cmd, env=None):
    _, code, out, err = run(cmd, env=env)
    if code != 0:
        raise SystemExit(f"{cmd} failed ({code}): {out!r} {err!r}")
    return json.loads(out.splitlines()[-1])


def interleaved(a, b, n):
    """Runs a() and b() alternately n times each; returns their median seconds."""
    ta, tb = [], []
    for _ in range(n):
        ta.append(a())
        tb.append(b())
    return statistics.median(ta), statistics.median(tb)


def timed(cmd, stdin_bytes=None, env=None, before=None):
    def go():
        if before:
            before()
        t, code, out, err = run(cmd, stdin_bytes, env)
        if code != 0:
            raise SystemExit(f"{cmd} failed ({code}): {err!r}")
        return t
    return go


def write_config(path, text):
    with open(path, "w") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------
# A stock OpenSSH server on loopback (defaults: MaxSessions 10, MaxStartups 10:30:100).

def host_keys(d):
    """A host key and a client key under `d`, the client's public key authorized."""
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, key)], check=True)
    shutil.copy(os.path.join(d, "client_key.pub"), os.path.join(d, "authorized_keys"))


def server_options(d):
    """The sshd options of a bench server, its keys under `d` (see host_keys)."""
    return f"""HostKey {d}/host_key
AuthorizedKeysFile {d}/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin yes
PrintMotd no
LogLevel ERROR
"""


def client_options(d):
    """The ssh client options of a bench host: this user, the key and known_hosts under `d`."""
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    return f"""  User {user}
  IdentityFile {d}/client_key
  IdentitiesOnly yes
  UserKnownHostsFile {d}/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  LogLevel ERROR
"""


def start_sshd():
    d = os.path.join(WORK, "sshd")
    os.makedirs(d)
    os.makedirs("/run/sshd", exist_ok=True)
    host_keys(d)
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    write_config(os.path.join(d, "sshd_config"), f"""Port {port}
ListenAddress 127.0.0.1
PidFile {d}/sshd.pid
""" + server_options(d))
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", os.path.join(d, "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "log"), "w"))
    with open(os.path.join(d, "host_key.pub")) as f:
        write_config(os.path.join(d, "known_hosts"), f"[127.0.0.1]:{port} {f.read()}")
    cfg = os.path.join(d, "ssh_config")
    write_config(cfg, f"""Host benchhost
  HostName 127.0.0.1
  Port {port}
""" + client_options(d))
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return sshd, cfg
        except OSError:
            time.sleep(0.05)
    raise SystemExit("sshd did not start")


def warm_ssh(ssh_cfg, name):
    """The baseline's `ssh benchhost` prefix (append the remote command): a master connection of
    its own under WORK/name, kept for 10 minutes, as codex-remote keeps its own."""
    control = os.path.join(WORK, name)
    os.makedirs(control, mode=0o700)
    return ["ssh", "-F", ssh_cfg, "-T", "-o", "BatchMode=yes", "-o", "ControlMaster=auto",
            "-o", f"ControlPath={control}/%C", "-o", "ControlPersist=10m", "benchhost"], control


def close_masters(dir_):
    if not os.path.isdir(dir_):
        return
    import stat
    for name in os.listdir(dir_):
        p = os.path.join(dir_, name)
        if stat.S_ISSOCK(os.lstat(p).st_mode):
            subprocess.run(["ssh", "-o", f"ControlPath={p}", "-O", "exit", "x"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 5
    while time.time() < deadline and any(stat.S_ISSOCK(os.lstat(os.path.join(dir_, n)).st_mode)
                                         for n in os.listdir(dir_)):
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------------

def bench_ssh(ssh_cfg):
    print("ssh per-call overhead", file=sys.stderr)
    remote_data = os.path.join(WORK, "remote-data")
    write_config(ENV["CODEX_REMOTE_CONFIG"], f"""machines:
  - name: bench
    ssh: benchhost
    ssh_args: ["-F", "{ssh_cfg}"]
    codexd: {CODEXD}
    data_dir: {remote_data}
""")
    job = ok_json([REMOTE, "exec", "start", "--machine", "bench", "--cmd", "true"])["exec_id"]
    ours = [REMOTE, "exec", "result", "--machine", "bench", "--id", job]
    ssh, base_cm = warm_ssh(ssh_cfg, "cm-base")
    base = ssh + ["true"]
    timed(ours)(), timed(base)()  # warm both masters
    a, b = interleaved(timed(ours), timed(base), 40)
    record("exec result over warm ssh / ssh true (warm)", f"{a*1e3:.1f} ms / {b*1e3:.1f} ms = {a/b:.2f}",
           "<= 1.10", a / b <= 1.10)
    a, b = interleaved(timed(ours, before=lambda: close_masters(ENV["CODEX_REMOTE_CONTROL_DIR"])),
                       timed(base, before=lambda: close_masters(base_cm)), 10)
    record("first exec result (cold) / cold ssh true", f"{a*1e3:.1f} ms / {b*1e3:.1f} ms = {a/b:.2f}",
           "<= 1.10", a / b <= 1.10)
    return remote_data


def bench_local_rpc():
    print("local path", file=sys.stderr)
    write_config(ENV["CODEX_REMOTE_CONFIG"], "machines: []\n")
    job = ok_json([REMOTE, "exec", "start", "--cmd", "true"])["exec_id"]
    line = json.dumps({"type": "exec_status", "exec_id": job}).encode() + b"\n"
    times = [timed([CODEXD, "rpc"], line)() for _ in range(200)]
    rss = [peak_rss_kib([CODEXD, "rpc"], line)[2] for _ in range(20)]
    med = statistics.median(times) * 1e3
    record("codexd rpc exec_status, process start to exit (median of 200)", f"{med:.2f} ms", "<= 3 ms", med <= 3)
    peak = max(rss) / 1024
    record("codexd rpc peak RSS", f"{peak:.1f} MiB", "<= 8 MiB", peak <= 8)


def bench_pueue():
    pueue = shutil.which("pueue")
    pueued = shutil.which("pueued")
    if not (pueue and pueued):
        record("exec start (local) / pueue add", "pueue not installed", "<= 1.0", False)
        return
    print("exec start vs pueue add", file=sys.stderr)
    write_config(ENV["CODEX_REMOTE_CONFIG"], "machines: []\n")
    daemon = subprocess.Popen([pueued], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while run([pueue, "status"])[1] != 0 and time.time() < deadline:
            time.sleep(0.05)
        # The same job on both sides: `true`, started without a login shell. A pause before
        # each start lets the last job (either side's) end first, so neither runs beside it.
        settle = lambda: time.sleep(0.05)  # noqa: E731
        ours = timed([REMOTE, "exec", "start", "--", "true"], before=settle)
        base = timed([pueue, "add", "--", "true"], before=settle)
        ours(), base()
        a, b = interleaved(ours, base, 40)
        record("exec start on local / pueue add (daemon running)",
               f"{a*1e3:.1f} ms / {b*1e3:.1f} ms = {a/b:.2f}", "<= 1.5", a / b <= 1.5)
    finally:
        daemon.terminate()
        daemon.wait()


def bench_throughput():
    print("1 GiB of output", file=sys.stderr)
    argv = ["head", "-c", str(GIB), "/dev/zero"]
    out_file = os.path.join(WORK, "out.bin")
    ratios, worker_peak, worker_anon = [], 0, 0
    last_job = None
    for _ in range(5):
        if last_job:
            run([REMOTE, "exec", "rm", "--id", last_job])
        last_job = ok_json([REMOTE, "exec", "start", "--"] + argv)["exec_id"]
        worker = None
        while worker is None:
            worker = ok_json([REMOTE, "exec", "result", "--id", last_job]).get("worker_pid")
        peak, anon = [0], [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                try:
                    with open(f"/proc/{worker}/status") as f:
                        for l in f:
                            if l.startswith("VmHWM:"):
                                peak[0] = max(peak[0], int(l.split()[1]))
                            elif l.startswith("RssAnon:"):
                                anon[0] = max(anon[0], int(l.split()[1]))
                except OSError:
                    return
                time.sleep(0.01)
        t = threading.Thread(target=sample)
        t.start()
        status = ok_json([REMOTE, "exec", "wait", "--id", last_job])
        done.set()
        t.join()
        worker_peak = max(worker_peak, peak[0])
        worker_anon = max(worker_anon, anon[0])
        # The job's own run time (spawn to recorded end) against the same command's.
        ours = status["duration_ms"] / 1e3
        base, code, _, _ = run(["sh", "-c", f'exec {" ".join(argv)} > {out_file}'])
        os.unlink(out_file)
        ratios.append(ours / base)
    r = statistics.median(ratios)
    # The worker samples the logs' sizes into the job's time index meanwhile (jobs/timeline.rs).
    record("job writing 1 GiB to its log (time index on) / same command > file", f"{r:.3f}", "<= 1.05",
           r <= 1.05)
    record("worker peak RSS while the job writes 1 GiB", f"{worker_peak/1024:.1f} MiB", "<= 4 MiB",
           worker_peak <= 4096)
    # Its own memory, apart from the pages of the codexd binary and libc it maps (shared, file-backed).
    record("worker peak anonymous RSS while the job writes 1 GiB", f"{worker_anon} KiB", "<= 1024 KiB",
           worker_anon <= 1024)
    return last_job


def bench_tail(big_job):
    # codex-remote's RSS: its codexd child is measured on its own below.
    print("tail of a 1 GiB log", file=sys.stderr)
    small = ok_json([REMOTE, "exec", "start", "--cmd", "head -c 1024 /dev/zero"])["exec_id"]
    ok_json([REMOTE, "exec", "wait", "--id", small])
    big_cmd = [REMOTE, "exec", "logs", "--id", big_job, "--tail", "2000"]
    small_cmd = [REMOTE, "exec", "logs", "--id", small, "--tail", "2000"]
    tb, _ = interleaved(timed(big_cmd), timed(small_cmd), 30)
    rb = [peak_rss_kib(big_cmd)[2] for _ in range(10)]
    rs = [peak_rss_kib(small_cmd)[2] for _ in range(10)]
    med = tb * 1e3
    record("exec logs --tail 2000 on a 1 GiB log (median)", f"{med:.2f} ms", "<= 10 ms", med <= 10)
    big_rss, small_rss = max(rb), max(rs)
    line = lambda j: json.dumps({"type": "exec_logs", "exec_id": j, "tail": 2000}).encode() + b"\n"
    d_big = max(peak_rss_kib([CODEXD, "rpc"], line(big_job))[2] for _ in range(10))
    d_small = max(peak_rss_kib([CODEXD, "rpc"], line(small))[2] for _ in range(10))
    ok = big_rss <= small_rss + 256 and d_big <= d_small + 256
    record("peak RSS, tail of 1 GiB vs 1 KiB log (codex-remote; codexd)",
           f"{big_rss}/{small_rss} KiB; {d_big}/{d_small} KiB", "equal within 256 KiB", ok)


def bench_since(big_job):
    """`exec logs --since 10m` on a 1 GiB log whose time index spans 30 days (one record a second,
    the worst the worker writes: 2.6 M records), so the lookup's O(log n) is what is measured."""
    print("--since 10m on a 1 GiB log with a 30-day index", file=sys.stderr)
    times = os.path.join(HOME, ".codexd", "jobs", big_job, "times")
    now_ms = int(time.time() * 1000)
    n = 30 * 24 * 3600
    start_ms = now_ms - n * 1000
    # Records as the worker writes them: <u64 ms, u64 stdout size, u64 stderr size>, little-endian.
    import array
    rec = array.array("Q", bytes(24 * n))
    for i in range(n):
        rec[3 * i] = start_ms + i * 1000
        rec[3 * i + 1] = GIB * (i + 1) // n
    if sys.byteorder != "little":
        rec.byteswap()
    with open(times, "wb") as f:
        rec.tofile(f)
    since = [REMOTE, "exec", "logs", "--id", big_job, "--since", "10m", "--max-bytes", "4096"]
    # The page starts where the log stood 10 minutes ago (a few records later: time passes).
    _, _, out, _ = run(since)
    first = json.loads(out.splitlines()[0])["offset"]
    expect = GIB * (n - 600) // n
    per_record = GIB // n
    if not expect <= first <= expect + 60 * per_record:
        raise SystemExit(f"--since 10m began at {first}, expected about {expect}")
    offset = [REMOTE, "exec", "logs", "--id", big_job, "--offset", str(first), "--max-bytes", "4096"]
    ts, to = interleaved(timed(since), timed(offset), 30)
    record("exec logs --since 10m, 1 GiB log, 30-day index (median)", f"{ts*1e3:.2f} ms", "<= 20 ms",
           ts * 1e3 <= 20)
    record("  the same page by --offset (median), for scale", f"{to*1e3:.2f} ms", "-", True)


def fabricate_store(path, n):
    """n finished jobs, written as codexd writes them, with time-ordered v7 ids."""
    jobs = os.path.join(path, "jobs")
    os.makedirs(jobs, mode=0o700)
    os.makedirs(os.path.join(path, "keys"), mode=0o700)
    base_ms = int(time.time() * 1000) - n
    ids = []
    for i in range(n):
        ms = base_ms + i
        rand = int.from_bytes(os.urandom(10), "big")
        value = (ms << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62) | (rand & ((1 << 62) - 1))
        jid = str(uuid.UUID(int=value))
        ids.append(jid)
        d = os.path.join(jobs, jid)
        os.mkdir(d, 0o700)
        status = {"exec_id": jid, "status": "finished", "state": "succeeded", "cmd": "true", "cwd": HOME,
                  "pid": 1, "started_at": "2026-11-24T15:42:36.613Z",
                  "finished_at": "2026-11-24T15:42:36.617Z", "exit_code": 0, "signal": None,
                  "duration_ms": 4, "error": None, "created_at": "2026-11-24T15:42:36.609Z"}
        with open(os.path.join(d, "status.json"), "w") as f:
            json.dump(status, f)
        for log in ("stdout.log", "stderr.log"):
            open(os.path.join(d, log), "w").close()
    return ids


def bench_many_jobs():
    print("10,000 stored jobs", file=sys.stderr)
    cfgs = {}
    for n in (10, 10000):
        data = os.path.join(WORK, f"store{n}")
        ids = fabricate_store(data, n)
        cfg = os.path.join(WORK, f"config{n}.yaml")
        write_config(cfg, f"machines:\n  - name: local\n    data_dir: {data}\n")
        env = dict(ENV, CODEX_REMOTE_CONFIG=cfg)
        cfgs[n] = (env, ids[len(ids) // 2])
    a = timed([REMOTE, "exec", "result", "--id", cfgs[10000][1]], env=cfgs[10000][0])
    b = timed([REMOTE, "exec", "result", "--id", cfgs[10][1]], env=cfgs[10][0])
    ta, tb = interleaved(a, b, 40)
    record("exec result among 10,000 jobs / among 10", f"{ta*1e3:.2f} ms / {tb*1e3:.2f} ms = {ta/tb:.2f}",
           "<= 1.2", ta / tb <= 1.2)
    times = [timed([REMOTE, "exec", "list", "--limit", "50"], env=cfgs[10000][0])() for _ in range(15)]
    med = statistics.median(times) * 1e3
    record("exec list --limit 50 over 10,000 jobs (median)", f"{med:.1f} ms", "<= 200 ms", med <= 200)


def bench_gpu_queue(n=20):
    """Time from a GPU freed (the job's last act: printing the time) to the next queued job
    started (its recorded started_at): n+1 jobs on one GPU of a fake nvidia-smi, started at once."""
    print("GPU queue hand-over", file=sys.stderr)
    fake = os.path.join(WORK, "fake-gpu")
    os.makedirs(fake, exist_ok=True)
    with open(os.path.join(fake, "gpus.csv"), "w") as f:
        f.write("0, GPU-0, Fake GPU, 0, 16384, 0\n")
    smi = os.path.join(fake, "nvidia-smi")
    with open(smi, "w") as f:
        f.write(f'#!/bin/sh\ncase "$*" in *compute-apps*) ;; *) cat {fake}/gpus.csv ;; esac\n')
    os.chmod(smi, 0o755)
    data = os.path.join(WORK, "gpu-store")
    cfg = os.path.join(WORK, "gpu-config.yaml")
    write_config(cfg, f"machines:\n  - name: local\n    data_dir: {data}\n")
    env = dict(ENV, CODEX_REMOTE_CONFIG=cfg, PATH=fake + ":" + ENV.get("PATH", ""))
    ids = [ok_json([REMOTE, "exec", "start", "--gpus", "1", "--cmd", "sleep 0.2; date +%s%N"],
                   env=env)["exec_id"] for _ in range(n + 1)]
    ends = [ok_json([REMOTE, "exec", "wait", "--id", i, "--timeout", "120s"], env=env) for i in ids]
    freed, started = {}, {}
    for job in ends:
        _, _, out, _ = run([REMOTE, "exec", "logs", "--id", job["exec_id"], "--since", "0"], env=env)
        lines = [json.loads(l) for l in out.splitlines() if l.strip()]
        freed[job["exec_id"]] = int([l["line"] for l in lines if l.get("type") == "log"][-1]) / 1e9
        started[job["exec_id"]] = rfc3339_seconds(job["started_at"])
    order = sorted(ids, key=lambda i: started[i])
    gaps = sorted((started[b] - freed[a]) * 1e3 for a, b in zip(order, order[1:]))
    p95 = gaps[max(0, int(len(gaps) * 0.95) - 1)]
    ok = all(e["state"] == "succeeded" for e in ends) and p95 <= 1500
    record(f"GPU freed -> next queued job started, p95 of {len(gaps)} hand-overs (median {statistics.median(gaps):.0f} ms)",
           f"{p95:.0f} ms", "<= 1500 ms", ok)


def rfc3339_seconds(text):
    """Seconds since the epoch of codexd's `2026-11-24T15:42:36.613Z`."""
    import calendar
    whole, _, frac = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + (frac or "0"))


def follow_latency(machine):
    p95, _, n = follow_latency_stats(machine)
    return p95, n


def follow_latency_stats(machine):
    """A job writing its clock every 50 ms, followed: (p95, median, lines) of written -> read ms."""
    job = ok_json([REMOTE, "exec", "start", "--machine", machine, "--cmd",
                   "sleep 1; for i in $(seq 60); do date +%s%N; sleep 0.05; done"])["exec_id"]
    p = subprocess.Popen([REMOTE, "exec", "logs", "--machine", machine, "--id", job, "--since", "0",
                          "--follow"], stdout=subprocess.PIPE, env=ENV)
    lat = []
    for raw in p.stdout:
        now = time.time_ns()
        ev = json.loads(raw)
        if ev.get("type") == "log":
            lat.append((now - int(ev["line"])) / 1e6)
    p.wait()
    lat.sort()
    return lat[int(len(lat) * 0.95) - 1], statistics.median(lat), len(lat)


def tail_f_latency(ssh, path, n=60):
    """The anchor of follow_latency_stats: `ssh host tail -f` of a file this process appends its
    clock to every 50 ms (the lab shares this file system). Returns (p95, median) in ms."""
    with open(path, "w"):
        pass
    p = subprocess.Popen(ssh + ["tail", "-n", "0", "-F", path], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=ENV)
    ready = threading.Event()

    def write():
        with open(path, "a") as f:
            while not ready.is_set():  # until tail shows a line, it may not be watching yet
                f.write("ready\n")
                f.flush()
                time.sleep(0.05)
            for _ in range(n):
                f.write(f"{time.time_ns()}\n")
                f.flush()
                time.sleep(0.05)
    writer = threading.Thread(target=write)
    writer.start()
    lat = []
    for raw in p.stdout:
        now = time.time_ns()
        line = raw.strip()
        if line == b"ready":
            ready.set()
            continue
        lat.append((now - int(line)) / 1e6)
        if len(lat) == n:
            break
    p.kill()
    p.wait()
    writer.join()
    lat.sort()
    return lat[int(len(lat) * 0.95) - 1], statistics.median(lat)


def bench_follow(ssh_machine):
    print("follow latency", file=sys.stderr)
    write_config(ENV["CODEX_REMOTE_CONFIG"], "machines: []\n")
    p95, n = follow_latency("local")
    record(f"exec logs --follow latency on local, p95 of {n} lines", f"{p95:.0f} ms", "<= 200 ms", p95 <= 200)
    if ssh_machine:
        write_config(ENV["CODEX_REMOTE_CONFIG"], ssh_machine)
        p95, n = follow_latency("bench")
        record(f"exec logs --follow latency over ssh, p95 of {n} lines", f"{p95:.0f} ms", "<= 200 ms",
               p95 <= 200)


def bench_burst(ssh_machine):
    print("200 parallel starts", file=sys.stderr)
    write_config(ENV["CODEX_REMOTE_CONFIG"], ssh_machine)
    close_masters(ENV["CODEX_REMOTE_CONTROL_DIR"])
    script = (f'for i in $(seq 200); do "{REMOTE}" exec start --machine bench --idempotency-key burst-$i '
              f'--cmd true >/dev/null 2>>"{WORK}/burst.err" & done; fails=0; '
              f'for j in $(jobs -p); do wait $j || fails=$((fails+1)); done; echo $fails')
    start = time.perf_counter()
    _, _, out, _ = run(["bash", "-c", script])
    elapsed = time.perf_counter() - start
    fails = int(out.strip() or 999)
    jobs = ok_json([REMOTE, "exec", "list", "--machine", "bench", "--limit", "100000"])["jobs"]
    keys = [j.get("idempotency_key", "") for j in jobs if j.get("idempotency_key", "").startswith("burst-")]
    ok = fails == 0 and len(keys) == 200 and len(set(keys)) == 200
    record("200 parallel exec start over ssh (stock sshd)",
           f"{200-fails}/200 ok, {len(set(keys))} jobs ({len(keys)} records), {elapsed:.1f} s",
           "200 ok, each job once", ok)


class Mcp:
    """`codex-remote mcp` driven by JSON-RPC lines, one call at a time."""

    def __init__(self, machine, env=None, capabilities=None):
        self.machine = machine
        self.p = subprocess.Popen([REMOTE, "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, env=env or ENV)
        self.ids = iter(range(1, 1 << 30))
        self.notes = []
        self.rpc("initialize", {"protocolVersion": "2025-11-25", "capabilities": capabilities or {},
                                "clientInfo": {"name": "bench", "version": "1"}})
        self.p.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')

    def rpc(self, method, params):
        """Returns the result and the size of its line."""
        n = next(self.ids)
        self.p.stdin.write((json.dumps({"jsonrpc": "2.0", "id": n, "method": method,
                                        "params": params}) + "\n").encode())
        self.p.stdin.flush()
        while True:
            line = self.p.stdout.readline()
            msg = json.loads(line)
            if msg.get("id") == n:
                if "result" not in msg:
                    raise SystemExit(f"{method}: {msg}")
                return msg["result"], len(line)
            if msg.get("method") == "notifications/resources/updated":
                self.notes.append(msg["params"]["uri"])

    def wait_notification(self, uri, timeout):
        """Reads until a `notifications/resources/updated` of `uri` (or one already read)."""
        deadline = time.time() + timeout
        while uri not in self.notes:
            if time.time() > deadline:
                raise SystemExit(f"no notification for {uri}")
            msg = json.loads(self.p.stdout.readline())
            if msg.get("method") == "notifications/resources/updated":
                self.notes.append(msg["params"]["uri"])
        self.notes.remove(uri)

    def tool(self, name, args):
        return self.rpc("tools/call", {"name": name, "arguments": dict(args, machine=self.machine)})

    def timed_status(self, job):
        """A timer of one `exec_status` call of job `job` (for `interleaved`)."""
        def go():
            start = time.perf_counter()
            result, _ = self.tool("exec_status", {"exec_id": job})
            if result.get("isError"):
                raise SystemExit(f"exec_status failed: {result}")
            return time.perf_counter() - start
        return go

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=10)


def bench_mcp_log_answer():
    """Bytes of `exec_logs` answer per byte of a plain text log, paged with the defaults."""
    print("MCP log answer", file=sys.stderr)
    mcp = Mcp("local")
    tool = mcp.tool

    try:
        cmd = "seq 1 20000 | awk '{printf \"step %d loss %.4f lr 0.0003\\n\", $1, 100/$1}'"
        started, _ = tool("exec_start", {"cmd": cmd})
        exec_id = started["structuredContent"]["exec_id"]
        tool("exec_wait", {"exec_id": exec_id, "timeout_seconds": 60})
        log = content = whole = 0
        since = 0
        while True:
            page, size = tool("exec_logs", {"exec_id": exec_id, "since_stdout": since,
                                            "since_stderr": 0})
            data = page["structuredContent"]
            log += len(data.get("stdout", {}).get("text", "").encode())
            content += sum(len(c["text"].encode()) for c in page["content"])
            whole += size
            since = data["next_offset"]["stdout"]
            if not data["more"]:
                break
    finally:
        mcp.close()
    text_ratio, whole_ratio = content / log, whole / log
    record("MCP log answer: content text per byte of log", f"{text_ratio:.3f} ({log} B of log)",
           "<= 1.3 (before: 2.45 on this log)", text_ratio <= 1.3)
    record("MCP log answer: whole JSON-RPC message per byte of log", f"{whole_ratio:.3f}",
           "<= 2.5 (before: 5.2; text + exact structured data)", whole_ratio <= 2.5)


# ---------------------------------------------------------------------------------------------
# Agents on the current MCP revision (issue 28): the terminal view, job-end notifications, tasks.

TQDM_MB = 50


def tqdm_job():
    """A finished local job whose stderr is a 50 MB tqdm-style log (`\r` updates with ANSI colour,
    a newline now and then) and whose stdout has a few lines; returns its id."""
    script = (
        "import sys\n"
        "w = sys.stderr.buffer\n"
        "n = 0\n"
        f"while n < {TQDM_MB} << 20:\n"
        "    for i in range(0, 10000, 7):\n"
        "        b = b'\\r\\x1b[32m%3d%%|%-30s| %d/10000 [00:10<00:12, 450.1it/s]\\x1b[0m' % (i // 100, b'#' * (i // 334), i)\n"
        "        w.write(b)\n"
        "        n += len(b)\n"
        "    w.write(b'\\nepoch done\\n')\n"
        "print('training started'); print('last stdout line')\n"
    )
    path = os.path.join(WORK, "tqdm.py")
    write_config(path, script)
    job = ok_json([REMOTE, "exec", "start", "--", "python3", path])["exec_id"]
    ok_json([REMOTE, "exec", "wait", "--id", job, "--timeout", "300s"])
    return job


def rpc_server_ms(lines, n=15):
    """Median time of `codexd rpc` answering `lines`, minus that of an empty request stream."""
    full = statistics.median(timed([CODEXD, "rpc"], lines)() for _ in range(n))
    empty = statistics.median(timed([CODEXD, "rpc"], b"")() for _ in range(n))
    return (full - empty) * 1e3


def bench_terminal_view():
    print("terminal view", file=sys.stderr)
    write_config(ENV["CODEX_REMOTE_CONFIG"], "machines: []\n")
    job = tqdm_job()
    req = {"type": "exec_logs", "exec_id": job, "tail_lines": 20, "view": "terminal"}
    line = json.dumps(req).encode() + b"\n"
    _, _, out, _ = run([CODEXD, "rpc"], line)
    ms = rpc_server_ms(line)
    record(f"exec_logs tail_lines=20 terminal view of a {TQDM_MB} MB tqdm log: answer / codexd time",
           f"{len(out)} B / {ms:.2f} ms", "<= 4096 B, <= 20 ms", len(out) <= 4096 and ms <= 20)
    cli = [REMOTE, "exec", "logs", "--id", job, "--tail-lines", "20", "--view", "terminal"]
    _, _, out, _ = run(cli)
    base = [REMOTE, "exec", "result", "--id", job]
    a, b = interleaved(timed(cli), timed(base), 15)
    record("the same through the CLI: output / time beyond `exec result`",
           f"{len(out)} B / {(a - b) * 1e3:.2f} ms", "<= 4096 B, <= 20 ms",
           len(out) <= 4096 and (a - b) * 1e3 <= 20)
    # Each status carries the last line of each stream (and a failed job's traceback).
    plain = ok_json([REMOTE, "exec", "start", "--cmd", "true"])["exec_id"]
    ok_json([REMOTE, "exec", "wait", "--id", plain])
    n = 200
    status = lambda j: (json.dumps({"type": "exec_status", "exec_id": j}) + "\n").encode() * n
    cost = (rpc_server_ms(status(job), 7) - rpc_server_ms(status(plain), 7)) / n * 1e3
    record(f"exec_status of the {TQDM_MB} MB tqdm job: cost of its last lines, per status",
           f"{cost:.0f} us (before: ~180 us)", "<= 60 us", cost <= 60)


def held_jobs_mcp(ssh_cfg, capabilities=None):
    """An `Mcp` on machine `sess` over ssh (config of `session_machine`)."""
    session_machine(ssh_cfg)
    return Mcp("sess", capabilities=capabilities)


def bench_notifications(ssh_cfg, n=20):
    print("MCP job-end notifications", file=sys.stderr)
    mcp = held_jobs_mcp(ssh_cfg)
    lat = []
    try:
        for i in range(n):
            go, ready = os.path.join(WORK, f"go-{i}"), os.path.join(WORK, f"ready-{i}")
            cmd = f"touch {ready}; while [ ! -e {go} ]; do sleep 0.02; done"
            started, _ = mcp.tool("exec_start", {"cmd": cmd})
            uri = f"codex-remote://sess/jobs/{started['structuredContent']['exec_id']}"
            mcp.rpc("resources/subscribe", {"uri": uri})
            deadline = time.time() + 30
            while not os.path.exists(ready) and time.time() < deadline:
                time.sleep(0.005)
            t0 = time.perf_counter()
            open(go, "w").close()
            # The job sees the file within 20 ms; the rest is the watcher and the notification.
            mcp.wait_notification(uri, 30)
            lat.append(time.perf_counter() - t0)
            mcp.rpc("resources/unsubscribe", {"uri": uri})
    finally:
        mcp.close()
    lat.sort()
    p95 = lat[int(0.95 * (len(lat) - 1))]
    record(f"job end → subscribed MCP client's notification over ssh, p95 of {n}",
           f"{p95:.3f} s (median {statistics.median(lat):.3f} s)", "<= 1.0 s", p95 <= 1.0)


def bench_tasks_get(ssh_cfg):
    print("MCP tasks/get", file=sys.stderr)
    mcp = held_jobs_mcp(ssh_cfg, {"extensions": {"io.modelcontextprotocol/tasks": {}}})
    ssh, base_cm = warm_ssh(ssh_cfg, "cm-tasks")
    base = ssh + ["true"]
    try:
        started, _ = mcp.tool("exec_start", {"cmd": "echo working; sleep 600"})
        task = f"sess/{started['structuredContent']['exec_id']}"

        def get():
            t = time.perf_counter()
            result, _ = mcp.rpc("tasks/get", {"taskId": task})
            if result.get("status") != "working":
                raise SystemExit(f"tasks/get: {result}")
            return time.perf_counter() - t
        get(), timed(base)()
        a, b = interleaved(get, timed(base), 40)
        mcp.tool("exec_cancel", {"exec_id": started["structuredContent"]["exec_id"]})
    finally:
        mcp.close()
        close_masters(base_cm)
    record("MCP tasks/get over ssh, per call in one session / warm ssh host true",
           f"{a*1e3:.2f} ms / {b*1e3:.1f} ms = {a/b:.3f}", "<= 0.05", a / b <= 0.05)


def bench_agents(ssh_cfg):
    """BENCH_ONLY=agents: the rows of issue 28."""
    only = os.environ.get("BENCH_AGENTS", "view,notify,tasks").split(",")
    if "view" in only:
        bench_terminal_view()
    if "notify" in only:
        bench_notifications(ssh_cfg)
    if "tasks" in only:
        bench_tasks_get(ssh_cfg)


# ---------------------------------------------------------------------------------------------
# Shared sessions of long-lived clients (issue 17): one `codexd rpc` per machine.

def session_machine(ssh_cfg):
    """Machine `sess` over ssh, its codexd behind a wrapper that logs each `codexd rpc` start
    (every ssh session a client opens runs one); returns the log's path."""
    starts = os.path.join(WORK, "rpc-starts")
    wrapper = os.path.join(WORK, "codexd-counted")
    write_config(wrapper, f'#!/bin/sh\n[ "$1" = rpc ] && echo $$ >> {starts}\nexec {CODEXD} "$@"\n')
    os.chmod(wrapper, 0o755)
    write_config(ENV["CODEX_REMOTE_CONFIG"], f"""machines:
  - name: sess
    ssh: benchhost
    ssh_args: ["-F", "{ssh_cfg}"]
    codexd: {wrapper}
    data_dir: {os.path.join(WORK, "remote-sessions")}
""")
    return starts


def rpc_starts(path):
    return sum(1 for _ in open(path)) if os.path.exists(path) else 0


def dashboard_sessions(starts, job, window, env):
    """New `codexd rpc` sessions while a dashboard has one job page open for `window` s."""
    p = subprocess.Popen([REMOTE, "dashboard", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=env)
    try:
        url = json.loads(p.stdout.readline())["url"]
        host = url.split("//")[1].split("/")[0]
        token = url.split("token=")[1]
        before = rpc_starts(starts)
        import socket
        page = socket.create_connection(tuple([host.split(":")[0], int(host.split(":")[1])]))
        page.sendall((f"GET /api/jobs/sess/{job}/logs HTTP/1.0\r\nHost: {host}\r\n"
                      f"Authorization: Bearer {token}\r\n\r\n").encode())
        page.settimeout(1)
        end = time.time() + window
        statuses = 0
        while time.time() < end:
            try:
                statuses += page.recv(65536).count(b"event: status")
            except socket.timeout:
                pass
        page.close()
        if statuses < window:
            raise SystemExit(f"the page got {statuses} reads in {window} s")
        return rpc_starts(starts) - before
    finally:
        p.terminate()
        p.wait(timeout=10)


def bench_sessions(ssh_cfg):
    print("shared sessions (MCP, dashboard)", file=sys.stderr)
    starts = session_machine(ssh_cfg)
    job = ok_json([REMOTE, "exec", "start", "--machine", "sess", "--cmd",
                   "while true; do echo tick; sleep 1; done"])["exec_id"]
    ssh, base_cm = warm_ssh(ssh_cfg, "cm-sessions")
    base = ssh + ["true"]
    mcp = Mcp("sess")
    try:
        status = mcp.timed_status(job)
        status(), timed(base)()  # the session and the master are open
        a, b = interleaved(status, timed(base), 40)
    finally:
        mcp.close()
        close_masters(base_cm)
    record("MCP exec_status over ssh, per call in one session / warm ssh host true",
           f"{a*1e3:.2f} ms / {b*1e3:.1f} ms = {a/b:.3f}", "<= 0.10", a / b <= 0.10)

    window, before_window = 60, 10
    opened = dashboard_sessions(starts, job, window, ENV)
    # The same page without sessions, over a shorter window, scaled to 60 s.
    off = dict(ENV, CODEX_REMOTE_SESSION_IDLE_SECS="0")
    per_read = dashboard_sessions(starts, job, before_window, off) * window // before_window
    record(f"dashboard, one job page open {window} s: new ssh sessions",
           f"{opened} (without sessions: {per_read}, from {before_window} s scaled)", "<= 2", opened <= 2)
    ok_json([REMOTE, "exec", "cancel", "--machine", "sess", "--id", job])


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def original_tool():
    """The original Go tool's `codexd` and `codex-remote`, from ORIGINAL_TOOL_DIR (built by hand
    from its repository: nothing of it is in this one), or None."""
    d = os.environ.get("ORIGINAL_TOOL_DIR", "")
    bins = [os.path.join(d, n) for n in ("codexd", "codex-remote")]
    return bins if d and all(os.access(b, os.X_OK) for b in bins) else None


def bench_addr_mcp():
    """An agent's status call on an `addr` machine: MCP `exec_status` (one long-lived
    `codex-remote mcp`, HTTP to `codexd serve`) against the original tool's `exec result`
    (a process per call, HTTP to its own `codexd serve`), interleaved."""
    name = "MCP exec_status over addr / the original tool's exec result over addr"
    tool = original_tool()
    if not tool:
        record(name, "not measured: set ORIGINAL_TOOL_DIR to the original tool's binaries", "<= 1.0", False)
        return
    print("MCP over addr vs the original tool", file=sys.stderr)
    orig_codexd, orig_remote = tool
    data = os.path.join(WORK, "addr-data")
    serve = subprocess.Popen([CODEXD, "serve", "--listen", "127.0.0.1:0", "--data-dir", data],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV)
    orig_home = os.path.join(WORK, "orig-home")
    os.makedirs(orig_home)
    orig_env = dict(ENV, HOME=orig_home)
    port = free_port()
    orig_cfg, orig_client = os.path.join(WORK, "orig-codexd.yaml"), os.path.join(WORK, "orig-remote.yaml")
    write_config(orig_cfg, f"listen: 127.0.0.1:{port}\ndata_dir: {os.path.join(WORK, 'orig-data')}\n")
    write_config(orig_client, f"machines:\n  - name: gpu\n    addr: http://127.0.0.1:{port}\n")
    orig = subprocess.Popen([orig_codexd, "serve", "--config", orig_cfg], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=orig_env)
    mcp = None
    try:
        addr = json.loads(serve.stdout.readline())["listen"]
        token = ok_json([CODEXD, "token", "--data-dir", data])["token"]
        write_config(ENV["CODEX_REMOTE_CONFIG"],
                     f"machines:\n  - name: gpu\n    addr: {addr}\n    token: {token}\n")
        theirs_cmd = [orig_remote, "exec", "start", "--config", orig_client, "--machine", "gpu",
                      "--cmd", "true"]
        deadline = time.time() + 10
        while run(theirs_cmd, env=orig_env)[1] != 0:
            if time.time() > deadline:
                raise SystemExit("the original codexd serve did not answer")
            time.sleep(0.05)
        theirs_job = ok_json(theirs_cmd, env=orig_env)["exec_id"]
        theirs = timed([orig_remote, "exec", "result", "--config", orig_client, "--machine", "gpu",
                        "--id", theirs_job], env=orig_env)
        mcp = Mcp("gpu")
        started, _ = mcp.tool("exec_start", {"cmd": "true"})
        job = started["structuredContent"]["exec_id"]
        mcp.tool("exec_wait", {"exec_id": job, "timeout_seconds": 30})
        ours = mcp.timed_status(job)
        ours(), theirs()
        a, b = interleaved(ours, theirs, 100)
        record(name, f"{a*1e3:.2f} ms / {b*1e3:.2f} ms = {a/b:.2f}", "<= 1.0", a / b <= 1.0)
    finally:
        if mcp:
            mcp.close()
        for p in (serve, orig):
            p.terminate()
            p.wait(timeout=10)


# ---------------------------------------------------------------------------------------------
# Files and sync, side by side with rsync 3.x and `ssh host 'cat > f'` through the very same
# ControlMaster connection that codex-remote uses.

def make_tree(root, n_files, sizes, seed=1):
    """n_files files in directories of 100, sizes cycling through `sizes`."""
    import random
    rnd = random.Random(seed)
    for i in range(n_files):
        d = os.path.join(root, f"d{i // 100:04d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:06d}.txt"), "wb") as f:
            f.write(rnd.randbytes(sizes[i % len(sizes)]))


def master_socket():
    d = ENV["CODEX_REMOTE_CONTROL_DIR"]
    import stat
    socks = [os.path.join(d, n) for n in os.listdir(d) if stat.S_ISSOCK(os.lstat(os.path.join(d, n)).st_mode)]
    if not socks:
        raise SystemExit("no ControlMaster socket after a codex-remote call")
    return socks[0]


def gnu_time_kib(path):
    with open(path) as f:
        return int(f.read().split()[-1])


def bench_sync(ssh_cfg):
    print("sync and file write vs rsync and ssh cat", file=sys.stderr)
    if not shutil.which("rsync"):
        record("sync figures", "rsync not installed", "rsync 3.x", False)
        return
    remote_data = os.path.join(WORK, "remote-data")
    mem = os.path.join(WORK, "codexd-rss")
    write_config(ENV["CODEX_REMOTE_CONFIG"], f"""machines:
  - name: bench
    ssh: benchhost
    ssh_args: ["-F", "{ssh_cfg}"]
    codexd: {CODEXD}
    data_dir: {remote_data}
  - name: benchmem
    ssh: benchhost
    ssh_args: ["-F", "{ssh_cfg}"]
    codexd: /usr/bin/time -q -f %M -o {mem} {CODEXD}
    data_dir: {remote_data}
""")
    ok_json([REMOTE, "exec", "list", "--machine", "bench", "--limit", "1"])  # the master is up
    sock = master_socket()
    ssh = f"ssh -F {ssh_cfg} -o ControlMaster=no -o ControlPath={sock}"
    tree = os.path.join(WORK, "tree20k")
    make_tree(tree, 20000, [200, 1000, 4000, 150])
    big = os.path.join(tree, "d0000", "big.bin")
    with open(big, "wb") as f:
        f.write(os.urandom(1 << 20))
    ours_dst, theirs_dst = os.path.join(WORK, "dst-ours"), os.path.join(WORK, "dst-rsync")
    push = [REMOTE, "sync", "push", "--machine", "bench", "--src", tree, "--dst", ours_dst]
    rsync = ["rsync", "-a", "-e", ssh, tree + "/", f"benchhost:{theirs_dst}/"]
    timed(push)(), timed(rsync)()
    a, b = interleaved(timed(push), timed(rsync), 7)
    record("sync push, nothing changed, 20,000 files / rsync -a", f"{a*1e3:.0f} ms / {b*1e3:.0f} ms = {a/b:.2f}",
           "<= 1.0", a / b <= 1.0)

    def touch_big():
        with open(big, "wb") as f:
            f.write(os.urandom(1 << 20))
    a, b = interleaved(timed(push, before=touch_big), timed(rsync, before=touch_big), 7)
    record("sync push, one 1 MiB file changed in 20,000 / rsync -a",
           f"{a*1e3:.0f} ms / {b*1e3:.0f} ms = {a/b:.2f}", "<= 1.0", a / b <= 1.0)

    # Memory per 10k files: the same no-change push of 20,000 and of 2,000 files, both sides.
    small = os.path.join(WORK, "tree2k")
    make_tree(small, 2000, [200, 1000, 4000, 150])
    rss = {}
    for name, src in (("20k", tree), ("2k", small)):
        cmd = [REMOTE, "sync", "push", "--machine", "benchmem", "--src", src, "--dst", os.path.join(WORK, "mem-" + name)]
        run(cmd)
        _, _, client = peak_rss_kib(cmd)
        rss[name] = (client, gnu_time_kib(mem))
    per10k = [(rss["20k"][i] - rss["2k"][i]) / 1.8 / 1024 for i in range(2)]
    record("peak RSS of a no-change push, 20,000 / 2,000 files (codex-remote; codexd)",
           f"{rss['20k'][0]/1024:.1f}/{rss['2k'][0]/1024:.1f} MiB; {rss['20k'][1]/1024:.1f}/{rss['2k'][1]/1024:.1f} MiB "
           f"= {per10k[0]:.1f}; {per10k[1]:.1f} MiB per 10k files", "manifest only (< 8 MiB per 10k)",
           max(per10k) < 8)

    mixed = os.path.join(WORK, "tree200m")
    make_tree(mixed, 880, [4 << 20] * 1 + [64 << 10] * 21, seed=2)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(mixed) for f in fs)
    first_ours, first_theirs = os.path.join(WORK, "first-ours"), os.path.join(WORK, "first-rsync")
    push = [REMOTE, "sync", "push", "--machine", "bench", "--src", mixed, "--dst", first_ours]
    rsync = ["rsync", "-a", "-e", ssh, mixed + "/", f"benchhost:{first_theirs}/"]
    a, b = interleaved(timed(push, before=lambda: shutil.rmtree(first_ours, ignore_errors=True)),
                       timed(rsync, before=lambda: shutil.rmtree(first_theirs, ignore_errors=True)), 3)
    record(f"first sync push of {size/2**20:.0f} MiB (mixed sizes) / rsync -a",
           f"{a*1e3:.0f} ms / {b*1e3:.0f} ms = {a/b:.2f}", "<= 1.2", a / b <= 1.2)

    one = os.path.join(WORK, "one.bin")
    with open(one, "wb") as f:
        f.write(os.urandom(1 << 20))
    with open(one, "rb") as f:
        payload = f.read()
    ours = timed([REMOTE, "file", "write", "--machine", "bench", "--src", one, "--dst", os.path.join(WORK, "fw-ours")])
    base = timed(["ssh", "-F", ssh_cfg, "-o", "ControlMaster=no", "-o", f"ControlPath={sock}", "benchhost",
                  f"cat > {os.path.join(WORK, 'fw-ssh')}"], payload)
    ours(), base()
    a, b = interleaved(ours, base, 20)
    record("file write of 1 MiB / ssh host 'cat > f'", f"{a*1e3:.1f} ms / {b*1e3:.1f} ms = {a/b:.2f}",
           "<= 1.1", a / b <= 1.1)


def bench_projects(ssh_cfg):
    """exec start at a known commit of a project / a plain exec start, over the same warm ssh."""
    print("projects at a ref", file=sys.stderr)
    repo = os.path.join(WORK, "project-repo")
    os.makedirs(os.path.join(repo, "src"))
    git = ["git", "-C", repo, "-c", "user.name=b", "-c", "user.email=b@b"]
    subprocess.run(["git", "init", "-q", "-b", "main", repo], check=True)
    for i in range(200):  # a small project: 200 files of 4 KiB
        with open(os.path.join(repo, "src", f"f{i}.py"), "w") as f:
            f.write("x = 1\n" * 680)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "c"], check=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    codexd_cfg = os.path.join(WORK, "codexd-projects.yaml")
    write_config(codexd_cfg, f"projects:\n  - id: p\n    repo_url: {repo}\n")
    write_config(ENV["CODEX_REMOTE_CONFIG"], f"""machines:
  - name: proj
    ssh: benchhost
    ssh_args: ["-F", "{ssh_cfg}"]
    codexd: CODEXD_CONFIG={codexd_cfg} {CODEXD}
    data_dir: {os.path.join(WORK, "remote-projects")}
""")
    start = [REMOTE, "exec", "start", "--machine", "proj"]
    ours = start + ["--project", "p", "--ref", commit, "--cmd", "true"]
    plain = start + ["--cmd", "true"]
    timed(ours)(), timed(plain)()  # the first clones the mirror and opens the master
    a, b = interleaved(timed(ours), timed(plain), 20)
    record("exec start --project P --ref <known commit> / plain exec start (ssh)",
           f"{a*1e3:.1f} ms / {b*1e3:.1f} ms = {a/b:.2f}", "<= 1.5", a / b <= 1.5)


def bench_slurm(ssh_cfg):
    """A Slurm login node over warm ssh: codexd's start, result and list against the Slurm
    command doing the same over the same kind of connection. Every job is held (`--hold`), so
    the one-node lab (scripts/slurm-lab.sh) keeps them queued; they are cancelled after."""
    print("Slurm", file=sys.stderr)
    if not shutil.which("slurmctld"):
        record("Slurm figures", "no slurm-wlm", "slurm-wlm and munge installed", False)
        return
    lab = os.path.join(tempfile.gettempdir(), "codex-slurm-lab")
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "slurm-lab.sh"), "start", lab],
                   check=True, stdout=subprocess.DEVNULL)
    conf = os.path.join(lab, "slurm.conf")
    codexd_cfg = os.path.join(WORK, "codexd-slurm.yaml")
    write_config(codexd_cfg, "scheduler: slurm\nslurm:\n  time: 10m\n  extra_args: [--hold]\n")
    write_config(ENV["CODEX_REMOTE_CONFIG"], f"""machines:
  - name: cluster
    ssh: benchhost
    ssh_args: ["-F", "{ssh_cfg}"]
    codexd: SLURM_CONF={conf} CODEXD_CONFIG={codexd_cfg} {CODEXD}
    data_dir: {os.path.join(WORK, "remote-slurm")}
""")
    ssh, base_cm = warm_ssh(ssh_cfg, "cm-slurm")
    ssh.append(f"SLURM_CONF={conf}")
    slurm_ids, ours_n = [], [0]

    def ours_start():
        t, code, out, err = run([REMOTE, "exec", "start", "--machine", "cluster", "--cwd", "/tmp",
                                 "--cmd", "true"])
        if code != 0:
            raise SystemExit(f"exec start on Slurm failed: {out!r} {err!r}")
        slurm_ids.append(json.loads(out)["slurm_job_id"])
        ours_n[0] += 1
        return t

    def base_start():
        t, code, out, err = run(ssh + ["sbatch", "--parsable", "--hold", "--time=10",
                                       "--output=/dev/null", "--wrap", "true"])
        if code != 0:
            raise SystemExit(f"sbatch failed: {err!r}")
        slurm_ids.append(out.decode().strip())
        return t

    try:
        ours_start(), base_start()  # warm both masters
        a, b = interleaved(ours_start, base_start, 20)
        record("exec start on Slurm over warm ssh / ssh host sbatch --wrap true",
               f"{a*1e3:.1f} ms / {b*1e3:.1f} ms = {a/b:.2f}", "<= 1.1", a / b <= 1.1)
        job = ok_json([REMOTE, "exec", "list", "--machine", "cluster", "--limit", "1"])["jobs"][0]
        ours = timed([REMOTE, "exec", "result", "--machine", "cluster", "--id", job["exec_id"]])
        base = timed(ssh + ["squeue", "-j", job["slurm_job_id"]])
        a, b = interleaved(ours, base, 20)
        record("exec result of a queued Slurm job / ssh host squeue -j ID",
               f"{a*1e3:.1f} ms / {b*1e3:.1f} ms = {a/b:.2f}", "<= 1.1", a / b <= 1.1)
        while ours_n[0] < 200:
            ours_start()
        ours = timed([REMOTE, "exec", "list", "--machine", "cluster", "--limit", "200"])
        base = timed(ssh + ["squeue"])
        a, b = interleaved(ours, base, 10)
        record("200 queued Slurm jobs: exec list / ssh host squeue",
               f"{a*1e3:.1f} ms / {b*1e3:.1f} ms = {a/b:.2f}", "<= 1.5", a / b <= 1.5)
    finally:
        for i in range(0, len(slurm_ids), 100):
            subprocess.run(["scancel"] + slurm_ids[i:i + 100], env=dict(ENV, SLURM_CONF=conf),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        close_masters(base_cm)


# ---------------------------------------------------------------------------------------------
# A real network: sshds in a namespace behind a delayed link (scripts/netlab.sh), real TCP.

NET_MACHINES = 50


def start_lab(rtt_ms):
    """A lab at rtt_ms with one sshd listening on NET_MACHINES ports of the hosts' address; returns
    (lab dir, ssh config path, [host aliases]). Every alias is its own ssh destination (its own
    port, so its own ControlMaster), as a fleet of machines would be."""
    lab = os.path.join(WORK, f"lab{rtt_ms}")
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "netlab.sh"), "up", lab, str(rtt_ms)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"netlab: {out.stderr}")
    env = dict(line.split("=", 1) for line in out.stdout.split())
    host = env["NETLAB_HOST"]
    d = os.path.join(lab, "sshd")
    os.makedirs(d)
    host_keys(d)
    ports = [2200 + i for i in range(NET_MACHINES)]
    # One sshd listens on at most 16 sockets (OpenSSH's MAX_LISTEN_SOCKS): one sshd per 16 ports.
    for g in range(0, len(ports), 16):
        conf = os.path.join(d, f"sshd_config{g}")
        # The sessions' HOME is the lab's: no rc file of the real home runs in them (one that
        # takes a lock, as pyenv's rehash does, would put the fleet's sessions in a queue).
        os.makedirs(os.path.join(lab, "home"), exist_ok=True)
        write_config(conf, "".join(f"Port {p}\n" for p in ports[g:g + 16]) + f"""ListenAddress {host}
PidFile {d}/sshd{g}.pid
MaxStartups 200:30:400
SetEnv HOME={lab}/home
""" + server_options(d))
        subprocess.Popen(["bash", os.path.join(ROOT, "scripts", "netlab.sh"), "exec", lab, "/usr/sbin/sshd",
                          "-D", "-e", "-f", conf],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, f"log{g}"), "w"))
    with open(os.path.join(d, "host_key.pub")) as f:
        key = f.read()
    write_config(os.path.join(d, "known_hosts"), "".join(f"[{host}]:{p} {key}" for p in ports))
    cfg = os.path.join(d, "ssh_config")
    # dead0..dead2: machines that are off (the lab drops every packet sent to NETLAB_DEAD).
    write_config(cfg, "".join(f"""Host lab{i}
  HostName {host}
  Port {p}
""" for i, p in enumerate(ports)) + "".join(f"""Host dead{i}
  HostName {env["NETLAB_DEAD"]}
  Port 22
""" for i in range(3)) + "Host *\n" + client_options(d))
    import socket
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            for p in ports:
                socket.create_connection((host, p), timeout=1).close()
            return lab, cfg, [f"lab{i}" for i in range(NET_MACHINES)]
        except OSError:
            time.sleep(0.05)
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "netlab.sh"), "down", lab])
    raise SystemExit("the lab's sshd did not start")


def first_line_seconds(cmd):
    """Seconds from starting cmd to its first line of output; the process is then killed."""
    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV)
    p.stdout.readline()
    elapsed = time.perf_counter() - start
    p.kill()
    p.wait()
    return elapsed


def bench_fleet_ls(ls, ls_seconds, hosts, cfg, lab, col):
    """machine ls of the fleet against its slowest single check, and what three machines that are
    off add to it (each check is given --timeout 2s: they should add one timeout, not three)."""
    singles = [timed([REMOTE, "machine", "check", "--machine", h])() for h in hosts]
    slowest = max(singles)
    record(f"machine ls, {len(hosts)} machines / the slowest single check ({col})",
           f"{ls_seconds*1e3:.0f} / {slowest*1e3:.0f} ms = {ls_seconds/slowest:.2f}", "<= 1.5",
           ls_seconds / slowest <= 1.5)
    machines = "".join(f"""  - name: {h}
    ssh: {h}
    ssh_args: ["-F", "{cfg}"]
    codexd: {CODEXD}
    data_dir: {os.path.join(lab, "data-" + h)}
""" for h in hosts)
    timeout = 2.0
    quick = ls[:-1] + [f"{timeout}s"]
    write_config(ENV["CODEX_REMOTE_CONFIG"], "machines:\n" + machines)
    alive = statistics.median([timed(quick)() for _ in range(3)])
    write_config(ENV["CODEX_REMOTE_CONFIG"], "machines:\n" + machines + "".join(f"""  - name: dead{i}
    ssh: dead{i}
    ssh_args: ["-F", "{cfg}"]
    codexd: {CODEXD}
""" for i in range(3)))
    with_dead = statistics.median([timed(quick)() for _ in range(3)])
    added = with_dead - alive
    record(f"machine ls, {len(hosts)} machines + 3 that are off, --timeout 2s: time added ({col})",
           f"{with_dead*1e3:.0f} - {alive*1e3:.0f} = {added*1e3:.0f} ms", f"<= {timeout*1e3:.0f} ms",
           added <= timeout)


def bench_net(rtt_ms):
    print(f"real network, {rtt_ms} ms round trip", file=sys.stderr)
    lab, cfg, hosts = start_lab(rtt_ms)
    control = ENV["CODEX_REMOTE_CONTROL_DIR"]
    try:
        write_config(ENV["CODEX_REMOTE_CONFIG"], "machines:\n" + "".join(f"""  - name: {h}
    ssh: {h}
    ssh_args: ["-F", "{cfg}"]
    codexd: {CODEXD}
    data_dir: {os.path.join(lab, "data-" + h)}
""" for h in hosts))
        col = f"{rtt_ms} ms RTT"
        rt = (lambda t: f", {t * 1e3 / rtt_ms:.1f} RT") if rtt_ms else (lambda t: "")

        def ratio(name, ours, base, target, n=15):
            timed(ours)(), timed(base)()  # warm both masters
            a, b = interleaved(timed(ours), timed(base), n)
            record(f"{name} ({col})", f"{a*1e3:.1f}{rt(a)} / {b*1e3:.1f}{rt(b)} ms = {a/b:.2f}",
                   f"<= {target:.2f}", a / b <= target)

        ssh, base_cm = warm_ssh(cfg, f"cm-net{rtt_ms}")
        ssh = ssh[:-1] + ["lab0"]
        job = ok_json([REMOTE, "exec", "start", "--machine", "lab0", "--cmd", "echo hi"])["exec_id"]
        ratio("exec start --cmd true / ssh host true", [REMOTE, "exec", "start", "--machine", "lab0", "--cmd",
                                                      "true"], ssh + ["true"], 1.05)
        ratio("exec result ID / ssh host true", [REMOTE, "exec", "result", "--machine", "lab0", "--id", job],
              ssh + ["true"], 1.05)
        ratio("exec result last / ssh host true", [REMOTE, "exec", "result", "--machine", "lab0", "--id", "last"],
              ssh + ["true"], 1.05)
        ratio("exec run --cmd 'echo hi' / ssh host 'echo hi'",
              [REMOTE, "exec", "run", "--machine", "lab0", "--cmd", "echo hi"], ssh + ["echo hi"], 1.10)
        log = os.path.join(lab, "tail.log")
        write_config(log, "a line\n")
        ours_follow = [REMOTE, "exec", "logs", "--machine", "lab0", "--id", job, "--since", "0", "--follow"]
        base_follow = ssh + ["tail", "-n", "+1", "-f", log]
        first_line_seconds(ours_follow), first_line_seconds(base_follow)
        a, b = interleaved(lambda: first_line_seconds(ours_follow), lambda: first_line_seconds(base_follow), 15)
        record(f"exec logs --follow, first line / ssh host tail -f ({col})",
               f"{a*1e3:.1f}{rt(a)} / {b*1e3:.1f}{rt(b)} ms = {a/b:.2f}", "<= 1.05", a / b <= 1.05)
        ours_p95, ours_median, _ = follow_latency_stats("lab0")
        base_p95, base_median = tail_f_latency(ssh, os.path.join(lab, "tail-latency.log"))
        record(f"a followed line written -> received, p95 (median) / ssh host tail -f ({col})",
               f"{ours_p95:.1f} ({ours_median:.1f}) / {base_p95:.1f} ({base_median:.1f}) ms",
               "<= tail -f's + 10 ms", ours_p95 <= base_p95 + 10)
        if os.environ.get("BENCH_NET_CALLS_ONLY"):
            return

        # The fleet: machine ls of 20 and of 50 machines, warm (every master up), against the same
        # number of `ssh host true` run in parallel over warm masters of their own.
        ls = [REMOTE, "machine", "ls", "--json", "--parallel", "64", "--timeout", "30s"]
        for n in (20, 50):
            write_config(ENV["CODEX_REMOTE_CONFIG"], "machines:\n" + "".join(f"""  - name: {h}
    ssh: {h}
    ssh_args: ["-F", "{cfg}"]
    codexd: {CODEXD}
    data_dir: {os.path.join(lab, "data-" + h)}
""" for h in hosts[:n]))
            bases = [warm_ssh(cfg, f"cm-net{rtt_ms}-{n}-{h}")[0][:-1] + [h, "true"] for h in hosts[:n]]

            def parallel_true():
                start = time.perf_counter()
                ps = [subprocess.Popen(b, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for b in bases]
                for p in ps:
                    p.wait()
                return time.perf_counter() - start
            timed(ls)(), parallel_true()  # warm every master
            a, b = interleaved(timed(ls), parallel_true, 3)
            record(f"machine ls, {n} machines, warm / {n} parallel ssh true ({col})",
                   f"{a*1e3:.0f} / {b*1e3:.0f} ms = {a/b:.1f}", "<= 2.0", a / b <= 2.0)
            if n == NET_MACHINES:
                bench_fleet_ls(ls, a, hosts[:n], cfg, lab, col)
            for h in hosts[:n]:
                close_masters(os.path.join(WORK, f"cm-net{rtt_ms}-{n}-{h}"))
        close_masters(base_cm)
    finally:
        close_masters(control)
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "netlab.sh"), "down", lab],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    sshd = None
    try:
        ssh_machine = None
        # BENCH_ONLY=gpu (or sync, projects, sessions, slurm, agents) runs those figures alone.
        if os.environ.get("BENCH_ONLY") == "gpu":
            bench_gpu_queue()
            return print_table()
        # BENCH_ONLY=net: the real-network figures at 0 and 50 ms round trip (needs root).
        if os.environ.get("BENCH_ONLY") == "net":
            bench_net(0)
            bench_net(50)
            return print_table()
        only = {"sync": bench_sync, "projects": bench_projects, "sessions": bench_sessions,
                "slurm": bench_slurm, "agents": bench_agents}.get(os.environ.get("BENCH_ONLY"))
        # BENCH_ONLY=local: the local start and the addr figures (no sshd needed).
        if os.environ.get("BENCH_ONLY") == "local":
            bench_pueue()
            bench_addr_mcp()
            return print_table()
        if only:
            sshd, ssh_cfg = start_sshd()
            only(ssh_cfg)
            return print_table()
        if os.path.exists("/usr/sbin/sshd"):
            sshd, ssh_cfg = start_sshd()
            remote_data = bench_ssh(ssh_cfg)
            ssh_machine = open(ENV["CODEX_REMOTE_CONFIG"]).read()
        else:
            record("ssh figures", "no sshd", "sshd installed", False)
        bench_local_rpc()
        bench_pueue()
        big = bench_throughput()
        bench_tail(big)
        bench_since(big)
        bench_many_jobs()
        bench_gpu_queue()
        bench_mcp_log_answer()
        bench_addr_mcp()
        bench_follow(ssh_machine)
        if ssh_machine:
            bench_burst(ssh_machine)
            bench_sync(ssh_cfg)
            bench_projects(ssh_cfg)
            bench_slurm(ssh_cfg)
            bench_sessions(ssh_cfg)
            bench_agents(ssh_cfg)
        if os.geteuid() == 0:
            bench_net(0)
            bench_net(50)
        else:
            record("real-network figures", "not root", "root (network namespaces)", False)
    finally:
        close_masters(ENV["CODEX_REMOTE_CONTROL_DIR"])
        if sshd:
            sshd.terminate()
        shutil.rmtree(WORK, ignore_errors=True)
    print_table()


def print_table():
    width = max(len(r[0]) for r in RESULTS)
    print(f"| {'figure':<{width}} | measured | target | result |")
    print(f"|{'-'*(width+2)}|---|---|---|")
    for name, measured, target, verdict in RESULTS:
        print(f"| {name:<{width}} | {measured} | {target} | {verdict} |")
    failed = sum(1 for r in RESULTS if r[3] == "FAIL")
    print(f"\n{len(RESULTS)-failed} passed, {failed} failed")


if __name__ == "__main__":
    main()
