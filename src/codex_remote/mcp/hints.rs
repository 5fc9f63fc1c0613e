//! Hints for MCP: the errors' hints are written for the CLI ("pass --machine NAME", "`codex-remote
//! exec list --machine gpu1`", "(exec status)"); through MCP they name the tools and their
//! arguments instead.

/// The tools a CLI command maps to (`exec status` → `exec_status`).
const TOOLS: [&str; 7] =
    ["exec_start", "exec_status", "exec_logs", "exec_wait", "exec_cancel", "exec_list", "machines"];

/// `hint` with its CLI commands and flags in MCP's words.
pub fn for_mcp(hint: &str) -> String {
    let mut out = String::with_capacity(hint.len());
    let mut rest = hint;
    // Each `codex-remote …` in backticks becomes the tool call it stands for.
    while let Some(start) = rest.find("`codex-remote ") {
        let Some(len) = rest[start + 1..].find('`') else { break };
        let command = &rest[start + 1..start + 1 + len];
        out.push_str(&rest[..start]);
        out.push_str(&tool_call(command).unwrap_or_else(|| format!("`{command}`")));
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out.replace("pass --machine NAME", "pass the `machine` argument")
        .replace("(exec status)", "(exec_status)")
        .replace("--machine NAME", "the `machine` argument")
}

/// `codex-remote exec list --machine gpu1` → `` `exec_list` with {"machine":"gpu1"} ``; `None`
/// for a command that is no tool.
fn tool_call(command: &str) -> Option<String> {
    let words: Vec<&str> = command.split_whitespace().skip(1).collect();
    let flags_at = words.iter().position(|w| w.starts_with("--")).unwrap_or(words.len());
    let (names, mut rest) = words.split_at(flags_at);
    let (tool, positional) = match names {
        [a, b, id] => (format!("{a}_{b}"), Some(*id)),
        [a, b] => (format!("{a}_{b}"), None),
        [a] => (a.to_string(), None),
        _ => return None,
    };
    if !TOOLS.contains(&tool.as_str()) {
        return None;
    }
    let mut arguments = serde_json::Map::new();
    if let Some(id) = positional {
        arguments.insert("exec_id".into(), id.into());
    }
    while let [flag, value, more @ ..] = rest {
        let name = flag.strip_prefix("--")?.replace('-', "_");
        arguments.insert(name, (*value).into());
        rest = more;
    }
    if !rest.is_empty() {
        return None;
    }
    Some(if arguments.is_empty() {
        format!("`{tool}`")
    } else {
        format!("`{tool}` with {}", serde_json::Value::Object(arguments))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_hints_name_tools_and_arguments() {
        let hint = "jobs are kept per machine: if it ran elsewhere, pass --machine NAME \
                    (`codex-remote exec list --machine gpu1` lists this one's jobs)";
        assert_eq!(
            for_mcp(hint),
            "jobs are kept per machine: if it ran elsewhere, pass the `machine` argument \
             (`exec_list` with {\"machine\":\"gpu1\"} lists this one's jobs)"
        );
        assert_eq!(for_mcp("look at job X (exec status)"), "look at job X (exec_status)");
        let up = "run `codex-remote machine up gpu1`";
        assert_eq!(for_mcp(up), up);
    }
}
