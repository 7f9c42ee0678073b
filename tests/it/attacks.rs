//! A generated corpus of hostile tokens, thrown at one running gateway.
//!
//! Every token here is built programmatically from a good agent token (the claims of
//! `spec(CallerKind::AgentApp)`, signed with the published primary key) and then bent in one
//! way: algorithm confusion, forged or foreign signatures, key-pointing and extension header
//! parameters, duplicate JSON names, wrongly typed or out-of-window time claims, audiences,
//! issuers and tenants that do not fit, ID-token shapes, malformed agent facets, a blueprint
//! the directory disagrees with, and encodings that a lenient parser might accept. Most of
//! them carry a valid RS256 signature, so only the check under attack stands between the
//! token and the upstream.
//!
//! Each token carries the one refusal (status and `reason`) it must get: the first check it
//! fails, in the order the gateway checks (the `Authorization` header; the compact form and
//! its JOSE header; the claims' JSON; tenant, issuer, audience presence, the exchange
//! audience and time claims; the key and the signature; client, subject and agent claims;
//! the route's audience; the directory). No URL named in a token may be contacted, and the
//! gateway must still serve a good token afterwards. Keys that the JWKS itself disqualifies for an RS256 signature (pinned to
//! another algorithm, meant for encryption, of another key type, or bound to another tenant)
//! get issuers and gateways of their own.

use crate::support::*;
use agentgate::dev::SigningIdentity;
use agentgate::identity::CallerKind;
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::hmac;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The refusal an attack must get: HTTP status and `reason`.
type Refusal = (u16, &'static str);

const MALFORMED: Refusal = (401, "malformed_token");
const ALGORITHM_NOT_ALLOWED: Refusal = (401, "algorithm_not_allowed");
const FORBIDDEN_HEADER: Refusal = (401, "forbidden_header");
const UNSUPPORTED_TYPE: Refusal = (401, "unsupported_token_type");
const UNKNOWN_KEY: Refusal = (401, "unknown_key");
const INVALID_SIGNATURE: Refusal = (401, "invalid_signature");
const TOO_LARGE: Refusal = (401, "token_too_large");
const INVALID_TIME_CLAIM: Refusal = (401, "invalid_time_claim");
const MISSING_CLAIM: Refusal = (401, "missing_claim");
const INVALID_ISSUER: Refusal = (401, "invalid_issuer");
const TENANT_NOT_ALLOWED: Refusal = (401, "tenant_not_allowed");
const INVALID_AUDIENCE: Refusal = (401, "invalid_audience");
const EXCHANGE_AUDIENCE: Refusal = (401, "exchange_audience");
const MALFORMED_AGENT_CLAIMS: Refusal = (401, "malformed_agent_claims");
const BLUEPRINT_MISMATCH: Refusal = (403, "blueprint_mismatch");

/// One attack token and the refusal it must get.
struct Attack {
    label: String,
    token: String,
    expect: Refusal,
}

/// Labelled attack tokens.
type Attacks = Vec<Attack>;

/// The token exchange audience (`EXCHANGE_AUDIENCE` in the crate).
const EXCHANGE: &str = "fb60f99c-7a34-4190-8149-302f77469936";
/// Microsoft Graph's app id.
const GRAPH: &str = "00000003-0000-0000-c000-000000000000";
/// The default `identity.max_token_bytes`.
const MAX_TOKEN: usize = 8 * 1024;

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn v1_iss(tid: &str) -> String {
    format!("https://sts.windows.net/{tid}/")
}

fn v2_iss(tid: &str) -> String {
    format!("https://login.microsoftonline.com/{tid}/v2.0")
}

/// The three parts of a compact token.
fn parts(token: &str) -> [&str; 3] {
    let mut it = token.splitn(3, '.');
    [(); 3].map(|_| it.next().unwrap())
}

/// Re-encodes a base64url part in the standard alphabet.
fn to_standard(part: &str, padded: bool) -> String {
    let bytes = URL_SAFE_NO_PAD.decode(part).unwrap();
    if padded {
        STANDARD.encode(bytes)
    } else {
        STANDARD_NO_PAD.encode(bytes)
    }
}

fn attack(label: impl Into<String>, token: String, expect: Refusal) -> Attack {
    Attack {
        label: label.into(),
        token,
        expect,
    }
}

/// Keys and helpers for crafting tokens.
struct Kit {
    key: SigningIdentity,
    /// A key the issuer never publishes.
    rotated: SigningIdentity,
    /// The primary key, for signing raw header and payload text.
    encoding: EncodingKey,
    /// The primary key pair, for its public key encodings.
    pair: RsaKeyPair,
    /// A URL on a loopback listener nothing may connect to.
    trap_url: String,
    now: u64,
}

impl Kit {
    fn new(trap_url: String) -> Kit {
        let pem_text = std::fs::read(repo().join("tests/data/keys/primary.pem")).unwrap();
        let pair = RsaKeyPair::from_pkcs8(pem::parse(&pem_text).unwrap().contents()).unwrap();
        Kit {
            key: key("primary"),
            rotated: key("rotated"),
            encoding: EncodingKey::from_rsa_pem(&pem_text).unwrap(),
            pair,
            trap_url,
            now: now(),
        }
    }

    /// The public key as an X.509 SubjectPublicKeyInfo (what `BEGIN PUBLIC KEY` holds).
    fn spki_der(&self) -> Vec<u8> {
        let der: PublicKeyX509Der = self.pair.public_key().as_der().unwrap();
        der.as_ref().to_vec()
    }

    /// Good app-only agent claims.
    fn claims(&self) -> Map<String, Value> {
        spec(CallerKind::AgentApp).claims()
    }

    /// Good claims with some set (or replaced).
    fn with(&self, set: &[(&str, Value)]) -> Map<String, Value> {
        let mut c = self.claims();
        for (k, v) in set {
            c.insert((*k).to_string(), v.clone());
        }
        c
    }

    /// Good claims with some removed.
    fn without(&self, names: &[&str]) -> Map<String, Value> {
        let mut c = self.claims();
        for n in names {
            c.remove(*n);
        }
        c
    }

    /// The header the primary key normally signs with.
    fn header(&self) -> Map<String, Value> {
        json!({"typ": "JWT", "alg": "RS256", "kid": self.key.kid})
            .as_object()
            .unwrap()
            .clone()
    }

    /// The usual header with some parameters set (or replaced).
    fn header_with(&self, set: &[(&str, Value)]) -> Map<String, Value> {
        let mut h = self.header();
        for (k, v) in set {
            h.insert((*k).to_string(), v.clone());
        }
        h
    }

    /// Signs claims the normal way (RS256, primary key).
    fn sign(&self, claims: &Map<String, Value>) -> String {
        self.key.sign(claims).unwrap()
    }

    /// Signs exactly this header and these claims with RS256 and the primary key.
    fn sign_header(&self, header: &Map<String, Value>, claims: &Map<String, Value>) -> String {
        self.key.sign_with_header(header, claims).unwrap()
    }

    /// Signs raw header and payload text (duplicate names cannot go through a `Map`).
    fn sign_raw(&self, header: &str, payload: &str) -> String {
        let message = format!("{}.{}", b64(header), b64(payload));
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, Algorithm::RS256)
            .unwrap();
        format!("{message}.{sig}")
    }

    /// A token the gateway accepts.
    fn good(&self) -> String {
        self.sign(&self.claims())
    }
}

