//! Why a bearer token was not accepted.

/// A token rejection. Each variant has a stable reason code ([`TokenError::reason`]) that
/// appears in responses, logs and metrics; the messages never contain token content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("the request carries no bearer token")]
    Missing,
    #[error("the request carries more than one Authorization header")]
    MultipleHeaders,
    #[error("the Authorization scheme is not Bearer")]
    NotBearer,
    #[error("the token is larger than the configured limit")]
    TooLarge,
    #[error("the token is not a well-formed compact JWS")]
    Malformed,
    #[error("the token type is not a JWT access token")]
    BadType,
    #[error("the signature algorithm is not allowed")]
    AlgorithmNotAllowed,
    #[error("the token header carries a forbidden parameter")]
    ForbiddenHeader,
    #[error("no signing key matches the token's key id")]
    UnknownKey,
    #[error("the tenant's signing keys are unavailable")]
    KeysUnavailable,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("a time claim is not a valid NumericDate")]
    BadTimeClaim,
    #[error("a required claim is missing")]
    MissingClaim,
    #[error("the issuer does not match the token's tenant and version")]
    BadIssuer,
    #[error("the token's tenant is not trusted")]
    TenantNotAllowed,
    #[error("the token's audience is not accepted on this route")]
    BadAudience,
    #[error("tokens for the Entra token exchange endpoint are never accepted")]
    ExchangeAudience,
    #[error("the agent claims are malformed")]
    MalformedAgentClaims,
}

impl TokenError {
    /// The stable, machine-readable reason code.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::MultipleHeaders => "multiple_authorization_headers",
            Self::NotBearer => "unsupported_auth_scheme",
            Self::TooLarge => "token_too_large",
            Self::Malformed => "malformed_token",
            Self::BadType => "unsupported_token_type",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::ForbiddenHeader => "forbidden_header",
            Self::UnknownKey => "unknown_key",
            Self::KeysUnavailable => "keys_unavailable",
            Self::BadSignature => "invalid_signature",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::IssuedInFuture => "token_issued_in_future",
            Self::BadTimeClaim => "invalid_time_claim",
            Self::MissingClaim => "missing_claim",
            Self::BadIssuer => "invalid_issuer",
            Self::TenantNotAllowed => "tenant_not_allowed",
            Self::BadAudience => "invalid_audience",
            Self::ExchangeAudience => "exchange_audience",
            Self::MalformedAgentClaims => "malformed_agent_claims",
        }
    }
}
