//! `parse_compact` on arbitrary strings: the first look the gateway takes at a bearer token.
//!
//! Besides "no panic", an accepted token must keep the promises the parser makes: exactly
//! three parts, a non-empty signature, an allowed `alg`, a `typ` of a JWT access token when
//! present, and no key-pointing or critical header parameter, whatever JSON spelling the
//! header uses. The header is re-read here as a plain JSON value, independently of the
//! parser's own serde shape. Widening the allowed algorithms may only accept more.
//!
//! The re-read is lossy about UTF-8: the parser (serde_json into a struct) skips members it
//! does not know without validating their bytes, so it accepts a header whose unknown member
//! holds invalid UTF-8, which a strict JSON reader refuses. The checks here are about what
//! the parser acts on, so invalid bytes become U+FFFD before the header is read again.

#![no_main]

use agentgate::identity::token::parse_compact;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use std::str::FromStr;

/// Header parameters that must never reach an accepted token, present with any value.
const FORBIDDEN: [&str; 7] = ["crit", "jku", "x5u", "jwk", "x5c", "b64", "zip"];
const TYPES: [&str; 3] = ["JWT", "at+jwt", "application/at+jwt"];
const RSA_ONLY: [Algorithm; 3] = [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    assert!(
        parse_compact(token, &[]).is_err(),
        "accepted with no algorithm allowed"
    );
    let narrow = parse_compact(token, &[Algorithm::RS256]);
    let wide = parse_compact(token, &RSA_ONLY);
    if let Ok(jws) = &narrow {
        assert_eq!(jws.alg, Algorithm::RS256);
        let wide = wide
            .as_ref()
            .expect("RS256 accepted alone but not among RS*");
        assert_eq!(wide.alg, Algorithm::RS256);
        assert_eq!(wide.kid, jws.kid);
    }
    let Ok(jws) = wide else {
        return;
    };
    assert!(RSA_ONLY.contains(&jws.alg));

    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(
        parts.len(),
        3,
        "accepted a token without exactly three parts"
    );
    assert!(!parts[2].is_empty(), "accepted an empty signature");
    let header_json = URL_SAFE_NO_PAD
        .decode(parts[0])
        .expect("accepted a header that is not strict base64url");
    let header: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(&header_json))
        .expect("accepted a header that is not JSON");
    let header = header
        .as_object()
        .expect("accepted a header that is not an object");
    for name in FORBIDDEN {
        assert!(
            !header.contains_key(name),
            "accepted a header with {name:?}"
        );
    }
    let alg = header
        .get("alg")
        .and_then(|a| a.as_str())
        .expect("accepted without alg");
    assert_eq!(Algorithm::from_str(alg).ok(), Some(jws.alg));
    match header.get("typ") {
        None | Some(serde_json::Value::Null) => {}
        Some(typ) => {
            let typ = typ.as_str().expect("accepted a typ that is not a string");
            assert!(
                TYPES.iter().any(|t| typ.eq_ignore_ascii_case(t)),
                "accepted typ {typ:?}"
            );
        }
    }
    assert_eq!(
        jws.kid.as_deref(),
        header.get("kid").and_then(|k| k.as_str())
    );
    // The payload is decoded only after the header passed; it must not panic either.
    let _ = jws.payload();
});
