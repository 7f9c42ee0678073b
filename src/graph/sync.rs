//! The periodic sync: read Graph every `interval`, keep the last good directory, report.
//!
//! A failed read never replaces a good directory: the last good one keeps serving, and is
//! announced stale once older than `max_age` (`on_stale` then decides what the merge does
//! with it, see [`SyncedDirectory::merge`]). Status for `/readyz` and Prometheus metrics
//! are kept here; the consumer is told through a callback whenever the directory it should
//! serve changes.

// Off the request path: the sync driver's own state.
#![allow(clippy::disallowed_types)]

use super::client::{Deadline, GraphClient};
use super::error::GraphError;
use super::mapping::ObjectCounts;
use super::merge::{merge, revision, MergeOptions, MergedDirectory};
use super::reader::read_directory;
use crate::config::{GraphConfig, OnStale};
use crate::directory::{DirectoryError, DirectoryFile};
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// Sync durations, from 10 ms to 5 min.
const SYNC_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// A good read of Graph's directory, and whether it is still fresh.
#[derive(Debug, Clone)]
pub struct SyncedDirectory {
    /// The directory as Graph describes it, before local overrides.
    pub graph: Arc<DirectoryFile>,
    pub counts: ObjectCounts,
    pub synced_at: SystemTime,
    /// Content hash of `graph`.
    pub revision: String,
    /// Older than `max_age`: every sync since failed.
    pub stale: bool,
    pub on_stale: OnStale,
}

impl SyncedDirectory {
    /// The directory to serve: this Graph directory with `local` on top (see
    /// [`super::merge`](mod@super::merge)); Graph-only entities are withheld when stale under
    /// `refuse_unvouched`.
    pub fn merge(&self, local: &DirectoryFile) -> Result<MergedDirectory, DirectoryError> {
        merge(&self.graph, local, self.merge_options())
    }

    /// How this directory merges: Graph-only entities withheld when it is stale under
    /// `refuse_unvouched`.
    pub fn merge_options(&self) -> MergeOptions {
        MergeOptions {
            withhold_graph_only: self.stale && self.on_stale == OnStale::RefuseUnvouched,
        }
    }
}

/// The sync's state, for `/readyz`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncStatus {
    /// A good directory exists (the gateway should not be ready before).
    pub ready: bool,
    /// The last good directory is older than `max_age`.
    pub stale: bool,
    pub on_stale: &'static str,
    pub last_success_unix: Option<u64>,
    /// Seconds since the last good sync.
    pub age_seconds: Option<u64>,
    pub last_attempt_unix: Option<u64>,
    /// Why the last sync failed; cleared by a good one.
    pub last_error: Option<String>,
    pub last_duration_ms: Option<u64>,
    /// Content hash of the last good Graph directory.
    pub revision: Option<String>,
    /// Objects read in the last good sync.
    pub objects: ObjectCounts,
    pub syncs_ok: u64,
    pub syncs_failed: u64,
    /// Throttled answers (429, 503) since start.
    pub throttled: u64,
    /// HTTP requests to Graph and the token endpoint since start.
    pub requests: u64,
}

/// The sync's Prometheus metrics; register them with [`SyncMetrics::register`].
pub struct SyncMetrics {
    syncs: IntCounterVec,
    duration: Histogram,
    objects: IntGaugeVec,
    age: IntGauge,
    stale: IntGauge,
    throttled: IntCounter,
}

#[derive(Default)]
struct DriverState {
    current: Option<Arc<SyncedDirectory>>,
    last_error: Option<String>,
    last_attempt: Option<SystemTime>,
    last_duration: Option<Duration>,
    syncs_ok: u64,
    syncs_failed: u64,
}

/// Reads the directory from Graph on a schedule.
pub struct SyncDriver {
    config: GraphConfig,
    client: GraphClient,
    state: Mutex<DriverState>,
    metrics: SyncMetrics,
}

fn on_stale_name(o: OnStale) -> &'static str {
    match o {
        OnStale::KeepServing => "keep_serving",
        OnStale::RefuseUnvouched => "refuse_unvouched",
    }
}

// === impl SyncMetrics ===

