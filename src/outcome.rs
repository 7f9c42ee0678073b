//! The outcome of a request, as one typed value, and everything derived from it in one
//! place: the status, the JSON body, `WWW-Authenticate` and `Retry-After`, the gRPC status,
//! the metric labels and the decision log's `allow`/`reason`.
//!
//! Reason codes form a closed set of gateway reasons ([`Refusal`] variants) plus the
//! policy's own reason strings. Bodies carry the reason and the decision id, never token
//! content or policy text. 401s follow RFC 6750: no error code when no token was sent,
//! `invalid_token` otherwise; policy denials for a missing role or scope say
//! `insufficient_scope`.

use crate::directory::ResolveError;
use crate::identity::TokenError;
use crate::policy::DecisionError;
use crate::request::framing::FramingError;
use crate::request::{HostError, TargetError};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use std::borrow::Cow;
use std::sync::Arc;

/// The realm named in `WWW-Authenticate`.
pub const REALM: &str = "agentgate";

/// Headers added to the upstream request or the response, as the policy named them.
pub type PolicyHeaders = Vec<(HeaderName, HeaderValue)>;

/// What the gateway concluded for one request.
#[derive(Debug, Clone)]
pub enum Outcome {
    Allowed(Allowed),
    Refused(Refusal),
}

/// An allowed request's instructions for the upstream leg.
#[derive(Debug, Clone)]
pub struct Allowed {
    /// The policy's reason (normally `allowed`).
    pub reason: Arc<str>,
    /// Added to the upstream request.
    pub headers: PolicyHeaders,
    /// Added to the response to the client.
    pub response_headers: PolicyHeaders,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request itself: framing, target, route, connection caps.
    Request(RequestError),
    /// The bearer token.
    Token(TokenError),
    /// The directory disagrees with the token.
    Directory(ResolveError),
    /// Policy said no.
    Policy(PolicyDenial),
    /// Policy could not decide (undefined, malformed, error, timeout): fail closed.
    PolicyError(DecisionError),
}

/// A deny decided by policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDenial {
    /// 4xx other than 401, 403 by default.
    pub status: u16,
    pub reason: Arc<str>,
    /// Answer with `WWW-Authenticate: Bearer error="insufficient_scope"`.
    pub insufficient_scope: bool,
    pub response_headers: PolicyHeaders,
}

/// The gateway's own reasons for refusing a request before it reaches the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    Framing(FramingError),
    UriTooLong,
    /// The body is longer than the route's `max_body_bytes` (declared or as it streams).
    BodyTooLarge,
    InvalidPath,
    InvalidHost,
    MissingHost,
    NoRoute,
    /// A WebSocket upgrade on a route without `websocket = true`.
    UpgradeNotAllowed,
    TooManyConnections,
    /// The connection's client certificate was verified but could not be read for policy.
    ClientCertificateUnreadable,
}

/// Why an allowed request got no answer from its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    Unreachable,
    Timeout,
    /// The route's `request_timeout` ran out before the answer began.
    RequestTimeout,
    Tls,
    /// The upstream broke the exchange (a reset, an invalid response).
    Error,
    /// The client broke the exchange.
    BadRequest,
    /// pingora reported an HTTP status for the failure.
    Status(u16),
    Internal,
}

impl From<TargetError> for RequestError {
    fn from(e: TargetError) -> Self {
        match e {
            TargetError::TooLong(_) => Self::UriTooLong,
            TargetError::NotUtf8 | TargetError::Path(_) => Self::InvalidPath,
            TargetError::Host(HostError::Invalid) => Self::InvalidHost,
            TargetError::Host(HostError::Missing) => Self::MissingHost,
        }
    }
}

impl From<FramingError> for RequestError {
    fn from(e: FramingError) -> Self {
        Self::Framing(e)
    }
}

impl RequestError {
    fn status(self) -> u16 {
        match self {
            Self::Framing(FramingError::HeadersTooLarge) => 431,
            Self::Framing(_) | Self::InvalidPath | Self::InvalidHost | Self::MissingHost => 400,
            Self::UriTooLong => 414,
            Self::BodyTooLarge => 413,
            Self::NoRoute => 404,
            Self::UpgradeNotAllowed | Self::ClientCertificateUnreadable => 403,
            Self::TooManyConnections => 503,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::Framing(FramingError::LengthAndChunked) => "ambiguous_framing",
            Self::Framing(FramingError::BadContentLength) => "invalid_content_length",
            Self::Framing(FramingError::BadTransferEncoding) => "invalid_transfer_encoding",
            Self::Framing(FramingError::HeadersTooLarge) => "headers_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::BodyTooLarge => "body_too_large",
            Self::InvalidPath => "invalid_path",
            Self::InvalidHost => "invalid_host",
            Self::MissingHost => "missing_host",
            Self::NoRoute => "no_route",
            Self::UpgradeNotAllowed => "upgrade_not_allowed",
            Self::TooManyConnections => "too_many_connections",
            Self::ClientCertificateUnreadable => "client_certificate_unreadable",
        }
    }
}

