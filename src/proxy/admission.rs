//! Admission of new connections: the PROXY protocol header on plain listeners that expect
//! one ([`super::proxy_protocol`]), caps on open connections per listener and per client
//! address, then the header read deadline on every connection admitted.
//!
//! A connection over either cap is answered at once with `503` and reason
//! `too_many_connections` (`Retry-After: 1`, `Connection: close`) and closed, counted in
//! `agentgate_connections_refused_total{listener, limit}`; nothing of its request is read. The
//! counts live in atomics (per listener) and a sharded map (per client address), touched once
//! when a connection opens and once when it closes, never per request.

use super::deadline::HeaderDeadline;
use super::decision_id::DecisionIds;
use super::proxy_protocol::{ProxyHeaderError, ProxyProtocol};
use crate::outcome::{body, Refusal, RequestError};
use crate::request::client::TrustedProxies;
use crate::telemetry::Metrics;
use async_trait::async_trait;
use dashmap::DashMap;
use pingora::apps::ServerApp;
use pingora::server::ShutdownWatch;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

type Stream = pingora::protocols::Stream;

/// How long a refusal may take to write before the connection is dropped anyway.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The caps; `0` means no cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub per_listener: usize,
    pub per_client: usize,
    /// Peers exempt from the per-client cap: trusted proxies, each carrying many clients.
    pub exempt: TrustedProxies,
}

/// Which cap refused a connection (the `limit` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Listener,
    Client,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Listener => "listener",
            Self::Client => "client",
        }
    }
}

/// Open connections per listener and per client address.
pub struct ConnectionCounts {
    limits: ConnectionLimits,
    listeners: Vec<(SocketAddr, String, AtomicUsize)>,
    clients: DashMap<IpAddr, usize>,
}

/// One admitted connection; it is counted until this is dropped.
pub struct Admitted<'a> {
    counts: &'a ConnectionCounts,
    listener: Option<usize>,
    client: Option<IpAddr>,
}

impl ConnectionCounts {
    /// Counts for the configured listener addresses.
    pub fn new(listeners: &[SocketAddr], limits: ConnectionLimits) -> Self {
        Self {
            limits,
            listeners: listeners
                .iter()
                .map(|a| (*a, a.to_string(), AtomicUsize::new(0)))
                .collect(),
            clients: DashMap::new(),
        }
    }

    /// The listener a connection arrived on: its exact address, or the wildcard listener on
    /// the same port.
    fn listener_of(&self, local: SocketAddr) -> Option<usize> {
        self.listeners
            .iter()
            .position(|(a, _, _)| *a == local)
            .or_else(|| {
                self.listeners
                    .iter()
                    .position(|(a, _, _)| a.port() == local.port() && a.ip().is_unspecified())
            })
    }

    /// The listener's label for metrics (`unknown` when the address matches none).
    pub fn label(&self, listener: Option<usize>) -> &str {
        listener.map_or("unknown", |i| self.listeners[i].1.as_str())
    }

    /// Admits a connection from `peer` on `local`, or names the cap it would exceed.
    pub fn admit(
        &self,
        local: Option<SocketAddr>,
        peer: Option<IpAddr>,
    ) -> Result<Admitted<'_>, (Option<usize>, Limit)> {
        let listener = local.and_then(|l| self.listener_of(l));
        if let Some(i) = listener {
            let open = &self.listeners[i].2;
            let cap = self.limits.per_listener;
            if open.fetch_add(1, Ordering::AcqRel) >= cap && cap > 0 {
                open.fetch_sub(1, Ordering::AcqRel);
                return Err((listener, Limit::Listener));
            }
        }
        // From here on, dropping `admitted` undoes what was counted.
        let mut admitted = Admitted {
            counts: self,
            listener,
            client: None,
        };
        let cap = self.limits.per_client;
        if let Some(ip) = peer.filter(|ip| cap > 0 && !self.limits.exempt.contains(*ip)) {
            let mut open = self.clients.entry(ip).or_insert(0);
            if *open >= cap {
                return Err((listener, Limit::Client));
            }
            *open += 1;
            admitted.client = Some(ip);
        }
        Ok(admitted)
    }

    fn forget_client_if_idle(&self, ip: IpAddr) {
        self.clients.remove_if(&ip, |_, open| *open == 0);
    }

    /// Open connections on the listener at index `i`.
    pub fn open_on(&self, i: usize) -> usize {
        self.listeners[i].2.load(Ordering::Acquire)
    }

    /// Listener labels and their open connections, for metrics.
    pub fn open(&self) -> impl Iterator<Item = (&str, usize)> {
        self.listeners
            .iter()
            .map(|(_, label, n)| (label.as_str(), n.load(Ordering::Acquire)))
    }

    /// Client addresses with at least one open connection.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }
}

impl Admitted<'_> {
    /// The index of the listener the connection came in on.
    pub fn listener(&self) -> Option<usize> {
        self.listener
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.listener {
            self.counts.listeners[i].2.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(ip) = self.client {
            if let Some(mut open) = self.counts.clients.get_mut(&ip) {
                *open = open.saturating_sub(1);
            }
            self.counts.forget_client_if_idle(ip);
        }
    }
}

/// Wraps a pingora application: caps connections, then gives every admitted connection a
/// [`HeaderDeadline`].
pub struct Admission<A> {
    pub inner: Arc<A>,
    pub header_deadline: Duration,
    pub counts: Arc<ConnectionCounts>,
    pub metrics: Arc<Metrics>,
    pub ids: Arc<DecisionIds>,
    /// Plain listeners whose connections open with a PROXY protocol header.
    pub proxy_protocol: ProxyProtocol,
}

