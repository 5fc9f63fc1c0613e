//! Reading a config file, `codexd`'s or `codex-remote`'s: JSON when the name ends in `.json`,
//! YAML otherwise (an empty file is an empty mapping). A key the program does not know is not
//! an error (a newer config on an older program must still load) but a warning on stderr that
//! names the nearest known key, so a typo (`ssh_contol`) does not pass unseen.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorCode, Result};

/// A config type that can name its keys, per level: `parent` is the dotted path of the mapping
/// the key is in (`""` at the top, `machines.0` for the first machine).
pub trait ConfigKeys {
    fn known_keys(parent: &str) -> Vec<&'static str>;
}

/// The field names of a struct, as serde knows them (for [`ConfigKeys`]).
pub fn fields_of<T: DeserializeOwned>() -> Vec<&'static str> {
    serde_aux::serde_introspection::serde_introspect::<T>().to_vec()
}

/// Parses a config text: JSON for `.json` files, YAML otherwise. Unknown keys are warned about
/// on stderr ([`unknown_keys`]).
pub fn parse_yaml_or_json<T: DeserializeOwned + ConfigKeys>(text: &str, path: &Path) -> Result<T> {
    let value: T = parse(text, path)?;
    for warning in unknown_keys::<T>(text, path) {
        crate::error::stderr_line(&format!("warning: {}: {warning}", path.display()));
    }
    Ok(value)
}

fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
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

/// One line per key of `text` that `T` does not know: `unknown key `machines.0.ssh_contol`
/// (did you mean `ssh_control`?)`. Empty when the text does not parse (its error says why).
pub fn unknown_keys<T: DeserializeOwned + ConfigKeys>(text: &str, path: &Path) -> Vec<String> {
    let Ok(value) = parse::<serde_json::Value>(text, path) else {
        return Vec::new();
    };
    let mut unknown = Vec::new();
    let _: std::result::Result<T, _> =
        serde_ignored::deserialize(value, |p| unknown.push(p.to_string()));
    unknown
        .into_iter()
        .map(|key| {
            let (parent, last) = key.rsplit_once('.').unwrap_or(("", &key));
            let nearest = T::known_keys(parent)
                .into_iter()
                .map(|k| (strsim::damerau_levenshtein(k, last), k))
                .filter(|(d, k)| *d <= (k.len() / 3).max(2))
                .min();
            match nearest {
                Some((_, k)) => format!("unknown key `{key}` (did you mean `{k}`?)"),
                None => format!("unknown key `{key}` (ignored)"),
            }
        })
        .collect()
}
