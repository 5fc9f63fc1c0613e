//! Projects: repositories of codexd's config (`projects:`) that a job runs at a ref of.
//!
//! codexd keeps a bare mirror of each (`git clone --mirror` on first use; `git fetch` when the
//! ref is unknown or names a branch, so a branch is always its newest commit and a tag or commit
//! costs no network), resolves the ref to a commit and checks that commit out in a worktree of
//! the job's own (`<data_dir>/worktrees/<id>`, removed with the job: `jobs/worktree.rs`). The
//! job's `cwd` is relative to that worktree. A flock per mirror keeps concurrent starts on one
//! project apart. All of it happens inside the `exec_start` call, before the answer, so an agent
//! forwarded with that call (`ssh -A`) can fetch a private repo.

use std::path::{Component, Path, PathBuf};

use super::config::{DaemonConfig, Project};
use crate::error::{Error, Result};
use crate::jobs::worktree::{git, git_in, lock_mirror, run_git, with_suffix};
use crate::protocol::Checkout;

/// The ref a job runs at unless it names one: the repo's default branch.
pub const DEFAULT_REF: &str = "HEAD";

/// The project `id` of the config, or `invalid_argument` naming the ones there are.
pub fn find<'a>(config: &'a DaemonConfig, id: &str) -> Result<&'a Project> {
    config.projects.iter().find(|p| p.id == id).ok_or_else(|| {
        let known: Vec<&str> = config.projects.iter().map(|p| p.id.as_str()).collect();
        let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
        Error::invalid(format!("unknown project {id:?}; this codexd's projects: {known}"))
            .with_hint("projects are set in codexd's config (`projects:` in ~/.codexd/config.yaml)")
    })
}

/// Checks a ref before it reaches git's command line (no option, no NUL, no whitespace).
pub fn check_ref(git_ref: &str) -> Result<()> {
    if git_ref.is_empty()
        || git_ref.starts_with('-')
        || git_ref.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::invalid(format!(
            "ref {git_ref:?}: a branch, tag or commit, not empty, not starting with '-'"
        )));
    }
    Ok(())
}

/// A project job's `cwd`: a relative path that stays inside the worktree (default: its top).
pub fn relative_cwd(cwd: Option<&str>) -> Result<PathBuf> {
    let cwd = cwd.unwrap_or("");
    let refuse = |why: &str| {
        Error::invalid(format!("cwd {cwd:?}: {why}"))
            .with_hint("with a project, cwd is a path inside the repo, e.g. `src/train`")
    };
    if cwd.contains('\0') {
        return Err(refuse("contains a NUL byte"));
    }
    if cwd.starts_with('~') {
        return Err(refuse("is relative to the project's worktree, not the home"));
    }
    let mut depth = 0usize;
    let mut path = PathBuf::new();
    for part in Path::new(cwd).components() {
        match part {
            Component::Normal(p) => {
                depth += 1;
                path.push(p);
            }
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => {
                depth -= 1;
                path.pop();
            }
            Component::ParentDir => return Err(refuse("leaves the project's worktree")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse("must be relative to the project's worktree"));
            }
        }
    }
    Ok(path)
}

/// Whether a project job's relative `cwd` is inside `checkout`'s worktree once its symlinks
/// are resolved (a committed `escape -> /etc` is refused, `invalid_argument`). A missing cwd is
/// left to the worker's own start check.
pub fn cwd_inside(checkout: &Checkout, cwd: &str) -> Result<()> {
    let Some(worktree) = checkout.worktree.as_deref().filter(|_| !cwd.is_empty()) else {
        return Ok(());
    };
    let (Ok(top), Ok(real)) =
        (std::fs::canonicalize(worktree), std::fs::canonicalize(Path::new(worktree).join(cwd)))
    else {
        return Ok(());
    };
    if real.starts_with(&top) {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "cwd {cwd:?} leaves the project's worktree through a symlink (to {})",
        real.display()
    ))
    .with_hint("with a project, cwd is a directory inside the repo, not a symlink out of it"))
}

