//! Fleet commands over a real delayed link: `scripts/netlab.sh` makes a network namespace
//! joined to this one by a TUN pair and a relay that holds each packet (real TCP, real round
//! trips), one sshd inside answers for every "host", and the lab's `NETLAB_DEAD` address drops
//! every packet (a machine that is off). Fan-out to ten machines with one of them dead, GPU
//! placement across three machines with a fake `nvidia-smi` each, and no orphan after a killed
//! follow. The lab needs root, `ip` and /dev/net/tun: where one is missing the tests say so, and
//! under `CI=true` they fail. Each lab is torn down by a Drop guard, also when a test fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{CODEXD, Sshd, TestEnv, skip, wait_until};

/// The round trip of the lab's link.
const RTT_MS: u32 = 20;

/// A lab and its sshd; `Drop` kills the sshd and removes the namespace and the link. Declare
/// it before the test's `TestEnv`, so that the env's master connections end first.
struct Lab {
    _temp: tempfile::TempDir,
    dir: PathBuf,
    vars: HashMap<String, String>,
    sshd: Option<Child>,
    ssh_config: PathBuf,
}

fn netlab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/netlab.sh")
}

impl Lab {
    /// Makes the lab in `dir` with an sshd for the hosts `hosts` (ssh config `Host` names);
    /// `dead` hosts are at the address that drops packets. `None` (after [`skip`]) when this
    /// machine cannot run it.
    fn up(hosts: &[&str], dead: &[&str]) -> Option<Lab> {
        let missing = if !rustix::process::getuid().is_root() {
            Some("the lab needs root (network namespaces)")
        } else if Command::new("ip").arg("-V").output().is_err() {
            Some("the lab needs `ip` (iproute2)")
        } else if !Path::new("/dev/net/tun").exists() {
            Some("the lab needs /dev/net/tun")
        } else {
            None
        };
        if let Some(why) = missing {
            skip(why);
            return None;
        }
        let temp = tempfile::Builder::new().prefix("crlab").tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let out =
            Command::new(netlab()).arg("up").arg(&dir).arg(RTT_MS.to_string()).output().unwrap();
        let mut lab = Lab {
            _temp: temp,
            dir: dir.clone(),
            vars: HashMap::new(),
            sshd: None,
            ssh_config: dir.join("ssh_config"),
        };
        assert!(out.status.success(), "netlab up: {}", String::from_utf8_lossy(&out.stderr));
        let env = std::fs::read_to_string(dir.join("lab.env")).unwrap();
        lab.vars = env
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        lab.start_sshd(hosts, dead);
        Some(lab)
    }

    fn var(&self, name: &str) -> &str {
        &self.vars[name]
    }

    fn start_sshd(&mut self, hosts: &[&str], dead: &[&str]) {
        let d = self.dir.join("sshd");
        Sshd::keys(&d);
        let host = self.var("NETLAB_HOST").to_string();
        // The sessions' HOME is the lab's: the login shell reads no rc file of the real home
        // (which may run slow or locking tools), and codexd never sees the real ~/.codexd.
        let home = self.dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let config = d.join("sshd_config");
        let options = Sshd::server_options(&d);
        std::fs::write(
            &config,
            format!(
                "Port 22\nListenAddress {host}\n{options}MaxStartups 100\nMaxSessions 30\n\
                 SetEnv HOME={home}\n",
                home = home.display()
            ),
        )
        .unwrap();
        let mut in_lab = Command::new(netlab());
        in_lab.arg("exec").arg(&self.dir).arg(Sshd::sshd_path());
        self.sshd = Some(Sshd::spawn_daemon(in_lab, &config, &d.join("sshd.log")));
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        std::fs::write(d.join("known_hosts"), format!("{host} {host_pub}")).unwrap();
        let mut ssh = String::new();
        let entries = hosts
            .iter()
            .map(|h| (h, host.as_str()))
            .chain(dead.iter().map(|h| (h, self.var("NETLAB_DEAD"))));
        for (name, addr) in entries {
            ssh.push_str(&format!(
                "Host {name}\n  HostName {addr}\n  Port 22\n  User root\n  IdentityFile {d}/client_key\n  \
                 IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n  GlobalKnownHostsFile /dev/null\n  \
                 StrictHostKeyChecking yes\n  LogLevel ERROR\n",
                d = d.display()
            ));
        }
        std::fs::write(&self.ssh_config, ssh).unwrap();
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect((host.as_str(), 22)).is_ok()
        });
        assert!(up, "the lab's sshd did not come up; see {}/sshd.log", d.display());
    }

    /// A machine entry reached as ssh host `host`, its store in `data`, its codexd run with
    /// `prefix` (environment words) before it.
    fn machine(&self, name: &str, host: &str, data: &Path, prefix: &str, extra: &str) -> String {
        format!(
            "  - name: {name}\n    ssh: {host}\n    ssh_args: [\"-F\", \"{cfg}\"]\n    \
             codexd: {prefix}{CODEXD}\n    data_dir: {data}\n{extra}",
            cfg = self.ssh_config.display(),
            data = data.display()
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut sshd) = self.sshd.take() {
            let _ = sshd.kill();
            let _ = sshd.wait();
        }
        let _ = Command::new(netlab()).arg("down").arg(&self.dir).output();
    }
}

