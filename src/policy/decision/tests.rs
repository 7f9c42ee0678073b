use super::*;

fn decide(json: &str) -> Result<Decision, DecisionError> {
    Decision::from_value(&Value::from_json_str(json).unwrap())
}

#[test]
fn allow_only_when_allow_is_exactly_true() {
    assert!(matches!(
        decide(r#"{"allow": true, "reason": "allowed"}"#),
        Ok(Decision::Allow { .. })
    ));
    assert!(matches!(
        decide(r#"{"allow": false, "reason": "nope"}"#),
        Ok(Decision::Deny { status: 403, .. })
    ));
    for bad in [
        r#"{"allow": "true", "reason": "x"}"#,
        r#"{"allow": 1, "reason": "x"}"#,
        r#"{"reason": "x"}"#,
        r#"{"allow": true}"#,
        r#"{"allow": true, "reason": "Has Spaces"}"#,
        r#"{"allow": true, "reason": "x", "surprise": 1}"#,
        r#"true"#,
        r#"[]"#,
    ] {
        assert!(decide(bad).is_err(), "{bad}");
    }
    assert_eq!(
        Decision::from_value(&Value::Undefined),
        Err(DecisionError::Undefined)
    );
}

#[test]
fn deny_status_and_scope_error() {
    let d = decide(
        r#"{"allow": false, "status": 429, "reason": "slow_down", "error": "insufficient_scope"}"#,
    )
    .unwrap();
    assert_eq!(
        d,
        Decision::Deny {
            status: 429,
            reason: Arc::from("slow_down"),
            insufficient_scope: true,
            response_headers: vec![],
        }
    );
    for bad in [200, 401, 500] {
        assert!(decide(&format!(
            r#"{{"allow": false, "status": {bad}, "reason": "x"}}"#
        ))
        .is_err());
    }
}

#[test]
fn policy_headers_are_validated_and_reserved_names_refused() {
    let d = decide(r#"{"allow": true, "reason": "ok", "headers": {"x-tier": "gold"}, "response_headers": {"x-why": "ok"}}"#).unwrap();
    let Decision::Allow {
        headers,
        response_headers,
        ..
    } = d
    else {
        panic!("expected allow")
    };
    assert_eq!(headers[0].0.as_str(), "x-tier");
    assert_eq!(response_headers[0].1, "ok");
    for name in [
        "x-agentgate-agent-id",
        "authorization",
        "host",
        "transfer-encoding",
    ] {
        let json = format!(r#"{{"allow": true, "reason": "ok", "headers": {{"{name}": "v"}}}}"#);
        assert!(decide(&json).is_err(), "{name}");
    }
    assert!(decide(r#"{"allow": true, "reason": "ok", "headers": {"x": 1}}"#).is_err());
}
