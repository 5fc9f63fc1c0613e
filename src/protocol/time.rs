//! Times in status objects and on the wire: RFC 3339 with milliseconds, UTC. The one clock
//! formatter of the crate, for codexd's job store and codex-remote's reports alike.

use std::time::SystemTime;

/// The current time as RFC 3339 with milliseconds (`2026-12-06T20:26:29.123Z`).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Milliseconds from `from` (RFC 3339) to `to` (RFC 3339, or now).
pub fn millis_between(from: &str, to: Option<&str>) -> Option<u64> {
    let from = humantime::parse_rfc3339(from).ok()?;
    let to = match to {
        Some(t) => humantime::parse_rfc3339(t).ok()?,
        None => SystemTime::now(),
    };
    Some(to.duration_since(from).unwrap_or_default().as_millis() as u64)
}
