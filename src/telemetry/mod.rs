//! Observability: Prometheus metrics and the decision log.
//!
//! Label values come from closed sets (route ids, caller kinds, reason codes, directory
//! blueprints or `unknown`); tokens, agent ids, users and paths never become labels.

pub mod decision_log;
pub mod metrics;

pub use decision_log::{DecisionLog, DecisionRecord, ShadowRecord};
pub use metrics::Metrics;

/// Libraries whose debug and trace output shows raw request or response headers or bodies
/// (pingora's HTTP layers print whole headers, `Authorization` included; the HTTP clients
/// print their own requests, bearer credentials included). Whatever `RUST_LOG` asks, they
/// log at `info` at most, so no log level ever shows a token.
pub const CLAMPED_TARGETS: &[&str] = &[
    "pingora",
    "pingora_core",
    "pingora_proxy",
    "pingora_http",
    "pingora_cache",
    "h2",
    "hyper",
    "hyper_util",
    "reqwest",
    "rustls",
];

/// Operational logs to stderr, filtered by `RUST_LOG` (default `info`) with
/// [`CLAMPED_TARGETS`] held at `info`. Decision logs go to stdout separately (see
/// [`DecisionLog`]).
pub fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let requested = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let most_verbose = requested.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let clamp = CLAMPED_TARGETS.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |t, target| t.with_target(*target, LevelFilter::INFO),
    );
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(requested)
        .with_filter(clamp);
    let _ = tracing_subscriber::registry().with(layer).try_init();
    // try_init forwards the `log` crate's records (pingora logs through it) into tracing at
    // every level; a record more verbose than any filter passes would be built, forwarded
    // and dropped on every request. The `log` macros skip it themselves below this level.
    log::set_max_level(log_level(most_verbose));
}

/// The `log` crate's level for a tracing level filter.
fn log_level(filter: tracing_subscriber::filter::LevelFilter) -> log::LevelFilter {
    use tracing_subscriber::filter::LevelFilter;
    match filter {
        LevelFilter::OFF => log::LevelFilter::Off,
        LevelFilter::ERROR => log::LevelFilter::Error,
        LevelFilter::WARN => log::LevelFilter::Warn,
        LevelFilter::INFO => log::LevelFilter::Info,
        LevelFilter::DEBUG => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}
