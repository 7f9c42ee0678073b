//! The sources a serving gateway polls besides its own files: the policy bundle
//! (`[policy.bundle]`) and the directory from Microsoft Graph (`[directory.graph]`).
//!
//! Each runs as a background service that hands what it got to the [`Reloader`], which
//! builds, tests and swaps in a whole snapshot with it, or keeps the last good one. The
//! first bundle is fetched before the gateway starts: without it there is no policy set to
//! enforce, so a gateway whose bundle cannot be read does not start. The Graph directory is
//! read in the background from the start; until a first sync succeeds the gateway serves
//! its local directory file alone (callers Graph would vouch for are unknown, so refused)
//! and `/readyz` answers 503.

use crate::bundle::source::{ApplyBundle, BundleSource, BundleStatus, PollOutcome, SourceError};
use crate::bundle::LoadedBundle;
use crate::config::Config;
use crate::graph::{GraphError, SyncDriver, SyncStatus, SyncedDirectory};
use crate::reload::{Feeds, Reloader};
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts};
use std::sync::Arc;

/// Why a configured source could not be set up, or the first bundle not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceSetupError {
    #[error("[policy.bundle]: {0}")]
    BundleSetup(#[from] crate::bundle::source::SetupError),
    #[error("the first policy bundle from {source_shown} could not be loaded, so there is no policy set to serve: {error}")]
    FirstBundle {
        source_shown: String,
        error: SourceError,
    },
    #[error("[directory.graph]: {0}")]
    Graph(#[from] GraphError),
    #[error("failed to start the async runtime for the first bundle fetch")]
    Runtime(#[source] std::io::Error),
}

/// The configured outside sources, and their metrics.
pub struct Sources {
    pub bundle: Option<Arc<BundleSource>>,
    pub graph: Option<Arc<SyncDriver>>,
    bundle_polls: IntCounterVec,
    bundle_last_success: IntGauge,
    bundle_revision: IntGaugeVec,
}

impl Sources {
    /// Sets up the configured sources and reads the first bundle; returns the feeds of the
    /// first snapshot.
    pub fn start(config: &Config) -> Result<(Self, Feeds), SourceSetupError> {
        let mut feeds = Feeds::default();
        let bundle = match &config.policy.bundle {
            Some(bundle_config) => {
                let source = Arc::new(BundleSource::new(bundle_config)?);
                feeds.bundle = Some(first_bundle(&source)?);
                Some(source)
            }
            None => None,
        };
        let graph = match &config.directory.graph {
            Some(graph_config) => Some(Arc::new(SyncDriver::new(graph_config)?)),
            None => None,
        };
        let sources = Self {
            bundle,
            graph,
            bundle_polls: IntCounterVec::new(
                Opts::new(
                    "agentgate_bundle_polls_total",
                    "Policy bundle polls by result: updated, unchanged, fetch_error, rejected.",
                ),
                &["result"],
            )
            .map_err(|e| GraphError::Metrics(e.to_string()))?,
            bundle_revision: IntGaugeVec::new(
                Opts::new(
                    "agentgate_bundle_revision_info",
                    "The manifest revision of the policy bundle in force; value 1.",
                ),
                &["revision"],
            )
            .map_err(|e| GraphError::Metrics(e.to_string()))?,
            bundle_last_success: IntGauge::new(
                "agentgate_bundle_last_success_timestamp_seconds",
                "Unix time of the last poll that ended with a good bundle in force (0: never).",
            )
            .map_err(|e| GraphError::Metrics(e.to_string()))?,
        };
        Ok((sources, feeds))
    }

    /// The metrics of the configured sources, to register once.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        let mut all: Vec<Box<dyn prometheus::core::Collector>> = Vec::new();
        if self.bundle.is_some() {
            all.push(Box::new(self.bundle_polls.clone()));
            all.push(Box::new(self.bundle_last_success.clone()));
            all.push(Box::new(self.bundle_revision.clone()));
        }
        if let Some(graph) = &self.graph {
            all.extend(graph.metrics().collectors());
        }
        all
    }

    /// Brings the metrics up to date (before rendering them).
    pub fn observe(&self) {
        if let Some(bundle) = &self.bundle {
            let counts = bundle.counts();
            for (result, total) in [
                ("updated", counts.updated),
                ("unchanged", counts.unchanged),
                ("fetch_error", counts.fetch_errors),
                ("rejected", counts.rejected),
            ] {
                let c = self.bundle_polls.with_label_values(&[result]);
                c.inc_by(total.saturating_sub(c.get()));
            }
            let status = bundle.status();
            self.bundle_last_success
                .set(status.last_success_unix.unwrap_or(0) as i64);
            self.bundle_revision.reset();
            if let Some(revision) = &status.revision {
                self.bundle_revision.with_label_values(&[revision]).set(1);
            }
        }
        if let Some(graph) = &self.graph {
            graph.metrics().observe(&graph.status());
        }
    }

    /// The bundle's state, when one is configured.
    pub fn bundle_status(&self) -> Option<Arc<BundleStatus>> {
        self.bundle.as_ref().map(|b| b.status())
    }

    /// The Graph sync's state, when one is configured.
    pub fn graph_status(&self) -> Option<SyncStatus> {
        self.graph.as_ref().map(|g| g.status())
    }

    /// Adds the background services that keep the sources flowing into `reloader`.
    pub fn add_services(&self, server: &mut Server, reloader: &Arc<Reloader>) {
        if let Some(source) = &self.bundle {
            server.add_service(background_service(
                "policy bundle",
                BundlePolling {
                    source: source.clone(),
                    reloader: reloader.clone(),
                },
            ));
        }
        if let Some(driver) = &self.graph {
            server.add_service(background_service(
                "directory sync",
                GraphSync {
                    driver: driver.clone(),
                    reloader: reloader.clone(),
                },
            ));
        }
    }
}

/// Polls the bundle once, now, and returns it checked (its Rego is compiled and tested when
/// the first snapshot is built).
fn first_bundle(source: &BundleSource) -> Result<Arc<LoadedBundle>, SourceSetupError> {
    let slot = Arc::new(ArcSwapOption::<LoadedBundle>::empty());
    let keep = slot.clone();
    let apply: Arc<ApplyBundle> = Arc::new(move |bundle| {
        keep.store(Some(Arc::new(bundle)));
        Ok(())
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SourceSetupError::Runtime)?;
    let failed = |error| SourceSetupError::FirstBundle {
        source_shown: source.status().source.clone(),
        error,
    };
    match runtime.block_on(source.poll(&apply)) {
        PollOutcome::Failed(e) => Err(failed(e)),
        PollOutcome::Updated { .. } | PollOutcome::Unchanged => slot.load_full().ok_or_else(|| {
            failed(SourceError::Fetch(
                "the first poll applied no bundle".into(),
            ))
        }),
    }
}

/// Polls the bundle every interval; a new one goes through a whole reload.
struct BundlePolling {
    source: Arc<BundleSource>,
    reloader: Arc<Reloader>,
}

#[async_trait]
impl BackgroundService for BundlePolling {
    async fn start(&self, shutdown: ShutdownWatch) {
        let reloader = self.reloader.clone();
        let apply: Arc<ApplyBundle> = Arc::new(move |bundle| {
            reloader
                .reload_fed("bundle", |feeds| feeds.bundle = Some(Arc::new(bundle)))
                .map(drop)
                .map_err(|e| e.to_string())
        });
        self.source.run(apply, shutdown).await;
    }
}

/// Syncs the directory from Graph every interval; a changed directory goes through a whole
/// reload. Reloads run one at a time and only the newest directory is applied.
struct GraphSync {
    driver: Arc<SyncDriver>,
    reloader: Arc<Reloader>,
}

#[async_trait]
impl BackgroundService for GraphSync {
    async fn start(&self, shutdown: ShutdownWatch) {
        let (newest, mut changes) = tokio::sync::watch::channel(None::<Arc<SyncedDirectory>>);
        let sync = self.driver.run(shutdown, move |directory| {
            newest.send_replace(Some(directory));
        });
        let apply = async {
            while changes.changed().await.is_ok() {
                let Some(directory) = changes.borrow_and_update().clone() else {
                    continue;
                };
                let reloader = self.reloader.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    reloader.reload_fed("graph", |feeds| feeds.graph = Some(directory))
                })
                .await;
            }
        };
        tokio::select! {
            _ = sync => {}
            _ = apply => {}
        }
    }
}
