//! The few OS calls the job store needs: /proc, sessions, signals, reaping. All `unsafe` of the
//! crate lives here.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::process::{Pid, Signal};

/// What /proc/<pid>/stat says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// Clock ticks after boot when the process started: with the pid, it names one process.
    pub start_time: u64,
}

impl ProcStat {
    /// A zombie or dead process holds no resources and runs no code.
    pub fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses the text of /proc/<pid>/stat (the command name may hold spaces and parentheses).
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let mut rest = text[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    let session = rest.next()?.parse().ok()?;
    // Fields 7..=21 lie between session (6) and starttime (22).
    let start_time = rest.nth(15)?.parse().ok()?;
    Some(ProcStat { pid, state, ppid, pgrp, session, start_time })
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Every process visible in /proc.
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .collect()
}

/// The environment variable that names a job in the environment of its worker and of every
/// process of the job (inherited, unless a process clears its environment).
pub const EXEC_ID_VAR: &str = "CODEXD_EXEC_ID";

/// The job (`CODEXD_EXEC_ID`) that process `pid` belongs to, if it runs as this user and has
/// one: another user's process never counts, whatever its environment says.
pub fn exec_id_of(pid: i32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dir = format!("/proc/{pid}");
    let owner = std::fs::metadata(&dir).ok()?.uid();
    if owner != rustix::process::getuid().as_raw() {
        return None;
    }
    let environ = std::fs::read(format!("{dir}/environ")).ok()?;
    let prefix = format!("{EXEC_ID_VAR}=");
    environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Sends `sig` to `pid` only if it is still the process that started at `start_time`. The pid
/// is pinned with a pidfd before the check, so a pid reused meanwhile is never signalled.
/// Returns whether the signal was sent.
pub fn signal_if_same(raw: i32, start_time: u64, sig: Signal) -> bool {
    let Some(p) = pid(raw) else {
        return false;
    };
    let same = || proc_stat(raw).is_some_and(|s| s.start_time == start_time);
    match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => same() && rustix::process::pidfd_send_signal(&fd, sig).is_ok(),
        Err(rustix::io::Errno::SRCH) => false,
        // No pidfds (a kernel before 5.3, a seccomp filter): check, then signal at once.
        Err(_) => same() && rustix::process::kill_process(p, sig).is_ok(),
    }
}

/// Whether the file system holding `path` has no space left for an unprivileged writer.
pub fn disk_full(path: &std::path::Path) -> bool {
    rustix::fs::statvfs(path).is_ok_and(|s| s.f_bavail == 0)
}

/// Whether the process `pid` that started at `start_time` is still alive (not a zombie).
pub fn is_alive(pid: i32, start_time: u64) -> bool {
    proc_stat(pid).is_some_and(|s| s.start_time == start_time && s.is_live())
}

/// This boot's id: a reboot changes it, so a pid recorded before it means nothing now.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string())
}

/// Whether `p` is a regular file with an execute bit (what a shell would run).
pub fn runnable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first runnable `program` in the directories of `path` (a `PATH` value), as a shell
/// finds it.
pub fn find_on_path(program: &str, path: &str) -> Option<std::path::PathBuf> {
    path.split(':').map(|dir| std::path::Path::new(dir).join(program)).find(|p| runnable(p))
}

pub fn hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

pub fn current_pid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// The name of the user this process runs as: from /etc/passwd by uid (the environment can
/// lie or be empty under ssh), else `$USER`, else the uid itself.
pub fn user_name() -> String {
    let uid = rustix::process::getuid().as_raw().to_string();
    let from_passwd = std::fs::read_to_string("/etc/passwd").ok().and_then(|text| {
        text.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)? == uid).then(|| name.to_string())
        })
    });
    from_passwd.or_else(|| std::env::var("USER").ok()).unwrap_or(uid)
}

