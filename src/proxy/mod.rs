//! The proxy process: wiring config, keys, policy and pingora services together.

pub mod admin;
pub mod admission;
mod context;
pub mod deadline;
pub mod decision_id;
pub mod gateway;
pub mod headers;
pub mod listening;
pub mod proxy_protocol;
mod record;
pub mod respond;
pub mod shutdown;
pub mod sources;
pub mod streams;

use crate::authorize::Authorizer;
use crate::config::{Config, ListenerConfig};
use crate::identity::{KeyStore, TokenValidator};
use crate::policy::TestLimits;
use crate::reload::{build_snapshot, ready_to_serve, Feeds, ReloadError, ShadowFallback};
use crate::snapshot::Live;
use crate::telemetry::{DecisionLog, Metrics};
use async_trait::async_trait;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::sync::Arc;

/// Once the grace period for requests in flight is over, how long the runtimes get to
/// finish blocking work (a policy compile) before the process exits anyway.
const RUNTIME_EXIT_TIMEOUT_S: u64 = 1;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(transparent)]
    Snapshot(#[from] ReloadError),
    #[error(transparent)]
    Keys(#[from] crate::identity::keys::KeyStoreError),
    #[error("failed to register metrics")]
    Metrics(#[from] prometheus::Error),
    #[error("failed to open the decision log")]
    DecisionLog(#[source] std::io::Error),
    #[error(transparent)]
    AdminToken(admin::AdminTokenError),
    #[error("TLS setup failed")]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Sources(#[from] sources::SourceSetupError),
    #[error("a listener's address stayed in use, so the gateway stopped (see the log)")]
    Listen,
}

/// Process options from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Take over the listening sockets of a running instance.
    pub upgrade: bool,
    /// Detach into the background.
    pub daemon: bool,
}

/// The long-lived parts shared by the services.
pub struct Parts {
    pub authorizer: Arc<Authorizer>,
    pub keys: Arc<KeyStore>,
    pub metrics: Arc<Metrics>,
    /// The snapshot in force: routes, policy set, shadow set.
    pub live: Arc<Live>,
    /// Open connections per listener and client, against the configured caps.
    pub connections: Arc<admission::ConnectionCounts>,
    /// The policy bundle and the Graph directory, when configured.
    pub sources: Arc<sources::Sources>,
    /// What the first snapshot was built from.
    pub feeds: Feeds,
    /// The public listeners to open.
    pub listeners: Vec<ListenerConfig>,
}

/// Builds the decision pipeline from the configuration, to serve on `listeners`: the
/// configured ones, plus any the caller adds (no proxy socket opened; the first policy
/// bundle, when configured, is fetched).
pub fn build_parts(config: &Config, listeners: Vec<ListenerConfig>) -> Result<Parts, StartError> {
    let (sources, feeds) = sources::Sources::start(config)?;
    let built = build_snapshot(
        config,
        TestLimits::per_test(config.policy.test_timeout),
        ShadowFallback::Refuse,
        &feeds,
    )?;
    let snapshot = ready_to_serve(built.snapshot, None, config);
    match &feeds.bundle {
        Some(b) => {
            tracing::info!(revision = %snapshot.policy.revision, bundle_revision = %b.manifest.revision, "policy set loaded from the bundle")
        }
        None => {
            tracing::info!(revision = %snapshot.policy.revision, dir = %config.policy.dir.display(), "policy set loaded")
        }
    }
    if let Some(shadow) = &snapshot.shadow {
        tracing::info!(revision = %shadow.snapshot.revision, "shadow policy set loaded");
    }
    let keys = Arc::new(KeyStore::new(&config.identity)?);
    let validator = TokenValidator::new(keys.clone(), &config.identity);
    let authorizer = Arc::new(Authorizer::new(
        validator,
        &config.identity,
        &config.token_cache,
        &config.policy,
    ));
    Ok(Parts {
        authorizer,
        keys,
        metrics: Arc::new(Metrics::new()?),
        live: Arc::new(Live::new(snapshot)),
        sources: Arc::new(sources),
        feeds,
        connections: Arc::new(admission::ConnectionCounts::new(
            &listeners.iter().map(|l| l.address).collect::<Vec<_>>(),
            admission::ConnectionLimits {
                per_listener: config.server.max_connections,
                per_client: config.server.max_connections_per_client,
                exempt: config.server.trusted_proxies.clone(),
            },
        )),
        listeners,
    })
}

/// HTTP/2 limits: the header list as large as an HTTP/1.1 header block may be (the `h2`
/// crate ends a CONTINUATION flood past it with GOAWAY), the configured concurrent streams, and few pending or
/// locally caused resets (rapid reset, CVE-2023-44487: a client that keeps resetting
/// streams is sent GOAWAY).
fn h2_options(
    server: &crate::config::ServerSettings,
) -> pingora::protocols::http::v2::server::H2Options {
    let mut options = pingora::protocols::http::v2::server::H2Options::default();
    options
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(server.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(Some(64));
    options
}

/// The PROXY protocol listeners among `listeners`, TLS ones or plain ones.
fn proxy_protocol(
    config: &Config,
    listeners: &[ListenerConfig],
    tls: bool,
) -> proxy_protocol::ProxyProtocol {
    proxy_protocol::ProxyProtocol::new(
        listeners
            .iter()
            .filter(|l| l.proxy_protocol && l.tls.is_some() == tls)
            .map(|l| l.address)
            .collect(),
        config.server.trusted_proxies.clone(),
        config.server.header_read_timeout,
    )
}

struct KeyRefresh(Arc<KeyStore>);

#[async_trait]
impl BackgroundService for crate::reload::ReloadTriggers {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.run(shutdown).await;
    }
}

#[async_trait]
impl BackgroundService for KeyRefresh {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.run_refresh(shutdown).await;
    }
}

/// Starts the gateway with `parts` and serves until a signal shuts it down (then returns).
pub fn run(config: &Config, opts: RunOptions, parts: Parts) -> Result<(), StartError> {
    // Before pingora builds its upstream connector, which would install its own default.
    crate::crypto::install_default_provider();
    let reloader = Arc::new(crate::reload::Reloader::new(
        config.clone(),
        parts.feeds.clone(),
        parts.live.clone(),
        parts.metrics.clone(),
    ));
    let decision_log = Arc::new(DecisionLog::open(&config.log).map_err(StartError::DecisionLog)?);

    // pingora's grace period starts when accepting stops: it is the time requests in
    // flight get. Ours (accepting on after SIGTERM) runs before it, in `shutdown::Signals`.
    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.graceful_shutdown_timeout.as_secs()),
        graceful_shutdown_timeout_seconds: Some(RUNTIME_EXIT_TIMEOUT_S),
        pid_file: config.server.pid_file.clone(),
        upgrade_sock: config.server.upgrade_sock.clone(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: opts.upgrade,
        daemon: opts.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    let draining = Arc::new(shutdown::Draining::default());
    let listening = Arc::new(listening::Listening::default());
    server.bootstrap();

    let ids = Arc::new(decision_id::DecisionIds::new());
    let streams = Arc::new(streams::OpenStreams::default());
    let gateway = gateway::Gateway {
        live: parts.live.clone(),
        authorizer: parts.authorizer.clone(),
        metrics: parts.metrics.clone(),
        decision_log: decision_log.clone(),
        ids: ids.clone(),
        limits: gateway::RequestLimits::from_config(&config.server),
        trusted_proxies: config.server.trusted_proxies.clone(),
        streams: streams.clone(),
        draining: draining.clone(),
    };
    let mut http = pingora::proxy::HttpProxy::new(gateway, server.configuration.clone());
    http.handle_init_modules();
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2c = config.server.h2c;
    options.h2_idle_timeout = config.server.h2_idle_timeout;
    http.server_options = Some(options);
    http.h2_options = Some(h2_options(&config.server));
    let mut proxy = Service::new(
        "agentgate".to_string(),
        admission::Admission {
            inner: Arc::new(http),
            header_deadline: config.server.header_read_timeout,
            counts: parts.connections.clone(),
            metrics: parts.metrics.clone(),
            ids,
            proxy_protocol: proxy_protocol(config, &parts.listeners, false),
        },
    );
    let (tls, tls_metrics) = crate::tls::listener::load_all(&parts.listeners)?;
    for c in tls_metrics
        .collectors()
        .into_iter()
        .chain(parts.sources.collectors())
    {
        parts.metrics.register(c)?;
    }
    for l in &parts.listeners {
        match tls.iter().find(|t| t.address() == l.address) {
            Some(t) => proxy.add_tls_with_settings(&l.address.to_string(), None, t.settings()?),
            None => proxy.add_tcp(&l.address.to_string()),
        }
    }
    if parts
        .listeners
        .iter()
        .any(|l| l.proxy_protocol && l.tls.is_some())
    {
        // pingora calls it for every TLS listener of the service; it reads only where
        // the listener expects a header.
        proxy
            .endpoints()
            .set_pre_tls_callback(Arc::new(proxy_protocol::PreTlsProxyHeader(proxy_protocol(
                config,
                &parts.listeners,
                true,
            ))));
    }
    let mut admin = Service::new(
        "agentgate admin".to_string(),
        admin::Admin {
            live: parts.live.clone(),
            authorizer: parts.authorizer.clone(),
            metrics: parts.metrics.clone(),
            reloader: reloader.clone(),
            connections: parts.connections.clone(),
            sources: parts.sources.clone(),
            decision_log,
            access: admin::AdminAccess::load(&config.admin).map_err(StartError::AdminToken)?,
            draining: draining.clone(),
            listening: listening.clone(),
        },
    );
    admin.add_tcp(&config.admin.address.to_string());

    let proxy_addresses = parts.listeners.iter().map(|l| l.address.to_string());
    server.add_service(listening.watch(proxy, proxy_addresses.collect()));
    server.add_service(listening.watch(admin, vec![config.admin.address.to_string()]));
    server.add_service(background_service("signing keys", KeyRefresh(parts.keys)));
    server.add_service(background_service(
        "stream guard",
        streams::StreamGuard {
            streams,
            live: parts.live.clone(),
            authorizer: parts.authorizer.clone(),
            metrics: parts.metrics.clone(),
        },
    ));
    server.add_service(background_service(
        "tls certificates",
        crate::tls::CertificateReloader::new(tls),
    ));
    parts.sources.add_services(&mut server, &reloader);
    server.add_service(background_service(
        "reload",
        crate::reload::ReloadTriggers {
            reloader,
            watch: config.reload.watch,
            debounce: config.reload.debounce,
        },
    ));
    for l in &parts.listeners {
        tracing::info!(address = %l.address, tls = l.tls.is_some(), proxy_protocol = l.proxy_protocol, "proxy listener configured");
    }
    tracing::info!(address = %config.admin.address, "admin listener configured (/healthz /readyz /metrics)");
    // Returns, rather than exiting here, so the caller drops what it holds on the way out
    // (the demo's temporary certificate directory).
    server.run(RunArgs {
        shutdown_signal: Box::new(shutdown::Signals {
            grace_period: config.server.grace_period,
            draining,
            listening: listening.clone(),
        }),
    });
    match listening.has_failed() {
        true => Err(StartError::Listen),
        false => Ok(()),
    }
}
