//! The pingora `ProxyHttp` implementation: one short method per phase, each delegating.
//!
//! `request_filter` routes, authorises and either writes the refusal or lets the request
//! through; `upstream_peer` picks an upstream; `upstream_request_filter` replaces identity
//! headers; `fail_to_proxy` maps upstream failures; `logging` records the decision once.

use super::decision_id::DecisionIds;
use super::headers::{add_identity_headers, strip_inbound_headers};
use super::respond::{send, Rejection};
use super::routes::{Route, RouteTable};
use crate::authorize::{
    outcome_label, Allowed, Authenticated, Authorizer, RequestLine, ShadowOutcome,
};
use crate::policy::PolicySnapshot;
use crate::request::framing::check_request;
use crate::telemetry::decision_log::loggable_path;
use crate::telemetry::{DecisionLog, DecisionRecord, Metrics, ShadowRecord};
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use std::sync::Arc;
use std::time::Instant;

/// Shared state of the proxy service.
pub struct Gateway {
    pub routes: Arc<arc_swap::ArcSwap<RouteTable>>,
    pub authorizer: Arc<Authorizer>,
    pub metrics: Arc<Metrics>,
    pub decision_log: Arc<DecisionLog>,
    ids: Arc<DecisionIds>,
    limits: RequestLimits,
}

/// Per-request and per-connection limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
    pub max_requests_per_connection: u32,
}

impl RequestLimits {
    pub fn from_config(server: &crate::config::ServerSettings) -> Self {
        Self {
            max_header_bytes: server.max_header_bytes,
            max_uri_bytes: server.max_uri_bytes,
            max_requests_per_connection: server.max_requests_per_connection,
        }
    }
}

/// Per-request facts carried between phases.
pub struct RequestCtx {
    started: Instant,
    decision_id: String,
    route: Option<Arc<Route>>,
    caller: Option<Arc<Authenticated>>,
    allowed: Option<Allowed>,
    /// The policy snapshot that decided: its revision, directory and labels, all from one set.
    snapshot: Option<Arc<PolicySnapshot>>,
    /// Reason code of the outcome, for logs and metrics.
    reason: String,
    /// When the request left for the upstream.
    forwarded_at: Option<Instant>,
    tries: usize,
    /// The shadow verdict and whether it differs from the enforced one.
    shadow: Option<(ShadowOutcome, bool)>,
    /// This request's position on its connection (1 for the first).
    nth_on_connection: u32,
    /// The origin-form target and host to send upstream instead of the ones received: set
    /// when the path was normalised or the target came in absolute form.
    upstream_target: Option<(String, String)>,
}

/// Carried from one request to the next on a keep-alive connection.
struct ConnectionState {
    requests: u32,
}

impl Gateway {
    pub fn new(
        routes: Arc<arc_swap::ArcSwap<RouteTable>>,
        authorizer: Arc<Authorizer>,
        metrics: Arc<Metrics>,
        decision_log: Arc<DecisionLog>,
        ids: Arc<DecisionIds>,
        limits: RequestLimits,
    ) -> Self {
        Self {
            routes,
            authorizer,
            metrics,
            decision_log,
            ids,
            limits,
        }
    }

    async fn reject(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        r: Rejection<'_>,
    ) -> Result<bool> {
        ctx.reason = r.reason.to_string();
        send(session, &r, &ctx.decision_id).await?;
        Ok(true)
    }

    fn record(&self, session: &Session, ctx: &RequestCtx, status: u16) {
        let allow = ctx.allowed.is_some();
        if !self.decision_log.wants(allow) {
            return self.count(ctx, allow);
        }
        let caller = ctx.caller.as_ref().map(|c| &c.token.caller);
        let directory = ctx.snapshot.as_ref().map(|s| &s.directory);
        let blueprint_entry = caller
            .and_then(|c| c.blueprint_id.as_deref())
            .and_then(|bp| directory?.blueprints.get(bp));
        let agent_entry = caller
            .and_then(|c| c.agent_id())
            .and_then(|a| directory?.agents.get(a));
        self.count(ctx, allow);
        let route = ctx.route.as_ref().map(|r| &*r.id);
        let req = session.req_header();
        let (path, path_truncated) = loggable_path(req.uri.path());
        self.decision_log.write(&DecisionRecord {
            time: humantime::format_rfc3339_micros(crate::clock::now()).to_string(),
            decision_id: &ctx.decision_id,
            route,
            method: req.method.as_str(),
            path,
            path_truncated,
            caller_kind: caller.map(|c| c.kind.as_str()),
            tenant: caller.map(|c| &*c.tenant),
            client_id: caller.map(|c| &*c.actor_id),
            agent_id: caller.and_then(|c| c.agent_id()),
            blueprint_id: caller.and_then(|c| c.blueprint_id.as_deref()),
            blueprint_name: blueprint_entry.map(|b| b.name.as_str()),
            sponsors: agent_entry.map_or_else(Vec::new, |a| {
                a.sponsors.iter().map(|s| s.id.as_str()).collect()
            }),
            user_oid: caller.and_then(|c| c.user_oid()),
            allow,
            status,
            reason: &ctx.reason,
            revision: ctx.snapshot.as_ref().map_or("", |s| s.revision.as_str()),
            latency_us: ctx.started.elapsed().as_micros() as u64,
            shadow: ctx.shadow.as_ref().map(|(s, mismatch)| ShadowRecord {
                revision: &s.revision,
                outcome: s.outcome,
                reason: &s.reason,
                mismatch: *mismatch,
            }),
        });
    }