/// The codexd executable that workers are started from: this process's own, unless a process
/// that serves a machine in itself (`codex-remote` for `local`) named the `codexd` next to it.
static CODEXD_EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Names the codexd that workers of this process are started from (once; later calls keep the
/// first).
pub fn set_codexd_exe(path: PathBuf) {
    let _ = CODEXD_EXE.set(path);
}

/// The codexd executable that workers are started from ([`set_codexd_exe`], else this one).
pub fn codexd_exe() -> io::Result<PathBuf> {
    match CODEXD_EXE.get() {
        Some(path) => Ok(path.clone()),
        None => std::env::current_exe(),
    }
}

/// Starts `program args...` detached: in a new session of its own, stdin and stdout on
/// /dev/null, stderr into `stderr`, with this process's environment plus `env`. Returns its
/// pid once it runs `program`; a thread reaps it when it ends.
///
/// `posix_spawn` with `POSIX_SPAWN_SETSID` (vfork semantics: nothing of this process is
/// copied): std's `Command` needs a `pre_exec` hook for setsid, and that makes it fork
/// (measured: fork 1.53 ms, posix_spawn 0.60 ms from a 10 MiB process).
pub fn spawn_detached(
    program: &Path,
    args: &[&OsStr],
    env: &[(&str, &OsStr)],
    stderr: &File,
) -> io::Result<i32> {
    let c = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in an argument or variable")
        })
    };
    let mut argv = vec![c(program.as_os_str().as_bytes())?];
    for arg in args {
        argv.push(c(arg.as_bytes())?);
    }
    let mut envp = Vec::new();
    for (name, value) in std::env::vars_os() {
        if !env.iter().any(|(n, _)| OsStr::new(n) == name) {
            envp.push(c(&[name.as_bytes(), b"=", value.as_bytes()].concat())?);
        }
    }
    for (name, value) in env {
        envp.push(c(&[name.as_bytes(), b"=", value.as_bytes()].concat())?);
    }
    let pointers = |strings: &[CString]| -> Vec<*mut libc::c_char> {
        strings.iter().map(|s| s.as_ptr().cast_mut()).chain([std::ptr::null_mut()]).collect()
    };
    let (argv_ptrs, envp_ptrs) = (pointers(&argv), pointers(&envp));
    let check =
        |rc: libc::c_int| if rc == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(rc)) };
    let flags = libc::POSIX_SPAWN_SETSID
        | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
        | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short;
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer handed over points into a CString or Vec alive until the call
    // returns; the attribute and action objects are initialised before use and destroyed after.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut actions))?;
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        if let Err(e) = check(libc::posix_spawnattr_init(&mut attr)) {
            libc::posix_spawn_file_actions_destroy(&mut actions);
            return Err(e);
        }
        let (mut empty, mut defaults): (libc::sigset_t, libc::sigset_t) =
            (std::mem::zeroed(), std::mem::zeroed());
        libc::sigemptyset(&mut empty);
        // As std does: SIGPIPE back to its default (Rust ignores it in this process).
        libc::sigemptyset(&mut defaults);
        libc::sigaddset(&mut defaults, libc::SIGPIPE);
        let devnull = c"/dev/null".as_ptr();
        // The dup first: the log's descriptor cannot be one that the opens replace.
        let spawned =
            check(libc::posix_spawn_file_actions_adddup2(&mut actions, stderr.as_raw_fd(), 2))
                .and_then(|()| {
                    check(libc::posix_spawn_file_actions_addopen(
                        &mut actions,
                        0,
                        devnull,
                        libc::O_RDONLY,
                        0,
                    ))
                })
                .and_then(|()| {
                    check(libc::posix_spawn_file_actions_addopen(
                        &mut actions,
                        1,
                        devnull,
                        libc::O_WRONLY,
                        0,
                    ))
                })
                .and_then(|()| check(libc::posix_spawnattr_setsigmask(&mut attr, &empty)))
                .and_then(|()| check(libc::posix_spawnattr_setsigdefault(&mut attr, &defaults)))
                .and_then(|()| check(libc::posix_spawnattr_setflags(&mut attr, flags)))
                .and_then(|()| {
                    check(libc::posix_spawn(
                        &mut pid,
                        argv[0].as_ptr(),
                        &actions,
                        &attr,
                        argv_ptrs.as_ptr(),
                        envp_ptrs.as_ptr(),
                    ))
                });
        libc::posix_spawnattr_destroy(&mut attr);
        libc::posix_spawn_file_actions_destroy(&mut actions);
        spawned?;
    }
    // A long-lived process (`serve`, `codex-remote mcp`) must reap it, or it stays a zombie; a
    // short one exits first and init (or the subreaper) reaps it instead.
    if let Some(child) = Pid::from_raw(pid) {
        std::thread::spawn(move || {
            let _ = rustix::process::waitpid(Some(child), rustix::process::WaitOptions::empty());
        });
    }
    Ok(pid)
}

