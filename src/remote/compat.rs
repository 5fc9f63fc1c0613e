//! Whether a machine's `codexd` matches this `codex-remote`, from its `hello` answer.
//!
//! Checking costs no extra connection: when the cache below has no fresh answer for the machine,
//! the transport sends `hello` first on the call's own session and waits for it before sending
//! the request, so a protocol mismatch stops the request unsent. Answers are cached for
//! [`HELLO_TTL`] per machine and route ([`super::cache`]), so most calls
//! send nothing more than before. Another protocol is an error (`protocol_mismatch`); another
//! version with the same protocol is a warning on stderr, once per process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::cache::{self, CacheKind, RouteKey};
use crate::error::{Error, ErrorCode, Result};
use crate::protocol::{HelloResponse, PROTOCOL_VERSION};
use crate::version::{self, VERSION};

/// How long a `hello` answer is trusted; a call after that asks again.
pub const HELLO_TTL: Duration = Duration::from_secs(3600);

/// How to replace an old codexd (README "Install from dist/").
const UPGRADE_CODEXD: &str =
    "copy this release's dist/linux-<arch>/codexd over it (README \"Install from dist/\")";

/// What a machine's codexd said, as cached (keyed by the route it came through).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub version: String,
    pub protocol: u32,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Seconds since the Unix epoch.
    pub checked_at: u64,
}

/// The outcome of comparing a codexd with this codex-remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Same,
    /// Same protocol, another version: this text is worth a warning.
    OtherVersion(String),
    /// Another protocol: the request must not be sent.
    Incompatible(Error),
}

/// Compares codexd `version`/`protocol` on `machine` with this build.
pub fn compare(machine: &str, remote_version: &str, remote_protocol: u32) -> Verdict {
    let theirs = format!("codexd on {machine} is {remote_version} (protocol {remote_protocol})");
    let ours = format!("this codex-remote is {VERSION} (protocol {PROTOCOL_VERSION})");
    let remote_older = remote_protocol < PROTOCOL_VERSION
        || (remote_protocol == PROTOCOL_VERSION
            && version::compare(remote_version, VERSION).is_lt());
    let advice = if remote_older {
        format!("upgrade it: {UPGRADE_CODEXD}")
    } else {
        "upgrade codex-remote to the same release".to_string()
    };
    if remote_protocol != PROTOCOL_VERSION {
        let err =
            Error::new(ErrorCode::ProtocolMismatch, format!("{theirs}; {ours}")).with_hint(advice);
        return Verdict::Incompatible(err);
    }
    if version::compare(remote_version, VERSION).is_eq() {
        Verdict::Same
    } else {
        Verdict::OtherVersion(format!("{theirs}; {ours}: {advice}"))
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The fresh cached answer of `machine` through `route`, when there is one and it is of this
/// protocol (one of another version is warned about here, once per process). `None`: the
/// call should send `hello` first.
pub fn cached(machine: &str, route: &RouteKey) -> Option<Seen> {
    let seen: Seen = cache::load(CacheKind::Hello, machine, route)?;
    if now().saturating_sub(seen.checked_at) >= HELLO_TTL.as_secs() {
        return None;
    }
    match compare(machine, &seen.version, seen.protocol) {
        Verdict::Same => Some(seen),
        Verdict::OtherVersion(text) => {
            warn_once(&text);
            Some(seen)
        }
        Verdict::Incompatible(_) => None,
    }
}

/// Checks a fresh `hello` answer: `Err(protocol_mismatch)` when the request must not be sent.
/// A compatible answer is cached (a cache that cannot be written only costs a `hello` later).
pub fn check_hello(machine: &str, route: &RouteKey, hello: &HelloResponse) -> Result<()> {
    match compare(machine, &hello.version, hello.protocol) {
        Verdict::Incompatible(err) => return Err(err),
        Verdict::OtherVersion(text) => warn_once(&text),
        Verdict::Same => {}
    }
    let seen = Seen {
        version: hello.version.clone(),
        protocol: hello.protocol,
        capabilities: hello.capabilities.clone(),
        checked_at: now(),
    };
    let _ = cache::save(CacheKind::Hello, machine, route, &seen);
    Ok(())
}

/// Refuses a request that needs a capability the machine's codexd did not report.
pub fn require(machine: &str, capabilities: &[String], needs: Option<&str>) -> Result<()> {
    match needs {
        Some(cap) if !capabilities.iter().any(|c| c == cap) => Err(Error::new(
            ErrorCode::ProtocolMismatch,
            format!("codexd on {machine} does not support `{cap}`; the request was not sent"),
        )
        .with_hint(format!("upgrade it: codex-remote machine up --machine {machine}"))),
        _ => Ok(()),
    }
}

/// Drops the cached answer, so the next call asks again (after a call that looked like a
/// protocol problem: the codexd may have been replaced).
pub fn forget(machine: &str) {
    cache::forget(CacheKind::Hello, machine);
}

fn warn_once(text: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::SeqCst) {
        crate::error::stderr_line(&format!("codex-remote: warning: {text}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_version_is_same() {
        assert_eq!(compare("gpu1", VERSION, PROTOCOL_VERSION), Verdict::Same);
    }

    #[test]
    fn an_older_codexd_is_named_with_the_fix() {
        let Verdict::OtherVersion(text) = compare("gpu1", "0.0.9", PROTOCOL_VERSION) else {
            panic!("a warning expected");
        };
        assert!(text.starts_with("codexd on gpu1 is 0.0.9 (protocol 1); this codex-remote is"));
        assert!(
            text.contains("upgrade it: copy this release's dist/linux-<arch>/codexd"),
            "{text}"
        );
        let Verdict::OtherVersion(text) = compare("gpu1", "99.0.0", PROTOCOL_VERSION) else {
            panic!("a warning expected");
        };
        assert!(text.ends_with("upgrade codex-remote to the same release"), "{text}");
    }

    #[test]
    fn another_protocol_is_an_error() {
        let Verdict::Incompatible(err) = compare("gpu1", "9.0.0", PROTOCOL_VERSION + 1) else {
            panic!("an error expected");
        };
        assert_eq!(err.code, ErrorCode::ProtocolMismatch);
        assert_eq!(err.exit_code(), crate::error::exit::TRANSPORT);
        assert!(err.hint.unwrap().contains("upgrade codex-remote"));
    }

    #[test]
    fn a_missing_capability_keeps_the_request_unsent() {
        let caps = vec!["exec".to_string()];
        assert!(require("gpu1", &caps, None).is_ok());
        assert!(require("gpu1", &caps, Some("exec")).is_ok());
        let err = require("gpu1", &caps, Some("script")).unwrap_err();
        assert_eq!(err.code, ErrorCode::ProtocolMismatch);
        assert!(err.message.contains("`script`"), "{}", err.message);
        assert!(err.hint.unwrap().contains("machine up --machine gpu1"));
    }
}
