//! Throwaway certificates and HTTPS servers for the demo and the tests.
//!
//! [`TestCa`] is a certificate authority that lives in memory: it issues leaf
//! certificates (server and client) with rcgen, and nothing is written to disk unless a
//! caller asks with [`IssuedCert::write`] into a directory of its choosing. [`serve_tls`]
//! serves an axum router over TLS (tokio-rustls) on a listener, and hands every handler
//! the client certificate of its connection through [`TlsPeer`].

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Why a test certificate or TLS server could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevTlsError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a leaf certificate says and how long it is valid.
#[derive(Debug, Clone)]
pub struct LeafSpec<'a> {
    /// DNS names and IP addresses (as text) for subjectAltName.
    pub names: &'a [&'a str],
    /// The subject's common name; the first name when `None`.
    pub common_name: Option<&'a str>,
    /// Extra subjectAltName entries, such as URIs and e-mail addresses.
    pub extra_sans: Vec<SanType>,
    /// Extensions written as given, after the ones above (a test can write one that a
    /// verifier accepts and a stricter parser does not).
    pub custom_extensions: Vec<CustomExtension>,
    /// Validity as `(not_before, not_after)`; a long window around now when `None`.
    pub validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
}

impl<'a> LeafSpec<'a> {
    pub fn new(names: &'a [&'a str]) -> Self {
        Self {
            names,
            common_name: None,
            extra_sans: Vec::new(),
            custom_extensions: Vec::new(),
            validity: None,
        }
    }

    /// A certificate that expired (valid for a day, a year ago).
    pub fn expired(mut self) -> Self {
        let now = time::OffsetDateTime::now_utc();
        self.validity = Some((
            now - time::Duration::days(366),
            now - time::Duration::days(365),
        ));
        self
    }

    /// A certificate valid only from a day after now.
    pub fn not_yet_valid(mut self) -> Self {
        let now = time::OffsetDateTime::now_utc();
        self.validity = Some((
            now + time::Duration::days(1),
            now + time::Duration::days(30),
        ));
        self
    }
}

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The leaf, then the issuing CA (none for a self-signed certificate).
    pub cert_pem: String,
    pub key_pem: String,
    /// The leaf's DER encoding.
    pub der: Vec<u8>,
}

impl IssuedCert {
    /// Writes `<name>.crt` and `<name>.key` into `dir` and returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), DevTlsError> {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        for (path, text) in [(&cert, &self.cert_pem), (&key, &self.key_pem)] {
            std::fs::write(path, text).map_err(|source| DevTlsError::Write {
                path: path.clone(),
                source,
            })?;
        }
        Ok((cert, key))
    }

    /// A rustls server configuration serving this certificate over HTTP/1.1; client
    /// certificates signed by `client_ca` are required when it is given.
    pub fn server_config(
        &self,
        client_ca: Option<&TestCa>,
    ) -> Result<Arc<ServerConfig>, DevTlsError> {
        self.server_config_with_alpn(client_ca, &[b"http/1.1"])
    }

    /// As [`Self::server_config`], offering the ALPN protocols `alpn` (a client offering
    /// none of them fails the handshake).
    pub fn server_config_with_alpn(
        &self,
        client_ca: Option<&TestCa>,
        alpn: &[&[u8]],
    ) -> Result<Arc<ServerConfig>, DevTlsError> {
        let provider = crate::tls::provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?;
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(CertificateDer::from(ca.der.clone()))?;
                builder.with_client_cert_verifier(
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()?,
                )
            }
            None => builder.with_no_client_auth(),
        };
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())?;
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// A certificate authority held in memory.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    der: Vec<u8>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA named "agentgate test CA".
    pub fn new() -> Result<Self, DevTlsError> {
        Self::named("agentgate test CA")
    }

    /// A new CA with `common_name` as its subject.
    pub fn named(common_name: &str) -> Result<Self, DevTlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A server and client certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, names: &[&str]) -> Result<IssuedCert, DevTlsError> {
        self.issue_with(&LeafSpec::new(names))
    }

    /// A certificate as `spec` describes, usable for servers and clients.
    pub fn issue_with(&self, spec: &LeafSpec<'_>) -> Result<IssuedCert, DevTlsError> {
        let (params, key) = leaf_params(spec)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        })
    }
}

/// A certificate that signs itself: trusted by nobody.
pub fn self_signed(names: &[&str]) -> Result<IssuedCert, DevTlsError> {
    let (params, key) = leaf_params(&LeafSpec::new(names))?;
    let cert = params.self_signed(&key)?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    })
}

fn leaf_params(spec: &LeafSpec<'_>) -> Result<(CertificateParams, KeyPair), DevTlsError> {
    let mut params =
        CertificateParams::new(spec.names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params
        .subject_alt_names
        .extend(spec.extra_sans.iter().cloned());
    params
        .custom_extensions
        .extend(spec.custom_extensions.iter().cloned());
    params.distinguished_name = DistinguishedName::new();
    let cn = spec
        .common_name
        .or(spec.names.first().copied())
        .unwrap_or("agentgate test leaf");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if let Some((from, until)) = spec.validity {
        params.not_before = from;
        params.not_after = until;
    }
    Ok((params, KeyPair::generate()?))
}

/// What a handler learns about its TLS connection (`ConnectInfo<TlsPeer>`).
#[derive(Debug, Clone)]
pub struct TlsPeer {
    pub addr: SocketAddr,
    /// DER of the client certificate, when the client presented one.
    pub client_certificate: Option<Vec<u8>>,
}

impl Connected<IncomingStream<'_, TlsListener>> for TlsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP listener that completes a TLS handshake on every connection it accepts;
/// connections whose handshake fails or takes over 10 s are dropped.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = TlsPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let handshake =
                tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(tcp));
            if let Ok(Ok(tls)) = handshake.await {
                let client_certificate = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec());
                return (
                    tls,
                    TlsPeer {
                        addr,
                        client_certificate,
                    },
                );
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(TlsPeer {
            addr: self.tcp.local_addr()?,
            client_certificate: None,
        })
    }
}

/// Serves `router` over TLS on `listener` with `config` until the task is dropped.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: Router,
) -> std::io::Result<()> {
    let listener = TlsListener {
        tcp: listener,
        acceptor: TlsAcceptor::from(config),
    };
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<TlsPeer>(),
    )
    .await
}
