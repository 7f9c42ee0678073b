//! The decision cache on the real gateway: repeats are answered from it, a reload starts
//! afresh, a set that reads the clock is never cached, and policy sees the request time at
//! `policy.time_resolution`.

use crate::support::*;

const HITS: &str = "agentgate_policy_decision_cache_requests_total{result=\"hit\"}";
const MISSES: &str = "agentgate_policy_decision_cache_requests_total{result=\"miss\"}";
const ENTRIES: &str = "agentgate_policy_decision_cache_entries";

/// Allows while `data.switch.open` is true: the data changes, the input does not.
const SWITCH_SET: &str = r#"package agentgate
decision := {"allow": true, "reason": "allowed"} if {
	data.switch.open == true
} else := {"allow": false, "status": 403, "reason": "switched_off"}
"#;

/// Allows every request, but reads the clock.
const CLOCK_SET: &str = r#"package agentgate
decision := {"allow": true, "reason": "allowed"} if time.now_ns() > 0
"#;

/// Allows every request and shows the upstream the time policy saw.
const TIME_SET: &str = r#"package agentgate
decision := {"allow": true, "reason": "allowed", "headers": {"x-seen-time": sprintf("%d", [input.request.time_ns])}}
"#;

/// A gateway deciding with the one module `rego`, and `spec`'s other settings.
fn deciding_with(servers: &Servers, rego: &str, spec: GatewaySpec) -> Gateway {
    Gateway::start(
        servers,
        GatewaySpec {
            rego: Some(vec![("policy.rego", rego.into())]),
            ..spec
        },
    )
}

#[test]
fn repeats_are_answered_from_the_cache_and_a_reload_starts_afresh() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = deciding_with(
        &servers,
        SWITCH_SET,
        GatewaySpec {
            data: vec![("switch.json", serde_json::json!({"open": true}))],
            // Reloaded through the admin API alone: a second reload by the file watcher
            // would start the cache afresh again while the test counts its hits.
            extra_config: "\n[reload]\nwatch = false\n".into(),
            ..Default::default()
        },
    );
    gw.wait_policy_engine("compiled");
    let token = fresh_token(&key, "cache");
    for _ in 0..5 {
        gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
    }
    gw.call("GET", "/orders/2", Some(&token)).assert_allowed();
    let metrics = gw.metrics();
    // Five calls to /orders/1 within a second or two: remembered at the second, answered
    // from the cache from the third, unless the next second began in between (its input
    // is new, and remembered at once since its slot came up before). /orders/2 came up
    // once: not remembered.
    let (hits, misses) = (metric(&metrics, HITS), metric(&metrics, MISSES));
    assert_eq!(hits + misses, 6.0, "{metrics}");
    assert!((2.0..=3.0).contains(&hits), "{hits} hits:\n{metrics}");
    assert_eq!(metric(&metrics, ENTRIES), 1.0, "{metrics}");

    // The same input, decided by the new set at once: nothing remembered carries over.
    let switch = gw.dir.path().join("policies/data/switch.json");
    std::fs::write(&switch, r#"{"open": false}"#).unwrap();
    let (status, body) = gw.reload();
    assert_eq!(status, 200, "{body}");
    gw.call("GET", "/orders/1", Some(&token))
        .assert_denied(403, "switched_off");
    gw.wait_policy_engine("compiled");
    // Remembered at the second call, a hit from the third (the fourth if a new second
    // began in between).
    for _ in 0..4 {
        gw.call("GET", "/orders/1", Some(&token))
            .assert_denied(403, "switched_off");
    }
    let metrics = gw.metrics();
    assert!(metric(&metrics, HITS) > hits, "{metrics}");
}

#[test]
fn a_set_that_reads_the_clock_is_never_cached() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = deciding_with(&servers, CLOCK_SET, GatewaySpec::default());
    gw.wait_policy_engine("compiled");
    let token = fresh_token(&key, "clock");
    for _ in 0..3 {
        gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
    }
    let metrics = gw.metrics();
    assert_eq!(
        (metric(&metrics, HITS), metric(&metrics, MISSES)),
        (0.0, 0.0),
        "{metrics}"
    );
    assert!(
        gw.stderr().contains("policy decisions are not cached"),
        "{}",
        gw.stderr()
    );
}

#[test]
fn policy_sees_the_request_time_at_the_configured_resolution() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = deciding_with(
        &servers,
        TIME_SET,
        GatewaySpec {
            policy_extra: "time_resolution = \"250ms\"\n".into(),
            ..Default::default()
        },
    );
    let token = fresh_token(&key, "time");
    for _ in 0..5 {
        let before = now() * 1_000_000_000;
        let reply = gw.call("GET", "/orders/1", Some(&token));
        reply.assert_allowed();
        let seen: u64 = reply
            .upstream_header("x-seen-time")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(seen % 250_000_000, 0, "{seen}");
        assert!(
            seen + 2_000_000_000 >= before,
            "{seen} long before {before}"
        );
    }
}
