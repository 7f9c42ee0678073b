//! Whether the gateway's listening sockets are bound: for `/readyz`, and to stop the process
//! when they cannot be.
//!
//! pingora binds a service's listeners when the service starts; when an address is taken (a
//! process that is still leaving, another program) it logs and tries again every second for
//! 30 seconds, then panics in that service's runtime and leaves the rest of the process
//! running. The proxy and the admin listener are services of their own, so without this
//! `/readyz` would answer 200 while a balancer's connections to the proxy port are refused
//! or reach whatever holds it, and a process that never got its port would live on.
//!
//! [`WatchBinding`] wraps a service and counts it as bound once pingora has recorded each of
//! its listeners in the process's table of listening sockets (the table a graceful upgrade
//! hands over: sockets taken over from the old process are there from the start). When the
//! service ends before that, panicking included, [`Listening`] turns failed: the shutdown
//! watcher stops the process and the start reports the error.

use async_trait::async_trait;
use pingora::server::{ListenFds, RuntimeOpts, ShutdownWatch};
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How often the table of listening sockets is looked at until every listener is in it.
const POLL: Duration = Duration::from_millis(10);

/// The binding state of every [`WatchBinding`] service.
#[derive(Debug, Default)]
pub struct Listening {
    /// Services whose listeners are not all bound yet.
    unbound: AtomicUsize,
    failed: AtomicBool,
    failure: Notify,
}

impl Listening {
    /// `inner`, counted here until its listeners at `addresses` are bound.
    pub fn watch<S>(self: &Arc<Self>, inner: S, addresses: Vec<String>) -> WatchBinding<S> {
        self.unbound.fetch_add(1, Ordering::Relaxed);
        WatchBinding {
            inner,
            addresses,
            listening: self.clone(),
        }
    }

    /// Every watched service's listeners are bound.
    pub fn is_bound(&self) -> bool {
        self.unbound.load(Ordering::Relaxed) == 0 && !self.has_failed()
    }

    /// A watched service ended before its listeners were bound.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Completes once a watched service has failed to bind (for the one shutdown watcher).
    pub async fn failure(&self) {
        if !self.has_failed() {
            // fail() stores a permit when nobody waits yet, so no failure is missed.
            self.failure.notified().await;
        }
    }

    fn bound(&self) {
        self.unbound.fetch_sub(1, Ordering::Relaxed);
    }

    fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
        self.failure.notify_one();
    }
}

/// A pingora service counted in [`Listening`] until its listeners are bound.
pub struct WatchBinding<S> {
    inner: S,
    /// The service's listener addresses, as given to pingora.
    addresses: Vec<String>,
    listening: Arc<Listening>,
}

/// Turns [`Listening`] failed when dropped before [`Self::bound`], which includes the
/// unwinding of a panic in the service.
struct UntilBound<'a> {
    listening: &'a Listening,
    bound: bool,
}

impl UntilBound<'_> {
    fn bound(&mut self) {
        self.bound = true;
        self.listening.bound();
    }
}

impl Drop for UntilBound<'_> {
    fn drop(&mut self) {
        if !self.bound {
            tracing::error!("a listener could not be bound; the gateway stops");
            self.listening.fail();
        }
    }
}

/// Whether every address has a socket in the table.
fn all_bound(fds: &ListenFds, addresses: &[String]) -> bool {
    let table = fds.lock();
    addresses.iter().all(|a| table.get(a).is_some())
}

#[async_trait]
impl<S: ServiceWithDependents> ServiceWithDependents for WatchBinding<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        let Self {
            inner,
            addresses,
            listening,
        } = self;
        let mut guard = UntilBound {
            listening,
            bound: false,
        };
        let name = inner.name().to_string();
        let table = fds.clone();
        let serve = inner.start_service(fds, shutdown, listeners_per_fd, ready_notifier);
        tokio::pin!(serve);
        match table {
            Some(table) => loop {
                tokio::select! {
                    () = &mut serve => return,
                    () = tokio::time::sleep(POLL) => {
                        if all_bound(&table, addresses) {
                            break;
                        }
                    }
                }
            },
            // pingora passes its table on Unix; without one there is nothing to wait for.
            None => {
                tracing::warn!("no table of listening sockets; /readyz cannot wait for binding")
            }
        }
        guard.bound();
        tracing::info!(service = name, ?addresses, "listening");
        serve.await;
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }

    fn on_startup_delay(&self, time_waited: Duration) {
        self.inner.on_startup_delay(time_waited);
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}
