//! The admin listener: `/healthz`, `/readyz`, `/metrics` and `POST /reload`.
//!
//! Every request must name an allowed host (an IP literal, `localhost`, or one of
//! `admin.allowed_hosts`), so a web page cannot reach a loopback admin listener through DNS
//! rebinding. With `admin.token_file` (required off loopback), `/metrics`, `/reload` and the
//! details of `/readyz` require `Authorization: Bearer <token>`; `/healthz` and the bare
//! readiness verdict stay open for probes.

use crate::authorize::Authorizer;
use crate::reload::Reloader;
use crate::telemetry::Metrics;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// Serves health and metrics.
pub struct Admin {
    pub live: Arc<crate::snapshot::Live>,
    pub authorizer: Arc<Authorizer>,
    pub metrics: Arc<Metrics>,
    pub reloader: Arc<Reloader>,
    pub connections: Arc<super::admission::ConnectionCounts>,
    pub sources: Arc<super::sources::Sources>,
    pub decision_log: Arc<crate::telemetry::DecisionLog>,
    pub access: AdminAccess,
    /// Set after SIGTERM: `/readyz` answers 503 while the listeners still accept.
    pub draining: Arc<super::shutdown::Draining>,
    pub listening: Arc<super::listening::Listening>,
}

/// Who may use the admin listener.
pub struct AdminAccess {
    token: Option<AdminToken>,
    allowed_hosts: Vec<String>,
}

/// The admin bearer token; never printed.
struct AdminToken(Vec<u8>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Why the admin token could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    #[error("failed to read admin.token_file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("admin.token_file {path} must hold a token of at least 16 characters")]
    TooShort { path: String },
}

/// The outcome of checking one admin request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// The host is not one the admin listener answers for.
    WrongHost,
    /// Allowed, with (or without) the token.
    Allowed { authenticated: bool },
}

impl AdminAccess {
    /// Reads the token file, if configured.
    pub fn load(config: &crate::config::AdminConfig) -> Result<Self, AdminTokenError> {
        let token = match &config.token_file {
            None => None,
            Some(path) => {
                let shown = path.display().to_string();
                let text =
                    std::fs::read_to_string(path).map_err(|source| AdminTokenError::Read {
                        path: shown.clone(),
                        source,
                    })?;
                let token = text.trim();
                if token.len() < 16 {
                    return Err(AdminTokenError::TooShort { path: shown });
                }
                Some(AdminToken(token.as_bytes().to_vec()))
            }
        };
        Ok(Self {
            token,
            allowed_hosts: config.allowed_hosts.clone(),
        })
    }

    fn check(&self, req: &pingora::http::RequestHeader) -> Access {
        let host_ok = match req.headers.get(http::header::HOST) {
            None => true,
            Some(h) => h.to_str().is_ok_and(|h| self.host_allowed(h)),
        };
        if !host_ok {
            return Access::WrongHost;
        }
        let authenticated = match &self.token {
            // Loopback without a token: whoever can connect is trusted.
            None => true,
            Some(AdminToken(expected)) => req
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .is_some_and(|(_, given)| {
                    aws_lc_rs::constant_time::verify_slices_are_equal(
                        given.trim().as_bytes(),
                        expected,
                    )
                    .is_ok()
                }),
        };
        Access::Allowed { authenticated }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = crate::request::host_name(host).trim_end_matches('.');
        name.parse::<std::net::IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || self
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name))
    }
}

impl Admin {
    fn readiness(&self) -> (bool, serde_json::Value) {
        let keys = self.authorizer.validator().keys();
        let snapshot = self.live.load();
        let policy = &snapshot.policy;
        let graph = self.sources.graph_status();
        let reload = self.reloader.status();
        // Not ready before a Graph directory is in force: callers it vouches for would be
        // refused.
        let draining = self.draining.is_draining();
        // Not ready while pingora still waits for a listener's address to come free.
        let listening = self.listening.is_bound();
        let ready = listening
            && !draining
            && keys.ready()
            && (graph.is_none() || reload.directory.is_some());
        let body = serde_json::json!({
            "ready": ready,
            "listening": listening,
            "draining": draining,
            "pid": std::process::id(),
            "revision": policy.revision,
            "policy_engine": policy.engine_state(),
            "policy_loaded_at_unix": crate::clock::unix_secs(policy.loaded_at),
            "unverified_upstreams": snapshot.routes.unverified_upstreams().collect::<Vec<_>>(),
            "tenants": keys.status(),
            "cached_tokens": self.authorizer.cache_stats().entries,
            "reload": *reload,
            "bundle": self.sources.bundle_status().as_deref(),
            "directory_sync": graph,
        });
        (ready, body)
    }
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_str(content_type)
            .unwrap_or(http::HeaderValue::from_static("text/plain")),
    );
    let len = resp.body().len();
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp
}

fn json(status: u16, body: serde_json::Value) -> Response<Vec<u8>> {
    respond(status, "application/json", body.to_string().into_bytes())
}

fn refusal(status: u16, reason: &str) -> Response<Vec<u8>> {
    let error = if status == 401 {
        "unauthorized"
    } else {
        "forbidden"
    };
    let mut resp = json(
        status,
        serde_json::json!({"error": error, "reason": reason}),
    );
    if status == 401 {
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"agentgate-admin\""),
        );
    }
    resp
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let authenticated = match self.access.check(req) {
            Access::WrongHost => return refusal(403, "host_not_allowed"),
            Access::Allowed { authenticated } => authenticated,
        };
        let post = req.method == http::Method::POST;
        match req.uri.path() {
            "/healthz" => respond(200, "application/json", br#"{"status":"ok"}"#.to_vec()),
            "/readyz" => {
                let (ready, body) = self.readiness();
                let body = if authenticated {
                    body
                } else {
                    serde_json::json!({"ready": ready})
                };
                json(if ready { 200 } else { 503 }, body)
            }
            "/reload" | "/metrics" if !authenticated => refusal(401, "admin_token_required"),
            "/reload" if post => {
                let reloader = self.reloader.clone();
                match tokio::task::spawn_blocking(move || reloader.reload("admin")).await {
                    Ok(Ok(revision)) => {
                        json(200, serde_json::json!({"ok": true, "revision": revision}))
                    }
                    Ok(Err(e)) => json(
                        422,
                        serde_json::json!({"ok": false, "error": e.to_string()}),
                    ),
                    Err(_) => json(
                        500,
                        serde_json::json!({"ok": false, "error": "reload task failed"}),
                    ),
                }
            }
            "/metrics" => {
                let snapshot = self.live.load();
                self.metrics
                    .observe_keys(&self.authorizer.validator().keys().status());
                self.metrics.observe_cache(self.authorizer.cache_stats());
                self.metrics.observe_decision_cache(
                    crate::policy::decision_cache::cache_lookups(),
                    snapshot.policy.cached_decisions(),
                );
                self.metrics.observe_connections(self.connections.open());
                self.sources.observe();
                self.metrics.observe_decision_log(self.decision_log.stats());
                self.metrics.observe_policy_engine(
                    crate::policy::compiled::engine_events(),
                    snapshot.policy.engine_state(),
                    snapshot.shadow.as_ref().map(|s| s.snapshot.engine_state()),
                );
                respond(200, "text/plain; version=0.0.4", self.metrics.render())
            }
            _ => respond(
                404,
                "application/json",
                br#"{"error":"not_found"}"#.to_vec(),
            ),
        }
    }
}
