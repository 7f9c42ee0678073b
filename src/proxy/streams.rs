//! Long-lived streams, and the guard that ends them when they may no longer run.
//!
//! A WebSocket upgrade (101), a server-sent events response (`text/event-stream`), every
//! call on a gRPC route and every request on a route with a `request_timeout` is registered
//! here with a duplicate of its upstream socket. [`StreamGuard`] ends one when its token's
//! `exp` has passed, its route's `request_timeout` has run out, or the snapshot swapped in
//! since it was last decided refuses it (the request is decided again, exactly as a new one
//! would be). It wakes when the earliest `exp` or timeout of the open streams comes due and
//! when a snapshot is swapped in, so each is acted on at once, and at least every [`TICK`]
//! besides (a wall clock that was set forward, the open-streams gauge). Ending means
//! shutting the upstream socket down: pingora then ends the exchange with the client, and
//! [`Stream::closed`] tells the request's own phases why.
//!
//! Ordinary requests never touch the registry. The duplicate descriptor keeps the socket
//! (and so its number) alive while it is registered, so the guard can only ever shut down
//! the connection it was given; a stream leaves the registry when its response ends,
//! before pingora could return the connection to its pool. An HTTP/2 upstream connection
//! carries one stream at a time (the gateway pins pingora's `max_h2_streams` to 1), so
//! shutting it down ends that stream alone.

use crate::authorize::Authorizer;
use crate::identity::TokenError;
use crate::outcome::{Outcome, Refusal, UpstreamFailure};
use crate::policy::input::RequestFacts;
use crate::snapshot::{Live, Snapshot};
use crate::telemetry::Metrics;
use crate::tls::ClientCertificate;
use async_trait::async_trait;
use dashmap::DashMap;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::net::Shutdown;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The longest the guard sleeps when nothing comes due sooner.
pub const TICK: Duration = Duration::from_millis(250);

/// Why the guard ended a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseCause {
    /// The token's `exp` passed.
    TokenExpired,
    /// The route's `request_timeout` ran out.
    RequestTimeout,
    /// A newly swapped-in snapshot refuses the request.
    Denied(Refusal),
}

impl CloseCause {
    /// A closed metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::TokenExpired => "token_expired",
            Self::RequestTimeout => "request_timeout",
            Self::Denied(_) => "denied",
        }
    }

    /// The reason code: the refusal's for a denial.
    pub fn reason(&self) -> &str {
        match self {
            Self::Denied(refusal) => refusal.reason(),
            other => other.label(),
        }
    }

    /// The refusal the client is told, unless the stream timed out.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Self::TokenExpired => Some(Refusal::Token(TokenError::Expired)),
            Self::RequestTimeout => None,
            Self::Denied(refusal) => Some(refusal.clone()),
        }
    }

    /// The HTTP status the client is told (gRPC clients: the `grpc-status` it maps to).
    pub fn status(&self) -> u16 {
        match self {
            Self::TokenExpired => Refusal::Token(TokenError::Expired).status(),
            Self::RequestTimeout => UpstreamFailure::RequestTimeout.status(),
            Self::Denied(refusal) => refusal.status(),
        }
    }
}

/// The request of a stream, kept to decide it again. Not `Debug`: it holds every request
/// header, `Authorization` included, and nothing may print it.
pub struct StreamRequest {
    pub method: String,
    pub host: String,
    pub path: String,
    pub query: String,
    pub client_ip: String,
    pub headers: http::HeaderMap,
    pub upgrade: Option<&'static str>,
    pub client_certificate: Option<ClientCertificate>,
}

impl StreamRequest {
    fn facts(&self, time_ns: u64) -> RequestFacts<'_> {
        RequestFacts {
            method: &self.method,
            host: &self.host,
            path: &self.path,
            query: &self.query,
            client_ip: &self.client_ip,
            headers: &self.headers,
            time_ns,
            upgrade: self.upgrade,
            client_certificate: self.client_certificate.as_ref(),
        }
    }
}

/// What registering a stream takes.
pub struct NewStream {
    pub request: Arc<StreamRequest>,
    /// The snapshot that allowed it.
    pub snapshot: Weak<Snapshot>,
    /// Unix second of the token's `exp`.
    pub expires_at: u64,
    pub deadline: Option<Instant>,
    pub decision_id: String,
    pub route: Arc<str>,
}

