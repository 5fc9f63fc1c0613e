#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| codex_runner::fuzzing::sync_frames(data));
