//! `codex-remote`'s config: `~/.config/codex-remote/config.yaml` (`%APPDATA%\codex-remote\config.yaml`
//! on Windows; YAML, or JSON for `.json`).
//!
//! Machine keys of the original tool (`name`, `ssh`, `addr`, `token`, `daemon_port`,
//! `daemon_cmd`, `use_direct_addr`) keep their meaning; `ssh_args`, `codexd`, `data_dir` and
//! `ssh_control` are new. A machine called `local` is built in: it runs `codexd rpc` as a child
//! process, with no ssh.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config_file::parse_yaml_or_json;
use crate::error::{Error, ErrorCode, Result};

/// The name of the built-in machine.
pub const LOCAL: &str = "local";

/// The commented template written on first run.
pub const TEMPLATE: &str = r#"# codex-remote machines. Each needs a name and an ssh destination (a host of ~/.ssh/config,
# user@host, or ssh://user@host:port). The machine "local" is built in and needs no entry.
#
# machines:
#   - name: gpu1
#     ssh: gpu1                 # as you would type it after `ssh`
#     # ssh_args: ["-F", "/path/to/ssh_config"]   # extra ssh arguments
#     # codexd: ~/.local/bin/codexd               # the remote command (default: codexd)
#     # data_dir: ~/.codexd                       # remote job store (default: codexd's own)
#     # ssh_control: true                         # reuse one connection (ControlMaster)
#
# default_machine: local
machines: []
"#;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RemoteConfig {
    #[serde(default)]
    pub machines: Vec<MachineConfig>,
    /// The machine used when `--machine` is not given (default `local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_machine: Option<String>,
    /// `update`: the release location (`http://` URL or directory of a `dist/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_url: Option<String>,
    /// Named sets of machines: `--machine GROUP` fans a command out to them, or with
    /// `exec start --gpus N` places the job on one of them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
}

/// The `--machine` word that places `exec start --gpus N` on any configured machine.
pub const ANY: &str = "any";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineConfig {
    pub name: String,
    /// An ssh destination: a `~/.ssh/config` host, `user@host` or `ssh://user@host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<String>,
    /// `host:port` of a `codexd serve` listener (HTTP mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_cmd: Option<String>,
    #[serde(default)]
    pub use_direct_addr: bool,
    /// Extra ssh arguments, e.g. `["-F", "file"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_args: Vec<String>,
    /// The remote command that runs codexd (default `codexd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codexd: Option<String>,
    /// The remote job store (default: codexd's own, `~/.codexd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// Reuse one ssh connection per machine (ControlMaster); default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_control: Option<bool>,
    /// Seconds an unreachable host may take to fail (ssh's `ConnectTimeout`; default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<u64>,
    /// Seconds a quick call (status, list, hello ...) may wait for its answer, and a long one
    /// (wait, follow, transfers) for a sign of life (at least 15); default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout: Option<u64>,
    /// HTTP mode: the user the remote `codexd serve` must run as (checked via `/health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `machine up`: where codexd is installed (default `~/.local/bin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_dir: Option<String>,
    /// Forward the ssh agent (`ssh -A`) on every call to this machine, so codexd can fetch a
    /// private project repo with the laptop's key (`exec start --forward-agent` for one call).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_agent: bool,
}

impl RemoteConfig {
    /// The config file path: `--config`, else `CODEX_REMOTE_CONFIG`, else the default.
    pub fn path(flag: Option<&Path>) -> (PathBuf, bool) {
        if let Some(p) = flag {
            return (p.to_path_buf(), false);
        }
        if let Some(p) = std::env::var_os("CODEX_REMOTE_CONFIG").filter(|p| !p.is_empty()) {
            return (PathBuf::from(p), false);
        }
        (default_path(), true)
    }

    /// Loads the config. At the default path a missing file is created from the template
    /// (0600); a named file that is missing is an error.
    pub fn load(flag: Option<&Path>) -> Result<Self> {
        let (path, is_default) = Self::path(flag);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && is_default => {
                write_template(&path)?;
                TEMPLATE.to_string()
            }
            Err(e) => {
                return Err(Error::new(
                    ErrorCode::ConfigError,
                    format!("reading {}: {e}", path.display()),
                ));
            }
        };
        let config: RemoteConfig = parse_yaml_or_json(&text, &path)?;
        config.validate(&path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for m in &self.machines {
            if m.name.trim().is_empty() {
                return Err(config_error(path, "a machine has an empty name"));
            }
            if !seen.insert(m.name.as_str()) {
                return Err(config_error(path, &format!("machine {:?} is listed twice", m.name)));
            }
        }
        for (group, members) in &self.groups {
            let taken = seen.contains(group.as_str()) || [LOCAL, ANY].contains(&group.as_str());
            if group.trim().is_empty() || taken {
                let why = format!("group {group:?}: a group needs a name no machine has");
                return Err(config_error(path, &why));
            }
            if let Some(m) = members.iter().find(|m| !seen.contains(m.as_str()) && *m != LOCAL) {
                let why = format!("group {group:?} lists {m:?}, which is not a machine");
                return Err(config_error(path, &why));
            }
        }
        Ok(())
    }

