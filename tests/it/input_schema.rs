//! The policy input the gateway builds matches the published JSON Schema, for every caller
//! kind, known and unknown directory entries alike.

use crate::support::*;
use agentgate::identity::caller::classify_unverified;
use agentgate::identity::token::{TokenVersion, VerifiedToken};
use agentgate::identity::CallerKind;
use agentgate::policy::input::{build_input, InputParts, RequestFacts, RouteInput};
use agentgate::policy::PolicySnapshot;
use agentgate::tls::{ClientCertificate, SubjectAltNames};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn built_inputs_match_the_documented_schema() {
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("docs/policy-input.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let snapshot =
        PolicySnapshot::load(&repo().join("policies"), Duration::from_secs(1), None).unwrap();
    let route = RouteInput::new("orders", "/orders");
    let mut headers = http::HeaderMap::new();
    headers.insert("user-agent", "test".parse().unwrap());
    headers.insert(
        "authorization",
        "Bearer never-reaches-policy".parse().unwrap(),
    );
    let input_headers = [http::HeaderName::from_static("user-agent")];
    let facts = RequestFacts {
        method: "GET",
        host: "api.contoso.example",
        path: "/orders/42",
        query: "x=1",
        client_ip: "127.0.0.1",
        headers: &headers,
        time_ns: now() * 1_000_000_000,
        upgrade: None,
        client_certificate: None,
    };
    let mut unknown_agent = spec(CallerKind::AgentApp);
    unknown_agent.client = "dddddddd-4444-4444-4444-0000000000ff".into();
    unknown_agent.blueprint = Some("cccccccc-3333-3333-3333-0000000000ff".into());
    // A WebSocket upgrade over a connection with a verified client certificate.
    let certificate = ClientCertificate {
        subject: "CN=sales-agent,O=Contoso".into(),
        sans: SubjectAltNames {
            dns: vec!["agent.contoso.example".into()],
            uri: vec!["spiffe://contoso.example/agent/sales".into()],
            ip: vec!["192.0.2.7".into()],
            email: vec![],
        },
        sha256: "ab".repeat(32),
    };
    let upgrade_facts = RequestFacts {
        upgrade: Some("websocket"),
        client_certificate: Some(&certificate),
        ..facts
    };
    let specs = CallerKind::ALL.map(spec).into_iter().chain([unknown_agent]);
    for (i, s) in specs.enumerate() {
        let facts = if i % 2 == 0 { facts } else { upgrade_facts };
        let claims = serde_json::to_vec(&s.claims()).unwrap();
        let caller = classify_unverified(&claims).unwrap();
        assert_eq!(caller.kind, s.kind);
        let token = VerifiedToken {
            caller,
            version: TokenVersion::V1,
            issuer: Arc::from(format!("https://sts.windows.net/{TENANT_A}/")),
            audience: Arc::from(API_URI),
            expires_at: now() + 3600,
            not_before: Some(now()),
            issued_at: None,
            idtyp: None,
            scopes: vec![Arc::from("Orders.Read")],
            roles: vec![],
            kid: "k".into(),
        };
        let resolution = snapshot.directory.resolve(&token.caller).unwrap();
        let input = build_input(
            &facts,
            InputParts {
                route: &route,
                token: &token,
                directory: &snapshot.prepared,
                resolution: &resolution,
                input_headers: &input_headers,
            },
        );
        let json: serde_json::Value = serde_json::from_str(&input.to_json_str().unwrap()).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{:?}: {errors:#?}\n{json:#}", s.kind);
        assert_eq!(json["agent"].is_null(), !s.kind.is_agent());
        assert_eq!(json["user"].is_null(), !s.kind.is_delegated());
        assert_eq!(
            json["request"]["headers"],
            serde_json::json!({"user-agent": "test"})
        );
        if i % 2 == 1 {
            assert_eq!(json["request"]["upgrade"], "websocket");
            assert_eq!(
                json["request"]["client_certificate"]["sans"]["uri"][0],
                "spiffe://contoso.example/agent/sales"
            );
            assert_eq!(
                json["request"]["client_certificate"]["sha256"],
                "ab".repeat(32)
            );
        } else {
            assert!(json["request"]["upgrade"].is_null());
            assert!(json["request"]["client_certificate"].is_null());
        }
    }
}
