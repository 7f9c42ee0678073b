//! `parse_compact` on arbitrary strings: the first look the gateway takes at a bearer token.
//!
//! Besides "no panic", an accepted token must keep the promises the parser makes: exactly
//! three parts, a non-empty signature, an allowed `alg`, a `typ` of a JWT access token when
//! present, and no key-pointing or critical header parameter, whatever JSON spelling the
//! header uses. Widening the allowed algorithms may only accept more.
//!
//! The header is read again here, independently of the parser's own header type but with
//! the same tolerance: member names as strings, the values of members nobody reads skipped
//! unvalidated (serde's `IgnoredAny`, as the parser skips them). A strict JSON reader refuses
//! more: invalid UTF-8 or out-of-range numbers in a skipped member.

#![no_main]

use agentgate::identity::token::parse_compact;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::collections::HashMap;
use std::str::FromStr;

/// Header parameters that must never reach an accepted token, present with any value.
const FORBIDDEN: [&str; 7] = ["crit", "jku", "x5u", "jwk", "x5c", "b64", "zip"];
const TYPES: [&str; 3] = ["JWT", "at+jwt", "application/at+jwt"];
const RSA_ONLY: [Algorithm; 3] = [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];

/// The header parameters the parser acts on.
#[derive(Deserialize)]
struct Named {
    alg: Option<String>,
    typ: Option<String>,
    kid: Option<String>,
}

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
    let header = URL_SAFE_NO_PAD
        .decode(parts[0])
        .expect("accepted a header that is not strict base64url");
    assert_eq!(
        header.trim_ascii_start().first(),
        Some(&b'{'),
        "accepted a header that is not a JSON object"
    );
    std::str::from_utf8(&header).expect("accepted a header that is not UTF-8");
    let members: HashMap<String, IgnoredAny> =
        serde_json::from_slice(&header).expect("accepted a header that is not a JSON object");
    for name in FORBIDDEN {
        assert!(
            !members.contains_key(name),
            "accepted a header with {name:?}"
        );
    }
    let named: Named = serde_json::from_slice(&header).expect("accepted an ill-typed header");
    let alg = named.alg.expect("accepted a header without alg");
    assert_eq!(Algorithm::from_str(&alg).ok(), Some(jws.alg));
    if let Some(typ) = &named.typ {
        assert!(
            TYPES.iter().any(|t| typ.eq_ignore_ascii_case(t)),
            "accepted typ {typ:?}"
        );
    }
    assert_eq!(jws.kid, named.kid);
    // The payload is decoded only after the header passed; it must not panic either.
    let _ = jws.payload();
});
