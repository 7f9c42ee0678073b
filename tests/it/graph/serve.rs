//! `agentgate serve` with `[directory.graph]`: the real binary syncing from the fake Graph
//! while it serves, so a change in Entra reaches tokens issued before it.

use super::*;
use agentgate::dev::graph::{FaultTarget, GraphFault};
use agentgate::identity::CallerKind;
use serde_json::Value;
use std::time::Instant;

/// A gateway that syncs from `fake` every second, with the secret in a file of `dir`.
fn gateway(servers: &Servers, fake: &FakeGraph, dir: &std::path::Path) -> Gateway {
    let secret = dir.join("graph-secret");
    std::fs::write(&secret, SECRET).unwrap();
    Gateway::start(
        servers,
        GatewaySpec {
            extra_config: format!(
                r#"
[directory.graph]
tenant = "{TENANT_A}"
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"
authority = "{url}"
graph_url = "{url}"
ca_file = "{ca}"
interval = "1s"
max_age = "1h"
timeout = "2s"
max_retries = 0
"#,
                secret = secret.display(),
                url = fake.url,
                ca = ca_file().display(),
            ),
            admin_token: Some("graph-admin-token-0123456789"),
            ..Default::default()
        },
    )
}

#[test]
fn a_change_in_graph_reaches_tokens_issued_before_it() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let fake = FakeGraph::start(small_tenant());
    let dir = tempfile::tempdir().unwrap();
    // Ready only after the first good sync (Gateway::start waits for /readyz 200).
    let gw = gateway(&servers, &fake, dir.path());
    let ready = gw.readiness();
    assert_eq!(ready["directory_sync"]["ready"], true, "{ready}");
    let graph_revision = &ready["directory_sync"]["revision"];
    assert!(graph_revision.is_string(), "{ready}");
    // Where the directory in force came from: that Graph revision, with the policy set's
    // file on top (it lists the agents Graph lists and overrides some of their fields).
    let sources = &ready["reload"]["directory"];
    assert_eq!(&sources["graph_revision"], graph_revision, "{ready}");
    assert!(sources["merged_revision"].is_string(), "{ready}");
    assert!(
        sources["provenance"]["overridden"].as_u64().unwrap() > 0,
        "{ready}"
    );
    assert_eq!(sources["provenance"]["withheld"], false, "{ready}");

    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.sent(&token);
    gw.call("GET", "/orders/1", Some(&token)).assert_allowed();

    // Disabled in Entra: refused within one sync interval plus one second.
    assert!(fake.state.set_account_enabled(AGENT_EMEA, false));
    let took = gw.until_status(&token, 403);
    gw.call("GET", "/orders/1", Some(&token))
        .assert_denied(403, "agent_disabled");
    eprintln!("agent disabled in Graph: refused after {took:?}");
    // One interval (1 s) plus a reload; the figure is reported, the bound only catches a
    // sync loop that does not apply what it reads.
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");

    // The agent user's parent disabled: its token is refused too.
    let agent_user = mint(&key, &spec(CallerKind::AgentUser));
    gw.sent(&agent_user);
    gw.call("GET", "/orders/1", Some(&agent_user))
        .assert_denied(403, "agent_disabled");

    assert!(fake.state.set_account_enabled(AGENT_EMEA, true));
    gw.until_status(&token, 200);
    gw.call("GET", "/orders/1", Some(&agent_user))
        .assert_allowed();

    // The blueprint principal disabled: every agent of the blueprint.
    let principal = agentgate::dev::graph::principal_id(BP_SALES);
    assert!(fake.state.set_account_enabled(&principal, false));
    gw.until_status(&token, 403);
    gw.call("GET", "/orders/1", Some(&token))
        .assert_denied(403, "blueprint_disabled");
    assert!(fake.state.set_account_enabled(&principal, true));
    gw.until_status(&token, 200);

    // Marked risky by ID Protection.
    assert!(fake.state.set_risk(AGENT_EMEA, "high", "atRisk"));
    gw.until_status(&token, 403);
    gw.call("GET", "/orders/1", Some(&token))
        .assert_denied(403, "risk_high");
    assert!(fake.state.set_risk(AGENT_EMEA, "none", "remediated"));
    gw.until_status(&token, 200);

    // Graph failing: the last good directory keeps serving, and /readyz says why.
    fake.state
        .inject(FaultTarget::Graph, GraphFault::ServerError, 1000);
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let ready: Value = loop {
        let ready = gw.readiness();
        if ready["directory_sync"]["last_error"].is_string() {
            break ready;
        }
        assert!(Instant::now() < deadline, "no failed sync: {ready}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(ready["ready"], true, "{ready}");
    gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
    let metrics = gw.metrics();
    assert!(
        metric(
            &metrics,
            "agentgate_directory_syncs_total{result=\"error\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(metric(&metrics, "agentgate_directory_syncs_total{result=\"ok\"}") >= 1.0);

    // Nothing secret in what the gateway printed.
    let printed = gw.stderr();
    assert!(!printed.contains(SECRET), "the client secret was logged");
    for issued in fake.state.issued_tokens() {
        assert!(
            !printed.contains(&issued),
            "a Graph access token was logged"
        );
    }
}

#[test]
fn a_gateway_is_not_ready_before_its_first_sync() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let fake = FakeGraph::start(small_tenant());
    fake.state
        .inject(FaultTarget::Graph, GraphFault::ServerError, 3);
    let dir = tempfile::tempdir().unwrap();
    // Gateway::start waits for 200; it gets there only once a sync succeeds.
    let gw = gateway(&servers, &fake, dir.path());
    let ready = gw.readiness();
    assert_eq!(ready["directory_sync"]["ready"], true, "{ready}");
    let failed = ready["directory_sync"]["syncs_failed"].as_u64().unwrap();
    assert!(failed >= 1, "{ready}");
    let log = gw.stderr();
    assert!(
        log.contains("directory sync from Microsoft Graph failed"),
        "{log}"
    );
}
