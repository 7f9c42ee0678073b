//! Bearer token validation: header, claims, signature, issuer, tenant, time and audience.
//!
//! Everything a token says is untrusted until its signature verifies against a key that the
//! gateway fetched itself from the tenant's JWKS. Cheap structural checks run first so that
//! garbage costs little; nothing in this module logs or returns token content.

use super::caller::{classify, Caller};
use super::claims::{from_json_object, Claims, Header, TimeClaim};
use super::jwks::SigningKey;
use super::keys::KeyStore;
use super::TokenError;
use crate::config::IdentityConfig;
use crate::entra::{is_exchange_audience, Issuers};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use jsonwebtoken::Algorithm;
use std::str::FromStr;
use std::sync::Arc;

/// base64url without padding, rejecting `=` and non-canonical trailing bits (RFC 7515 §2).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// The token version, fixed by the issuer form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenVersion {
    V1,
    V2,
}

impl TokenVersion {
    /// `"1.0"` or `"2.0"`, as in the `ver` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "1.0",
            Self::V2 => "2.0",
        }
    }
}

/// A token whose signature, issuer, tenant and lifetime checked out.
#[derive(Debug)]
pub struct VerifiedToken {
    pub caller: Caller,
    pub version: TokenVersion,
    pub issuer: Arc<str>,
    /// The `aud` claim as sent.
    pub audience: Arc<str>,
    pub expires_at: u64,
    pub not_before: Option<u64>,
    pub issued_at: Option<u64>,
    pub idtyp: Option<Arc<str>>,
    /// Delegated scopes from `scp` (missing, `""` and `"/"` all mean none).
    pub scopes: Vec<Arc<str>>,
    pub roles: Vec<Arc<str>>,
    /// The signing key's id, re-checked against the live key set on every cache hit.
    pub kid: Arc<str>,
}

impl VerifiedToken {
    /// Re-checks the lifetime at `now` (used on every request, cached or not).
    pub fn check_time(&self, now: u64, leeway: u64) -> Result<(), TokenError> {
        check_lifetime(
            self.expires_at,
            self.not_before,
            self.issued_at,
            now,
            leeway,
        )
    }

    /// Accepts the token on a route only if its audience is one of the route's (a trailing
    /// slash on App ID URIs is not significant).
    pub fn check_audience(&self, audiences: &[String]) -> Result<(), TokenError> {
        let aud = self.audience.trim_end_matches('/');
        if audiences.iter().any(|a| a == aud) {
            Ok(())
        } else {
            Err(TokenError::BadAudience)
        }
    }
}

/// A compact JWS split into its parts with an acceptable header; nothing verified yet.
#[derive(Debug)]
pub struct CompactJws<'t> {
    header_b64: &'t str,
    claims_b64: &'t str,
    sig_b64: &'t str,
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// Splits a compact JWS and checks its header: exactly three parts, strict base64url, a
/// `typ` of a JWT access token, an allowed `alg`, and no key-pointing or critical parameters.
pub fn parse_compact<'t>(
    token: &'t str,
    algorithms: &[Algorithm],
) -> Result<CompactJws<'t>, TokenError> {
    let (header_b64, rest) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let (claims_b64, sig_b64) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    if sig_b64.contains('.') || header_b64.is_empty() {
        return Err(TokenError::Malformed);
    }
    let header: Header = decode_json(header_b64)?;
    if header.has_forbidden_parameter() {
        return Err(TokenError::ForbiddenHeader);
    }
    if let Some(typ) = &header.typ {
        let ok = ["JWT", "at+jwt", "application/at+jwt"]
            .iter()
            .any(|t| typ.eq_ignore_ascii_case(t));
        if !ok {
            return Err(TokenError::BadType);
        }
    }
    let alg = match Algorithm::from_str(&header.alg) {
        Ok(alg) if algorithms.contains(&alg) => alg,
        _ => return Err(TokenError::AlgorithmNotAllowed),
    };
    if sig_b64.is_empty() {
        return Err(TokenError::BadSignature);
    }
    Ok(CompactJws {
        header_b64,
        claims_b64,
        sig_b64,
        alg,
        kid: header.kid,
    })
}

