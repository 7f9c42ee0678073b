//! Wycheproof vectors (tests/data/wycheproof, Apache-2.0) against the gateway's own JWS
//! parsing and signature verification: every `invalid` vector is rejected and nothing but
//! RS256 is ever accepted.

use crate::support::repo;
use agentgate::entra::Issuers;
use agentgate::identity::jwks::{parse_jwks, JwksDocument, KeyMap, KeyRules};
use agentgate::identity::token::{parse_compact, verify_signature};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

fn vectors(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(repo().join("tests/data/wycheproof").join(name)).unwrap())
        .unwrap()
}

fn keys_from(jwk: Option<&Value>) -> KeyMap {
    let Some(jwk) = jwk else {
        return KeyMap::new(); // symmetric-key groups: the gateway holds no such keys
    };
    let mut jwk = jwk.clone();
    if jwk.get("kid").is_none() {
        jwk["kid"] = json!("wycheproof");
    }
    let doc: JwksDocument = serde_json::from_value(json!({"keys": [jwk]})).unwrap();
    parse_jwks(
        doc,
        KeyRules {
            tenant: "aaaaaaaa-1111-1111-1111-000000000001",
            algorithms: &[Algorithm::RS256],
            issuers: &Issuers::default(),
        },
    )
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn json_web_signature_vectors() {
    let doc = vectors("json_web_signature_test.json");
    let (mut accepted_rs256, mut invalid, mut total) = (0, 0, 0);
    for group in doc["testGroups"].as_array().unwrap() {
        let keys = keys_from(group.get("public"));
        for t in group["tests"].as_array().unwrap() {
            total += 1;
            let jws = t["jws"].as_str().unwrap_or_default();
            let verdict = parse_compact(jws, &[Algorithm::RS256]).and_then(|j| {
                let key = j
                    .kid
                    .as_deref()
                    .and_then(|k| keys.get(k))
                    .ok_or(agentgate::identity::TokenError::UnknownKey)?;
                j.verify_with(key).map(|()| j.alg)
            });
            let id = &t["tcId"];
            if t["result"] == "invalid" {
                invalid += 1;
                assert!(
                    verdict.is_err(),
                    "invalid vector {id} ({}) was accepted",
                    t["comment"]
                );
            }
            if let Ok(alg) = verdict {
                assert_eq!(alg, Algorithm::RS256, "vector {id} accepted with {alg:?}");
                accepted_rs256 += 1;
            }
        }
    }
    assert!(
        total >= 300 && invalid >= 100,
        "{total} vectors, {invalid} invalid"
    );
    // Valid RS256 vectors do verify: the test is not rejecting everything.
    assert!(accepted_rs256 > 0);
}

#[test]
fn rsa_pkcs1_sha256_vectors() {
    let doc = vectors("rsa_signature_2048_sha256_test.json");
    let (mut valid_ok, mut checked) = (0, 0);
    for group in doc["testGroups"].as_array().unwrap() {
        let keys = keys_from(group.get("keyJwk"));
        let Some(key) = keys.values().next() else {
            panic!("group key did not parse: {}", group["keyJwk"]);
        };
        for t in group["tests"].as_array().unwrap() {
            checked += 1;
            let sig = URL_SAFE_NO_PAD.encode(hex(t["sig"].as_str().unwrap()));
            let ok = verify_signature(
                &hex(t["msg"].as_str().unwrap()),
                &sig,
                key,
                Algorithm::RS256,
            )
            .is_ok();
            match t["result"].as_str().unwrap() {
                "invalid" => assert!(
                    !ok,
                    "invalid vector {} ({}) verified",
                    t["tcId"], t["comment"]
                ),
                "valid" => {
                    assert!(ok, "valid vector {} did not verify", t["tcId"]);
                    valid_ok += 1;
                }
                _ => {}
            }
        }
    }
    assert!(
        checked >= 200 && valid_ok > 0,
        "{checked} checked, {valid_ok} valid"
    );
}
