//! The offline demo: starts the dev issuer and sample API, then prints ready-to-paste calls.
//!
//! With `[dev] tls_listener` the gateway also listens over HTTPS, with a certificate for
//! `localhost` from a throwaway CA ([`DemoTls`]), and every call is printed for it too.

// The demo prints what to paste.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use super::graph::{serve_graph, FakeCredentials, FakeTenant, GraphState};
use super::servers::{serve_issuer, serve_sample_api, IssuerState};
use super::tls::{DevTlsError, TestCa};
use super::{SigningIdentity, TokenSpec};
use crate::config::{
    CertificateFiles, Config, DevConfig, GraphCredential, ListenerConfig, ListenerTlsConfig,
};
use crate::directory::DirectoryFile;
use crate::identity::CallerKind;
use crate::policy::DIRECTORY_FILE;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Ids from the shipped example directory (`policies/data/directory.json`).
const SALES_BLUEPRINT: &str = "cccccccc-3333-3333-3333-000000000001";
const SALES_AGENT_EMEA: &str = "dddddddd-4444-4444-4444-000000000001";
const LEGACY_BLUEPRINT: &str = "cccccccc-3333-3333-3333-000000000003";
const LEGACY_AGENT: &str = "dddddddd-4444-4444-4444-000000000007";
const HUMAN_USER: &str = "ffffffff-6666-6666-6666-000000000001";

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    #[error("failed to read the dev key {path}")]
    Key {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Mint(#[from] super::mint::MintError),
    #[error("failed to read {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the demo's fake Graph: {0}")]
    Graph(String),
    #[error("failed to listen on {addr}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] DevTlsError),
    #[error("failed to store the certificate in {path}")]
    TlsFiles {
        path: String,
        source: std::io::Error,
    },
}

/// The demo's HTTPS listener: a throwaway CA and a certificate it issued for `localhost` and
/// `127.0.0.1`, written to a new temporary directory that is removed when this is dropped.
#[derive(Debug)]
pub struct DemoTls {
    dir: tempfile::TempDir,
    /// The listener, configured as a `[[listeners]]` entry with `tls` would be: HTTP/1.1
    /// and h2 by ALPN.
    pub listener: ListenerConfig,
}

impl DemoTls {
    /// Makes the CA and the certificate and writes `ca.pem`, `server.crt` (the chain) and
    /// `server.key`; the CA's own key is never written.
    pub fn create(address: SocketAddr) -> Result<Self, DemoError> {
        let ca = TestCa::named("agentgate demo CA (throwaway)")?;
        let server = ca.issue(&["localhost", "127.0.0.1"])?;
        let mut builder = tempfile::Builder::new();
        builder.prefix("agentgate-demo-tls-");
        // Only this user may read the server key.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
        let dir = builder.tempdir().map_err(|source| DemoError::TlsFiles {
            path: std::env::temp_dir().display().to_string(),
            source,
        })?;
        let ca_file = dir.path().join(CA_FILE);
        std::fs::write(&ca_file, &ca.cert_pem).map_err(|source| DemoError::TlsFiles {
            path: ca_file.display().to_string(),
            source,
        })?;
        let (cert, key) = server.write(dir.path(), "server")?;
        Ok(Self {
            dir,
            listener: ListenerConfig {
                address,
                tls: Some(ListenerTlsConfig {
                    certificates: vec![CertificateFiles { cert, key }],
                    client_ca: None,
                    client_auth: None,
                    reload_interval: crate::config::raw::default_tls_reload_interval(),
                }),
                proxy_protocol: false,
            },
        })
    }

    /// The CA certificate clients verify the listener with.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join(CA_FILE)
    }
}

/// The CA certificate's file name in the demo's TLS directory.
const CA_FILE: &str = "ca.pem";

