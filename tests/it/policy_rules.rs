//! The shipped policy library, end to end: blueprint and agent blocks, revoked permissions,
//! route and method rules, named locations, hours and risk.

use crate::support::*;
use agentgate::identity::CallerKind;
use serde_json::json;

fn agent(client: &str, blueprint: &str) -> agentgate::dev::TokenSpec {
    let mut s = spec(CallerKind::AgentApp);
    s.client = client.into();
    s.blueprint = Some(blueprint.into());
    s
}

fn shipped_access() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(repo().join("policies/data/access.json")).unwrap())
        .unwrap()
}

#[test]
fn shipped_rules_block_allow_and_explain() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(&servers, GatewaySpec::default());

    // A whole blueprint disabled, one agent disabled, a risky agent.
    gw.call(
        "GET",
        "/orders/1",
        Some(&mint(&key, &agent(AGENT_LEGACY, BP_LEGACY))),
    )
    .assert_denied(403, "blueprint_disabled");
    gw.call(
        "GET",
        "/orders/1",
        Some(&mint(&key, &agent(AGENT_STARTUPS, BP_SALES))),
    )
    .assert_denied(403, "agent_disabled");
    gw.call(
        "GET",
        "/orders/1",
        Some(&mint(&key, &agent(AGENT_SOUTH_AMERICA, BP_SALES))),
    )
    .assert_denied(403, "risk_high");

    // An agent of a blueprint nobody listed.
    gw.call(
        "GET",
        "/orders/1",
        Some(&mint(
            &key,
            &agent(
                "dddddddd-4444-4444-4444-0000000000ff",
                "cccccccc-3333-3333-3333-0000000000ff",
            ),
        )),
    )
    .assert_denied(403, "unknown_blueprint");

    // The directory says this agent belongs to another blueprint than the token claims.
    gw.call(
        "GET",
        "/orders/1",
        Some(&mint(&key, &agent(AGENT_EMEA, BP_INVOICE))),
    )
    .assert_denied(403, "blueprint_mismatch");

    // Revoked for every agent of the Invoice blueprint, although the token carries it.
    let mut writer = agent(AGENT_INVOICE, BP_INVOICE);
    writer.roles = vec!["Orders.Write.All".into()];
    let reply = gw.call("POST", "/orders", Some(&mint(&key, &writer)));
    reply.assert_denied(403, "permission_revoked");
    assert!(reply.www_authenticate().contains("insufficient_scope"));
    // The same role still works for the Sales blueprint.
    let mut sales_writer = agent(AGENT_EMEA, BP_SALES);
    sales_writer.roles = vec!["Orders.Write.All".into()];
    gw.call("POST", "/orders", Some(&mint(&key, &sales_writer)))
        .assert_allowed();

    // Route and method rules.
    let reader = mint(&key, &agent(AGENT_EMEA, BP_SALES));
    gw.call("DELETE", "/orders/1", Some(&reader))
        .assert_denied(403, "route_not_allowed");
    gw.call("GET", "/crm/accounts", Some(&reader))
        .assert_allowed();
    gw.call(
        "GET",
        "/crm/accounts",
        Some(&mint(&key, &agent(AGENT_INVOICE, BP_INVOICE))),
    )
    .assert_denied(403, "route_not_allowed");
}

#[test]
fn named_locations_restrict_client_addresses() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let mut access = shipped_access();
    access["blueprints"][BP_SALES]["locations"] = json!(["corp_network"]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            data: vec![("access.json", access.clone())],
            ..Default::default()
        },
    );
    gw.call(
        "GET",
        "/orders/1",
        Some(&mint(&key, &agent(AGENT_EMEA, BP_SALES))),
    )
    .assert_denied(403, "location_denied");

    access["blueprints"][BP_SALES]["locations"] = json!(["loopback"]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            data: vec![("access.json", access)],
            ..Default::default()
        },
    );
    gw.call(
        "GET",
        "/orders/1",
        Some(&mint(&key, &agent(AGENT_EMEA, BP_SALES))),
    )
    .assert_allowed();
}

#[test]
fn hours_windows_follow_the_clock() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    // Pick the Etc/GMT zone where it is now 10:xx local time, so a 10-12 window is open and a
    // 13-15 window is closed for the next hour whatever the real time is.
    let utc_hour = ((now() / 3600) % 24) as i64;
    let mut offset = (10 - utc_hour).rem_euclid(24);
    if offset > 14 {
        offset -= 24;
    }
    // Etc/GMT signs are inverted: Etc/GMT-3 is UTC+3.
    let zone = match offset {
        0 => "UTC".to_string(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    };
    let window = |start: u64, end: u64| {
        let mut access = shipped_access();
        access["blueprints"][BP_SALES]["hours"] =
            json!({"time_zone": zone, "start": start, "end": end});
        GatewaySpec {
            data: vec![("access.json", access)],
            ..Default::default()
        }
    };
    let open = Gateway::start(&servers, window(10, 12));
    let closed = Gateway::start(&servers, window(13, 15));
    let token = mint(&key, &agent(AGENT_EMEA, BP_SALES));
    open.call("GET", "/orders/1", Some(&token)).assert_allowed();
    closed
        .call("GET", "/orders/1", Some(&token))
        .assert_denied(403, "outside_hours");
}

#[test]
fn risk_states_and_agent_user_risk_from_the_directory_are_enforced() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let mut directory: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("policies/data/directory.json")).unwrap(),
    )
    .unwrap();
    let north_america = "dddddddd-4444-4444-4444-000000000004";
    directory["agents"][north_america]["risk_state"] = json!("confirmedCompromised");
    directory["agent_users"][AGENT_USER_EMEA]["risk"] = json!("high");
    // An agent whose blueprint principal is gone from the tenant: kept, refused.
    let orphan = "dddddddd-4444-4444-4444-0000000000f1";
    let gone = "cccccccc-3333-3333-3333-0000000000f1";
    directory["agents"][orphan] = json!({
        "display_name": "Orphan", "blueprint": gone, "enabled": true, "risk": "none", "sponsors": [],
    });
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            data: vec![("directory.json", directory)],
            ..GatewaySpec::default()
        },
    );

    gw.call(
        "GET",
        "/orders/1",
        Some(&mint(&key, &agent(north_america, BP_SALES))),
    )
    .assert_denied(403, "risk_confirmed_compromised");
    // The agent user's risk counts for its own tokens only.
    gw.call(
        "GET",
        "/orders/1",
        Some(&mint(&key, &spec(CallerKind::AgentUser))),
    )
    .assert_denied(403, "risk_high");
    gw.call(
        "GET",
        "/orders/1",
        Some(&mint(&key, &spec(CallerKind::AgentApp))),
    )
    .assert_allowed();
    gw.call("GET", "/orders/1", Some(&mint(&key, &agent(orphan, gone))))
        .assert_denied(403, "unknown_blueprint");
}