    /// Counts the request; labels come only from closed sets.
    fn count(&self, ctx: &RequestCtx, allow: bool) {
        let caller = ctx.caller.as_ref().map(|c| &c.token.caller);
        let blueprint = blueprint_label(
            ctx.snapshot.as_deref(),
            caller.and_then(|c| c.blueprint_id.as_deref()),
        );
        let route = ctx.route.as_ref().map_or("none", |r| &*r.id);
        let decision = if allow { "allow" } else { "deny" };
        let kind = caller.map_or("none", |c| c.kind.as_str());
        self.metrics
            .requests
            .with_label_values(&[route, decision, &ctx.reason, kind, blueprint])
            .inc();
    }
}

/// A blueprint id as a metric label: blueprints of the deciding snapshot's directory by id,
/// others as `unknown`, no blueprint as `none`. Keeps the label set closed.
fn blueprint_label<'a>(snapshot: Option<&PolicySnapshot>, blueprint: Option<&'a str>) -> &'a str {
    match blueprint {
        None => "none",
        Some(bp) if snapshot.is_some_and(|s| s.directory.has_blueprint(bp)) => bp,
        Some(_) => "unknown",
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            decision_id: self.ids.next(),
            route: None,
            caller: None,
            allowed: None,
            snapshot: None,
            reason: String::new(),
            forwarded_at: None,
            tries: 0,
            shadow: None,
            nth_on_connection: 1,
            upstream_target: None,
        }
    }

    fn persist_connection_context(
        &self,
        _session: &Session,
        ctx: &RequestCtx,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        Some(Box::new(ConnectionState {
            requests: ctx.nth_on_connection,
        }))
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        prev: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(state) = prev.downcast::<ConnectionState>() {
            ctx.nth_on_connection = state.requests.saturating_add(1);
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if ctx.nth_on_connection >= self.limits.max_requests_per_connection {
            // Closing connections now and then bounds per-connection state (as nginx does).
            session.set_keepalive(None);
        }
        let raw = session
            .as_downstream()
            .as_http1()
            .map(|h1| h1.get_headers_raw_bytes());
        if let Err(e) = check_request(
            &session.req_header().headers,
            raw.as_deref(),
            self.limits.max_header_bytes,
        ) {
            // The body's extent is in doubt: never read another request from this connection.
            session.set_keepalive(None);
            let (status, reason) = e.status_and_reason();
            return self
                .reject(session, ctx, Rejection::plain(status, reason))
                .await;
        }
        let req = session.req_header();
        let target = match crate::request::read(
            &req.uri,
            req.raw_path(),
            req.raw_path_is_utf8(),
            &req.headers,
            req.version,
            self.limits.max_uri_bytes,
        ) {
            Ok(t) => t,
            Err(e) => {
                let (status, reason) = e.status_and_reason();
                return self
                    .reject(session, ctx, Rejection::plain(status, reason))
                    .await;
            }
        };
        let Some(route) = self
            .routes
            .load()
            .find(target.host_name(), &target.path)
            .cloned()
        else {
            return self
                .reject(session, ctx, Rejection::plain(404, "no_route"))
                .await;
        };
        if target.rewritten {
            ctx.upstream_target = Some((target.origin_form(), target.host.to_string()));
        }
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let req = session.req_header();
        let line = RequestLine {
            method: req.method.as_str(),
            host: &target.host,
            path: &target.path,
            query: target.query,
            client_ip: &client_ip,
        };
        let verdict = self
            .authorizer
            .authorize(
                &req.headers,
                line,
                &route.access,
                crate::clock::unix_nanos(crate::clock::now()),
                false,
            )
            .await;
        self.metrics
            .token_validation_seconds
            .observe(verdict.token_time.as_secs_f64());
        if verdict.caller.is_some() && !verdict.policy_time.is_zero() {
            self.metrics
                .policy_evaluation_seconds
                .observe(verdict.policy_time.as_secs_f64());
        }
        if let Some(shadow) = verdict.shadow {
            let mismatch = shadow.differs_from(&verdict.outcome);
            if mismatch {
                let bp = verdict
                    .caller
                    .as_ref()
                    .and_then(|c| c.token.caller.blueprint_id.as_deref());
                let blueprint = blueprint_label(Some(&verdict.snapshot), bp);
                let enforced = outcome_label(&verdict.outcome);
                self.metrics
                    .shadow_mismatches
                    .with_label_values(&[enforced, shadow.outcome, blueprint])
                    .inc();
                let enforced_reason = match &verdict.outcome {
                    Ok(a) => a.reason.to_string(),
                    Err(d) => d.reason().to_string(),
                };
                tracing::warn!(decision_id = %ctx.decision_id, enforced, enforced_reason, shadow = shadow.outcome, shadow_reason = %shadow.reason, shadow_revision = %shadow.revision, blueprint = %blueprint, "shadow policy set would decide differently");
            }
            ctx.shadow = Some((shadow, mismatch));
        }
        ctx.route = Some(route);
        ctx.caller = verdict.caller;
        ctx.snapshot = Some(verdict.snapshot.clone());
        self.metrics
            .decision_seconds
            .observe(ctx.started.elapsed().as_secs_f64());
        match verdict.outcome {
            Ok(allowed) => {
                ctx.reason = allowed.reason.to_string();
                ctx.allowed = Some(allowed);
                Ok(false)
            }
            Err(denial) => {
                if let crate::authorize::Denial::PolicyError(e) = &denial {
                    tracing::error!(decision_id = %ctx.decision_id, revision = %verdict.snapshot.revision, error = %e, "policy could not decide; denying");
                }
                self.reject(session, ctx, Rejection::for_denial(&denial))
                    .await
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route selected"))?;
        let backend = route
            .upstreams
            .select(b"", 256)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no upstream available"))?;
        let mut peer = crate::tls::upstream_peer(&backend, route.tls.as_deref());
        peer.options.connection_timeout = Some(route.config.connect_timeout);
        peer.options.total_connection_timeout = Some(route.config.connect_timeout);
        peer.options.read_timeout = Some(route.config.read_timeout);
        peer.options.write_timeout = Some(route.config.read_timeout);
        ctx.tries += 1;
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (Some(route), Some(caller), Some(allowed)) = (&ctx.route, &ctx.caller, &ctx.allowed)
        else {
            // Only allowed requests reach this phase; anything else is a bug, so refuse.
            return Err(Error::explain(
                ErrorType::InternalError,
                "unauthorised request reached the upstream phase",
            ));
        };
        strip_inbound_headers(upstream, route.config.forward_override_headers);
        if !route.config.forward_authorization {
            upstream.remove_header(&http::header::AUTHORIZATION);
        }
        if let Some((target, host)) = &ctx.upstream_target {
            // Exactly the target that was routed and authorised, in origin form.
            let uri = http::Uri::try_from(target.as_str())
                .map_err(|e| Error::because(ErrorType::InternalError, "normalised target", e))?;
            upstream.set_uri(uri);
            if !host.is_empty() {
                upstream.insert_header(http::header::HOST, host.as_str())?;
            }
        }
        add_identity_headers(upstream, &ctx.decision_id, caller, allowed)?;
        if let Some(cert) = crate::tls::client_certificate(session) {
            upstream.insert_header("x-agentgate-client-cert-sha256", cert.sha256.as_str())?;
        }
        ctx.forwarded_at = Some(Instant::now());
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(allowed) = &ctx.allowed {
            response.insert_header("x-agentgate-decision-id", ctx.decision_id.as_str())?;
            for (n, v) in &allowed.response_headers {
                response.append_header(n.clone(), v.clone())?;
            }
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Another upstream of the route may be up: try each once before giving up.
        let upstreams = ctx.route.as_ref().map_or(1, |r| r.config.upstreams.len());
        if ctx.tries < upstreams {
            e.set_retry(true);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (status, reason) = match e.etype() {
            _ if crate::tls::is_upstream_tls_error(e) => (502, "upstream_tls_error"),
            ErrorType::HTTPStatus(code) => (*code, "http_error"),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                (504, "upstream_timeout")
            }
            ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::ConnectProxyFailure
            | ErrorType::SocketError => (502, "upstream_unreachable"),
            _ => match e.esource() {
                pingora::ErrorSource::Upstream => (502, "upstream_error"),
                pingora::ErrorSource::Downstream => (400, "bad_request"),
                _ => (500, "internal_error"),
            },
        };
        // A client that went away needs no answer.
        let gone = matches!(
            e.etype(),
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed
        ) && *e.esource() == pingora::ErrorSource::Downstream;
        ctx.reason = reason.to_string();
        if !gone && session.response_written().is_none() {
            if let Err(err) =
                send(session, &Rejection::plain(status, reason), &ctx.decision_id).await
            {
                tracing::debug!(error = %err, "could not send error response");
            }
        }
        FailToProxy {
            error_code: if gone { 0 } else { status },
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if let (Some(route), Some(at)) = (&ctx.route, ctx.forwarded_at) {
            self.metrics
                .upstream_seconds
                .with_label_values(&[&*route.id])
                .observe(at.elapsed().as_secs_f64());
            if ctx.allowed.is_some() {
                let class = match status {
                    100..=199 => "1xx",
                    200..=299 => "2xx",
                    300..=399 => "3xx",
                    400..=499 => "4xx",
                    _ => "5xx",
                };
                self.metrics
                    .upstream_responses
                    .with_label_values(&[&*route.id, class])
                    .inc();
            }
        }
        self.record(session, ctx, status);
    }
}
