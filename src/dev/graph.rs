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

use crate::directory::{DirectoryFile, SponsorKind};
use crate::graph::credential::{
    certificate_thumbprint_s256, AssertionClaims, JWT_BEARER_ASSERTION,
};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Graph's limit on objects in an expanded relationship of a directory object.
const EXPAND_LIMIT: usize = 20;

/// A blueprint principal (the blueprint in this tenant).
#[derive(Debug, Clone)]
pub struct FakeBlueprint {
    pub object_id: String,
    pub app_id: String,
    pub name: String,
    pub enabled: bool,
    pub publisher: Option<String>,
    pub home_tenant: Option<String>,
    pub disabled_by_microsoft: Option<String>,
}

/// An agent identity.
#[derive(Debug, Clone)]
pub struct FakeAgent {
    pub id: String,
    pub name: String,
    pub blueprint_app_id: String,
    pub enabled: bool,
    pub disabled_by_microsoft: Option<String>,
    pub sponsors: Vec<FakeSponsor>,
}

/// A sponsor: a user or a group (or, to test refusal, another type).
#[derive(Debug, Clone)]
pub struct FakeSponsor {
    pub id: String,
    /// `@odata.type`, e.g. `#microsoft.graph.user`.
    pub odata_type: String,
    pub name: String,
}

/// An agent user.
#[derive(Debug, Clone)]
pub struct FakeAgentUser {
    pub id: String,
    pub name: String,
    pub user_principal_name: String,
    pub parent: String,
    pub enabled: bool,
}

/// A generated tenant: `blueprints` blueprints of `agents_per_blueprint` agents each. Every
/// `agent_user_every`-th agent has an agent user and every `risky_every`-th agent is at
/// medium risk (0: none). Objects are made when a page is served.
#[derive(Debug, Clone, Copy)]
pub struct Synthetic {
    pub blueprints: usize,
    pub agents_per_blueprint: usize,
    pub agent_user_every: usize,
    pub risky_every: usize,
}

/// The tenant the fake serves: explicit objects first, then the synthetic ones.
#[derive(Debug, Clone, Default)]
pub struct FakeTenant {
    pub blueprints: Vec<FakeBlueprint>,
    pub agents: Vec<FakeAgent>,
    pub agent_users: Vec<FakeAgentUser>,
    /// Risk by object id: (riskLevel, riskState).
    pub risk: BTreeMap<String, (String, String)>,
    pub synthetic: Option<Synthetic>,
}

/// What the token endpoint accepts.
#[derive(Debug, Clone, Default)]
pub struct FakeCredentials {
    pub client_id: String,
    pub client_secret: Option<String>,
    /// PEM certificate whose key must sign client assertions.
    pub certificate_pem: Option<Vec<u8>>,
    pub federated_token: Option<String>,
}

/// How the fake misbehaves for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFault {
    /// 429 with `Retry-After` seconds.
    Throttle { retry_after_secs: u64 },
    /// 503 with `Retry-After` seconds.
    Unavailable { retry_after_secs: u64 },
    /// 500.
    ServerError,
    /// The normal answer, after this long.
    Slow(Duration),
    /// Half of the normal body, then the connection breaks.
    Truncated,
    /// A 200 whose chunked body (no `Content-Length`) streams this many bytes.
    Oversized(usize),
    /// `{"value": [` and the end.
    Malformed,
    /// The normal page with an `@odata.nextLink` on another origin.
    ForeignNextLink,
}

/// Which requests a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTarget {
    /// GETs of Graph collections.
    Graph,
    /// The token endpoint.
    Token,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub at: Instant,
    pub method: String,
    /// Path and query.
    pub path: String,
    pub status: u16,
}

struct IssuedToken {
    expires: Instant,
}