/// A registered stream, as its request holds it.
#[derive(Debug)]
pub struct Stream {
    id: u64,
    closed: Arc<OnceLock<CloseCause>>,
}

impl Stream {
    /// Why the guard ended the stream, once it has.
    pub fn closed(&self) -> Option<&CloseCause> {
        self.closed.get()
    }
}

struct Entry {
    socket: std::net::TcpStream,
    closed: Arc<OnceLock<CloseCause>>,
    request: Arc<StreamRequest>,
    snapshot: Weak<Snapshot>,
    expires_at: u64,
    /// The instant the wall clock reaches `expires_at`.
    expires: Instant,
    deadline: Option<Instant>,
    decision_id: String,
    route: Arc<str>,
}

impl Entry {
    /// When the stream must end at the latest: its token's `exp` or its deadline.
    fn due(&self) -> Instant {
        self.deadline.map_or(self.expires, |d| d.min(self.expires))
    }
}

/// The open streams.
pub struct OpenStreams {
    streams: DashMap<u64, Entry>,
    next_id: AtomicU64,
    /// Instants are kept as nanoseconds since this one.
    epoch: Instant,
    /// The earliest [`Entry::due`] among the open streams (`u64::MAX`: none), or earlier.
    earliest: AtomicU64,
    /// Woken when a new stream comes due before every open one.
    sooner: Notify,
}

impl Default for OpenStreams {
    fn default() -> Self {
        Self {
            streams: DashMap::new(),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            earliest: AtomicU64::new(u64::MAX),
            sooner: Notify::new(),
        }
    }
}

/// Why a stream could not be registered.
#[derive(Debug, thiserror::Error)]
#[error("the upstream socket could not be duplicated: {0}")]
pub struct RegisterError(#[from] std::io::Error);

impl OpenStreams {
    /// Registers the stream whose upstream connection is `fd`.
    ///
    /// `fd` must be the descriptor of the upstream connection the calling request is
    /// using right now (pingora's `connected_to_upstream` hands it over), still open.
    pub fn register(&self, fd: RawFd, new: NewStream) -> Result<Stream, RegisterError> {
        let socket = std::net::TcpStream::from(duplicate(fd)?);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let closed = Arc::new(OnceLock::new());
        let entry = Entry {
            socket,
            closed: closed.clone(),
            request: new.request,
            snapshot: new.snapshot,
            expires_at: new.expires_at,
            expires: crate::clock::instant_at_unix_secs(new.expires_at),
            deadline: new.deadline,
            decision_id: new.decision_id,
            route: new.route,
        };
        let due = self.since_epoch(entry.due());
        self.streams.insert(id, entry);
        // After the insert: a guard that resets `earliest` after this lowers it sees the
        // entry in its pass; one that reset it before keeps this value.
        if due < self.earliest.fetch_min(due, Ordering::AcqRel) {
            self.sooner.notify_one();
        }
        Ok(Stream { id, closed })
    }

    fn since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// When the guard must look next: the earliest stream's end, at most [`TICK`] away.
    fn next_wake(&self) -> Instant {
        let tick = Instant::now() + TICK;
        match self.earliest.load(Ordering::Acquire) {
            u64::MAX => tick,
            nanos => tick.min(self.epoch + Duration::from_nanos(nanos)),
        }
    }

    /// Forgets `stream` (its response ended); the guard no longer touches its socket.
    pub fn release(&self, stream: &Stream) {
        self.streams.remove(&stream.id);
    }

    /// How many streams are open.
    fn len(&self) -> usize {
        self.streams.len()
    }

    /// Ends every stream that may no longer run, deciding again those the snapshot in
    /// force has not decided yet.
    async fn check(&self, live: &Live, authorizer: &Authorizer, metrics: &Metrics) {
        // Reset first (a read-modify-write, so every stream whose registration lowered it
        // before is seen below); a stream registered from here on lowers it again itself.
        self.earliest.swap(u64::MAX, Ordering::AcqRel);
        if self.streams.is_empty() {
            return;
        }
        let wall = crate::clock::now();
        let now_secs = crate::clock::unix_secs(wall);
        let now = Instant::now();
        let current = live.load();
        let mut ending = Vec::new();
        let mut undecided = Vec::new();
        let mut earliest = u64::MAX;
        for entry in self.streams.iter() {
            let cause = if entry.expires_at <= now_secs || entry.expires <= now {
                Some(CloseCause::TokenExpired)
            } else if entry.deadline.is_some_and(|d| d <= now) {
                Some(CloseCause::RequestTimeout)
            } else {
                None
            };
            if let Some(cause) = cause {
                ending.push((*entry.key(), cause));
                continue;
            }
            if entry.snapshot.as_ptr() != Arc::as_ptr(&current) {
                undecided.push((*entry.key(), entry.request.clone()));
            }
            earliest = earliest.min(self.since_epoch(entry.due()));
        }
        self.earliest.fetch_min(earliest, Ordering::AcqRel);
        let time_ns = crate::clock::unix_nanos(wall);
        for (id, request) in undecided {
            match decide_again(&current, authorizer, &request, time_ns).await {
                None => {
                    if let Some(mut entry) = self.streams.get_mut(&id) {
                        entry.snapshot = Arc::downgrade(&current);
                    }
                }
                Some(refusal) => ending.push((id, CloseCause::Denied(refusal))),
            }
        }
        for (id, cause) in ending {
            let Some((_, entry)) = self.streams.remove(&id) else {
                continue; // its response ended meanwhile
            };
            metrics
                .streams_closed
                .with_label_values(&[&*entry.route, cause.label()])
                .inc();
            tracing::info!(decision_id = %entry.decision_id, route = %entry.route, cause = cause.label(), reason = cause.reason(), "ending an open stream");
            let _ = entry.closed.set(cause);
            if let Err(e) = entry.socket.shutdown(Shutdown::Both) {
                tracing::debug!(decision_id = %entry.decision_id, error = %e, "upstream socket already closed");
            }
        }
    }
}

/// Decides `request` with `snapshot` as a new request: `None` when allowed, else why not.
async fn decide_again(
    snapshot: &Snapshot,
    authorizer: &Authorizer,
    request: &StreamRequest,
    time_ns: u64,
) -> Option<Refusal> {
    let host = crate::request::host_name(&request.host);
    let Some(route) = snapshot.routes.find(host, &request.path) else {
        return Some(Refusal::Request(crate::outcome::RequestError::NoRoute));
    };
    if request.upgrade.is_some() && !route.config.websocket {
        return Some(Refusal::Request(
            crate::outcome::RequestError::UpgradeNotAllowed,
        ));
    }
    let facts = request.facts(time_ns);
    match authorizer
        .authorize(snapshot, &route.access, &facts, false)
        .await
        .outcome
    {
        Outcome::Allowed(_) => None,
        Outcome::Refused(refusal) => Some(refusal),
    }
}

/// A descriptor of our own for the socket behind `fd`.
#[allow(unsafe_code)]
fn duplicate(fd: RawFd) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: `register` is only called with the descriptor of the upstream connection the
    // calling request is using: pingora owns it and keeps it open for the whole call, so
    // borrowing it for the duplication is sound.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed.try_clone_to_owned()
}

