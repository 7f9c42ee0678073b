//! The policy input document, built straight into regorus values.
//!
//! Three parts have different lifetimes: directory entries ([`PreparedDirectory`]) are
//! built once per policy snapshot; the token part ([`TokenInput`]) is built per request from
//! the cached verified token (kept with the token, its maps would cost about 2 KiB per
//! cached token); the request part per request. Assembling the document clones
//! reference-counted values; there is no JSON text on the request path. The schema is
//! documented in `docs/policy-input.md`.

use crate::directory::{AgentIdentity, AgentUser, Blueprint, Directory, Resolution};
use crate::identity::{Caller, CallerKind, VerifiedToken};
use crate::tls::ClientCertificate;
use regorus::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

/// Object keys, allocated once per process.
struct Keys {
    request: Value,
    method: Value,
    host: Value,
    path: Value,
    query: Value,
    client_ip: Value,
    headers: Value,
    time_ns: Value,
    route: Value,
    id: Value,
    path_prefix: Value,
    token: Value,
    actor: Value,
    subject: Value,
    agent: Value,
    blueprint: Value,
    user: Value,
    tenant: Value,
    known: Value,
    enabled: Value,
    type_: Value,
    kind: Value,
    version: Value,
    issuer: Value,
    audience: Value,
    scopes: Value,
    roles: Value,
    facets: Value,
    idtyp: Value,
    issued_at: Value,
    not_before: Value,
    expires_at: Value,
    risk: Value,
    risk_state: Value,
    upgrade: Value,
    client_certificate: Value,
    sans: Value,
    sha256: Value,
    dns: Value,
    uri: Value,
    ip: Value,
    email: Value,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    request: "request".into(),
    method: "method".into(),
    host: "host".into(),
    path: "path".into(),
    query: "query".into(),
    client_ip: "client_ip".into(),
    headers: "headers".into(),
    time_ns: "time_ns".into(),
    route: "route".into(),
    id: "id".into(),
    path_prefix: "path_prefix".into(),
    token: "token".into(),
    actor: "actor".into(),
    subject: "subject".into(),
    agent: "agent".into(),
    blueprint: "blueprint".into(),
    user: "user".into(),
    tenant: "tenant".into(),
    known: "known".into(),
    enabled: "enabled".into(),
    type_: "type".into(),
    kind: "kind".into(),
    version: "version".into(),
    issuer: "issuer".into(),
    audience: "audience".into(),
    scopes: "scopes".into(),
    roles: "roles".into(),
    facets: "facets".into(),
    idtyp: "idtyp".into(),
    issued_at: "issued_at".into(),
    not_before: "not_before".into(),
    expires_at: "expires_at".into(),
    risk: "risk".into(),
    risk_state: "risk_state".into(),
    upgrade: "upgrade".into(),
    client_certificate: "client_certificate".into(),
    sans: "sans".into(),
    sha256: "sha256".into(),
    dns: "dns".into(),
    uri: "uri".into(),
    ip: "ip".into(),
    email: "email".into(),
});

/// The facts of one request: what the gateway decides on, and what policy may see of it.
/// Not `Debug`: it holds every request header, `Authorization` included, and nothing may
/// print it.
#[derive(Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// Canonical `host[:port]`.
    pub host: &'a str,
    /// The normalised path.
    pub path: &'a str,
    pub query: &'a str,
    pub client_ip: &'a str,
    /// Every request header; policy sees only those named in `policy.input_headers`.
    pub headers: &'a http::HeaderMap,
    /// Unix time in nanoseconds.
    pub time_ns: u64,
    /// The upgrade the request asks for and the route forwards (`websocket`), if any.
    pub upgrade: Option<&'a str>,
    /// The verified client certificate of the connection, if any.
    pub client_certificate: Option<&'a ClientCertificate>,
}

/// The route part of the input, prepared once per route.
#[derive(Debug, Clone)]
pub struct RouteInput(Value);

impl RouteInput {
    /// Prepares `{"id", "path_prefix"}`.
    pub fn new(id: &str, path_prefix: &str) -> Self {
        let k = &*KEYS;
        Self(object([
            (&k.id, id.into()),
            (&k.path_prefix, path_prefix.into()),
        ]))
    }
}

/// The token, actor and subject parts of the input, built from one verified token (per
/// request: see the module documentation for why they are not kept with the token).
#[derive(Debug, Clone)]
pub struct TokenInput {
    token: Value,
    actor: Value,
    subject: Value,
}

/// Directory entries as input values, prepared once per snapshot.
#[derive(Debug, Clone, Default)]
pub struct PreparedDirectory {
    blueprints: HashMap<String, Value>,
    agents: HashMap<String, Value>,
}

