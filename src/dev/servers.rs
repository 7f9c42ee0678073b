//! The demo's loopback servers: a dev issuer (OIDC discovery + JWKS) and a sample API.
//!
//! The issuer's key set, availability and request count are adjustable at run time, so the
//! same server also stands in for Entra in integration tests (rotation, outages).

use crate::identity::v2_issuer;
use arc_swap::ArcSwap;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Live state of a dev issuer.
pub struct IssuerState {
    /// The JWKs served.
    pub keys: ArcSwap<Vec<Value>>,
    /// When false, every request gets 503.
    pub up: AtomicBool,
    /// JWKS documents served (discovery not counted).
    pub jwks_requests: AtomicU64,
    /// The address it listens on (for `jwks_uri`).
    pub addr: SocketAddr,
}

impl IssuerState {
    /// An issuer at `addr` serving `keys`.
    pub fn new(addr: SocketAddr, keys: Vec<Value>) -> Arc<Self> {
        Arc::new(Self {
            keys: ArcSwap::from_pointee(keys),
            up: AtomicBool::new(true),
            jwks_requests: AtomicU64::new(0),
            addr,
        })
    }
}

async fn discovery(State(s): State<Arc<IssuerState>>, Path(tid): Path<String>) -> Response {
    if !s.up.load(Ordering::Relaxed) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Json(json!({
        "issuer": v2_issuer(&tid),
        "jwks_uri": format!("http://{}/{tid}/discovery/v2.0/keys", s.addr),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

async fn jwks(State(s): State<Arc<IssuerState>>) -> Response {
    if !s.up.load(Ordering::Relaxed) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    s.jwks_requests.fetch_add(1, Ordering::Relaxed);
    Json(json!({ "keys": **s.keys.load() })).into_response()
}

/// Serves discovery and JWKS on `listener` until the task is dropped.
pub async fn serve_issuer(
    listener: tokio::net::TcpListener,
    state: Arc<IssuerState>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/{tid}/v2.0/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/{tid}/discovery/v2.0/keys", get(jwks))
        .with_state(state);
    axum::serve(listener, app).await
}

/// Echoes the request back as JSON: method, path, query and every header received.
async fn echo(method: Method, uri: Uri, headers: HeaderMap) -> Json<Value> {
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                json!(v.to_str().unwrap_or("<binary>")),
            )
        })
        .collect();
    Json(json!({
        "service": "sample-api",
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": headers,
    }))
}

/// Serves the sample API (an echo of each request) on `listener`.
pub async fn serve_sample_api(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, Router::new().fallback(echo)).await
}
