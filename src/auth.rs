//! Secrets shared by a client and a server: random tokens, the proof that a server holds a
//! token, and requests signed with it, so the token itself never crosses the wire.
//!
//! The trust model (README "Security model"): a client asks `GET /health?challenge=C` with a
//! fresh random `C`; the server picks a fresh `nonce` N, remembers it for [`NONCE_TTL`], and
//! answers `nonce_proof = HMAC(token, health text of C, N, uid, user)` ([`health_proof`]), which
//! the client checks in constant time. The next request carries no token but
//! `Authorization: Codexd-HMAC-SHA256 nonce=N,cnonce=C,ts=T,body=D,sig=S` ([`Signed`]): `S` is an
//! HMAC under the token of the method, the path and query, `D` (the SHA-256 of the request line
//! of `/v1/rpc`, or of the whole body elsewhere), the time `T` and both nonces. The server
//! accepts each of its nonces once ([`Nonces`]). The bytes after `/v1/rpc`'s request line go
//! in chunks, each with a MAC under a key derived from the token and the signature
//! ([`MacWriter`], [`MacReader`]), so not one byte of a request escapes it. So a relay between
//! the client and the real
//! server (another user's listener on a squatted port, or one that forwards `/health`) sees
//! nothing it can replay (the nonce is spent) or alter (the signature covers the request), and
//! a server that does not hold the token cannot prove that it does. What a server says about
//! itself (`user`, `uid`) is bound into the proof but is information only.
//!
//! The older scheme (`proof = HMAC(token, C)`, then `Authorization: Bearer TOKEN`) is what the
//! original tool's clients speak; `codexd serve` still accepts it when its config has
//! `allow_bearer: true`, and it is weaker: a relay that captures the token can reuse it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

mod stream;

pub use stream::{MAX_STREAM_CHUNK, MacReader, MacWriter, STREAM_CHUNK, StreamKey};

type HmacSha256 = hmac::Hmac<Sha256>;

/// Bytes of randomness in a token or a challenge.
const RANDOM_BYTES: usize = 32;

/// The `Authorization` scheme of a signed request.
pub const SCHEME: &str = "Codexd-HMAC-SHA256";

/// How long a nonce of `/health` may be used (once).
pub const NONCE_TTL: Duration = Duration::from_secs(60);

/// How far a signed request's time may be from the server's clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Nonces held at most; past it the oldest is forgotten (its request is refused).
const MAX_NONCES: usize = 4096;

/// A fresh random secret: 256 bits from the OS, as 64 hex digits.
pub fn random_token() -> Result<String> {
    let mut bytes = [0u8; RANDOM_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| Error::internal("reading the OS random source", e))?;
    Ok(hex::encode(bytes))
}

/// Whether `challenge` has the shape a client sends (16 to 128 hex digits): anything else is
/// refused before it is hashed.
pub fn challenge_ok(challenge: &str) -> bool {
    (16..=128).contains(&challenge.len()) && challenge.bytes().all(|b| b.is_ascii_hexdigit())
}

fn mac(token: &str, text: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(token.as_bytes()).expect("HMAC takes any key size");
    mac.update(text);
    mac
}

fn verify_mac(token: &str, text: &[u8], given_hex: &str) -> bool {
    hex::decode(given_hex).is_ok_and(|given| mac(token, text).verify_slice(&given).is_ok())
}

/// The older proof (for the original tool's clients, which then send the token as Bearer):
/// `hex(HMAC-SHA256(token, challenge))`.
pub fn proof(token: &str, challenge: &str) -> String {
    hex::encode(mac(token, challenge.as_bytes()).finalize().into_bytes())
}

/// Checks an older `proof` for `challenge` in constant time.
pub fn verify(token: &str, challenge: &str, proof: &str) -> bool {
    verify_mac(token, challenge.as_bytes(), proof)
}

/// What `/health` proves: the client's challenge, the server's nonce and who the server says
/// it is, each on its own line after a label (no field can run into the next: none holds `\n`).
fn health_text(challenge: &str, nonce: &str, uid: u32, user: &str) -> String {
    format!("codexd-health-v2\n{challenge}\n{nonce}\n{uid}\n{}", user.replace('\n', " "))
}

/// The server's `nonce_proof` for a client's `challenge` and its own `nonce`.
pub fn health_proof(token: &str, challenge: &str, nonce: &str, uid: u32, user: &str) -> String {
    let text = health_text(challenge, nonce, uid, user);
    hex::encode(mac(token, text.as_bytes()).finalize().into_bytes())
}

/// Checks a `nonce_proof` in constant time.
pub fn verify_health_proof(
    token: &str,
    challenge: &str,
    nonce: &str,
    uid: u32,
    user: &str,
    given: &str,
) -> bool {
    verify_mac(token, health_text(challenge, nonce, uid, user).as_bytes(), given)
}

