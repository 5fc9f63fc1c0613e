//! The shell on the server: quoting for it (`bash -lc`, and the login shell ssh starts), and
//! the words that run a command string with it.

/// Quotes `s` as one word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Shells that take `-l` (a login shell reads the profile, where conda and module setups live).
const LOGIN_SHELLS: &[&str] = &["bash", "sh", "zsh", "ksh", "dash", "ash", "mksh", "fish"];

/// The words that run a command string with `shell`, as the original tool read `--shell`: a
/// bare shell name gets `-lc` (`-c` for a shell without a login mode), so `--shell bash` runs
/// `bash -lc CMD`; words with a flag (`bash -c`, `python3 -c`) are taken as given.
pub fn shell_words(shell: &str) -> Vec<String> {
    let mut words: Vec<String> = shell.split_whitespace().map(String::from).collect();
    if let [only] = words.as_slice() {
        let name = only.rsplit('/').next().unwrap_or(only);
        let flag = if LOGIN_SHELLS.contains(&name) { "-lc" } else { "-c" };
        words.push(flag.to_string());
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_shell_name_gets_its_command_flag() {
        assert_eq!(shell_words("bash"), ["bash", "-lc"]);
        assert_eq!(shell_words("/bin/sh"), ["/bin/sh", "-lc"]);
        assert_eq!(shell_words("python3"), ["python3", "-c"]);
        assert_eq!(shell_words("bash -c"), ["bash", "-c"]);
        assert_eq!(shell_words("bash -lc"), ["bash", "-lc"]);
        assert!(shell_words("  ").is_empty());
    }
}
