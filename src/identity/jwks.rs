//! Fetching and parsing a tenant's signing keys: OIDC discovery, then the JWKS document.
//!
//! Responses are size-capped while they stream in, the JWKS address must stay on the
//! discovery host, and only RSA signing keys survive parsing. Nothing here ever follows an
//! address taken from a token.

use crate::config::KeySource;
use crate::entra::Issuers;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Smallest RSA modulus accepted (2048 bits), the floor of RFC 7518 and of Entra's keys.
const MIN_MODULUS_BYTES: usize = 256;

/// One usable signing key.
pub struct SigningKey {
    pub key: DecodingKey,
    /// The algorithm the JWK pins, if it names one; a token must then use exactly it.
    pub alg: Option<Algorithm>,
}

/// The keys of one tenant by `kid`.
pub type KeyMap = HashMap<String, Arc<SigningKey>>;

/// Why a key fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFetchError {
    #[error("reading {url}: {message}")]
    Transport { url: String, message: String },
    #[error("GET {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: response larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("GET {url}: invalid JSON: {message}")]
    Json { url: String, message: String },
    #[error("discovery document at {url} names jwks_uri {jwks_uri}, which is not on the authority's host")]
    ForeignJwksUri { url: String, jwks_uri: String },
    #[error("discovery document at {url} is for issuer {issuer}, not this tenant")]
    WrongIssuer { url: String, issuer: String },
    #[error("discovery document at {url} names no issuer")]
    MissingIssuer { url: String },
    #[error("JWKS at {url} holds no usable RSA signing key")]
    NoUsableKeys { url: String },
}

/// What makes a key usable for one tenant.
#[derive(Debug, Clone, Copy)]
pub struct KeyRules<'a> {
    pub tenant: &'a str,
    /// The algorithms tokens may use; a JWK pinned to another is not kept.
    pub algorithms: &'a [Algorithm],
    /// The cloud's issuer forms: discovery must name the tenant's v2 issuer, and a JWK that
    /// names an issuer must name one of the tenant's.
    pub issuers: &'a Issuers,
}

/// Fetches discovery (when configured) and the JWKS, and parses the keys.
pub async fn fetch_keys(
    client: &reqwest::Client,
    source: &KeySource,
    rules: KeyRules<'_>,
    max_bytes: usize,
    timeout: Duration,
) -> Result<KeyMap, KeyFetchError> {
    let tenant = rules.tenant;
    let jwks_uri = match source {
        KeySource::Inline { jwks } => {
            let doc: JwksDocument =
                serde_json::from_value(jwks.clone()).map_err(|e| KeyFetchError::Json {
                    url: "inline".into(),
                    message: e.to_string(),
                })?;
            return usable_keys(doc, "inline".into(), rules);
        }
        KeySource::File { path } => {
            let url = path.display().to_string();
            let text = std::fs::read(path).map_err(|e| KeyFetchError::Transport {
                url: url.clone(),
                message: e.to_string(),
            })?;
            let doc: JwksDocument =
                serde_json::from_slice(&text).map_err(|e| KeyFetchError::Json {
                    url: url.clone(),
                    message: e.to_string(),
                })?;
            return usable_keys(doc, url, rules);
        }
        KeySource::Jwks { uri } => uri.clone(),
        KeySource::Discovery { authority } => {
            let url = format!("{authority}/{tenant}/v2.0/.well-known/openid-configuration");
            let doc: Discovery = get_json(client, &url, max_bytes, timeout).await?;
            match &doc.issuer {
                None => return Err(KeyFetchError::MissingIssuer { url }),
                Some(issuer) if !rules.issuers.is_v2(issuer, tenant) => {
                    return Err(KeyFetchError::WrongIssuer {
                        url,
                        issuer: issuer.clone(),
                    })
                }
                Some(_) => {}
            }
            if origin(&doc.jwks_uri) != origin(authority) {
                return Err(KeyFetchError::ForeignJwksUri {
                    url,
                    jwks_uri: doc.jwks_uri,
                });
            }
            doc.jwks_uri
        }
    };
    let doc: JwksDocument = get_json(client, &jwks_uri, max_bytes, timeout).await?;
    usable_keys(doc, jwks_uri, rules)
}

