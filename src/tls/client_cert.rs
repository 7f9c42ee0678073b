//! The verified client certificate of a downstream connection.
//!
//! When a listener verifies client certificates, [`CaptureClientCertificate`] runs once
//! per handshake (pingora's post-handshake callback), parses the leaf certificate the
//! client presented and rustls verified, and stores a [`ClientCertificate`] in the
//! connection's TLS digest. Every request on the connection reads it back with
//! [`client_certificate`]. rustls only completes a handshake with a client certificate
//! once its verifier accepted the chain, so a stored certificate is always a verified one.
//! A verified certificate this parser cannot read (x509-parser is stricter than the
//! verifier in places, such as a non-ASCII DNS name) is not passed off as no certificate:
//! the connection is marked [`UnreadableClientCertificate`] and its requests are refused.
//!
//! x509-parser reads the certificate: it is the parser pingora's rustls backend already
//! uses, maintained by the Rusticata project, zero-copy and free of `unsafe` parsing code;
//! the subject is rendered to RFC 4514 here because its `Display` is not RFC 4514.

use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use std::any::Any;
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Arc;
use x509_parser::der_parser::asn1_rs::ToDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};

/// What a request may learn about the client certificate of its connection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientCertificate {
    /// The subject distinguished name as an RFC 4514 string (`CN=agent,O=Contoso`).
    pub subject: String,
    /// subjectAltName entries of the kinds an identity may use.
    pub sans: SubjectAltNames,
    /// SHA-256 of the certificate's DER encoding, lower-case hex (64 characters).
    pub sha256: String,
}

/// subjectAltName entries by kind, each in certificate order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SubjectAltNames {
    pub dns: Vec<String>,
    pub uri: Vec<String>,
    /// IPv4 and IPv6 addresses in their usual text form.
    pub ip: Vec<String>,
    pub email: Vec<String>,
}

/// Why a certificate could not be read.
#[derive(Debug, thiserror::Error)]
#[error("client certificate does not parse: {0}")]
pub struct CertificateParseError(String);

/// The connection's client certificate was verified but could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the verified client certificate could not be read")]
pub struct UnreadableClientCertificate;

impl ClientCertificate {
    /// Reads the subject, SANs and thumbprint of a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, CertificateParseError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| CertificateParseError(e.to_string()))?;
        let mut sans = SubjectAltNames::default();
        let names = cert
            .subject_alternative_name()
            .map_err(|e| CertificateParseError(e.to_string()))?;
        for name in names.iter().flat_map(|n| n.value.general_names.iter()) {
            match name {
                GeneralName::DNSName(d) => sans.dns.push(d.to_string()),
                GeneralName::URI(u) => sans.uri.push(u.to_string()),
                GeneralName::RFC822Name(e) => sans.email.push(e.to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_address(bytes) {
                        sans.ip.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
        Ok(Self {
            subject: rfc4514(cert.subject()),
            sans,
            sha256: sha256_hex(der),
        })
    }
}

fn ip_address(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut hex = String::with_capacity(64);
    for b in digest.as_ref() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// RFC 4514 §3 short names; every other attribute type is written as its dotted OID.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// The RFC 4514 string of a distinguished name: RDNs last to first, joined by `,`;
/// multi-valued RDNs joined by `+`; string values escaped (§2.4); any other value, and
/// every attribute without a short name, as `#` and the hex of its DER encoding (§2.4).
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    match (short_name(&oid), atv.as_str()) {
                        (Some(short), Ok(value)) => format!("{short}={}", escape(value)),
                        (short, _) => {
                            let der = atv.attr_value().to_der_vec().unwrap_or_default();
                            let mut hex = String::with_capacity(der.len() * 2 + 1);
                            hex.push('#');
                            for b in der {
                                let _ = write!(hex, "{b:02x}");
                            }
                            format!("{}={hex}", short.map_or(oid.as_str(), |s| s))
                        }
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// Escapes an attribute value as RFC 4514 §2.4 requires.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// pingora's post-handshake callback: parses the verified client certificate, if any,
/// into the connection's TLS digest.
#[derive(Debug, Default)]
pub struct CaptureClientCertificate;

#[async_trait]
impl TlsAccept for CaptureClientCertificate {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let der = tls.peer_certificate_der()?;
        match ClientCertificate::from_der(der) {
            Ok(cert) => Some(Arc::new(cert)),
            Err(e) => {
                // Verified by rustls yet unreadable here: the connection's requests are
                // refused rather than decided as if no certificate had been presented.
                tracing::warn!(error = %e, "verified client certificate could not be read; refusing its requests");
                Some(Arc::new(UnreadableClientCertificate))
            }
        }
    }
}

/// The verified client certificate of the connection `session` arrived on, if any.
///
/// pingora copies the TLS digest of the accepted connection into the session's digest;
/// the certificate rides in that digest's extension. Plain HTTP connections and TLS
/// connections without a client certificate give `Ok(None)`; a connection whose verified
/// certificate could not be read gives the error.
pub fn client_certificate(
    session: &pingora::proxy::Session,
) -> Result<Option<&ClientCertificate>, UnreadableClientCertificate> {
    let Some(extension) = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .map(|tls| &tls.extension)
    else {
        return Ok(None);
    };
    if extension.get::<UnreadableClientCertificate>().is_some() {
        return Err(UnreadableClientCertificate);
    }
    Ok(extension.get::<ClientCertificate>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    #[test]
    fn subject_sans_and_thumbprint_are_read() {
        let mut params = CertificateParams::new(vec!["agent.example.test".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CountryName, "SE");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Contoso, Ltd.");
        params
            .distinguished_name
            .push(DnType::CommonName, " sales+agent ");
        params.subject_alt_names.extend([
            SanType::URI("spiffe://contoso.test/agent/sales".try_into().unwrap()),
            SanType::IpAddress("192.0.2.7".parse().unwrap()),
            SanType::IpAddress("2001:db8::7".parse().unwrap()),
            SanType::Rfc822Name("ops@contoso.test".try_into().unwrap()),
        ]);
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let c = ClientCertificate::from_der(cert.der()).unwrap();
        assert_eq!(c.subject, r"CN=\ sales\+agent\ ,O=Contoso\, Ltd.,C=SE");
        assert_eq!(c.sans.dns, vec!["agent.example.test"]);
        assert_eq!(c.sans.uri, vec!["spiffe://contoso.test/agent/sales"]);
        assert_eq!(c.sans.ip, vec!["192.0.2.7", "2001:db8::7"]);
        assert_eq!(c.sans.email, vec!["ops@contoso.test"]);
        assert_eq!(c.sha256, sha256_hex(cert.der()));
        assert_eq!(c.sha256.len(), 64);
    }

    #[test]
    fn sha256_is_lower_case_hex_of_the_bytes() {
        // FIPS 180-2 test vector "abc".
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn attributes_without_a_short_name_are_hex_encoded() {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        // 1.2.840.113549.1.9.1 (emailAddress) has no RFC 4514 short name.
        params.distinguished_name.push(
            DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
            rcgen::DnValue::Ia5String("a@b".try_into().unwrap()),
        );
        params.distinguished_name.push(DnType::CommonName, "#x");
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let c = ClientCertificate::from_der(cert.der()).unwrap();
        assert_eq!(c.subject, r"CN=\#x,1.2.840.113549.1.9.1=#1603614062");
        assert!(c.sans.dns.is_empty());
        assert!(ClientCertificate::from_der(b"not a certificate").is_err());
    }
}
