//! The proxy around the decision: routing, header hygiene, upstream failures, and policies
//! that cannot decide.

use crate::support::*;
use agentgate::identity::CallerKind;
use serde_json::json;

#[test]
fn spoofed_identity_headers_are_stripped_and_trusted_ones_added() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(&servers, GatewaySpec::default());
    let token = mint(&key, &spec(CallerKind::AgentApp));
    let reply = gw.call_with(
        "GET",
        "/orders/1",
        Some(&token),
        &[
            ("x-agentgate-agent-id", "forged"),
            ("X-AgentGate-Blueprint-Id", "forged"),
            ("x-agentgate-user-oid", "forged"),
            ("x-agentgate-anything", "forged"),
            // Servers that fold `_` into `-` read these as the trusted headers.
            ("x_agentgate_user_oid", "forged"),
            ("X_AgentGate-Tenant", "forged"),
            ("x-agentgate_caller_kind", "forged"),
            // Method and URL overrides would make the upstream act on something else.
            ("X-HTTP-Method-Override", "DELETE"),
            ("x_http_method_override", "DELETE"),
            ("X-Original-URL", "/admin"),
            ("X-Rewrite-URL", "/admin"),
        ],
    );
    reply.assert_allowed();
    assert_eq!(
        reply.upstream_header("x-agentgate-agent-id"),
        Some(AGENT_EMEA)
    );
    assert_eq!(
        reply.upstream_header("x-agentgate-blueprint-id"),
        Some(BP_SALES)
    );
    assert_eq!(
        reply.upstream_header("x-agentgate-user-oid"),
        None,
        "app-only calls act for no user"
    );
    assert_eq!(reply.upstream_header("x-agentgate-anything"), None);
    assert_eq!(reply.upstream_header("x_agentgate_user_oid"), None);
    assert_eq!(reply.upstream_header("x-agentgate-tenant"), Some(TENANT_A));
    assert_eq!(
        reply.upstream_header("x-agentgate-caller-kind"),
        Some("agent_app")
    );
    let echoed = reply.body["headers"].to_string();
    assert!(!echoed.contains("forged"), "{echoed}");
    for h in [
        "x-http-method-override",
        "x_http_method_override",
        "x-original-url",
        "x-rewrite-url",
    ] {
        assert_eq!(reply.upstream_header(h), None, "{h} reached the upstream");
    }
    // The decision id the client sees is the one the upstream got.
    assert_eq!(
        reply
            .headers
            .get("x-agentgate-decision-id")
            .and_then(|v| v.to_str().ok()),
        reply.upstream_header("x-agentgate-decision-id")
    );
}

#[test]
fn override_headers_reach_the_upstream_only_on_routes_that_opt_in() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            route_extra: "forward_override_headers = true".into(),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    let reply = gw.call_with(
        "GET",
        "/orders/1",
        Some(&token),
        &[
            ("X-HTTP-Method-Override", "HEAD"),
            ("x_agentgate_user_oid", "forged"),
        ],
    );
    reply.assert_allowed();
    assert_eq!(
        reply.upstream_header("x-http-method-override"),
        Some("HEAD")
    );
    // Identity headers are stripped whatever the route says.
    assert_eq!(reply.upstream_header("x_agentgate_user_oid"), None);
    // The other route of the same gateway does not opt in.
    let reply = gw.call_with(
        "GET",
        "/crm/1",
        Some(&token),
        &[("X-HTTP-Method-Override", "HEAD")],
    );
    reply.assert_allowed();
    assert_eq!(reply.upstream_header("x-http-method-override"), None);
}

