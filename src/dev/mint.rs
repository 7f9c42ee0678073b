//! Minting Entra-shaped access tokens for every caller kind from a local RSA key.

use crate::entra::Issuers;
use crate::identity::CallerKind;
use aws_lc_rs::digest;
use aws_lc_rs::rsa::PublicKeyComponents;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Map, Value};

/// Why a signing key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    #[error("the key is not a PEM-encoded PKCS#8 RSA private key: {0}")]
    Key(String),
    #[error("signing failed")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// An RSA key that signs tokens, with its `kid` and public JWKS.
pub struct SigningIdentity {
    key: EncodingKey,
    /// Key id: base64url of the first 12 bytes of SHA-256 over the modulus.
    pub kid: String,
    /// The public key as a JWK (`kty`, `use`, `alg`, `kid`, `n`, `e`).
    pub jwk: Value,
}

impl SigningIdentity {
    /// Loads a PKCS#8 PEM private key.
    pub fn from_pem(pem_text: &[u8]) -> Result<Self, MintError> {
        let parsed = pem::parse(pem_text).map_err(|e| MintError::Key(e.to_string()))?;
        let pair =
            RsaKeyPair::from_pkcs8(parsed.contents()).map_err(|e| MintError::Key(e.to_string()))?;
        let public = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        let n = URL_SAFE_NO_PAD.encode(&public.n);
        let e = URL_SAFE_NO_PAD.encode(&public.e);
        let kid =
            URL_SAFE_NO_PAD.encode(&digest::digest(&digest::SHA256, &public.n).as_ref()[..12]);
        let key = EncodingKey::from_rsa_pem(pem_text).map_err(|e| MintError::Key(e.to_string()))?;
        let jwk = json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e});
        Ok(Self { key, kid, jwk })
    }

    /// Signs `claims` with RS256 under this key's `kid` (v1 tokens also carry `x5t`).
    pub fn sign(&self, claims: &Map<String, Value>) -> Result<String, MintError> {
        let mut header = Map::new();
        header.insert("typ".into(), json!("JWT"));
        header.insert("alg".into(), json!("RS256"));
        header.insert("kid".into(), json!(self.kid));
        if claims.get("ver").and_then(Value::as_str) == Some("1.0") {
            header.insert("x5t".into(), json!(self.kid));
        }
        self.sign_with_header(&header, claims)
    }

    /// Signs exactly the given header and claims with RS256, whatever the header says.
    pub fn sign_with_header(
        &self,
        header: &Map<String, Value>,
        claims: &Map<String, Value>,
    ) -> Result<String, MintError> {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(Value::Object(header.clone()).to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string())
        );
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &self.key, Algorithm::RS256)?;
        Ok(format!("{message}.{signature}"))
    }
}

/// What to put in a minted token.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub kind: CallerKind,
    pub tenant: String,
    /// `"1.0"` or `"2.0"`.
    pub version: String,
    pub audience: String,
    /// The client: the agent identity for agent kinds, the application otherwise.
    pub client: String,
    /// The blueprint app id (agent kinds).
    pub blueprint: Option<String>,
    /// The user or agent user object id (delegated kinds); the service principal otherwise.
    pub subject: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub issued_at: u64,
    pub lifetime_secs: u64,
    /// Claims set last, overriding anything above.
    pub extra: Map<String, Value>,
}

impl TokenSpec {
    /// The claims of the token, in the shapes Entra issues (see the token reference).
    pub fn claims(&self) -> Map<String, Value> {
        let v1 = self.version == "1.0";
        let mut c = Map::new();
        let mut put = |k: &str, v: Value| {
            c.insert(k.to_string(), v);
        };
        put("aud", json!(self.audience));
        put(
            "iss",
            json!(if v1 {
                Issuers::default().v1(&self.tenant)
            } else {
                Issuers::default().v2(&self.tenant)
            }),
        );
        put("iat", json!(self.issued_at));
        put("nbf", json!(self.issued_at));
        put("exp", json!(self.issued_at + self.lifetime_secs));
        put("tid", json!(self.tenant));
        put("ver", json!(self.version));
        put(if v1 { "appid" } else { "azp" }, json!(self.client));
        put(if v1 { "appidacr" } else { "azpacr" }, json!("2"));
        put("uti", json!(format!("dev{}", self.issued_at)));
        let subject = self.subject.clone().unwrap_or_else(|| self.client.clone());
        let (idtyp, act, sub) = match self.kind {
            CallerKind::AgentApp => (Some("app"), "3 11 9", "11 3 9"),
            CallerKind::AgentObo => (Some("user"), "3 9 11", "3 10"),
            CallerKind::AgentUser => (Some("user"), "3 11 9", "3 13"),
            CallerKind::App => (Some("app"), "9 3", "9 3"),
            CallerKind::User => (None, "", ""),
            CallerKind::AppOboAgentUser => (Some("user"), "3 9", "3 13"),
        };
        if let Some(t) = idtyp {
            put("idtyp", json!(t));
        }
        if !act.is_empty() {
            put("xms_act_fct", json!(act));
            put("xms_sub_fct", json!(sub));
        }
        let oid = if self.kind == CallerKind::AgentApp {
            self.client.clone()
        } else {
            subject
        };
        put("oid", json!(oid));
        put(
            "sub",
            json!(if self.kind.is_delegated() {
                format!("pairwise-{oid}")
            } else {
                oid.clone()
            }),
        );
        if self.kind.is_agent() {
            if let Some(bp) = &self.blueprint {
                put("xms_par_app_azp", json!(bp));
            }
        }
        if self.kind.is_delegated() {
            put("scp", json!(self.scopes.join(" ")));
        } else {
            put("roles", json!(self.roles));
        }
        for (k, v) in &self.extra {
            c.insert(k.clone(), v.clone());
        }
        c
    }
}
