//! Signing keys: rotation is picked up on an unknown kid, an outage of the key server does
//! not reject tokens signed by cached keys, and a removed key stops validating.

use crate::support::*;
use agentgate::identity::CallerKind;

fn spec_for_rotation() -> GatewaySpec {
    GatewaySpec {
        identity_extra: "min_refetch_interval = \"0s\"".into(),
        ..Default::default()
    }
}

#[test]
fn unknown_kid_refetches_and_accepts_the_rotated_key() {
    let (primary, rotated) = (key("primary"), key("rotated"));
    let servers = Servers::start(&[&primary]);
    let gw = Gateway::start(&servers, spec_for_rotation());
    let before = servers.jwks_requests();

    // Entra publishes the new key; the gateway has not seen it yet.
    servers.publish(&[&primary, &rotated]);
    gw.call(
        "GET",
        "/orders/1",
        Some(&mint(&rotated, &spec(CallerKind::AgentApp))),
    )
    .assert_allowed();
    assert_eq!(
        servers.jwks_requests(),
        before + 1,
        "exactly one refetch for the unknown kid"
    );

    // The old key keeps working while it is still published.
    gw.call(
        "GET",
        "/orders/1",
        Some(&mint(&primary, &spec(CallerKind::AgentApp))),
    )
    .assert_allowed();
}

#[test]
fn key_server_outage_keeps_cached_keys_working() {
    let primary = key("primary");
    let servers = Servers::start(&[&primary]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            cache: false,
            ..spec_for_rotation()
        },
    );
    servers
        .issuer
        .up
        .store(false, std::sync::atomic::Ordering::Relaxed);
    for i in 0..3 {
        // Fresh tokens each time: the key, not the token cache, carries them.
        gw.call(
            "GET",
            "/orders/1",
            Some(&fresh_token(&primary, &format!("outage-{i}"))),
        )
        .assert_allowed();
    }
    // An unknown kid during the outage is refused, not waited on forever.
    gw.call(
        "GET",
        "/orders/1",
        Some(&mint(&key("rotated"), &spec(CallerKind::AgentApp))),
    )
    .assert_denied(401, "unknown_key");
}

#[test]
fn a_removed_key_stops_validating_even_for_cached_tokens() {
    let (primary, rotated) = (key("primary"), key("rotated"));
    let servers = Servers::start(&[&primary]);
    let gw = Gateway::start(&servers, spec_for_rotation());
    let old = mint(&primary, &spec(CallerKind::AgentApp));
    gw.call("GET", "/orders/1", Some(&old)).assert_allowed();

    // Emergency rollover: the primary key is withdrawn.
    servers.publish(&[&rotated]);
    gw.call(
        "GET",
        "/orders/1",
        Some(&mint(&rotated, &spec(CallerKind::AgentApp))),
    )
    .assert_allowed();
    gw.call("GET", "/orders/1", Some(&old))
        .assert_denied(401, "unknown_key");
}
