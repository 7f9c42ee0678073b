//! `[directory.graph]`: reading the agent directory from Microsoft Graph.
//!
//! Validation here decides what the Graph client is allowed to talk to (schemes included); the
//! client itself takes the URLs as given.

use super::raw::{OnStale, RawDirectory, RawGraph};
use crate::guid::is_guid;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the directory comes from besides the local file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DirectoryConfig {
    /// Read blueprints, agents, agent users and agent risk from Microsoft Graph.
    pub graph: Option<GraphConfig>,
}

/// How the gateway reads its directory from Microsoft Graph.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphConfig {
    /// The tenant whose directory is read (lower-case GUID).
    pub tenant: String,
    /// The gateway's own app registration (lower-case GUID).
    pub client_id: String,
    pub credential: GraphCredential,
    /// Token authority without trailing slash; the token endpoint is
    /// `{authority}/{tenant}/oauth2/v2.0/token`.
    pub authority: String,
    /// Graph origin without trailing slash, e.g. `https://graph.microsoft.com`.
    pub graph_url: String,
    /// Extra trust roots (PEM) for the authority and Graph, on top of the built-in ones.
    pub ca_file: Option<PathBuf>,
    /// Time between the starts of two syncs.
    pub interval: Duration,
    /// How long the last good directory serves as fresh while syncs fail.
    pub max_age: Duration,
    pub on_stale: OnStale,
    /// Budget of one HTTP request, body included.
    pub timeout: Duration,
    /// Budget of one whole sync, retries and throttling waits included.
    pub sync_timeout: Duration,
    /// Cap on one response body; larger answers are refused while they stream in.
    pub max_response_bytes: usize,
    /// Retries of one request after throttling (429, 503), a server error or a transport
    /// failure.
    pub max_retries: u32,
    /// `$top` of every collection request (Graph allows up to 999).
    pub page_size: u32,
    /// Read agent risk (`/beta/identityProtection/riskyAgents`, which needs an ID Protection
    /// licence); without it, risk comes from the local file only.
    pub read_risk: bool,
}

/// How the gateway proves its identity to the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphCredential {
    /// A client secret read from this file (trailing newline ignored) at every token request.
    ClientSecretFile(PathBuf),
    /// A client secret read from this environment variable at every token request.
    ClientSecretEnv(String),
    /// A certificate registered on the app: the key signs a client assertion.
    Certificate {
        certificate_file: PathBuf,
        private_key_file: PathBuf,
    },
    /// A federated token (e.g. Kubernetes workload identity) read from this file at every
    /// token request and sent as the client assertion.
    FederatedTokenFile(PathBuf),
}

/// Largest `$top` Graph accepts on directory objects.
const MAX_PAGE_SIZE: u32 = 999;
/// Smallest response cap that still holds a useful page.
const MIN_RESPONSE_BYTES: usize = 4096;
/// More retries than this only prolong an outage.
const MAX_RETRIES: u32 = 10;

/// Where Graph is and how it may be reached: the cloud's token authority by default, and
/// plain HTTP only for the demo's in-process fake.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reach {
    pub cloud: crate::entra::Cloud,
    pub demo: bool,
}

/// Validates `[directory]`, adding every problem to `problems`.
pub(super) fn directory(
    raw: RawDirectory,
    base: &Path,
    reach: Reach,
    problems: &mut Vec<String>,
) -> DirectoryConfig {
    DirectoryConfig {
        graph: raw.graph.and_then(|g| graph(g, base, reach, problems)),
    }
}