impl CompactJws<'_> {
    /// Verifies the signature with `key`, which must allow this `alg` if its JWK named one.
    pub fn verify_with(&self, key: &SigningKey) -> Result<(), TokenError> {
        // Strict decoding first: jsonwebtoken's own decoder is more lenient about padding.
        B64URL
            .decode(self.sig_b64)
            .map_err(|_| TokenError::Malformed)?;
        if key.alg.is_some_and(|a| a != self.alg) {
            return Err(TokenError::BadSignature);
        }
        let mut message = Vec::with_capacity(self.header_b64.len() + 1 + self.claims_b64.len());
        message.extend_from_slice(self.header_b64.as_bytes());
        message.push(b'.');
        message.extend_from_slice(self.claims_b64.as_bytes());
        verify_signature(&message, self.sig_b64, key, self.alg)
    }

    /// The payload bytes, decoded.
    pub fn payload(&self) -> Result<Vec<u8>, TokenError> {
        B64URL
            .decode(self.claims_b64)
            .map_err(|_| TokenError::Malformed)
    }
}

/// Verifies `sig_b64` over `message` with jsonwebtoken's aws-lc-rs backend.
pub fn verify_signature(
    message: &[u8],
    sig_b64: &str,
    key: &SigningKey,
    alg: Algorithm,
) -> Result<(), TokenError> {
    match jsonwebtoken::crypto::verify(sig_b64, message, &key.key, alg) {
        Ok(true) => Ok(()),
        _ => Err(TokenError::BadSignature),
    }
}

/// Extracts the bearer token from the request headers, enforcing one `Authorization` header,
/// a case-insensitive `Bearer` scheme and the size cap before anything is decoded.
pub fn bearer_token(headers: &HeaderMap, max_bytes: usize) -> Result<&str, TokenError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(TokenError::Missing)?;
    if values.next().is_some() {
        return Err(TokenError::MultipleHeaders);
    }
    let raw = value.as_bytes();
    if raw.len() > max_bytes + "Bearer ".len() {
        return Err(TokenError::TooLarge);
    }
    let text = std::str::from_utf8(raw).map_err(|_| TokenError::Malformed)?;
    let (scheme, rest) = text.split_once(' ').ok_or(TokenError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::NotBearer);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token.len() > max_bytes {
        return Err(TokenError::TooLarge);
    }
    Ok(token)
}

/// Validates tokens against the tenants' keys and the configured rules.
pub struct TokenValidator {
    keys: Arc<KeyStore>,
    algorithms: Vec<Algorithm>,
    issuers: Issuers,
    leeway: u64,
}

impl TokenValidator {
    pub fn new(keys: Arc<KeyStore>, cfg: &IdentityConfig) -> Self {
        Self {
            keys,
            algorithms: cfg.algorithms.clone(),
            issuers: cfg.issuers.clone(),
            leeway: cfg.leeway.as_secs(),
        }
    }

    /// The key store the validator reads.
    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    /// Clock skew tolerated, in seconds.
    pub fn leeway(&self) -> u64 {
        self.leeway
    }

    /// True when the tenant's live key set still holds the key that signed `token`.
    pub fn key_still_valid(&self, token: &VerifiedToken) -> bool {
        self.keys
            .tenant(&token.caller.tenant)
            .is_some_and(|t| self.keys.still_holds(t, &token.kid))
    }

    /// Fully validates a compact JWS at unix time `now`. The audience is route-specific and
    /// checked separately with [`VerifiedToken::check_audience`].
    pub async fn verify(&self, token: &str, now: u64) -> Result<VerifiedToken, TokenError> {
        self.validate(token, now, true).await
    }

    /// Every check except the signature, for `agentgate eval --no-verify` (which marks its
    /// result unverified). The proxy never calls this.
    pub async fn verify_unsigned(
        &self,
        token: &str,
        now: u64,
    ) -> Result<VerifiedToken, TokenError> {
        self.validate(token, now, false).await
    }

