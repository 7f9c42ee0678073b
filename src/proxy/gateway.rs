//! The pingora `ProxyHttp` implementation: one short method per phase, each delegating.
//!
//! `new_ctx` loads the snapshot the request will be routed and decided by; `request_filter`
//! screens, routes and authorises, and either writes the refusal or lets the request
//! through; `request_body_filter` holds the body to the route's `max_body_bytes`;
//! `upstream_peer` picks an upstream (HTTP/2 where the route asks); `upstream_request_filter`
//! replaces identity headers; `connected_to_upstream` and `upstream_response_filter` hand
//! long-lived streams to the stream guard ([`super::streams`]) and read an upstream's
//! `grpc-status`; `response_body_filter` and the trailer filter release a stream once its
//! answer ends; `error_while_proxy` keeps a request the guard ended from being retried;
//! `fail_to_proxy` answers refusals made while the body streamed, streams the guard ended
//! (before their answer, or in a gRPC call's trailers after it began), and upstream
//! failures (gRPC-shaped on gRPC routes); `logging` records the request once.

use super::context::{GrpcStatus, RequestCtx};
use super::decision_id::{self, DecisionIds};
use super::headers::{add_identity_headers, drop_upgrade_offer, strip_inbound_headers};
use super::record;
use super::respond::{
    client_went_away, send_failure, send_grpc_trailers, send_refusal, upstream_failure, Dialect,
};
use super::shutdown::Draining;
use super::streams::{CloseCause, NewStream, OpenStreams, StreamRequest};
use crate::authorize::{Authorizer, Verdict};
use crate::outcome::{Outcome, Refusal, RequestError, UpstreamFailure};
use crate::policy::input::RequestFacts;
use crate::request::client::{client_address, forwarded, forwarded_for, TrustedProxies};
use crate::request::framing::check_request;
use crate::request::upgrade::{self, Upgrade};
use crate::request::{Target, TargetError};
use crate::snapshot::Live;
use crate::telemetry::{DecisionLog, Metrics};
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use std::sync::Arc;
use std::time::Instant;

/// Shared state of the proxy service.
pub struct Gateway {
    pub live: Arc<Live>,
    pub authorizer: Arc<Authorizer>,
    pub metrics: Arc<Metrics>,
    pub decision_log: Arc<DecisionLog>,
    pub ids: Arc<DecisionIds>,
    pub limits: RequestLimits,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// Open long-lived streams, for the guard that ends them.
    pub streams: Arc<OpenStreams>,
    /// Set once SIGTERM has arrived.
    pub draining: Arc<Draining>,
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

/// Carried from one request to the next on a keep-alive connection.
struct ConnectionState {
    requests: u32,
}

impl Gateway {
    /// Screens the request (framing, target, route, the upgrade it asks for) and runs the
    /// decision pipeline on it.
    async fn decide(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        upgrade: Option<Upgrade>,
    ) -> Result<Verdict, RequestError> {
        let req = session.req_header();
        let raw = session
            .as_downstream()
            .as_http1()
            .map(|h1| h1.get_headers_raw_bytes());
        check_request(&req.headers, raw.as_deref(), self.limits.max_header_bytes)?;
        let target = self.target(req)?;
        let route = ctx
            .snapshot
            .routes
            .find(target.host_name(), &target.path)
            .cloned()
            .ok_or(RequestError::NoRoute)?;
        ctx.route = Some(Arc::clone(&route));
        let upgrade = match upgrade {
            Some(Upgrade::WebSocket) if route.config.websocket => Some(upgrade::WEBSOCKET),
            Some(_) => return Err(RequestError::UpgradeNotAllowed),
            None => None,
        };
        if let Some(limit) = route.config.max_body_bytes {
            // The framing check accepted the length, so it parses.
            let declared = req
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit) {
                return Err(RequestError::BodyTooLarge);
            }
        }
        // HTTP/2 names the host in `:authority`, which an HTTP/1.1 upstream needs as `Host`.
        if target.rewritten || req.version == http::Version::HTTP_2 {
            ctx.upstream_target = Some((target.origin_form(), target.host.to_string()));
        }
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.client_ip = peer.map(|p| client_address(p, &req.headers, &self.trusted_proxies));
        let client_ip = ctx.client_ip.map(|c| c.to_string()).unwrap_or_default();
        let facts = RequestFacts {
            method: req.method.as_str(),
            host: &target.host,
            path: &target.path,
            query: target.query,
            client_ip: &client_ip,
            headers: &req.headers,
            time_ns: crate::clock::unix_nanos(crate::clock::now()),
            upgrade,
            client_certificate: crate::tls::client_certificate(session)
                .map_err(|_| RequestError::ClientCertificateUnreadable)?,
        };
        let verdict = self
            .authorizer
            .authorize(&ctx.snapshot, &route.access, &facts, false)
            .await;
        Ok(verdict)
    }

