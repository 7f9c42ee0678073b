//! The validated, typed configuration.
//!
//! Loading happens in two stages: [`raw`] mirrors the TOML file, and [`Config::from_raw`]
//! resolves it into ready-to-use values (socket addresses, algorithms, header names, absolute
//! paths), collecting every problem so an operator sees them all at once. Relative paths in the
//! file are resolved against the file's own directory.

mod error;
mod graph;
pub mod raw;
mod tls;

pub use error::ConfigError;
pub use graph::{DirectoryConfig, GraphConfig, GraphCredential};
pub use raw::{ClientAuth, OnStale, PolicyEngine};
pub use tls::{CertificateFiles, ListenerConfig, ListenerTlsConfig, UpstreamTlsConfig};

use crate::entra::{is_exchange_audience, Issuers};
use crate::guid::is_guid;
use crate::request::client::TrustedProxies;
use http::HeaderName;
use ipnet::IpNet;
use jsonwebtoken::Algorithm;
use raw::RawConfig;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Everything the gateway needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    pub server: ServerSettings,
    /// Public listeners.
    pub listeners: Vec<ListenerConfig>,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics`, `/reload`.
    pub admin: AdminConfig,
    pub identity: IdentityConfig,
    pub token_cache: TokenCacheConfig,
    pub policy: PolicyConfig,
    pub routes: Vec<RouteConfig>,
    pub reload: ReloadConfig,
    pub log: LogConfig,
    pub shadow: Option<ShadowConfig>,
    pub dev: Option<DevConfig>,
    pub directory: DirectoryConfig,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// A file holding the bearer token `/metrics`, `/reload` and the details of `/readyz`
    /// require; required when `address` is not a loopback address.
    pub token_file: Option<PathBuf>,
    /// Host names admin requests may carry besides IP literals and `localhost` (against DNS
    /// rebinding), lower-case.
    pub allowed_hosts: Vec<String>,
}

/// How edits are picked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Watch the policy directory and the configuration file.
    pub watch: bool,
    /// Quiet time after the last change before reloading.
    pub debounce: Duration,
    /// The longest a reload may take (reading, compiling, every Rego test); past it the
    /// reload fails and the previous set keeps serving.
    pub timeout: Duration,
}

/// Where decision logs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
}

/// The decision log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub decisions: LogTarget,
    /// Fraction of allowed decisions logged, 0 to 1; denies are always logged.
    pub allow_sample_rate: f64,
    /// Bytes of records waiting for the writer; beyond it records are dropped and counted.
    pub max_queue_bytes: usize,
}

/// A candidate policy set evaluated beside the enforced one without affecting outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowConfig {
    pub dir: PathBuf,
    /// Only these blueprints' traffic; empty means all traffic.
    pub blueprints: Vec<String>,
}

/// Process-level settings handed to pingora.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub threads: usize,
    /// After SIGTERM, how long the listeners keep accepting (with `/readyz` at 503).
    pub grace_period: Duration,
    /// Once accepting stopped (SIGTERM or upgrade), how long requests in flight get.
    pub graceful_shutdown_timeout: Duration,
    pub pid_file: String,
    pub upgrade_sock: String,
    /// Largest request header block accepted (names plus values); larger gets 431.
    pub max_header_bytes: usize,
    /// Longest request target accepted (path and query); longer gets 414.
    pub max_uri_bytes: usize,
    /// Requests served on one keep-alive connection before it is closed.
    pub max_requests_per_connection: u32,
    /// Time a client has to send a request's complete header block (against slowloris).
    pub header_read_timeout: Duration,
    /// Open connections per listener; more are refused (`0`: no cap).
    pub max_connections: usize,
    /// Open connections per client address; more are refused (`0`: no cap). Trusted
    /// proxies are exempt: each carries many clients.
    pub max_connections_per_client: usize,
    /// Proxies (load balancers) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// Accept HTTP/2 with prior knowledge (h2c) on plain-text listeners; TLS listeners
    /// offer `h2` by ALPN regardless.
    pub h2c: bool,
    /// Concurrent HTTP/2 streams a client may open on one connection.
    pub h2_max_concurrent_streams: u32,
    /// How long an HTTP/2 connection may stay without an open stream (a header block
    /// still arriving is none) before it is closed; `None`: no limit.
    pub h2_idle_timeout: Option<Duration>,
}

/// Token validation and signing-key settings.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityConfig {
    /// The issuer forms tokens must carry (from `cloud`, or set host by host).
    pub issuers: Issuers,
    /// Extra trust roots (PEM) for discovery and JWKS fetches, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Signature algorithms accepted in the token header.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Largest `Authorization` value examined at all.
    pub max_token_bytes: usize,
    pub refresh_interval: Duration,
    /// Least time between two fetches of one tenant's keys triggered by unknown `kid`s.
    pub min_refetch_interval: Duration,
    /// How long the last good key set keeps serving while fetches fail.
    pub max_key_age: Duration,
    pub fetch_timeout: Duration,
    /// Cap on a discovery or JWKS response body.
    pub max_response_bytes: usize,
    pub tenants: Vec<TenantConfig>,
}

/// One trusted tenant and where its signing keys come from.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantConfig {
    /// Lower-case tenant GUID.
    pub id: String,
    pub keys: KeySource,
}

/// Where a tenant's signing keys are fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `{authority}/{tid}/v2.0/.well-known/openid-configuration`, then its `jwks_uri`.
    Discovery { authority: String },
    /// A JWKS document at a fixed address.
    Jwks { uri: String },
    /// A JWKS document on disk (air-gapped deployments, `agentgate eval --jwks`).
    File { path: PathBuf },
    /// A JWKS document held in memory (`agentgate eval` with the demo's dev key).
    Inline { jwks: serde_json::Value },
}

/// The verified-token cache.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenCacheConfig {
    pub enabled: bool,
    pub capacity: usize,
    pub max_ttl: Duration,
}

/// Policy files and evaluation limits.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// Directory holding `.rego` files and `data/*.json`.
    pub dir: PathBuf,
    /// Wall-clock budget of one evaluation.
    pub timeout: Duration,
    /// Wall-clock budget of one Rego unit test when a set is loaded or tested.
    pub test_timeout: Duration,
    /// Request headers copied into `input.request.headers`.
    pub input_headers: Vec<HeaderName>,
    /// `input.request.time_ns` is rounded down to a multiple of this.
    pub time_resolution: Duration,
    /// Decisions remembered per policy set (0: none).
    pub decision_cache: usize,
    pub engine: PolicyEngine,
    /// Load the policy set from a bundle instead of `dir`.
    pub bundle: Option<BundleConfig>,
}

/// `[policy.bundle]`: where a policy bundle comes from and how it is checked.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleConfig {
    pub location: BundleLocation,
    /// Time between two polls (at least 1 s).
    pub interval: Duration,
    /// Bound on one download, connection included.
    pub timeout: Duration,
    /// Largest bundle accepted, as transferred (compressed).
    pub max_bytes: u64,
    /// Sent with each download; read afresh each time, never logged.
    pub credential: Option<BundleCredential>,
    /// Bundles must be signed with this key when set.
    pub signing: Option<BundleSigning>,
}

/// Where a bundle is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleLocation {
    /// Downloaded with `If-None-Match`, so an unchanged bundle costs a 304.
    Url(String),
    /// Read from disk (a mounted volume, a file a sidecar keeps up to date).
    File(PathBuf),
}

/// A credential for the bundle server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleCredential {
    /// `Authorization: Bearer <token>`.
    Bearer(SecretSource),
    /// An Azure shared access signature, appended as the URL's query string.
    SasToken(SecretSource),
}

/// Where a secret is read from; the configuration never holds the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// The public key bundles must be signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSigning {
    /// A PEM public key.
    pub key_file: PathBuf,
    /// RS256 or ES256.
    pub alg: Algorithm,
}

/// One upstream API.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub id: String,
    /// Lower-case host names without port; empty means any host.
    pub hosts: Vec<String>,
    pub path_prefix: String,
    pub upstreams: Vec<SocketAddr>,
    /// Accepted `aud` values, without trailing slash.
    pub audiences: Vec<String>,
    pub forward_authorization: bool,
    /// Forward method and URL override headers (`X-HTTP-Method-Override`, `X-Original-URL`,
    /// ...), which are stripped otherwise.
    pub forward_override_headers: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// The largest request body forwarded, counted as it streams; `None`: no limit.
    pub max_body_bytes: Option<u64>,
    /// The longest a request may take, its response included; `None`: no limit.
    pub request_timeout: Option<Duration>,
    /// The upstreams speak HTTP/2 (ALPN `h2` over TLS, h2c over plain TCP).
    pub upstream_h2: bool,
    /// Refusals are gRPC-shaped and answers' `grpc-status` is counted.
    pub grpc: bool,
    /// WebSocket upgrades are forwarded; on other routes they are refused.
    pub websocket: bool,
    /// Set when the upstreams are `https://`.
    pub tls: Option<UpstreamTlsConfig>,
}

/// The offline demo: a dev issuer and a sample upstream started in process.
#[derive(Debug, Clone, PartialEq)]
pub struct DevConfig {
    pub issuer: SocketAddr,
    pub key: PathBuf,
    pub sample_upstream: Option<SocketAddr>,
    /// Where the demo's fake Microsoft Graph listens (plain HTTP), serving the policy
    /// directory's agents for `[directory.graph]` to sync.
    pub graph: Option<SocketAddr>,
    /// Where the demo's HTTPS listener listens, beside `[[listeners]]`: HTTP/1.1 and h2 by
    /// ALPN, with a certificate for `localhost` and `127.0.0.1` from a throwaway CA made
    /// at start. A loopback or wildcard address, since the demo's calls name `localhost`.
    pub tls_listener: Option<SocketAddr>,
}

/// The longest route prefix accepted, a guard against nonsense.
const MAX_PREFIX_LEN: usize = 1024;

/// The coarsest `policy.time_resolution`: policy may see the time this much early.
const MAX_TIME_RESOLUTION: Duration = Duration::from_secs(3600);

/// The most decisions a policy set may remember (about 3.4 GiB at ~3.4 KiB each).
const MAX_DECISION_CACHE: usize = 1 << 20;

// === impl Config ===

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validates `text` as if it had been read from `path` (relative paths resolve against
    /// the directory of `path`).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: parse_message(text, &e),
        })?;
        Self::from_raw(raw, path)
    }

    /// Resolves the raw file into typed values, collecting every problem.
    pub fn from_raw(raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut problems = Vec::new();

        let listeners = raw
            .listeners
            .iter()
            .enumerate()
            .filter_map(|(i, l)| tls::listener(l, i, &base, &mut problems))
            .collect::<Vec<_>>();
        if raw.listeners.is_empty() {
            problems.push("no [[listeners]]: add one, e.g. address = \"127.0.0.1:8080\"".into());
        }
        let admin = socket(&raw.admin.address, "admin.address", &mut problems).map(|address| {
            if !address.ip().is_loopback() && raw.admin.token_file.is_none() {
                problems.push(format!(
                    "admin.address {address} is not a loopback address: set admin.token_file (the bearer token /metrics, /reload and /readyz details then require) or bind it to 127.0.0.1"
                ));
            }
            AdminConfig {
                address,
                token_file: raw.admin.token_file.as_ref().map(|f| base.join(f)),
                allowed_hosts: raw
                    .admin
                    .allowed_hosts
                    .iter()
                    .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                    .collect(),
            }
        });

        let reach = graph::Reach {
            cloud: raw.identity.cloud,
            demo: raw.dev.is_some(),
        };
        let identity = identity(raw.identity, &base, raw.dev.is_some(), &mut problems);
        let policy = PolicyConfig {
            dir: base.join(&raw.policy.dir),
            timeout: raw.policy.timeout,
            test_timeout: raw.policy.test_timeout,
            input_headers: raw
                .policy
                .input_headers
                .iter()
                .filter_map(|h| input_header(h, &mut problems))
                .collect(),
            time_resolution: raw.policy.time_resolution,
            decision_cache: raw.policy.decision_cache,
            engine: raw.policy.engine,
            bundle: raw
                .policy
                .bundle
                .and_then(|b| bundle(b, &base, &mut problems)),
        };
        if raw.policy.timeout.is_zero() {
            problems.push("policy.timeout must be greater than zero".into());
        }
        if raw.policy.test_timeout.is_zero() {
            problems.push("policy.test_timeout must be greater than zero".into());
        }
        if raw.policy.time_resolution.is_zero() || raw.policy.time_resolution > MAX_TIME_RESOLUTION
        {
            problems.push(format!(
                "policy.time_resolution must be between 1ns and {}",
                humantime::format_duration(MAX_TIME_RESOLUTION)
            ));
        }
        if raw.policy.decision_cache > MAX_DECISION_CACHE {
            problems.push(format!(
                "policy.decision_cache must be at most {MAX_DECISION_CACHE} entries"
            ));
        }
        if raw.reload.timeout.is_zero() {
            problems.push("reload.timeout must be greater than zero".into());
        }
        if raw.token_cache.max_ttl > Duration::from_secs(60) {
            problems.push("token_cache.max_ttl must be at most 60s".into());
        }
        whole_seconds(
            "server.graceful_shutdown_timeout",
            raw.server.graceful_shutdown_timeout,
            &mut problems,
        );
        whole_seconds(
            "token_cache.max_ttl",
            raw.token_cache.max_ttl,
            &mut problems,
        );
        if raw.token_cache.enabled && raw.token_cache.capacity == 0 {
            problems
                .push("token_cache.capacity must be at least 1 (or set enabled = false)".into());
        }

        let mut routes = Vec::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            if let Some(route) = route(r, i, &base, &mut problems) {
                if routes.iter().any(|o: &RouteConfig| o.id == route.id) {
                    problems.push(format!("routes[{i}].id {:?} is used twice", route.id));
                }
                routes.push(route);
            }
        }
        if routes.is_empty() && problems.is_empty() {
            problems.push("no [[routes]]: add at least one route".into());
        }
        if raw.server.header_read_timeout.is_zero() {
            problems.push("server.header_read_timeout must be greater than zero".into());
        }
        if raw.server.h2_max_concurrent_streams == 0 {
            problems.push("server.h2_max_concurrent_streams must be at least 1".into());
        }
        if raw.server.max_uri_bytes < 256 {
            problems.push("server.max_uri_bytes must be at least 256".into());
        }
        if raw.server.max_requests_per_connection == 0 {
            problems.push("server.max_requests_per_connection must be at least 1".into());
        }
        if raw.server.threads == 0 {
            problems.push("server.threads must be at least 1".into());
        }

        if raw.log.max_queue_bytes < 64 * 1024 {
            problems.push("log.max_queue_bytes must be at least 65536".into());
        }
        if !(0.0..=1.0).contains(&raw.log.allow_sample_rate) {
            problems.push("log.allow_sample_rate must be between 0 and 1".into());
        }
        let log = LogConfig {
            decisions: match raw.log.decisions.as_str() {
                "stdout" | "-" => LogTarget::Stdout,
                file => LogTarget::File(base.join(file)),
            },
            allow_sample_rate: raw.log.allow_sample_rate,
            max_queue_bytes: raw.log.max_queue_bytes,
        };
        let shadow = raw.shadow.map(|s| {
            for b in &s.blueprints {
                if !is_guid(b) {
                    problems.push(format!(
                        "shadow.blueprints: {b:?} is not a blueprint app id"
                    ));
                }
            }
            ShadowConfig {
                dir: base.join(s.dir),
                blueprints: s
                    .blueprints
                    .iter()
                    .map(|b| b.to_ascii_lowercase())
                    .collect(),
            }
        });

        let directory = graph::directory(raw.directory, &base, reach, &mut problems);

        let dev = raw.dev.and_then(|d| {
            let issuer = socket(&d.issuer, "dev.issuer", &mut problems)?;
            let sample_upstream = match d.sample_upstream {
                Some(a) => Some(socket(&a, "dev.sample_upstream", &mut problems)?),
                None => None,
            };
            let graph = match d.graph {
                Some(a) => Some(socket(&a, "dev.graph", &mut problems)?),
                None => None,
            };
            let tls_listener = match d.tls_listener {
                Some(a) => Some(dev_tls_listener(&a, &listeners, &mut problems)?),
                None => None,
            };
            Some(DevConfig {
                issuer,
                key: base.join(d.key),
                sample_upstream,
                graph,
                tls_listener,
            })
        });

        let trusted_proxies = trusted_proxies(&raw.server.trusted_proxies, &mut problems);
        match (problems.is_empty(), admin) {
            (true, Some(admin)) => Ok(Config {
                path: path.to_path_buf(),
                server: ServerSettings {
                    threads: raw.server.threads,
                    grace_period: raw.server.grace_period,
                    graceful_shutdown_timeout: raw.server.graceful_shutdown_timeout,
                    pid_file: raw.server.pid_file,
                    upgrade_sock: raw.server.upgrade_sock,
                    max_header_bytes: raw.server.max_header_bytes,
                    max_uri_bytes: raw.server.max_uri_bytes,
                    max_requests_per_connection: raw.server.max_requests_per_connection,
                    header_read_timeout: raw.server.header_read_timeout,
                    max_connections: raw.server.max_connections,
                    max_connections_per_client: raw.server.max_connections_per_client,
                    trusted_proxies,
                    h2c: raw.server.h2c,
                    h2_max_concurrent_streams: raw.server.h2_max_concurrent_streams,
                    h2_idle_timeout: Some(raw.server.h2_idle_timeout).filter(|t| !t.is_zero()),
                },
                listeners,
                admin,
                identity,
                token_cache: TokenCacheConfig {
                    enabled: raw.token_cache.enabled,
                    capacity: raw.token_cache.capacity,
                    max_ttl: raw.token_cache.max_ttl,
                },
                policy,
                routes,
                reload: ReloadConfig {
                    watch: raw.reload.watch,
                    debounce: raw.reload.debounce,
                    timeout: raw.reload.timeout,
                },
                log,
                shadow,
                dev,
                directory,
            }),
            _ => Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            }),
        }
    }
}

/// `line:column: [key: ]message`, naming the key of the refused line but never quoting the
/// line itself as the TOML parser would: it may hold a secret typed where it does not belong
/// (`client_secret = "..."`).
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    let Some(span) = e.span() else {
        return message.to_string();
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let source_line = text[line_start..].lines().next().unwrap_or("");
    match source_line.split_once('=') {
        Some((key, _)) if !key.trim().is_empty() && !key.contains(['[', '"', '\'']) => {
            format!("{line}:{column}: {}: {message}", key.trim())
        }
        _ => format!("{line}:{column}: {message}"),
    }
}

/// `server.trusted_proxies`: CIDRs, or addresses (one host each).
fn trusted_proxies(values: &[String], problems: &mut Vec<String>) -> TrustedProxies {
    let networks = values
        .iter()
        .filter_map(|v| {
            let parsed = v
                .parse::<IpNet>()
                .or_else(|_| v.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => Some(net.trunc()),
                Err(_) => {
                    problems.push(format!(
                        "server.trusted_proxies: {v:?} is not a CIDR or an IP address (e.g. \"10.0.0.0/8\")"
                    ));
                    None
                }
            }
        })
        .collect();
    TrustedProxies::new(networks)
}

fn socket(value: &str, key: &str, problems: &mut Vec<String>) -> Option<SocketAddr> {
    match value.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => Some(addr),
        _ => {
            problems.push(format!(
                "{key} = {value:?} is not a host:port address (e.g. \"127.0.0.1:8080\")"
            ));
            None
        }
    }
}

/// `dev.tls_listener`: an address the demo's `https://localhost` calls reach, and not one of
/// `[[listeners]]`.
fn dev_tls_listener(
    value: &str,
    listeners: &[ListenerConfig],
    problems: &mut Vec<String>,
) -> Option<SocketAddr> {
    let addr = socket(value, "dev.tls_listener", problems)?;
    if !addr.ip().is_loopback() && !addr.ip().is_unspecified() {
        problems.push(format!(
            "dev.tls_listener = {value:?}: use a loopback or wildcard address (its certificate names localhost and 127.0.0.1)"
        ));
        return None;
    }
    if listeners.iter().any(|l| l.address == addr) {
        problems.push(format!(
            "dev.tls_listener = {value:?} is also a [[listeners]] address; give the demo's HTTPS listener a port of its own"
        ));
        return None;
    }
    Some(addr)
}

fn input_header(name: &str, problems: &mut Vec<String>) -> Option<HeaderName> {
    let lower = name.to_ascii_lowercase();
    if lower == "authorization" || lower.starts_with("x-agentgate-") || lower == "cookie" {
        problems.push(format!(
            "policy.input_headers: {name:?} must not reach policy (credentials and gateway headers are excluded)"
        ));
        return None;
    }
    match HeaderName::from_str(&lower) {
        Ok(h) => Some(h),
        Err(_) => {
            problems.push(format!(
                "policy.input_headers: {name:?} is not a header name"
            ));
            None
        }
    }
}

fn bundle(raw: raw::RawBundle, base: &Path, problems: &mut Vec<String>) -> Option<BundleConfig> {
    let before = problems.len();
    let location = match (raw.url, raw.file) {
        (Some(url), None) => {
            bundle_url(&url, problems);
            BundleLocation::Url(url)
        }
        (None, Some(file)) => BundleLocation::File(base.join(file)),
        _ => {
            problems.push("policy.bundle: set exactly one of url and file".into());
            BundleLocation::File(PathBuf::new())
        }
    };
    if raw.interval < Duration::from_secs(1) {
        problems.push("policy.bundle.interval must be at least 1s".into());
    }
    if raw.timeout.is_zero() {
        problems.push("policy.bundle.timeout must be greater than zero".into());
    }
    if raw.max_bytes < 1024 {
        problems.push("policy.bundle.max_bytes must be at least 1024".into());
    }
    let mut credentials: Vec<BundleCredential> = [
        raw.auth_token_file
            .map(|f| BundleCredential::Bearer(SecretSource::File(base.join(f)))),
        raw.auth_token_env
            .map(|v| BundleCredential::Bearer(SecretSource::Env(v))),
        raw.sas_token_file
            .map(|f| BundleCredential::SasToken(SecretSource::File(base.join(f)))),
        raw.sas_token_env
            .map(|v| BundleCredential::SasToken(SecretSource::Env(v))),
    ]
    .into_iter()
    .flatten()
    .collect();
    if credentials.len() > 1 {
        problems.push(
            "policy.bundle: set at most one of auth_token_file, auth_token_env, sas_token_file and sas_token_env"
                .into(),
        );
    }
    let credential = credentials.pop();
    match (&credential, &location) {
        (Some(_), BundleLocation::File(_)) => {
            problems.push("policy.bundle: a token only applies to a url, not to a file".into())
        }
        (Some(_), BundleLocation::Url(url)) if !credential_safe_over(url) => problems.push(
            "policy.bundle: a token is only sent over https (or http to a loopback address)".into(),
        ),
        _ => {}
    }
    if let Some(
        BundleCredential::Bearer(SecretSource::Env(v))
        | BundleCredential::SasToken(SecretSource::Env(v)),
    ) = &credential
    {
        if v.is_empty() {
            problems.push("policy.bundle: the token's environment variable name is empty".into());
        }
    }
    let alg = match raw.signature_alg.as_str() {
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        other => {
            problems.push(format!(
                "policy.bundle.signature_alg {other:?} is not supported: use RS256 or ES256"
            ));
            Algorithm::RS256
        }
    };
    let signing = raw.signing_key.map(|k| BundleSigning {
        key_file: base.join(k),
        alg,
    });
    (problems.len() == before).then_some(BundleConfig {
        location,
        interval: raw.interval,
        timeout: raw.timeout,
        max_bytes: raw.max_bytes,
        credential,
        signing,
    })
}

fn bundle_url(url: &str, problems: &mut Vec<String>) {
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
        _ => {
            problems.push(format!("policy.bundle.url {url:?} must be an http(s) URL"));
            return;
        }
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        problems.push("policy.bundle.url must not hold credentials: use auth_token_file".into());
    }
    if parsed.query_pairs().any(|(k, _)| k == "sig") {
        problems.push(
            "policy.bundle.url must not hold a shared access signature: put it in sas_token_file or sas_token_env"
                .into(),
        );
    }
}

/// Whether a token may be sent to `url`: over TLS, or to this machine.
fn credential_safe_over(url: &str) -> bool {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => true,
        Ok(u) => match u.host_str() {
            Some("localhost") => true,
            Some(host) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            None => false,
        },
        Err(_) => false,
    }
}

/// `demo`: the configuration starts the demo's dev issuer, which alone may be reached over
/// plain HTTP.
fn identity(
    raw: raw::RawIdentity,
    base: &Path,
    demo: bool,
    problems: &mut Vec<String>,
) -> IdentityConfig {
    let authority = raw
        .authority
        .clone()
        .unwrap_or_else(|| raw.cloud.authority().to_string());
    let cloud_issuers = raw.cloud.issuers();
    let issuers = match (&raw.v1_issuer_host, &raw.v2_issuer_host) {
        (None, None) => cloud_issuers,
        (v1, v2) => {
            let default = |h: &Option<String>, which: fn(&Issuers, &str) -> String| {
                h.clone().unwrap_or_else(|| {
                    which(&cloud_issuers, "t")
                        .trim_start_matches("https://")
                        .split('/')
                        .next()
                        .unwrap_or_default()
                        .to_string()
                })
            };
            let (v1, v2) = (default(v1, Issuers::v1), default(v2, Issuers::v2));
            for (key, host) in [("v1_issuer_host", &v1), ("v2_issuer_host", &v2)] {
                if host.is_empty() || host.contains(['/', ':', ' ']) {
                    problems.push(format!(
                        "identity.{key} {host:?} must be a host name such as sts.windows.net"
                    ));
                }
            }
            Issuers::new(&v1, &v2)
        }
    };
    let mut algorithms = Vec::new();
    for a in &raw.algorithms {
        match Algorithm::from_str(a) {
            Ok(alg @ (Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512)) => algorithms.push(alg),
            _ => problems.push(format!(
                "identity.algorithms: {a:?} is not supported; Entra signs with RS256 (RS384 and RS512 are also accepted)"
            )),
        }
    }
    if raw.algorithms.is_empty() {
        problems.push("identity.algorithms is empty: use [\"RS256\"]".into());
    }
    if raw.tenants.is_empty() {
        problems
            .push("no [[identity.tenants]]: add the tenant GUIDs whose tokens are trusted".into());
    }
    let mut tenants: Vec<TenantConfig> = Vec::new();
    for (i, t) in raw.tenants.into_iter().enumerate() {
        let id = t.id.to_ascii_lowercase();
        if !is_guid(&id) {
            problems.push(format!(
                "identity.tenants[{i}].id {:?} is not a tenant GUID",
                t.id
            ));
            continue;
        }
        if tenants.iter().any(|o| o.id == id) {
            problems.push(format!("identity.tenants[{i}].id {id} is listed twice"));
            continue;
        }
        let keys = match (t.jwks_file, t.jwks_uri, t.authority) {
            (Some(path), _, _) => KeySource::File {
                path: base.join(path),
            },
            (None, Some(uri), _) => KeySource::Jwks { uri },
            (None, None, tenant_authority) => KeySource::Discovery {
                authority: tenant_authority
                    .unwrap_or_else(|| authority.clone())
                    .trim_end_matches('/')
                    .to_string(),
            },
        };
        let url = match &keys {
            KeySource::Jwks { uri } => uri,
            KeySource::Discovery { authority } => authority,
            KeySource::File { .. } | KeySource::Inline { .. } => "file",
        };
        let https = url.starts_with("https://");
        let http = url.starts_with("http://");
        if url != "file" && !https && !(http && demo) {
            problems.push(if http {
                format!(
                    "identity.tenants[{i}]: {url:?} is plain HTTP: signing keys must come over https:// (only `agentgate demo` fetches its dev issuer's keys over HTTP)"
                )
            } else {
                format!("identity.tenants[{i}]: {url:?} must be an https:// URL")
            });
        }
        tenants.push(TenantConfig { id, keys });
    }
    if raw.max_token_bytes < 256 {
        problems.push("identity.max_token_bytes must be at least 256".into());
    }
    if raw.leeway > Duration::from_secs(300) {
        problems.push("identity.leeway must be at most 300s".into());
    }
    whole_seconds("identity.leeway", raw.leeway, problems);
    IdentityConfig {
        issuers,
        ca_file: raw.ca_file.map(|f| base.join(f)),
        algorithms,
        leeway: raw.leeway,
        max_token_bytes: raw.max_token_bytes,
        refresh_interval: raw.refresh_interval,
        min_refetch_interval: raw.min_refetch_interval,
        max_key_age: raw.max_key_age,
        fetch_timeout: raw.fetch_timeout,
        max_response_bytes: raw.max_response_bytes,
        tenants,
    }
}

fn route(
    r: raw::RawRoute,
    i: usize,
    base: &Path,
    problems: &mut Vec<String>,
) -> Option<RouteConfig> {
    let before = problems.len();
    let key = format!("routes[{i}] ({})", r.id);
    if r.id.is_empty()
        || !r
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        problems.push(format!("{key}: id must be letters, digits, '-' or '_'"));
    }
    if !r.path_prefix.starts_with('/') || r.path_prefix.len() > MAX_PREFIX_LEN {
        problems.push(format!(
            "{key}: path_prefix {:?} must start with '/'",
            r.path_prefix
        ));
    }
    let (upstreams, tls) = tls::upstreams(&r.upstreams, r.tls.as_ref(), &key, base, problems);
    if r.upstreams.is_empty() {
        problems.push(format!("{key}: upstreams is empty"));
    }
    let mut audiences = Vec::new();
    for a in &r.audiences {
        let a = a.trim_end_matches('/').to_string();
        if is_exchange_audience(&a) {
            problems.push(format!(
                "{key}: audience {a} is the Entra token exchange endpoint and is never accepted"
            ));
        } else if a.is_empty() {
            problems.push(format!("{key}: empty audience"));
        } else {
            audiences.push(a);
        }
    }
    if r.audiences.is_empty() {
        problems.push(format!(
            "{key}: audiences is empty: add the API's client id and App ID URI (api://...)"
        ));
    }
    let upstream_h2 = match r.upstream_protocol {
        Some(raw::RawUpstreamProtocol::H2) => true,
        Some(raw::RawUpstreamProtocol::Http1) => {
            if r.grpc {
                problems.push(format!(
                    "{key}: grpc needs upstream_protocol = \"h2\" (gRPC is HTTP/2 only)"
                ));
            }
            false
        }
        None => r.grpc,
    };
    if r.websocket && upstream_h2 {
        problems.push(format!(
            "{key}: websocket upgrades need upstream_protocol = \"http1\""
        ));
    }
    (problems.len() == before).then(|| RouteConfig {
        id: r.id,
        hosts: r
            .hosts
            .iter()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .filter(|h| h != "*")
            .collect(),
        path_prefix: r.path_prefix,
        upstreams,
        audiences,
        forward_authorization: r.forward_authorization,
        forward_override_headers: r.forward_override_headers,
        connect_timeout: r.connect_timeout,
        read_timeout: r.read_timeout,
        max_body_bytes: (r.max_body_bytes > 0).then_some(r.max_body_bytes),
        request_timeout: r.request_timeout.filter(|t| !t.is_zero()),
        upstream_h2,
        grpc: r.grpc,
        websocket: r.websocket,
        tls,
    })
}

/// Refuses a fraction of a second in `value`: `name` is used in whole seconds (token times
/// are, and so is pingora's wait for requests in flight), and "500ms" would silently be 0.
fn whole_seconds(name: &str, value: Duration, problems: &mut Vec<String>) {
    if value.subsec_nanos() != 0 {
        problems.push(format!(
            "{name} must be a whole number of seconds, not {}",
            humantime::format_duration(value)
        ));
    }
}

#[cfg(test)]
mod tests;
