//! Everything a reload produces, as one immutable value behind one `ArcSwap`.
//!
//! A request loads the [`Snapshot`] once, when it starts, and keeps it in its context: it
//! is routed by that snapshot's routes and decided by that snapshot's policy set (and
//! shadowed by its shadow set), never by a mix of two reloads.

use crate::policy::{PolicySnapshot, ShadowPolicy};
use crate::routes::RouteTable;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// One complete set: routes, the enforced policy set and the shadow set.
pub struct Snapshot {
    pub routes: RouteTable,
    pub policy: Arc<PolicySnapshot>,
    pub shadow: Option<Arc<ShadowPolicy>>,
    /// The manifest revision of the bundle the policy set came from, if it did.
    pub bundle_revision: Option<Box<str>>,
}

/// The snapshot in force.
pub struct Live {
    current: ArcSwap<Snapshot>,
    /// Told of every swap, for whoever must act on one at once (the stream guard).
    swaps: tokio::sync::watch::Sender<()>,
}

impl Live {
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
            swaps: tokio::sync::watch::Sender::new(()),
        }
    }

    /// A receiver that sees a change after every [`Self::store`].
    pub fn swaps(&self) -> tokio::sync::watch::Receiver<()> {
        self.swaps.subscribe()
    }

    /// The snapshot in force now; a request keeps it for its whole life.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Puts `snapshot` in force, atomically.
    pub fn store(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
        self.swaps.send_replace(());
    }
}
