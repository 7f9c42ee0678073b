//! Recording a request once it is done: its metrics and its decision log line, both derived
//! from the request's outcome. Labels come only from closed sets.

use super::context::{GrpcStatus, RequestCtx};
use crate::authorize::Verdict;
use crate::outcome::Outcome;
use crate::policy::PolicySnapshot;
use crate::telemetry::decision_log::loggable_path;
use crate::telemetry::{DecisionLog, DecisionRecord, Metrics, ShadowRecord};
use pingora::proxy::Session;

/// Token validation and policy evaluation times of a verdict.
pub fn observe_verdict(metrics: &Metrics, verdict: &Verdict) {
    metrics
        .token_validation_seconds
        .observe(verdict.token_time.as_secs_f64());
    if verdict.caller.is_some() && !verdict.policy_time.is_zero() {
        metrics
            .policy_evaluation_seconds
            .observe(verdict.policy_time.as_secs_f64());
    }
}

/// Counts and logs a shadow set that would have decided otherwise than `enforced`.
pub fn shadow_mismatch(metrics: &Metrics, ctx: &RequestCtx, enforced: &Outcome) {
    let Some((shadow, _)) = &ctx.shadow else {
        return;
    };
    let blueprint = blueprint_label(&ctx.snapshot.policy, blueprint_of(ctx));
    metrics
        .shadow_mismatches
        .with_label_values(&[enforced.label(), shadow.outcome.label(), blueprint])
        .inc();
    tracing::warn!(
        decision_id = %ctx.decision_id,
        enforced = enforced.label(),
        enforced_reason = enforced.reason(),
        shadow = shadow.outcome.label(),
        shadow_reason = shadow.outcome.reason(),
        shadow_revision = %shadow.revision,
        blueprint = %blueprint,
        "shadow policy set would decide differently"
    );
}

/// The upstream time and status class of a forwarded request.
pub fn upstream(metrics: &Metrics, ctx: &RequestCtx, status: u16) {
    let (Some(route), Some(at)) = (&ctx.route, ctx.forwarded_at) else {
        return;
    };
    metrics
        .upstream_seconds
        .with_label_values(&[&*route.id])
        .observe(at.elapsed().as_secs_f64());
    if ctx.allowed() {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        metrics
            .upstream_responses
            .with_label_values(&[&*route.id, class])
            .inc();
        if route.config.grpc {
            let grpc = ctx.grpc_status.map_or("missing", GrpcStatus::label);
            metrics
                .grpc_responses
                .with_label_values(&[&*route.id, grpc])
                .inc();
        }
    }
}

/// Counts the request and writes its decision log line (allowed ones at the sample rate).
pub fn request(
    metrics: &Metrics,
    log: &DecisionLog,
    session: &Session,
    ctx: &RequestCtx,
    status: u16,
) {
    let allow = ctx.allowed();
    let caller = ctx.caller.as_ref().map(|c| &c.token.caller);
    let policy = &ctx.snapshot.policy;
    let route = ctx.route.as_ref().map(|r| &*r.id);
    let reason = ctx.reason();
    metrics
        .requests
        .with_label_values(&[
            route.unwrap_or("none"),
            if allow { "allow" } else { "deny" },
            reason,
            caller.map_or("none", |c| c.kind.as_str()),
            blueprint_label(policy, blueprint_of(ctx)),
        ])
        .inc();
    if !log.wants(allow) {
        return;
    }
    let directory = &policy.directory;
    let blueprint_entry = blueprint_of(ctx).and_then(|bp| directory.blueprints.get(bp));
    let agent_entry = caller
        .and_then(|c| c.agent_id())
        .and_then(|a| directory.agents.get(a));
    let req = session.req_header();
    let (path, path_truncated) = loggable_path(req.uri.path());
    log.write(&DecisionRecord {
        time: humantime::format_rfc3339_micros(crate::clock::now()).to_string(),
        decision_id: &ctx.decision_id,
        route,
        method: req.method.as_str(),
        path,
        path_truncated,
        client_ip: ctx.client_ip,
        caller_kind: caller.map(|c| c.kind.as_str()),
        tenant: caller.map(|c| &*c.tenant),
        client_id: caller.map(|c| &*c.actor_id),
        agent_id: caller.and_then(|c| c.agent_id()),
        blueprint_id: blueprint_of(ctx),
        blueprint_name: blueprint_entry.map(|b| b.name.as_str()),
        sponsors: agent_entry.map_or_else(Vec::new, |a| {
            a.sponsors.iter().map(|s| s.id.as_str()).collect()
        }),
        user_oid: caller.and_then(|c| c.user_oid()),
        allow,
        status,
        grpc_status: ctx.grpc_status_sent(),
        reason,
        revision: &policy.revision,
        bundle_revision: ctx.snapshot.bundle_revision.as_deref(),
        latency_us: ctx.started.elapsed().as_micros() as u64,
        stream_closed: ctx
            .stream
            .as_ref()
            .and_then(|s| s.closed())
            .map(|c| c.reason()),
        shadow: ctx.shadow.as_ref().map(|(s, mismatch)| ShadowRecord {
            revision: &s.revision,
            outcome: s.outcome.label(),
            reason: s.outcome.reason(),
            mismatch: *mismatch,
        }),
    });
}

fn blueprint_of(ctx: &RequestCtx) -> Option<&str> {
    ctx.caller
        .as_ref()
        .and_then(|c| c.token.caller.blueprint_id.as_deref())
}

/// A blueprint id as a metric label: blueprints of the deciding set's directory by id,
/// others as `unknown`, no blueprint as `none`. Keeps the label set closed.
fn blueprint_label<'a>(policy: &PolicySnapshot, blueprint: Option<&'a str>) -> &'a str {
    match blueprint {
        None => "none",
        Some(bp) if policy.directory.has_blueprint(bp) => bp,
        Some(_) => "unknown",
    }
}
