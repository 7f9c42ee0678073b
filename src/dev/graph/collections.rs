//! The collections, the sponsor list, and the state changes an administrator makes.

use super::tenant::{
    synthetic_id, synthetic_index, FakeAgent, FakeAgentUser, FakeBlueprint, FakeSponsor,
    FakeTenant, SYN_AGENT,
};
use super::{lock, GraphState, EXPAND_LIMIT};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

pub(super) fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

// === impl GraphState ===

impl GraphState {
    fn blueprint_json(&self, b: &FakeBlueprint) -> Value {
        json!({
            "id": b.object_id, "appId": b.app_id, "displayName": b.name,
            "accountEnabled": self.enabled(&b.object_id, b.enabled),
            "appOwnerOrganizationId": b.home_tenant, "publisherName": b.publisher,
            "disabledByMicrosoftStatus": b.disabled_by_microsoft,
        })
    }

    fn agent_json(&self, a: &FakeAgent, expand: bool) -> Value {
        let mut v = json!({
            "id": a.id, "appId": a.id, "displayName": a.name,
            "agentIdentityBlueprintId": a.blueprint_app_id,
            "accountEnabled": self.enabled(&a.id, a.enabled),
            "disabledByMicrosoftStatus": a.disabled_by_microsoft,
        });
        if expand {
            // Graph cuts expanded relationships of directory objects at 20, silently.
            v["sponsors"] = Value::Array(
                a.sponsors
                    .iter()
                    .take(EXPAND_LIMIT)
                    .map(sponsor_json)
                    .collect(),
            );
        }
        v
    }

    fn agent_user_json(&self, u: &FakeAgentUser) -> Value {
        json!({
            "id": u.id, "displayName": u.name, "userPrincipalName": u.user_principal_name,
            "accountEnabled": self.enabled(&u.id, u.enabled), "identityParentId": u.parent,
        })
    }

    pub(super) fn risky_at(
        &self,
        t: &FakeTenant,
        index: usize,
        prefer_new_enums: bool,
    ) -> Option<Value> {
        let entry = |id: &str, kind: &str, level: &str, state: &str| {
            let (odata, identity_type) = match kind {
                "blueprint" => (
                    "#microsoft.graph.riskyAgentIdentityBlueprintPrincipal",
                    if prefer_new_enums {
                        "agentIdentityBlueprintPrincipal"
                    } else {
                        "unknownFutureValue"
                    },
                ),
                "agent_user" => ("#microsoft.graph.riskyAgentUser", "agentUser"),
                _ => ("#microsoft.graph.riskyAgentIdentity", "agentIdentity"),
            };
            json!({
                "@odata.type": odata, "id": id, "agentDisplayName": id, "identityType": identity_type,
                "isEnabled": true, "isDeleted": false, "isProcessing": false,
                "riskLevel": level, "riskState": state, "riskDetail": "none",
                "riskLastModifiedDateTime": "2026-01-01T00:00:00Z",
            })
        };
        if let Some((id, (level, state))) = t.risk.iter().nth(index) {
            let kind = t.kind_of(id).unwrap_or("agent");
            return Some(entry(id, kind, level, state));
        }
        let s = t.synthetic.filter(|s| s.risky_every > 0)?;
        let agent = (index - t.risk.len()) * s.risky_every;
        (agent < s.blueprints * s.agents_per_blueprint)
            .then(|| entry(&synthetic_id(SYN_AGENT, agent), "agent", "medium", "atRisk"))
    }
}

fn sponsor_json(s: &FakeSponsor) -> Value {
    json!({"@odata.type": s.odata_type, "id": s.id, "displayName": s.name})
}

/// `$top`, `$skiptoken` and `$expand` of a collection request.
#[derive(Debug, Default)]
struct Paging {
    top: Option<usize>,
    skip: Option<usize>,
    expand: Option<String>,
}

impl Paging {
    fn of(uri: &axum::http::Uri) -> Self {
        let mut p = Paging::default();
        for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
            match &*k {
                "$top" => p.top = v.parse().ok(),
                "$skiptoken" => p.skip = v.parse().ok(),
                "$expand" => p.expand = Some(v.into_owned()),
                _ => {}
            }
        }
        p
    }
}

/// A page of `total` objects starting at `$skiptoken`, made by `item(index)`.
fn page(
    s: &GraphState,
    path: &str,
    query: &str,
    paging: &Paging,
    context: &str,
    mut item: impl FnMut(usize) -> Option<Value>,
) -> Response {
    let size = paging
        .top
        .unwrap_or(100)
        .min(s.page_size.load(Ordering::Relaxed))
        .max(1);
    let start = paging.skip.unwrap_or(0);
    let mut value = Vec::with_capacity(size);
    let mut next = None;
    for i in start..start + size + 1 {
        match item(i) {
            Some(v) if value.len() < size => value.push(v),
            Some(_) => next = Some(i),
            None => break,
        }
    }
    let mut body = json!({
        "@odata.context": format!("{}/v1.0/$metadata#{context}", s.base_url()),
        "value": value,
    });
    if let Some(next) = next {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|p| !p.starts_with("$skiptoken=") && !p.is_empty())
            .collect();
        body["@odata.nextLink"] = json!(format!(
            "{}{path}?{}&$skiptoken={next}",
            s.base_url(),
            kept.join("&")
        ));
    }
    Json(body).into_response()
}