/// Checks `project` out at `git_ref` into `worktree` (a new directory): its mirror cloned or
/// fetched as needed, the ref resolved to a commit. The error is git's own message.
pub fn check_out(
    project: &Project,
    git_ref: &str,
    worktree: &Path,
) -> std::result::Result<Checkout, String> {
    let mirror = &project.mirror_dir;
    let _lock = lock_mirror(mirror).map_err(|e| e.message)?;
    let cloned = ensure_mirror(project)?;
    let known = resolve(mirror, git_ref);
    let fetch = !cloned && (known.is_none() || is_branch(mirror, git_ref));
    if fetch {
        run_git(git_in(mirror, &["fetch", "--prune", "--quiet", "origin"])).map_err(|e| {
            format!("fetching project {} from {}: {e}", project.id, project.repo_url)
        })?;
    }
    let commit = match known {
        Some(commit) if !fetch => commit,
        _ => resolve(mirror, git_ref).ok_or_else(|| unknown_ref(project, git_ref))?,
    };
    if let Some(parent) = worktree.parent() {
        crate::platform::create_private_dir(parent).map_err(|e| e.message)?;
    }
    let mut add = git_in(mirror, &["worktree", "add", "--detach", "--quiet"]);
    add.arg(worktree).arg(&commit);
    run_git(add).map_err(|e| format!("checking out {commit} of project {}: {e}", project.id))?;
    Ok(Checkout {
        commit: Some(commit),
        worktree: Some(worktree.display().to_string()),
        ..Checkout::failed(&project.id, git_ref)
    })
}

/// Clones the mirror if it is not there yet (into a temp dir renamed into place, so a clone cut
/// short leaves nothing). True when it was just cloned.
fn ensure_mirror(project: &Project) -> std::result::Result<bool, String> {
    let mirror = &project.mirror_dir;
    if mirror.join("HEAD").exists() {
        return Ok(false);
    }
    let temp = with_suffix(mirror, &format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut clone = git(&["clone", "--mirror", "--quiet", "--"]);
    clone.arg(&project.repo_url).arg(&temp);
    let cloned = run_git(clone).and_then(|_| {
        std::fs::rename(&temp, mirror).map_err(|e| format!("renaming the new mirror: {e}"))
    });
    if let Err(e) = cloned {
        let _ = std::fs::remove_dir_all(&temp);
        return Err(format!("cloning project {} from {}: {e}", project.id, project.repo_url));
    }
    Ok(true)
}

/// The commit `git_ref` names in the mirror, if it names one.
fn resolve(mirror: &Path, git_ref: &str) -> Option<String> {
    let spec = format!("{git_ref}^{{commit}}");
    run_git(git_in(mirror, &["rev-parse", "--verify", "--quiet", "--end-of-options", &spec])).ok()
}

/// Whether `git_ref` names a branch (`HEAD` is the default branch), which may have moved
/// upstream. A full commit id never is one.
fn is_branch(mirror: &Path, git_ref: &str) -> bool {
    if git_ref.len() == 40 && git_ref.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    // No --end-of-options here: this mode echoes it; check_ref keeps options out.
    let full = git_in(mirror, &["rev-parse", "--symbolic-full-name", git_ref]);
    run_git(full).is_ok_and(|name| name.starts_with("refs/heads/"))
}

/// The error for a ref the repo does not have, with git's own words.
fn unknown_ref(project: &Project, git_ref: &str) -> String {
    let spec = format!("{git_ref}^{{commit}}");
    let why =
        run_git(git_in(&project.mirror_dir, &["rev-parse", "--verify", "--end-of-options", &spec]))
            .err()
            .unwrap_or_default();
    format!(
        "ref {git_ref:?} is not a branch, tag or commit of project {} ({}): {why}",
        project.id, project.repo_url
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cwd_stays_in_the_worktree() {
        assert_eq!(relative_cwd(None).unwrap(), PathBuf::new());
        assert_eq!(relative_cwd(Some("a/./b/../c")).unwrap(), Path::new("a/c"));
        for bad in ["/etc", "..", "a/../../b", "~/x", "~"] {
            assert!(relative_cwd(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn refs_are_no_options() {
        assert!(check_ref("v1.0").is_ok());
        assert!(check_ref("feature/x").is_ok());
        for bad in ["", "-x", "--upload-pack=evil", "a b"] {
            assert!(check_ref(bad).is_err(), "{bad}");
        }
    }
}