impl SyncMetrics {
    fn new() -> prometheus::Result<Self> {
        Ok(Self {
            syncs: IntCounterVec::new(
                Opts::new(
                    "agentgate_directory_syncs_total",
                    "Directory syncs from Microsoft Graph by result (ok, error).",
                ),
                &["result"],
            )?,
            duration: Histogram::with_opts(
                HistogramOpts::new(
                    "agentgate_directory_sync_seconds",
                    "Time one directory sync from Microsoft Graph took, failed ones included.",
                )
                .buckets(SYNC_BUCKETS.to_vec()),
            )?,
            objects: IntGaugeVec::new(
                Opts::new(
                    "agentgate_directory_objects",
                    "Objects in the last good Graph directory by kind.",
                ),
                &["kind"],
            )?,
            age: IntGauge::new(
                "agentgate_directory_age_seconds",
                "Seconds since the last good directory sync (-1: none yet).",
            )?,
            stale: IntGauge::new(
                "agentgate_directory_stale",
                "1 when the last good directory is older than max_age.",
            )?,
            throttled: IntCounter::new(
                "agentgate_graph_throttled_total",
                "Microsoft Graph and token endpoint answers that throttled (429, 503).",
            )?,
        })
    }

    /// Every metric, to register once.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.syncs.clone()),
            Box::new(self.duration.clone()),
            Box::new(self.objects.clone()),
            Box::new(self.age.clone()),
            Box::new(self.stale.clone()),
            Box::new(self.throttled.clone()),
        ]
    }

    /// Adds every metric to `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        self.collectors()
            .into_iter()
            .try_for_each(|c| registry.register(c))
    }

    /// Brings the gauges up to date with `status` (call before rendering).
    pub fn observe(&self, status: &SyncStatus) {
        self.age.set(
            status
                .age_seconds
                .map_or(-1, |a| a.min(i64::MAX as u64) as i64),
        );
        self.stale.set(i64::from(status.stale));
        let o = status.objects;
        for (kind, n) in [
            ("blueprints", o.blueprints),
            ("agents", o.agents),
            ("agent_users", o.agent_users),
            ("risky_agents", o.risky_agents),
        ] {
            self.objects.with_label_values(&[kind]).set(n as i64);
        }
        self.throttled
            .inc_by(status.throttled.saturating_sub(self.throttled.get()));
    }
}

// === impl SyncDriver ===

impl SyncDriver {
    /// Builds the driver (and its Graph client: credential and trust roots are loaded now).
    pub fn new(config: &GraphConfig) -> Result<Self, GraphError> {
        Ok(Self {
            client: GraphClient::new(config)?,
            config: config.clone(),
            state: Mutex::new(DriverState::default()),
            metrics: SyncMetrics::new().map_err(|e| GraphError::Metrics(e.to_string()))?,
        })
    }

