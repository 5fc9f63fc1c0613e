//! The accept loops of this crate's HTTP servers (`codexd serve`'s TCP port and Unix socket,
//! `codex-remote dashboard`): one per listener, each with its own connection budget, so a flood
//! of connections on one (no token is needed to connect) never starves the other.
//!
//! - A request head must arrive within [`HEADER_TIMEOUT`] of the connection (or of the end of
//!   the previous answer on a kept-alive one): hyper's `header_read_timeout` closes it otherwise.
//! - At most [`TCP_LIMITS`] connections (total, and per peer address) on TCP and
//!   [`UNIX_LIMITS`] on the Unix socket. A new connection over a limit takes the place of the
//!   oldest *idle* one (no request in flight: a half-sent head, or a kept-alive connection between
//!   requests) of the same peer, or, over the total, of the peer holding the most; when every
//!   connection is busy with a request, the new one is closed at once. So half-open connections
//!   cannot hold the door: the newest connection, which sends its request at once, gets in. On
//!   loopback every local user is the same peer (127.0.0.1), which is why idle connections give
//!   way instead of new ones being refused.
//! - Busy connections (an `exec wait`, a `logs --follow` stream) have no time limit. A request
//!   its server refuses stops counting as busy at once ([`release`]), so a refused request whose
//!   body trickles in gives way to a new connection as an idle one does.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// Time to send a request head, on a new connection or between requests on a kept-alive one.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Loopback TCP: well under serve's 1,024 open files, with room for job files and the socket.
pub const TCP_LIMITS: Limits = Limits { total: 512, per_peer: 64 };
/// The Unix socket: one peer (its 0600 mode admits only the owner), a budget of its own.
pub const UNIX_LIMITS: Limits = Limits { total: 128, per_peer: 128 };
/// The pause after an accept error such as EMFILE, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How many connections a listener keeps open.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub total: usize,
    pub per_peer: usize,
}

/// A bound listener of either kind.
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