#[test]
fn routing_and_path_hygiene() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(&servers, GatewaySpec::default());
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.call("GET", "/nowhere", Some(&token))
        .assert_denied(404, "no_route");
    gw.call("GET", "/ordersx", Some(&token))
        .assert_denied(404, "no_route");
    gw.call("GET", "/orders/%2e%2e%2fadmin", Some(&token))
        .assert_denied(400, "invalid_path");
    let reply = gw.call("GET", "/orders/42?x=1", Some(&token));
    reply.assert_allowed();
    assert_eq!(reply.body["path"], "/orders/42");
    assert_eq!(reply.body["query"], "x=1");
}

#[test]
fn authorization_is_forwarded_only_when_the_route_asks() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            route_extra: "forward_authorization = true".into(),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    let reply = gw.call("GET", "/orders/1", Some(&token));
    reply.assert_allowed();
    assert_eq!(
        reply.upstream_header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    // The other route keeps the default.
    assert_eq!(
        gw.call("GET", "/crm/1", Some(&token))
            .upstream_header("authorization"),
        None
    );
}

#[test]
fn upstream_down_is_a_502_and_a_stalled_upstream_a_504() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let token = mint(&key, &spec(CallerKind::AgentApp));

    let refused = format!("127.0.0.1:{}", free_port());
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            upstreams: Some(vec![refused]),
            ..Default::default()
        },
    );
    let reply = gw.call("GET", "/orders/1", Some(&token));
    reply.assert_denied(502, "upstream_unreachable");
    assert_eq!(reply.body["error"], "bad_gateway");

    // Accepts connections, never answers: the read timeout (2 s here) gives a 504.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            upstreams: Some(vec![stalled.local_addr().unwrap().to_string()]),
            ..Default::default()
        },
    );
    gw.call("GET", "/orders/1", Some(&token))
        .assert_denied(504, "upstream_timeout");

    // With a second, healthy upstream the refused one is skipped.
    let refused = format!("127.0.0.1:{}", free_port());
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            upstreams: Some(vec![refused, servers.upstream.to_string()]),
            ..Default::default()
        },
    );
    for _ in 0..4 {
        gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
    }
}

#[test]
fn policies_that_cannot_decide_fail_closed() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let token = mint(&key, &spec(CallerKind::AgentApp));
    let cases = [
        ("runtime error", "package agentgate\n\ndecision := {\"allow\": true, \"reason\": \"allowed\", \"n\": to_number(\"not a number\")}\n"),
        ("conflicting rules", "package agentgate\n\ndecision := {\"allow\": true, \"reason\": \"a\"} if input.request.method == \"GET\"\n\ndecision := {\"allow\": true, \"reason\": \"b\"} if input.route.id == \"orders\"\n"),
        ("undefined", "package agentgate\n\ndecision := {\"allow\": true, \"reason\": \"allowed\"} if input.request.method == \"NEVER\"\n"),
        ("allow is not a boolean", "package agentgate\n\ndecision := {\"allow\": \"true\", \"reason\": \"allowed\"}\n"),
        ("not an object", "package agentgate\n\ndecision := true\n"),
    ];
    for (what, rego) in cases {
        let gw = Gateway::start(
            &servers,
            GatewaySpec {
                rego: Some(vec![("policy.rego", rego.to_string())]),
                ..Default::default()
            },
        );
        let reply = gw.call("GET", "/orders/1", Some(&token));
        assert_eq!(
            (reply.status, reply.reason()),
            (403, "policy_error"),
            "{what}: {}",
            reply.body
        );
        // The failure is on record: in the decision log under the reply's decision id, and
        // in the request counter.
        let decisions = gw.wait_decisions(1);
        assert_eq!(decisions.len(), 1, "{what}: {decisions:?}");
        let d = &decisions[0];
        assert_eq!(
            (
                &d["decision_id"],
                &d["route"],
                &d["caller_kind"],
                &d["blueprint_id"],
                &d["allow"],
                &d["status"],
                &d["reason"],
            ),
            (
                &reply.body["decision_id"],
                &json!("orders"),
                &json!("agent_app"),
                &json!(BP_SALES),
                &json!(false),
                &json!(403),
                &json!("policy_error"),
            ),
            "{what}: {d}"
        );
        let denied = format!(
            "agentgate_requests_total{{blueprint=\"{BP_SALES}\",caller_kind=\"agent_app\",decision=\"deny\",reason=\"policy_error\",route=\"orders\"}}"
        );
        assert_eq!(metric(&gw.metrics(), &denied), 1.0, "{what}");
    }
}

