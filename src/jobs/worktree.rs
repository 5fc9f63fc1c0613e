//! A project job's git worktree, `<data_dir>/worktrees/<id>/`, and the git plumbing shared with
//! `daemon::projects`: git run so it never waits on a prompt, and the per-mirror flock.
//!
//! A worktree goes with its job's retention: `exec rm` and prune (which never remove a job that
//! runs or has a live process) call [`JobStore::release_worktree`] once the job is gone.
//! It lives outside the job dir because the job dir is built in `new/` and renamed: git records
//! a worktree's path, and a moved one would look abandoned to `git worktree prune`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::store::JobStore;
use crate::error::Result;
use crate::lockfile::{self, LockGuard};

/// `git ARGS` that never prompts (no terminal, no askpass): a repo that needs a password fails
/// with git's message instead of hanging the call.
pub fn git(args: &[&str]) -> Command {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .stdin(Stdio::null());
    cmd
}

/// Runs a git command: its stdout (trimmed), or its own error message (stderr) on failure.
pub fn run_git(mut cmd: Command) -> std::result::Result<String, String> {
    let out = cmd.output().map_err(|e| format!("running git: {e}"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(if stderr.is_empty() { format!("git failed ({})", out.status) } else { stderr })
}

/// `git --git-dir MIRROR ARGS`.
pub fn git_in(mirror: &Path, args: &[&str]) -> Command {
    let mut cmd = git(&["--git-dir"]);
    cmd.arg(mirror).args(args);
    cmd
}

/// The flock of one mirror, `<mirror>.lock` beside it: held while it is cloned, fetched, and
/// while worktrees are added to or removed from it.
pub fn lock_mirror(mirror: &Path) -> Result<LockGuard> {
    if let Some(parent) = mirror.parent() {
        crate::platform::create_private_dir(parent)?;
    }
    lockfile::lock(&with_suffix(mirror, ".lock"))
}

/// `path` with `suffix` added to its last component (`a.git` -> `a.git.lock`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// The mirror a worktree belongs to, from its `.git` file (`gitdir: MIRROR/worktrees/NAME`).
fn mirror_of(worktree: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(worktree.join(".git")).ok()?;
    let admin = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
    Some(admin.parent()?.parent()?.to_path_buf())
}

impl JobStore {
    /// Where job `id`'s worktree is checked out, if it has one.
    pub fn worktree_dir(&self, id: &str) -> PathBuf {
        self.root().join("worktrees").join(id)
    }

    /// Removes job `id`'s worktree (`git worktree remove --force`, then `git worktree prune`
    /// for what git still recorded), if it has one. Called once the job is removed; a failure
    /// is left for git's own pruning.
    pub fn release_worktree(&self, id: &str) {
        let worktree = self.worktree_dir(id);
        if !worktree.exists() {
            return;
        }
        let mirror = mirror_of(&worktree);
        let _lock = mirror.as_deref().and_then(|m| lock_mirror(m).ok());
        if let Some(mirror) = &mirror {
            let mut remove = git_in(mirror, &["worktree", "remove", "--force"]);
            remove.arg(&worktree);
            let _ = run_git(remove);
        }
        if worktree.exists() {
            let _ = std::fs::remove_dir_all(&worktree);
        }
        if let Some(mirror) = &mirror {
            let _ = run_git(git_in(mirror, &["worktree", "prune"]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_beside_a_path() {
        assert_eq!(with_suffix(Path::new("/d/p.git"), ".lock"), Path::new("/d/p.git.lock"));
    }

    #[test]
    fn a_worktree_names_its_mirror() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".git"), "gitdir: /d/projects/p.git/worktrees/abc\n")
            .unwrap();
        assert_eq!(mirror_of(dir.path()).unwrap(), Path::new("/d/projects/p.git"));
    }
}
