//! `codexd`'s settings: `~/.codexd/config.yaml` (YAML or JSON), then `CODEXD_DATA_DIR`, then flags.
//! The `serve` keys (`listen`, `auth_token`, `allow_bearer`, `allowed_cwd_roots`, `unix_socket`,
//! `allowed_hosts`) only matter to `codexd serve`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, ErrorCode, Result};
use crate::protocol::{Resources, Scheduler};

/// Finished jobs kept when a job ends (the newest ones).
pub const DEFAULT_RETENTION: usize = 200;
pub const DEFAULT_SHELL: &str = "bash -lc";
/// The largest `file_write` accepted unless `max_file_size` says otherwise (the original's).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 * 1024 * 1024;
/// The most bytes one `/v1/sync/upload` tar may hold once un-gzipped, unless
/// `max_upload_bytes` says otherwise.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 16 << 30;
/// A GPU using more memory than this (MiB, anyone's processes) is not free for `--gpus` jobs.
pub const DEFAULT_GPU_FREE_MEMORY_MIB: u64 = 1024;
/// A GPU busier than this (percent) is not free for `--gpus` jobs.
pub const DEFAULT_GPU_FREE_UTIL_PERCENT: u32 = 10;
/// Where `codexd serve` listens unless `listen` says otherwise (the original tool's port).
pub use crate::protocol::DEFAULT_LISTEN;

/// The config file as written by the user; every key is optional.
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    data_dir: Option<String>,
    retention_count: Option<usize>,
    shell: Option<String>,
    /// The original tool's name for `shell`.
    default_shell: Option<String>,
    /// `codexd update`: the release location.
    update_url: Option<String>,
    listen: Option<String>,
    auth_token: Option<String>,
    allow_bearer: Option<bool>,
    allowed_cwd_roots: Option<Vec<String>>,
    unix_socket: Option<String>,
    allowed_hosts: Option<Vec<String>>,
    max_file_size: Option<u64>,
    max_upload_bytes: Option<u64>,
    /// Variables every job gets unless its request sets them (replaces the defaults).
    env_defaults: Option<BTreeMap<String, String>>,
    /// Repositories a job can run at a ref of (`exec start --project ID --ref REF`).
    #[serde(default)]
    projects: Vec<ProjectFile>,
    /// `slurm`: jobs go through `sbatch` (a cluster's login node); default `local`.
    scheduler: Option<Scheduler>,
    /// What a Slurm job gets when its request does not say (not an `Option`: a warning about
    /// a mistyped key inside it names `slurm.KEY`).
    #[serde(default)]
    slurm: SlurmFile,
    /// `--gpus` jobs without a scheduler: a GPU is free at most this memory used (MiB) ...
    gpu_free_memory_mib: Option<u64>,
    /// ... and at most this utilisation (percent).
    gpu_free_util_percent: Option<u32>,
}

/// The `slurm:` defaults.
#[derive(Debug, Default, Deserialize)]
struct SlurmFile {
    partition: Option<String>,
    account: Option<String>,
    time: Option<String>,
    gpus: Option<u32>,
    cpus: Option<u32>,
    mem: Option<String>,
    /// More `sbatch` arguments for every job, each one word.
    #[serde(default)]
    extra_args: Vec<String>,
}

/// One `projects:` entry, with the original tool's keys.
#[derive(Debug, Deserialize)]
struct ProjectFile {
    id: String,
    repo_url: String,
    mirror_dir: Option<String>,
}

impl crate::config_file::ConfigKeys for ConfigFile {
    fn known_keys(parent: &str) -> Vec<&'static str> {
        if parent.starts_with("projects.") {
            crate::config_file::fields_of::<ProjectFile>()
        } else if parent == "slurm" {
            crate::config_file::fields_of::<SlurmFile>()
        } else {
            crate::config_file::fields_of::<ConfigFile>()
        }
    }
}

/// A repository jobs can run at a ref of: codexd keeps a bare mirror of it
/// ([`super::projects`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    /// What `git clone` is given: a URL (`https://`, `ssh://`, `git@host:path`, `file://`) or
    /// a path.
    pub repo_url: String,
    /// The bare mirror (default `<data_dir>/projects/<id>.git`).
    pub mirror_dir: PathBuf,
}

/// Resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    pub retention_count: usize,
    /// How a string `cmd` is run: these words, then the command as one argument.
    pub shell: String,
    /// `codexd serve`: the TCP address (`host:port`).
    pub listen: String,
    /// `codexd serve`: the token TCP clients must send; `None`: `<data_dir>/token` (generated).
    pub auth_token: Option<String>,
    /// `codexd serve`: whether TCP takes `Authorization: Bearer TOKEN` (the original tool's
    /// clients; weaker than signed requests: a relay that sees the token can reuse it).
    pub allow_bearer: bool,
    /// `codexd serve`: directories besides the home where a job may run (symlinks resolved).
    pub allowed_cwd_roots: Vec<PathBuf>,
    /// `codexd serve`: the Unix socket (default `<data_dir>/codexd.sock`); `""` turns it off.
    pub unix_socket: Option<PathBuf>,
    /// `codexd serve`: `Host` header names accepted besides the loopback ones.
    pub allowed_hosts: Vec<String>,
    /// `codexd update`: the release location (`http://` URL or directory of a `dist/`).
    pub update_url: Option<String>,
    /// The largest file `file_write` accepts, in bytes.
    pub max_file_size: u64,
    /// The most bytes one `/v1/sync/upload` tar may hold once un-gzipped.
    pub max_upload_bytes: u64,
    /// Variables every job gets unless its request sets them ([`default_env`] when not set).
    pub env_defaults: BTreeMap<String, String>,
    /// The repositories of `projects:`, by id.
    pub projects: Vec<Project>,
    /// Who runs jobs: codexd's own worker, or Slurm.
    pub scheduler: Scheduler,
    /// `slurm:`: the resources a Slurm job gets when its request leaves them out.
    pub slurm_defaults: Resources,
    /// A GPU is free for a `--gpus` job at most this memory used (MiB) and utilisation (%).
    pub gpu_free_memory_mib: u64,
    pub gpu_free_util_percent: u32,
}

/// What every job's environment has unless `env_defaults` says otherwise: as in the original
/// tool, `PYTHONUNBUFFERED=1`, without which a Python job's output stays invisible until it
/// flushes.
pub fn default_env() -> BTreeMap<String, String> {
    BTreeMap::from([("PYTHONUNBUFFERED".to_string(), "1".to_string())])
}

impl DaemonConfig {
    /// Loads the config file (`config`, else `~/.codexd/config.yaml`, else the original tool's
    /// `~/.config/codexd/config.yaml`, when present), then applies `CODEXD_DATA_DIR` and the
    /// `--data-dir` flag, which win in that order.
    pub fn load(config: Option<&Path>, data_dir_flag: Option<&str>) -> Result<Self> {
        let home = super::home_dir();
        let defaults = [
            home.join(".codexd").join("config.yaml"),
            crate::platform::config_dir().join("codexd").join("config.yaml"),
        ];
        let file = match config {
            Some(p) => parse_file(p)?,
            None => match defaults.iter().find(|p| p.is_file()) {
                Some(p) => parse_file(p)?,
                None => ConfigFile::default(),
            },
        };
        let data_dir = data_dir_flag
            .map(String::from)
            .or_else(|| std::env::var("CODEXD_DATA_DIR").ok().filter(|s| !s.is_empty()))
            .or(file.data_dir)
            .map(|d| expand_home(&d, &home))
            .unwrap_or_else(|| home.join(".codexd"));
        let unix_socket = match file.unix_socket.as_deref() {
            Some("") => None,
            Some(p) => Some(expand_home(p, &home)),
            None => Some(data_dir.join("codexd.sock")),
        };
        let env_defaults = file.env_defaults.unwrap_or_else(default_env);
        if let Some(bad) = env_defaults.keys().find(|k| !super::valid_env_name(k)) {
            return Err(Error::new(
                ErrorCode::ConfigError,
                format!("env_defaults: {bad:?} cannot name a variable (letters, digits and _)"),
            ));
        }
        let projects = resolve_projects(file.projects, &data_dir, &home)?;
        let slurm = file.slurm;
        Ok(DaemonConfig {
            scheduler: file.scheduler.unwrap_or_default(),
            slurm_defaults: Resources {
                gpus: slurm.gpus,
                partition: slurm.partition,
                account: slurm.account,
                time: slurm.time,
                mem: slurm.mem,
                cpus: slurm.cpus,
                slurm_args: slurm.extra_args,
                ..Resources::default()
            },
            gpu_free_memory_mib: file.gpu_free_memory_mib.unwrap_or(DEFAULT_GPU_FREE_MEMORY_MIB),
            gpu_free_util_percent: (file.gpu_free_util_percent)
                .unwrap_or(DEFAULT_GPU_FREE_UTIL_PERCENT)
                .min(100),
            projects,
            retention_count: file.retention_count.unwrap_or(DEFAULT_RETENTION),
            shell: (file.shell.or(file.default_shell)).unwrap_or_else(|| DEFAULT_SHELL.to_string()),
            listen: file.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
            auth_token: file.auth_token.filter(|t| !t.is_empty()),
            allow_bearer: file.allow_bearer.unwrap_or(true),
            allowed_cwd_roots: (file.allowed_cwd_roots.unwrap_or_default().iter())
                .map(|r| expand_home(r, &home))
                .collect(),
            unix_socket,
            allowed_hosts: file.allowed_hosts.unwrap_or_default(),
            update_url: file.update_url,
            max_file_size: file.max_file_size.unwrap_or(DEFAULT_MAX_FILE_SIZE),
            max_upload_bytes: file.max_upload_bytes.unwrap_or(DEFAULT_MAX_UPLOAD_BYTES),
            env_defaults,
            data_dir,
        })
    }
}

