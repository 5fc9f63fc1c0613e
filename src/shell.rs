//! Quoting for the POSIX shell on the server (`bash -lc`, and the login shell ssh starts).

/// Quotes `s` as one word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
