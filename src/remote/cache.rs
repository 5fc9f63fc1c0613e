//! The per-machine caches of `codex-remote`, under one rule: `<cache dir>/codex-remote/<kind>/
//! <escaped machine name>.json`, each entry stamped with the identity of the route it was made
//! for. An entry made for another route (the machine's config changed, or another config uses
//! the same name) is simply not found. The escape keeps names apart (`a.b` and `a_b` are two
//! files). Old files of another shape are not found either: they are caches.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// What a cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    /// The machine's `hello` answer (version check).
    Hello,
    /// The token fetched over ssh for an HTTP machine.
    Token,
    /// The local forward of a `use_direct_addr` machine.
    Tunnel,
}

impl CacheKind {
    fn dir(self) -> &'static str {
        match self {
            CacheKind::Hello => "hello",
            CacheKind::Token => "tokens",
            CacheKind::Tunnel => "tunnels",
        }
    }
}

/// The identity of the route a machine is reached by: what, if it changed, makes a cached
/// answer about the machine meaningless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "door", rename_all = "snake_case")]
pub enum RouteKey {
    Local {
        codexd: String,
        data_dir: Option<String>,
    },
    Ssh {
        destination: String,
        ssh_args: Vec<String>,
        codexd: String,
        data_dir: Option<String>,
    },
    Http {
        addr: String,
        /// The ssh route behind it (token fetch, forward), if any.
        ssh: Option<Box<RouteKey>>,
        /// `use_direct_addr`: the remote port the forward points at.
        remote_port: Option<u16>,
    },
}

/// One cache file's content.
#[derive(Serialize, Deserialize)]
struct Entry<T> {
    route: RouteKey,
    value: T,
}

/// `<cache dir>/codex-remote/<kind>/<escaped name>.json`.
pub fn machine_file(kind: CacheKind, name: &str) -> PathBuf {
    crate::platform::cache_dir()
        .join("codex-remote")
        .join(kind.dir())
        .join(format!("{}.json", escape(name)))
}

/// Letters, digits, `-` and `_` as they are; every other byte as `%XX`, so two names never
/// share a file.
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The cached value for `name`, when it was made for `route`.
pub fn load<T: DeserializeOwned>(kind: CacheKind, name: &str, route: &RouteKey) -> Option<T> {
    let bytes = std::fs::read(machine_file(kind, name)).ok()?;
    let entry: Entry<T> = serde_json::from_slice(&bytes).ok()?;
    (entry.route == *route).then_some(entry.value)
}

/// Stores `value` for `name` and `route` (0600 in a 0700 dir).
pub fn save<T: Serialize>(kind: CacheKind, name: &str, route: &RouteKey, value: &T) -> Result<()> {
    let path = machine_file(kind, name);
    if let Some(dir) = path.parent() {
        crate::platform::create_private_dir(dir)?;
    }
    crate::platform::write_json_atomic(&path, &Entry { route: route.clone(), value })
}

/// Drops the cached value for `name`.
pub fn forget(kind: CacheKind, name: &str) {
    let _ = std::fs::remove_file(machine_file(kind, name));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_used_to_collide_get_their_own_files() {
        assert_ne!(machine_file(CacheKind::Token, "a.b"), machine_file(CacheKind::Token, "a_b"));
        assert_ne!(machine_file(CacheKind::Token, "a/b"), machine_file(CacheKind::Token, "a_b"));
        assert_eq!(escape("gpu-1_x"), "gpu-1_x");
        assert_eq!(escape("a.b"), "a%2Eb");
        assert_eq!(escape("%2E"), "%252E");
        assert_eq!(escape("../x"), "%2E%2E%2Fx");
    }
}
