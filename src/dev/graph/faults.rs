//! Faults injected into answers, and the record of every request.

use super::collections::graph_error;
use super::GraphState;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How the fake misbehaves for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFault {
    /// 429 with `Retry-After` seconds.
    Throttle { retry_after_secs: u64 },
    /// 503 with `Retry-After` seconds.
    Unavailable { retry_after_secs: u64 },
    /// 500.
    ServerError,
    /// The normal answer, after this long.
    Slow(Duration),
    /// Half of the normal body, then the connection breaks.
    Truncated,
    /// A 200 whose chunked body (no `Content-Length`) streams this many bytes.
    Oversized(usize),
    /// `{"value": [` and the end.
    Malformed,
    /// The normal page with an `@odata.nextLink` on another origin.
    ForeignNextLink,
}

/// Which requests a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTarget {
    /// GETs of Graph collections.
    Graph,
    /// The token endpoint.
    Token,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub at: Instant,
    pub method: String,
    /// Path and query.
    pub path: String,
    pub status: u16,
}

/// A body of `chunks` copies of `chunk`, then, when `fail`, an error that breaks the
/// connection (the client sees a truncated body).
struct ChunkedBody {
    chunk: Bytes,
    chunks: usize,
    fail: bool,
}

impl axum::body::HttpBody for ChunkedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if self.chunks > 0 {
            self.chunks -= 1;
            return Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.clone()))));
        }
        if self.fail {
            self.fail = false;
            return Poll::Ready(Some(Err(std::io::Error::other("connection cut by fault"))));
        }
        Poll::Ready(None)
    }
}

fn json_response(status: StatusCode, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// Records every request and applies queued faults.
pub(super) async fn faults_and_record(
    State(s): State<Arc<GraphState>>,
    req: Request,
    next: Next,
) -> Response {
    let at = Instant::now();
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.to_string());
    let target = if req.uri().path().ends_with("/oauth2/v2.0/token") {
        Some(FaultTarget::Token)
    } else if req.method() == axum::http::Method::GET
        && (path.starts_with("/v1.0/") || path.starts_with("/beta/"))
    {
        Some(FaultTarget::Graph)
    } else {
        None
    };
    let fault = target.and_then(|t| s.take_fault(t));
    let throttled = |status: StatusCode, secs: u64| {
        let mut r = graph_error(status, "TooManyRequests", "Too many requests.");
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
        r
    };
    let response = match fault {
        Some(GraphFault::Throttle { retry_after_secs }) => {
            throttled(StatusCode::TOO_MANY_REQUESTS, retry_after_secs)
        }
        Some(GraphFault::Unavailable { retry_after_secs }) => {
            throttled(StatusCode::SERVICE_UNAVAILABLE, retry_after_secs)
        }
        Some(GraphFault::ServerError) => graph_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Injected failure.",
        ),
        Some(GraphFault::Malformed) => json_response(StatusCode::OK, Body::from("{\"value\": [")),
        Some(GraphFault::Oversized(bytes)) => {
            let chunk = Bytes::from(vec![b' '; 64 * 1024]);
            json_response(
                StatusCode::OK,
                Body::new(ChunkedBody {
                    chunks: bytes.div_ceil(chunk.len()),
                    chunk,
                    fail: false,
                }),
            )
        }
        Some(GraphFault::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            next.run(req).await
        }
        Some(GraphFault::Truncated) => {
            let full = next.run(req).await;
            let status = full.status();
            let body = axum::body::to_bytes(full.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            let half = body.slice(..body.len() / 2);
            let mut r = json_response(
                status,
                Body::new(ChunkedBody {
                    chunk: half,
                    chunks: 1,
                    fail: true,
                }),
            );
            r.headers_mut()
                .insert("content-length", HeaderValue::from(body.len()));
            r
        }
        Some(GraphFault::ForeignNextLink) => {
            let full = next.run(req).await;
            let body = axum::body::to_bytes(full.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            let mut page: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            page["@odata.nextLink"] =
                json!(format!("http://graph.attacker.invalid{path}&$skiptoken=1"));
            Json(page).into_response()
        }
        None => next.run(req).await,
    };
    s.record(at, &method, &path, response.status().as_u16());
    response
}