impl UpstreamFailure {
    /// The status the client gets.
    pub fn status(self) -> u16 {
        match self {
            Self::Unreachable | Self::Tls | Self::Error => 502,
            Self::Timeout | Self::RequestTimeout => 504,
            Self::BadRequest => 400,
            Self::Status(code) => code,
            Self::Internal => 500,
        }
    }

    /// The stable reason code.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Unreachable => "upstream_unreachable",
            Self::Timeout => "upstream_timeout",
            Self::RequestTimeout => "request_timeout",
            Self::Tls => "upstream_tls_error",
            Self::Error => "upstream_error",
            Self::BadRequest => "bad_request",
            Self::Status(_) => "http_error",
            Self::Internal => "internal_error",
        }
    }
}

impl Refusal {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::Request(e) => e.status(),
            Self::Token(TokenError::MultipleHeaders) => 400,
            Self::Token(TokenError::KeysUnavailable) => 503,
            Self::Token(_) => 401,
            Self::Directory(_) | Self::PolicyError(_) => 403,
            Self::Policy(d) => d.status,
        }
    }

    /// The stable reason code.
    pub fn reason(&self) -> &str {
        match self {
            Self::Request(e) => e.reason(),
            Self::Token(e) => e.reason(),
            Self::Directory(e) => e.reason(),
            Self::Policy(d) => &d.reason,
            Self::PolicyError(_) => "policy_error",
        }
    }

    /// `deny`, or `error` when policy could not decide (a metric label).
    pub fn label(&self) -> &'static str {
        match self {
            Self::PolicyError(_) => "error",
            _ => "deny",
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750), if any.
    pub fn www_authenticate(&self) -> Option<Cow<'static, str>> {
        match self {
            Self::Token(TokenError::Missing | TokenError::NotBearer) => {
                Some(Cow::Borrowed("Bearer realm=\"agentgate\""))
            }
            Self::Token(TokenError::MultipleHeaders) => Some(bearer(
                "invalid_request",
                "send exactly one Authorization header",
            )),
            Self::Token(TokenError::KeysUnavailable) => None,
            Self::Token(e) => Some(bearer("invalid_token", &e.to_string())),
            Self::Policy(d) if d.insufficient_scope => Some(bearer(
                "insufficient_scope",
                "the token lacks a role or scope this request needs",
            )),
            _ => None,
        }
    }

    /// `Retry-After` seconds, when trying again later can help.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Self::Token(TokenError::KeysUnavailable) => Some(5),
            Self::Request(RequestError::TooManyConnections) => Some(1),
            _ => None,
        }
    }

    /// True when the connection must not carry another request (the body's extent is in
    /// doubt).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Self::Request(RequestError::Framing(_) | RequestError::BodyTooLarge)
        )
    }

    /// Headers the policy asked to add to the refusal.
    pub fn extra_headers(&self) -> &[(HeaderName, HeaderValue)] {
        match self {
            Self::Policy(d) => &d.response_headers,
            _ => &[],
        }
    }

    /// The gRPC status a gRPC client gets for this refusal.
    pub fn grpc_status(&self) -> u8 {
        grpc_status_for(self.status())
    }
}

/// The gRPC status code for an HTTP status (the mapping of gRPC's HTTP-to-gRPC table).
pub fn grpc_status_for(status: u16) -> u8 {
    match status {
        400 | 414 | 431 => 3, // INVALID_ARGUMENT
        401 => 16,            // UNAUTHENTICATED
        403 => 7,             // PERMISSION_DENIED
        404 => 12,            // UNIMPLEMENTED
        413 | 429 => 8,       // RESOURCE_EXHAUSTED
        502..=504 => 14,      // UNAVAILABLE
        _ => 2,               // UNKNOWN
    }
}

/// A reason as a `grpc-message` value: percent-encoded as the gRPC HTTP/2 protocol says
/// (every byte outside printable ASCII, and `%`).
pub fn grpc_message(reason: &str) -> String {
    const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    percent_encoding::utf8_percent_encode(reason, ESCAPED).to_string()
}

fn bearer(error: &str, description: &str) -> Cow<'static, str> {
    Cow::Owned(format!(
        "Bearer realm=\"{REALM}\", error=\"{error}\", error_description=\"{description}\""
    ))
}