/// The fake's live state.
pub struct GraphState {
    /// The address it listens on.
    pub addr: SocketAddr,
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

fn synthetic_id(prefix: &str, index: usize) -> String {
    format!("{prefix}-0000-4000-8000-{index:012x}")
}

fn synthetic_index(prefix: &str, id: &str) -> Option<usize> {
    let rest = id.strip_prefix(prefix)?.strip_prefix("-0000-4000-8000-")?;
    usize::from_str_radix(rest, 16).ok()
}

/// Ids of synthetic objects: blueprint app ids, blueprint principal ids, agents, agent
/// users, sponsors.
const SYN_BLUEPRINT: &str = "cccccccc";
const SYN_PRINCIPAL: &str = "c0c0c0c0";
const SYN_AGENT: &str = "dddddddd";
const SYN_AGENT_USER: &str = "eeeeeeee";
const SYN_SPONSOR: &str = "ffffffff";

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn token_error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

// === impl FakeTenant ===

impl FakeTenant {
    /// The tenant a directory file describes: its blueprints, agents and agent users (a
    /// blueprint principal's object id is its app id with `0b0b0b0b` as first group),
    /// with their enabled state and risk. What Graph does not hold (permissions, roles,
    /// revocations) is left out.
    pub fn from_directory(d: &DirectoryFile) -> Self {
        let mut t = FakeTenant::default();
        let level = |r: crate::directory::Risk| r.as_str().to_string();
        for (app_id, b) in &d.blueprints {
            let object_id = principal_id(app_id);
            if b.risk != crate::directory::Risk::None || b.risk_state.severity() > 0 {
                t.risk.insert(
                    object_id.clone(),
                    (level(b.risk), b.risk_state.as_str().into()),
                );
            }
            t.blueprints.push(FakeBlueprint {
                object_id,
                app_id: app_id.clone(),
                name: b.name.clone(),
                enabled: !b.disabled,
                publisher: b.publisher.clone(),
                home_tenant: b.home_tenant.clone(),
                disabled_by_microsoft: None,
            });
        }
        for (id, a) in &d.agents {
            if a.risk != crate::directory::Risk::None || a.risk_state.severity() > 0 {
                t.risk
                    .insert(id.clone(), (level(a.risk), a.risk_state.as_str().into()));
            }
            t.agents.push(FakeAgent {
                id: id.clone(),
                name: a.display_name.clone(),
                blueprint_app_id: a.blueprint.clone(),
                enabled: a.enabled,
                disabled_by_microsoft: None,
                sponsors: a
                    .sponsors
                    .iter()
                    .map(|s| FakeSponsor {
                        id: s.id.clone(),
                        odata_type: match s.kind {
                            SponsorKind::User => "#microsoft.graph.user".into(),
                            SponsorKind::Group => "#microsoft.graph.group".into(),
                        },
                        name: s.name.clone().unwrap_or_default(),
                    })
                    .collect(),
            });
        }
        for (id, u) in &d.agent_users {
            if u.risk != crate::directory::Risk::None || u.risk_state.severity() > 0 {
                t.risk
                    .insert(id.clone(), (level(u.risk), u.risk_state.as_str().into()));
            }
            t.agent_users.push(FakeAgentUser {
                id: id.clone(),
                name: u.display_name.clone().unwrap_or_default(),
                user_principal_name: u.user_principal_name.clone().unwrap_or_default(),
                parent: u.parent_agent.clone(),
                enabled: u.enabled,
            });
        }
        t
    }

    fn synthetic_counts(&self) -> (usize, usize, usize, usize) {
        self.synthetic.map_or((0, 0, 0, 0), |s| {
            let agents = s.blueprints * s.agents_per_blueprint;
            let every = |n: usize| if n == 0 { 0 } else { agents.div_ceil(n) };
            (
                s.blueprints,
                agents,
                every(s.agent_user_every),
                every(s.risky_every),
            )
        })
    }
}

/// The object id the fake gives the principal of blueprint `app_id`.
pub fn principal_id(app_id: &str) -> String {
    match app_id.split_once('-') {
        Some((_, rest)) => format!("0b0b0b0b-{rest}"),
        None => app_id.to_string(),
    }
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
        let id = id.to_ascii_lowercase();
        let t = lock(&self.tenant);
        let (bps, agents, users, _) = t.synthetic_counts();
        let synthetic_user = synthetic_index(SYN_AGENT_USER, &id).filter(|i| {
            t.synthetic
                .is_some_and(|s| s.agent_user_every > 0 && i % s.agent_user_every == 0)
                && *i < agents
        });
        if t.agents.iter().any(|a| a.id == id)
            || synthetic_index(SYN_AGENT, &id).is_some_and(|i| i < agents)
        {
            Some("agent")
        } else if t.blueprints.iter().any(|b| b.object_id == id)
            || synthetic_index(SYN_PRINCIPAL, &id).is_some_and(|i| i < bps)
        {
            Some("blueprint")
        } else if t.agent_users.iter().any(|u| u.id == id)
            || (users > 0 && synthetic_user.is_some())
        {
            Some("agent_user")
        } else {
            None
        }
    }

