//! Secrets shared by a client and a server: random tokens, and the proof that a server holds a
//! token without the token ever being sent to it.
//!
//! The trust model (README "Security"): a client never sends its token to a server that has
//! not first proven it holds the same token. It asks `GET /health?challenge=C` with a fresh
//! random `C`; the server answers `proof = hex(HMAC-SHA256(key = token, message = C))`, which
//! the client checks in constant time. A process of another user listening on the port cannot
//! compute the proof, so it never sees the token. What a server says about itself (`user`,
//! `uid`) is information only.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

type HmacSha256 = hmac::Hmac<Sha256>;

/// Bytes of randomness in a token or a challenge.
const RANDOM_BYTES: usize = 32;

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

/// The server's answer to `challenge`: `hex(HMAC-SHA256(token, challenge))`.
pub fn proof(token: &str, challenge: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(token.as_bytes()).expect("HMAC takes any key size");
    mac.update(challenge.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a server's `proof` for `challenge` in constant time.
pub fn verify(token: &str, challenge: &str, proof: &str) -> bool {
    let Ok(given) = hex::decode(proof) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(token.as_bytes()).expect("HMAC takes any key size");
    mac.update(challenge.as_bytes());
    mac.verify_slice(&given).is_ok()
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
}