// === Algorithms and signatures ===

/// `alg: none` in four spellings, with no signature, the real one, or no third part. An
/// unknown `alg` fails before the empty signature is looked at; two parts are not a JWS.
fn alg_none(k: &Kit) -> Attacks {
    let claims = Value::Object(k.claims()).to_string();
    let mut out = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = k.header_with(&[("alg", json!(alg))]);
        let signed = k.sign_header(&header, &k.claims());
        let [h, p, _] = parts(&signed);
        out.push(attack(
            format!("alg {alg}, empty signature"),
            format!("{h}.{p}."),
            ALGORITHM_NOT_ALLOWED,
        ));
        out.push(attack(
            format!("alg {alg}, real RS256 signature"),
            signed.clone(),
            ALGORITHM_NOT_ALLOWED,
        ));
        out.push(attack(
            format!("alg {alg}, no signature part"),
            format!("{h}.{p}"),
            MALFORMED,
        ));
    }
    let bare = b64(json!({"alg": "none"}).to_string());
    out.push(attack(
        "alg none without kid or typ",
        format!("{bare}.{}.", b64(&claims)),
        ALGORITHM_NOT_ALLOWED,
    ));
    out
}

/// HS256/384/512 keyed with the RSA public key in every form an attacker could find it.
fn hmac_with_public_key(k: &Kit) -> Attacks {
    let n = k.key.jwk["n"].as_str().unwrap();
    let pkcs1 = k.pair.public_key().as_ref().to_vec();
    let spki = k.spki_der();
    let lf = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    let crlf = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::CRLF);
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("JWK JSON", k.key.jwk.to_string().into_bytes()),
        (
            "JWKS JSON",
            json!({"keys": [k.key.jwk]}).to_string().into_bytes(),
        ),
        ("base64url modulus text", n.as_bytes().to_vec()),
        ("raw modulus bytes", URL_SAFE_NO_PAD.decode(n).unwrap()),
        ("PKCS#1 DER", pkcs1.clone()),
        ("SPKI DER", spki.clone()),
        (
            "SPKI PEM (LF)",
            pem::encode_config(&pem::Pem::new("PUBLIC KEY", spki.clone()), lf).into_bytes(),
        ),
        (
            "SPKI PEM (CRLF)",
            pem::encode_config(&pem::Pem::new("PUBLIC KEY", spki), crlf).into_bytes(),
        ),
        (
            "PKCS#1 PEM",
            pem::encode_config(&pem::Pem::new("RSA PUBLIC KEY", pkcs1), lf).into_bytes(),
        ),
    ];
    let payload = b64(Value::Object(k.claims()).to_string());
    let mut out = Vec::new();
    for (alg, hmac_alg) in [
        ("HS256", hmac::HMAC_SHA256),
        ("HS384", hmac::HMAC_SHA384),
        ("HS512", hmac::HMAC_SHA512),
    ] {
        let header = b64(Value::Object(k.header_with(&[("alg", json!(alg))])).to_string());
        let message = format!("{header}.{payload}");
        for (what, secret) in &secrets {
            let tag = hmac::sign(&hmac::Key::new(hmac_alg, secret), message.as_bytes());
            out.push(attack(
                format!("{alg} keyed with the {what}"),
                format!("{message}.{}", b64(tag.as_ref())),
                ALGORITHM_NOT_ALLOWED,
            ));
        }
    }
    out
}

/// Algorithms other than RS256 in the header, over a real RS256 signature: a string that is
/// not exactly an allowed name is not allowed; anything but a string is no JOSE header.
fn other_algorithms(k: &Kit) -> Attacks {
    let mut out = Vec::new();
    for alg in [
        "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "RS384", "RS512", "HS256",
        "rs256", "Rs256", "RS256 ", " RS256", "RS-256", "RS256\0", "",
    ] {
        let header = k.header_with(&[("alg", json!(alg))]);
        out.push(attack(
            format!("alg {alg:?} over an RS256 signature"),
            k.sign_header(&header, &k.claims()),
            ALGORITHM_NOT_ALLOWED,
        ));
    }
    for (what, alg) in [
        ("a number", json!(256)),
        ("null", Value::Null),
        ("an array", json!(["RS256"])),
        ("an object", json!({"name": "RS256"})),
    ] {
        let header = k.header_with(&[("alg", alg)]);
        out.push(attack(
            format!("alg as {what}"),
            k.sign_header(&header, &k.claims()),
            MALFORMED,
        ));
    }
    let mut header = k.header();
    header.remove("alg");
    out.push(attack(
        "no alg",
        k.sign_header(&header, &k.claims()),
        MALFORMED,
    ));
    out
}

/// Signatures that are not the primary key's over this message: under a published kid they
/// do not verify; under the unpublished kid there is no key to try.
fn foreign_signatures(k: &Kit) -> Attacks {
    let good = k.good();
    let [h, p, _] = parts(&good);
    let modulus = URL_SAFE_NO_PAD
        .decode(k.key.jwk["n"].as_str().unwrap())
        .unwrap();
    let rotated_under_primary_kid = k
        .rotated
        .sign_with_header(&k.header(), &k.claims())
        .unwrap();
    let primary_under_rotated_kid = k.sign_header(
        &k.header_with(&[("kid", json!(k.rotated.kid))]),
        &k.claims(),
    );
    vec![
        attack(
            "signed by the unpublished rotated key under the primary kid",
            rotated_under_primary_kid,
            INVALID_SIGNATURE,
        ),
        attack(
            "signed by the unpublished rotated key under its own kid",
            k.rotated.sign(&k.claims()).unwrap(),
            UNKNOWN_KEY,
        ),
        attack(
            "signed by the primary key under the rotated kid",
            primary_under_rotated_kid,
            UNKNOWN_KEY,
        ),
        attack(
            "all-zero signature",
            format!("{h}.{p}.{}", b64(vec![0u8; 256])),
            INVALID_SIGNATURE,
        ),
        attack(
            "signature = the modulus",
            format!("{h}.{p}.{}", b64(&modulus)),
            INVALID_SIGNATURE,
        ),
        attack(
            "one-byte signature",
            format!("{h}.{p}.AA"),
            INVALID_SIGNATURE,
        ),
    ]
}

// === Header parameters ===

