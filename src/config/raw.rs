//! The serde shape of `agentgate.toml`, kept as close to the file as possible.
//!
//! Nothing here is validated beyond what serde checks; [`super::Config::from_raw`] turns this
//! into the typed configuration and reports every problem at once.

use serde::Deserialize;
use std::time::Duration;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub admin: RawAdmin,
    pub identity: RawIdentity,
    #[serde(default)]
    pub token_cache: RawTokenCache,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub reload: RawReload,
    #[serde(default)]
    pub log: RawLog,
    pub shadow: Option<RawShadow>,
    pub dev: Option<RawDev>,
    #[serde(default)]
    pub directory: RawDirectory,
}

/// `[directory]`: where the agent directory comes from besides `policies/data/directory.json`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectory {
    pub graph: Option<RawGraph>,
}

/// `[directory.graph]`: read the directory from Microsoft Graph.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGraph {
    pub tenant: String,
    pub client_id: String,
    pub client_secret_file: Option<String>,
    pub client_secret_env: Option<String>,
    pub certificate_file: Option<String>,
    pub private_key_file: Option<String>,
    pub federated_token_file: Option<String>,
    /// Defaults to the `[identity]` cloud's authority.
    pub authority: Option<String>,
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    pub ca_file: Option<String>,
    #[serde(default = "default_sync_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_directory_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    #[serde(default)]
    pub on_stale: OnStale,
    #[serde(default = "default_graph_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_sync_timeout", with = "humantime_serde")]
    pub sync_timeout: Duration,
    #[serde(default = "default_graph_max_response_bytes")]
    pub max_response_bytes: usize,
    #[serde(default = "default_graph_max_retries")]
    pub max_retries: u32,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    #[serde(default = "default_read_risk")]
    pub read_risk: bool,
}

/// What a directory older than `max_age` does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStale {
    /// Keep serving the last good directory; `/readyz` and the metrics report it stale.
    #[default]
    KeepServing,
    /// Refuse what only Graph vouched for: entities the local file does not list are served
    /// disabled until a sync succeeds again.
    RefuseUnvouched,
}

fn default_graph_url() -> String {
    "https://graph.microsoft.com".into()
}
fn default_sync_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_directory_max_age() -> Duration {
    Duration::from_secs(3600)
}
fn default_graph_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_sync_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_graph_max_response_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_graph_max_retries() -> u32 {
    4
}
fn default_page_size() -> u32 {
    999
}
fn default_read_risk() -> bool {
    true
}

/// `[reload]`: how edits to policies, data and routes are picked up.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawReload {
    pub watch: bool,
    #[serde(with = "humantime_serde")]
    pub debounce: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for RawReload {
    fn default() -> Self {
        Self {
            watch: true,
            debounce: Duration::from_millis(200),
            timeout: Duration::from_secs(60),
        }
    }
}

/// `[log]`: the decision log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub decisions: String,
    pub allow_sample_rate: f64,
    pub max_queue_bytes: usize,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            decisions: "stdout".into(),
            allow_sample_rate: 1.0,
            max_queue_bytes: 8 * 1024 * 1024,
        }
    }
}

/// `[shadow]`: a candidate policy set evaluated beside the enforced one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShadow {
    pub dir: String,
    #[serde(default)]
    pub blueprints: Vec<String>,
}

/// `[server]`: process-level settings handed to pingora.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub threads: usize,
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    #[serde(with = "humantime_serde")]
    pub graceful_shutdown_timeout: Duration,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
    pub max_requests_per_connection: u32,
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// Proxies whose `X-Forwarded-For` is believed (CIDRs or addresses).
    pub trusted_proxies: Vec<String>,
    /// HTTP/2 with prior knowledge on plain-text listeners.
    pub h2c: bool,
    /// Concurrent HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// An HTTP/2 connection with no stream open this long is closed (`0s`: never).
    #[serde(with = "humantime_serde")]
    pub h2_idle_timeout: Duration,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            threads: 2,
            grace_period: Duration::from_secs(5),
            graceful_shutdown_timeout: Duration::from_secs(5),
            pid_file: "/tmp/agentgate.pid".into(),
            upgrade_sock: "/tmp/agentgate_upgrade.sock".into(),
            max_header_bytes: 32 * 1024,
            max_uri_bytes: 8 * 1024,
            max_requests_per_connection: 1000,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_connections_per_client: 1024,
            trusted_proxies: Vec::new(),
            h2c: false,
            h2_max_concurrent_streams: 100,
            h2_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// `[[listeners]]`: one public HTTP listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: String,
    /// Serve HTTPS on this listener.
    pub tls: Option<RawListenerTls>,
    /// Expect a PROXY protocol header (v1 or v2) before each connection's first byte.
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// `[listeners.tls]`: certificates, client certificates, reload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    /// The first is the default (no SNI, or SNI that matches no other certificate).
    pub certificates: Vec<RawCertificate>,
    /// PEM bundle of the CAs whose client certificates are accepted.
    pub client_ca: Option<String>,
    pub client_auth: Option<ClientAuth>,
    /// How often the certificate and key files are checked for changes.
    #[serde(default = "default_tls_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

pub(crate) fn default_tls_reload_interval() -> Duration {
    Duration::from_secs(5)
}

/// A PEM certificate chain (leaf first) and its private key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: String,
    pub key: String,
}

/// Whether a listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Verified when presented; connections without one are served too.
    Optional,
    /// The handshake fails without a certificate from `client_ca`.
    Required,
}

