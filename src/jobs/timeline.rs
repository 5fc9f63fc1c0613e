//! A job's time index: when its logs had which size, so `exec logs --since 10m` (or an RFC 3339
//! time) maps to a byte offset without reading the logs.
//!
//! The worker samples both logs' sizes about once a second ([`SAMPLE_EVERY`]) and appends a
//! record to `<job>/times` when a size changed: three little-endian `u64`s, the time in Unix
//! milliseconds, then stdout's and stderr's sizes. Records are fixed-size and appended in time
//! order, so a reader finds a time by binary search over the file (O(log n) reads of 24
//! bytes) and ignores a last record cut short by a writer it raced. The resolution is the
//! sampling interval: a time maps to the sizes at the last sample taken at or before it.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crate::platform::private_file_options;
use crate::protocol::unix_ms;

/// The index file in a job's directory.
pub const FILE: &str = "times";
/// How often the worker samples the logs' sizes.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const RECORD: u64 = 24;

/// Log sizes at one moment: stdout's, then stderr's.
pub type Sizes = (u64, u64);

/// Appends samples to a job's index.
pub struct Recorder {
    file: File,
    logs: [PathBuf; 2],
    last: Option<Sizes>,
}

impl Recorder {
    /// Creates `<dir>/times` (0600) for the logs in `dir`.
    pub fn create(dir: &Path) -> io::Result<Recorder> {
        let file = private_file_options().create(true).append(true).open(dir.join(FILE))?;
        let logs = [dir.join("stdout.log"), dir.join("stderr.log")];
        Ok(Recorder { file, logs, last: None })
    }

    /// Records the logs' sizes now, if they changed since the last record (the first sample
    /// is always recorded: it marks the job's start).
    pub fn sample(&mut self) -> io::Result<()> {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let sizes = (size(&self.logs[0]), size(&self.logs[1]));
        if self.last == Some(sizes) {
            return Ok(());
        }
        let mut record = [0u8; RECORD as usize];
        record[..8].copy_from_slice(&unix_ms(SystemTime::now()).to_le_bytes());
        record[8..16].copy_from_slice(&sizes.0.to_le_bytes());
        record[16..].copy_from_slice(&sizes.1.to_le_bytes());
        self.file.write_all(&record)?;
        self.last = Some(sizes);
        Ok(())
    }

    /// Samples every [`SAMPLE_EVERY`] on a thread of its own until `done` is set, then once
    /// more. A sample that cannot be written (a full disk) is skipped: the index is an aid,
    /// never a reason for a job to fail.
    pub fn run_until(mut self, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            loop {
                // `done` read before the sample: set, this sample comes after the job's end.
                let last = done.load(Ordering::SeqCst);
                let _ = self.sample();
                if last {
                    return;
                }
                std::thread::park_timeout(SAMPLE_EVERY);
            }
        })
    }
}

/// The logs' sizes at the last sample taken at or before `at_ms` ((0, 0) before the first);
/// `None` when the job has no index (it was started by a codexd without one).
pub fn sizes_at(dir: &Path, at_ms: u64) -> io::Result<Option<Sizes>> {
    let file = match File::open(dir.join(FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let records = file.metadata()?.len() / RECORD;
    let read = |i: u64| -> io::Result<(u64, Sizes)> {
        let mut buf = [0u8; RECORD as usize];
        file.read_exact_at(&mut buf, i * RECORD)?;
        let word = |k: usize| u64::from_le_bytes(buf[k * 8..k * 8 + 8].try_into().unwrap());
        Ok((word(0), (word(1), word(2))))
    };
    // The first record whose time is after `at_ms`; the one before it is the answer.
    let (mut lo, mut hi) = (0, records);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if read(mid)?.0 <= at_ms {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(Some(if lo == 0 { (0, 0) } else { read(lo - 1)?.1 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_maps_to_the_sizes_of_the_last_sample_at_or_before_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(sizes_at(dir.path(), 5).unwrap(), None);
        let mut file = File::create(dir.path().join(FILE)).unwrap();
        for (t, a, b) in [(100u64, 0u64, 0u64), (200, 10, 0), (300, 10, 7), (400, 25, 7)] {
            for w in [t, a, b] {
                file.write_all(&w.to_le_bytes()).unwrap();
            }
        }
        // A record cut short by a racing writer is not read.
        file.write_all(&[1, 2, 3]).unwrap();
        let at = |t| sizes_at(dir.path(), t).unwrap().unwrap();
        assert_eq!(at(50), (0, 0));
        assert_eq!(at(100), (0, 0));
        assert_eq!(at(250), (10, 0));
        assert_eq!(at(300), (10, 7));
        assert_eq!(at(10_000), (25, 7));
    }
}
