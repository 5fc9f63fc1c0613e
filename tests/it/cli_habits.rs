//! The habits people bring from gh, kubectl, pueue and docker, through the real `codex-remote`.

use crate::support::TestEnv;

#[test]
fn a_job_is_named_by_word_by_prefix_or_as_last() {
    let env = TestEnv::new();
    let first = env.start("local", "echo first");
    let second = env.start("local", "echo second >&2; exit 3");
    env.wait("local", &first);
    env.wait("local", &second);

    // The id as a word, as --id, as a unique prefix, and `last`.
    assert_eq!(env.ok(&["exec", "result", &first])["exec_id"], first.as_str());
    assert_eq!(env.ok(&["exec", "result", "--id", &first])["exec_id"], first.as_str());
    let unique = (13..36).map(|n| &second[..n]).find(|p| !first.starts_with(p)).unwrap();
    assert_eq!(env.ok(&["exec", "result", unique])["exec_id"], second.as_str());
    assert_eq!(env.ok(&["exec", "result", "last"])["exec_id"], second.as_str());

    // A prefix both share is ambiguous, and says which jobs.
    let common: String =
        first.chars().zip(second.chars()).take_while(|(a, b)| a == b).map(|(a, _)| a).collect();
    if !common.is_empty() {
        let e = env.err(&["exec", "result", &common], "invalid_argument", 4);
        let message = e["message"].as_str().unwrap();
        assert!(message.contains(&first) && message.contains(&second), "{e}");
    }

    // An id of the original Go tool is named for what it is.
    let e = env.err(&["exec", "result", "0123456789abcdef0123456789abcdef"], "invalid_id", 4);
    assert!(e["message"].as_str().unwrap().contains("Go codex-runner"), "{e}");

    // wait --exit-status chains; --state finished filters by status.
    let (code, _) = env.run(&["exec", "wait", &second, "--exit-status"]);
    assert_eq!(code, 3);
    let (code, _) = env.run(&["exec", "wait", &first, "--exit-status"]);
    assert_eq!(code, 0);
    let listed = env.ok(&["exec", "list", "--state", "finished"]);
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 2, "{listed}");
    let listed = env.ok(&["exec", "list", "--state", "running"]);
    assert!(listed["jobs"].as_array().unwrap().is_empty(), "{listed}");

    // -f follows both streams: stderr's line is there too.
    let (code, lines) = env.run(&["exec", "logs", "-f", &second]);
    assert_eq!(code, 0);
    assert!(lines.iter().any(|l| l["stream"] == "stderr" && l["line"] == "second"), "{lines:?}");
}

#[test]
fn a_wrong_command_line_prints_the_json_error_too() {
    let env = TestEnv::new();
    let (code, lines) = env.run(&["exec", "result", "--no-such-flag"]);
    assert_eq!(code, 2);
    assert_eq!(lines.last().unwrap()["code"], "usage", "{lines:?}");
    let (code, lines) = env.run(&["exec", "list", "--state", "sleeping"]);
    assert_eq!(code, 2);
    assert!(lines[0]["message"].as_str().unwrap().contains("finished"), "{lines:?}");
    // Help is still help.
    let out = env.remote(&["exec", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}