fn graph(
    raw: RawGraph,
    base: &Path,
    reach: Reach,
    problems: &mut Vec<String>,
) -> Option<GraphConfig> {
    let before = problems.len();
    let key = "directory.graph";
    let tenant = raw.tenant.to_ascii_lowercase();
    if !is_guid(&tenant) {
        problems.push(format!(
            "{key}.tenant {:?} is not a tenant GUID",
            raw.tenant
        ));
    }
    let client_id = raw.client_id.to_ascii_lowercase();
    if !is_guid(&client_id) {
        problems.push(format!(
            "{key}.client_id {:?} is not an application (client) id",
            raw.client_id
        ));
    }
    let credential = credential(&raw, base, problems);
    let authority = raw
        .authority
        .clone()
        .unwrap_or_else(|| reach.cloud.authority().to_string());
    let authority = url(
        &authority,
        &format!("{key}.authority"),
        reach.demo,
        problems,
    );
    let graph_url = url(
        &raw.graph_url,
        &format!("{key}.graph_url"),
        reach.demo,
        problems,
    );
    if raw.interval < Duration::from_secs(1) {
        problems.push(format!("{key}.interval must be at least 1s"));
    }
    if raw.max_age < raw.interval {
        problems.push(format!(
            "{key}.max_age must be at least the interval ({:?})",
            raw.interval
        ));
    }
    if raw.timeout.is_zero() {
        problems.push(format!("{key}.timeout must be greater than zero"));
    }
    if raw.sync_timeout < raw.timeout {
        problems.push(format!(
            "{key}.sync_timeout must be at least the request timeout ({:?})",
            raw.timeout
        ));
    }
    if raw.max_response_bytes < MIN_RESPONSE_BYTES {
        problems.push(format!(
            "{key}.max_response_bytes must be at least {MIN_RESPONSE_BYTES}"
        ));
    }
    if raw.max_retries > MAX_RETRIES {
        problems.push(format!("{key}.max_retries must be at most {MAX_RETRIES}"));
    }
    if !(1..=MAX_PAGE_SIZE).contains(&raw.page_size) {
        problems.push(format!(
            "{key}.page_size must be between 1 and {MAX_PAGE_SIZE}"
        ));
    }
    let credential = credential?;
    (problems.len() == before).then(|| GraphConfig {
        tenant,
        client_id,
        credential,
        authority,
        graph_url,
        ca_file: raw.ca_file.map(|f| base.join(f)),
        interval: raw.interval,
        max_age: raw.max_age,
        on_stale: raw.on_stale,
        timeout: raw.timeout,
        sync_timeout: raw.sync_timeout,
        max_response_bytes: raw.max_response_bytes,
        max_retries: raw.max_retries,
        page_size: raw.page_size,
        read_risk: raw.read_risk,
    })
}

fn credential(raw: &RawGraph, base: &Path, problems: &mut Vec<String>) -> Option<GraphCredential> {
    let mut found = Vec::new();
    if let Some(f) = &raw.client_secret_file {
        found.push(GraphCredential::ClientSecretFile(base.join(f)));
    }
    if let Some(name) = &raw.client_secret_env {
        let valid = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !valid {
            problems.push(format!(
                "directory.graph.client_secret_env {name:?} is not an environment variable name"
            ));
        }
        found.push(GraphCredential::ClientSecretEnv(name.clone()));
    }
    match (&raw.certificate_file, &raw.private_key_file) {
        (Some(cert), Some(key)) => found.push(GraphCredential::Certificate {
            certificate_file: base.join(cert),
            private_key_file: base.join(key),
        }),
        (None, None) => {}
        _ => problems.push(
            "directory.graph: certificate_file and private_key_file go together (the key signs, the certificate names it)"
                .into(),
        ),
    }
    if let Some(f) = &raw.federated_token_file {
        found.push(GraphCredential::FederatedTokenFile(base.join(f)));
    }
    if found.len() != 1 {
        problems.push(format!(
            "directory.graph needs exactly one credential (client_secret_file, client_secret_env, certificate_file + private_key_file, or federated_token_file); {} given",
            found.len()
        ));
        return None;
    }
    found.pop()
}

/// An http(s) URL without trailing slash.
/// `value` without a trailing slash; plain HTTP only with `demo` (the demo's fake Graph).
fn url(value: &str, key: &str, demo: bool, problems: &mut Vec<String>) -> String {
    let trimmed = value.trim_end_matches('/');
    let https = trimmed.strip_prefix("https://");
    let http = trimmed.strip_prefix("http://");
    match https.or(http.filter(|_| demo)) {
        Some(host) if !host.is_empty() && !host.contains(['?', '#', ' ']) => {}
        _ if http.is_some() => problems.push(format!(
            "{key} = {value:?} is plain HTTP: Graph is reached over https:// (only `agentgate demo` talks to its fake Graph over HTTP)"
        )),
        _ => problems.push(format!(
            "{key} = {value:?} must be an https:// URL such as \"https://graph.microsoft.com\""
        )),
    }
    trimmed.to_string()
}