impl Listener {
    fn limits(&self) -> Limits {
        match self {
            Listener::Tcp(_) => TCP_LIMITS,
            #[cfg(unix)]
            Listener::Unix(_) => UNIX_LIMITS,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets open requests end
/// (hyper's graceful shutdown) and returns when every connection is closed. `server` names it
/// in the messages on stderr.
pub async fn serve(
    server: &str,
    listener: Listener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let table = Arc::new(Table::new(listener.limits()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = accept(&listener) => accepted,
        };
        let (io, peer) = match accepted {
            Ok(Some(pair)) => pair,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("{server}: accept: {e}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        // Over the limits with every connection busy: dropping `io` closes it.
        let Some(admitted) = table.admit(peer) else { continue };
        match io {
            Stream::Tcp(s) => conns.spawn(connection(s, router.clone(), admitted, stop_rx.clone())),
            #[cfg(unix)]
            Stream::Unix(s) => {
                conns.spawn(connection(s, router.clone(), admitted, stop_rx.clone()))
            }
        };
    }
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

/// The next connection and its peer address (`None` on the Unix socket); `Ok(None)` for a
/// connection that failed before it was accepted.
async fn accept(listener: &Listener) -> std::io::Result<Option<(Stream, Option<IpAddr>)>> {
    let accepted = match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| (Stream::Tcp(s), Some(a.ip()))),
        #[cfg(unix)]
        Listener::Unix(l) => l.accept().await.map(|(s, _)| (Stream::Unix(s), None)),
    };
    match accepted {
        Ok(pair) => Ok(Some(pair)),
        Err(e) if connection_error(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Errors of one connection, not of the listener (as hyper and axum tell them apart).
fn connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// Serves one connection until it ends, is evicted, or the server stops.
async fn connection<I>(io: I, router: Router, admitted: Admitted, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tower = TowerToHyperService::new(router);
    let in_flight = admitted.in_flight.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let busy = Busy::enter(&in_flight);
        req.extensions_mut().insert(Release(busy.0.clone()));
        let answer = hyper::service::Service::call(&tower, req);
        async move {
            let response = answer.await?;
            Ok::<_, Infallible>(response.map(|body| Body::new(Tracked { body, _busy: busy })))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = admitted.evicted.notified() => return,
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// The open connections of one listener, oldest first.
struct Table {
    limits: Limits,
    conns: Mutex<Conns>,
}

#[derive(Default)]
struct Conns {
    next_id: u64,
    open: BTreeMap<u64, Entry>,
}

struct Entry {
    peer: Option<IpAddr>,
    /// Requests whose answer is not yet fully sent.
    in_flight: Arc<AtomicUsize>,
    evicted: Arc<Notify>,
}

/// A connection's place in the table, given back when it is dropped.
struct Admitted {
    table: Arc<Table>,
    id: u64,
    in_flight: Arc<AtomicUsize>,
    evicted: Arc<Notify>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table.lock().open.remove(&self.id);
    }
}

impl Table {
    fn new(limits: Limits) -> Self {
        Table { limits, conns: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes room for a connection from `peer` (evicting idle ones), or refuses it.
    fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Option<Admitted> {
        let mut conns = self.lock();
        let of_peer = conns.open.values().filter(|e| e.peer == peer).count();
        if of_peer >= self.limits.per_peer && !conns.evict_oldest_idle(|e| e.peer == peer) {
            return None;
        }
        if conns.open.len() >= self.limits.total {
            let busiest = conns.busiest_peer();
            if !conns.evict_oldest_idle(|e| e.peer == busiest) && !conns.evict_oldest_idle(|_| true)
            {
                return None;
            }
        }
        let id = conns.next_id;
        conns.next_id += 1;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let evicted = Arc::new(Notify::new());
        let entry = Entry { peer, in_flight: in_flight.clone(), evicted: evicted.clone() };
        conns.open.insert(id, entry);
        Some(Admitted { table: self.clone(), id, in_flight, evicted })
    }
}

impl Conns {
    /// Closes the oldest connection that matches and has no request in flight.
    fn evict_oldest_idle(&mut self, matches: impl Fn(&Entry) -> bool) -> bool {
        let victim = self
            .open
            .iter()
            .find(|(_, e)| matches(e) && e.in_flight.load(Ordering::SeqCst) == 0)
            .map(|(id, _)| *id);
        let Some(entry) = victim.and_then(|id| self.open.remove(&id)) else { return false };
        // A stored permit: the connection's task sees it even if it is not waiting yet.
        entry.evicted.notify_one();
        true
    }

    /// The peer with the most open connections.
    fn busiest_peer(&self) -> Option<IpAddr> {
        let mut counts: BTreeMap<Option<IpAddr>, usize> = BTreeMap::new();
        for e in self.open.values() {
            *counts.entry(e.peer).or_default() += 1;
        }
        counts.into_iter().max_by_key(|(_, n)| *n).and_then(|(peer, _)| peer)
    }
}

/// One request in flight on a connection, from its head until its answer is sent or dropped
/// (or until [`release`]).
struct Busy(Arc<Slot>);

/// The in-flight count of a connection, and whether one request still counts in it.
struct Slot {
    in_flight: Arc<AtomicUsize>,
    counted: AtomicBool,
}

impl Slot {
    fn leave(&self) {
        if self.counted.swap(false, Ordering::SeqCst) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Busy {
    fn enter(in_flight: &Arc<AtomicUsize>) -> Self {
        in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::new(Slot { in_flight: in_flight.clone(), counted: AtomicBool::new(true) }))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// The request extension through which a server lets go of a request's busy mark.
#[derive(Clone)]
struct Release(Arc<Slot>);

/// Marks the connection of a request the server refuses as idle: while its answer waits for
/// the body to be read (briefly) and sent, a new connection may take its place.
pub fn release<B>(req: &axum::http::Request<B>) {
    if let Some(Release(slot)) = req.extensions().get::<Release>() {
        slot.leave();
    }
}

/// An answer's body that keeps its connection marked busy until it is sent.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn idle_connections_give_way_busy_ones_do_not() {
        let table = Arc::new(Table::new(Limits { total: 4, per_peer: 2 }));
        let a1 = table.admit(ip("127.0.0.1")).unwrap();
        let a2 = table.admit(ip("127.0.0.1")).unwrap();
        // Over the per-peer limit: the oldest idle one (a1) is evicted.
        let a3 = table.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(table.lock().open.keys().copied().collect::<Vec<_>>(), vec![a2.id, a3.id]);
        drop(a1);
        // Both busy: a new one from that peer is refused.
        let _b2 = Busy::enter(&a2.in_flight);
        let b3 = Busy::enter(&a3.in_flight);
        assert!(table.admit(ip("127.0.0.1")).is_none());
        // A refused request lets go of its mark: its connection gives way (once).
        b3.0.leave();
        b3.0.leave();
        assert_eq!(a2.in_flight.load(Ordering::SeqCst), 1);
        let a4 = table.admit(ip("127.0.0.1")).unwrap();
        assert!(!table.lock().open.contains_key(&a3.id));
        drop((b3, a4));
        // Other peers have their own share, up to the total.
        let c1 = table.admit(ip("10.0.0.2")).unwrap();
        let _c2 = table.admit(ip("10.0.0.2")).unwrap();
        let _e = table.admit(ip("10.0.0.3")).unwrap();
        // The total is reached: the busiest peer's idle one (c1) gives way.
        let d = table.admit(ip("10.0.0.4")).unwrap();
        let open: Vec<u64> = table.lock().open.keys().copied().collect();
        assert!(!open.contains(&c1.id) && open.contains(&d.id), "{open:?}");
        assert_eq!(open.len(), 4);
    }

    #[test]
    fn a_closed_connection_frees_its_place() {
        let table = Arc::new(Table::new(Limits { total: 1, per_peer: 1 }));
        let a = table.admit(None).unwrap();
        let _busy = Busy::enter(&a.in_flight);
        assert!(table.admit(None).is_none());
        drop(_busy);
        drop(a);
        assert!(table.admit(None).is_some());
    }
}