/// A 401 unless the request carries a token this fake issued and that has not expired.
fn unauthorized(s: &GraphState, headers: &HeaderMap) -> Option<Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let valid = token.is_some_and(|t| {
        lock(&s.tokens)
            .get(t)
            .is_some_and(|i| Instant::now() < i.expires)
    });
    (!valid).then(|| {
        graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty, expired or not issued by this fake.",
        )
    })
}

async fn service_principals(
    State(s): State<Arc<GraphState>>,
    Path(cast): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let paging = Paging::of(&uri);
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("");
    let t = lock(&s.tenant).clone();
    match cast.as_str() {
        "microsoft.graph.agentIdentityBlueprintPrincipal" => page(
            &s,
            &path,
            query,
            &paging,
            "servicePrincipals/microsoft.graph.agentIdentityBlueprintPrincipal",
            |i| t.blueprint_at(i).map(|b| s.blueprint_json(&b)),
        ),
        "microsoft.graph.agentIdentity" => {
            let expand = paging
                .expand
                .as_deref()
                .is_some_and(|e| e.starts_with("sponsors"));
            page(
                &s,
                &path,
                query,
                &paging,
                "servicePrincipals/microsoft.graph.agentIdentity",
                |i| t.agent_at(i).map(|a| s.agent_json(&a, expand)),
            )
        }
        _ => graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "The fake serves only the agentIdentity and agentIdentityBlueprintPrincipal casts.",
        ),
    }
}

async fn sponsors(
    State(s): State<Arc<GraphState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let paging = Paging::of(&uri);
    let t = lock(&s.tenant).clone();
    let id = id.to_ascii_lowercase();
    let synthetic = synthetic_index(SYN_AGENT, &id)
        .filter(|i| *i < t.synthetic_counts().1)
        .and_then(|i| t.agent_at(t.agents.len() + i));
    let Some(agent) = t.agents.iter().find(|a| a.id == id).cloned().or(synthetic) else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            "No agent identity with this id.",
        );
    };
    page(
        &s,
        uri.path(),
        uri.query().unwrap_or(""),
        &paging,
        "directoryObjects",
        |i| agent.sponsors.get(i).map(sponsor_json),
    )
}

async fn users(
    State(s): State<Arc<GraphState>>,
    Path(cast): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let paging = Paging::of(&uri);
    if cast != "microsoft.graph.agentUser" {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "The fake serves only the agentUser cast.",
        );
    }
    let t = lock(&s.tenant).clone();
    page(
        &s,
        uri.path(),
        uri.query().unwrap_or(""),
        &paging,
        "users/microsoft.graph.agentUser",
        |i| t.agent_user_at(i).map(|u| s.agent_user_json(&u)),
    )
}

async fn risky_agents(
    State(s): State<Arc<GraphState>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let paging = Paging::of(&uri);
    let prefer = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("include-unknown-enum-members"));
    let t = lock(&s.tenant).clone();
    page(
        &s,
        uri.path(),
        uri.query().unwrap_or(""),
        &paging,
        "identityProtection/riskyAgents",
        |i| s.risky_at(&t, i, prefer),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnabledPatch {
    account_enabled: bool,
}

async fn patch_object(
    State(s): State<Arc<GraphState>>,
    Path(id): Path<String>,
    Json(patch): Json<EnabledPatch>,
    kinds: &[&str],
) -> Response {
    match s.kind_of(&id) {
        Some(kind) if kinds.contains(&kind) => {
            s.set_account_enabled(&id, patch.account_enabled);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            "No such object.",
        ),
    }
}

async fn patch_service_principal(
    state: State<Arc<GraphState>>,
    id: Path<String>,
    patch: Json<EnabledPatch>,
) -> Response {
    patch_object(state, id, patch, &["agent", "blueprint"]).await
}

async fn patch_user(
    state: State<Arc<GraphState>>,
    id: Path<String>,
    patch: Json<EnabledPatch>,
) -> Response {
    patch_object(state, id, patch, &["agent_user"]).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RiskPatch {
    risk_level: String,
    risk_state: String,
}

async fn set_risk(
    State(s): State<Arc<GraphState>>,
    Path(id): Path<String>,
    Json(r): Json<RiskPatch>,
) -> Response {
    if s.set_risk(&id, &r.risk_level, &r.risk_state) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            "No such agent object.",
        )
    }
}

/// The collections, the sponsor list, and the state changes.
pub(super) fn routes() -> Router<Arc<GraphState>> {
    Router::new()
        .route(
            "/v1.0/servicePrincipals/{cast}",
            get(service_principals).patch(patch_service_principal),
        )
        .route(
            "/v1.0/servicePrincipals/{id}/microsoft.graph.agentIdentity/sponsors",
            get(sponsors),
        )
        .route("/v1.0/users/{cast}", get(users).patch(patch_user))
        .route("/beta/identityProtection/riskyAgents", get(risky_agents))
        .route("/fake/riskyAgents/{id}", post(set_risk))
}
