//! The demo's loopback servers: a dev issuer (OIDC discovery + JWKS) and a sample API.
//!
//! The issuer's key set, availability, faults and request counts are adjustable at run time,
//! so the same server also stands in for Entra in outage drills and integration tests
//! (rotation, outages, hangs, oversized or malformed answers, foreign `jwks_uri`).

use crate::entra::Issuers;
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

/// How a dev issuer misbehaves, for outage drills and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    None = 0,
    /// 500 on every request.
    ServerError = 1,
    /// Answers after 30 s.
    Hang = 2,
    /// Invalid JSON.
    Malformed = 3,
    /// A 10 MiB body.
    Huge = 4,
    /// Discovery names a `jwks_uri` on another host.
    ForeignJwksUri = 5,
    /// Discovery names no `issuer`.
    NoIssuer = 6,
    /// Discovery names another tenant's issuer.
    WrongIssuer = 7,
}

/// Live state of a dev issuer.
pub struct IssuerState {
    /// The JWKs served.
    pub keys: ArcSwap<Vec<Value>>,
    /// When false, every request gets 503.
    pub up: AtomicBool,
    fault: std::sync::atomic::AtomicU8,
    /// JWKS documents served (discovery not counted).
    pub jwks_requests: AtomicU64,
    /// Requests of any kind received.
    pub requests: AtomicU64,
    in_flight: AtomicU64,
    /// The most requests ever handled at once.
    pub max_in_flight: AtomicU64,
    /// Delay before every answer, in milliseconds.
    pub delay_ms: AtomicU64,
    /// The address it listens on (for `jwks_uri`).
    pub addr: SocketAddr,
    /// `http` or `https`, as it is served (for `jwks_uri`).
    scheme: &'static str,
}

impl IssuerState {
    /// An issuer at `addr` serving `keys`.
    pub fn new(addr: SocketAddr, keys: Vec<Value>) -> Arc<Self> {
        Self::with_scheme(addr, keys, "http")
    }

    /// An issuer served over HTTPS (with `dev::tls::serve_tls`) at `addr`.
    pub fn new_https(addr: SocketAddr, keys: Vec<Value>) -> Arc<Self> {
        Self::with_scheme(addr, keys, "https")
    }

    fn with_scheme(addr: SocketAddr, keys: Vec<Value>, scheme: &'static str) -> Arc<Self> {
        Arc::new(Self {
            keys: ArcSwap::from_pointee(keys),
            up: AtomicBool::new(true),
            fault: std::sync::atomic::AtomicU8::new(Fault::None as u8),
            jwks_requests: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
            addr,
            scheme,
        })
    }

    /// Makes the issuer misbehave (or behave again with [`Fault::None`]).
    pub fn set_fault(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::Relaxed);
    }

    fn fault(&self) -> Fault {
        match self.fault.load(Ordering::Relaxed) {
            1 => Fault::ServerError,
            2 => Fault::Hang,
            3 => Fault::Malformed,
            4 => Fault::Huge,
            5 => Fault::ForeignJwksUri,
            6 => Fault::NoIssuer,
            7 => Fault::WrongIssuer,
            _ => Fault::None,
        }
    }

    /// Applies delay, availability and the fault common to both endpoints; `Some` is the
    /// response to send instead of the real one.
    async fn misbehave(&self) -> Option<Response> {
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        if !self.up.load(Ordering::Relaxed) {
            return Some(StatusCode::SERVICE_UNAVAILABLE.into_response());
        }
        match self.fault() {
            Fault::ServerError => Some(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
            Fault::Hang => {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                Some(StatusCode::GATEWAY_TIMEOUT.into_response())
            }
            Fault::Malformed => {
                Some(([("content-type", "application/json")], "{\"keys\": [").into_response())
            }
            Fault::Huge => Some(
                (
                    [("content-type", "application/json")],
                    vec![b' '; 10 * 1024 * 1024],
                )
                    .into_response(),
            ),
            Fault::None | Fault::ForeignJwksUri | Fault::NoIssuer | Fault::WrongIssuer => None,
        }
    }
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a IssuerState);

impl<'a> InFlight<'a> {
    fn enter(s: &'a IssuerState) -> Self {
        s.requests.fetch_add(1, Ordering::Relaxed);
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(s)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn discovery(State(s): State<Arc<IssuerState>>, Path(tid): Path<String>) -> Response {
    let _counted = InFlight::enter(&s);
    if let Some(r) = s.misbehave().await {
        return r;
    }
    let host = if s.fault() == Fault::ForeignJwksUri {
        format!("attacker.invalid:{}", s.addr.port())
    } else {
        s.addr.to_string()
    };
    let mut doc = json!({
        "issuer": Issuers::default().v2(&tid),
        "jwks_uri": format!("{}://{host}/{tid}/discovery/v2.0/keys", s.scheme),
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    match s.fault() {
        Fault::NoIssuer => {
            doc.as_object_mut().map(|d| d.remove("issuer"));
        }
        Fault::WrongIssuer => {
            doc["issuer"] = json!(Issuers::default().v2("aaaaaaaa-1111-1111-1111-0000000000ff"));
        }
        _ => {}
    }
    Json(doc).into_response()
}

async fn jwks(State(s): State<Arc<IssuerState>>) -> Response {
    let _counted = InFlight::enter(&s);
    if let Some(r) = s.misbehave().await {
        return r;
    }
    s.jwks_requests.fetch_add(1, Ordering::Relaxed);
    Json(json!({ "keys": **s.keys.load() })).into_response()
}

/// The issuer's routes: discovery and JWKS (serve over HTTPS with `dev::tls::serve_tls`).
pub fn issuer_router(state: Arc<IssuerState>) -> Router {
    Router::new()
        .route(
            "/{tid}/v2.0/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/{tid}/discovery/v2.0/keys", get(jwks))
        .with_state(state)
}

/// Serves discovery and JWKS on `listener` until the task is dropped.
pub async fn serve_issuer(
    listener: tokio::net::TcpListener,
    state: Arc<IssuerState>,
) -> std::io::Result<()> {
    axum::serve(listener, issuer_router(state)).await
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

/// The sample API's routes: an echo of each request.
pub fn sample_api_router() -> Router {
    Router::new().fallback(echo)
}

/// Serves the sample API (an echo of each request) on `listener`.
pub async fn serve_sample_api(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, sample_api_router()).await
}