/// `hex(SHA-256(bytes))`: the body digest of a signed request.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One signed request: what its signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub method: String,
    /// The path with its query, as sent (`/v1/rpc`).
    pub path_and_query: String,
    /// `hex(SHA-256)` of the request line (`/v1/rpc`) or of the whole body (other routes).
    pub body: String,
    /// Seconds since the Unix epoch at the client.
    pub ts: u64,
    /// The server's nonce from `/health`.
    pub nonce: String,
    /// The client's challenge of that `/health`.
    pub cnonce: String,
    /// The scheme's version: 2 frames the bytes after `/v1/rpc`'s request line in MAC'd chunks
    /// ([`MacWriter`]); 1 (an older client, no `v=` field) leaves them unsigned, so serve
    /// refuses to read them.
    pub version: u8,
}

impl Signed {
    fn text(&self) -> String {
        let Signed { method, path_and_query, body, ts, nonce, cnonce, version } = self;
        format!(
            "codexd-request-v{version}\n{method}\n{path_and_query}\n{body}\n{ts}\n{nonce}\n{cnonce}"
        )
    }

    /// The key of this request's streamed body ([`MacWriter`], [`MacReader`]): derived from
    /// the token and the request's signature, so it is new with each (one-use) nonce and a
    /// chunk of one request is worth nothing in another.
    pub fn stream_key(&self, token: &str) -> StreamKey {
        let sig = mac(token, self.text().as_bytes()).finalize().into_bytes();
        let mut key = mac(token, b"codexd-stream-v1\n");
        key.update(&sig);
        StreamKey::new(key.finalize().into_bytes().into())
    }

    /// The value of the `Authorization` header: the signature under `token`, and the fields the
    /// server cannot know by itself.
    pub fn authorization(&self, token: &str) -> String {
        let sig = hex::encode(mac(token, self.text().as_bytes()).finalize().into_bytes());
        let Signed { body, ts, nonce, cnonce, version, .. } = self;
        let v = if *version == 1 { String::new() } else { format!(",v={version}") };
        format!("{SCHEME} nonce={nonce},cnonce={cnonce},ts={ts},body={body}{v},sig={sig}")
    }

    /// Reads an `Authorization` value of [`SCHEME`] for a request with this method and path:
    /// the fields and the signature, or `None` when it is not one.
    pub fn parse(method: &str, path_and_query: &str, value: &str) -> Option<(Signed, String)> {
        let (scheme, rest) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            return None;
        }
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for part in rest.split(',') {
            let (k, v) = part.trim().split_once('=')?;
            fields.insert(k, v);
        }
        let hex_field = |k: &str| fields.get(k).filter(|v| challenge_ok(v)).map(|v| v.to_string());
        let signed = Signed {
            method: method.to_string(),
            path_and_query: path_and_query.to_string(),
            body: hex_field("body")?,
            ts: fields.get("ts")?.parse().ok()?,
            nonce: hex_field("nonce")?,
            cnonce: hex_field("cnonce")?,
            version: match fields.get("v") {
                None => 1,
                Some(&"2") => 2,
                Some(_) => return None,
            },
        };
        Some((signed, hex_field("sig")?))
    }

    /// Whether `sig` is this request's signature under `token` (constant time).
    pub fn verify(&self, token: &str, sig: &str) -> bool {
        verify_mac(token, self.text().as_bytes(), sig)
    }

    /// Whether the signing time is within [`MAX_CLOCK_SKEW`] of `now` (Unix seconds).
    pub fn fresh_at(&self, now: u64) -> bool {
        now.abs_diff(self.ts) <= MAX_CLOCK_SKEW.as_secs()
    }
}

/// The nonces a server handed out in `/health` and not yet used: each is accepted once, and only
/// within [`NONCE_TTL`]. In memory: a restarted server forgets them (their requests are refused
/// and the client asks again).
#[derive(Debug, Default)]
pub struct Nonces {
    issued: Mutex<HashMap<String, Instant>>,
}

impl Nonces {
    /// A fresh nonce, remembered.
    pub fn issue(&self) -> Result<String> {
        let nonce = random_token()?;
        let now = Instant::now();
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        if issued.len() >= MAX_NONCES {
            issued.retain(|_, at| now.duration_since(*at) < NONCE_TTL);
        }
        if issued.len() >= MAX_NONCES
            && let Some(oldest) = issued.iter().min_by_key(|(_, at)| **at).map(|(n, _)| n.clone())
        {
            issued.remove(&oldest);
        }
        issued.insert(nonce.clone(), now);
        Ok(nonce)
    }

    /// Uses `nonce`: true once for a nonce issued less than [`NONCE_TTL`] ago, false after.
    pub fn take(&self, nonce: &str) -> bool {
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued.remove(nonce).is_some_and(|at| at.elapsed() < NONCE_TTL)
    }
}