fn inet(addr: Option<&pingora::protocols::l4::socket::SocketAddr>) -> Option<SocketAddr> {
    addr.and_then(|a| a.as_inet()).copied()
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Admission<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let local = inet(
            session
                .get_socket_digest()
                .as_ref()
                .and_then(|d| d.local_addr()),
        );
        if self.proxy_protocol.expects(local) {
            let fd = session
                .as_any()
                .downcast_ref::<pingora::protocols::l4::stream::Stream>()
                .map(|s| s.as_raw_fd());
            let read = match fd {
                Some(fd) => self.proxy_protocol.accept(&mut *session, fd).await,
                None => Err(ProxyHeaderError::NotInet),
            };
            if let Err(e) = read {
                self.metrics
                    .connections_refused
                    .with_label_values(&[
                        self.counts
                            .label(local.and_then(|l| self.counts.listener_of(l))),
                        "proxy_protocol",
                    ])
                    .inc();
                tracing::debug!(error = %e, "connection refused: PROXY protocol");
                return None;
            }
        }
        let digest = session.get_socket_digest();
        let peer = inet(digest.as_ref().and_then(|d| d.peer_addr())).map(|a| a.ip());
        let admitted = match self.counts.admit(local, peer) {
            Ok(a) => a,
            Err((listener, limit)) => {
                self.metrics
                    .connections_refused
                    .with_label_values(&[self.counts.label(listener), limit.as_str()])
                    .inc();
                tracing::debug!(limit = limit.as_str(), "connection refused: too many open");
                refuse(&mut session, &self.ids.next()).await;
                return None;
            }
        };
        let wrapped: Stream = Box::new(HeaderDeadline::new(session, self.header_deadline));
        let reused = self.inner.process_new(wrapped, shutdown).await;
        drop(admitted);
        reused
    }

    /// pingora's cleanup drops every connection still waiting for its request. When the
    /// listener closes (graceful upgrade or shutdown), a connection accepted a moment
    /// before may not have sent its request yet; dropping it would lose a request the
    /// client has every right to expect an answer to. Such a connection gets the header
    /// deadline to send it first (each is answered with `Connection: close`);
    /// `server.graceful_shutdown_timeout`, after which the runtime stops, still cuts the
    /// wait short.
    async fn cleanup(&self) {
        tokio::time::sleep(self.header_deadline).await;
        self.inner.cleanup().await;
    }
}

/// Writes the `too_many_connections` refusal and closes the connection.
async fn refuse(session: &mut Stream, decision_id: &str) {
    let refusal = Refusal::Request(RequestError::TooManyConnections);
    let body = body(refusal.status(), refusal.reason(), decision_id);
    let head = format!(
        "HTTP/1.1 {} Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: no-store\r\nretry-after: {}\r\nconnection: close\r\nx-agentgate-decision-id: {decision_id}\r\n\r\n",
        refusal.status(),
        body.len(),
        refusal.retry_after().unwrap_or(1),
    );
    let write = async {
        session.write_all(head.as_bytes()).await?;
        session.write_all(&body).await?;
        session.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, write).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(per_listener: usize, per_client: usize) -> ConnectionCounts {
        ConnectionCounts::new(
            &[
                "127.0.0.1:8080".parse().unwrap(),
                "0.0.0.0:9090".parse().unwrap(),
            ],
            ConnectionLimits {
                per_listener,
                per_client,
                exempt: TrustedProxies::new(vec!["198.51.100.0/24".parse().unwrap()]),
            },
        )
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_listener_cap_counts_open_connections_and_frees_on_close() {
        let c = counts(2, 0);
        let at = Some("127.0.0.1:8080".parse().unwrap());
        let a = c.admit(at, ip("10.0.0.1")).unwrap();
        let b = c.admit(at, ip("10.0.0.2")).unwrap();
        assert_eq!(
            c.admit(at, ip("10.0.0.3")).err(),
            Some((Some(0), Limit::Listener))
        );
        assert_eq!(c.open_on(0), 2);
        drop(a);
        let _c = c.admit(at, ip("10.0.0.3")).unwrap();
        drop(b);
        assert_eq!(c.open_on(0), 1);
    }

    #[test]
    fn trusted_proxies_are_not_held_to_the_client_cap() {
        let c = counts(0, 1);
        let held: Vec<_> = (0..3)
            .map(|_| c.admit(None, ip("198.51.100.7")).unwrap())
            .collect();
        assert_eq!(c.clients(), 0);
        assert!(c.admit(None, ip("192.0.2.1")).is_ok());
        drop(held);
    }

    #[test]
    fn the_client_cap_is_per_address_and_forgets_idle_addresses() {
        let c = counts(0, 1);
        let at = Some("127.0.0.1:8080".parse().unwrap());
        let a = c.admit(at, ip("10.0.0.1")).unwrap();
        assert_eq!(
            c.admit(at, ip("10.0.0.1")).err(),
            Some((Some(0), Limit::Client))
        );
        // The refused one did not count against the listener.
        assert_eq!(c.open_on(0), 1);
        let _b = c.admit(at, ip("10.0.0.2")).unwrap();
        assert_eq!(c.clients(), 2);
        drop(a);
        assert_eq!(c.clients(), 1);
        let _again = c.admit(at, ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn a_wildcard_listener_is_found_by_port() {
        let c = counts(1, 0);
        let at = Some("10.1.2.3:9090".parse().unwrap());
        let a = c.admit(at, ip("10.0.0.1")).unwrap();
        assert_eq!(a.listener(), Some(1));
        assert_eq!(c.label(a.listener()), "0.0.0.0:9090");
        assert!(c.admit(at, ip("10.0.0.2")).is_err());
        assert_eq!(c.label(None), "unknown");
    }
}
