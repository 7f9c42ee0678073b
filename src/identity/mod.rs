//! Who is calling: signing keys, token validation, and caller classification.
//!
//! The request path runs [`TokenValidator::validate`], which yields a [`VerifiedToken`]
//! carrying its [`Caller`]. Keys come from [`KeyStore`]; nothing a token names is ever fetched.

pub mod caller;
mod claims;
mod error;
pub mod jwks;
pub mod keys;
pub mod pool;
pub mod token;

pub use caller::{Caller, CallerKind};
pub use error::TokenError;
pub use keys::KeyStore;
pub use token::{bearer_token, TokenValidator, VerifiedToken};

/// The audience of Entra's token exchange endpoint ("AAD Token Exchange Endpoint: Public").
/// Blueprint and agent exchange tokens (T1/T2) carry it; no API may ever accept them.
pub const EXCHANGE_AUDIENCE: &str = "fb60f99c-7a34-4190-8149-302f77469936";

/// The v1 issuer for a tenant: `https://sts.windows.net/{tid}/`.
pub fn v1_issuer(tid: &str) -> String {
    format!("https://sts.windows.net/{tid}/")
}

/// The v2 issuer for a tenant: `https://login.microsoftonline.com/{tid}/v2.0`.
pub fn v2_issuer(tid: &str) -> String {
    format!("https://login.microsoftonline.com/{tid}/v2.0")
}
