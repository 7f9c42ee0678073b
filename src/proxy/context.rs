//! What one request carries from phase to phase.

use crate::authorize::{Authenticated, ShadowVerdict};
use crate::outcome::{Outcome, UpstreamFailure};
use crate::routes::Route;
use crate::snapshot::Snapshot;
use std::sync::Arc;
use std::time::Instant;

/// Per-request facts carried between phases.
pub struct RequestCtx {
    pub(super) started: Instant,
    pub(super) decision_id: String,
    /// The snapshot this request is routed and decided by, loaded once when it starts.
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) route: Option<Arc<Route>>,
    pub(super) caller: Option<Arc<Authenticated>>,
    /// What the gateway decided, once it has.
    pub(super) outcome: Option<Outcome>,
    /// Why an allowed request got no answer from its upstream.
    pub(super) upstream_failure: Option<UpstreamFailure>,
    /// When the request left for the upstream.
    pub(super) forwarded_at: Option<Instant>,
    pub(super) tries: usize,
    /// The shadow verdict and whether it differs from the enforced one.
    pub(super) shadow: Option<(ShadowVerdict, bool)>,
    /// This request's position on its connection (1 for the first).
    pub(super) nth_on_connection: u32,
    /// The origin-form target and host to send upstream instead of the ones received: set
    /// when the path was normalised or the target came in absolute form.
    pub(super) upstream_target: Option<(String, String)>,
    /// Request body bytes received so far (counted against the route's `max_body_bytes`).
    pub(super) body_bytes: u64,
    /// The client: the peer, or the address trusted proxies name (see `request::client`).
    pub(super) client_ip: Option<std::net::IpAddr>,
}

impl RequestCtx {
    /// The reason code the request ends with: the upstream failure's, else the outcome's.
    pub(super) fn reason(&self) -> &str {
        match (&self.upstream_failure, &self.outcome) {
            (Some(f), _) => f.reason(),
            (None, Some(o)) => o.reason(),
            (None, None) => "",
        }
    }

    pub(super) fn allowed(&self) -> bool {
        matches!(self.outcome, Some(Outcome::Allowed(_)))
    }
}
