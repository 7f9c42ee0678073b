//! The admin listener: `/healthz`, `/readyz` and `/metrics`, meant for loopback.

use crate::authorize::Authorizer;
use crate::reload::Reloader;
use crate::telemetry::Metrics;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

/// Serves health and metrics.
pub struct Admin {
    pub authorizer: Arc<Authorizer>,
    pub metrics: Arc<Metrics>,
    pub reloader: Arc<Reloader>,
    pub connections: Arc<super::admission::ConnectionCounts>,
    pub decision_log: Arc<crate::telemetry::DecisionLog>,
}

impl Admin {
    fn readiness(&self) -> (bool, serde_json::Value) {
        let keys = self.authorizer.validator().keys();
        let snapshot = self.authorizer.policy().load();
        let ready = keys.ready();
        let body = serde_json::json!({
            "ready": ready,
            "pid": std::process::id(),
            "revision": snapshot.revision,
            "policy_engine": snapshot.engine_state(),
            "policy_loaded_at_unix": snapshot.loaded_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "tenants": keys.status(),
            "cached_tokens": self.authorizer.cache_stats().entries,
            "reload": *self.reloader.status(),
        });
        (ready, body)
    }
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_str(content_type)
            .unwrap_or(http::HeaderValue::from_static("text/plain")),
    );
    let len = resp.body().len();
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let post = session.req_header().method == http::Method::POST;
        match session.req_header().uri.path() {
            "/reload" if post => {
                let reloader = self.reloader.clone();
                match tokio::task::spawn_blocking(move || reloader.reload("admin")).await {
                    Ok(Ok(revision)) => respond(
                        200,
                        "application/json",
                        serde_json::json!({"ok": true, "revision": revision})
                            .to_string()
                            .into_bytes(),
                    ),
                    Ok(Err(e)) => respond(
                        422,
                        "application/json",
                        serde_json::json!({"ok": false, "error": e.to_string()})
                            .to_string()
                            .into_bytes(),
                    ),
                    Err(_) => respond(
                        500,
                        "application/json",
                        br#"{"ok":false,"error":"reload task failed"}"#.to_vec(),
                    ),
                }
            }
            "/healthz" => respond(200, "application/json", br#"{"status":"ok"}"#.to_vec()),
            "/readyz" => {
                let (ready, body) = self.readiness();
                respond(
                    if ready { 200 } else { 503 },
                    "application/json",
                    body.to_string().into_bytes(),
                )
            }
            "/metrics" => {
                self.metrics
                    .observe_keys(&self.authorizer.validator().keys().status());
                self.metrics.observe_cache(self.authorizer.cache_stats());
                self.metrics.observe_connections(self.connections.open());
                self.metrics.observe_decision_log(self.decision_log.stats());
                self.metrics.observe_policy_engine(
                    crate::policy::compiled::engine_events(),
                    self.authorizer.policy().load().engine_state(),
                    self.authorizer.shadow().map(|s| s.snapshot.engine_state()),
                );
                respond(200, "text/plain; version=0.0.4", self.metrics.render())
            }
            _ => respond(
                404,
                "application/json",
                br#"{"error":"not_found"}"#.to_vec(),
            ),
        }
    }
}