/// Makes `cmd` start in a new session (and so a new process group) of its own.
pub fn start_new_session(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| rustix::process::setsid().map(|_| ()).map_err(io::Error::from));
    }
}

/// Makes `cmd`'s process get SIGTERM when the thread that starts it ends (with this process,
/// SIGKILL included): `codex-remote`'s ssh children never outlive it. A parent gone between
/// fork and prctl fails the spawn.
pub fn die_with_parent(cmd: &mut Command) {
    let parent = rustix::process::getpid();
    // SAFETY: prctl and getppid are async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
            match rustix::process::getppid() {
                Some(p) if p == parent => Ok(()),
                _ => Err(io::Error::other("the parent ended before its child started")),
            }
        });
    }
}

/// Runs `f` with the file creation mask set to `mask`, then restores it. The mask is
/// process-wide: call it before other threads create files.
pub fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask));
    let out = f();
    rustix::process::umask(old);
    out
}

/// Sends this process's stderr to `file` from now on (a Slurm job's worker: into its job's dir).
pub fn redirect_stderr(file: &std::fs::File) -> io::Result<()> {
    rustix::stdio::dup2_stderr(file).map_err(io::Error::from)
}

/// Orphaned descendants are re-parented to this process instead of init, so it can find them.
pub fn become_subreaper() -> io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(io::Error::from)
}

fn pid(raw: i32) -> Option<Pid> {
    Pid::from_raw(raw)
}

/// Sends `sig` to a whole process group.
pub fn signal_group(raw: i32, sig: Signal) {
    if let Some(p) = pid(raw) {
        let _ = rustix::process::kill_process_group(p, sig);
    }
}

/// The outcome of a reaped child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// Waits for any child; `block` false returns `None` at once when none has ended.
/// `Err` with `ECHILD` means there are no children left.
pub fn reap_any(block: bool) -> io::Result<Option<(i32, Exit)>> {
    use rustix::process::WaitOptions;
    let opts = if block { WaitOptions::empty() } else { WaitOptions::NOHANG };
    loop {
        match rustix::process::wait(opts) {
            Ok(Some((p, status))) => {
                let exit = match (status.exit_status(), status.terminating_signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(sig)) => Exit::Signal(sig),
                    // Stopped/continued children are not ends; wait again.
                    _ => continue,
                };
                return Ok(Some((p.as_raw_nonzero().get(), exit)));
            }
            Ok(None) => return Ok(None),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether the reader of our stdout has gone away (a closed pipe or socket).
pub fn stdout_closed() -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(&stdout, PollFlags::empty())];
    match poll(&mut fds, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 })) {
        Ok(_) => fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP),
        Err(_) => false,
    }
}

/// Ignores SIGHUP and SIGINT: an `rpc` call that is half done (creating a job) must finish even
/// when the ssh session or a terminal goes away; a gone reader is noticed by [`stdout_closed`].
pub fn ignore_hangups() {
    for sig in [signal_hook::consts::SIGHUP, signal_hook::consts::SIGINT] {
        // A no-op handler (not SIG_IGN) so that children spawned from here get default handlers.
        // SAFETY: the handler does nothing, which is async-signal-safe.
        let _ = unsafe { signal_hook::low_level::register(sig, || {}) };
    }
}

/// Runs `cmd` (stdin and stderr /dev/null, in a process group of its own) for at most
/// `timeout`; (exited 0, its stdout, at most 64 KiB). On the timeout the whole group is killed,
/// so a hung driver query cannot hang the caller.
pub fn output_within(
    mut cmd: Command,
    timeout: std::time::Duration,
) -> Result<(bool, String), String> {
    use std::io::Read;
    use std::process::Stdio;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = (&mut stdout).take(64 * 1024).read_to_string(&mut text);
        text
    });
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => {
                signal_group(child.id() as i32, Signal::KILL);
                let _ = child.wait();
                return Err(format!("no answer within {} s", timeout.as_secs_f64()));
            }
        }
    };
    Ok((status.success(), reader.join().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let text = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        let s = parse_stat(text).unwrap();
        assert_eq!((s.pid, s.state, s.ppid, s.pgrp, s.session), (1234, 'S', 1, 1234, 1234));
        assert_eq!(s.start_time, 987654);
    }

    #[test]
    fn own_process_is_alive() {
        let me = proc_stat(current_pid()).unwrap();
        assert!(is_alive(me.pid, me.start_time));
        assert!(!is_alive(me.pid, me.start_time + 1));
    }
}
