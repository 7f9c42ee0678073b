//! The validated, typed configuration.
//!
//! Loading happens in two stages: [`raw`] mirrors the TOML file, and [`Config::from_raw`]
//! resolves it into ready-to-use values (socket addresses, algorithms, header names, absolute
//! paths), collecting every problem so an operator sees them all at once. Relative paths in the
//! file are resolved against the file's own directory.

mod error;
mod graph;
pub mod raw;

pub use error::ConfigError;
pub use graph::{DirectoryConfig, GraphConfig, GraphCredential};
pub use raw::{OnStale, PolicyEngine};

use crate::guid::is_guid;
use crate::identity::EXCHANGE_AUDIENCE;
use http::HeaderName;
use jsonwebtoken::Algorithm;
use raw::RawConfig;
use std::net::{SocketAddr, ToSocketAddrs};
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
    pub listeners: Vec<SocketAddr>,
    /// Loopback listener for `/healthz`, `/readyz` and `/metrics`.
    pub admin: SocketAddr,
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

/// How edits are picked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Watch the policy directory and the configuration file.
    pub watch: bool,
    /// Quiet time after the last change before reloading.
    pub debounce: Duration,
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
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    pub pid_file: String,
    pub upgrade_sock: String,
    /// Largest request header block accepted (names plus values); larger gets 431.
    pub max_header_bytes: usize,
    /// Requests served on one keep-alive connection before it is closed.
    pub max_requests_per_connection: u32,
    /// Time a client has to send a request's complete header block (against slowloris).
    pub header_read_timeout: Duration,
}

/// Token validation and signing-key settings.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityConfig {
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
    /// Request headers copied into `input.request.headers`.
    pub input_headers: Vec<HeaderName>,
    pub engine: PolicyEngine,
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
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

/// The offline demo: a dev issuer and a sample upstream started in process.
#[derive(Debug, Clone, PartialEq)]
pub struct DevConfig {
    pub issuer: SocketAddr,
    pub key: PathBuf,
    pub sample_upstream: Option<SocketAddr>,
}

/// The longest route prefix accepted, a guard against nonsense.
const MAX_PREFIX_LEN: usize = 1024;

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
            .filter_map(|(i, l)| {
                socket(
                    &l.address,
                    &format!("listeners[{i}].address"),
                    &mut problems,
                )
            })
            .collect::<Vec<_>>();
        if raw.listeners.is_empty() {
            problems.push("no [[listeners]]: add one, e.g. address = \"127.0.0.1:8080\"".into());
        }
        let admin = socket(&raw.admin.address, "admin.address", &mut problems);

        let identity = identity(raw.identity, &base, &mut problems);
        let policy = PolicyConfig {
            dir: base.join(&raw.policy.dir),
            timeout: raw.policy.timeout,
            input_headers: raw
                .policy
                .input_headers
                .iter()
                .filter_map(|h| input_header(h, &mut problems))
                .collect(),
            engine: raw.policy.engine,
        };
        if raw.policy.timeout.is_zero() {
            problems.push("policy.timeout must be greater than zero".into());
        }
        if raw.token_cache.max_ttl > Duration::from_secs(60) {
            problems.push("token_cache.max_ttl must be at most 60s".into());
        }
        if raw.token_cache.enabled && raw.token_cache.capacity == 0 {
            problems
                .push("token_cache.capacity must be at least 1 (or set enabled = false)".into());
        }

        let mut routes = Vec::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            if let Some(route) = route(r, i, &mut problems) {
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
        if raw.server.max_requests_per_connection == 0 {
            problems.push("server.max_requests_per_connection must be at least 1".into());
        }
        if raw.server.threads == 0 {
            problems.push("server.threads must be at least 1".into());
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

        let directory = graph::directory(raw.directory, &base, &mut problems);

        let dev = raw.dev.and_then(|d| {
            let issuer = socket(&d.issuer, "dev.issuer", &mut problems)?;
            let sample_upstream = match d.sample_upstream {
                Some(a) => Some(socket(&a, "dev.sample_upstream", &mut problems)?),
                None => None,
            };
            Some(DevConfig {
                issuer,
                key: base.join(d.key),
                sample_upstream,
            })
        });

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
                    max_requests_per_connection: raw.server.max_requests_per_connection,
                    header_read_timeout: raw.server.header_read_timeout,
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

fn identity(raw: raw::RawIdentity, base: &Path, problems: &mut Vec<String>) -> IdentityConfig {
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
            (None, None, authority) => KeySource::Discovery {
                authority: authority
                    .unwrap_or_else(|| raw.authority.clone())
                    .trim_end_matches('/')
                    .to_string(),
            },
        };
        let url = match &keys {
            KeySource::Jwks { uri } => uri,
            KeySource::Discovery { authority } => authority,
            KeySource::File { .. } => "file",
        };
        if url != "file" && !(url.starts_with("https://") || url.starts_with("http://")) {
            problems.push(format!(
                "identity.tenants[{i}]: {url:?} must be an http(s) URL"
            ));
        }
        tenants.push(TenantConfig { id, keys });
    }
    if raw.max_token_bytes < 256 {
        problems.push("identity.max_token_bytes must be at least 256".into());
    }
    if raw.leeway > Duration::from_secs(300) {
        problems.push("identity.leeway must be at most 300s".into());
    }
    IdentityConfig {
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

fn route(r: raw::RawRoute, i: usize, problems: &mut Vec<String>) -> Option<RouteConfig> {
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
    let upstreams: Vec<SocketAddr> = r
        .upstreams
        .iter()
        .filter_map(|u| socket(u, &format!("{key}.upstreams"), problems))
        .collect();
    if r.upstreams.is_empty() {
        problems.push(format!("{key}: upstreams is empty"));
    }
    let mut audiences = Vec::new();
    for a in &r.audiences {
        let a = a.trim_end_matches('/').to_string();
        if a.eq_ignore_ascii_case(EXCHANGE_AUDIENCE) {
            problems.push(format!(
                "{key}: audience {EXCHANGE_AUDIENCE} is the Entra token exchange endpoint and is never accepted"
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
    (problems.len() == before).then(|| RouteConfig {
        id: r.id,
        hosts: r
            .hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .filter(|h| h != "*")
            .collect(),
        path_prefix: r.path_prefix,
        upstreams,
        audiences,
        forward_authorization: r.forward_authorization,
        connect_timeout: r.connect_timeout,
        read_timeout: r.read_timeout,
    })
}

#[cfg(test)]
mod tests;
