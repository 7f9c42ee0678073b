//! What the process does on its signals.
//!
//! pingora's own watcher stops accepting the moment SIGTERM arrives. Behind a load
//! balancer or a Kubernetes Service, connections keep being routed to a leaving process
//! until its endpoint's removal has reached every balancer; refusing them would fail
//! requests on every rolling update. [`Signals`] keeps accepting for `server.grace_period`
//! after SIGTERM, with `/readyz` answering 503 so that health-checking balancers stop
//! sending and HTTP/1.1 answers carrying `Connection: close` (the gateway reads
//! [`Draining`]) so that keep-alive clients reconnect elsewhere, and only then hands
//! pingora its graceful stop (accepting ends, h2 connections get GOAWAY, requests in
//! flight get `server.graceful_shutdown_timeout`).
//!
//! - `SIGTERM`: drain as above; SIGINT during the drain stops at once.
//! - `SIGQUIT`: graceful upgrade (pingora hands the listening sockets to the new process).
//! - `SIGINT`: stop at once.
//!
//! A listener that cannot be bound ([`super::listening`]) also stops the process at once.

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Set once SIGTERM has arrived: the process is leaving and `/readyz` says so.
#[derive(Debug, Default)]
pub struct Draining(AtomicBool);

impl Draining {
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn start(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The process's shutdown signal watcher (see the module documentation).
pub struct Signals {
    /// How long to keep accepting after SIGTERM.
    pub grace_period: Duration,
    pub draining: Arc<Draining>,
    /// A listener that cannot be bound stops the process at once.
    pub listening: Arc<super::listening::Listening>,
}

/// A handler for `kind`, or `None` (logged) when the runtime cannot install one: that
/// signal then never arrives, rather than stopping the process.
fn handler(kind: SignalKind, name: &'static str) -> Option<Signal> {
    signal(kind)
        .inspect_err(|e| tracing::error!(signal = name, error = %e, "cannot watch signal"))
        .ok()
}

/// The next delivery of `signal`; never, without a handler.
async fn next(signal: &mut Option<Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let mut quit = handler(SignalKind::quit(), "SIGQUIT");
        let mut terminate = handler(SignalKind::terminate(), "SIGTERM");
        let mut interrupt = handler(SignalKind::interrupt(), "SIGINT");
        tokio::select! {
            _ = next(&mut quit) => return ShutdownSignal::GracefulUpgrade,
            _ = next(&mut interrupt) => return ShutdownSignal::FastShutdown,
            () = self.listening.failure() => return ShutdownSignal::FastShutdown,
            _ = next(&mut terminate) => {}
        }
        self.draining.start();
        tracing::info!(
            grace_period = ?self.grace_period,
            "SIGTERM: still accepting for the grace period, /readyz answers 503"
        );
        tokio::select! {
            _ = tokio::time::sleep(self.grace_period) => ShutdownSignal::GracefulTerminate,
            _ = next(&mut interrupt) => ShutdownSignal::FastShutdown,
        }
    }
}