/// Checks the `projects:` entries (a usable, unique id; a repo_url) and fills in each mirror.
fn resolve_projects(files: Vec<ProjectFile>, data_dir: &Path, home: &Path) -> Result<Vec<Project>> {
    let mut projects: Vec<Project> = Vec::new();
    for p in files {
        let bad = |why: &str| {
            Error::new(ErrorCode::ConfigError, format!("projects: id {:?}: {why}", p.id))
        };
        let id_ok = !p.id.is_empty()
            && !p.id.starts_with('.')
            && p.id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !id_ok {
            return Err(bad("letters, digits, '-', '_' and '.', not starting with '.'"));
        }
        if projects.iter().any(|q| q.id == p.id) {
            return Err(bad("given twice"));
        }
        if p.repo_url.trim().is_empty() || p.repo_url.starts_with('-') {
            return Err(bad("repo_url is empty or starts with '-'"));
        }
        let mirror_dir = match &p.mirror_dir {
            Some(dir) => expand_home(dir, home),
            None => data_dir.join("projects").join(format!("{}.git", p.id)),
        };
        projects.push(Project { id: p.id, repo_url: p.repo_url, mirror_dir });
    }
    Ok(projects)
}

/// `~` and `~/x` name the home directory.
pub fn expand_home(path: &str, home: &Path) -> PathBuf {
    match path.strip_prefix('~') {
        Some("") => home.to_path_buf(),
        Some(rest) if rest.starts_with('/') => home.join(&rest[1..]),
        _ => PathBuf::from(path),
    }
}

fn parse_file(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::new(ErrorCode::ConfigError, format!("reading {}: {e}", path.display()))
    })?;
    parse_yaml_or_json(&text, path)
}

pub use crate::config_file::parse_yaml_or_json;

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn a_mistyped_key_is_named() {
        let warnings = crate::config_file::unknown_keys::<ConfigFile>(
            "retention_cont: 3\nshell: bash -lc\n",
            Path::new("config.yaml"),
        );
        assert_eq!(warnings, ["unknown key `retention_cont` (did you mean `retention_count`?)"]);
    }

    #[test]
    fn gpu_keys_are_known_and_checked() {
        let text = "gpu_free_memory_mib: 2048\ngpu_free_util_pct: 5\n";
        let warnings =
            crate::config_file::unknown_keys::<ConfigFile>(text, Path::new("config.yaml"));
        assert_eq!(
            warnings,
            ["unknown key `gpu_free_util_pct` (did you mean `gpu_free_util_percent`?)"]
        );
        let file: ConfigFile = serde_saphyr::from_str(text).unwrap();
        assert_eq!(file.gpu_free_memory_mib, Some(2048));
    }

    #[test]
    fn slurm_keys_are_known_and_checked() {
        let text = "scheduler: slurm\nslurm:\n  partition: gpu\n  extra_arg: [\"-q\"]\n";
        let warnings =
            crate::config_file::unknown_keys::<ConfigFile>(text, Path::new("config.yaml"));
        assert_eq!(warnings, ["unknown key `slurm.extra_arg` (did you mean `extra_args`?)"]);
        let file: ConfigFile = serde_saphyr::from_str(text).unwrap();
        assert_eq!(file.scheduler, Some(Scheduler::Slurm));
        assert_eq!(file.slurm.partition.as_deref(), Some("gpu"));
    }

    #[test]
    fn project_keys_are_known_and_checked() {
        let text = "projects:\n  - id: p\n    repo_url: /r\n    mirror_dri: /m\n";
        let warnings =
            crate::config_file::unknown_keys::<ConfigFile>(text, Path::new("config.yaml"));
        assert_eq!(
            warnings,
            ["unknown key `projects.0.mirror_dri` (did you mean `mirror_dir`?)"],
            "{warnings:?}"
        );
        let file: ConfigFile = serde_saphyr::from_str(text).unwrap();
        let projects = resolve_projects(file.projects, Path::new("/d"), Path::new("/h")).unwrap();
        assert_eq!(projects[0].mirror_dir, Path::new("/d/projects/p.git"));
        let twice = ProjectFile { id: "p".into(), repo_url: "/r".into(), mirror_dir: None };
        let again = ProjectFile { id: "p".into(), repo_url: "/r".into(), mirror_dir: None };
        assert!(resolve_projects(vec![twice, again], Path::new("/d"), Path::new("/h")).is_err());
        let dotted = ProjectFile { id: "../x".into(), repo_url: "/r".into(), mirror_dir: None };
        assert!(resolve_projects(vec![dotted], Path::new("/d"), Path::new("/h")).is_err());
    }
}