/// The codexd config of a test (never the user's own).
fn codexd_prefix(env: &TestEnv, path_dir: Option<&Path>) -> String {
    let config = env.path("codexd.yaml");
    if !config.exists() {
        std::fs::write(&config, "gpu_free_memory_mib: 1024\ngpu_free_util_percent: 10\n").unwrap();
    }
    let path = match path_dir {
        Some(dir) => {
            format!("PATH={}:{} ", dir.display(), std::env::var("PATH").unwrap_or_default())
        }
        None => String::new(),
    };
    format!("{path}CODEXD_CONFIG={} ", config.display())
}

fn names(lines: &[Value]) -> Vec<String> {
    let mut names: Vec<String> =
        lines.iter().map(|l| l["machine"].as_str().unwrap().to_string()).collect();
    names.sort();
    names
}

#[test]
fn lab_fan_out_to_ten_machines_reports_the_dead_one_and_costs_one_timeout() {
    let hosts: Vec<String> = (0..9).map(|i| format!("lab{i}")).collect();
    let host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let Some(lab) = Lab::up(&host_refs, &["dead1", "dead2", "dead3"]) else {
        return;
    };
    let env = TestEnv::new();
    let prefix = codexd_prefix(&env, None);
    let mut yaml = String::from("machines:\n");
    for h in &hosts {
        yaml.push_str(&lab.machine(h, h, &env.path(&format!("data-{h}")), &prefix, ""));
    }
    for d in ["dead1", "dead2", "dead3"] {
        yaml.push_str(&lab.machine(
            d,
            d,
            &env.path("data-dead"),
            &prefix,
            "    connect_timeout: 2\n",
        ));
    }
    yaml.push_str(&format!("groups:\n  ten: [{}, dead1]\n", hosts.join(", ")));
    env.set_config(&yaml);

    // Ten machines, one of them off: ten lines, the dead one an ssh error, exit 3, and the
    // whole run about one connect_timeout (2 s).
    let started = Instant::now();
    let (code, lines) = env.run(&["exec", "list", "--machine", "ten"]);
    let took = started.elapsed();
    let mut expected: Vec<String> = hosts.clone();
    expected.push("dead1".into());
    expected.sort();
    assert_eq!(names(&lines), expected, "{lines:?}");
    let dead: Vec<&Value> = lines.iter().filter(|l| l["machine"] == "dead1").collect();
    assert_eq!(dead[0]["code"], "ssh_failed", "{dead:?}");
    assert!(lines.iter().filter(|l| l["type"] == "error").count() == 1, "{lines:?}");
    assert_eq!(code, 3, "{lines:?}");
    assert!(took < Duration::from_millis(4500), "ten machines, one dead: {took:?}");

    // Three dead machines add one --timeout to `machine ls`, not three.
    let started = Instant::now();
    let (code, lines) = env.run(&["machine", "ls", "--json", "--timeout", "1500ms"]);
    let took = started.elapsed();
    assert_eq!(code, 0);
    let machines = lines[0]["machines"].as_array().unwrap();
    assert_eq!(machines.len(), 13, "nine, three dead and local: {machines:?}");
    let failed: Vec<&str> =
        machines.iter().filter(|m| m["ok"] == false).map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(failed, ["dead1", "dead2", "dead3"], "{machines:?}");
    assert!(took < Duration::from_millis(1500 + 2000), "three dead machines: {took:?}");
}

