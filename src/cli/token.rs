//! `agentgate token decode` and `token mint`.

use crate::config::{Config, IdentityConfig, KeySource, TenantConfig};
use crate::dev::{SigningIdentity, TokenSpec};
use crate::identity::caller::classify_unverified;
use crate::identity::{CallerKind, KeyStore, TokenValidator};
use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Reads `TOKEN`, `@FILE` or `-` (standard input), trimming whitespace and a `Bearer ` prefix.
pub fn read_token(arg: &str) -> Result<String> {
    let text = if arg == "-" {
        std::io::read_to_string(std::io::stdin())
            .context("failed to read the token from standard input")?
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path)
            .with_context(|| format!("failed to read the token from {path}"))?
    } else {
        arg.to_string()
    };
    let t = text.trim();
    Ok(t.strip_prefix("Bearer ").unwrap_or(t).trim().to_string())
}

fn decode_part(part: Option<&str>, what: &str) -> Result<serde_json::Value> {
    let part = part.with_context(|| {
        format!("the token has no {what} part: expected header.payload.signature")
    })?;
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .with_context(|| format!("the {what} is not base64url"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("the {what} is not JSON"))
}

/// What a facet value means (token reference §3.2); unknown values are shown as such.
fn facet_meaning(v: u64) -> &'static str {
    match v {
        11 => "agent identity",
        13 => "agent user",
        _ => "no documented meaning",
    }
}

/// Prints header, claims and classification; verifies only when `jwks` is given.
pub fn decode(token_arg: &str, jwks: Option<&Path>) -> Result<()> {
    let token = read_token(token_arg)?;
    let mut parts = token.split('.');
    let header = decode_part(parts.next(), "header")?;
    let claims_part = parts.next();
    let claims = decode_part(claims_part, "payload")?;
    println!("header:\n{}", serde_json::to_string_pretty(&header)?);
    println!("claims:\n{}", serde_json::to_string_pretty(&claims)?);
    let claim_bytes = serde_json::to_vec(&claims)?;
    match classify_unverified(&claim_bytes) {
        Ok(c) => {
            println!("caller kind:  {}", c.kind.as_str());
            println!("tenant:       {}", c.tenant);
            println!(
                "actor:        {} ({})",
                c.actor_id,
                if c.kind.is_agent() {
                    "agent identity"
                } else {
                    "client application"
                }
            );
            println!("subject:      {}", c.subject_id);
            if let Some(bp) = &c.blueprint_id {
                println!("blueprint:    {bp}");
            }
            for (name, values) in [
                ("actor", &c.facets.actor),
                ("subject", &c.facets.subject),
                ("tenant", &c.facets.tenant),
            ] {
                let shown: Vec<String> = values
                    .iter()
                    .map(|v| format!("{v} ({})", facet_meaning(u64::from(*v))))
                    .collect();
                println!(
                    "{name:<8} facets: {}",
                    if shown.is_empty() {
                        "-".into()
                    } else {
                        shown.join(", ")
                    }
                );
            }
        }
        Err(e) => println!("caller kind:  not classified: {} ({})", e, e.reason()),
    }
    let Some(jwks) = jwks else {
        println!("signature:    NOT VERIFIED (pass --jwks FILE to verify)");
        return Ok(());
    };
    let tid = claims["tid"]
        .as_str()
        .context("the token has no tid; cannot pick a tenant")?;
    let identity = IdentityConfig {
        issuers: crate::entra::Issuers::default(),
        ca_file: None,
        algorithms: vec![jsonwebtoken::Algorithm::RS256],
        leeway: std::time::Duration::from_secs(60),
        max_token_bytes: 64 * 1024,
        refresh_interval: std::time::Duration::from_secs(3600),
        min_refetch_interval: std::time::Duration::from_secs(30),
        max_key_age: std::time::Duration::from_secs(86400),
        fetch_timeout: std::time::Duration::from_secs(5),
        max_response_bytes: 1024 * 1024,
        tenants: vec![TenantConfig {
            id: tid.to_string(),
            keys: KeySource::File {
                path: PathBuf::from(jwks),
            },
        }],
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let keys = Arc::new(KeyStore::new(&identity)?);
    runtime.block_on(keys.refresh_due());
    let validator = TokenValidator::new(keys, &identity);
    match runtime.block_on(validator.verify(&token, crate::clock::unix_now())) {
        Ok(_) => println!("signature:    valid (and issuer, lifetime and agent claims check out)"),
        Err(e) => println!("signature:    REJECTED: {e} ({})", e.reason()),
    }
    Ok(())
}

/// Options of `token mint`.
#[derive(Debug)]
pub struct MintOptions {
    pub kind: String,
    pub client: String,
    pub blueprint: Option<String>,
    pub subject: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub tenant: Option<String>,
    pub aud: Option<String>,
    pub version: String,
    pub ttl: std::time::Duration,
    pub key: Option<PathBuf>,
    /// How many distinct tokens (each with its own `uti`).
    pub count: usize,
}

/// Mints dev tokens from the dev key.
pub fn mint(config: &Config, o: MintOptions) -> Result<Vec<String>> {
    let Some(kind) = CallerKind::parse(&o.kind) else {
        bail!("unknown kind {:?}: use one of agent_app, agent_obo, agent_user, app, user, app_obo_agent_user", o.kind);
    };
    let key_path = match (&o.key, &config.dev) {
        (Some(k), _) => k.clone(),
        (None, Some(dev)) => dev.key.clone(),
        (None, None) => bail!("no signing key: pass --key or add a [dev] section with key = ..."),
    };
    let pem = std::fs::read(&key_path)
        .with_context(|| format!("failed to read {}", key_path.display()))?;
    let key = SigningIdentity::from_pem(&pem)?;
    let spec = TokenSpec {
        kind,
        tenant: match o.tenant {
            Some(t) => t,
            None => config
                .identity
                .tenants
                .first()
                .map(|t| t.id.clone())
                .context("no tenant configured; pass --tenant")?,
        },
        version: o.version,
        audience: match o.aud {
            Some(a) => a,
            None => config
                .routes
                .first()
                .and_then(|r| r.audiences.first().cloned())
                .context("no route audience configured; pass --aud")?,
        },
        client: o.client,
        blueprint: o.blueprint,
        subject: o.subject,
        roles: o.roles,
        scopes: o.scopes,
        issued_at: crate::clock::unix_now(),
        lifetime_secs: o.ttl.as_secs(),
        extra: Default::default(),
    };
    let mut claims = spec.claims();
    if o.count <= 1 {
        return Ok(vec![key.sign(&claims)?]);
    }
    let base = claims
        .get("uti")
        .and_then(|u| u.as_str())
        .unwrap_or("dev")
        .to_string();
    (0..o.count)
        .map(|i| {
            claims.insert("uti".into(), format!("{base}-{i}").into());
            Ok(key.sign(&claims)?)
        })
        .collect()
}
