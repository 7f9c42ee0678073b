//! Token validation over the wire: each way a token can be wrong gets a 401 with its reason,
//! and nothing a token names is ever fetched.

use crate::support::*;
use agentgate::identity::CallerKind;
use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn claims() -> Map<String, Value> {
    spec(CallerKind::AgentApp).claims()
}

#[test]
fn invalid_tokens_are_refused_with_their_reason() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(&servers, GatewaySpec::default());
    let now = now();
    let with = |k: &str, v: Value| {
        let mut c = claims();
        c.insert(k.into(), v);
        key.sign(&c).unwrap()
    };
    let without = |k: &str| {
        let mut c = claims();
        c.remove(k);
        key.sign(&c).unwrap()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", with("exp", json!(now - 600)), "token_expired"),
        (
            "not yet valid",
            with("nbf", json!(now + 600)),
            "token_not_yet_valid",
        ),
        (
            "issued in the future",
            with("iat", json!(now + 600)),
            "token_issued_in_future",
        ),
        (
            "exp as a string (CVE-2026-25537 class)",
            with("exp", json!((now + 600).to_string())),
            "invalid_time_claim",
        ),
        (
            "exp as a float",
            with("exp", json!(now as f64 + 600.5)),
            "invalid_time_claim",
        ),
        ("nbf null", with("nbf", Value::Null), "invalid_time_claim"),
        ("missing exp", without("exp"), "missing_claim"),
        (
            "foreign tenant",
            {
                let mut c = claims();
                c.insert("tid".into(), json!(TENANT_B));
                c.insert(
                    "iss".into(),
                    json!(format!("https://sts.windows.net/{TENANT_B}/")),
                );
                key.sign(&c).unwrap()
            },
            "tenant_not_allowed",
        ),
        (
            "iss of another tenant (v1)",
            with("iss", json!(format!("https://sts.windows.net/{TENANT_B}/"))),
            "invalid_issuer",
        ),
        (
            "iss of another tenant (v2)",
            {
                let mut c = claims();
                c.insert("ver".into(), json!("2.0"));
                c.insert(
                    "iss".into(),
                    json!(format!("https://login.microsoftonline.com/{TENANT_B}/v2.0")),
                );
                key.sign(&c).unwrap()
            },
            "invalid_issuer",
        ),
        (
            "v1 issuer with ver 2.0",
            with("ver", json!("2.0")),
            "invalid_issuer",
        ),
        (
            "wrong audience",
            with("aud", json!("api://some-other-api")),
            "invalid_audience",
        ),
        (
            "Graph audience",
            with("aud", json!("00000003-0000-0000-c000-000000000000")),
            "invalid_audience",
        ),
        (
            "token exchange audience",
            with("aud", json!("fb60f99c-7a34-4190-8149-302f77469936")),
            "exchange_audience",
        ),
        (
            "aud array",
            with("aud", json!([API_URI, "api://evil"])),
            "malformed_token",
        ),
    ];
    for (what, token, reason) in cases {
        let reply = gw.call("GET", "/orders/1", Some(&token));
        assert_eq!(
            (reply.status, reply.reason()),
            (401, reason),
            "{what}: {}",
            reply.body
        );
        assert!(
            reply.www_authenticate().contains("error=\"invalid_token\""),
            "{what}"
        );
    }
}

