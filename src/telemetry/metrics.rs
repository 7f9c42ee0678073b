//! Every metric the gateway exports, defined in one place.

use crate::authorize::CacheStats;
use crate::identity::keys::TenantKeyStatus;
use crate::policy::compiled::EngineEvents;
use crate::policy::decision_cache::CacheLookups;
use crate::policy::EngineState;
use crate::telemetry::decision_log::DecisionLogStats;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets in seconds, from 10 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The gateway's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub decision_seconds: Histogram,
    pub token_validation_seconds: Histogram,
    pub policy_evaluation_seconds: Histogram,
    pub upstream_seconds: HistogramVec,
    pub upstream_responses: IntCounterVec,
    pub grpc_responses: IntCounterVec,
    pub streams_closed: IntCounterVec,
    pub streams_open: IntGauge,
    key_fetches: IntCounterVec,
    keys_loaded: IntGaugeVec,
    key_age_seconds: IntGaugeVec,
    token_cache_requests: IntCounterVec,
    token_cache_entries: IntGauge,
    decision_cache_requests: IntCounterVec,
    decision_cache_entries: IntGauge,
    pub reloads: IntCounterVec,
    pub last_reload_success: IntGauge,
    policy_revision: IntGaugeVec,
    pub shadow_mismatches: IntCounterVec,
    policy_engine_events: IntCounterVec,
    policy_engine_compiled: IntGaugeVec,
    connections_open: IntGaugeVec,
    pub connections_refused: IntCounterVec,
    decision_log_records: IntCounterVec,
    decision_log_queue_bytes: IntGauge,
}

/// Raises a counter to a total kept elsewhere (atomics on the request path), so counters
/// stay monotonic without the request path touching prometheus.
fn catch_up(counter: &IntCounterVec, labels: &[&str], total: u64) {
    let c = counter.with_label_values(labels);
    c.inc_by(total.saturating_sub(c.get()));
}