/// Open file descriptors of a process. A /proc that cannot be read fails the test: the
/// leak checks below mean nothing without it.
fn open_fds(pid: u32) -> usize {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot count open descriptors in {dir}: {e}"))
        .count()
}

/// The descriptors the gateway holds at rest. A running gateway holds some (its standard
/// streams, its listeners), so a count of none means the count is wrong.
fn baseline_fds(pid: u32) -> usize {
    let n = open_fds(pid);
    assert!(n > 0, "no open descriptors in /proc/{pid}/fd");
    n
}

/// Waits (10 s at most) until the process is back to `baseline` descriptors.
fn wait_for_fds(pid: u32, baseline: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while open_fds(pid) > baseline {
        assert!(
            std::time::Instant::now() < deadline,
            "descriptors leaked: {} open, baseline {baseline}",
            open_fds(pid)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn upstream_faults_leave_no_descriptors_behind() {
    use std::io::{Read, Write};
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let token = mint(&key, &spec(CallerKind::AgentApp));

    // An upstream that answers half a response and then resets the connection (closing with
    // the request still unread makes the kernel send RST).
    let resetting = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = resetting.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in resetting.incoming().take(10) {
            let Ok(mut c) = conn else { continue };
            let mut first = [0u8; 1];
            let _ = c.read(&mut first);
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial");
            drop(c);
        }
    });
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            upstreams: Some(vec![addr.to_string()]),
            ..Default::default()
        },
    );
    let pid = gw.child.id();
    gw.call("GET", "/nowhere", Some(&token))
        .assert_denied(404, "no_route");
    let baseline = baseline_fds(pid);
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    for _ in 0..10 {
        // The client sees a truncated or failed response, never a hang and never a crash.
        let sent = client
            .get(format!("{}/orders/1", gw.base))
            .bearer_auth(&token)
            .send();
        if let Ok(r) = sent {
            assert!(r.status() == 502 || r.text().map_or(true, |b| b.len() < 1000));
        }
    }
    gw.sent(&token);
    // The gateway is alive and its descriptors return to the baseline.
    gw.call("GET", "/nowhere", Some(&token))
        .assert_denied(404, "no_route");
    wait_for_fds(pid, baseline);

    // The same for refused and stalled upstreams.
    let refused = format!("127.0.0.1:{}", free_port());
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            upstreams: Some(vec![refused]),
            ..Default::default()
        },
    );
    let pid = gw.child.id();
    gw.call("GET", "/nowhere", Some(&token))
        .assert_denied(404, "no_route");
    let baseline = baseline_fds(pid);
    for _ in 0..10 {
        gw.call("GET", "/orders/1", Some(&token))
            .assert_denied(502, "upstream_unreachable");
    }
    wait_for_fds(pid, baseline);
}

#[test]
fn a_stalled_upstream_leaves_no_descriptors_behind() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let token = mint(&key, &spec(CallerKind::AgentApp));
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            upstreams: Some(vec![stalled.local_addr().unwrap().to_string()]),
            ..Default::default()
        },
    );
    let pid = gw.child.id();
    gw.call("GET", "/nowhere", Some(&token))
        .assert_denied(404, "no_route");
    let baseline = baseline_fds(pid);
    gw.call("GET", "/orders/1", Some(&token))
        .assert_denied(504, "upstream_timeout");
    wait_for_fds(pid, baseline);
}