/// Compares two secrets in constant time (for the length of the shorter one).
pub fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_verifies_only_with_the_same_token_and_challenge() {
        let token = random_token().unwrap();
        let challenge = random_token().unwrap();
        assert_eq!(token.len(), 64);
        assert_ne!(token, challenge);
        let p = proof(&token, &challenge);
        assert!(verify(&token, &challenge, &p));
        assert!(!verify("other", &challenge, &p));
        assert!(!verify(&token, "00", &p));
        assert!(!verify(&token, &challenge, "zz"));
        assert!(!verify(&token, &challenge, ""));
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            proof("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn challenges_are_hex_of_a_sane_length() {
        assert!(challenge_ok(&"a".repeat(16)));
        assert!(!challenge_ok("abc"));
        assert!(!challenge_ok(&"g".repeat(32)));
        assert!(!challenge_ok(&"a".repeat(129)));
    }

    #[test]
    fn the_health_proof_binds_challenge_nonce_and_identity() {
        let (t, c, n) = (random_token().unwrap(), random_token().unwrap(), random_token().unwrap());
        let p = health_proof(&t, &c, &n, 1000, "alice");
        assert!(verify_health_proof(&t, &c, &n, 1000, "alice", &p));
        assert!(!verify_health_proof("other", &c, &n, 1000, "alice", &p));
        assert!(!verify_health_proof(&t, &n, &c, 1000, "alice", &p));
        assert!(!verify_health_proof(&t, &c, &c, 1000, "alice", &p));
        assert!(!verify_health_proof(&t, &c, &n, 1001, "alice", &p));
        assert!(!verify_health_proof(&t, &c, &n, 1000, "mallory", &p));
        // Not the older proof: an answer of one scheme is no answer of the other.
        assert!(!verify(&t, &c, &p));
    }

    /// A signed request and its token.
    pub(super) fn sample() -> (String, Signed) {
        let signed = Signed {
            method: "POST".into(),
            path_and_query: "/v1/rpc".into(),
            body: sha256_hex(b"{\"type\":\"list\"}"),
            ts: unix_now(),
            nonce: random_token().unwrap(),
            cnonce: random_token().unwrap(),
            version: 2,
        };
        (random_token().unwrap(), signed)
    }

    #[test]
    fn a_signature_round_trips_through_its_header() {
        let (token, signed) = sample();
        let header = signed.authorization(&token);
        assert!(!header.contains(&token), "the token itself is never in the header");
        let (parsed, sig) = Signed::parse("POST", "/v1/rpc", &header).unwrap();
        assert_eq!(parsed, signed);
        assert!(parsed.verify(&token, &sig));
        assert!(!parsed.verify("other", &sig));
        assert!(Signed::parse("POST", "/v1/rpc", &format!("Bearer {token}")).is_none());
        assert!(Signed::parse("POST", "/v1/rpc", &header.replace("sig=", "sag=")).is_none());
    }

    #[test]
    fn a_changed_method_path_body_time_or_nonce_fails() {
        let (token, signed) = sample();
        let header = signed.authorization(&token);
        let (_, sig) = Signed::parse("POST", "/v1/rpc", &header).unwrap();
        let changed: [fn(&mut Signed); 7] = [
            |s| s.method = "GET".into(),
            |s| s.path_and_query = "/v1/rpc?x=1".into(),
            |s| s.body = sha256_hex(b"{\"type\":\"exec_start\"}"),
            |s| s.ts += 1,
            |s| s.nonce = random_token().unwrap(),
            |s| s.cnonce = random_token().unwrap(),
            |s| s.version = 1,
        ];
        for (i, change) in changed.iter().enumerate() {
            let mut other = signed.clone();
            change(&mut other);
            assert!(!other.verify(&token, &sig), "change {i} still verifies");
        }
        assert!(signed.verify(&token, &sig));
    }

    #[test]
    fn a_signature_is_fresh_only_near_the_server_clock() {
        let (_, signed) = sample();
        assert!(signed.fresh_at(signed.ts + 10));
        assert!(signed.fresh_at(signed.ts - 10));
        assert!(!signed.fresh_at(signed.ts + MAX_CLOCK_SKEW.as_secs() + 1));
        assert!(!signed.fresh_at(signed.ts - MAX_CLOCK_SKEW.as_secs() - 1));
    }

    #[test]
    fn a_nonce_is_accepted_once_and_only_if_issued() {
        let nonces = Nonces::default();
        let n = nonces.issue().unwrap();
        assert!(!nonces.take(&random_token().unwrap()));
        assert!(nonces.take(&n));
        assert!(!nonces.take(&n), "a nonce is spent by its first use");
        for _ in 0..MAX_NONCES + 10 {
            nonces.issue().unwrap();
        }
        assert!(nonces.issued.lock().unwrap().len() <= MAX_NONCES);
    }

    #[test]
    fn a_version_2_header_round_trips_and_a_version_1_header_has_no_v() {
        let (token, mut signed) = sample();
        let header = signed.authorization(&token);
        assert!(header.contains(",v=2,"), "{header}");
        assert_eq!(Signed::parse("POST", "/v1/rpc", &header).unwrap().0.version, 2);
        signed.version = 1;
        let header = signed.authorization(&token);
        assert!(!header.contains("v="), "{header}");
        let (parsed, sig) = Signed::parse("POST", "/v1/rpc", &header).unwrap();
        assert!(parsed.version == 1 && parsed.verify(&token, &sig));
        assert!(Signed::parse("POST", "/v1/rpc", &header.replace(",sig", ",v=3,sig")).is_none());
    }
}