    fn enabled(&self, id: &str, default: bool) -> bool {
        lock(&self.enabled_overrides)
            .get(id)
            .copied()
            .unwrap_or(default)
    }

    fn record(&self, at: Instant, method: &str, path: &str, status: u16) {
        lock(&self.requests).push(RecordedRequest {
            at,
            method: method.to_string(),
            path: path.to_string(),
            status,
        });
    }

    fn blueprint_json(&self, b: &FakeBlueprint) -> Value {
        json!({
            "id": b.object_id, "appId": b.app_id, "displayName": b.name,
            "accountEnabled": self.enabled(&b.object_id, b.enabled),
            "appOwnerOrganizationId": b.home_tenant, "publisherName": b.publisher,
            "disabledByMicrosoftStatus": b.disabled_by_microsoft,
        })
    }

    fn agent_json(&self, a: &FakeAgent, expand: bool) -> Value {
        let mut v = json!({
            "id": a.id, "appId": a.id, "displayName": a.name,
            "agentIdentityBlueprintId": a.blueprint_app_id,
            "accountEnabled": self.enabled(&a.id, a.enabled),
            "disabledByMicrosoftStatus": a.disabled_by_microsoft,
        });
        if expand {
            // Graph cuts expanded relationships of directory objects at 20, silently.
            v["sponsors"] = Value::Array(
                a.sponsors
                    .iter()
                    .take(EXPAND_LIMIT)
                    .map(sponsor_json)
                    .collect(),
            );
        }
        v
    }

    fn agent_user_json(&self, u: &FakeAgentUser) -> Value {
        json!({
            "id": u.id, "displayName": u.name, "userPrincipalName": u.user_principal_name,
            "accountEnabled": self.enabled(&u.id, u.enabled), "identityParentId": u.parent,
        })
    }

    /// The agent at `index` of the listing (explicit ones first).
    fn agent_at(t: &FakeTenant, index: usize) -> Option<FakeAgent> {
        if let Some(a) = t.agents.get(index) {
            return Some(a.clone());
        }
        let s = t.synthetic?;
        let i = index - t.agents.len();
        (i < s.blueprints * s.agents_per_blueprint).then(|| FakeAgent {
            id: synthetic_id(SYN_AGENT, i),
            name: format!("Synthetic agent {i}"),
            blueprint_app_id: synthetic_id(SYN_BLUEPRINT, i / s.agents_per_blueprint.max(1)),
            enabled: true,
            disabled_by_microsoft: None,
            sponsors: vec![FakeSponsor {
                id: synthetic_id(SYN_SPONSOR, i % 5000),
                odata_type: "#microsoft.graph.user".into(),
                name: format!("Sponsor {}", i % 5000),
            }],
        })
    }

    fn blueprint_at(t: &FakeTenant, index: usize) -> Option<FakeBlueprint> {
        if let Some(b) = t.blueprints.get(index) {
            return Some(b.clone());
        }
        let s = t.synthetic?;
        let i = index - t.blueprints.len();
        (i < s.blueprints).then(|| FakeBlueprint {
            object_id: synthetic_id(SYN_PRINCIPAL, i),
            app_id: synthetic_id(SYN_BLUEPRINT, i),
            name: format!("Synthetic blueprint {i}"),
            enabled: true,
            publisher: Some("Synthetic".into()),
            home_tenant: None,
            disabled_by_microsoft: None,
        })
    }