/// The background service that ends open streams as they come due, checks them again
/// whenever a snapshot is swapped in, and at least every [`TICK`].
pub struct StreamGuard {
    pub streams: Arc<OpenStreams>,
    pub live: Arc<Live>,
    pub authorizer: Arc<Authorizer>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl BackgroundService for StreamGuard {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut swaps = self.live.swaps();
        loop {
            let wake = self.streams.next_wake();
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = swaps.changed() => {}
                // A new stream comes due sooner: sleep again, until then.
                _ = self.streams.sooner.notified() => continue,
                _ = shutdown.changed() => return,
            }
            self.streams
                .check(&self.live, &self.authorizer, &self.metrics)
                .await;
            self.metrics.streams_open.set(self.streams.len() as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::RequestError;

    #[test]
    fn an_ended_stream_is_told_what_a_new_request_would_be() {
        let no_route = Refusal::Request(RequestError::NoRoute);
        let cases = [
            (CloseCause::TokenExpired, 401, "token_expired", true),
            (CloseCause::RequestTimeout, 504, "request_timeout", false),
            (
                CloseCause::Denied(no_route.clone()),
                no_route.status(),
                no_route.reason(),
                true,
            ),
        ];
        for (cause, status, reason, refused) in cases {
            assert_eq!(
                (cause.status(), cause.reason(), cause.refusal().is_some()),
                (status, reason, refused),
                "{cause:?}"
            );
            if let Some(refusal) = cause.refusal() {
                assert_eq!((refusal.status(), refusal.reason()), (status, reason));
            }
        }
    }
}
