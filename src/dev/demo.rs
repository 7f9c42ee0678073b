//! The offline demo: starts the dev issuer and sample API, then prints ready-to-paste calls.

// The demo prints what to paste.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use super::servers::{serve_issuer, serve_sample_api, IssuerState};
use super::{SigningIdentity, TokenSpec};
use crate::config::{Config, DevConfig};
use crate::identity::CallerKind;

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
    #[error("failed to listen on {addr}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Loads the dev key named by the configuration.
pub fn load_key(dev: &DevConfig) -> Result<SigningIdentity, DemoError> {
    let pem = std::fs::read(&dev.key).map_err(|source| DemoError::Key {
        path: dev.key.display().to_string(),
        source,
    })?;
    Ok(SigningIdentity::from_pem(&pem)?)
}

fn bind(addr: std::net::SocketAddr) -> Result<std::net::TcpListener, DemoError> {
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

/// Starts the dev servers on a thread of their own and prints the demo calls.
pub fn start(config: &Config, dev: &DevConfig) -> Result<(), DemoError> {
    let key = load_key(dev)?;
    let issuer = bind(dev.issuer)?;
    let sample = dev.sample_upstream.map(bind).transpose()?;
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
                let issuer = tokio::net::TcpListener::from_std(issuer);
                let sample = sample.map(tokio::net::TcpListener::from_std).transpose();
                match (issuer, sample) {
                    (Ok(issuer), Ok(sample)) => {
                        let issuer_task = serve_issuer(issuer, state);
                        match sample {
                            Some(s) => {
                                let _ = tokio::join!(issuer_task, serve_sample_api(s));
                            }
                            None => {
                                let _ = issuer_task.await;
                            }
                        }
                    }
                    _ => tracing::error!("dev servers: failed to register listeners"),
                }
            });
        })
        .map_err(|source| DemoError::Bind {
            addr: dev.issuer.to_string(),
            source,
        })?;
    print_calls(config, dev, &key)
}

fn print_calls(config: &Config, dev: &DevConfig, key: &SigningIdentity) -> Result<(), DemoError> {
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
    println!();
    for (title, spec) in calls {
        let token = key.sign(&spec.claims())?;
        println!("# {title}");
        println!("curl -si http://{listener}{prefix}/42 -H 'Authorization: Bearer {token}'");
        println!();
    }
    println!("# No token at all (401)");
    println!("curl -si http://{listener}{prefix}/42");
    println!();
    println!("Mint more with: cargo run --release -- token mint --help");
    Ok(())
}
