//! A configured machine as data: [`Machine`] (its name, [`Route`], caches' key, deadlines and the
//! shared sessions its client passed in). Calls through it are [`super::transport`]'s; checking
//! and preparing it, [`super::provision`]'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::cache::RouteKey;
use super::http::HttpTarget;
use super::ssh::SshTarget;
use crate::error::Result;
use crate::protocol::{Request, Response};

/// Shared sessions a long-lived client owns and hands to its machines
/// ([`Machine::with_sessions`]; [`super::mux::SessionPool`] is the one kind): mux sits above
/// this module (it opens sessions with a [`Machine`]), so the machine holds it as this trait.
pub trait SharedSessions: Send + Sync + std::fmt::Debug {
    /// Answers `request` on the machine's shared session; `None`: not a call for a session
    /// (the caller makes a call of its own).
    fn call(
        self: Arc<Self>,
        m: &Machine,
        request: &Request,
        on_line: &mut dyn FnMut(Response) -> Result<()>,
    ) -> Option<Result<Response>>;

    /// Closes the sessions of machine `name` (its codexd was replaced, or a Ctrl-C ended one).
    fn close(&self, name: &str);
}

/// The shared sessions a machine's calls go on, if its client passed any in. Machines are the
/// same machine whatever sessions they carry.
#[derive(Debug, Clone, Default)]
pub struct Sessions(pub(super) Option<Arc<dyn SharedSessions>>);

impl PartialEq for Sessions {
    fn eq(&self, _: &Sessions) -> bool {
        true
    }
}

impl Eq for Sessions {}

/// How a machine is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This computer: the handlers in this process (Linux), else `codexd rpc` as a child.
    Local {
        codexd: PathBuf,
        data_dir: Option<String>,
        /// Whether requests may be answered in this process: not when the config names a
        /// `codexd` (it may be another version, or a wrapper the user wants run).
        in_process: bool,
    },
    Ssh(SshTarget),
    /// A `codexd serve` over HTTP (`addr:`, or `use_direct_addr` through a local forward).
    Http(Box<HttpTarget>),
}

impl Route {
    pub(super) fn ssh_mut(&mut self) -> Option<&mut SshTarget> {
        match self {
            Route::Ssh(target) => Some(target),
            _ => None,
        }
    }

    /// `local`, `ssh` or `http`.
    pub fn door(&self) -> &'static str {
        match self {
            Route::Local { .. } => "local",
            Route::Ssh(_) => "ssh",
            Route::Http(_) => "http",
        }
    }
}

/// A configured machine, ready for calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub name: String,
    pub route: Route,
    /// The machine's ssh, for what goes around codexd (`machine up`, `machine ssh`, token
    /// fetches): the route itself for ssh machines, `ssh:` of an HTTP machine.
    pub ssh: Option<SshTarget>,
    /// The route's identity, keying the machine's caches.
    pub key: RouteKey,
    /// How long a quick call waits for its answer, a long one for a sign of life
    /// ([`super::deadline`]).
    pub call_timeout: Duration,
    /// The shared sessions of a long-lived client (none: one call per request).
    pub sessions: Sessions,
}