    fn agent_user_at(t: &FakeTenant, index: usize) -> Option<FakeAgentUser> {
        if let Some(u) = t.agent_users.get(index) {
            return Some(u.clone());
        }
        let s = t.synthetic.filter(|s| s.agent_user_every > 0)?;
        let agent = (index - t.agent_users.len()) * s.agent_user_every;
        (agent < s.blueprints * s.agents_per_blueprint).then(|| FakeAgentUser {
            id: synthetic_id(SYN_AGENT_USER, agent),
            name: format!("Synthetic agent user {agent}"),
            user_principal_name: format!("agent-{agent}@synthetic.example"),
            parent: synthetic_id(SYN_AGENT, agent),
            enabled: true,
        })
    }

    fn risky_at(&self, t: &FakeTenant, index: usize, prefer_new_enums: bool) -> Option<Value> {
        let entry = |id: &str, kind: &str, level: &str, state: &str| {
            let (odata, identity_type) = match kind {
                "blueprint" => (
                    "#microsoft.graph.riskyAgentIdentityBlueprintPrincipal",
                    if prefer_new_enums {
                        "agentIdentityBlueprintPrincipal"
                    } else {
                        "unknownFutureValue"
                    },
                ),
                "agent_user" => ("#microsoft.graph.riskyAgentUser", "agentUser"),
                _ => ("#microsoft.graph.riskyAgentIdentity", "agentIdentity"),
            };
            json!({
                "@odata.type": odata, "id": id, "agentDisplayName": id, "identityType": identity_type,
                "isEnabled": true, "isDeleted": false, "isProcessing": false,
                "riskLevel": level, "riskState": state, "riskDetail": "none",
                "riskLastModifiedDateTime": "2026-01-01T00:00:00Z",
            })
        };
        if let Some((id, (level, state))) = t.risk.iter().nth(index) {
            let kind = match (
                t.agents.iter().any(|a| &a.id == id),
                t.agent_users.iter().any(|u| &u.id == id),
            ) {
                (true, _) => "agent",
                (_, true) => "agent_user",
                _ if t.blueprints.iter().any(|b| &b.object_id == id) => "blueprint",
                _ => "agent",
            };
            return Some(entry(id, kind, level, state));
        }
        let s = t.synthetic.filter(|s| s.risky_every > 0)?;
        let agent = (index - t.risk.len()) * s.risky_every;
        (agent < s.blueprints * s.agents_per_blueprint)
            .then(|| entry(&synthetic_id(SYN_AGENT, agent), "agent", "medium", "atRisk"))
    }
}

fn sponsor_json(s: &FakeSponsor) -> Value {
    json!({"@odata.type": s.odata_type, "id": s.id, "displayName": s.name})
}

/// `$top`, `$skiptoken` and `$expand` of a collection request.
#[derive(Debug, Default)]
struct Paging {
    top: Option<usize>,
    skip: Option<usize>,
    expand: Option<String>,
}

impl Paging {
    fn of(uri: &axum::http::Uri) -> Self {
        let mut p = Paging::default();
        for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
            match &*k {
                "$top" => p.top = v.parse().ok(),
                "$skiptoken" => p.skip = v.parse().ok(),
                "$expand" => p.expand = Some(v.into_owned()),
                _ => {}
            }
        }
        p
    }
}

/// A page of `total` objects starting at `$skiptoken`, made by `item(index)`.
fn page(
    s: &GraphState,
    path: &str,
    query: &str,
    paging: &Paging,
    context: &str,
    mut item: impl FnMut(usize) -> Option<Value>,
) -> Response {
    let size = paging
        .top
        .unwrap_or(100)
        .min(s.page_size.load(Ordering::Relaxed))
        .max(1);
    let start = paging.skip.unwrap_or(0);
    let mut value = Vec::with_capacity(size);
    let mut next = None;
    for i in start..start + size + 1 {
        match item(i) {
            Some(v) if value.len() < size => value.push(v),
            Some(_) => next = Some(i),
            None => break,
        }
    }
    let mut body = json!({
        "@odata.context": format!("http://{}/v1.0/$metadata#{context}", s.addr),
        "value": value,
    });
    if let Some(next) = next {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|p| !p.starts_with("$skiptoken=") && !p.is_empty())
            .collect();
        body["@odata.nextLink"] = json!(format!(
            "http://{}{path}?{}&$skiptoken={next}",
            s.addr,
            kept.join("&")
        ));
    }
    Json(body).into_response()
}

