//! How long a client call may wait for codexd, so that nothing waits forever: a host that
//! accepts and never answers, or a `codexd` that went silent, ends the call with `timeout`.
//!
//! - A quick call (status, list, result, hello ...) must be answered whole within the machine's
//!   `call_timeout` (default [`DEFAULT_CALL_TIMEOUT`]).
//! - A long call (`exec wait`, `logs --follow`, file and sync transfers) lives as long as it
//!   shows progress: answer bytes arriving, or codexd's heartbeat
//!   ([`crate::protocol::HEARTBEAT_EVERY`]); a silence longer than [`idle_limit`] ends it.
//! - [`within`] bounds every call a thread makes (`machine ls --timeout`): when it runs out,
//!   the call's child (ssh) is killed and reaped, not left behind.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorCode};

/// A quick call's deadline when the machine sets no `call_timeout`.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest silence that ends a long call: three heartbeats missed.
const MIN_IDLE: Duration = Duration::from_secs(15);

thread_local! {
    /// The end set by [`within`] for this thread's calls.
    static WITHIN: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `f` with every call it makes on this thread ending by `limit` from now.
pub fn within<T>(limit: Duration, f: impl FnOnce() -> T) -> T {
    let end = Instant::now() + limit;
    let outer = WITHIN.with(|w| w.replace(Some(end)));
    let out = f();
    WITHIN.with(|w| w.set(outer));
    out
}

/// Waits for `child` to exit; under [`within`], only until that limit, then kills and reaps it
/// and answers `TimedOut`.
pub fn wait_child(child: &mut std::process::Child) -> std::io::Result<std::process::ExitStatus> {
    let Some(end) = WITHIN.with(Cell::get) else { return child.wait() };
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"));
        }
        std::thread::sleep(pause.min(end.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The silence that ends a long call: the machine's `call_timeout`, at least [`MIN_IDLE`].
pub fn idle_limit(call_timeout: Duration) -> Duration {
    call_timeout.max(MIN_IDLE)
}

/// When one call gives up.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// The whole call ends by then (a quick call, or [`within`]).
    end: Option<Instant>,
    /// A long call ends after this long without progress.
    idle: Option<Duration>,
    /// What the message says it waited for.
    limit: Duration,
}

impl Deadline {
    /// A quick call's: answered within `call_timeout` (or sooner, under [`within`]).
    pub fn quick(call_timeout: Duration) -> Self {
        let now = Instant::now();
        let end = WITHIN.with(Cell::get).map_or(now + call_timeout, |w| w.min(now + call_timeout));
        let limit = Duration::from_millis(end.saturating_duration_since(now).as_millis() as u64);
        Deadline { end: Some(end), idle: None, limit }
    }

    /// A long call's: alive while it shows progress (and within [`within`]). `heartbeats`:
    /// whether codexd is known to send them; without, a quiet job would look like a silent
    /// codexd, so only [`within`] bounds the call.
    pub fn long(call_timeout: Duration, heartbeats: bool) -> Self {
        let idle = heartbeats.then(|| idle_limit(call_timeout));
        let limit = idle.unwrap_or(call_timeout);
        Deadline { end: WITHIN.with(Cell::get), idle, limit }
    }

    /// The time left for the whole call, if it has an end.
    pub fn total(&self) -> Option<Duration> {
        self.end.map(|e| e.saturating_duration_since(Instant::now()))
    }

    /// The longest silence a long call survives, if it has one.
    pub fn idle(&self) -> Option<Duration> {
        self.idle
    }

    /// How long a read may still wait when the last progress was at `last`.
    pub fn left(&self, last: Instant) -> Option<Duration> {
        let now = Instant::now();
        let by_end = self.end.map(|e| e.saturating_duration_since(now));
        let by_idle = self.idle.map(|i| (last + i).saturating_duration_since(now));
        match (by_end, by_idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The error of a call that ran out: `what` did not answer.
    pub fn expired(&self, what: &str) -> Error {
        let how = if self.idle.is_some() { "went silent for" } else { "did not answer within" };
        let limit = humantime::format_duration(self.limit);
        Error::new(ErrorCode::Timeout, format!("{what} {how} {limit}")).with_hint(
            "check that codexd answers there (`codex-remote machine check --machine NAME`), or \
             raise `call_timeout` for the machine in the config",
        )
    }
}

/// A reader that gives up (`TimedOut`) when its [`Deadline`] runs out before bytes arrive.
pub struct TimedReader<R> {
    inner: R,
    deadline: Deadline,
    // When bytes last came (the idle limit counts from it); Windows reads without a limit.
    #[cfg_attr(not(unix), allow(dead_code))]
    last: Instant,
    expired: bool,
}

impl<R> TimedReader<R> {
    pub fn new(inner: R, deadline: Deadline) -> Self {
        TimedReader { inner, deadline, last: Instant::now(), expired: false }
    }

    /// Whether a read gave up because the deadline ran out.
    pub fn expired(&self) -> bool {
        self.expired
    }

    pub fn deadline(&self) -> &Deadline {
        &self.deadline
    }
}

#[cfg(unix)]
impl<R: std::io::Read + std::os::fd::AsFd> std::io::Read for TimedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(left) = self.deadline.left(self.last)
            && !readable_within(&self.inner, left)?
        {
            self.expired = true;
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"));
        }
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.last = Instant::now();
        }
        Ok(n)
    }
}

/// Elsewhere there is no poll on a pipe: reads wait as long as they must.
#[cfg(not(unix))]
impl<R: std::io::Read> std::io::Read for TimedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

/// Whether `fd` has bytes (or an end) within `wait`.
#[cfg(unix)]
fn readable_within(fd: &impl std::os::fd::AsFd, wait: Duration) -> std::io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let started = Instant::now();
    loop {
        let left = wait.saturating_sub(started.elapsed());
        let timeout = Timespec::try_from(left).unwrap_or(Timespec { tv_sec: i64::MAX, tv_nsec: 0 });
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_silent_pipe_times_out_and_bytes_arrive_in_time() {
        let (reader, _writer) = std::io::pipe().unwrap();
        let quick = Deadline::quick(Duration::from_millis(50));
        let mut timed = TimedReader::new(reader, quick);
        let e = timed.read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(timed.expired());
        assert_eq!(quick.expired("codexd").code, ErrorCode::Timeout);

        let (reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(b"ok").unwrap();
        let mut timed = TimedReader::new(reader, Deadline::quick(Duration::from_secs(5)));
        assert_eq!(timed.read(&mut [0u8; 4]).unwrap(), 2);
    }

    #[test]
    fn long_calls_end_only_by_silence_unless_within_a_limit() {
        let long = Deadline::long(Duration::from_secs(1), true);
        assert!(long.end.is_none());
        assert_eq!(long.left(Instant::now()).map(|d| d > MIN_IDLE / 2), Some(true));
        assert_eq!(Deadline::long(MIN_IDLE, false).left(Instant::now()), None);
        let bounded = within(Duration::from_millis(10), || Deadline::long(MIN_IDLE, true));
        assert!(bounded.left(Instant::now()).unwrap() <= Duration::from_millis(10));
        assert!(WITHIN.with(Cell::get).is_none(), "within restores the thread's limit");
    }
}
