//! TLS on both sides of the gateway, with rustls through pingora's rustls backend.
//!
//! - [`listener`]: HTTPS listeners. Certificates are chosen by SNI ([`resolver`]), reload
//!   live when their files change, and are checked before use ([`material`]); client
//!   certificates are verified when a listener names a CA bundle.
//! - [`client_cert`]: the verified client certificate of a connection, for policy.
//! - [`upstream`]: `https://` upstreams: verification, SNI, client certificates, and
//!   which upstream failures are TLS failures.
//!
//! TLS 1.2 and 1.3 only, both directions (rustls implements nothing older). Every
//! configuration built here uses aws-lc-rs, the library that also verifies token
//! signatures; [`install_default_provider`] makes it the process default so the
//! configurations pingora builds itself use it too.

pub mod client_cert;
pub mod listener;
pub mod material;
pub mod resolver;
pub mod upstream;

pub use crate::crypto::{install_default_provider, provider};
pub use client_cert::{
    client_certificate, ClientCertificate, SubjectAltNames, UnreadableClientCertificate,
};
pub use listener::{CertificateReloader, ListenerTls, TlsMetrics, LISTENER_ALPN};
pub use material::PairError;
pub use upstream::{is_upstream_tls_error, upstream_peer, UpstreamTls};

use std::net::SocketAddr;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("listener {listener}: {source}")]
    Certificate {
        listener: SocketAddr,
        source: PairError,
    },
    #[error("listener {0}: no certificates")]
    NoCertificates(SocketAddr),
    #[error("listener {listener}: client_ca: {detail}")]
    ClientCa {
        listener: SocketAddr,
        detail: String,
    },
    #[error("route {route}: upstream TLS: {source}")]
    Upstream { route: String, source: PairError },
    #[error("TLS settings: {0}")]
    Settings(String),
}
