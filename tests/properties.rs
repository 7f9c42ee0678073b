//! Property tests of the parsing on the request path: whatever the input, no panic, and the
//! answers keep their invariants. 4 properties x 25,000 cases = 100,000 cases per run.

use agentgate::directory::Resolution;
use agentgate::identity::caller::classify_unverified;
use agentgate::identity::token::{parse_compact, TokenVersion, VerifiedToken};
use agentgate::identity::{bearer_token, CallerKind};
use agentgate::policy::input::{
    build_input, PreparedDirectory, RequestFacts, RouteInput, TokenInput,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use proptest::prelude::*;
use std::sync::Arc;

const CASES: u32 = 25_000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings biased towards the characters that matter to each parser.
fn token_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_=+/. -]{0,200}",
        ".*",
        (
            "[A-Za-z0-9_-]{0,60}",
            "[A-Za-z0-9_-]{0,60}",
            "[A-Za-z0-9_=-]{0,60}"
        )
            .prop_map(|(a, b, c)| format!("{a}.{b}.{c}")),
    ]
}

fn json_header() -> impl Strategy<Value = String> {
    let alg = prop_oneof![
        Just("RS256".to_string()),
        Just("none".to_string()),
        Just("HS256".to_string()),
        Just("PS256".to_string()),
        "[A-Z0-9]{0,6}",
    ];
    let extra = prop_oneof![
        Just(String::new()),
        Just(",\"crit\":[\"exp\"]".to_string()),
        Just(",\"jku\":\"http://x\"".to_string()),
        Just(",\"typ\":\"JWT\"".to_string()),
        Just(",\"typ\":5".to_string()),
        Just(",\"kid\":null".to_string()),
        Just(",\"alg\":\"none\"".to_string()),
        "[ -~]{0,20}",
    ];
    (alg, "[ -~]{0,12}", extra).prop_map(|(alg, kid, extra)| {
        format!(
            "{{\"alg\":\"{alg}\",\"kid\":{}{extra}}}",
            serde_json::to_string(&kid).unwrap()
        )
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn authorization_parsing_never_panics_and_respects_the_cap(value in ".{0,300}", scheme in prop_oneof![Just("Bearer "), Just("bearer "), Just("BEARER  "), Just("Basic "), Just("")]) {
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&format!("{scheme}{value}")) {
            headers.insert(http::header::AUTHORIZATION, v);
        }
        if let Ok(token) = bearer_token(&headers, 128) {
            prop_assert!(token.len() <= 128);
            prop_assert!(!token.is_empty());
            prop_assert!(!token.starts_with(' '));
        }
    }

    #[test]
    fn jws_splitting_accepts_only_allowed_algorithms(token in token_like(), header in json_header(), payload in "[ -~]{0,80}", sig in "[A-Za-z0-9_-]{0,50}") {
        let _ = parse_compact(&token, &[Algorithm::RS256]);
        let crafted = format!("{}.{}.{sig}", URL_SAFE_NO_PAD.encode(&header), URL_SAFE_NO_PAD.encode(&payload));
        if let Ok(jws) = parse_compact(&crafted, &[Algorithm::RS256]) {
            prop_assert_eq!(jws.alg, Algorithm::RS256);
            prop_assert!(!header.contains("\"crit\"") && !header.contains("\"jku\""));
        }
    }

    #[test]
    fn classification_never_panics_and_agents_always_name_a_blueprint(
        act in prop_oneof![Just(None), Just(Some("3 11 9".to_string())), "[0-9 x-]{0,12}".prop_map(Some)],
        sub in prop_oneof![Just(None), Just(Some("13 3".to_string())), "[0-9 ]{0,12}".prop_map(Some)],
        par in prop_oneof![Just(None), Just(Some("cccccccc-3333-3333-3333-000000000001".to_string())), "[a-f0-9-]{0,40}".prop_map(Some)],
        idtyp in prop_oneof![Just(None), Just(Some("app")), Just(Some("user"))],
        same_subject in any::<bool>(),
        roles in any::<bool>(),
    ) {
        let mut c = serde_json::json!({"tid": "aaaaaaaa-1111-1111-1111-000000000001", "ver": "1.0", "appid": "dddddddd-4444-4444-4444-000000000001",
            "oid": if same_subject { "dddddddd-4444-4444-4444-000000000001" } else { "ffffffff-6666-6666-6666-000000000001" }});
        if let Some(a) = &act { c["xms_act_fct"] = a.clone().into(); }
        if let Some(s) = &sub { c["xms_sub_fct"] = s.clone().into(); }
        if let Some(p) = &par { c["xms_par_app_azp"] = p.clone().into(); }
        if let Some(i) = idtyp { c["idtyp"] = i.into(); }
        if roles { c["roles"] = serde_json::json!(["R"]); }
        if let Ok(caller) = classify_unverified(c.to_string().as_bytes()) {
            if caller.kind.is_agent() {
                prop_assert!(caller.blueprint_id.as_deref().is_some_and(agentgate::guid::is_guid));
                prop_assert!(caller.facets.actor.contains(&11));
            } else {
                prop_assert!(caller.blueprint_id.is_none());
            }
            if caller.kind == CallerKind::AgentApp {
                prop_assert_eq!(&caller.actor_id, &caller.subject_id);
            }
        }
    }

    #[test]
    fn input_building_never_panics_and_keeps_the_request_verbatim(method in "[A-Z]{1,8}", path in "/[ -~]{0,60}", query in "[ -~]{0,40}", ip in "[0-9.:a-f]{0,40}", header in "[ -~]{0,40}") {
        let claims = serde_json::json!({"tid": "aaaaaaaa-1111-1111-1111-000000000001", "ver": "1.0", "appid": "dddddddd-4444-4444-4444-000000000001",
            "oid": "dddddddd-4444-4444-4444-000000000001", "idtyp": "app", "xms_act_fct": "11", "xms_sub_fct": "11", "xms_par_app_azp": "cccccccc-3333-3333-3333-000000000001"});
        let caller = classify_unverified(claims.to_string().as_bytes()).unwrap();
        let token = VerifiedToken {
            caller, version: TokenVersion::V1, issuer: Arc::from("iss"), audience: Arc::from("aud"), expires_at: 1, not_before: None,
            issued_at: None, idtyp: None, scopes: vec![], roles: vec![Arc::from("R")], kid: "k".into(),
        };
        let facts = RequestFacts { method: &method, host: "h", path: &path, query: &query, client_ip: &ip, headers: vec![("user-agent", &header)], time_ns: 7 };
        let input = build_input(&facts, &RouteInput::new("r", "/"), &token, &TokenInput::new(&token), &PreparedDirectory::default(), &Resolution::default());
        let json: serde_json::Value = serde_json::from_str(&input.to_json_str().unwrap()).unwrap();
        prop_assert_eq!(json["request"]["path"].as_str(), Some(path.as_str()));
        prop_assert_eq!(json["request"]["query"].as_str(), Some(query.as_str()));
        prop_assert_eq!(json["request"]["headers"]["user-agent"].as_str(), Some(header.as_str()));
        prop_assert_eq!(json["blueprint"]["known"].as_bool(), Some(false));
    }
}
