//! Development tooling: a dev signing key, token minting, the in-process demo servers
//! (an OIDC discovery + JWKS issuer and a sample upstream API), and throwaway TLS
//! certificates with an HTTPS server for them.
//!
//! Nothing here is used by the production request path. Tokens minted here are signed by a
//! key the operator controls and are only trusted by a gateway configured to fetch that
//! key's JWKS, as the demo configuration does.

// Development tooling, never on the request path.
#![allow(clippy::disallowed_types)]

pub mod demo;
pub mod graph;
pub mod mint;
pub mod servers;
pub mod tls;

pub use mint::{SigningIdentity, TokenSpec};
