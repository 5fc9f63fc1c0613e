//! The checks both HTTP servers of this crate make (`codexd serve` and `codex-remote
//! dashboard`): which `Host` names a request may carry, so a DNS-rebinding page (`evil.example`
//! resolving to 127.0.0.1) is refused, and the token of an `Authorization: Bearer` header.

use axum::http::{HeaderMap, header};

/// Whether a `Host` header (any port) names a loopback address (`localhost`, 127.0.0.0/8,
/// `[::1]`) or one of `allowed` (names or addresses, any case).
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(n, _)| n),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// The token of `Authorization: Bearer TOKEN`; the scheme is case-insensitive (RFC 7235), so
/// `bearer` and `BEARER` work too.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_allowed_ones_pass() {
        let none: Vec<String> = vec![];
        let ok_hosts = ["localhost", "localhost:7337", "127.0.0.1:1", "127.1.2.3", "[::1]:7337"];
        for ok in ok_hosts.into_iter().chain(["LocalHost:7337", "[::1]"]) {
            assert!(host_allowed(ok, &none), "{ok}");
        }
        for bad in ["evil.example", "evil.example:7337", "10.0.0.1:7337", "", "localhost.evil"] {
            assert!(!host_allowed(bad, &none), "{bad}");
        }
        assert!(host_allowed("gpu1:7337", &["GPU1".to_string()]));
        assert!(host_allowed("[fe80::1]:80", &["fe80::1".to_string()]));
        assert!(host_allowed("192.168.1.5:8787", &["192.168.1.5".to_string()]));
        assert!(!host_allowed("192.168.1.6:8787", &["192.168.1.5".to_string()]));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            bearer(&h).map(String::from)
        };
        for ok in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR  abc"] {
            assert_eq!(with(ok).as_deref(), Some("abc"), "{ok}");
        }
        for bad in ["Basic abc", "Bearerabc", "abc", "Token abc"] {
            assert_eq!(with(bad), None, "{bad}");
        }
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