    /// Replaces `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded` with what the gateway
    /// knows: the trusted chain plus the peer (or the peer alone), the client's protocol
    /// (the gateway's own listener unless a trusted proxy said otherwise), the client.
    fn forwarding_headers(
        &self,
        session: &Session,
        upstream: &mut RequestHeader,
        ctx: &RequestCtx,
    ) -> Result<()> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let (Some(peer), Some(client)) = (peer, ctx.client_ip) else {
            return Ok(());
        };
        let req = session.req_header();
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let told = req
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .filter(|p| matches!(*p, "http" | "https"))
            .filter(|_| self.trusted_proxies.contains(peer));
        let proto = told.unwrap_or(if tls { "https" } else { "http" });
        upstream.insert_header("forwarded", forwarded(client, proto))?;
        upstream.insert_header("x-forwarded-proto", proto)?;
        let chain = forwarded_for(peer, &req.headers, &self.trusted_proxies);
        upstream.insert_header("x-forwarded-for", chain)?;
        Ok(())
    }

    /// The request's target, read by the path discipline ([`crate::request::read`]).
    fn target<'a>(&self, req: &'a RequestHeader) -> Result<Target<'a>, TargetError> {
        crate::request::read(
            &req.uri,
            req.raw_path(),
            req.raw_path_is_utf8(),
            &req.headers,
            req.version,
            self.limits.max_uri_bytes,
        )
    }

    /// The request as the stream guard keeps it, to decide it again.
    fn stream_request(&self, session: &Session, ctx: &RequestCtx) -> Option<StreamRequest> {
        let req = session.req_header();
        let target = self.target(req).ok()?;
        let websocket = upgrade::requested(&req.headers, req.version) == Some(Upgrade::WebSocket);
        Some(StreamRequest {
            method: req.method.to_string(),
            host: target.host.into_owned(),
            path: target.path.into_owned(),
            query: target.query.to_owned(),
            client_ip: ctx.client_ip.map(|c| c.to_string()).unwrap_or_default(),
            headers: req.headers.clone(),
            upgrade: websocket.then_some(upgrade::WEBSOCKET),
            client_certificate: crate::tls::client_certificate(session).ok()?.cloned(),
        })
    }

    /// Registers the request as a long-lived stream with the guard (once), so it ends at
    /// its token's `exp`, its route's `request_timeout`, or a refusing reload. A stream
    /// that cannot be guarded is not served.
    fn open_stream(&self, session: &Session, ctx: &mut RequestCtx) -> Result<()> {
        let (None, Some(fd), Some(route), Some(caller)) =
            (&ctx.stream, ctx.upstream_fd, &ctx.route, &ctx.caller)
        else {
            return Ok(());
        };
        let request = self
            .stream_request(session, ctx)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "stream request unreadable"))?;
        let new = NewStream {
            request: Arc::new(request),
            snapshot: Arc::downgrade(&ctx.snapshot),
            expires_at: caller.token.expires_at,
            deadline: route.config.request_timeout.map(|t| ctx.started + t),
            decision_id: ctx.decision_id.clone(),
            route: route.id.clone(),
        };
        let stream = self
            .streams
            .register(fd, new)
            .map_err(|e| Error::because(ErrorType::InternalError, "guarding the stream", e))?;
        ctx.stream = Some(stream);
        Ok(())
    }

    /// Tells the guard the request's answer has ended. Called as soon as the end is seen,
    /// before pingora may return the upstream connection to its pool.
    fn release_stream(&self, ctx: &RequestCtx) {
        if let Some(stream) = &ctx.stream {
            self.streams.release(stream);
        }
    }

    /// Ends an answer under way that the stream guard cut off. The upstream did not fail
    /// (unless the request ran out of time): the request stays allowed and its decision log
    /// line says why the stream ended; a gRPC client reads why in the call's trailers.
    async fn end_answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        cause: &CloseCause,
    ) -> FailToProxy {
        if *cause == CloseCause::RequestTimeout {
            ctx.upstream_failure = Some(UpstreamFailure::RequestTimeout);
        }
        if ctx.dialect() == Dialect::Grpc {
            let sent =
                send_grpc_trailers(session, cause.status(), cause.reason(), &ctx.decision_id).await;
            if let Err(err) = sent {
                tracing::debug!(decision_id = %ctx.decision_id, error = %err, "could not end the gRPC call");
            }
        }
        FailToProxy {
            error_code: cause.status(),
            can_reuse_downstream: false,
        }
    }

    /// Writes `refusal`, closing the connection when its framing is in doubt.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        refusal: Refusal,
    ) -> Result<bool> {
        if refusal.closes_connection() {
            session.set_keepalive(None);
        }
        if let Refusal::PolicyError(e) = &refusal {
            tracing::error!(decision_id = %ctx.decision_id, revision = %ctx.snapshot.policy.revision, error = %e, "policy could not decide; denying");
        }
        let sent = send_refusal(session, &refusal, &ctx.decision_id, ctx.dialect()).await;
        ctx.outcome = Some(Outcome::Refused(refusal));
        sent.map(|()| true)
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            decision_id: self.ids.next(),
            snapshot: self.live.load(),
            route: None,
            caller: None,
            outcome: None,
            upstream_failure: None,
            forwarded_at: None,
            tries: 0,
            shadow: None,
            nth_on_connection: 1,
            upstream_target: None,
            body_bytes: 0,
            client_ip: None,
            grpc_status: None,
            upstream_fd: None,
            stream: None,
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
        if ctx.nth_on_connection >= self.limits.max_requests_per_connection
            || self.draining.is_draining()
        {
            // Closing connections now and then bounds per-connection state (as nginx
            // does). While the process drains, closing after each answer moves
            // keep-alive clients to a process that stays before accepting ends, rather
            // than racing their next request against the close. (h2 connections get
            // their GOAWAY when accepting ends.)
            session.set_keepalive(None);
        }
        let req = session.req_header();
        let mut upgrade = upgrade::requested(&req.headers, req.version);
        if upgrade == Some(Upgrade::Other) {
            drop_upgrade_offer(session.req_header_mut())?;
            upgrade = None;
        }
        let verdict = match self.decide(session, ctx, upgrade).await {
            Ok(verdict) => verdict,
            Err(e) => return self.refuse(session, ctx, Refusal::Request(e)).await,
        };
        record::observe_verdict(&self.metrics, &verdict);
        ctx.caller = verdict.caller;
        ctx.shadow = verdict.shadow.map(|s| {
            let mismatch = s.outcome.differs_from(&verdict.outcome);
            (s, mismatch)
        });
        if ctx.shadow.as_ref().is_some_and(|(_, mismatch)| *mismatch) {
            record::shadow_mismatch(&self.metrics, ctx, &verdict.outcome);
        }
        self.metrics
            .decision_seconds
            .observe(ctx.started.elapsed().as_secs_f64());
        match verdict.outcome {
            Outcome::Allowed(allowed) => {
                ctx.outcome = Some(Outcome::Allowed(allowed));
                Ok(false)
            }
            Outcome::Refused(refusal) => self.refuse(session, ctx, refusal).await,
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let limit = ctx.route.as_ref().and_then(|r| r.config.max_body_bytes);
        let (Some(limit), Some(chunk)) = (limit, body.as_ref()) else {
            return Ok(());
        };
        ctx.body_bytes = ctx.body_bytes.saturating_add(chunk.len() as u64);
        if ctx.body_bytes <= limit {
            return Ok(());
        }
        // A body without a declared length ran past the limit: nothing more is forwarded,
        // and fail_to_proxy answers with the refusal.
        *body = None;
        ctx.outcome = Some(Outcome::Refused(Refusal::Request(
            RequestError::BodyTooLarge,
        )));
        Err(Error::explain(
            ErrorType::Custom("body_too_large"),
            "request body over the route's max_body_bytes",
        ))
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
        if route.config.upstream_h2 {
            // Over TLS this offers ALPN `h2` alone; over plain TCP pingora speaks h2c.
            peer.options.set_http_version(2, 2);
            // One stream per connection at a time, so the stream guard can end a stream
            // by shutting its connection down without touching another.
            peer.options.max_h2_streams = 1;
        }
        ctx.tries += 1;
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (Some(route), Some(caller), Some(Outcome::Allowed(allowed))) =
            (&ctx.route, &ctx.caller, &ctx.outcome)
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
        self.forwarding_headers(session, upstream, ctx)?;
        add_identity_headers(upstream, &ctx.decision_id, caller, allowed)?;
        if let Ok(Some(cert)) = crate::tls::client_certificate(session) {
            upstream.insert_header("x-agentgate-client-cert-sha256", cert.sha256.as_str())?;
        }
        ctx.forwarded_at = Some(Instant::now());
        Ok(())
    }

    async fn connected_to_upstream(
        &self,
        session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        fd: std::os::fd::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_fd = Some(fd);
        // A retry on a fresh connection: the guard must hold the new socket, not the old.
        if let Some(stale) = ctx.stream.take() {
            self.streams.release(&stale);
        }
        // Any gRPC call may be a stream; a request timeout needs the guard's clock.
        if ctx
            .route
            .as_ref()
            .is_some_and(|r| r.config.grpc || r.config.request_timeout.is_some())
        {
            self.open_stream(session, ctx)?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let event_stream = response
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        if response.status == http::StatusCode::SWITCHING_PROTOCOLS || event_stream {
            self.open_stream(session, ctx)?;
        }
        // A trailers-only gRPC answer carries its status in the headers, and is complete.
        if ctx.dialect() == Dialect::Grpc {
            if let Some(v) = response.headers.get("grpc-status") {
                ctx.grpc_status = Some(GrpcStatus::parse(v));
                self.release_stream(ctx);
            }
        }
        Ok(())
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.dialect() == Dialect::Grpc {
            if let Some(v) = trailers.get("grpc-status") {
                ctx.grpc_status = Some(GrpcStatus::parse(v));
            }
        }
        // Trailers end the answer.
        self.release_stream(ctx);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(Outcome::Allowed(allowed)) = &ctx.outcome {
            response.insert_header(
                decision_id::HEADER,
                decision_id::header_value(&ctx.decision_id)?,
            )?;
            for (n, v) in &allowed.response_headers {
                response.append_header(n.clone(), v.clone())?;
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if end_of_stream {
            self.release_stream(ctx);
        }
        Ok(None)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // A request the stream guard ended must not be sent again; otherwise pingora's
        // rule: idempotent requests with their body still at hand, on a reused connection.
        let ended = ctx.stream.as_ref().is_some_and(|s| s.closed().is_some());
        if ended
            || !session.req_header().method.is_idempotent()
            || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
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
        let closed = ctx.stream.as_ref().and_then(|s| s.closed()).cloned();
        if let Some(cause) = &closed {
            if session.response_written().is_some() {
                return self.end_answer(session, ctx, cause).await;
            }
            // The guard ended the request before its answer began: the client learns why.
            if let Some(refusal) = cause.refusal() {
                ctx.outcome = Some(Outcome::Refused(refusal));
            }
        }
        if let Some(Outcome::Refused(refusal)) = &ctx.outcome {
            // Refused while the body streamed (the body limit): the client gets the refusal.
            if session.response_written().is_none() {
                let sent = send_refusal(session, refusal, &ctx.decision_id, ctx.dialect()).await;
                if let Err(err) = sent {
                    tracing::debug!(error = %err, "could not send the refusal");
                }
            }
            return FailToProxy {
                error_code: refusal.status(),
                can_reuse_downstream: false,
            };
        }
        let failure = match closed {
            Some(CloseCause::RequestTimeout) => UpstreamFailure::RequestTimeout,
            _ => upstream_failure(e),
        };
        ctx.upstream_failure = Some(failure);
        // A client that went away needs no answer.
        let gone = client_went_away(e);
        if !gone && session.response_written().is_none() {
            let sent = send_failure(session, failure, &ctx.decision_id, ctx.dialect()).await;
            if let Err(err) = sent {
                tracing::debug!(error = %err, "could not send error response");
            }
        }
        FailToProxy {
            error_code: if gone { 0 } else { failure.status() },
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        self.release_stream(ctx);
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        record::upstream(&self.metrics, ctx, status);
        record::request(&self.metrics, &self.decision_log, session, ctx, status);
    }
}