#[test]
fn forged_and_unsupported_signatures_are_refused() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(&servers, GatewaySpec::default());
    let c = Value::Object(claims());
    let signed = key.sign(&claims()).unwrap();
    let good_sig = signed.rsplit('.').next().unwrap().to_string();
    let public_pem = {
        // The public key as an attacker would find it: the JWKS modulus turned into bytes.
        key.jwk["n"].as_str().unwrap().as_bytes().to_vec()
    };
    let hs256 = |h: Value, secret: &[u8]| {
        let msg = format!("{}.{}", b64(&h), b64(&c));
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), msg.as_bytes());
        format!("{msg}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    };
    let rs = |h: Value| {
        key.sign_with_header(h.as_object().unwrap(), &claims())
            .unwrap()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg none, empty signature",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "kid": key.kid})),
                b64(&c)
            ),
            "algorithm_not_allowed",
        ),
        (
            "alg none, no signature part",
            format!("{}.{}", b64(&json!({"alg": "none"})), b64(&c)),
            "malformed_token",
        ),
        (
            "HS256 keyed with the public key",
            hs256(json!({"alg": "HS256", "kid": key.kid}), &public_pem),
            "algorithm_not_allowed",
        ),
        (
            "PS256 not in the allow-list",
            rs(json!({"alg": "PS256", "kid": key.kid})),
            "algorithm_not_allowed",
        ),
        (
            "crit header",
            rs(json!({"alg": "RS256", "kid": key.kid, "crit": ["exp"]})),
            "forbidden_header",
        ),
        (
            "embedded jwk",
            rs(json!({"alg": "RS256", "kid": key.kid, "jwk": key.jwk})),
            "forbidden_header",
        ),
        (
            "x5c header",
            rs(json!({"alg": "RS256", "kid": key.kid, "x5c": ["MIIB"]})),
            "forbidden_header",
        ),
        (
            "typ id_token",
            rs(json!({"alg": "RS256", "kid": key.kid, "typ": "id_token"})),
            "unsupported_token_type",
        ),
        (
            "signature of another token",
            {
                let other = key
                    .sign(&{
                        let mut o = claims();
                        o.insert("uti".into(), json!("other"));
                        o
                    })
                    .unwrap();
                let sig = other.rsplit('.').next().unwrap();
                format!("{}.{sig}", signed.rsplit_once('.').unwrap().0)
            },
            "invalid_signature",
        ),
        (
            "flipped signature byte",
            {
                let mut sig = URL_SAFE_NO_PAD.decode(&good_sig).unwrap();
                sig[10] ^= 1;
                format!(
                    "{}.{}",
                    signed.rsplit_once('.').unwrap().0,
                    URL_SAFE_NO_PAD.encode(sig)
                )
            },
            "invalid_signature",
        ),
        ("padded signature", format!("{signed}=="), "malformed_token"),
        ("extra dot", format!("{signed}.x"), "malformed_token"),
        ("garbage", "not-a-jwt".to_string(), "malformed_token"),
        (
            "unknown kid",
            rs(json!({"alg": "RS256", "kid": "no-such-kid"})),
            "unknown_key",
        ),
    ];
    for (what, token, reason) in cases {
        let reply = gw.call("GET", "/orders/1", Some(&token));
        assert_eq!(
            (reply.status, reply.reason()),
            (401, reason),
            "{what}: {}",
            reply.body
        );
    }
}

#[test]
fn key_urls_in_tokens_are_never_fetched() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(&servers, GatewaySpec::default());
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let url = format!("http://{}/keys", trap.local_addr().unwrap());
    for param in ["jku", "x5u"] {
        let h = json!({"alg": "RS256", "kid": "attacker-kid", param: url});
        let token = key
            .sign_with_header(h.as_object().unwrap(), &claims())
            .unwrap();
        gw.call("GET", "/orders/1", Some(&token))
            .assert_denied(401, "forbidden_header");
    }
    // Both responses are complete, so any fetch would already have connected.
    assert!(
        trap.accept().is_err(),
        "the gateway connected to a URL named in a token"
    );
}

#[test]
fn authorization_header_shape_is_enforced() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(&servers, GatewaySpec::default());
    let token = mint(&key, &spec(CallerKind::AgentApp));

    let reply = gw.call("GET", "/orders/1", None);
    reply.assert_denied(401, "missing_token");
    assert_eq!(
        reply.www_authenticate(),
        "Bearer realm=\"agentgate\"",
        "no error code without a token (RFC 6750 3.1)"
    );

    gw.call_with(
        "GET",
        "/orders/1",
        None,
        &[("authorization", &format!("bEaReR {token}"))],
    )
    .assert_allowed();
    gw.call_with(
        "GET",
        "/orders/1",
        None,
        &[("authorization", "Basic dXNlcjpwYXNz")],
    )
    .assert_denied(401, "unsupported_auth_scheme");

    let huge = "a".repeat(8 * 1024 + 1);
    gw.call("GET", "/orders/1", Some(&huge))
        .assert_denied(401, "token_too_large");

    let client = reqwest::blocking::Client::new();
    let two = client
        .get(format!("{}/orders/1", gw.base))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .unwrap();
    Reply::from(two).assert_denied(400, "multiple_authorization_headers");
}
