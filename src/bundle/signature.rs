//! Bundle signatures in OPA's `/.signatures.json` format.
//!
//! The file is `{"signatures": ["<JWT>"]}` with exactly one compact JWS. Its payload lists
//! every file of the bundle: `{"files": [{"name": "agentgate/decision.rego", "hash": "<hex>",
//! "algorithm": "SHA-256"}, ...]}`, optionally with `keyid` and `scope`. A bundle verifies when
//! the JWS verifies with the configured public key and algorithm (RS256 or ES256), and the
//! files listed are exactly the files present (`.signatures.json` itself aside), each with the
//! right SHA-256: over the canonical JSON for `data.json` and `.manifest`
//! ([`super::canonical`]), over the bytes for anything else. A `scope` is refused, since this
//! gateway configures none.

use super::archive::BundleEntry;
use super::canonical::canonical_json;
use super::BundleError;
use aws_lc_rs::digest;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The signatures file's path inside a bundle.
pub const SIGNATURES_FILE: &str = ".signatures.json";

/// The one hash algorithm accepted in a signature's file list.
const SHA_256: &str = "SHA-256";

/// A public key that bundle signatures must verify with.
#[derive(Clone)]
pub struct VerificationKey {
    alg: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerificationKey {
    /// Reads a PEM public key (`PUBLIC KEY`, or `RSA PUBLIC KEY` for RS256) for `alg`:
    /// RS256 or ES256.
    pub fn from_pem(pem: &[u8], alg: Algorithm) -> Result<Self, BundleError> {
        let key = match alg {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
            Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
            other => {
                return Err(BundleError::Key {
                    message: format!("{other:?} is not supported: use RS256 or ES256"),
                })
            }
        }
        .map_err(|e| BundleError::Key {
            message: format!("not a {alg:?} public key in PEM form ({e})"),
        })?;
        Ok(Self { alg, key })
    }
}

/// What a bundle's signature must satisfy.
#[derive(Debug, Clone)]
pub enum Verification {
    /// The bundle must carry `.signatures.json`, verifying with this key.
    Key(VerificationKey),
    /// No key is configured: a bundle that carries signatures is refused (a signed bundle on
    /// a gateway without the key is a misconfiguration, as in OPA).
    Unsigned,
    /// Signatures are not checked at all (offline tools such as `agentgate test`).
    Skip,
}

/// A private key that signs bundles (`agentgate bundle build --signing-key`).
pub struct SigningKey {
    alg: Algorithm,
    key: EncodingKey,
}

impl SigningKey {
    /// Reads a PEM private key: RSA (RS256) or P-256 in PKCS#8 (ES256).
    pub fn from_pem(pem: &[u8]) -> Result<Self, BundleError> {
        let candidates = [
            (Algorithm::RS256, EncodingKey::from_rsa_pem(pem)),
            (Algorithm::ES256, EncodingKey::from_ec_pem(pem)),
        ];
        // A public key also parses as an encoding key; only a trial signature tells.
        candidates
            .into_iter()
            .find_map(|(alg, key)| {
                let key = key.ok()?;
                jsonwebtoken::crypto::sign(b"probe", &key, alg).ok()?;
                Some(Self { alg, key })
            })
            .ok_or_else(|| BundleError::Key {
                message: "not an RSA or P-256 (PKCS#8) private key in PEM form".into(),
            })
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SignaturesFile {
    signatures: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    files: Vec<FileDigest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keyid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileDigest {
    name: String,
    hash: String,
    algorithm: String,
}

/// Whether a file is hashed over its canonical JSON (OPA's "structured" files).
fn structured(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    base == "data.json" || base == ".manifest"
}

/// The lower-case hex SHA-256 that a signature lists for this file.
pub fn file_digest(entry: &BundleEntry) -> Result<String, BundleError> {
    let digest = if structured(&entry.name) {
        let canonical = canonical_json(&entry.bytes).map_err(|e| BundleError::Data {
            file: entry.name.clone(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        digest::digest(&digest::SHA256, &canonical)
    } else {
        digest::digest(&digest::SHA256, &entry.bytes)
    };
    Ok(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// The `.signatures.json` bytes for `entries`, signed with `key`.
pub fn sign(entries: &[BundleEntry], key: &SigningKey) -> Result<Vec<u8>, BundleError> {
    let files = entries
        .iter()
        .filter(|e| e.name != SIGNATURES_FILE)
        .map(|e| {
            Ok(FileDigest {
                name: e.name.clone(),
                hash: file_digest(e)?,
                algorithm: SHA_256.into(),
            })
        })
        .collect::<Result<Vec<_>, BundleError>>()?;
    let payload = Payload {
        files,
        keyid: None,
        scope: None,
    };
    let jwt = jsonwebtoken::encode(&Header::new(key.alg), &payload, &key.key).map_err(|e| {
        BundleError::Key {
            message: format!("signing failed: {e}"),
        }
    })?;
    serde_json::to_vec_pretty(&SignaturesFile {
        signatures: vec![jwt],
    })
    .map_err(|e| BundleError::Key {
        message: e.to_string(),
    })
}

/// Checks `signatures` (the `.signatures.json` bytes) against `entries` and `key`.
pub fn verify(
    signatures: &[u8],
    entries: &[BundleEntry],
    key: &VerificationKey,
) -> Result<(), BundleError> {
    let bad = |message: String| BundleError::Signature { message };
    let file: SignaturesFile = serde_json::from_slice(signatures)
        .map_err(|e| bad(format!("{SIGNATURES_FILE} is not valid: {e}")))?;
    let [token] = file.signatures.as_slice() else {
        return Err(bad(format!(
            "{SIGNATURES_FILE} must hold exactly one JWT, not {}",
            file.signatures.len()
        )));
    };
    let mut validation = Validation::new(key.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let payload: Payload = jsonwebtoken::decode(token, &key.key, &validation)
        .map_err(|e| {
            bad(format!(
                "the JWT does not verify with the configured key ({e})"
            ))
        })?
        .claims;
    if payload.scope.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(bad("the signature has a scope; none is configured".into()));
    }
    let mut listed: BTreeMap<&str, &FileDigest> = BTreeMap::new();
    for f in &payload.files {
        if listed.insert(f.name.trim_start_matches('/'), f).is_some() {
            return Err(bad(format!("{} is listed twice", f.name)));
        }
    }
    for entry in entries.iter().filter(|e| e.name != SIGNATURES_FILE) {
        let Some(expected) = listed.remove(entry.name.as_str()) else {
            return Err(bad(format!(
                "{} is not listed in the signature",
                entry.name
            )));
        };
        if expected.algorithm != SHA_256 {
            return Err(bad(format!(
                "{}: hash algorithm {:?} is not supported (SHA-256 only)",
                entry.name, expected.algorithm
            )));
        }
        if !expected.hash.eq_ignore_ascii_case(&file_digest(entry)?) {
            return Err(bad(format!("{}: digest mismatch", entry.name)));
        }
    }
    if let Some(missing) = listed.keys().next() {
        return Err(bad(format!(
            "{missing} is listed in the signature but not in the bundle"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/data/keys/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()
    }

    fn entries() -> Vec<BundleEntry> {
        [
            (".manifest", &br#"{"revision":"r1","roots":[""]}"#[..]),
            ("agentgate/p.rego", b"package agentgate\n"),
            ("directory/data.json", b"{\"b\": 1, \"a\": [true]}"),
        ]
        .into_iter()
        .map(|(name, bytes)| BundleEntry {
            name: name.into(),
            bytes: bytes.to_vec(),
        })
        .collect()
    }

    fn rsa() -> (SigningKey, VerificationKey) {
        (
            SigningKey::from_pem(&pem("primary.pem")).unwrap(),
            VerificationKey::from_pem(&pem("primary.pub.pem"), Algorithm::RS256).unwrap(),
        )
    }

    fn message(r: Result<(), BundleError>) -> String {
        match r {
            Err(BundleError::Signature { message }) => message,
            other => panic!("expected a signature error, got {other:?}"),
        }
    }

    #[test]
    fn signed_bundles_verify_with_rs256_and_es256() {
        let (signer, verifier) = rsa();
        assert_eq!(signer.alg(), Algorithm::RS256);
        let sig = sign(&entries(), &signer).unwrap();
        verify(&sig, &entries(), &verifier).unwrap();

        let ec = SigningKey::from_pem(&pem("bundle-ec.pem")).unwrap();
        assert_eq!(ec.alg(), Algorithm::ES256);
        let ec_pub =
            VerificationKey::from_pem(&pem("bundle-ec.pub.pem"), Algorithm::ES256).unwrap();
        verify(&sign(&entries(), &ec).unwrap(), &entries(), &ec_pub).unwrap();
        // The configured algorithm decides, never the token's header.
        assert!(message(verify(&sig, &entries(), &ec_pub)).contains("does not verify"));
    }

    #[test]
    fn structured_files_are_hashed_over_canonical_json() {
        let (signer, verifier) = rsa();
        let sig = sign(&entries(), &signer).unwrap();
        let mut reformatted = entries();
        reformatted[2].bytes = b"{\n  \"a\": [ true ],\n  \"b\": 1\n}\n".to_vec();
        verify(&sig, &reformatted, &verifier).unwrap();
        // A Rego file is hashed over its bytes: one added space is a change.
        let mut spaced = entries();
        spaced[1].bytes = b"package agentgate \n".to_vec();
        assert_eq!(
            message(verify(&sig, &spaced, &verifier)),
            "agentgate/p.rego: digest mismatch"
        );
    }

    #[test]
    fn tampering_in_any_way_is_refused() {
        let (signer, verifier) = rsa();
        let sig = sign(&entries(), &signer).unwrap();

        let mut changed = entries();
        changed[2].bytes = br#"{"a":[false],"b":1}"#.to_vec();
        assert_eq!(
            message(verify(&sig, &changed, &verifier)),
            "directory/data.json: digest mismatch"
        );

        let mut added = entries();
        added.push(BundleEntry {
            name: "agentgate/extra.rego".into(),
            bytes: b"package agentgate\n".to_vec(),
        });
        assert_eq!(
            message(verify(&sig, &added, &verifier)),
            "agentgate/extra.rego is not listed in the signature"
        );

        let removed = entries()[..2].to_vec();
        assert_eq!(
            message(verify(&sig, &removed, &verifier)),
            "directory/data.json is listed in the signature but not in the bundle"
        );

        // Another key's signature over the same files.
        let other = SigningKey::from_pem(&pem("rotated.pem")).unwrap();
        let forged = sign(&entries(), &other).unwrap();
        assert!(message(verify(&forged, &entries(), &verifier)).contains("does not verify"));

        // A payload edited after signing.
        let text = String::from_utf8(sig.clone()).unwrap();
        let jwt: SignaturesFile = serde_json::from_str(&text).unwrap();
        let parts: Vec<&str> = jwt.signatures[0].split('.').collect();
        let edited = format!("{}.{}x.{}", parts[0], parts[1], parts[2]);
        let edited = serde_json::to_vec(&SignaturesFile {
            signatures: vec![edited],
        })
        .unwrap();
        assert!(message(verify(&edited, &entries(), &verifier)).contains("does not verify"));

        // Two JWTs, or none.
        let two = serde_json::to_vec(&SignaturesFile {
            signatures: vec![jwt.signatures[0].clone(), jwt.signatures[0].clone()],
        })
        .unwrap();
        assert!(message(verify(&two, &entries(), &verifier)).contains("exactly one JWT"));
        assert!(
            message(verify(br#"{"signatures":[]}"#, &entries(), &verifier))
                .contains("exactly one JWT")
        );
    }

    #[test]
    fn an_unsupported_hash_algorithm_or_a_scope_is_refused() {
        let signer = SigningKey::from_pem(&pem("primary.pem")).unwrap();
        let (_, verifier) = rsa();
        let files: Vec<FileDigest> = entries()
            .iter()
            .map(|e| FileDigest {
                name: e.name.clone(),
                hash: file_digest(e).unwrap(),
                algorithm: "MD5".into(),
            })
            .collect();
        let jwt = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &Payload {
                files,
                keyid: None,
                scope: None,
            },
            &signer.key,
        )
        .unwrap();
        let file = serde_json::to_vec(&SignaturesFile {
            signatures: vec![jwt],
        })
        .unwrap();
        assert!(message(verify(&file, &entries(), &verifier)).contains("not supported"));

        let scoped = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &Payload {
                files: vec![],
                keyid: None,
                scope: Some("write".into()),
            },
            &signer.key,
        )
        .unwrap();
        let file = serde_json::to_vec(&SignaturesFile {
            signatures: vec![scoped],
        })
        .unwrap();
        assert!(message(verify(&file, &entries(), &verifier)).contains("scope"));
    }

    #[test]
    fn keys_of_the_wrong_kind_are_refused_clearly() {
        assert!(matches!(
            VerificationKey::from_pem(&pem("bundle-ec.pub.pem"), Algorithm::RS256),
            Err(BundleError::Key { .. })
        ));
        assert!(matches!(
            VerificationKey::from_pem(b"not a key", Algorithm::ES256),
            Err(BundleError::Key { .. })
        ));
        assert!(matches!(
            SigningKey::from_pem(&pem("primary.pub.pem")),
            Err(BundleError::Key { .. })
        ));
        match VerificationKey::from_pem(&pem("primary.pub.pem"), Algorithm::RS384) {
            Err(e) => assert_eq!(
                e.to_string(),
                "signing key: RS384 is not supported: use RS256 or ES256"
            ),
            Ok(_) => panic!("RS384 accepted"),
        }
    }
}
