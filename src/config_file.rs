//! Reading a config file, `codexd`'s or `codex-remote`'s: JSON when the name ends in `.json`,
//! YAML otherwise (an empty file is an empty mapping).

use std::path::Path;

use crate::error::{Error, ErrorCode, Result};

/// Parses a config text: JSON for `.json` files, YAML otherwise.
pub fn parse_yaml_or_json<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    let is_json = path.extension().is_some_and(|e| e == "json");
    let parsed = if is_json {
        serde_json::from_str(text).map_err(|e| e.to_string())
    } else if text.trim().is_empty() {
        serde_saphyr::from_str("{}").map_err(|e| e.to_string())
    } else {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| Error::new(ErrorCode::ConfigError, format!("{}: {e}", path.display())))
}