fn object<const N: usize>(pairs: [(&Value, Value); N]) -> Value {
    let map: BTreeMap<Value, Value> = pairs.into_iter().map(|(k, v)| (k.clone(), v)).collect();
    Value::from(map)
}

fn strings<S: AsRef<str>>(items: &[S]) -> Value {
    Value::from(
        items
            .iter()
            .map(|s| Value::from(s.as_ref()))
            .collect::<Vec<_>>(),
    )
}

fn opt_str(s: Option<&str>) -> Value {
    s.map_or(Value::Null, Value::from)
}

fn arc_strings(items: &[Arc<str>]) -> Value {
    Value::from(
        items
            .iter()
            .map(|s| Value::String(s.clone()))
            .collect::<Vec<_>>(),
    )
}

fn numbers(items: &[u32]) -> Value {
    Value::from(
        items
            .iter()
            .map(|n| Value::from(u64::from(*n)))
            .collect::<Vec<_>>(),
    )
}

/// `{"subject", "sans": {"dns", "uri", "ip", "email"}, "sha256"}`.
fn certificate_value(c: &ClientCertificate) -> Value {
    let k = &*KEYS;
    object([
        (&k.subject, c.subject.as_str().into()),
        (
            &k.sans,
            object([
                (&k.dns, strings(&c.sans.dns)),
                (&k.uri, strings(&c.sans.uri)),
                (&k.ip, strings(&c.sans.ip)),
                (&k.email, strings(&c.sans.email)),
            ]),
        ),
        (&k.sha256, c.sha256.as_str().into()),
    ])
}

// === impl TokenInput ===

impl TokenInput {
    /// Prepares the token-derived parts of the input.
    pub fn new(t: &VerifiedToken) -> Self {
        let c = &t.caller;
        let k = &*KEYS;
        let token = object([
            (&k.kind, c.kind.as_str().into()),
            (&k.version, t.version.as_str().into()),
            (&k.tenant, Value::String(c.tenant.clone())),
            (&k.issuer, Value::String(t.issuer.clone())),
            (&k.audience, Value::String(t.audience.clone())),
            (&k.scopes, arc_strings(&t.scopes)),
            (&k.roles, arc_strings(&t.roles)),
            (
                &k.facets,
                object([
                    (&k.actor, numbers(&c.facets.actor)),
                    (&k.subject, numbers(&c.facets.subject)),
                    (&k.tenant, numbers(&c.facets.tenant)),
                ]),
            ),
            (&k.idtyp, t.idtyp.clone().map_or(Value::Null, Value::String)),
            (&k.issued_at, t.issued_at.map_or(Value::Null, Value::from)),
            (&k.not_before, t.not_before.map_or(Value::Null, Value::from)),
            (&k.expires_at, Value::from(t.expires_at)),
        ]);
        let principal = |id: &Arc<str>| {
            object([
                (&k.tenant, Value::String(c.tenant.clone())),
                (&k.id, Value::String(id.clone())),
            ])
        };
        Self {
            token,
            actor: principal(&c.actor_id),
            subject: principal(&c.subject_id),
        }
    }
}

// === impl PreparedDirectory ===

impl PreparedDirectory {
    /// Converts every blueprint and agent entry into its input value.
    pub fn new(d: &Directory) -> Self {
        Self {
            blueprints: d
                .blueprints
                .iter()
                .map(|(id, b)| (id.clone(), blueprint_value(id, Some(b))))
                .collect(),
            agents: d
                .agents
                .iter()
                .map(|(id, a)| (id.clone(), agent_value(id, Some(a))))
                .collect(),
        }
    }
}

fn blueprint_value(id: &str, b: Option<&Blueprint>) -> Value {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: Value| {
        m.insert(Value::from(k), v);
    };
    put("id", id.into());
    put("known", b.is_some().into());
    put("name", opt_str(b.map(|b| b.name.as_str())));
    put("publisher", opt_str(b.and_then(|b| b.publisher.as_deref())));
    put("disabled", b.is_some_and(|b| b.disabled).into());
    put("risk", b.map_or("none", |b| b.risk.as_str()).into());
    put(
        "risk_state",
        b.map_or("none", |b| b.risk_state.as_str()).into(),
    );
    let empty: &[String] = &[];
    put("roles", strings(b.map_or(empty, |b| &b.roles)));
    put("permissions", strings(b.map_or(empty, |b| &b.permissions)));
    put(
        "revoked_permissions",
        strings(b.map_or(empty, |b| &b.revoked_permissions)),
    );
    Value::from(m)
}