/// A 401 unless the request carries a token this fake issued and that has not expired.
fn unauthorized(s: &GraphState, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let valid = token.is_some_and(|t| {
        lock(&s.tokens)
            .get(t)
            .is_some_and(|i| Instant::now() < i.expires)
    });
    (!valid).then(|| {
        graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty, expired or not issued by this fake.",
        )
    })
}

async fn service_principals(
    State(s): State<Arc<GraphState>>,
    Path(cast): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let paging = Paging::of(&uri);
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("");
    let t = lock(&s.tenant).clone();
    match cast.as_str() {
        "microsoft.graph.agentIdentityBlueprintPrincipal" => page(
            &s,
            &path,
            query,
            &paging,
            "servicePrincipals/microsoft.graph.agentIdentityBlueprintPrincipal",
            |i| GraphState::blueprint_at(&t, i).map(|b| s.blueprint_json(&b)),
        ),
        "microsoft.graph.agentIdentity" => {
            let expand = paging
                .expand
                .as_deref()
                .is_some_and(|e| e.starts_with("sponsors"));
            page(
                &s,
                &path,
                query,
                &paging,
                "servicePrincipals/microsoft.graph.agentIdentity",
                |i| GraphState::agent_at(&t, i).map(|a| s.agent_json(&a, expand)),
            )
        }
        _ => graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "The fake serves only the agentIdentity and agentIdentityBlueprintPrincipal casts.",
        ),
    }
}

async fn sponsors(
    State(s): State<Arc<GraphState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let paging = Paging::of(&uri);
    let t = lock(&s.tenant).clone();
    let id = id.to_ascii_lowercase();
    let synthetic = synthetic_index(SYN_AGENT, &id)
        .filter(|i| *i < t.synthetic_counts().1)
        .and_then(|i| GraphState::agent_at(&t, t.agents.len() + i));
    let Some(agent) = t.agents.iter().find(|a| a.id == id).cloned().or(synthetic) else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            "No agent identity with this id.",
        );
    };
    page(
        &s,
        uri.path(),
        uri.query().unwrap_or(""),
        &paging,
        "directoryObjects",
        |i| agent.sponsors.get(i).map(sponsor_json),
    )
}

async fn users(
    State(s): State<Arc<GraphState>>,
    Path(cast): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let paging = Paging::of(&uri);
    if cast != "microsoft.graph.agentUser" {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "The fake serves only the agentUser cast.",
        );
    }
    let t = lock(&s.tenant).clone();
    page(
        &s,
        uri.path(),
        uri.query().unwrap_or(""),
        &paging,
        "users/microsoft.graph.agentUser",
        |i| GraphState::agent_user_at(&t, i).map(|u| s.agent_user_json(&u)),
    )
}

async fn risky_agents(
    State(s): State<Arc<GraphState>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let paging = Paging::of(&uri);
    let prefer = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("include-unknown-enum-members"));
    let t = lock(&s.tenant).clone();
    page(
        &s,
        uri.path(),
        uri.query().unwrap_or(""),
        &paging,
        "identityProtection/riskyAgents",
        |i| s.risky_at(&t, i, prefer),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnabledPatch {
    account_enabled: bool,
}

async fn patch_object(
    State(s): State<Arc<GraphState>>,
    Path(id): Path<String>,
    Json(patch): Json<EnabledPatch>,
    kinds: &[&str],
) -> Response {
    match s.kind_of(&id) {
        Some(kind) if kinds.contains(&kind) => {
            s.set_account_enabled(&id, patch.account_enabled);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            "No such object.",
        ),
    }
}

async fn patch_service_principal(
    state: State<Arc<GraphState>>,
    id: Path<String>,
    patch: Json<EnabledPatch>,
) -> Response {
    patch_object(state, id, patch, &["agent", "blueprint"]).await
}

async fn patch_user(
    state: State<Arc<GraphState>>,
    id: Path<String>,
    patch: Json<EnabledPatch>,
) -> Response {
    patch_object(state, id, patch, &["agent_user"]).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RiskPatch {
    risk_level: String,
    risk_state: String,
}

async fn set_risk(
    State(s): State<Arc<GraphState>>,
    Path(id): Path<String>,
    Json(r): Json<RiskPatch>,
) -> Response {
    if s.set_risk(&id, &r.risk_level, &r.risk_state) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            "No such agent object.",
        )
    }
}