/// pingora's debug and trace output prints whole request headers; at any `RUST_LOG` level the
/// gateway's logs must still hold no token (the harness scans them on drop, and so does this).
#[test]
fn no_log_level_shows_a_token() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            rust_log: "trace",
            route_extra: "forward_authorization = true".into(),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
    gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
    gw.call("GET", "/nowhere", Some(&token))
        .assert_denied(404, "no_route");
    let logged = gw.stderr();
    assert!(
        logged.contains("TRACE"),
        "trace logging was not on, so this proves nothing"
    );
    let signature = token.rsplit('.').next().unwrap();
    assert!(!logged.contains(signature), "a token reached the logs");
}

/// A GET of `/orders/1` with `token` and `X-Forwarded-For: xff`, from local address `from`.
fn from_address(gw: &Gateway, from: &str, token: &str, xff: &str) -> Reply {
    gw.sent(token);
    let client = reqwest::blocking::Client::builder()
        .local_address(Some(from.parse().unwrap()))
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    Reply::from(
        client
            .get(format!("{}/orders/1", gw.base))
            .bearer_auth(token)
            .header("x-forwarded-for", xff)
            .header("x-forwarded-proto", "https")
            .header("forwarded", "for=6.6.6.6")
            .send()
            .unwrap(),
    )
}

#[test]
fn behind_a_trusted_proxy_the_policy_sees_the_real_client_and_spoofing_changes_nothing() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    // The Sales Assistant blueprint may call only from loopback and corp_network (10/8).
    let mut access: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("policies/data/access.json")).unwrap(),
    )
    .unwrap();
    access["blueprints"][BP_SALES]["locations"] = json!(["loopback", "corp_network"]);
    // 127.0.0.1 plays the load balancer; 127.0.0.2 is a client connecting directly.
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            server_extra: "trusted_proxies = [\"127.0.0.1/32\"]".into(),
            data: vec![("access.json", access)],
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));

    // Through the proxy from the corporate network: allowed, and the upstream is told.
    let r = from_address(&gw, "127.0.0.1", &token, "10.1.2.3");
    r.assert_allowed();
    assert_eq!(
        r.upstream_header("x-forwarded-for"),
        Some("10.1.2.3, 127.0.0.1")
    );
    assert_eq!(r.upstream_header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        r.upstream_header("forwarded"),
        Some("for=10.1.2.3;proto=https")
    );

    // Through the proxy from the internet: the location rule refuses the real client.
    from_address(&gw, "127.0.0.1", &token, "203.0.113.7").assert_denied(403, "location_denied");

    // A client that prepends a corporate address itself: the proxy's own entry decides.
    from_address(&gw, "127.0.0.1", &token, "10.9.9.9, 203.0.113.7")
        .assert_denied(403, "location_denied");

    // A direct client claiming to be elsewhere: not believed, and the header is replaced.
    let r = from_address(&gw, "127.0.0.2", &token, "203.0.113.7");
    r.assert_allowed();
    assert_eq!(r.upstream_header("x-forwarded-for"), Some("127.0.0.2"));
    assert_eq!(r.upstream_header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        r.upstream_header("forwarded"),
        Some("for=127.0.0.2;proto=http")
    );

    // The decision log names the client the policy saw.
    let decisions = gw.wait_decisions(4);
    let clients: Vec<&str> = decisions
        .iter()
        .map(|d| d["client_ip"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        clients,
        ["10.1.2.3", "203.0.113.7", "203.0.113.7", "127.0.0.2"],
        "{decisions:?}"
    );
}

#[test]
fn server_sent_events_stream_through_unbuffered() {
    use std::io::Read;
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let (upstream, finish) = event_stream_upstream();
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            upstreams: Some(vec![upstream]),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.sent(&token);
    let mut response = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("{}/orders/events", gw.base))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    // The first event arrives while the upstream is still holding the stream open.
    let mut first = [0u8; 13];
    response.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"data: first\n\n");
    finish.send(()).unwrap();
    let mut rest = String::new();
    response.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "data: second\n\n");
}
