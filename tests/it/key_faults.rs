//! Key-server faults: while discovery/JWKS misbehaves, tokens signed by cached keys keep
//! working, unknown kids fail fast, and a flood of unknown kids costs one fetch at a time.

use crate::support::*;
use agentgate::dev::servers::Fault;
use agentgate::identity::CallerKind;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[test]
fn cached_keys_keep_working_through_every_kind_of_key_server_fault() {
    let (primary, rotated) = (key("primary"), key("rotated"));
    let servers = Servers::start(&[&primary]);
    // Refetch allowed at once, so each unknown kid really reaches the faulty server.
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            identity_extra: "min_refetch_interval = \"0s\"".into(),
            ..Default::default()
        },
    );
    // The client gives up after fetch_timeout (2 s) plus a margin: a gateway that waited on
    // the hanging server would fail this, without the test timing anything itself.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(4))
        .build()
        .unwrap();
    let mut n = 0;
    for fault in [
        Fault::ServerError,
        Fault::Hang,
        Fault::Malformed,
        Fault::Huge,
        Fault::ForeignJwksUri,
    ] {
        servers.issuer.set_fault(fault);
        for _ in 0..5 {
            n += 1;
            gw.call(
                "GET",
                "/orders/1",
                Some(&fresh_token(&primary, &format!("fault-{n}"))),
            )
            .assert_allowed();
        }
        let unknown = mint(&rotated, &spec(CallerKind::AgentApp));
        gw.sent(&unknown);
        let r = client
            .get(format!("{}/orders/1", gw.base))
            .bearer_auth(&unknown)
            .send()
            .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        let r = Reply::from(r);
        r.assert_denied(401, "unknown_key");
        // The last good key set is still there, and the gateway still ready.
        let ready = client.get(format!("{}/readyz", gw.admin)).send().unwrap();
        assert_eq!(ready.status(), 200, "{fault:?}");
    }
    servers.issuer.set_fault(Fault::None);
    let failures = gw.metrics();
    assert!(
        failures.contains("agentgate_key_fetches_total{result=\"error\""),
        "{failures}"
    );
    // Recovery: the rotated key is published and picked up on the next unknown kid.
    servers.publish(&[&primary, &rotated]);
    gw.call(
        "GET",
        "/orders/1",
        Some(&mint(&rotated, &spec(CallerKind::AgentApp))),
    )
    .assert_allowed();
}

#[test]
fn a_flood_of_unknown_kids_causes_at_most_one_fetch_at_a_time() {
    let (primary, rotated) = (key("primary"), key("rotated"));
    let servers = Servers::start(&[&primary]);
    // No rate limit: only single-flight coalescing keeps the flood to one fetch.
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            identity_extra: "min_refetch_interval = \"0s\"".into(),
            ..Default::default()
        },
    );
    // A slow key server, so the whole flood queues behind the first fetch.
    // (discovery and JWKS each take 300 ms: 0.6 s, well inside the 2 s fetch timeout, so no
    // waiter gives up and abandons a fetch half-way)
    servers.issuer.delay_ms.store(300, Ordering::Relaxed);
    servers.issuer.max_in_flight.store(0, Ordering::Relaxed);
    let before = servers.issuer.requests.load(Ordering::Relaxed);
    let base = gw.base.clone();
    let tokens: Vec<String> = (0..1000)
        .map(|i| fresh_token(&rotated, &format!("flood-{i}")))
        .collect();
    for t in &tokens {
        gw.sent(t);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let statuses: Vec<u16> = runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let requests = tokens.into_iter().map(|t| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                client
                    .get(format!("{base}/orders/1"))
                    .bearer_auth(t)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        });
        futures_join_all(requests).await
    });
    assert_eq!(statuses.len(), 1000);
    assert!(
        statuses.iter().all(|s| *s == 401),
        "every unknown kid is refused: {:?}",
        statuses
            .iter()
            .filter(|s| **s != 401)
            .take(5)
            .collect::<Vec<_>>()
    );
    let max = servers.issuer.max_in_flight.load(Ordering::Relaxed);
    assert_eq!(max, 1, "{max} fetches in flight at once");
    // Without coalescing every queued request would fetch again in turn (until its wait
    // bound ran out); with it, requests that waited on a fetch share its answer, and only
    // stragglers arriving after a fetch finished could start another.
    let fetches = (servers.issuer.requests.load(Ordering::Relaxed) - before) / 2;
    eprintln!("1000 unknown-kid requests caused {fetches} key fetches");
    assert!(
        (1..=10).contains(&fetches),
        "{fetches} fetches for the flood"
    );
}

/// Runs the futures concurrently and collects their results.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<u16>
where
    F: std::future::Future<Output = u16> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for f in futures {
        set.spawn(f);
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

/// A discovery document must name this tenant's issuer: one that names none, or another
/// tenant's, is not trusted for keys, whatever its JWKS holds.
#[test]
fn keys_are_taken_only_from_discovery_that_names_the_tenants_issuer() {
    let (primary, rotated) = (key("primary"), key("rotated"));
    let servers = Servers::start(&[&primary]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            identity_extra: "min_refetch_interval = \"0s\"".into(),
            ..Default::default()
        },
    );
    // The rotated key is published, but discovery does not vouch for it.
    servers.publish(&[&primary, &rotated]);
    for (n, fault) in [Fault::NoIssuer, Fault::WrongIssuer]
        .into_iter()
        .enumerate()
    {
        servers.issuer.set_fault(fault);
        let before = servers.jwks_requests();
        gw.call(
            "GET",
            "/orders/1",
            Some(&fresh_token(&rotated, &format!("issuer-fault-{n}"))),
        )
        .assert_denied(401, "unknown_key");
        assert_eq!(
            servers.jwks_requests(),
            before,
            "{fault:?}: the JWKS was fetched after a discovery document that did not vouch for it"
        );
    }
    servers.issuer.set_fault(Fault::None);
    gw.call(
        "GET",
        "/orders/1",
        Some(&fresh_token(&rotated, "issuer-fault-recovered")),
    )
    .assert_allowed();
}
