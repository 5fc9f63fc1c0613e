//! [`ExecId`]: a job id, validated wherever one is read (a request line, an HTTP path, a CLI
//! flag, an MCP argument), so no code past the door holds an id that could name a path
//! outside the store (`../../etc`).
//!
//! An id is a UUID v7 in its hyphenated lower-case form (36 characters): its text sorts by
//! creation time, which `exec list` and `last` rely on. The original Go tool's ids (32 hex
//! digits) are refused with an error that says so.

use std::fmt;
use std::ops::Deref;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode};

/// A job id this codexd made (or could have made): a hyphenated lower-case UUID v7.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExecId(String);

impl ExecId {
    /// A new, time-sortable id.
    pub fn new_v7() -> ExecId {
        ExecId(uuid::Uuid::now_v7().hyphenated().to_string())
    }

    /// Checks `text`: an `ExecId`, or `invalid_id` (saying so when it is a Go-era id).
    pub fn parse(text: &str) -> Result<ExecId, Error> {
        let ok = text.len() == 36
            && uuid::Uuid::try_parse(text)
                .is_ok_and(|u| u.get_version_num() == 7 && u.hyphenated().to_string() == text);
        if ok {
            Ok(ExecId(text.to_string()))
        } else if is_go_era_id(text) {
            Err(Error::new(
                ErrorCode::InvalidId,
                format!(
                    "{text} is a job id of the original Go codex-runner (32 hex digits); this \
                     codexd's ids are UUID v7 (36 characters, e.g. 019a2b3c-...): the Go \
                     daemon's jobs are not in this store"
                ),
            )
            .with_hint(
                "start the job again with this codex-remote; `exec list` shows this store's jobs",
            ))
        } else {
            Err(Error::new(ErrorCode::InvalidId, format!("{text:?} is not a job id")))
        }
    }

    /// Checks `text` as a request may give it (capability `id_refs`): a whole id, `last`, or
    /// a prefix of one (hex digits and `-`, shorter than an id), for codexd to resolve before
    /// it reads the store ([`ExecId::is_whole`]). A reference cannot name a path: no `/`, no
    /// `.`.
    pub fn parse_ref(text: &str) -> Result<ExecId, Error> {
        let prefix = !text.is_empty()
            && text.len() < 36
            && !is_go_era_id(text)
            && text.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        if text == "last" || prefix { Ok(ExecId(text.to_string())) } else { ExecId::parse(text) }
    }

    /// Whether this is a whole id, not a reference still to be resolved ([`ExecId::parse_ref`]).
    pub fn is_whole(&self) -> bool {
        self.0.len() == 36
    }

    /// serde's `deserialize_with` for the `exec_id` of requests: [`ExecId::parse_ref`].
    pub fn deserialize_ref<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ExecId, D::Error> {
        let text = String::deserialize(d)?;
        ExecId::parse_ref(&text).map_err(serde::de::Error::custom)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `text` looks like a job id of the original Go tool (32 hex digits).
pub fn is_go_era_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

impl TryFrom<String> for ExecId {
    type Error = Error;

    fn try_from(text: String) -> Result<ExecId, Error> {
        ExecId::parse(&text)
    }
}

impl From<ExecId> for String {
    fn from(id: ExecId) -> String {
        id.0
    }
}

impl FromStr for ExecId {
    type Err = Error;

    fn from_str(text: &str) -> Result<ExecId, Error> {
        ExecId::parse(text)
    }
}

impl Deref for ExecId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ExecId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A job's directory is named by its id.
impl AsRef<Path> for ExecId {
    fn as_ref(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl fmt::Display for ExecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for ExecId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ExecId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_hyphenated_lower_case_v7_is_an_id() {
        let id = ExecId::new_v7();
        assert_eq!(ExecId::parse(&id).unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ExecId>(&json).unwrap(), id);
        for bad in [
            "",
            "../../etc",
            "last",
            &id[..8],
            &id.to_uppercase(),
            &id.replace('-', ""),
            "0190c7e2-1b2c-4d3e-8f4a-5b6c7d8e9f00", // v4
        ] {
            let err = ExecId::parse(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidId, "{bad}");
            assert!(serde_json::from_value::<ExecId>(bad.into()).is_err(), "{bad}");
        }
        let go = ExecId::parse("0123456789abcdef0123456789abcdef").unwrap_err();
        assert!(go.message.contains("original Go"), "{}", go.message);
        assert!(go.hint.is_some());
    }
}
