//! `codex-remote skills install`: the Agent Skills of `skills/` (a `SKILL.md` with YAML
//! frontmatter and scripts that call `codex-remote`, one folder per skill) carried inside the
//! binary and written where Codex (`$CODEX_HOME/skills`, default `~/.codex/skills`) and Claude
//! Code (`~/.claude/skills`) look for them.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Serialize;

use super::emit;
use crate::error::{Error, Result, exit};

/// A file of `skills/`: its path there and its text, at build time.
macro_rules! skill_file {
    ($path:literal) => {
        ($path, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/skills/", $path)))
    };
}

/// Every file of every skill, by its path under `skills/`, as it was at build time.
const FILES: &[(&str, &str)] = &[
    skill_file!("codex-remote-submit/SKILL.md"),
    skill_file!("codex-remote-submit/scripts/submit.sh"),
    skill_file!("codex-remote-submit/scripts/wait_result.sh"),
    skill_file!("codex-remote-files/SKILL.md"),
    skill_file!("codex-remote-files/scripts/push_tree.sh"),
    skill_file!("codex-remote-files/scripts/fetch_file.sh"),
    skill_file!("codex-remote-machine/SKILL.md"),
    skill_file!("codex-remote-machine/scripts/check_machine.sh"),
    skill_file!("codex-remote-gpus/SKILL.md"),
    skill_file!("codex-remote-gpus/scripts/gpu_status.sh"),
    skill_file!("codex-remote-gpus/scripts/submit_gpu.sh"),
    skill_file!("codex-remote-troubleshoot/SKILL.md"),
    skill_file!("codex-remote-troubleshoot/scripts/triage.sh"),
];

#[derive(Debug, Subcommand)]
pub enum SkillsCommand {
    /// Write the skills where coding agents load them (default: for Codex and Claude Code).
    #[command(after_help = "Examples:
  codex-remote skills install
  codex-remote skills install --claude
  codex-remote skills install --dir ./.claude/skills")]
    Install(InstallArgs),
    /// List the skills this binary carries.
    #[command(after_help = "Examples:
  codex-remote skills list")]
    List,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Into `$CODEX_HOME/skills` (default `~/.codex/skills`).
    #[arg(long)]
    codex: bool,
    /// Into `~/.claude/skills`.
    #[arg(long)]
    claude: bool,
    /// Into this directory (a project's `.claude/skills`, say).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Serialize)]
struct Installed {
    #[serde(rename = "type")]
    kind: &'static str,
    skills: Vec<&'static str>,
    dirs: Vec<String>,
    files: usize,
}

/// The skills' names, in order.
fn names() -> Vec<&'static str> {
    let mut names: Vec<&str> =
        FILES.iter().filter_map(|(path, _)| path.strip_suffix("/SKILL.md")).collect();
    names.dedup();
    names
}

pub fn run(cmd: SkillsCommand) -> Result<u8> {
    match cmd {
        SkillsCommand::List => {
            emit(&serde_json::json!({"type": "skills", "skills": names()}))?;
        }
        SkillsCommand::Install(args) => {
            let home = crate::platform::home_dir();
            let mut dirs = Vec::new();
            let all = !args.codex && !args.claude && args.dir.is_none();
            if args.codex || all {
                let codex = std::env::var_os("CODEX_HOME")
                    .filter(|h| !h.is_empty())
                    .map_or_else(|| home.join(".codex"), PathBuf::from);
                dirs.push(codex.join("skills"));
            }
            if args.claude || all {
                dirs.push(home.join(".claude").join("skills"));
            }
            dirs.extend(args.dir);
            for dir in &dirs {
                for (path, text) in FILES {
                    write_file(&dir.join(path), text)?;
                }
            }
            emit(&Installed {
                kind: "skills_installed",
                skills: names(),
                dirs: dirs.iter().map(|d| d.display().to_string()).collect(),
                files: FILES.len() * dirs.len(),
            })?;
        }
    }
    Ok(exit::OK)
}

/// Writes one file whole (a temp file in its directory, renamed over the old one); scripts
/// are executable.
fn write_file(path: &Path, text: &str) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let fail = |e: std::io::Error| Error::file_io(format!("writing {}", path.display()), e);
    std::fs::create_dir_all(parent).map_err(fail)?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(fail)?;
    tmp.write_all(text.as_bytes()).map_err(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if path.extension().is_some_and(|e| e == "sh") { 0o755 } else { 0o644 };
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
            .map_err(fail)?;
    }
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_skill_has_a_name_and_a_description_in_its_frontmatter() {
        let skills: Vec<_> = FILES.iter().filter(|(p, _)| p.ends_with("/SKILL.md")).collect();
        assert_eq!(skills.len(), 5);
        for (path, text) in skills {
            let folder = path.strip_suffix("/SKILL.md").unwrap();
            let front = text.strip_prefix("---\n").and_then(|t| t.split_once("\n---\n"));
            let (front, body) = front.unwrap_or_else(|| panic!("{path}: no frontmatter"));
            let field = |key: &str| {
                front.lines().find_map(|l| l.strip_prefix(&format!("{key}: "))).map(str::trim)
            };
            // Agent Skills: `name` is the folder's, lowercase letters, digits and hyphens.
            assert_eq!(field("name"), Some(folder), "{path}");
            assert!(
                folder.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            );
            let description = field("description").unwrap_or_default();
            assert!((20..=1024).contains(&description.len()), "{path}: {description:?}");
            assert!(body.contains("scripts/"), "{path} names its scripts");
        }
    }
}
