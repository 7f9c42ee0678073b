//! A fake Microsoft Graph and Entra token endpoint on loopback, for the demo and the tests.
//!
//! It serves the documented shapes of the collections the directory sync reads
//! (`@odata.context`, `value`, `@odata.nextLink` paging with `$top` and `$skiptoken`, sponsors
//! expanded up to Graph's limit of 20 and listed in full on their own path), checks bearer
//! tokens, and issues them from a token endpoint that checks the client's credential: the
//! client secret, the federated token, or a certificate client assertion (signature against
//! the configured certificate's key, `x5t#S256`, `aud`, `iss` = `sub` = client id, `exp`).
//!
//! State changes like real Graph:
//! - `PATCH /v1.0/servicePrincipals/{id}` with `{"accountEnabled": false}` disables an agent
//!   identity or a blueprint principal (`true` enables it again);
//! - `PATCH /v1.0/users/{id}` with `{"accountEnabled": ...}` for an agent user;
//! - `POST /fake/riskyAgents/{id}` with `{"riskLevel": "high", "riskState": "atRisk"}` (a
//!   path only the fake has) sets the risk of any agent object.
//!
//! Mutations need no token: this is a development tool. Faults are injected per target (the
//! Graph collections or the token endpoint) for a number of requests: throttling with
//! `Retry-After`, server errors, slow, truncated, oversized or malformed answers, and a next
//! link to another origin. Every request is recorded with its arrival time and status, so a
//! test can prove when the client came back. Large synthetic tenants (see [`Synthetic`]) are
//! generated page by page and never held as objects or JSON.

mod collections;
mod faults;
mod tenant;
mod token;

pub use faults::{FaultTarget, GraphFault, RecordedRequest};
pub use tenant::{
    principal_id, FakeAgent, FakeAgentUser, FakeBlueprint, FakeSponsor, FakeTenant, Synthetic,
};
pub use token::FakeCredentials;

use crate::graph::credential::certificate_thumbprint_s256;
use axum::Router;
use jsonwebtoken::DecodingKey;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use token::IssuedToken;

/// Graph's limit on objects in an expanded relationship of a directory object.
const EXPAND_LIMIT: usize = 20;

/// The fake's live state.
pub struct GraphState {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Served over HTTPS ([`serve_graph_tls`]): links and audiences say `https://`.
    https: std::sync::atomic::AtomicBool,
    pub tenant_id: String,
    credentials: Mutex<FakeCredentials>,
    certificate: Option<(DecodingKey, String)>,
    /// Client secrets and assertions received, for tests that scan logs for them.
    received: Mutex<Vec<String>>,
    tenant: Mutex<FakeTenant>,
    /// `accountEnabled` set through PATCH, by object id.
    enabled_overrides: Mutex<HashMap<String, bool>>,
    page_size: AtomicUsize,
    token_lifetime_secs: AtomicU64,
    faults: Mutex<VecDeque<(FaultTarget, GraphFault)>>,
    requests: Mutex<Vec<RecordedRequest>>,
    tokens: Mutex<HashMap<String, IssuedToken>>,
    issued: Mutex<Vec<String>>,
}

/// Why the fake could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("fake Graph: {0}")]
pub struct FakeGraphError(String);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// === impl GraphState ===

impl GraphState {
    /// A fake for `tenant_id` at `addr`, accepting `credentials`, serving `tenant`.
    pub fn new(
        addr: SocketAddr,
        tenant_id: &str,
        credentials: FakeCredentials,
        tenant: FakeTenant,
    ) -> Result<Arc<Self>, FakeGraphError> {
        let certificate = match &credentials.certificate_pem {
            None => None,
            Some(pem) => Some((
                DecodingKey::from_rsa_pem(pem)
                    .map_err(|e| FakeGraphError(format!("certificate: {e}")))?,
                certificate_thumbprint_s256(pem).map_err(|e| FakeGraphError(e.to_string()))?,
            )),
        };
        Ok(Arc::new(Self {
            addr,
            https: std::sync::atomic::AtomicBool::new(false),
            tenant_id: tenant_id.to_string(),
            credentials: Mutex::new(credentials),
            certificate,
            received: Mutex::new(Vec::new()),
            tenant: Mutex::new(tenant),
            enabled_overrides: Mutex::new(HashMap::new()),
            page_size: AtomicUsize::new(999),
            token_lifetime_secs: AtomicU64::new(3599),
            faults: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            tokens: Mutex::new(HashMap::new()),
            issued: Mutex::new(Vec::new()),
        }))
    }

