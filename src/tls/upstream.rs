//! TLS to upstreams: verification, SNI and client certificates on pingora's peers.
//!
//! pingora's rustls connector verifies an upstream certificate against the system roots
//! (or, per peer, `PeerOptions::ca`), checks it names the peer's SNI, and presents
//! `HttpPeer::client_cert_key` when the upstream asks for a client certificate. It
//! skips every check for a peer whose SNI is empty, so [`upstream_peer`] never leaves it
//! empty. A peer's connection-pool key covers its SNI, client certificate and
//! verification flags but not its CA list: [`UpstreamTls`] sets `group_key` to a hash of
//! all its settings so differently verified connections are never shared.

use super::material::{self, PairError};
use super::TlsError;
use crate::config::UpstreamTlsConfig;
use pingora::lb::Backend;
use pingora::prelude::HttpPeer;
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use pingora::{ErrorSource, ErrorType};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

/// A route's upstream TLS settings, loaded and checked.
pub struct UpstreamTls {
    server_names: Vec<(SocketAddr, String)>,
    ca: Option<Arc<[WrappedX509]>>,
    client_cert: Option<Arc<CertKey>>,
    insecure_skip_verify: bool,
    group_key: u64,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_names", &self.server_names)
            .field("custom_ca", &self.ca.is_some())
            .field("client_certificate", &self.client_cert.is_some())
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

impl UpstreamTls {
    /// Reads the CA bundle and the client certificate of `route`. A client certificate
    /// must parse, match its key and be valid now.
    pub fn load(route: &str, config: &UpstreamTlsConfig) -> Result<Self, TlsError> {
        let err = |source: PairError| TlsError::Upstream {
            route: route.to_string(),
            source,
        };
        let mut hasher = DefaultHasher::new();
        config.insecure_skip_verify.hash(&mut hasher);
        let ca = match &config.ca_file {
            Some(path) => {
                let certs = material::ca_bundle(path).map_err(err)?;
                for c in &certs {
                    c.as_ref().hash(&mut hasher);
                }
                let wrapped: Vec<WrappedX509> = certs
                    .into_iter()
                    .map(|c| WrappedX509::new(c.to_vec(), parse_x509))
                    .collect();
                Some(Arc::from(wrapped))
            }
            None => None,
        };
        let client_cert = match &config.client_certificate {
            Some(files) => {
                let (loaded, bytes) =
                    material::load_pair(files, &super::provider(), crate::clock::now())
                        .map_err(err)?;
                let key = material::private_key(&bytes.key, &files.key).map_err(err)?;
                let chain: Vec<Vec<u8>> = loaded.key.cert.iter().map(|c| c.to_vec()).collect();
                chain.hash(&mut hasher);
                Some(Arc::new(CertKey::new(chain, key.secret_der().to_vec())))
            }
            None => None,
        };
        if config.insecure_skip_verify {
            tracing::warn!(route, "INSECURE: routes.tls.insecure_skip_verify = true: upstream certificates of this route are NOT verified; anyone on the network path can impersonate the upstream and read forwarded requests");
        }
        Ok(Self {
            server_names: config.server_names.clone(),
            ca,
            client_cert,
            insecure_skip_verify: config.insecure_skip_verify,
            group_key: hasher.finish(),
        })
    }

    /// Whether upstream certificates go unverified (for `/readyz` and start-up warnings).
    pub fn insecure_skip_verify(&self) -> bool {
        self.insecure_skip_verify
    }

    /// The name sent as SNI and verified for `address`: the configured one, or else the
    /// address itself (which then must be an IP subjectAltName of the certificate).
    pub fn server_name(&self, address: &SocketAddr) -> String {
        self.server_names
            .iter()
            .find(|(a, _)| a == address)
            .map_or_else(|| address.ip().to_string(), |(_, n)| n.clone())
    }

    /// Turns `peer` into a TLS peer with these settings.
    pub fn configure_peer(&self, peer: &mut HttpPeer) {
        peer.scheme = pingora::upstreams::peer::Scheme::HTTPS;
        if let Some(address) = peer._address.as_inet() {
            peer.sni = self.server_name(address);
        }
        peer.options.verify_cert = !self.insecure_skip_verify;
        peer.options.verify_hostname = !self.insecure_skip_verify;
        peer.options.ca = self.ca.clone();
        peer.client_cert_key = self.client_cert.clone();
        peer.group_key = self.group_key;
    }
}

/// The peer for `backend`: plain HTTP without `tls`, HTTPS with its settings otherwise.
pub fn upstream_peer(backend: &Backend, tls: Option<&UpstreamTls>) -> HttpPeer {
    let mut peer = HttpPeer::new(backend, false, String::new());
    if let Some(tls) = tls {
        tls.configure_peer(&mut peer);
    }
    peer
}

/// Whether `e` is a TLS failure with an upstream (an untrusted, expired or wrong-host
/// certificate, a refused client certificate, no common protocol version): the gateway
/// answers these with 502 `upstream_tls_error`.
///
/// pingora's rustls connector reports a failed handshake as `TLSHandshakeFailure` and an
/// unusable per-peer certificate as `InvalidCert` (the two other types come from its other
/// TLS backends). In TLS 1.3 the server checks a client certificate after the client has
/// finished its half of the handshake, so a refused or missing one only surfaces as a
/// read error whose root cause is a rustls error (the server's alert): that counts too.
pub fn is_upstream_tls_error(e: &pingora::Error) -> bool {
    if *e.esource() != ErrorSource::Upstream {
        return false;
    }
    let tls_type = matches!(
        e.etype(),
        ErrorType::TLSHandshakeFailure
            | ErrorType::TLSHandshakeTimedout
            | ErrorType::TLSWantX509Lookup
            | ErrorType::InvalidCert
    );
    tls_type || rustls_cause(e.root_cause())
}

/// Whether `cause` is a rustls error, directly or inside an I/O error.
fn rustls_cause(cause: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    cause.is::<rustls::Error>()
        || cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<rustls::Error>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::{Error, OrErr};

    fn upstream(e: Box<Error>) -> Box<Error> {
        let mut e = e;
        e.as_up();
        e
    }

    #[test]
    fn handshake_failures_and_rustls_alerts_are_tls_errors() {
        assert!(is_upstream_tls_error(&upstream(Error::new(
            ErrorType::TLSHandshakeFailure
        ))));
        assert!(is_upstream_tls_error(&upstream(Error::new(
            ErrorType::InvalidCert
        ))));
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        let read: Result<(), _> = Err(alert);
        let e = upstream(read.or_err(ErrorType::ReadError, "reading").unwrap_err());
        assert!(is_upstream_tls_error(&e));
    }

    #[test]
    fn other_failures_and_downstream_errors_are_not() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let read: Result<(), _> = Err(reset);
        let e = upstream(read.or_err(ErrorType::ReadError, "reading").unwrap_err());
        assert!(!is_upstream_tls_error(&e));
        assert!(!is_upstream_tls_error(&upstream(Error::new(
            ErrorType::ConnectRefused
        ))));
        let mut downstream = Error::new(ErrorType::TLSHandshakeFailure);
        downstream.as_down();
        assert!(!is_upstream_tls_error(&downstream));
    }
}
