#![no_main]
libfuzzer_sys::fuzz_target!(
    init: {
        // A worker spawned by mistake re-runs this executable as `<exe> worker ...`: it must not
        // start fuzzing there (the check's job-never-runs assertion reports the mistake).
        if std::env::args().nth(1).as_deref() == Some("worker") {
            std::process::exit(0);
        }
    },
    |data: &[u8]| codex_runner::fuzzing::http(data)
);