    async fn validate(
        &self,
        token: &str,
        now: u64,
        signature: bool,
    ) -> Result<VerifiedToken, TokenError> {
        let jws = parse_compact(token, &self.algorithms)?;
        let kid = jws.kid.clone().ok_or(TokenError::Malformed)?;
        let claims: Claims = from_json_object(&jws.payload()?)?;

        // Tenant, issuer and audience before any RSA work: garbage must stay cheap.
        let tid = claims.tid.as_deref().ok_or(TokenError::MissingClaim)?;
        let tenant = self.keys.tenant(tid).ok_or(TokenError::TenantNotAllowed)?;
        let version = check_issuer(&claims, tid, &self.issuers)?;
        let audience = claims.aud.as_deref().ok_or(TokenError::MissingClaim)?;
        if is_exchange_audience(audience) {
            return Err(TokenError::ExchangeAudience);
        }
        let (exp, nbf, iat) = time_claims(&claims)?;
        check_lifetime(exp, nbf, iat, now, self.leeway)?;

        if signature {
            let key = self.keys.key(tenant, &kid).await?;
            jws.verify_with(&key)?;
        }

        let actor = match version {
            TokenVersion::V1 => claims.appid.as_deref(),
            TokenVersion::V2 => claims.azp.as_deref(),
        }
        .ok_or(TokenError::MissingClaim)?;
        let subject = claims.oid.as_deref().ok_or(TokenError::MissingClaim)?;
        let caller = classify(&claims, &tenant.tenant, actor, subject)?;
        Ok(VerifiedToken {
            caller,
            version,
            issuer: Arc::from(claims.iss.as_deref().unwrap_or_default()),
            audience: Arc::from(audience),
            expires_at: exp,
            not_before: nbf,
            issued_at: iat,
            idtyp: claims.idtyp.as_deref().map(Arc::from),
            scopes: scopes(claims.scp.as_deref()),
            roles: claims
                .roles
                .unwrap_or_default()
                .into_iter()
                .map(Arc::from)
                .collect(),
            kid: Arc::from(kid),
        })
    }
}

fn decode_json<T: for<'de> serde::Deserialize<'de>>(segment: &str) -> Result<T, TokenError> {
    let bytes = B64URL.decode(segment).map_err(|_| TokenError::Malformed)?;
    from_json_object(&bytes)
}

/// `iss` must be exactly the cloud's v1 or v2 form for the token's own `tid`, and `ver` must
/// agree.
fn check_issuer(claims: &Claims, tid: &str, issuers: &Issuers) -> Result<TokenVersion, TokenError> {
    let iss = claims.iss.as_deref().ok_or(TokenError::MissingClaim)?;
    let ver = claims.ver.as_deref().ok_or(TokenError::MissingClaim)?;
    if issuers.is_v1(iss, tid) && ver == "1.0" {
        Ok(TokenVersion::V1)
    } else if issuers.is_v2(iss, tid) && ver == "2.0" {
        Ok(TokenVersion::V2)
    } else {
        Err(TokenError::BadIssuer)
    }
}

fn time_claims(claims: &Claims) -> Result<(u64, Option<u64>, Option<u64>), TokenError> {
    let opt = |c: TimeClaim| match c {
        TimeClaim::Absent => Ok(None),
        TimeClaim::At(t) => Ok(Some(t)),
        TimeClaim::Invalid => Err(TokenError::BadTimeClaim),
    };
    let exp = opt(claims.exp)?.ok_or(TokenError::MissingClaim)?;
    Ok((exp, opt(claims.nbf)?, opt(claims.iat)?))
}

fn check_lifetime(
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    now: u64,
    leeway: u64,
) -> Result<(), TokenError> {
    if now > exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(TokenError::NotYetValid);
    }
    if iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
        return Err(TokenError::IssuedInFuture);
    }
    Ok(())
}

/// Splits `scp`; Entra sends none, `""` or `"/"` on app-only tokens, all meaning no scopes.
fn scopes(scp: Option<&str>) -> Vec<Arc<str>> {
    scp.unwrap_or("")
        .split_ascii_whitespace()
        .filter(|s| *s != "/")
        .map(Arc::from)
        .collect()
}

#[cfg(test)]
mod tests;
