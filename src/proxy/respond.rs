//! The one table from outcomes to HTTP responses: status, JSON body, `WWW-Authenticate`.
//!
//! Bodies carry a stable `reason` code and the `decision_id`, never token content or policy
//! text. 401s follow RFC 6750: no error code when no token was sent, `invalid_token`
//! otherwise; policy denials for a missing role or scope say `insufficient_scope`.

use crate::authorize::Denial;
use crate::identity::TokenError;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// The realm named in `WWW-Authenticate`.
pub const REALM: &str = "agentgate";

/// A response the gateway writes itself.
#[derive(Debug, Clone)]
pub struct Rejection<'a> {
    pub status: u16,
    pub reason: &'a str,
    pub www_authenticate: Option<String>,
    pub retry_after: Option<u32>,
    pub extra_headers: &'a [(HeaderName, HeaderValue)],
}

impl<'a> Rejection<'a> {
    /// A plain rejection without authentication headers.
    pub fn plain(status: u16, reason: &'a str) -> Self {
        Self {
            status,
            reason,
            www_authenticate: None,
            retry_after: None,
            extra_headers: &[],
        }
    }

    /// The rendering of a pipeline denial.
    pub fn for_denial(d: &'a Denial) -> Self {
        match d {
            Denial::Token(TokenError::Missing | TokenError::NotBearer) => Self {
                www_authenticate: Some(format!("Bearer realm=\"{REALM}\"")),
                ..Self::plain(401, d.reason())
            },
            Denial::Token(TokenError::MultipleHeaders) => Self {
                www_authenticate: Some(bearer(
                    "invalid_request",
                    "send exactly one Authorization header",
                )),
                ..Self::plain(400, d.reason())
            },
            Denial::Token(TokenError::KeysUnavailable) => Self {
                retry_after: Some(5),
                ..Self::plain(503, d.reason())
            },
            Denial::Token(e) => Self {
                www_authenticate: Some(bearer("invalid_token", &e.to_string())),
                ..Self::plain(401, d.reason())
            },
            Denial::Directory(_) | Denial::PolicyError(_) => Self::plain(403, d.reason()),
            Denial::Policy {
                status,
                insufficient_scope,
                response_headers,
                ..
            } => Self {
                www_authenticate: insufficient_scope.then(|| {
                    bearer(
                        "insufficient_scope",
                        "the token lacks a role or scope this request needs",
                    )
                }),
                extra_headers: response_headers,
                ..Self::plain(*status, d.reason())
            },
        }
    }
}

fn bearer(error: &str, description: &str) -> String {
    format!("Bearer realm=\"{REALM}\", error=\"{error}\", error_description=\"{description}\"")
}

/// The short `error` word for a status.
fn error_word(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        431 => "request_header_fields_too_large",
        502 => "bad_gateway",
        503 => "service_unavailable",
        504 => "gateway_timeout",
        s if s < 500 => "client_error",
        _ => "server_error",
    }
}

/// Builds the JSON body `{"error", "reason", "decision_id"}`.
pub fn body(status: u16, reason: &str, decision_id: &str) -> Bytes {
    let v = serde_json::json!({
        "error": error_word(status),
        "reason": reason,
        "decision_id": decision_id,
    });
    Bytes::from(v.to_string())
}

/// Writes `r` as the complete response.
pub async fn send(session: &mut Session, r: &Rejection<'_>, decision_id: &str) -> Result<()> {
    let body = body(r.status, r.reason, decision_id);
    let mut header = ResponseHeader::build(r.status, Some(6))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    header.insert_header("x-agentgate-decision-id", decision_id)?;
    if let Some(w) = &r.www_authenticate {
        header.insert_header(http::header::WWW_AUTHENTICATE, w.as_str())?;
    }
    if let Some(s) = r.retry_after {
        header.insert_header(http::header::RETRY_AFTER, s.to_string())?;
    }
    for (n, v) in r.extra_headers {
        header.append_header(n.clone(), v.clone())?;
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}