/// The usable keys of a JWKS document; none at all is a failed fetch.
fn usable_keys(
    doc: JwksDocument,
    url: String,
    rules: KeyRules<'_>,
) -> Result<KeyMap, KeyFetchError> {
    let keys = parse_jwks(doc, rules);
    if keys.is_empty() {
        return Err(KeyFetchError::NoUsableKeys { url });
    }
    Ok(keys)
}

/// `scheme://host[:port]` of a URL, lower-cased; the whole string when it has no path.
fn origin(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, r)) => {
            let host = r.split(['/', '?', '#']).next().unwrap_or("");
            format!(
                "{}://{}",
                scheme.to_ascii_lowercase(),
                host.to_ascii_lowercase()
            )
        }
        None => url.to_ascii_lowercase(),
    }
}

async fn get_json<T: for<'de> Deserialize<'de>>(
    client: &reqwest::Client,
    url: &str,
    max_bytes: usize,
    timeout: Duration,
) -> Result<T, KeyFetchError> {
    let transport = |e: reqwest::Error| KeyFetchError::Transport {
        url: url.to_string(),
        message: e.to_string(),
    };
    let body = tokio::time::timeout(timeout, async {
        let mut resp = client.get(url).send().await.map_err(transport)?;
        if !resp.status().is_success() {
            return Err(KeyFetchError::Status {
                url: url.to_string(),
                status: resp.status().as_u16(),
            });
        }
        let too_large = || KeyFetchError::TooLarge {
            url: url.to_string(),
            limit: max_bytes,
        };
        if resp.content_length().is_some_and(|l| l > max_bytes as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    })
    .await
    .map_err(|_| KeyFetchError::Transport {
        url: url.to_string(),
        message: format!("timed out after {timeout:?}"),
    })??;
    serde_json::from_slice(&body).map_err(|e| KeyFetchError::Json {
        url: url.to_string(),
        message: e.to_string(),
    })
}

#[derive(Deserialize)]
struct Discovery {
    issuer: Option<String>,
    jwks_uri: String,
}

/// A JWKS document; keys are parsed one by one so a single odd key cannot hide the others.
#[derive(Deserialize)]
pub struct JwksDocument {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: String,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    n: String,
    e: String,
    issuer: Option<String>,
}

/// Keeps the RSA signature keys that fit this tenant and the allowed algorithms.
pub fn parse_jwks(doc: JwksDocument, rules: KeyRules<'_>) -> KeyMap {
    let (tenant, allowed) = (rules.tenant, rules.algorithms);
    let mut out = KeyMap::new();
    for raw in doc.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
            continue;
        };
        // RFC 7517 §4.2-4.3: a key meant for encryption, or whose operations exclude
        // verification, is not a signature key.
        let not_for_verifying = jwk
            .key_ops
            .as_ref()
            .is_some_and(|ops| !ops.iter().any(|o| o == "verify"));
        if jwk.kty != "RSA" || jwk.use_.as_deref().is_some_and(|u| u != "sig") || not_for_verifying
        {
            continue;
        }
        let alg = match jwk.alg.as_deref().map(Algorithm::from_str) {
            None => None,
            Some(Ok(a)) if allowed.contains(&a) => Some(a),
            Some(_) => continue,
        };
        // Multi-tenant key sets carry a templated issuer; a concrete one must be this tenant's.
        if let Some(issuer) = &jwk.issuer {
            let issuer = issuer.replace("{tenantid}", tenant);
            if !rules.issuers.is_v2(&issuer, tenant) && !rules.issuers.is_v1(&issuer, tenant) {
                continue;
            }
        }
        let Ok(key) = DecodingKey::from_rsa_components(&jwk.n, &jwk.e) else {
            continue;
        };
        if modulus_len(&jwk.n) < MIN_MODULUS_BYTES {
            continue;
        }
        out.insert(jwk.kid, Arc::new(SigningKey { key, alg }));
    }
    out
}

/// Decoded byte length of a base64url modulus, ignoring leading zero bytes.
fn modulus_len(n: &str) -> usize {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(n.trim_end_matches('='))
        .map(|b| b.iter().skip_while(|x| **x == 0).count())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_compares_scheme_and_host_only() {
        assert_eq!(
            origin("https://Login.example/t/keys?x"),
            "https://login.example"
        );
        assert_ne!(
            origin("http://127.0.0.1:1/a"),
            origin("http://127.0.0.1:2/a")
        );
    }
}