/// Loads the dev key named by the configuration.
pub fn load_key(dev: &DevConfig) -> Result<SigningIdentity, DemoError> {
    let pem = std::fs::read(&dev.key).map_err(|source| DemoError::Key {
        path: dev.key.display().to_string(),
        source,
    })?;
    Ok(SigningIdentity::from_pem(&pem)?)
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, DemoError> {
    let l = std::net::TcpListener::bind(addr).map_err(|source| DemoError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    l.set_nonblocking(true).map_err(|source| DemoError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    Ok(l)
}

/// The demo's fake Graph: the tenant the policy directory describes, accepting the client
/// secret `[directory.graph]` is configured with.
fn fake_graph(config: &Config, addr: SocketAddr) -> Result<Option<Arc<GraphState>>, DemoError> {
    let Some(graph) = &config.directory.graph else {
        return Ok(None);
    };
    let GraphCredential::ClientSecretFile(path) = &graph.credential else {
        return Err(DemoError::Graph(
            "the demo's fake Graph accepts only client_secret_file".into(),
        ));
    };
    let secret = std::fs::read_to_string(path).map_err(|source| DemoError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let directory_path = config.policy.dir.join(DIRECTORY_FILE);
    let text = std::fs::read_to_string(&directory_path).map_err(|source| DemoError::Read {
        path: directory_path.display().to_string(),
        source,
    })?;
    let directory = DirectoryFile::parse(&text, &directory_path)
        .map_err(|e| DemoError::Graph(e.to_string()))?;
    let credentials = FakeCredentials {
        client_id: graph.client_id.clone(),
        client_secret: Some(secret.trim_end().to_string()),
        ..FakeCredentials::default()
    };
    GraphState::new(
        addr,
        &graph.tenant,
        credentials,
        FakeTenant::from_directory(&directory),
    )
    .map(Some)
    .map_err(|e| DemoError::Graph(e.to_string()))
}

/// Starts the dev servers on a thread of their own and prints the demo calls, for `tls`
/// too when the demo has its HTTPS listener.
pub fn start(config: &Config, dev: &DevConfig, tls: Option<&DemoTls>) -> Result<(), DemoError> {
    let key = load_key(dev)?;
    let issuer = bind(dev.issuer)?;
    let sample = dev.sample_upstream.map(bind).transpose()?;
    let graph = match dev.graph.map(|addr| (addr, fake_graph(config, addr))) {
        Some((addr, state)) => match state? {
            Some(state) => Some((bind(addr)?, state)),
            None => None,
        },
        None => None,
    };
    let graph_addr = graph.as_ref().map(|(_, state)| state.addr);
    let state = IssuerState::new(dev.issuer, vec![key.jwk.clone()]);
    std::thread::Builder::new()
        .name("agentgate-dev".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                tracing::error!("dev servers: failed to start a runtime");
                return;
            };
            rt.block_on(async move {
                let mut servers = tokio::task::JoinSet::new();
                let mut listen = |l: std::net::TcpListener| {
                    let l = tokio::net::TcpListener::from_std(l);
                    if l.is_err() {
                        tracing::error!("dev servers: failed to register a listener");
                    }
                    l.ok()
                };
                if let Some(l) = listen(issuer) {
                    servers.spawn(serve_issuer(l, state));
                }
                if let Some(l) = sample.and_then(&mut listen) {
                    servers.spawn(serve_sample_api(l));
                }
                if let Some((l, graph)) = graph {
                    if let Some(l) = listen(l) {
                        servers.spawn(serve_graph(l, graph));
                    }
                }
                while servers.join_next().await.is_some() {}
            });
        })
        .map_err(|source| DemoError::Bind {
            addr: dev.issuer.to_string(),
            source,
        })?;
    print_calls(config, dev, &key, graph_addr, tls)
}

/// How the printed calls reach the demo's HTTPS listener: its base URL, and the CA file
/// that verifies it.
struct TlsCalls {
    base: String,
    ca_file: PathBuf,
}

impl TlsCalls {
    fn new(tls: &DemoTls) -> Self {
        Self {
            base: format!("https://localhost:{}", tls.listener.address.port()),
            ca_file: tls.ca_file(),
        }
    }
}

/// `path` as one shell word: quoted when it holds anything but plain path characters.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn print_calls(
    config: &Config,
    dev: &DevConfig,
    key: &SigningIdentity,
    graph: Option<SocketAddr>,
    tls: Option<&DemoTls>,
) -> Result<(), DemoError> {
    let now = crate::clock::unix_now();
    let tenant = config
        .identity
        .tenants
        .first()
        .map(|t| t.id.clone())
        .unwrap_or_default();
    let route = config.routes.first();
    let audience = route
        .and_then(|r| r.audiences.first())
        .cloned()
        .unwrap_or_default();
    let prefix = route.map_or("/", |r| r.path_prefix.as_str());
    let listener = config
        .listeners
        .first()
        .map(|l| l.address.to_string())
        .unwrap_or_default();
    let spec = |kind, client: &str, blueprint: &str, subject: Option<&str>| TokenSpec {
        kind,
        tenant: tenant.clone(),
        version: "1.0".into(),
        audience: audience.clone(),
        client: client.into(),
        blueprint: Some(blueprint.into()),
        subject: subject.map(str::to_string),
        roles: vec!["Orders.Read.All".into()],
        scopes: vec!["Orders.Read".into()],
        issued_at: now,
        lifetime_secs: 3600,
        extra: Default::default(),
    };
    let calls = [
        (
            "An allowed agent (Sales Assistant - EMEA, app-only)",
            spec(
                CallerKind::AgentApp,
                SALES_AGENT_EMEA,
                SALES_BLUEPRINT,
                None,
            ),
        ),
        (
            "A blocked blueprint (Legacy Research Agent is disabled)",
            spec(CallerKind::AgentApp, LEGACY_AGENT, LEGACY_BLUEPRINT, None),
        ),
        (
            "An agent acting on behalf of a user (OBO)",
            spec(
                CallerKind::AgentObo,
                SALES_AGENT_EMEA,
                SALES_BLUEPRINT,
                Some(HUMAN_USER),
            ),
        ),
    ];
    println!("agentgate demo (offline)");
    println!("  proxy       http://{listener}");
    let tls_calls = tls.map(TlsCalls::new);
    if let Some(t) = &tls_calls {
        println!(
            "  proxy TLS   {}  (HTTP/1.1 and h2; throwaway CA {})",
            t.base,
            t.ca_file.display()
        );
    }
    println!(
        "  admin       http://{}/readyz  /metrics",
        config.admin.address
    );
    println!(
        "  dev issuer  http://{}  (OIDC discovery + JWKS, key {})",
        dev.issuer,
        dev.key.display()
    );
    if let Some(s) = dev.sample_upstream {
        println!("  sample API  http://{s}");
    }
    if let Some(g) = graph {
        println!("  fake Graph  http://{g}  (the directory, synced every few seconds)");
    }
    println!();
    for (title, spec) in calls {
        let token = key.sign(&spec.claims())?;
        let auth = format!(" -H 'Authorization: Bearer {token}'");
        println!("# {title}");
        println!("curl -si http://{listener}{prefix}/42{auth}");
        print_tls(tls_calls.as_ref(), &format!("{prefix}/42{auth}"));
        println!();
    }
    println!("# No token at all (401)");
    println!("curl -si http://{listener}{prefix}/42");
    print_tls(tls_calls.as_ref(), &format!("{prefix}/42"));
    println!();
    if let Some(g) = graph {
        let interval = config
            .directory
            .graph
            .as_ref()
            .map_or(0, |c| c.interval.as_secs());
        println!("# Disable Sales Assistant - EMEA in the fake Graph, as an admin would in Entra;");
        println!("# within {interval} s the first call above is refused (403 agent_disabled), token unchanged:");
        println!(
            "curl -si -X PATCH http://{g}/v1.0/servicePrincipals/{SALES_AGENT_EMEA} -H 'Content-Type: application/json' -d '{{\"accountEnabled\": false}}'"
        );
        println!("# and enable it again:");
        println!(
            "curl -si -X PATCH http://{g}/v1.0/servicePrincipals/{SALES_AGENT_EMEA} -H 'Content-Type: application/json' -d '{{\"accountEnabled\": true}}'"
        );
        println!();
    }
    println!("Mint more with: cargo run --release -- token mint --help");
    Ok(())
}

/// The call `rest` (path and options) over the HTTPS listener, as HTTP/1.1 and as h2 (curl
/// offers h2 over TLS unless told `--http1.1`).
fn print_tls(tls: Option<&TlsCalls>, rest: &str) {
    if let Some(TlsCalls { base, ca_file }) = tls {
        let ca = shell_word(ca_file);
        println!("curl --cacert {ca} --http1.1 -si {base}{rest}");
        println!("curl --cacert {ca} --http2 -si {base}{rest}");
    }
}