/// `[admin]`: the listener for health, readiness, metrics and reload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub address: String,
    pub token_file: Option<String>,
    pub allowed_hosts: Vec<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:9180".into(),
            token_file: None,
            allowed_hosts: Vec::new(),
        }
    }
}

/// `[identity]`: who may sign tokens and how tokens are checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    #[serde(default)]
    pub cloud: crate::entra::Cloud,
    /// Defaults to the cloud's authority.
    pub authority: Option<String>,
    pub v1_issuer_host: Option<String>,
    pub v2_issuer_host: Option<String>,
    pub ca_file: Option<String>,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    #[serde(default = "default_refresh_interval", with = "humantime_serde")]
    pub refresh_interval: Duration,
    #[serde(default = "default_min_refetch_interval", with = "humantime_serde")]
    pub min_refetch_interval: Duration,
    #[serde(default = "default_max_key_age", with = "humantime_serde")]
    pub max_key_age: Duration,
    #[serde(default = "default_fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    #[serde(default)]
    pub tenants: Vec<RawTenant>,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}
fn default_leeway() -> Duration {
    Duration::from_secs(60)
}
fn default_max_token_bytes() -> usize {
    8 * 1024
}
fn default_refresh_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_min_refetch_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_max_key_age() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_fetch_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_response_bytes() -> usize {
    1024 * 1024
}

/// `[[identity.tenants]]`: one trusted Entra tenant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub id: String,
    pub authority: Option<String>,
    pub jwks_uri: Option<String>,
    pub jwks_file: Option<String>,
}

/// `[token_cache]`: the cache of verified tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTokenCache {
    pub enabled: bool,
    pub capacity: usize,
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
}

impl Default for RawTokenCache {
    fn default() -> Self {
        Self {
            enabled: true,
            capacity: 100_000,
            max_ttl: Duration::from_secs(60),
        }
    }
}

/// `[policy]`: where the Rego and data files live and how evaluation is bounded.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPolicy {
    pub dir: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub test_timeout: Duration,
    pub input_headers: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub time_resolution: Duration,
    pub decision_cache: usize,
    pub engine: PolicyEngine,
    pub bundle: Option<RawBundle>,
}

/// `[policy.bundle]`: the policy set comes from a bundle (a file, or polled from a URL)
/// instead of `dir`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBundle {
    pub url: Option<String>,
    pub file: Option<String>,
    #[serde(default = "default_bundle_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_bundle_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_bundle_max_bytes")]
    pub max_bytes: u64,
    pub auth_token_file: Option<String>,
    pub auth_token_env: Option<String>,
    pub sas_token_file: Option<String>,
    pub sas_token_env: Option<String>,
    pub signing_key: Option<String>,
    #[serde(default = "default_signature_alg")]
    pub signature_alg: String,
}

fn default_bundle_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_bundle_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_bundle_max_bytes() -> u64 {
    8 * 1024 * 1024
}
fn default_signature_alg() -> String {
    "RS256".into()
}

/// Which Rego engine decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyEngine {
    /// The interpreter, then the compiled engine once it agrees with it on sample inputs.
    Auto,
    /// The interpreter only.
    Interpreter,
}

impl Default for RawPolicy {
    fn default() -> Self {
        Self {
            dir: "../policies".into(),
            // Wall-clock time: a preempted evaluation on a busy host must not read as a
            // runaway policy. The shipped set takes tens of microseconds.
            timeout: Duration::from_millis(25),
            test_timeout: Duration::from_secs(5),
            input_headers: vec!["user-agent".into(), "x-request-id".into()],
            time_resolution: Duration::from_secs(1),
            decision_cache: 4096,
            engine: PolicyEngine::Auto,
            bundle: None,
        }
    }
}

/// `[[routes]]`: one upstream API behind the gateway.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub id: String,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub path_prefix: String,
    pub upstreams: Vec<String>,
    pub audiences: Vec<String>,
    #[serde(default)]
    pub forward_authorization: bool,
    #[serde(default)]
    pub forward_override_headers: bool,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
    /// The largest request body forwarded (`0`: no limit).
    #[serde(default)]
    pub max_body_bytes: u64,
    /// The longest a request may take from arrival to the end of its response (`0s`: no
    /// limit); long-lived streams are ended when it runs out.
    #[serde(default, with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    /// HTTP version to the upstreams; `grpc = true` implies `h2`.
    pub upstream_protocol: Option<RawUpstreamProtocol>,
    /// The route serves gRPC: refusals are gRPC statuses, answers' `grpc-status` counted.
    #[serde(default)]
    pub grpc: bool,
    /// WebSocket upgrades are forwarded (refused otherwise).
    #[serde(default)]
    pub websocket: bool,
    /// Settings for `https://` upstreams.
    pub tls: Option<RawUpstreamTls>,
}

/// `upstream_protocol`: the HTTP version spoken to a route's upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawUpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2: ALPN `h2` over TLS, prior knowledge (h2c) over plain TCP.
    H2,
}

/// `[routes.tls]`: how the gateway connects to `https://` upstreams.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// Server name sent and verified instead of each upstream URL's host.
    pub sni: Option<String>,
    /// PEM bundle trusted instead of the system roots.
    pub ca_file: Option<String>,
    /// Client certificate chain and key presented to the upstream (mutual TLS).
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    /// Accept any upstream certificate. Never in production.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `[dev]`: the offline demo (dev issuer and sample upstream, in process).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDev {
    pub issuer: String,
    pub key: String,
    pub sample_upstream: Option<String>,
    pub graph: Option<String>,
    /// An HTTPS listener for the demo, with a throwaway certificate made at start.
    pub tls_listener: Option<String>,
}
