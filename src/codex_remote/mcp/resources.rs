//! Jobs as MCP resources, and being told when they change.
//!
//! `codex-remote://MACHINE/jobs/EXEC_ID` is a job: its status (with the last line of each stream)
//! and `tail`, the last lines of its output in the terminal view. `codex-remote://MACHINE/jobs` is
//! the machine's listing: its newest jobs. A client subscribes to either (`resources/subscribe`
//! on 2025-11-25, `subscriptions/listen` on 2026-07-28) and gets
//! `notifications/resources/updated` when the job changes state (queued, running, ended) or, for
//! the listing, when a job starts or ends.
//!
//! One watcher per machine does the looking, however many subscriptions there are: every
//! [`TICK`] it asks the machine's codexd, on the machine's shared session, for its running jobs
//! (and, when the listing is subscribed, its newest jobs), compares with what each subscription
//! last saw, and notifies. It stops when no subscription on the machine still waits for a change.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
    ResourceUpdatedNotificationParam,
};
use rmcp::service::SubscriptionSink;
use rmcp::{ErrorData, Peer, RoleServer};
use serde_json::json;

use super::{again, machine, tasks};
use crate::codex_remote::exec::resolve_id;
use crate::error::Result;
use crate::protocol::{JobRef, JobState, ListRequest, OnMachine, Request, RunStatus};
use crate::remote::client;
use crate::remote::config::RemoteConfig;
use crate::remote::machine::Machine;
use crate::remote::mux::SessionPool;

/// How often a machine's watcher looks at its jobs.
pub const TICK: Duration = Duration::from_millis(250);
/// Jobs in a machine's listing resource (as `exec_list`'s default).
const LISTING_JOBS: usize = 20;
/// The most running jobs a watcher follows on one machine.
const MAX_RUNNING: usize = 1000;
/// Lines of terminal view in a job resource.
const TAIL_LINES: u64 = 10;
const SCHEME: &str = "codex-remote://";
const MIME: &str = "application/json";

/// What a resource URI names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A job: the machine and the id as written in the URI (a prefix or `last` too).
    Job {
        machine: String,
        exec_id: String,
    },
    Listing {
        machine: String,
    },
}

impl Target {
    fn parse(uri: &str) -> Option<Target> {
        let rest = uri.strip_prefix(SCHEME)?;
        let (machine, path) = rest.split_once('/')?;
        if machine.is_empty() {
            return None;
        }
        let machine = machine.to_string();
        match path.strip_prefix("jobs") {
            Some("") | Some("/") => Some(Target::Listing { machine }),
            Some(id) => {
                let id = id.strip_prefix('/')?;
                (!id.is_empty() && !id.contains('/'))
                    .then(|| Target::Job { machine, exec_id: id.to_string() })
            }
            None => None,
        }
    }

    fn machine(&self) -> &str {
        match self {
            Target::Job { machine, .. } | Target::Listing { machine } => machine,
        }
    }
}

fn listing_uri(machine: &str) -> String {
    format!("{SCHEME}{machine}/jobs")
}

/// Whether `uri` names a resource of this server (what `subscriptions/listen` accepts).
pub fn is_ours(uri: &str) -> bool {
    Target::parse(uri).is_some()
}

/// `resources/list`: each configured machine's listing.
pub fn list(config: Option<PathBuf>) -> std::result::Result<Vec<Resource>, ErrorData> {
    let config =
        RemoteConfig::load(config.as_deref()).map_err(|e| super::protocol_error(e, NOT_FOUND))?;
    Ok(config
        .machine_names()
        .iter()
        .map(|name| {
            Resource::new(listing_uri(name), format!("jobs on {name}"))
                .with_title(format!("Jobs on {name}"))
                .with_description(format!(
                    "The {LISTING_JOBS} newest jobs on {name}, newest first. Subscribe to be \
                     told when a job starts or ends."
                ))
                .with_mime_type(MIME)
        })
        .collect())
}

/// `resources/templates/list`: a job and a machine's listing.
pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(format!("{SCHEME}{{machine}}/jobs/{{exec_id}}"), "job")
            .with_title("A job")
            .with_description(
                "A job's status (with the last line of each stream) and `tail`, its last output \
                 lines as a terminal shows them. `exec_id` may be a unique prefix or `last`. \
                 Subscribe to be told when its state changes (e.g. when it ends).",
            )
            .with_mime_type(MIME),
        ResourceTemplate::new(format!("{SCHEME}{{machine}}/jobs"), "jobs")
            .with_title("A machine's jobs")
            .with_description("The newest jobs on the machine, newest first.")
            .with_mime_type(MIME),
    ]
}

