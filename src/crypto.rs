//! The one TLS crypto provider: aws-lc-rs, the library that also verifies token signatures.
//!
//! rustls picks no provider by itself when two are compiled in (pingora brings ring), so
//! every TLS configuration agentgate builds names this one, and [`install_default_provider`]
//! makes it the process default before any client or pingora builds its own.

use rustls::crypto::CryptoProvider;
use std::sync::Arc;

/// The crypto provider of every TLS configuration agentgate builds.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Makes [`provider`] the process-wide default (only one that is not set yet takes).
/// Idempotent.
pub fn install_default_provider() {
    // Err: one is installed already, by an earlier call (or pingora's ring, which works
    // the same way).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