/// `kid` values that would hurt a key store keyed by path, SQL or URL, and type confusion.
/// A string names no published key; anything else, `null` or no `kid` at all is malformed
/// (the gateway needs a `kid` to pick a key).
fn kid_injection(k: &Kit) -> Attacks {
    let mut out = Vec::new();
    let trap_kid = format!("{}/kid", k.trap_url);
    for kid in [
        "../../etc/passwd",
        "/dev/null",
        "' OR 1=1 --",
        "kid\u{0}x",
        "http://127.0.0.1:1/x",
        trap_kid.as_str(),
        "",
        "*",
        "%",
    ] {
        let header = k.header_with(&[("kid", json!(kid))]);
        out.push(attack(
            format!("kid {kid:?}"),
            k.sign_header(&header, &k.claims()),
            UNKNOWN_KEY,
        ));
    }
    out.push(attack(
        "primary kid upper-cased",
        k.sign_header(
            &k.header_with(&[("kid", json!(k.key.kid.to_uppercase()))]),
            &k.claims(),
        ),
        UNKNOWN_KEY,
    ));
    out.push(attack(
        "primary kid with a trailing newline",
        k.sign_header(
            &k.header_with(&[("kid", json!(format!("{}\n", k.key.kid)))]),
            &k.claims(),
        ),
        UNKNOWN_KEY,
    ));
    for (what, kid) in [
        ("a number", json!(42)),
        ("an object", json!({"kid": k.key.kid})),
        ("an array", json!([k.key.kid])),
        ("null", Value::Null),
    ] {
        let header = k.header_with(&[("kid", kid)]);
        out.push(attack(
            format!("kid as {what}"),
            k.sign_header(&header, &k.claims()),
            MALFORMED,
        ));
    }
    let mut header = k.header();
    header.remove("kid");
    out.push(attack(
        "no kid",
        k.sign_header(&header, &k.claims()),
        MALFORMED,
    ));
    // The longest kid that still fits under the size cap, and one far beyond it.
    let mut len = 6000;
    let long = loop {
        let header = k.header_with(&[("kid", json!("k".repeat(len)))]);
        let token = k.sign_header(&header, &k.claims());
        if token.len() <= MAX_TOKEN {
            break token;
        }
        len -= 100;
    };
    out.push(attack(
        format!("{len}-char kid (token under the cap)"),
        long,
        UNKNOWN_KEY,
    ));
    let header = k.header_with(&[("kid", json!("k".repeat(10_000)))]);
    out.push(attack(
        "10000-char kid (token over the cap)",
        k.sign_header(&header, &k.claims()),
        TOO_LARGE,
    ));
    out
}

/// Twenty random kids in a row: at most one JWKS refetch, never an outage. Each is
/// `unknown_key`, never `keys_unavailable`: the tenant's key set was fetched at startup and
/// stays fresh (`max_key_age` is 24 h), and a refetch that is skipped, coalesced or slow
/// leaves that fresh set in place.
fn unknown_kid_flood(k: &Kit) -> Attacks {
    (0..20)
        .map(|i| {
            let mut bytes = [0u8; 12];
            aws_lc_rs::rand::fill(&mut bytes).unwrap();
            let kid = b64(bytes);
            let header = k.header_with(&[("kid", json!(kid))]);
            attack(
                format!("random unknown kid #{i}"),
                k.sign_header(&header, &k.claims()),
                UNKNOWN_KEY,
            )
        })
        .collect()
}

/// Header parameters that name or carry a key: refused as present, whatever their value.
fn key_sources(k: &Kit) -> Attacks {
    let spki = k.spki_der();
    let url = format!("{}/jwks", k.trap_url);
    let mut out = Vec::new();
    for param in ["jku", "x5u"] {
        out.push(attack(
            format!("{param} at the trap, primary kid"),
            k.sign_header(&k.header_with(&[(param, json!(url))]), &k.claims()),
            FORBIDDEN_HEADER,
        ));
        out.push(attack(
            format!("{param} at the trap, attacker kid"),
            k.sign_header(
                &k.header_with(&[(param, json!(url)), ("kid", json!("attacker-kid"))]),
                &k.claims(),
            ),
            FORBIDDEN_HEADER,
        ));
        out.push(attack(
            format!("{param} null"),
            k.sign_header(&k.header_with(&[(param, Value::Null)]), &k.claims()),
            FORBIDDEN_HEADER,
        ));
    }
    out.push(attack(
        "embedded jwk (the real public key)",
        k.sign_header(&k.header_with(&[("jwk", k.key.jwk.clone())]), &k.claims()),
        FORBIDDEN_HEADER,
    ));
    out.push(attack(
        "embedded jwk of the unpublished key, signed by it",
        k.rotated
            .sign_with_header(
                &k.header_with(&[
                    ("jwk", k.rotated.jwk.clone()),
                    ("kid", json!(k.rotated.kid)),
                ]),
                &k.claims(),
            )
            .unwrap(),
        FORBIDDEN_HEADER,
    ));
    out.push(attack(
        "x5c with a stub certificate",
        k.sign_header(&k.header_with(&[("x5c", json!(["MIIB"]))]), &k.claims()),
        FORBIDDEN_HEADER,
    ));
    out.push(attack(
        "x5c with the public key DER",
        k.sign_header(
            &k.header_with(&[("x5c", json!([STANDARD.encode(&spki)]))]),
            &k.claims(),
        ),
        FORBIDDEN_HEADER,
    ));
    out.push(attack(
        "zip DEF",
        k.sign_header(&k.header_with(&[("zip", json!("DEF"))]), &k.claims()),
        FORBIDDEN_HEADER,
    ));
    out
}

/// `crit` and `b64` (RFC 7515 §4.1.11, RFC 7797), which the gateway never honours: refused
/// as present, whatever their value.
fn critical_extensions(k: &Kit) -> Attacks {
    let cases: Vec<(&str, Vec<(&str, Value)>)> = vec![
        ("crit [exp]", vec![("crit", json!(["exp"]))]),
        (
            "crit [exp] with an exp header",
            vec![("crit", json!(["exp"])), ("exp", json!(k.now + 600))],
        ),
        (
            "crit [b64] with b64 false",
            vec![("crit", json!(["b64"])), ("b64", json!(false))],
        ),
        ("crit [urn:x]", vec![("crit", json!(["urn:x"]))]),
        ("crit []", vec![("crit", json!([]))]),
        ("crit as a string", vec![("crit", json!("exp"))]),
        ("crit null", vec![("crit", Value::Null)]),
        ("b64 false alone", vec![("b64", json!(false))]),
        ("b64 true alone", vec![("b64", json!(true))]),
    ];
    cases
        .into_iter()
        .map(|(what, set)| {
            attack(
                what,
                k.sign_header(&k.header_with(&set), &k.claims()),
                FORBIDDEN_HEADER,
            )
        })
        .collect()
}

/// The JWS JSON serializations (RFC 7515 §7.2) in place of a compact token: none has the
/// three dot-separated parts of the compact form.
fn json_serialization(k: &Kit) -> Attacks {
    let good = k.good();
    let [h, p, s] = parts(&good);
    let general = json!({"payload": p, "signatures": [{"protected": h, "signature": s}]});
    let flattened = json!({"protected": h, "payload": p, "signature": s});
    let unprotected = json!({
        "header": {"alg": "RS256", "kid": k.key.kid},
        "payload": p,
        "signature": s,
    });
    let none = json!({"protected": b64(json!({"alg": "none"}).to_string()), "payload": p});
    [
        ("general JSON, raw", general.to_string()),
        ("flattened JSON, raw", flattened.to_string()),
        ("unprotected-header JSON, raw", unprotected.to_string()),
        ("flattened JSON with alg none, raw", none.to_string()),
        ("general JSON, base64url", b64(general.to_string())),
        ("flattened JSON, base64url", b64(flattened.to_string())),
        (
            "flattened JSON, standard base64",
            STANDARD.encode(flattened.to_string()),
        ),
        (
            "flattened JSON, then the compact token",
            format!("{flattened}.{good}"),
        ),
    ]
    .into_iter()
    .map(|(what, token)| attack(what, token, MALFORMED))
    .chain(json_arrays(k))
    .collect()
}