async fn token(
    State(s): State<Arc<GraphState>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    if !tenant.eq_ignore_ascii_case(&s.tenant_id) {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS90002: Tenant not found.",
        );
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str);
    if field("grant_type") != Some("client_credentials") {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    let credentials = lock(&s.credentials).clone();
    for k in ["client_secret", "client_assertion"] {
        if let Some(v) = field(k) {
            lock(&s.received).push(v.to_string());
        }
    }
    if field("client_id") != Some(credentials.client_id.as_str()) {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "AADSTS700016: Application not found in the directory.",
        );
    }
    // The resource is the Graph origin the client was configured with (this fake, or the
    // public cloud's name for it).
    let scope_ok = field("scope").is_some_and(|sc| {
        sc.strip_suffix("/.default")
            .is_some_and(|r| r.starts_with("http://") || r.starts_with("https://"))
    });
    if !scope_ok {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS70011: The provided value for the input parameter 'scope' is not valid.",
        );
    }
    let verdict = match (
        field("client_secret"),
        field("client_assertion_type"),
        field("client_assertion"),
    ) {
        (Some(secret), None, None) => match &credentials.client_secret {
            Some(expected) if expected == secret => Ok(()),
            _ => Err("AADSTS7000215: Invalid client secret provided."),
        },
        (None, Some(JWT_BEARER_ASSERTION), Some(assertion)) => {
            s.check_assertion(&credentials, assertion, &tenant)
        }
        _ => Err("AADSTS7000218: The request body must contain client_assertion or client_secret."),
    };
    if let Err(description) = verdict {
        return token_error(StatusCode::UNAUTHORIZED, "invalid_client", description);
    }
    let mut raw = [0u8; 24];
    if aws_lc_rs::rand::fill(&mut raw).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let access_token = format!(
        "fake-graph-token-{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let lifetime = s.token_lifetime_secs.load(Ordering::Relaxed);
    lock(&s.tokens).insert(
        access_token.clone(),
        IssuedToken {
            expires: Instant::now() + Duration::from_secs(lifetime),
        },
    );
    lock(&s.issued).push(access_token.clone());
    Json(json!({
        "token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
        "access_token": access_token,
    }))
    .into_response()
}

impl GraphState {
    /// A federated token, or a certificate assertion signed by the configured key.
    fn check_assertion(
        &self,
        credentials: &FakeCredentials,
        assertion: &str,
        tenant: &str,
    ) -> Result<(), &'static str> {
        if credentials
            .federated_token
            .as_deref()
            .is_some_and(|t| t == assertion)
        {
            return Ok(());
        }
        let Some((key, thumbprint)) = &self.certificate else {
            return Err("AADSTS700027: Client assertion failed signature validation.");
        };
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|_| "AADSTS50027: JWT token is invalid or malformed.")?;
        if header.x5t_s256.as_deref() != Some(thumbprint.as_str()) {
            return Err("AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application.");
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[format!("http://{}/{tenant}/oauth2/v2.0/token", self.addr)]);
        validation.set_issuer(&[credentials.client_id.as_str()]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub", "nbf"]);
        validation.leeway = 0;
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, key, &validation)
            .map_err(|_| "AADSTS700027: Client assertion failed signature validation.")?
            .claims;
        if claims.sub != credentials.client_id || claims.jti.is_empty() {
            return Err("AADSTS700023: Client assertion subject does not match the client id.");
        }
        Ok(())
    }
}

