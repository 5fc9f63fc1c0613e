//! The checked-in fuzz corpus (`fuzz/corpus/<target>/`) replayed through the fuzz targets' own
//! checks (`codex_runner::fuzzing`): CI keeps what the fuzzer learned without nightly or
//! libFuzzer (`make fuzz` runs the fuzzer itself).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use codex_runner::fuzzing;

/// The corpus files of `target`, sorted.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
}

/// Runs every corpus file of `target` through its check, naming the file that fails.
fn replay(target: &str) {
    for file in corpus(target) {
        let data = std::fs::read(&file).unwrap();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| fuzzing::check(target, &data))) {
            let why = (panic.downcast_ref::<String>().map(String::as_str))
                .or(panic.downcast_ref::<&str>().copied())
                .unwrap_or("?");
            panic!("{} fails the {target} check: {why}", file.display());
        }
    }
}

#[test]
fn every_target_has_a_corpus() {
    for target in fuzzing::TARGETS {
        assert!(!corpus(target).is_empty());
    }
}

#[test]
fn request_line_corpus() {
    replay("request_line");
}

#[test]
fn config_corpus() {
    replay("config");
}

#[test]
fn http_corpus() {
    replay("http");
}

#[test]
fn sync_tar_corpus() {
    replay("sync_tar");
}

#[test]
fn sync_frames_corpus() {
    replay("sync_frames");
}
