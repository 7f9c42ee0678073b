//! The gateway's credential for the client credentials flow against
//! `{authority}/{tenant}/oauth2/v2.0/token`.
//!
//! Three kinds, as Entra accepts them for a confidential client:
//! - a client secret (from a file or an environment variable, read at every token request so
//!   a rotated secret is picked up);
//! - a certificate: the private key signs a short-lived client assertion (RS256) whose header
//!   names the certificate by its SHA-256 and SHA-1 thumbprints (`x5t#S256`, `x5t`), with
//!   `aud` = the token endpoint and `iss` = `sub` = the client id;
//! - a federated token file (e.g. Kubernetes workload identity, `AZURE_FEDERATED_TOKEN_FILE`),
//!   read at every token request (the kubelet rotates it) and sent as the client assertion.
//!
//! Every value read here is a [`Secret`]; errors name files and variables, never contents.

use super::error::GraphError;
use super::secret::Secret;
use crate::config::GraphCredential;
use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `client_assertion_type` for a JWT client assertion (RFC 7523).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Lifetime of a signed client assertion; Entra only needs it for the one token request.
const ASSERTION_LIFETIME_SECS: u64 = 300;

/// A loaded credential, ready to authenticate token requests.
pub struct ClientCredential {
    kind: Kind,
}

enum Kind {
    SecretFile(PathBuf),
    SecretEnv(String),
    Certificate(Box<CertificateKey>),
    FederatedTokenFile(PathBuf),
}

/// A private key and the thumbprints of its certificate.
struct CertificateKey {
    key: EncodingKey,
    x5t: String,
    x5t_s256: String,
}

/// Claims of a certificate client assertion.
#[derive(Debug, Serialize, Deserialize)]
pub struct AssertionClaims {
    pub aud: String,
    pub iss: String,
    pub sub: String,
    pub jti: String,
    pub nbf: u64,
    pub iat: u64,
    pub exp: u64,
}

/// The form fields that authenticate one token request.
pub enum ClientAuth {
    /// `client_secret`.
    Secret(Secret),
    /// `client_assertion_type` = jwt-bearer and `client_assertion`.
    Assertion(Secret),
}

impl ClientCredential {
    /// Loads the credential: parses the certificate and key (checking that they belong
    /// together), or checks that the secret or token can be read now.
    pub fn load(config: &GraphCredential) -> Result<Self, GraphError> {
        let kind = match config {
            GraphCredential::ClientSecretFile(p) => Kind::SecretFile(p.clone()),
            GraphCredential::ClientSecretEnv(v) => Kind::SecretEnv(v.clone()),
            GraphCredential::FederatedTokenFile(p) => Kind::FederatedTokenFile(p.clone()),
            GraphCredential::Certificate {
                certificate_file,
                private_key_file,
            } => Kind::Certificate(Box::new(CertificateKey::load(
                certificate_file,
                private_key_file,
            )?)),
        };
        let credential = Self { kind };
        // Fail at startup, not at the first sync, when the secret or token is unreadable.
        match &credential.kind {
            Kind::SecretFile(p) | Kind::FederatedTokenFile(p) => {
                read_secret_file(p)?;
            }
            Kind::SecretEnv(v) => {
                read_secret_env(v)?;
            }
            Kind::Certificate(_) => {}
        }
        Ok(credential)
    }

    /// What authenticates the next token request at `token_url` for `client_id`: the secret
    /// or token as it is now on disk or in the environment, or a freshly signed assertion.
    pub fn client_auth(&self, client_id: &str, token_url: &str) -> Result<ClientAuth, GraphError> {
        Ok(match &self.kind {
            Kind::SecretFile(p) => ClientAuth::Secret(read_secret_file(p)?),
            Kind::SecretEnv(v) => ClientAuth::Secret(read_secret_env(v)?),
            Kind::FederatedTokenFile(p) => ClientAuth::Assertion(read_secret_file(p)?),
            Kind::Certificate(c) => ClientAuth::Assertion(c.sign(client_id, token_url)?),
        })
    }