/// A body of `chunks` copies of `chunk`, then, when `fail`, an error that breaks the
/// connection (the client sees a truncated body).
struct ChunkedBody {
    chunk: Bytes,
    chunks: usize,
    fail: bool,
}

impl axum::body::HttpBody for ChunkedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if self.chunks > 0 {
            self.chunks -= 1;
            return Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.clone()))));
        }
        if self.fail {
            self.fail = false;
            return Poll::Ready(Some(Err(std::io::Error::other("connection cut by fault"))));
        }
        Poll::Ready(None)
    }
}

fn json_response(status: StatusCode, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// Records every request and applies queued faults.
async fn faults_and_record(State(s): State<Arc<GraphState>>, req: Request, next: Next) -> Response {
    let at = Instant::now();
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.to_string());
    let target = if req.uri().path().ends_with("/oauth2/v2.0/token") {
        Some(FaultTarget::Token)
    } else if req.method() == axum::http::Method::GET
        && (path.starts_with("/v1.0/") || path.starts_with("/beta/"))
    {
        Some(FaultTarget::Graph)
    } else {
        None
    };
    let fault = target.and_then(|t| s.take_fault(t));
    let throttled = |status: StatusCode, secs: u64| {
        let mut r = graph_error(status, "TooManyRequests", "Too many requests.");
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
        r
    };
    let response = match fault {
        Some(GraphFault::Throttle { retry_after_secs }) => {
            throttled(StatusCode::TOO_MANY_REQUESTS, retry_after_secs)
        }
        Some(GraphFault::Unavailable { retry_after_secs }) => {
            throttled(StatusCode::SERVICE_UNAVAILABLE, retry_after_secs)
        }
        Some(GraphFault::ServerError) => graph_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Injected failure.",
        ),
        Some(GraphFault::Malformed) => json_response(StatusCode::OK, Body::from("{\"value\": [")),
        Some(GraphFault::Oversized(bytes)) => {
            let chunk = Bytes::from(vec![b' '; 64 * 1024]);
            json_response(
                StatusCode::OK,
                Body::new(ChunkedBody {
                    chunks: bytes.div_ceil(chunk.len()),
                    chunk,
                    fail: false,
                }),
            )
        }
        Some(GraphFault::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            next.run(req).await
        }
        Some(GraphFault::Truncated) => {
            let full = next.run(req).await;
            let status = full.status();
            let body = axum::body::to_bytes(full.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            let half = body.slice(..body.len() / 2);
            let mut r = json_response(
                status,
                Body::new(ChunkedBody {
                    chunk: half,
                    chunks: 1,
                    fail: true,
                }),
            );
            r.headers_mut()
                .insert("content-length", HeaderValue::from(body.len()));
            r
        }
        Some(GraphFault::ForeignNextLink) => {
            let full = next.run(req).await;
            let body = axum::body::to_bytes(full.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            let mut page: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            page["@odata.nextLink"] =
                json!(format!("http://graph.attacker.invalid{path}&$skiptoken=1"));
            Json(page).into_response()
        }
        None => next.run(req).await,
    };
    s.record(at, &method, &path, response.status().as_u16());
    response
}

/// Serves the fake Graph and token endpoint on `listener` until the task is dropped.
pub async fn serve_graph(
    listener: tokio::net::TcpListener,
    state: Arc<GraphState>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/v1.0/servicePrincipals/{cast}",
            get(service_principals).patch(patch_service_principal),
        )
        .route(
            "/v1.0/servicePrincipals/{id}/microsoft.graph.agentIdentity/sponsors",
            get(sponsors),
        )
        .route("/v1.0/users/{cast}", get(users).patch(patch_user))
        .route("/beta/identityProtection/riskyAgents", get(risky_agents))
        .route("/fake/riskyAgents/{id}", post(set_risk))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            faults_and_record,
        ))
        .with_state(state);
    axum::serve(listener, app).await
}