/// `resources/read`.
pub async fn read(
    config: Option<PathBuf>,
    sessions: Arc<SessionPool>,
    uri: String,
) -> std::result::Result<ReadResourceResult, ErrorData> {
    let target = Target::parse(&uri).ok_or_else(|| not_ours(&uri))?;
    let text = blocking(move || {
        let m = machine(config.as_deref(), Some(target.machine()), sessions)?;
        let value = match &target {
            Target::Job { exec_id, .. } => {
                let exec_id = again(|| resolve_id(&m, exec_id))?;
                let req = Request::ExecStatus(JobRef { exec_id });
                let answer = again(|| client::status(&m, req.clone()))?;
                let mut value = OnMachine::new(&answer, &m.name).to_value();
                value["tail"] = tasks::tail(&m, &answer, TAIL_LINES).unwrap_or_default().into();
                value
            }
            Target::Listing { .. } => {
                let req = ListRequest { limit: Some(LISTING_JOBS), ..Default::default() };
                let list = again(|| client::list(&m, req.clone()))?;
                let jobs: Vec<_> =
                    list.jobs.iter().map(|j| OnMachine::new(j, &m.name).to_value()).collect();
                json!({ "machine": m.name, "jobs": jobs })
            }
        };
        Ok(value.to_string())
    })
    .await?;
    let contents = ResourceContents::text(text, uri).with_mime_type(MIME);
    Ok(ReadResourceResult::new(vec![contents]))
}

/// Where a subscriber's notifications go.
#[derive(Debug, Clone)]
pub enum Notify {
    /// A `resources/subscribe` (2025-11-25) of the session's client.
    Session(Peer<RoleServer>),
    /// A `subscriptions/listen` stream (2026-07-28).
    Listen(SubscriptionSink),
}

impl Notify {
    /// Sends `notifications/resources/updated`; false when nobody is there any more.
    async fn updated(&self, uri: &str) -> bool {
        match self {
            Notify::Session(peer) => {
                let note = ResourceUpdatedNotificationParam::new(uri);
                peer.notify_resource_updated(note).await.is_ok()
            }
            Notify::Listen(sink) => sink.notify_resource_updated(uri).await.is_ok(),
        }
    }
}

/// What a subscription saw last: a job's state (`None` once it ended: nothing changes after),
/// or the listing's jobs and states.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Job { exec_id: String, state: Option<JobState> },
    Listing(BTreeMap<String, JobState>),
}

#[derive(Debug)]
struct Subscription {
    id: u64,
    uri: String,
    machine: String,
    seen: Seen,
    to: Notify,
}

impl Subscription {
    /// Whether a change can still come (a job that ended does not change any more).
    fn waiting(&self) -> bool {
        !matches!(self.seen, Seen::Job { state: None, .. })
    }
}

#[derive(Debug, Default)]
struct Registry {
    next: u64,
    subscriptions: Vec<Subscription>,
    /// Machines whose watcher runs.
    watched: HashSet<String>,
}

/// The subscriptions of this server and its watchers, one per machine.
#[derive(Debug, Clone, Default)]
pub struct Watchers(Arc<Mutex<Registry>>);

/// What one look at a machine found.
struct Look {
    /// The running (and queued) jobs, when a job subscription waits.
    running: Option<BTreeMap<String, JobState>>,
    /// The listing's fingerprint, when the listing is subscribed.
    listing: Option<BTreeMap<String, JobState>>,
}

impl Watchers {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes `to` to `uri`: what the resource is now becomes the baseline, and the
    /// machine's watcher starts if it is not running. Returns the subscription's id.
    pub async fn add(
        &self,
        config: Option<PathBuf>,
        sessions: Arc<SessionPool>,
        uri: String,
        to: Notify,
    ) -> std::result::Result<u64, ErrorData> {
        let target = Target::parse(&uri).ok_or_else(|| not_ours(&uri))?;
        let machine_name = target.machine().to_string();
        let (look_config, look_sessions) = (config.clone(), sessions.clone());
        let seen = blocking(move || {
            let m = machine(look_config.as_deref(), Some(target.machine()), look_sessions)?;
            Ok(match &target {
                Target::Job { exec_id, .. } => {
                    let exec_id = again(|| resolve_id(&m, exec_id))?;
                    let req = Request::ExecStatus(JobRef { exec_id: exec_id.clone() });
                    let job = again(|| client::status(&m, req.clone()))?.job;
                    let state = (job.status == RunStatus::Running).then_some(job.state);
                    Seen::Job { exec_id: exec_id.to_string(), state }
                }
                Target::Listing { .. } => Seen::Listing(look(&m, false, true)?.listing.unwrap()),
            })
        })
        .await?;
        let (id, first) = {
            let mut registry = self.registry();
            registry.next += 1;
            let id = registry.next;
            let machine = machine_name.clone();
            registry.subscriptions.push(Subscription { id, uri, machine, seen, to });
            (id, registry.watched.insert(machine_name.clone()))
        };
        if first {
            tokio::spawn(self.clone().watch(config, sessions, machine_name));
        }
        Ok(id)
    }

    /// Ends the subscriptions `ids` (a `subscriptions/listen` stream that closed).
    pub fn remove(&self, ids: &[u64]) {
        self.registry().subscriptions.retain(|s| !ids.contains(&s.id));
    }

    /// `resources/unsubscribe`: ends the session's subscriptions to `uri`.
    pub fn unsubscribe(&self, uri: &str) {
        self.registry()
            .subscriptions
            .retain(|s| !(s.uri == uri && matches!(s.to, Notify::Session(_))));
    }