    /// The machine called `name` (`None`: the default machine).
    pub fn machine(&self, name: Option<&str>) -> Result<MachineConfig> {
        let name = name.or(self.default_machine.as_deref()).unwrap_or(LOCAL);
        if let Some(m) = self.machines.iter().find(|m| m.name == name) {
            return Ok(m.clone());
        }
        if name == LOCAL {
            return Ok(MachineConfig { name: LOCAL.to_string(), ..Default::default() });
        }
        Err(Error::new(ErrorCode::UnknownMachine, format!("no machine named {name:?}"))
            .with_hint(format!("configured machines: {}", self.machine_names().join(", "))))
    }

    /// The names of the configured machines, and `local` (built in) when not among them.
    pub fn machine_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.machines.iter().map(|m| m.name.clone()).collect();
        if !names.iter().any(|n| n == LOCAL) {
            names.push(LOCAL.to_string());
        }
        names
    }
}

impl MachineConfig {
    /// `addr` as `host:port`: the original tool's URL form (`http://127.0.0.1:7337/`) is
    /// accepted too. HTTPS is not: `codexd serve` speaks plain HTTP on loopback.
    pub fn host_port(&self) -> Result<Option<String>> {
        let Some(addr) = self.addr.as_deref().map(str::trim) else {
            return Ok(None);
        };
        let bare = addr.strip_prefix("http://").unwrap_or(addr).trim_end_matches('/');
        let port_ok =
            bare.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if bare.contains("://") || bare.contains('/') || !port_ok {
            return Err(Error::new(
                ErrorCode::ConfigError,
                format!("machine {:?}: addr {addr:?} is not host:port nor http://host:port", self.name),
            )
            .with_hint("e.g. `addr: 127.0.0.1:7337`; for a remote serve use `ssh:` with `use_direct_addr: true`"));
        }
        Ok(Some(bare.to_string()))
    }
}

impl crate::config_file::ConfigKeys for RemoteConfig {
    fn known_keys(parent: &str) -> Vec<&'static str> {
        if parent.starts_with("machines.") {
            crate::config_file::fields_of::<MachineConfig>()
        } else {
            crate::config_file::fields_of::<RemoteConfig>()
        }
    }
}

fn config_error(path: &Path, message: &str) -> Error {
    Error::new(ErrorCode::ConfigError, format!("{}: {message}", path.display()))
}

/// `codex-remote/config.yaml` in the user's config directory: `$XDG_CONFIG_HOME` or `~/.config`
/// on Linux and macOS, `%APPDATA%` on Windows ([`crate::platform::config_dir`]).
pub fn default_path() -> PathBuf {
    crate::platform::config_dir().join("codex-remote").join("config.yaml")
}

fn write_template(path: &Path) -> Result<()> {
    use std::io::Write;
    let fail = |e: std::io::Error| {
        Error::new(ErrorCode::ConfigError, format!("creating {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent() {
        crate::platform::create_private_dir(dir)
            .map_err(|e| Error::new(ErrorCode::ConfigError, e.message))?;
    }
    let mut f = crate::platform::private_file_options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(fail)?;
    f.write_all(TEMPLATE.as_bytes()).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_and_local_is_built_in() {
        let c: RemoteConfig = parse_yaml_or_json(TEMPLATE, Path::new("c.yaml")).unwrap();
        assert!(c.machines.is_empty());
        assert_eq!(c.machine(None).unwrap().name, LOCAL);
        assert_eq!(c.machine(Some("gpu9")).unwrap_err().code, ErrorCode::UnknownMachine);
    }

    #[test]
    fn a_mistyped_key_is_named_with_the_nearest_known_one() {
        let text = "machines:\n  - name: g\n    ssh: g1\n    ssh_contol: false\n\
                    retention_cont: 3\nzzz: 1\n";
        let warnings = crate::config_file::unknown_keys::<RemoteConfig>(text, Path::new("c.yaml"));
        assert_eq!(
            warnings,
            [
                "unknown key `machines.0.ssh_contol` (did you mean `ssh_control`?)",
                "unknown key `retention_cont` (ignored)",
                "unknown key `zzz` (ignored)",
            ]
        );
        assert!(
            crate::config_file::unknown_keys::<RemoteConfig>(TEMPLATE, Path::new("c.yaml"))
                .is_empty()
        );
    }

    #[test]
    fn addr_takes_the_original_url_form() {
        let m = |addr: &str| MachineConfig {
            name: "g".into(),
            addr: Some(addr.into()),
            ..Default::default()
        };
        assert_eq!(
            m("http://127.0.0.1:7337").host_port().unwrap().as_deref(),
            Some("127.0.0.1:7337")
        );
        assert_eq!(
            m("http://127.0.0.1:7337/").host_port().unwrap().as_deref(),
            Some("127.0.0.1:7337")
        );
        assert_eq!(m("127.0.0.1:7337").host_port().unwrap().as_deref(), Some("127.0.0.1:7337"));
        assert_eq!(m("https://h:7337").host_port().unwrap_err().code, ErrorCode::ConfigError);
        assert_eq!(m("h").host_port().unwrap_err().code, ErrorCode::ConfigError);
    }

    #[test]
    fn original_keys_parse() {
        let text = "machines:\n  - name: g\n    ssh: g1\n    addr: 10.0.0.1:7337\n    token: t\n    \
                    daemon_port: 7337\n    daemon_cmd: codexd serve\n    use_direct_addr: true\n";
        let c: RemoteConfig = parse_yaml_or_json(text, Path::new("c.yaml")).unwrap();
        let m = c.machine(Some("g")).unwrap();
        assert_eq!(
            (m.ssh.as_deref(), m.daemon_port, m.use_direct_addr),
            (Some("g1"), Some(7337), true)
        );
    }
}
