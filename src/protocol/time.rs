//! Times in status objects and on the wire: RFC 3339 with milliseconds, UTC. The one clock
//! formatter of the crate, for codexd's job store and codex-remote's reports alike.

use std::time::{SystemTime, UNIX_EPOCH};

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

/// Reads a `--since`/`--until` time: a duration before now (`10m`, `1h30m`, `90s`) or an
/// RFC 3339 time in UTC (`2026-01-01T00:30:00Z`). Returns Unix milliseconds.
pub fn parse_log_time(text: &str, now: SystemTime) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(unix_ms(now.checked_sub(ago).unwrap_or(UNIX_EPOCH)));
    }
    humantime::parse_rfc3339_weak(text).map(unix_ms).map_err(|_| {
        format!(
            "{text:?} is not a time: give a duration before now (10m, 1h30m, 90s) or an RFC 3339 \
             time in UTC (2026-01-01T00:30:00Z)"
        )
    })
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn times_are_durations_before_now_or_rfc3339() {
        let now = UNIX_EPOCH + std::time::Duration::from_secs(10_000);
        assert_eq!(parse_log_time("10m", now), Ok(10_000_000 - 600_000));
        assert_eq!(parse_log_time("1970-01-01T00:00:01Z", now), Ok(1000));
        assert!(parse_log_time("yesterday", now).unwrap_err().contains("RFC 3339"));
    }
}