/// A fake nvidia-smi in `dir` printing `gpus_file`.
fn fake_nvidia_smi(dir: &Path, gpus_file: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in\n  *--query-compute-apps*) ;;\n  *) cat {} ;;\nesac\n",
        gpus_file.display()
    );
    let path = dir.join("nvidia-smi");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `n` GPUs as nvidia-smi lists them, the first `busy` of them in use.
fn gpus(n: u32, busy: u32) -> String {
    (0..n)
        .map(|i| {
            let (mem, util) = if i < busy { (8000, 90) } else { (0, 0) };
            format!("{i}, GPU-{i}, NVIDIA Test GPU, {mem}, 16384, {util}\n")
        })
        .collect()
}

#[test]
fn lab_placement_starts_where_the_gpus_are_free_else_where_the_queue_is_shortest() {
    let Some(lab) = Lab::up(&["g1", "g2", "g3"], &[]) else {
        return;
    };
    let env = TestEnv::new();
    let mut yaml = String::from("machines:\n");
    let mut files = HashMap::new();
    for (name, busy) in [("g1", 2), ("g2", 1), ("g3", 0)] {
        let file = env.path(&format!("{name}.csv"));
        std::fs::write(&file, gpus(2, busy)).unwrap();
        let bin = env.path(&format!("bin-{name}"));
        fake_nvidia_smi(&bin, &file);
        let prefix = codexd_prefix(&env, Some(&bin));
        yaml.push_str(&lab.machine(name, name, &env.path(&format!("data-{name}")), &prefix, ""));
        files.insert(name, file);
    }
    yaml.push_str("groups:\n  gpus: [g1, g2, g3]\n");
    env.set_config(&yaml);

    // g3 has both GPUs free: the job starts there, and says why.
    let cwd = env.dir.path().display().to_string();
    let place = |machines: &str| {
        env.ok(&[
            "exec",
            "start",
            "--machine",
            machines,
            "--gpus",
            "2",
            "--cwd",
            &cwd,
            "--cmd",
            "true",
        ])
    };
    let v = place("gpus");
    assert_eq!(v["machine"], "g3", "{v}");
    assert_eq!(v["placement"]["reason"], "free_gpus", "{v}");
    let free: Vec<(String, u64)> = v["placement"]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["machine"].as_str().unwrap().into(), c["free_gpus"].as_u64().unwrap()))
        .collect();
    assert_eq!(free, [("g1".into(), 0), ("g2".into(), 1), ("g3".into(), 2)], "{v}");
    assert!(v["exec_id"].is_string(), "{v}");

    // Nowhere two free: the shortest queue (all empty), then the most free GPUs: g2.
    // The job on g3 ends first (its worker reads nvidia-smi and may write codexd's cache of it).
    let id = v["exec_id"].as_str().unwrap();
    env.ok(&["exec", "wait", "--machine", "g3", "--id", id, "--timeout", "30s"]);
    std::fs::write(&files["g3"], gpus(2, 2)).unwrap();
    // codexd keeps nvidia-smi's last answer for a moment: drop it until g3 reports the change.
    let g3_busy = wait_until(Duration::from_secs(10), || {
        let _ = std::fs::remove_file(env.path("data-g3/gpus/nvidia-smi.json"));
        let check = env.ok(&["machine", "check", "--machine", "g3"]);
        check["gpus"]["gpus"].as_array().is_some_and(|g| g.iter().all(|g| g["free"] == false))
    });
    assert!(g3_busy, "g3 still reports a free GPU after its nvidia-smi says both are busy");
    let v = place("any");
    assert_eq!(
        (v["machine"].as_str(), v["placement"]["reason"].as_str()),
        (Some("g2"), Some("shortest_queue")),
        "{v}"
    );
    assert!(v["exec_id"].is_string(), "{v}");
}

#[test]
fn lab_a_killed_follow_leaves_no_ssh_child_nor_remote_rpc() {
    let Some(lab) = Lab::up(&["far"], &[]) else {
        return;
    };
    let env = TestEnv::new();
    let data = env.path("far-data");
    let prefix = codexd_prefix(&env, None);
    env.set_config(&format!("machines:\n{}", lab.machine("far", "far", &data, &prefix, "")));
    crate::fleet::no_orphan_after_a_killed_follow(&env, "far", &data);
}