    pub fn metrics(&self) -> &SyncMetrics {
        &self.metrics
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DriverState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The directory to serve now, if a sync ever succeeded.
    pub fn current(&self) -> Option<Arc<SyncedDirectory>> {
        self.lock().current.clone()
    }

    /// The sync's state now.
    pub fn status(&self) -> SyncStatus {
        let s = self.lock();
        let now = crate::clock::now();
        let current = s.current.as_deref();
        SyncStatus {
            ready: current.is_some(),
            stale: current.is_some_and(|c| c.stale),
            on_stale: on_stale_name(self.config.on_stale),
            last_success_unix: current.map(|c| crate::clock::unix_secs(c.synced_at)),
            age_seconds: current
                .map(|c| now.duration_since(c.synced_at).map_or(0, |d| d.as_secs())),
            last_attempt_unix: s.last_attempt.map(crate::clock::unix_secs),
            last_error: s.last_error.clone(),
            last_duration_ms: s.last_duration.map(|d| d.as_millis() as u64),
            revision: current.map(|c| c.revision.clone()),
            objects: current.map(|c| c.counts).unwrap_or_default(),
            syncs_ok: s.syncs_ok,
            syncs_failed: s.syncs_failed,
            throttled: self.client.throttled_total(),
            requests: self.client.requests_total(),
        }
    }

    /// One sync now. On success the result becomes the current directory and is returned
    /// with `true` when it differs from the one before (content or freshness); on failure
    /// the current directory stays.
    pub async fn sync_once(&self) -> Result<(Arc<SyncedDirectory>, bool), GraphError> {
        let started = Instant::now();
        let attempt_at = crate::clock::now();
        let result = read_directory(
            &self.client,
            &self.config.tenant,
            self.config.read_risk,
            Deadline::after(self.config.sync_timeout),
        )
        .await
        .and_then(|graph| {
            // Mapping keeps ids and links sound; checked again so nothing unvalidated serves.
            let problems = graph.file.problems();
            if problems.is_empty() {
                Ok(graph)
            } else {
                Err(GraphError::Mapping { problems })
            }
        });
        let elapsed = started.elapsed();
        self.metrics.duration.observe(elapsed.as_secs_f64());
        let mut s = self.lock();
        s.last_attempt = Some(attempt_at);
        s.last_duration = Some(elapsed);
        match result {
            Ok(graph) => {
                s.syncs_ok += 1;
                s.last_error = None;
                self.metrics.syncs.with_label_values(&["ok"]).inc();
                let synced = Arc::new(SyncedDirectory {
                    revision: revision(&graph.file),
                    graph: Arc::new(graph.file),
                    counts: graph.counts,
                    synced_at: attempt_at,
                    stale: false,
                    on_stale: self.config.on_stale,
                });
                let changed = s
                    .current
                    .as_ref()
                    .is_none_or(|c| c.stale || c.revision != synced.revision);
                tracing::info!(
                    revision = %synced.revision,
                    changed,
                    blueprints = synced.counts.blueprints,
                    agents = synced.counts.agents,
                    agent_users = synced.counts.agent_users,
                    risky_agents = synced.counts.risky_agents,
                    ms = elapsed.as_millis() as u64,
                    "directory synced from Microsoft Graph"
                );
                s.current = Some(synced.clone());
                Ok((synced, changed))
            }
            Err(e) => {
                s.syncs_failed += 1;
                s.last_error = Some(e.to_string());
                self.metrics.syncs.with_label_values(&["error"]).inc();
                tracing::warn!(error = %e, ms = elapsed.as_millis() as u64, "directory sync from Microsoft Graph failed; the last good directory keeps serving");
                Err(e)
            }
        }
    }

    /// When the current directory just passed `max_age`: marks it stale and returns it.
    fn turn_stale(&self, now: SystemTime) -> Option<Arc<SyncedDirectory>> {
        let mut s = self.lock();
        let current = s.current.as_ref()?;
        let age = now.duration_since(current.synced_at).unwrap_or_default();
        if current.stale || age < self.config.max_age {
            return None;
        }
        let stale = Arc::new(SyncedDirectory {
            stale: true,
            ..(**current).clone()
        });
        tracing::warn!(
            age_seconds = age.as_secs(),
            on_stale = on_stale_name(self.config.on_stale),
            "the directory from Microsoft Graph is stale"
        );
        s.current = Some(stale.clone());
        Some(stale)
    }

    /// When the current directory turns stale, if it is still fresh.
    fn stale_at(&self) -> Option<Instant> {
        let s = self.lock();
        let current = s.current.as_ref().filter(|c| !c.stale)?;
        let age = crate::clock::now()
            .duration_since(current.synced_at)
            .unwrap_or_default();
        Some(Instant::now() + self.config.max_age.saturating_sub(age))
    }

    /// Syncs now and then every `interval` until `shutdown` turns true (or its sender is
    /// dropped). `on_directory` gets the directory to serve each time it changes: a sync
    /// that read something new, or the last good one turning stale.
    pub async fn run<F>(&self, mut shutdown: watch::Receiver<bool>, on_directory: F)
    where
        F: Fn(Arc<SyncedDirectory>) + Send + Sync,
    {
        tracing::info!(
            tenant = %self.config.tenant,
            credential = %self.client.describe_credential(),
            interval_s = self.config.interval.as_secs(),
            "directory sync from Microsoft Graph started"
        );
        let mut next_sync = Instant::now();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let wake = self.stale_at().map_or(next_sync, |s| s.min(next_sync));
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() { return; }
                    continue;
                }
            }
            if Instant::now() >= next_sync {
                next_sync = Instant::now() + self.config.interval;
                let result = tokio::select! {
                    r = self.sync_once() => r,
                    _ = shutdown.changed() => return,
                };
                if let Ok((synced, true)) = result {
                    on_directory(synced);
                }
            }
            if let Some(stale) = self.turn_stale(crate::clock::now()) {
                on_directory(stale);
            }
        }
    }
}
