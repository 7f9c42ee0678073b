//! Every fixture payload of the Entra token reference (F1-F18 and variants), signed with the
//! test key and sent through the gateway, gets its documented outcome.

use crate::support::*;
use serde_json::Value;

#[test]
fn every_reference_fixture_gets_its_expected_outcome() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            policy_extra: "engine = \"interpreter\"".into(),
            ..GatewaySpec::default()
        },
    );
    assert_every_fixture(&gw, &key);
    assert_eq!(gw.readiness()["policy_engine"], "interpreter");
}

#[test]
fn the_compiled_engine_gives_every_fixture_the_same_outcome() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(&servers, GatewaySpec::default());
    gw.wait_policy_engine("compiled");
    assert_every_fixture(&gw, &key);
    // Had the compiled engine slipped on any fixture, it would have been sent back.
    assert_eq!(gw.readiness()["policy_engine"], "compiled");
}

/// Sends every fixture through `gw` and checks its documented outcome.
fn assert_every_fixture(gw: &Gateway, key: &agentgate::dev::SigningIdentity) {
    let doc: Value =
        serde_json::from_slice(&std::fs::read(repo().join("tests/data/fixtures.json")).unwrap())
            .unwrap();
    let fixtures = doc["fixtures"].as_object().unwrap();
    assert!(fixtures.len() >= 18);
    let now = now();
    for (name, f) in fixtures {
        let mut claims = f["claims"].as_object().unwrap().clone();
        // Keep each fixture's lifetime, moved so that it started a minute ago.
        let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        claims.insert("iat".into(), (now - 60).into());
        claims.insert("nbf".into(), (now - 60).into());
        claims.insert("exp".into(), (now - 60 + lifetime).into());
        let token = key.sign(&claims).unwrap();
        let reply = gw.call("GET", "/orders/42", Some(&token));
        let expect = &f["expect"];
        if expect["status"] == 200 {
            assert_eq!(reply.status, 200, "{name} ({}): {}", f["note"], reply.body);
            reply.assert_allowed();
        } else {
            assert_eq!(
                (reply.status, reply.reason()),
                (
                    expect["status"].as_u64().unwrap() as u16,
                    expect["reason"].as_str().unwrap()
                ),
                "{name} ({}): {}",
                f["note"],
                reply.body
            );
        }
    }
}
