//! The token endpoint: client credentials with a secret, a federated token, or a
//! certificate client assertion.

use super::{lock, GraphState};
use crate::graph::credential::{AssertionClaims, JWT_BEARER_ASSERTION};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, Validation};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the token endpoint accepts.
#[derive(Debug, Clone, Default)]
pub struct FakeCredentials {
    pub client_id: String,
    pub client_secret: Option<String>,
    /// PEM certificate whose key must sign client assertions.
    pub certificate_pem: Option<Vec<u8>>,
    pub federated_token: Option<String>,
}

pub(super) struct IssuedToken {
    pub(super) expires: Instant,
}

fn token_error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

async fn token(
    State(s): State<Arc<GraphState>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    if !tenant.eq_ignore_ascii_case(&s.tenant_id) {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS90002: Tenant not found.",
        );
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str);
    if field("grant_type") != Some("client_credentials") {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    let credentials = lock(&s.credentials).clone();
    for k in ["client_secret", "client_assertion"] {
        if let Some(v) = field(k) {
            lock(&s.received).push(v.to_string());
        }
    }
    if field("client_id") != Some(credentials.client_id.as_str()) {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "AADSTS700016: Application not found in the directory.",
        );
    }
    // The resource is the Graph origin the client was configured with (this fake, or the
    // public cloud's name for it).
    let scope_ok = field("scope").is_some_and(|sc| {
        sc.strip_suffix("/.default")
            .is_some_and(|r| r.starts_with("http://") || r.starts_with("https://"))
    });
    if !scope_ok {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS70011: The provided value for the input parameter 'scope' is not valid.",
        );
    }
    let verdict = match (
        field("client_secret"),
        field("client_assertion_type"),
        field("client_assertion"),
    ) {
        (Some(secret), None, None) => match &credentials.client_secret {
            Some(expected) if expected == secret => Ok(()),
            _ => Err("AADSTS7000215: Invalid client secret provided."),
        },
        (None, Some(JWT_BEARER_ASSERTION), Some(assertion)) => {
            s.check_assertion(&credentials, assertion, &tenant)
        }
        _ => Err("AADSTS7000218: The request body must contain client_assertion or client_secret."),
    };
    if let Err(description) = verdict {
        return token_error(StatusCode::UNAUTHORIZED, "invalid_client", description);
    }
    let mut raw = [0u8; 24];
    if aws_lc_rs::rand::fill(&mut raw).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let access_token = format!(
        "fake-graph-token-{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let lifetime = s.token_lifetime_secs.load(Ordering::Relaxed);
    lock(&s.tokens).insert(
        access_token.clone(),
        IssuedToken {
            expires: Instant::now() + Duration::from_secs(lifetime),
        },
    );
    lock(&s.issued).push(access_token.clone());
    Json(json!({
        "token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
        "access_token": access_token,
    }))
    .into_response()
}

impl GraphState {
    /// A federated token, or a certificate assertion signed by the configured key.
    fn check_assertion(
        &self,
        credentials: &FakeCredentials,
        assertion: &str,
        tenant: &str,
    ) -> Result<(), &'static str> {
        if credentials
            .federated_token
            .as_deref()
            .is_some_and(|t| t == assertion)
        {
            return Ok(());
        }
        let Some((key, thumbprint)) = &self.certificate else {
            return Err("AADSTS700027: Client assertion failed signature validation.");
        };
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|_| "AADSTS50027: JWT token is invalid or malformed.")?;
        if header.x5t_s256.as_deref() != Some(thumbprint.as_str()) {
            return Err("AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application.");
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[format!("{}/{tenant}/oauth2/v2.0/token", self.base_url())]);
        validation.set_issuer(&[credentials.client_id.as_str()]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub", "nbf"]);
        validation.leeway = 0;
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, key, &validation)
            .map_err(|_| "AADSTS700027: Client assertion failed signature validation.")?
            .claims;
        if claims.sub != credentials.client_id || claims.jti.is_empty() {
            return Err("AADSTS700023: Client assertion subject does not match the client id.");
        }
        Ok(())
    }
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(super) fn routes() -> Router<Arc<GraphState>> {
    Router::new().route("/{tenant}/oauth2/v2.0/token", post(token))
}