/// A header or claims set as a JSON array with the right values in field order: serde's
/// derived structs read arrays positionally, RFC 7515 and 7519 require objects.
fn json_arrays(k: &Kit) -> Attacks {
    let kid = &k.key.kid;
    let header = Value::Object(k.header()).to_string();
    let payload = Value::Object(k.claims()).to_string();
    let as_array =
        |obj: &Map<String, Value>| Value::Array(obj.values().cloned().collect()).to_string();
    vec![
        attack(
            "header as a JSON array [alg, typ, kid]",
            k.sign_raw(&format!(r#"["RS256",null,"{kid}"]"#), &payload),
            MALFORMED,
        ),
        attack(
            "claims set as a JSON array",
            k.sign_raw(&header, &as_array(&k.claims())),
            MALFORMED,
        ),
        attack(
            "header as a JSON string",
            k.sign_raw("\"RS256\"", &payload),
            MALFORMED,
        ),
    ]
}

// === Duplicate JSON names ===

/// The same name twice in the payload or header, each order, and via a `\u` escape: a
/// known name given twice fails the whole JSON document.
fn duplicate_names(k: &Kit) -> Attacks {
    let dup = |name: &str, first: &Value, second: &Value, apart: bool| {
        let mut c = k.claims();
        c.remove(name);
        let rest = Value::Object(c).to_string();
        let inner = &rest[1..rest.len() - 1];
        if apart {
            format!("{{\"{name}\":{first},{inner},\"{name}\":{second}}}")
        } else {
            format!("{{\"{name}\":{first},\"{name}\":{second},{inner}}}")
        }
    };
    let header = Value::Object(k.header()).to_string();
    let claims = k.claims();
    let evil: [(&str, Value); 5] = [
        ("exp", json!(k.now - 3600)),
        ("tid", json!(TENANT_B)),
        ("aud", json!("api://evil")),
        ("iss", json!(v1_iss(TENANT_B))),
        ("xms_par_app_azp", json!(BP_INVOICE)),
    ];
    let mut out = Vec::new();
    for (name, bad) in &evil {
        let good = &claims[*name];
        out.push(attack(
            format!("duplicate {name}: bad then good"),
            k.sign_raw(&header, &dup(name, bad, good, false)),
            MALFORMED,
        ));
        out.push(attack(
            format!("duplicate {name}: good ... bad"),
            k.sign_raw(&header, &dup(name, good, bad, true)),
            MALFORMED,
        ));
    }
    out.push(attack(
        "duplicate exp, same value twice",
        k.sign_raw(&header, &dup("exp", &claims["exp"], &claims["exp"], false)),
        MALFORMED,
    ));
    let payload = Value::Object(k.claims()).to_string();
    // The escaped spelling comes first; the plain name stays in the rest of the payload.
    let escaped =
        |escaped_name: &str, bad: Value| format!("{{\"{escaped_name}\":{bad},{}", &payload[1..]);
    out.push(attack(
        "duplicate tid spelled \\u0074id",
        k.sign_raw(&header, &escaped("\\u0074id", json!(TENANT_B))),
        MALFORMED,
    ));
    out.push(attack(
        "duplicate exp spelled \\u0065xp",
        k.sign_raw(&header, &escaped("\\u0065xp", json!(k.now - 3600))),
        MALFORMED,
    ));
    let kid = &k.key.kid;
    for (what, text) in [
        (
            "duplicate alg: RS256 then none",
            format!(r#"{{"alg":"RS256","alg":"none","kid":"{kid}","typ":"JWT"}}"#),
        ),
        (
            "duplicate alg: none then RS256",
            format!(r#"{{"alg":"none","alg":"RS256","kid":"{kid}","typ":"JWT"}}"#),
        ),
        (
            "duplicate kid: unknown then primary",
            format!(r#"{{"alg":"RS256","kid":"nope","kid":"{kid}","typ":"JWT"}}"#),
        ),
        (
            "duplicate typ",
            format!(r#"{{"alg":"RS256","kid":"{kid}","typ":"id_token","typ":"JWT"}}"#),
        ),
        (
            "duplicate alg spelled \\u0061lg",
            format!(r#"{{"alg":"RS256","\u0061lg":"none","kid":"{kid}"}}"#),
        ),
    ] {
        out.push(attack(what, k.sign_raw(&text, &payload), MALFORMED));
    }
    out
}

// === Time claims ===

/// `exp`, `nbf` and `iat` of every JSON type but a NumericDate, and out of range: never
/// coerced, never ignored.
fn time_claim_types(k: &Kit) -> Attacks {
    let t = k.now + 600;
    let mut out = Vec::new();
    for claim in ["exp", "nbf", "iat"] {
        for (what, v) in [
            ("a numeric string", json!(t.to_string())),
            ("a fractional float", json!(t as f64 + 0.5)),
            ("an integral float", json!(t as f64)),
            ("null", Value::Null),
            ("true", json!(true)),
            ("1e30", json!(1e30)),
            ("u64::MAX", json!(u64::MAX)),
            ("past year 9999", json!(253_402_300_800u64)),
            ("negative", json!(-1)),
            ("an array", json!([t])),
            ("an object", json!({"t": t})),
        ] {
            out.push(attack(
                format!("{claim} as {what}"),
                k.sign(&k.with(&[(claim, v)])),
                INVALID_TIME_CLAIM,
            ));
        }
    }
    out
}

/// Lifetimes just beyond the 60 s leeway, minted at unix time `t` (see the retry in
/// [`attack_corpus_is_refused`]: a token minted in one second may reach the gateway in the
/// next, when `nbf` or `iat` = t + 61 is within the leeway).
fn lifetime_window(k: &Kit, t: u64) -> Attacks {
    let expired = (401, "token_expired");
    let not_yet_valid = (401, "token_not_yet_valid");
    let issued_in_future = (401, "token_issued_in_future");
    [
        ("exp = now - 61", "exp", t - 61, expired),
        ("exp = now - 120", "exp", t - 120, expired),
        ("exp = 0", "exp", 0, expired),
        ("nbf = now + 61", "nbf", t + 61, not_yet_valid),
        ("nbf = now + 3600", "nbf", t + 3600, not_yet_valid),
        ("iat = now + 61", "iat", t + 61, issued_in_future),
        ("iat = now + 3600", "iat", t + 3600, issued_in_future),
    ]
    .into_iter()
    .map(|(what, claim, at, expect)| attack(what, k.sign(&k.with(&[(claim, json!(at))])), expect))
    .chain([attack(
        "missing exp",
        k.sign(&k.without(&["exp"])),
        MISSING_CLAIM,
    )])
    .collect()
}

// === Audience, issuer, tenant ===

/// Audiences of other resources are checked against the route once the token verified; the
/// exchange audience is refused for every route before any RSA work; `aud` must be one
/// string (an array is the wrong JSON type), and `null` counts as missing.
fn audiences(k: &Kit) -> Attacks {
    let exchange_upper = EXCHANGE.to_uppercase();
    let cases: Vec<(&str, Option<Value>, Refusal)> = vec![
        (
            "another API",
            Some(json!("api://some-other-api")),
            INVALID_AUDIENCE,
        ),
        (
            "array of good and bad",
            Some(json!([API_URI, "api://evil"])),
            MALFORMED,
        ),
        ("array of the good one", Some(json!([API_URI])), MALFORMED),
        ("token exchange", Some(json!(EXCHANGE)), EXCHANGE_AUDIENCE),
        (
            "token exchange upper-cased",
            Some(json!(exchange_upper)),
            EXCHANGE_AUDIENCE,
        ),
        (
            "token exchange with a trailing slash",
            Some(json!(format!("{EXCHANGE}/"))),
            EXCHANGE_AUDIENCE,
        ),
        (
            "token exchange upper-cased with a trailing slash",
            Some(json!(format!("{exchange_upper}/"))),
            EXCHANGE_AUDIENCE,
        ),
        (
            "token exchange as an App ID URI",
            Some(json!("api://AzureADTokenExchange")),
            EXCHANGE_AUDIENCE,
        ),
        (
            "token exchange as an App ID URI, lower-cased, trailing slash",
            Some(json!("api://azureadtokenexchange/")),
            EXCHANGE_AUDIENCE,
        ),
        (
            "US Government token exchange App ID URI",
            Some(json!("api://AzureADTokenExchangeUSGov")),
            EXCHANGE_AUDIENCE,
        ),
        (
            "China token exchange App ID URI",
            Some(json!("api://AzureADTokenExchangeChina")),
            EXCHANGE_AUDIENCE,
        ),
        ("Graph app id", Some(json!(GRAPH)), INVALID_AUDIENCE),
        (
            "Graph URI",
            Some(json!("https://graph.microsoft.com")),
            INVALID_AUDIENCE,
        ),
        ("empty string", Some(json!("")), INVALID_AUDIENCE),
        (
            "API URI with a path",
            Some(json!(format!("{API_URI}/orders"))),
            INVALID_AUDIENCE,
        ),
        (
            "API URI with a leading space",
            Some(json!(format!(" {API_URI}"))),
            INVALID_AUDIENCE,
        ),
        ("a number", Some(json!(42)), MALFORMED),
        ("null", Some(Value::Null), MISSING_CLAIM),
        ("missing", None, MISSING_CLAIM),
    ];
    cases
        .into_iter()
        .map(|(what, aud, expect)| {
            let claims = match aud {
                Some(v) => k.with(&[("aud", v)]),
                None => k.without(&["aud"]),
            };
            attack(format!("aud: {what}"), k.sign(&claims), expect)
        })
        .collect()
}

/// The tenant must be trusted before its issuer is compared; `iss` and `ver` must both be
/// present and name exactly the v1 or v2 issuer of the token's own `tid`.
fn issuers_and_tenants(k: &Kit) -> Attacks {
    let cases: Vec<(&str, Map<String, Value>, Refusal)> = vec![
        (
            "v1 iss of another tenant",
            k.with(&[("iss", json!(v1_iss(TENANT_B)))]),
            INVALID_ISSUER,
        ),
        (
            "v2 iss of another tenant",
            k.with(&[("ver", json!("2.0")), ("iss", json!(v2_iss(TENANT_B)))]),
            INVALID_ISSUER,
        ),
        (
            "foreign tenant with its own v1 iss",
            k.with(&[("tid", json!(TENANT_B)), ("iss", json!(v1_iss(TENANT_B)))]),
            TENANT_NOT_ALLOWED,
        ),
        (
            "foreign tenant with its own v2 iss",
            k.with(&[
                ("tid", json!(TENANT_B)),
                ("ver", json!("2.0")),
                ("iss", json!(v2_iss(TENANT_B))),
            ]),
            TENANT_NOT_ALLOWED,
        ),
        (
            "tid not a GUID, matching iss",
            k.with(&[
                ("tid", json!("not-a-guid")),
                ("iss", json!(v1_iss("not-a-guid"))),
            ]),
            TENANT_NOT_ALLOWED,
        ),
        (
            "tid common, matching iss",
            k.with(&[("tid", json!("common")), ("iss", json!(v1_iss("common")))]),
            TENANT_NOT_ALLOWED,
        ),
        (
            "tid empty",
            k.with(&[("tid", json!(""))]),
            TENANT_NOT_ALLOWED,
        ),
        ("tid a number", k.with(&[("tid", json!(1))]), MALFORMED),
        ("missing tid", k.without(&["tid"]), MISSING_CLAIM),
        ("missing iss", k.without(&["iss"]), MISSING_CLAIM),
        ("missing ver", k.without(&["ver"]), MISSING_CLAIM),
        (
            "v1 iss with ver 2.0",
            k.with(&[("ver", json!("2.0"))]),
            INVALID_ISSUER,
        ),
        (
            "v2 iss with ver 1.0",
            k.with(&[("iss", json!(v2_iss(TENANT_A)))]),
            INVALID_ISSUER,
        ),
        ("ver 3.0", k.with(&[("ver", json!("3.0"))]), INVALID_ISSUER),
        (
            "iss over http",
            k.with(&[("iss", json!(format!("http://sts.windows.net/{TENANT_A}/")))]),
            INVALID_ISSUER,
        ),
        (
            "iss without its trailing slash",
            k.with(&[("iss", json!(format!("https://sts.windows.net/{TENANT_A}")))]),
            INVALID_ISSUER,
        ),
        (
            "iss with a literal {tenantid}",
            k.with(&[("iss", json!(v1_iss("{tenantid}")))]),
            INVALID_ISSUER,
        ),
        (
            "iss with a suffix",
            k.with(&[("iss", json!(format!("{}x", v1_iss(TENANT_A))))]),
            INVALID_ISSUER,
        ),
    ];
    cases
        .into_iter()
        .map(|(what, c, expect)| attack(what, k.sign(&c), expect))
        .collect()
}

// === Token shapes and agent claims ===

/// ID tokens and other non-access-token shapes. A well-formed ID token is a valid agent
/// token for the wrong audience: the route refuses it once it verified.
fn id_token_shapes(k: &Kit) -> Attacks {
    let mut out = Vec::new();
    for typ in ["id_token", "JOSE", "dpop+jwt", "logout+jwt", ""] {
        out.push(attack(
            format!("typ {typ:?}"),
            k.sign_header(&k.header_with(&[("typ", json!(typ))]), &k.claims()),
            UNSUPPORTED_TYPE,
        ));
    }
    out.push(attack(
        "typ as a number",
        k.sign_header(&k.header_with(&[("typ", json!(1))]), &k.claims()),
        MALFORMED,
    ));
    out.push(attack(
        "v1 ID token: nonce, aud = the agent's client id",
        k.sign(&k.with(&[("nonce", json!("n-0S6_WzA2Mj")), ("aud", json!(AGENT_EMEA))])),
        INVALID_AUDIENCE,
    ));
    let mut v2 = k.with(&[
        ("ver", json!("2.0")),
        ("iss", json!(v2_iss(TENANT_A))),
        ("aud", json!(AGENT_EMEA)),
        ("azp", json!(AGENT_EMEA)),
        ("nonce", json!("n-0S6_WzA2Mj")),
        ("preferred_username", json!("dana@example.com")),
    ]);
    for c in ["appid", "appidacr", "idtyp", "roles"] {
        v2.remove(c);
    }
    out.push(attack(
        "v2 ID token: nonce, aud = azp = the agent",
        k.sign(&v2),
        INVALID_AUDIENCE,
    ));
    out.push(attack(
        "nonce, aud = the blueprint",
        k.sign(&k.with(&[("nonce", json!("n")), ("aud", json!(BP_SALES))])),
        INVALID_AUDIENCE,
    ));
    out.push(attack(
        "missing oid",
        k.sign(&k.without(&["oid"])),
        MISSING_CLAIM,
    ));
    out.push(attack(
        "missing appid",
        k.sign(&k.without(&["appid"])),
        MISSING_CLAIM,
    ));
    // The outer token's header is acceptable and its signature empty; the nested one, signed,
    // is no JSON claims set.
    let nested = k.good();
    out.push(attack(
        "cty JWT, unsigned, payload a nested token",
        format!(
            "{}.{}.",
            b64(Value::Object(k.header_with(&[("cty", json!("JWT"))])).to_string()),
            b64(json!(nested).to_string())
        ),
        INVALID_SIGNATURE,
    ));
    let nested_signed = {
        let message = format!(
            "{}.{}",
            b64(Value::Object(k.header_with(&[("cty", json!("JWT"))])).to_string()),
            b64(&nested)
        );
        let sig =
            jsonwebtoken::crypto::sign(message.as_bytes(), &k.encoding, Algorithm::RS256).unwrap();
        format!("{message}.{sig}")
    };
    out.push(attack(
        "cty JWT, signed, payload a compact token",
        nested_signed,
        MALFORMED,
    ));
    out
}

/// Garbled `xms_*_fct` and `xms_par_app_azp` claims: refused by classification, except a
/// claim of the wrong JSON type, which fails the claims document itself.
fn agent_facets(k: &Kit) -> Attacks {
    let cases: Vec<(&str, Map<String, Value>, Refusal)> = vec![
        (
            "act 3 11 x",
            k.with(&[("xms_act_fct", json!("3 11 x"))]),
            MALFORMED_AGENT_CLAIMS,
        ),
        (
            "act 11 -1",
            k.with(&[("xms_act_fct", json!("11 -1"))]),
            MALFORMED_AGENT_CLAIMS,
        ),
        (
            "act 11.0",
            k.with(&[("xms_act_fct", json!("11.0"))]),
            MALFORMED_AGENT_CLAIMS,
        ),
        (
            "act +11 (a sign u32 parsing would take)",
            k.with(&[("xms_act_fct", json!("3 +11"))]),
            MALFORMED_AGENT_CLAIMS,
        ),
        (
            "act 4294967296 11 (u32 overflow)",
            k.with(&[("xms_act_fct", json!("4294967296 11"))]),
            MALFORMED_AGENT_CLAIMS,
        ),
        (
            "act as an array",
            k.with(&[("xms_act_fct", json!([3, 11, 9]))]),
            MALFORMED,
        ),
        (
            "act as a number",
            k.with(&[("xms_act_fct", json!(11))]),
            MALFORMED,
        ),
        (
            "act empty",
            k.with(&[("xms_act_fct", json!(""))]),
            MALFORMED_AGENT_CLAIMS,
        ),
        (
            "sub 11 3 x",
            k.with(&[("xms_sub_fct", json!("11 3 x"))]),
            MALFORMED_AGENT_CLAIMS,
        ),
        (
            "tnt x",
            k.with(&[("xms_tnt_fct", json!("x"))]),
            MALFORMED_AGENT_CLAIMS,
        ),
        (
            "xms_par_app_azp not a GUID",
            k.with(&[("xms_par_app_azp", json!("not-a-guid"))]),
            MALFORMED_AGENT_CLAIMS,
        ),
        (
            "xms_par_app_azp empty",
            k.with(&[("xms_par_app_azp", json!(""))]),
            MALFORMED_AGENT_CLAIMS,
        ),
        (
            "xms_par_app_azp a number",
            k.with(&[("xms_par_app_azp", json!(42))]),
            MALFORMED,
        ),
        (
            "xms_par_app_azp braced GUID",
            k.with(&[("xms_par_app_azp", json!(format!("{{{BP_SALES}}}")))]),
            MALFORMED_AGENT_CLAIMS,
        ),
        (
            "facet 11 without xms_par_app_azp",
            k.without(&["xms_par_app_azp"]),
            MALFORMED_AGENT_CLAIMS,
        ),
        (
            "xms_par_app_azp without facet 11",
            k.with(&[("xms_act_fct", json!("3 9")), ("xms_sub_fct", json!("3 9"))]),
            MALFORMED_AGENT_CLAIMS,
        ),
        (
            "app-only agent token with oid != appid",
            k.with(&[("oid", json!(HUMAN)), ("sub", json!(HUMAN))]),
            MALFORMED_AGENT_CLAIMS,
        ),
    ];
    cases
        .into_iter()
        .map(|(what, c, expect)| attack(what, k.sign(&c), expect))
        .collect()
}

/// An agent claiming a blueprint the directory does not list it under.
fn blueprint_mismatch(k: &Kit) -> Attacks {
    [
        BP_INVOICE,
        BP_LEGACY,
        "cccccccc-3333-3333-3333-0000000000ff",
    ]
    .into_iter()
    .map(|bp| {
        attack(
            format!("{AGENT_EMEA} claiming blueprint {bp}"),
            k.sign(&k.with(&[("xms_par_app_azp", json!(bp))])),
            BLUEPRINT_MISMATCH,
        )
    })
    .collect()
}

// === Encodings ===

/// Base64 and framing that a lenient parser might still read: all malformed, except the
/// one token too large to be read at all.
fn encoding_abuse(k: &Kit) -> Attacks {
    let good = k.good();
    let [h, p, s] = parts(&good);
    let cut = |x: &str| x[..x.len() - 1].to_string();
    let mut out: Attacks = [
        ("header truncated by one", format!("{}.{p}.{s}", cut(h))),
        ("payload truncated by one", format!("{h}.{}.{s}", cut(p))),
        ("signature truncated by one", format!("{h}.{p}.{}", cut(s))),
        (
            "every part truncated by one",
            format!("{}.{}.{}", cut(h), cut(p), cut(s)),
        ),
        ("header padded", format!("{h}=.{p}.{s}")),
        ("payload padded", format!("{h}.{p}=.{s}")),
        ("signature padded", format!("{h}.{p}.{s}=")),
        ("signature padded twice", format!("{h}.{p}.{s}==")),
        ("trailing dot (4 parts)", format!("{good}.")),
        ("4 parts", format!("{good}.{s}")),
        ("5 parts", format!("{good}..")),
        ("leading dot", format!(".{good}")),
        ("empty payload", format!("{h}..{s}")),
        ("only dots", "..".to_string()),
        ("space after the first dot", format!("{h}. {p}.{s}")),
        ("tab before the second dot", format!("{h}.{p}\t.{s}")),
        (
            "space inside the signature",
            format!("{h}.{p}.{} {}", &s[..100], &s[100..]),
        ),
        (
            "space inside the header",
            format!("{} {}.{p}.{s}", &h[..10], &h[10..]),
        ),
        ("leading tab", format!("\t{good}")),
        ("the token twice", format!("{good} {good}")),
        ("scheme repeated", format!("Bearer {good}")),
        ("dots percent-encoded", good.replace('.', "%2E")),
        ("upper-cased", good.to_uppercase()),
    ]
    .into_iter()
    .map(|(what, token)| attack(what, token, MALFORMED))
    .collect();
    out.push(attack("oversized: 8 KiB + 1", oversized(k), TOO_LARGE));
    out.extend(standard_alphabet(k));
    out
}

/// A validly signed token of exactly `MAX_TOKEN + 1` bytes.
fn oversized(k: &Kit) -> String {
    let sig_len = parts(&k.good())[2].len();
    // Base64 lengths skip every fourth value, so vary the header a little as well.
    for hpad in 0..4 {
        let header = k.header_with(&[("x", json!("h".repeat(hpad)))]);
        let h_len = b64(Value::Object(header.clone()).to_string()).len();
        for pad in 0.. {
            let claims = k.with(&[("pad", json!("p".repeat(pad)))]);
            let p_len = b64(Value::Object(claims.clone()).to_string()).len();
            let len = h_len + p_len + sig_len + 2;
            if len == MAX_TOKEN + 1 {
                let token = k.sign_header(&header, &claims);
                assert_eq!(token.len(), MAX_TOKEN + 1);
                return token;
            }
            if len > MAX_TOKEN + 1 {
                break;
            }
        }
    }
    unreachable!("no padding gives a token of {} bytes", MAX_TOKEN + 1)
}

/// The standard base64 alphabet (`+`, `/`) instead of base64url, with and without `=`:
/// malformed, whichever part carries it.
fn standard_alphabet(k: &Kit) -> Attacks {
    // Three '?' guarantee a '_' in the base64url payload; the signature varies with `uti`.
    for i in 0..100 {
        let token = k.sign(&k.with(&[("q", json!("???")), ("uti", json!(format!("std{i}")))]));
        let [h, p, s] = parts(&token);
        let (ps, ss) = (to_standard(p, false), to_standard(s, false));
        if ps == p || ss == s {
            continue;
        }
        return [
            ("payload in standard base64", format!("{h}.{ps}.{s}")),
            ("signature in standard base64", format!("{h}.{p}.{ss}")),
            (
                "every part in standard base64",
                format!("{}.{ps}.{ss}", to_standard(h, false)),
            ),
            (
                "every part in padded standard base64",
                format!(
                    "{}.{}.{}",
                    to_standard(h, true),
                    to_standard(p, true),
                    to_standard(s, true)
                ),
            ),
        ]
        .into_iter()
        .map(|(what, token)| attack(what, token, MALFORMED))
        .collect();
    }
    unreachable!("no signature with '-' or '_' in 100 tries")
}

/// Bytes outside ASCII, sent as raw header bytes: not UTF-8, or UTF-8 that is not base64url
/// or has no ASCII dots, so every one is malformed.
fn non_ascii(k: &Kit) -> Vec<(String, Vec<u8>)> {
    let good = k.good();
    let [h, p, s] = parts(&good);
    let mid = p.len() / 2;
    let splice = |part: &str, at: usize, bytes: &[u8]| {
        let mut v = part.as_bytes()[..at].to_vec();
        v.extend_from_slice(bytes);
        v.extend_from_slice(&part.as_bytes()[at..]);
        v
    };
    let join = |a: &[u8], b: &[u8], c: &[u8]| [a, b".", b, b".", c].concat();
    vec![
        (
            "latin-1 byte 0xE9 in the payload".into(),
            join(h.as_bytes(), &splice(p, mid, &[0xE9]), s.as_bytes()),
        ),
        (
            "byte 0xFF at the start of the signature".into(),
            join(h.as_bytes(), p.as_bytes(), &splice(s, 0, &[0xFF])),
        ),
        (
            "NBSP (0xA0) before the token".into(),
            [&[0xA0][..], good.as_bytes()].concat(),
        ),
        (
            "UTF-8 e-acute in the header".into(),
            join(&splice(h, 5, "é".as_bytes()), p.as_bytes(), s.as_bytes()),
        ),
        (
            "fullwidth full stops as separators".into(),
            good.replace('.', "\u{ff0e}").into_bytes(),
        ),
        (
            "UTF-8 byte order mark before the token".into(),
            [&[0xEF, 0xBB, 0xBF][..], good.as_bytes()].concat(),
        ),
    ]
}

/// Sends a bearer token given as raw header bytes.
fn send_raw(gw: &Gateway, token: &[u8]) -> Reply {
    gw.sent(&String::from_utf8_lossy(token));
    let value = reqwest::header::HeaderValue::from_bytes(&[b"Bearer ", token].concat()).unwrap();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    Reply::from(
        client
            .get(format!("{}/orders/1", gw.base))
            .header(reqwest::header::AUTHORIZATION, value)
            .send()
            .unwrap(),
    )
}

// === The run ===

/// Tallies replies and collects every one that was not exactly the expected refusal.
#[derive(Default)]
struct Tally {
    counts: Vec<(&'static str, usize)>,
    reasons: BTreeMap<String, usize>,
    findings: Vec<String>,
}

impl Tally {
    /// Records one reply, which must be exactly the `expect`ed status and reason, with a
    /// decision id.
    fn judge(
        &mut self,
        category: &'static str,
        label: &str,
        token: &str,
        reply: &Reply,
        expect: Refusal,
    ) {
        match self.counts.last_mut() {
            Some((c, n)) if *c == category => *n += 1,
            _ => self.counts.push((category, 1)),
        }
        *self
            .reasons
            .entry(format!("{} {}", reply.status, reply.reason()))
            .or_default() += 1;
        let decided = reply.body["decision_id"]
            .as_str()
            .is_some_and(|d| d.len() == 32);
        if (reply.status, reply.reason()) != expect || !decided {
            let shown = if token.len() > 400 {
                let head: String = token.chars().take(400).collect();
                format!("{head}... ({} bytes)", token.len())
            } else {
                token.to_string()
            };
            self.findings.push(format!(
                "[{category}] {label}: expected {} {}, got HTTP {} body {}\n    token: {shown}",
                expect.0, expect.1, reply.status, reply.body
            ));
        }
    }

    fn total(&self) -> usize {
        self.counts.iter().map(|(_, n)| n).sum()
    }
}

/// Keys the JWKS disqualifies for an RS256 signature: each gets its own issuer and
/// gateway, which must refuse a normally minted token. A key dropped from the set is an
/// `unknown_key`; a key kept but pinned to another algorithm gives `invalid_signature`.
fn disqualified_keys(kit: &Kit, tally: &mut Tally) {
    let jwk = |set: &[(&str, Value)]| {
        let mut j = kit.key.jwk.clone();
        for (k, v) in set {
            j[*k] = v.clone();
        }
        j
    };
    let cases: Vec<(&str, Value, &str, Refusal)> = vec![
        (
            "JWK alg RS512",
            jwk(&[("alg", json!("RS512"))]),
            "",
            UNKNOWN_KEY,
        ),
        (
            "JWK alg RS512, RS512 also allowed",
            jwk(&[("alg", json!("RS512"))]),
            r#"algorithms = ["RS256", "RS512"]"#,
            INVALID_SIGNATURE,
        ),
        (
            "JWK use enc",
            jwk(&[("use", json!("enc"))]),
            "",
            UNKNOWN_KEY,
        ),
        (
            "JWK use enc, no alg",
            jwk(&[("use", json!("enc")), ("alg", Value::Null)]),
            "",
            UNKNOWN_KEY,
        ),
        (
            "JWK bound to another tenant",
            jwk(&[("issuer", json!(v2_iss(TENANT_B)))]),
            "",
            UNKNOWN_KEY,
        ),
        ("JWK kty EC", jwk(&[("kty", json!("EC"))]), "", UNKNOWN_KEY),
        (
            "JWK key_ops [encrypt]",
            jwk(&[("key_ops", json!(["encrypt"]))]),
            "",
            UNKNOWN_KEY,
        ),
        (
            "JWK key_ops [sign] (no verify)",
            jwk(&[("key_ops", json!(["sign"]))]),
            "",
            UNKNOWN_KEY,
        ),
    ];
    let v2 = {
        let mut s = spec(CallerKind::AgentApp);
        s.version = "2.0".into();
        s
    };
    for (what, modified, identity_extra, expect) in cases {
        let servers = Servers::start(&[&kit.key, &kit.rotated]);
        // Published before the gateway starts, which fetches keys at startup; the rotated
        // key keeps the set usable so that the gateway becomes ready.
        servers
            .issuer
            .keys
            .store(Arc::new(vec![modified, kit.rotated.jwk.clone()]));
        let gw = Gateway::start(
            &servers,
            GatewaySpec {
                identity_extra: identity_extra.to_string(),
                ..GatewaySpec::default()
            },
        );
        for (version, token) in [
            ("v1", mint(&kit.key, &spec(CallerKind::AgentApp))),
            ("v2", mint(&kit.key, &v2)),
        ] {
            let reply = gw.call("GET", "/orders/1", Some(&token));
            tally.judge(
                "disqualified_jwk",
                &format!("{what}: {version} RS256 token"),
                &token,
                &reply,
                expect,
            );
        }
        // The rotated key is still good on the same gateway.
        gw.call(
            "GET",
            "/orders/1",
            Some(&mint(&kit.rotated, &spec(CallerKind::AgentApp))),
        )
        .assert_allowed();
    }
}

#[test]
fn attack_corpus_is_refused() {
    let primary = key("primary");
    let servers = Servers::start(&[&primary]);
    let mut gw = Gateway::start(&servers, GatewaySpec::default());
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let kit = Kit::new(format!("http://{}", trap.local_addr().unwrap()));

    let categories: Vec<(&'static str, Attacks)> = vec![
        ("alg_none", alg_none(&kit)),
        ("hmac_with_public_key", hmac_with_public_key(&kit)),
        ("other_algorithms", other_algorithms(&kit)),
        ("foreign_signatures", foreign_signatures(&kit)),
        ("kid_injection", kid_injection(&kit)),
        ("unknown_kid_flood", unknown_kid_flood(&kit)),
        ("key_sources", key_sources(&kit)),
        ("critical_extensions", critical_extensions(&kit)),
        ("json_serialization", json_serialization(&kit)),
        ("duplicate_names", duplicate_names(&kit)),
        ("time_claim_types", time_claim_types(&kit)),
        ("audiences", audiences(&kit)),
        ("issuers_and_tenants", issuers_and_tenants(&kit)),
        ("id_token_shapes", id_token_shapes(&kit)),
        ("agent_facets", agent_facets(&kit)),
        ("blueprint_mismatch", blueprint_mismatch(&kit)),
        ("encoding_abuse", encoding_abuse(&kit)),
    ];
    let mut tally = Tally::default();
    for (category, attacks) in &categories {
        for a in attacks {
            let reply = gw.call("GET", "/orders/1", Some(&a.token));
            tally.judge(category, &a.label, &a.token, &reply, a.expect);
        }
    }

    // Boundary lifetimes depend on the second the gateway reads its clock: re-mint when an
    // acceptance coincides with the clock ticking over between minting and the answer. The
    // expectation stays the same: a token that is accepted in the second it was minted for
    // (or five times in a row) is a finding.
    for i in 0..lifetime_window(&kit, now()).len() {
        for attempt in 1.. {
            let minted = now();
            let a = lifetime_window(&kit, minted).swap_remove(i);
            let reply = gw.call("GET", "/orders/1", Some(&a.token));
            if reply.status == 200 && now() != minted && attempt < 5 {
                continue;
            }
            tally.judge("lifetime_window", &a.label, &a.token, &reply, a.expect);
            break;
        }
    }

    for (label, bytes) in non_ascii(&kit) {
        let reply = send_raw(&gw, &bytes);
        tally.judge(
            "non_ascii",
            &label,
            &String::from_utf8_lossy(&bytes),
            &reply,
            MALFORMED,
        );
    }

    // Nothing a token named was contacted; every reply is complete, so a fetch would have
    // connected by now.
    assert!(
        trap.accept().is_err(),
        "the gateway connected to a URL named in a token"
    );
    // The gateway is still up and still lets a good token through.
    gw.call("GET", "/orders/1", Some(&kit.good()))
        .assert_allowed();
    assert!(
        matches!(gw.child.try_wait(), Ok(None)),
        "the gateway process exited"
    );

    disqualified_keys(&kit, &mut tally);

    for (category, n) in &tally.counts {
        eprintln!("{category:>22}: {n}");
    }
    eprintln!("{:>22}: {}", "total", tally.total());
    for (reply, n) in &tally.reasons {
        eprintln!("    {n:>4} x {reply}");
    }
    assert!(
        tally.findings.is_empty(),
        "{} attack token(s) did not get their expected refusal:\n{}",
        tally.findings.len(),
        tally.findings.join("\n")
    );
    assert!(tally.total() >= 120, "only {} attacks", tally.total());
}
