//! Certificates and keys from PEM files, checked before they are used.
//!
//! A certificate/key pair is usable when both files parse, the key is the certificate's
//! key, and the leaf certificate is inside its validity period now. Anything else is a
//! [`PairError`] with a closed-set [`PairError::reason`] for metrics.

use crate::config::CertificateFiles;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Why a certificate/key pair (or a CA bundle) cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in the file")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("{path}: unusable private key: {detail}")]
    Key { path: PathBuf, detail: String },
    #[error("{path}: certificate does not parse: {detail}")]
    Certificate { path: PathBuf, detail: String },
    #[error("{key} is not the private key of the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: certificate expired at unix time {not_after}")]
    Expired { path: PathBuf, not_after: i64 },
    #[error("{path}: certificate is not valid before unix time {not_before}")]
    NotYetValid { path: PathBuf, not_before: i64 },
}

impl PairError {
    /// A label from a closed set, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            PairError::Read { .. } => "unreadable",
            PairError::NoCertificate { .. }
            | PairError::NoKey { .. }
            | PairError::Key { .. }
            | PairError::Certificate { .. } => "invalid",
            PairError::KeyMismatch { .. } => "key_mismatch",
            PairError::Expired { .. } => "expired",
            PairError::NotYetValid { .. } => "not_yet_valid",
        }
    }
}

/// A checked certificate chain with its signing key.
#[derive(Debug)]
pub struct LoadedCertificate {
    pub key: Arc<CertifiedKey>,
    /// Lower-case DNS names from the leaf's subjectAltName (`*.` wildcards included).
    pub dns_names: Vec<String>,
    /// The leaf's notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// The raw bytes of a pair as read from disk, compared to notice changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairBytes {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

pub fn read(path: &Path) -> Result<Vec<u8>, PairError> {
    std::fs::read(path).map_err(|source| PairError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads both files of a pair.
pub fn read_pair(files: &CertificateFiles) -> Result<PairBytes, PairError> {
    Ok(PairBytes {
        cert: read(&files.cert)?,
        key: read(&files.key)?,
    })
}

/// Every certificate of a PEM chain or bundle, in file order; at least one.
pub fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, PairError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PairError::Certificate {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PairError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    for c in &certs {
        X509Certificate::from_der(c).map_err(|e| PairError::Certificate {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn private_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, PairError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| PairError::NoKey {
        path: path.to_path_buf(),
    })
}

/// Seconds since the Unix epoch (negative before it).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Checks a pair: both parse, the key belongs to the leaf, the leaf is valid at `now`.
pub fn check_pair(
    files: &CertificateFiles,
    bytes: &PairBytes,
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<LoadedCertificate, PairError> {
    let chain = certificates(&bytes.cert, &files.cert)?;
    let key = private_key(&bytes.key, &files.key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| PairError::Key {
            path: files.key.clone(),
            detail: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    // An unknown answer (a key that cannot tell its public half) is refused too.
    if certified.keys_match().is_err() {
        return Err(PairError::KeyMismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        });
    }
    let leaf_der = certified
        .end_entity_cert()
        .map_err(|e| PairError::Certificate {
            path: files.cert.clone(),
            detail: e.to_string(),
        })?;
    let (_, leaf) = X509Certificate::from_der(leaf_der).map_err(|e| PairError::Certificate {
        path: files.cert.clone(),
        detail: e.to_string(),
    })?;
    let now = unix_seconds(now);
    let validity = leaf.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if now > not_after {
        return Err(PairError::Expired {
            path: files.cert.clone(),
            not_after,
        });
    }
    if now < not_before {
        return Err(PairError::NotYetValid {
            path: files.cert.clone(),
            not_before,
        });
    }
    let dns_names = match leaf.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(LoadedCertificate {
        key: Arc::new(certified),
        dns_names,
        not_after,
    })
}

/// Reads and checks a pair in one go (at start, and for upstream client certificates).
pub fn load_pair(
    files: &CertificateFiles,
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<(LoadedCertificate, PairBytes), PairError> {
    let bytes = read_pair(files)?;
    Ok((check_pair(files, &bytes, provider, now)?, bytes))
}

/// A PEM bundle of trusted CA certificates.
pub fn ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, PairError> {
    certificates(&read(path)?, path)
}