    /// A short description for logs: the kind and where it comes from, never the value.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::SecretFile(p) => format!("client secret file {}", p.display()),
            Kind::SecretEnv(v) => format!("client secret from ${v}"),
            Kind::Certificate(c) => format!("certificate x5t#S256={}", c.x5t_s256),
            Kind::FederatedTokenFile(p) => format!("federated token file {}", p.display()),
        }
    }
}

fn read_secret_file(path: &Path) -> Result<Secret, GraphError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| GraphError::Credential(format!("cannot read {}: {e}", path.display())))?;
    let value = text.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        return Err(GraphError::Credential(format!(
            "{} is empty",
            path.display()
        )));
    }
    Ok(Secret::new(value))
}

fn read_secret_env(name: &str) -> Result<Secret, GraphError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
        Ok(_) => Err(GraphError::Credential(format!(
            "environment variable {name} is empty"
        ))),
        Err(_) => Err(GraphError::Credential(format!(
            "environment variable {name} is not set (or not valid UTF-8)"
        ))),
    }
}

/// Base64url (no padding) of a digest of `der`.
fn thumbprint(algorithm: &'static digest::Algorithm, der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(algorithm, der).as_ref())
}

/// The `x5t#S256` thumbprint of the first certificate in a PEM file's contents.
pub fn certificate_thumbprint_s256(pem_text: &[u8]) -> Result<String, GraphError> {
    Ok(thumbprint(&digest::SHA256, &certificate_der(pem_text)?))
}

fn certificate_der(pem_text: &[u8]) -> Result<Vec<u8>, GraphError> {
    pem::parse_many(pem_text)
        .map_err(|e| GraphError::Credential(format!("certificate is not PEM: {e}")))?
        .into_iter()
        .find(|p| p.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .ok_or_else(|| {
            GraphError::Credential("no CERTIFICATE block in the certificate file".into())
        })
}

/// 128 random bits, hex: the assertion's `jti`.
fn random_id() -> Result<String, GraphError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| GraphError::Credential("no randomness for the assertion id".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

// === impl CertificateKey ===

impl CertificateKey {
    fn load(certificate_file: &Path, private_key_file: &Path) -> Result<Self, GraphError> {
        let read = |p: &Path| {
            std::fs::read(p)
                .map_err(|e| GraphError::Credential(format!("cannot read {}: {e}", p.display())))
        };
        let cert_pem = read(certificate_file)?;
        let der = certificate_der(&cert_pem)
            .map_err(|e| GraphError::Credential(format!("{}: {e}", certificate_file.display())))?;
        // Only the parse outcome is reported: the key file's contents never reach a message.
        let key = EncodingKey::from_rsa_pem(&read(private_key_file)?).map_err(|_| {
            GraphError::Credential(format!(
                "{} is not an RSA private key in PEM (PKCS#8 or PKCS#1)",
                private_key_file.display()
            ))
        })?;
        let public = DecodingKey::from_rsa_pem(&cert_pem).map_err(|_| {
            GraphError::Credential(format!(
                "{} does not hold an RSA certificate",
                certificate_file.display()
            ))
        })?;
        let loaded = Self {
            key,
            x5t: thumbprint(&digest::SHA1_FOR_LEGACY_USE_ONLY, &der),
            x5t_s256: thumbprint(&digest::SHA256, &der),
        };
        // A key that does not match the certificate would only show as invalid_client later.
        let probe = loaded.sign("probe", "probe")?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&["probe"]);
        jsonwebtoken::decode::<AssertionClaims>(probe.expose(), &public, &validation).map_err(
            |_| {
                GraphError::Credential(format!(
                    "the private key in {} does not belong to the certificate in {}",
                    private_key_file.display(),
                    certificate_file.display()
                ))
            },
        )?;
        Ok(loaded)
    }

    fn sign(&self, client_id: &str, token_url: &str) -> Result<Secret, GraphError> {
        let mut header = Header::new(Algorithm::RS256);
        header.x5t = Some(self.x5t.clone());
        header.x5t_s256 = Some(self.x5t_s256.clone());
        let now = crate::clock::unix_now();
        let claims = AssertionClaims {
            aud: token_url.to_string(),
            iss: client_id.to_string(),
            sub: client_id.to_string(),
            jti: random_id()?,
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map(Secret::new)
            .map_err(|e| GraphError::Credential(format!("cannot sign the client assertion: {e}")))
    }
}
