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