fn agent_value(id: &str, a: Option<&AgentIdentity>) -> Value {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: Value| {
        m.insert(Value::from(k), v);
    };
    put("id", id.into());
    put("known", a.is_some().into());
    put("display_name", opt_str(a.map(|a| a.display_name.as_str())));
    put("enabled", a.is_none_or(|a| a.enabled).into());
    put("risk", a.map_or("none", |a| a.risk.as_str()).into());
    put(
        "risk_state",
        a.map_or("none", |a| a.risk_state.as_str()).into(),
    );
    put(
        "agent_user",
        opt_str(a.and_then(|a| a.agent_user.as_deref())),
    );
    let sponsors = a.map_or_else(Vec::new, |a| {
        a.sponsors
            .iter()
            .map(|s| {
                let mut o = BTreeMap::new();
                o.insert(Value::from("id"), Value::from(s.id.as_str()));
                o.insert(
                    Value::from("type"),
                    Value::from(match s.kind {
                        crate::directory::SponsorKind::User => "user",
                        crate::directory::SponsorKind::Group => "group",
                    }),
                );
                o.insert(Value::from("name"), opt_str(s.name.as_deref()));
                Value::from(o)
            })
            .collect()
    });
    put("sponsors", Value::from(sponsors));
    Value::from(m)
}

fn user_value(caller: &Caller, agent_user: Option<&AgentUser>) -> Value {
    let k = &*KEYS;
    let is_agent_user = matches!(
        caller.kind,
        CallerKind::AgentUser | CallerKind::AppOboAgentUser
    );
    object([
        (&k.tenant, Value::String(caller.tenant.clone())),
        (&k.id, Value::String(caller.subject_id.clone())),
        (
            &k.type_,
            if is_agent_user { "agent_user" } else { "human" }.into(),
        ),
        (&k.known, agent_user.is_some().into()),
        (&k.enabled, agent_user.is_none_or(|u| u.enabled).into()),
        (
            &k.risk,
            agent_user.map_or("none", |u| u.risk.as_str()).into(),
        ),
        (
            &k.risk_state,
            agent_user.map_or("none", |u| u.risk_state.as_str()).into(),
        ),
    ])
}

/// What one request's input is built from, besides the request itself.
#[derive(Debug, Clone, Copy)]
pub struct InputParts<'a> {
    pub route: &'a RouteInput,
    pub token: &'a VerifiedToken,
    pub directory: &'a PreparedDirectory,
    pub resolution: &'a Resolution<'a>,
    /// The request headers policy may see (`policy.input_headers`), lower-case.
    pub input_headers: &'a [http::HeaderName],
}

/// Assembles the full input document for one request.
pub fn build_input(request: &RequestFacts<'_>, parts: InputParts<'_>) -> Value {
    let k = &*KEYS;
    let InputParts {
        route,
        token,
        directory,
        resolution,
        input_headers,
    } = parts;
    let prepared = TokenInput::new(token);
    let caller = &token.caller;
    let headers: BTreeMap<Value, Value> = input_headers
        .iter()
        .filter_map(|name| {
            let value = request.headers.get(name)?.to_str().ok()?;
            Some((Value::from(name.as_str()), Value::from(value)))
        })
        .collect();
    let request_value = object([
        (&k.method, request.method.into()),
        (&k.host, request.host.into()),
        (&k.path, request.path.into()),
        (&k.query, request.query.into()),
        (&k.client_ip, request.client_ip.into()),
        (&k.headers, Value::from(headers)),
        (&k.time_ns, Value::from(request.time_ns)),
        (&k.upgrade, opt_str(request.upgrade)),
        (
            &k.client_certificate,
            request
                .client_certificate
                .map_or(Value::Null, certificate_value),
        ),
    ]);
    let (agent, blueprint) = match (caller.agent_id(), caller.blueprint_id.as_deref()) {
        (Some(agent_id), Some(bp)) => (
            directory
                .agents
                .get(agent_id)
                .filter(|_| resolution.agent.is_some())
                .cloned()
                .unwrap_or_else(|| agent_value(agent_id, None)),
            directory
                .blueprints
                .get(bp)
                .filter(|_| resolution.blueprint.is_some())
                .cloned()
                .unwrap_or_else(|| blueprint_value(bp, None)),
        ),
        _ => (Value::Null, Value::Null),
    };
    let user = if caller.kind.is_delegated() {
        user_value(caller, resolution.agent_user)
    } else {
        Value::Null
    };
    object([
        (&k.request, request_value),
        (&k.route, route.0.clone()),
        (&k.token, prepared.token),
        (&k.actor, prepared.actor),
        (&k.subject, prepared.subject),
        (&k.agent, agent),
        (&k.blueprint, blueprint),
        (&k.user, user),
    ])
}