/// The short `error` word for a status.
fn error_word(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        413 => "payload_too_large",
        414 => "uri_too_long",
        431 => "request_header_fields_too_large",
        502 => "bad_gateway",
        503 => "service_unavailable",
        504 => "gateway_timeout",
        s if s < 500 => "client_error",
        _ => "server_error",
    }
}

/// The JSON body `{"error", "reason", "decision_id"}` of a refusal.
pub fn body(status: u16, reason: &str, decision_id: &str) -> Bytes {
    let v = serde_json::json!({
        "error": error_word(status),
        "reason": reason,
        "decision_id": decision_id,
    });
    Bytes::from(v.to_string())
}

impl Outcome {
    /// `allow`, `deny` or `error` (a metric label).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Allowed(_) => "allow",
            Self::Refused(r) => r.label(),
        }
    }

    /// The reason code: the policy's for allowed requests.
    pub fn reason(&self) -> &str {
        match self {
            Self::Allowed(a) => &a.reason,
            Self::Refused(r) => r.reason(),
        }
    }

    /// The status the gateway answers with (200 for an allowed request, whose real status
    /// comes from the upstream).
    pub fn status(&self) -> u16 {
        match self {
            Self::Allowed(_) => 200,
            Self::Refused(r) => r.status(),
        }
    }

    /// The allowed request's instructions, if it was allowed.
    pub fn allowed(&self) -> Option<&Allowed> {
        match self {
            Self::Allowed(a) => Some(a),
            Self::Refused(_) => None,
        }
    }

    /// True when `other` decided otherwise (outcome or reason), as a shadow set may.
    pub fn differs_from(&self, other: &Outcome) -> bool {
        self.label() != other.label() || self.reason() != other.reason()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_status_challenge_and_grpc_status() {
        let cases: Vec<(Refusal, u16, &str, Option<&str>, u8)> = vec![
            (
                Refusal::Token(TokenError::Missing),
                401,
                "missing_token",
                Some("Bearer realm=\"agentgate\""),
                16,
            ),
            (
                Refusal::Token(TokenError::Expired),
                401,
                "token_expired",
                Some("error=\"invalid_token\""),
                16,
            ),
            (
                Refusal::Token(TokenError::MultipleHeaders),
                400,
                "multiple_authorization_headers",
                Some("error=\"invalid_request\""),
                3,
            ),
            (
                Refusal::Token(TokenError::KeysUnavailable),
                503,
                "keys_unavailable",
                None,
                14,
            ),
            (
                Refusal::Directory(ResolveError::BlueprintMismatch),
                403,
                "blueprint_mismatch",
                None,
                7,
            ),
            (
                Refusal::PolicyError(DecisionError::Timeout),
                403,
                "policy_error",
                None,
                7,
            ),
            (
                Refusal::Policy(PolicyDenial {
                    status: 403,
                    reason: Arc::from("missing_role"),
                    insufficient_scope: true,
                    response_headers: Vec::new(),
                }),
                403,
                "missing_role",
                Some("error=\"insufficient_scope\""),
                7,
            ),
            (
                Refusal::Request(RequestError::NoRoute),
                404,
                "no_route",
                None,
                12,
            ),
            (
                Refusal::Request(RequestError::UriTooLong),
                414,
                "uri_too_long",
                None,
                3,
            ),
            (
                Refusal::Request(RequestError::Framing(FramingError::HeadersTooLarge)),
                431,
                "headers_too_large",
                None,
                3,
            ),
            (
                Refusal::Request(RequestError::TooManyConnections),
                503,
                "too_many_connections",
                None,
                14,
            ),
            (
                Refusal::Request(RequestError::UpgradeNotAllowed),
                403,
                "upgrade_not_allowed",
                None,
                7,
            ),
        ];
        for (r, status, reason, challenge, grpc) in cases {
            assert_eq!(
                (r.status(), r.reason(), r.grpc_status()),
                (status, reason, grpc)
            );
            match challenge {
                None => assert_eq!(r.www_authenticate(), None, "{r:?}"),
                Some(c) => assert!(
                    r.www_authenticate().is_some_and(|w| w.contains(c)),
                    "{r:?}: {:?}",
                    r.www_authenticate()
                ),
            }
        }
        assert!(
            Refusal::Request(RequestError::Framing(FramingError::LengthAndChunked))
                .closes_connection()
        );
        assert!(!Refusal::Request(RequestError::InvalidPath).closes_connection());
    }

    #[test]
    fn bodies_carry_the_reason_and_decision_id_only() {
        let b = body(403, "agent_disabled", "abc");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "forbidden", "reason": "agent_disabled", "decision_id": "abc"})
        );
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(grpc_message("missing_token"), "missing_token");
        assert_eq!(grpc_message("50% off\n"), "50%25 off%0A");
        assert_eq!(grpc_message("caf\u{e9}"), "caf%C3%A9");
    }
}