    /// Serves at most `n` objects per page, whatever `$top` asks.
    pub fn set_page_size(&self, n: usize) {
        self.page_size.store(n.max(1), Ordering::Relaxed);
    }

    /// `expires_in` of the tokens issued from now on.
    pub fn set_token_lifetime(&self, secs: u64) {
        self.token_lifetime_secs.store(secs, Ordering::Relaxed);
    }

    /// The next `times` requests to `target` get `fault` (after faults queued before).
    pub fn inject(&self, target: FaultTarget, fault: GraphFault, times: usize) {
        let mut faults = lock(&self.faults);
        faults.extend(std::iter::repeat_n((target, fault), times));
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    fn take_fault(&self, target: FaultTarget) -> Option<GraphFault> {
        let mut faults = lock(&self.faults);
        let i = faults.iter().position(|(t, _)| *t == target)?;
        faults.remove(i).map(|(_, f)| f)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        // Recorded as answers complete; concurrent requests may finish out of order.
        let mut requests = lock(&self.requests).clone();
        requests.sort_by_key(|r| r.at);
        requests
    }

    /// Every access token issued so far (tests scan logs for them).
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.issued).clone()
    }

    /// Every client secret and client assertion the token endpoint received.
    pub fn received_credentials(&self) -> Vec<String> {
        lock(&self.received).clone()
    }

    /// Invalidates every access token issued so far (Graph then answers 401).
    pub fn revoke_tokens(&self) {
        lock(&self.tokens).clear();
    }

    /// The federated token accepted from now on (a rotation).
    pub fn set_federated_token(&self, token: Option<&str>) {
        lock(&self.credentials).federated_token = token.map(str::to_string);
    }

    /// Changes the tenant, as an administrator would.
    pub fn edit(&self, f: impl FnOnce(&mut FakeTenant)) {
        f(&mut lock(&self.tenant));
    }

    /// Sets `accountEnabled` of an agent, blueprint principal or agent user; false when no
    /// such object exists.
    pub fn set_account_enabled(&self, object_id: &str, enabled: bool) -> bool {
        if self.kind_of(object_id).is_none() {
            return false;
        }
        lock(&self.enabled_overrides).insert(object_id.to_ascii_lowercase(), enabled);
        true
    }

    /// Sets the risk of an agent object; false when no such object exists.
    pub fn set_risk(&self, object_id: &str, level: &str, state: &str) -> bool {
        if self.kind_of(object_id).is_none() {
            return false;
        }
        lock(&self.tenant).risk.insert(
            object_id.to_ascii_lowercase(),
            (level.to_string(), state.to_string()),
        );
        true
    }

    /// Which kind of agent object `id` is: `agent`, `blueprint` (principal) or `agent_user`.
    fn kind_of(&self, id: &str) -> Option<&'static str> {
        lock(&self.tenant).kind_of(&id.to_ascii_lowercase())
    }

    fn enabled(&self, id: &str, default: bool) -> bool {
        lock(&self.enabled_overrides)
            .get(id)
            .copied()
            .unwrap_or(default)
    }

    /// `http://addr` or `https://addr`, as it is served.
    pub fn base_url(&self) -> String {
        let scheme = if self.https.load(Ordering::Relaxed) {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    fn record(&self, at: Instant, method: &str, path: &str, status: u16) {
        lock(&self.requests).push(RecordedRequest {
            at,
            method: method.to_string(),
            path: path.to_string(),
            status,
        });
    }
}

fn router(state: Arc<GraphState>) -> Router {
    Router::new()
        .merge(collections::routes())
        .merge(token::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            faults::faults_and_record,
        ))
        .with_state(state)
}

/// Serves the fake Graph and token endpoint on `listener` until the task is dropped.
pub async fn serve_graph(
    listener: tokio::net::TcpListener,
    state: Arc<GraphState>,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

/// [`serve_graph`] over HTTPS with `config` (see `dev::tls`).
pub async fn serve_graph_tls(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    state: Arc<GraphState>,
) -> std::io::Result<()> {
    state.https.store(true, Ordering::Relaxed);
    super::tls::serve_tls(listener, config, router(state)).await
}