fn histogram(name: &str, help: &str) -> prometheus::Result<Histogram> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()))
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "agentgate_requests_total",
                    "Requests by route, decision, reason, caller kind and blueprint.",
                ),
                &["route", "decision", "reason", "caller_kind", "blueprint"],
            )?,
            decision_seconds: histogram(
                "agentgate_decision_seconds",
                "Time the gateway adds before a request is forwarded or refused.",
            )?,
            token_validation_seconds: histogram(
                "agentgate_token_validation_seconds",
                "Bearer token validation time (cache hits included).",
            )?,
            policy_evaluation_seconds: histogram(
                "agentgate_policy_evaluation_seconds",
                "Rego policy evaluation time, input building included.",
            )?,
            upstream_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "agentgate_upstream_seconds",
                    "Time from forwarding to the end of the upstream response.",
                )
                .buckets(BUCKETS.to_vec()),
                &["route"],
            )?,
            upstream_responses: IntCounterVec::new(
                Opts::new(
                    "agentgate_upstream_responses_total",
                    "Upstream responses by status class.",
                ),
                &["route", "class"],
            )?,
            streams_closed: IntCounterVec::new(
                Opts::new(
                    "agentgate_streams_closed_total",
                    "Open streams the gateway ended, by route and cause (token_expired, request_timeout, denied).",
                ),
                &["route", "cause"],
            )?,
            streams_open: IntGauge::new(
                "agentgate_streams_open",
                "Long-lived streams open (WebSocket, server-sent events, routes with request_timeout).",
            )?,
            grpc_responses: IntCounterVec::new(
                Opts::new(
                    "agentgate_grpc_responses_total",
                    "Upstream answers on gRPC routes by grpc-status (missing: none sent).",
                ),
                &["route", "grpc_status"],
            )?,
            key_fetches: IntCounterVec::new(
                Opts::new(
                    "agentgate_key_fetches_total",
                    "Signing key fetches by tenant and result.",
                ),
                &["tenant", "result"],
            )?,
            keys_loaded: IntGaugeVec::new(
                Opts::new(
                    "agentgate_signing_keys",
                    "Signing keys currently loaded per tenant.",
                ),
                &["tenant"],
            )?,
            key_age_seconds: IntGaugeVec::new(
                Opts::new(
                    "agentgate_signing_keys_age_seconds",
                    "Seconds since the last good key fetch per tenant.",
                ),
                &["tenant"],
            )?,
            token_cache_requests: IntCounterVec::new(
                Opts::new(
                    "agentgate_token_cache_requests_total",
                    "Verified-token cache lookups by result.",
                ),
                &["result"],
            )?,
            token_cache_entries: IntGauge::new(
                "agentgate_token_cache_entries",
                "Verified tokens currently cached.",
            )?,
            decision_cache_requests: IntCounterVec::new(
                Opts::new(
                    "agentgate_policy_decision_cache_requests_total",
                    "Policy decision cache lookups by result.",
                ),
                &["result"],
            )?,
            decision_cache_entries: IntGauge::new(
                "agentgate_policy_decision_cache_entries",
                "Decisions the enforced policy set currently remembers.",
            )?,
            reloads: IntCounterVec::new(
                Opts::new(
                    "agentgate_reloads_total",
                    "Reloads of policies, data and routes by result.",
                ),
                &["result"],
            )?,
            last_reload_success: IntGauge::new(
                "agentgate_last_reload_success_timestamp_seconds",
                "Unix time of the last successful load of the policy set.",
            )?,
            policy_revision: IntGaugeVec::new(
                Opts::new(
                    "agentgate_policy_revision_info",
                    "The enforced (and shadow) policy revision; value 1.",
                ),
                &["revision", "role"],
            )?,
            shadow_mismatches: IntCounterVec::new(
                Opts::new(
                    "agentgate_shadow_mismatches_total",
                    "Requests the shadow policy set would have decided differently.",
                ),
                &["enforced", "shadow", "blueprint"],
            )?,
            policy_engine_events: IntCounterVec::new(
                Opts::new(
                    "agentgate_policy_engine_events_total",
                    "Compiled policy engine events: promoted, refused, demoted, cross_check.",
                ),
                &["event"],
            )?,
            policy_engine_compiled: IntGaugeVec::new(
                Opts::new(
                    "agentgate_policy_engine_compiled",
                    "1 when the compiled engine decides for the set, 0 when the interpreter does.",
                ),
                &["role"],
            )?,
            connections_open: IntGaugeVec::new(
                Opts::new(
                    "agentgate_connections_open",
                    "Open client connections per listener.",
                ),
                &["listener"],
            )?,
            connections_refused: IntCounterVec::new(
                Opts::new(
                    "agentgate_connections_refused_total",
                    "Connections refused at a connection cap or for a missing or bad PROXY protocol header, by listener and limit (listener, client, proxy_protocol).",
                ),
                &["listener", "limit"],
            )?,
            decision_log_records: IntCounterVec::new(
                Opts::new(
                    "agentgate_decision_log_records_total",
                    "Decision log records by result: written, or dropped because the queue was full or the output failed.",
                ),
                &["result"],
            )?,
            decision_log_queue_bytes: IntGauge::new(
                "agentgate_decision_log_queue_bytes",
                "Bytes of decision log records waiting for the writer.",
            )?,
            registry,
        };
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.decision_seconds.clone()))?;
        m.registry
            .register(Box::new(m.token_validation_seconds.clone()))?;
        m.registry
            .register(Box::new(m.policy_evaluation_seconds.clone()))?;
        m.registry.register(Box::new(m.upstream_seconds.clone()))?;
        m.registry
            .register(Box::new(m.upstream_responses.clone()))?;
        m.registry.register(Box::new(m.grpc_responses.clone()))?;
        m.registry.register(Box::new(m.streams_closed.clone()))?;
        m.registry.register(Box::new(m.streams_open.clone()))?;
        m.registry.register(Box::new(m.key_fetches.clone()))?;
        m.registry.register(Box::new(m.keys_loaded.clone()))?;
        m.registry.register(Box::new(m.key_age_seconds.clone()))?;
        m.registry
            .register(Box::new(m.token_cache_requests.clone()))?;
        m.registry
            .register(Box::new(m.token_cache_entries.clone()))?;
        m.registry
            .register(Box::new(m.decision_cache_requests.clone()))?;
        m.registry
            .register(Box::new(m.decision_cache_entries.clone()))?;
        m.registry.register(Box::new(m.reloads.clone()))?;
        m.registry
            .register(Box::new(m.last_reload_success.clone()))?;
        m.registry.register(Box::new(m.policy_revision.clone()))?;
        m.registry.register(Box::new(m.shadow_mismatches.clone()))?;
        m.registry
            .register(Box::new(m.policy_engine_events.clone()))?;
        m.registry
            .register(Box::new(m.policy_engine_compiled.clone()))?;
        m.registry.register(Box::new(m.connections_open.clone()))?;
        m.registry
            .register(Box::new(m.connections_refused.clone()))?;
        m.registry
            .register(Box::new(m.decision_log_records.clone()))?;
        m.registry
            .register(Box::new(m.decision_log_queue_bytes.clone()))?;
        Ok(m)
    }

    /// Records the revisions now in force (`role` is `enforced` or `shadow`).
    pub fn set_revisions(&self, enforced: &str, shadow: Option<&str>) {
        self.policy_revision.reset();
        self.policy_revision
            .with_label_values(&[enforced, "enforced"])
            .set(1);
        if let Some(s) = shadow {
            self.policy_revision
                .with_label_values(&[s, "shadow"])
                .set(1);
        }
    }

    /// Brings the token cache counters up to date.
    pub fn observe_cache(&self, stats: CacheStats) {
        catch_up(&self.token_cache_requests, &["hit"], stats.hits);
        catch_up(&self.token_cache_requests, &["miss"], stats.misses);
        self.token_cache_entries.set(stats.entries as i64);
    }

    /// Brings the decision cache metrics up to date: the process-wide lookups, and the
    /// entries of the enforced set.
    pub fn observe_decision_cache(&self, lookups: CacheLookups, entries: usize) {
        catch_up(&self.decision_cache_requests, &["hit"], lookups.hits);
        catch_up(&self.decision_cache_requests, &["miss"], lookups.misses);
        self.decision_cache_entries.set(entries as i64);
    }

    /// Brings the policy engine metrics up to date: the process-wide event totals, and which
    /// engine decides for the enforced (and shadow) set.
    pub fn observe_policy_engine(
        &self,
        events: EngineEvents,
        enforced: EngineState,
        shadow: Option<EngineState>,
    ) {
        for (event, total) in [
            ("promoted", events.promoted),
            ("refused", events.refused),
            ("demoted", events.demoted),
            ("cross_check", events.cross_checks),
        ] {
            catch_up(&self.policy_engine_events, &[event], total);
        }
        self.policy_engine_compiled.reset();
        for (role, state) in [("enforced", Some(enforced)), ("shadow", shadow)] {
            if let Some(state) = state {
                self.policy_engine_compiled
                    .with_label_values(&[role])
                    .set(i64::from(state == EngineState::Compiled));
            }
        }
    }

    /// Sets the open-connection gauges from `(listener, open)` pairs.
    pub fn observe_connections<'a>(&self, open: impl Iterator<Item = (&'a str, usize)>) {
        for (listener, n) in open {
            self.connections_open
                .with_label_values(&[listener])
                .set(n as i64);
        }
    }

    /// Brings the decision log counters up to date.
    pub fn observe_decision_log(&self, stats: DecisionLogStats) {
        catch_up(&self.decision_log_records, &["written"], stats.written);
        catch_up(&self.decision_log_records, &["dropped"], stats.dropped);
        self.decision_log_queue_bytes
            .set(i64::try_from(stats.queued_bytes).unwrap_or(i64::MAX));
    }

    /// Brings the key gauges and counters up to date with the key store's state.
    pub fn observe_keys(&self, status: &[TenantKeyStatus]) {
        for t in status {
            let tenant = t.tenant.as_str();
            self.keys_loaded
                .with_label_values(&[tenant])
                .set(t.keys as i64);
            self.key_age_seconds
                .with_label_values(&[tenant])
                .set(t.age_seconds.map_or(-1, |a| a as i64));
            catch_up(&self.key_fetches, &[tenant, "ok"], t.fetches_ok);
            catch_up(&self.key_fetches, &[tenant, "error"], t.fetches_failed);
        }
    }

    /// The Prometheus text exposition of every metric.
    /// Adds metrics defined elsewhere (TLS certificate reloads) to the registry.
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) -> prometheus::Result<()> {
        self.registry.register(c)
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a metric family error would be a bug.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "failed to encode metrics");
        }
        out
    }
}
