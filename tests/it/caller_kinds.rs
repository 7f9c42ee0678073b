//! Each caller kind is recognised, forwarded with its identity headers when policy allows
//! it, and refused when policy does not.

use crate::support::*;
use agentgate::identity::CallerKind;
use serde_json::json;

/// Access data that also admits human users and classic middle tiers on GET /orders.
fn access_for_every_kind() -> serde_json::Value {
    let mut access: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo().join("policies/data/access.json")).unwrap())
            .unwrap();
    access["non_agent"]["orders"] = json!([
        {"kinds": ["app"], "clients": [CLASSIC_APP], "methods": ["GET"], "path_prefixes": ["/orders"], "roles": ["Orders.Read.All"]},
        {"kinds": ["user", "app_obo_agent_user"], "methods": ["GET"], "path_prefixes": ["/orders"], "scopes": ["Orders.Read"]}
    ]);
    access
}

#[test]
fn each_caller_kind_is_allowed_with_its_identity_headers() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            data: vec![("access.json", access_for_every_kind())],
            ..Default::default()
        },
    );
    for kind in CallerKind::ALL {
        let s = spec(kind);
        let reply = gw.call("GET", "/orders/42", Some(&mint(&key, &s)));
        reply.assert_allowed();
        assert_eq!(
            reply.upstream_header("x-agentgate-caller-kind"),
            Some(kind.as_str()),
            "{kind:?}"
        );
        assert_eq!(reply.upstream_header("x-agentgate-tenant"), Some(TENANT_A));
        assert_eq!(
            reply.upstream_header("x-agentgate-client-id"),
            Some(s.client.as_str())
        );
        assert_eq!(
            reply
                .upstream_header("x-agentgate-decision-id")
                .map(str::len),
            Some(32)
        );
        assert_eq!(
            reply.upstream_header("x-agentgate-agent-id"),
            kind.is_agent().then_some(AGENT_EMEA),
            "{kind:?}"
        );
        assert_eq!(
            reply.upstream_header("x-agentgate-blueprint-id"),
            kind.is_agent().then_some(BP_SALES),
            "{kind:?}"
        );
        let user = kind.is_delegated().then(|| s.subject.clone().unwrap());
        assert_eq!(
            reply.upstream_header("x-agentgate-user-oid"),
            user.as_deref(),
            "{kind:?}"
        );
        // The bearer token is not forwarded unless the route asks for it.
        assert_eq!(reply.upstream_header("authorization"), None);
    }
}

#[test]
fn each_caller_kind_is_denied_without_the_permission_it_needs() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            data: vec![("access.json", access_for_every_kind())],
            ..Default::default()
        },
    );
    for kind in CallerKind::ALL {
        let mut s = spec(kind);
        s.roles = vec!["Unrelated.Role".into()];
        s.scopes = vec!["Unrelated.Scope".into()];
        let reply = gw.call("GET", "/orders/42", Some(&mint(&key, &s)));
        let reason = if kind.is_delegated() {
            "missing_scope"
        } else {
            "missing_role"
        };
        reply.assert_denied(403, reason);
        assert!(
            reply
                .www_authenticate()
                .contains("error=\"insufficient_scope\""),
            "{kind:?}: {}",
            reply.www_authenticate()
        );
    }
    // And with the shipped data, human users and classic middle tiers may not call at all.
    let gw = Gateway::start(&servers, GatewaySpec::default());
    for kind in [CallerKind::User, CallerKind::AppOboAgentUser] {
        gw.call("GET", "/orders/42", Some(&mint(&key, &spec(kind))))
            .assert_denied(403, "non_agent_denied");
    }
}