    /// How many machines have a watcher running (for tests of the one-watcher rule).
    #[cfg(test)]
    fn watching(&self) -> usize {
        self.registry().watched.len()
    }

    /// The watcher of `machine`: looks every [`TICK`] while a subscription there waits.
    async fn watch(
        self,
        config: Option<PathBuf>,
        sessions: Arc<SessionPool>,
        machine_name: String,
    ) {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let (jobs, listing) = {
                let mut registry = self.registry();
                let mine = registry
                    .subscriptions
                    .iter()
                    .filter(|s| s.machine == machine_name && s.waiting())
                    .map(|s| matches!(s.seen, Seen::Listing(_)));
                let (mut jobs, mut listing) = (false, false);
                for is_listing in mine {
                    *(if is_listing { &mut listing } else { &mut jobs }) = true;
                }
                if !jobs && !listing {
                    registry.watched.remove(&machine_name);
                    return;
                }
                (jobs, listing)
            };
            let (config, name, sessions) = (config.clone(), machine_name.clone(), sessions.clone());
            let found = tokio::task::spawn_blocking(move || {
                look(&machine(config.as_deref(), Some(&name), sessions)?, jobs || listing, listing)
            })
            .await;
            // A look that failed (the machine is unreachable for now) is tried at the next tick.
            if let Ok(Ok(found)) = found {
                self.notify_changes(&machine_name, &found).await;
            }
        }
    }

    /// Compares what each subscription on `machine` saw with `found`, and notifies the changed.
    async fn notify_changes(&self, machine_name: &str, found: &Look) {
        let mut due: Vec<(u64, String, Notify)> = Vec::new();
        for s in self.registry().subscriptions.iter_mut() {
            if s.machine != machine_name || !s.waiting() {
                continue;
            }
            let now = match &s.seen {
                Seen::Job { exec_id, .. } => match &found.running {
                    Some(running) => {
                        Seen::Job { exec_id: exec_id.clone(), state: running.get(exec_id).copied() }
                    }
                    None => continue,
                },
                Seen::Listing(_) => match &found.listing {
                    Some(listing) => Seen::Listing(listing.clone()),
                    None => continue,
                },
            };
            if now != s.seen {
                s.seen = now;
                due.push((s.id, s.uri.clone(), s.to.clone()));
            }
        }
        let mut gone = Vec::new();
        for (id, uri, to) in due {
            if !to.updated(&uri).await {
                gone.push(id);
            }
        }
        self.remove(&gone);
    }
}

/// One look at machine `m`: its running jobs and (when `listing`) the listing's fingerprint:
/// the newest jobs and the running ones, each with its state.
fn look(m: &Machine, running: bool, listing: bool) -> Result<Look> {
    let running = if running {
        let req =
            ListRequest { status: Some(RunStatus::Running), limit: Some(MAX_RUNNING), state: None };
        let list = again(|| client::list(m, req.clone()))?;
        Some(
            list.jobs
                .into_iter()
                .map(|j| (j.exec_id.to_string(), j.state))
                .collect::<BTreeMap<_, _>>(),
        )
    } else {
        None
    };
    let listing = if listing {
        let req = ListRequest { limit: Some(LISTING_JOBS), ..Default::default() };
        let list = again(|| client::list(m, req.clone()))?;
        let mut jobs: BTreeMap<String, JobState> =
            list.jobs.into_iter().map(|j| (j.exec_id.to_string(), j.state)).collect();
        jobs.extend(running.iter().flatten().map(|(id, state)| (id.clone(), *state)));
        Some(jobs)
    } else {
        None
    };
    Ok(Look { running, listing })
}

fn not_ours(uri: &str) -> ErrorData {
    ErrorData::resource_not_found(
        format!("{uri:?} is not a resource of this server"),
        Some(json!({
            "hint": "resources are codex-remote://MACHINE/jobs and codex-remote://MACHINE/jobs/EXEC_ID"
        })),
    )
}

/// Runs `work` on the blocking pool; a job or machine that is not there is `-32002 Resource not
/// found`.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, ErrorData> {
    super::blocking_request(NOT_FOUND, work).await
}

const NOT_FOUND: super::NotFound = ErrorData::resource_not_found;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_jobs_and_listings() {
        let job = |m: &str, id: &str| Target::Job { machine: m.into(), exec_id: id.into() };
        assert_eq!(Target::parse("codex-remote://gpu1/jobs/last"), Some(job("gpu1", "last")));
        assert_eq!(Target::parse(&super::super::job_uri("a", "0193")), Some(job("a", "0193")));
        let listing = Target::Listing { machine: "gpu1".into() };
        assert_eq!(Target::parse(&listing_uri("gpu1")), Some(listing.clone()));
        assert_eq!(Target::parse("codex-remote://gpu1/jobs/"), Some(listing));
        for bad in
            ["codex-remote:///jobs", "file:///x", "codex-remote://m/x", "codex-remote://m/jobs/a/b"]
        {
            assert_eq!(Target::parse(bad), None, "{bad}");
        }
        assert_eq!(Watchers::default().watching(), 0);
    }
}
