//! Observability: Prometheus metrics and the decision log.
//!
//! Label values come from closed sets (route ids, caller kinds, reason codes, directory
//! blueprints or `unknown`); tokens, agent ids, users and paths never become labels.

pub mod decision_log;
pub mod metrics;

pub use decision_log::{DecisionLog, DecisionRecord, ShadowRecord};
pub use metrics::Metrics;

/// Operational logs to stderr, filtered by `RUST_LOG` (default `info`). Decision logs go to
/// stdout separately (see [`DecisionLog`]).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
