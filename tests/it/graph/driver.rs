//! The periodic sync driver against the fake Graph: what it publishes, what it keeps, when
//! it turns stale, its status and metrics.

use super::*;
use agentgate::dev::graph::{FakeAgent, FaultTarget, GraphFault};
use agentgate::directory::DirectoryFile;
use agentgate::graph::{EntityKind, GraphError, Source, SyncDriver, SyncedDirectory};
use tokio::sync::mpsc::UnboundedReceiver;

async fn next(rx: &mut UnboundedReceiver<Arc<SyncedDirectory>>) -> Arc<SyncedDirectory> {
    tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("no directory published within 15 s")
        .expect("the driver stopped")
}

async fn patch(fake: &FakeGraph, path: &str, body: serde_json::Value) -> u16 {
    reqwest::Client::builder()
        .tls_certs_merge([test_ca_certificate()])
        .build()
        .unwrap()
        .patch(format!("{}{path}", fake.url))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_driver_publishes_changes_keeps_the_last_good_directory_and_turns_stale() {
    let fake = FakeGraph::start(small_tenant());
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&fake, secret_file(dir.path()));
    c.interval = Duration::from_millis(200);
    c.max_age = Duration::from_millis(1500);
    c.on_stale = OnStale::RefuseUnvouched;
    c.max_retries = 0;
    let driver = Arc::new(SyncDriver::new(&c).unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn({
        let driver = driver.clone();
        async move {
            driver
                .run(stopped, move |d| {
                    let _ = tx.send(d);
                })
                .await
        }
    });

    let first = next(&mut rx).await;
    assert!(!first.stale);
    assert!(first.graph.agents[AGENT_EMEA].enabled);
    assert_eq!(first.counts.agents, 3);
    // Syncs that read the same directory publish nothing.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(rx.try_recv().is_err());
    assert!(driver.status().syncs_ok >= 3, "{:?}", driver.status());

    // An administrator disables the agent in Entra (and Entra flags the blueprint).
    let agent = format!("/v1.0/servicePrincipals/{AGENT_EMEA}");
    assert_eq!(
        patch(&fake, &agent, serde_json::json!({"accountEnabled": false})).await,
        204
    );
    assert_eq!(
        patch(
            &fake,
            "/v1.0/servicePrincipals/0b0b0b0b-3333-3333-3333-0000000000ff",
            serde_json::json!({"accountEnabled": false})
        )
        .await,
        404
    );
    let second = next(&mut rx).await;
    assert!(!second.graph.agents[AGENT_EMEA].enabled);
    assert_ne!(second.revision, first.revision);

    // Graph fails from now on: the last good directory stays, then turns stale.
    fake.state
        .inject(FaultTarget::Graph, GraphFault::ServerError, 100_000);
    let stale = next(&mut rx).await;
    assert!(stale.stale);
    assert_eq!(stale.revision, second.revision);
    let status = driver.status();
    assert!(status.ready && status.stale, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("HTTP 500")),
        "{status:?}"
    );
    assert!(status.syncs_failed >= 1);
    assert_eq!(status.on_stale, "refuse_unvouched");
    // refuse_unvouched: only what the local file lists keeps serving as it was.
    let local: DirectoryFile = serde_json::from_value(serde_json::json!({
        "agents": {AGENT_SOUTH_AMERICA: {"display_name": "Sales Assistant - South America", "blueprint": BP_SALES}}
    }))
    .unwrap();
    let served = stale.merge(&local).unwrap();
    assert!(served.file.agents[AGENT_SOUTH_AMERICA].enabled);
    assert!(!served.file.agents[AGENT_LEGACY].enabled);
    assert!(served.file.blueprints[BP_SALES].disabled);
    assert!(
        served
            .provenance(EntityKind::Blueprint, BP_SALES)
            .unwrap()
            .withheld
    );
    assert_eq!(
        served
            .provenance(EntityKind::Agent, AGENT_SOUTH_AMERICA)
            .unwrap()
            .source,
        Source::GraphAndFile
    );
    // The same directory, fresh, merges without withholding.
    assert!(!second.merge(&local).unwrap().file.blueprints[BP_SALES].disabled);

    // Graph recovers: the directory is fresh again.
    fake.state.clear_faults();
    let fresh = next(&mut rx).await;
    assert!(!fresh.stale);
    assert_eq!(fresh.revision, second.revision);
    assert_eq!(driver.status().last_error, None);

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the driver did not stop")
        .unwrap();
}

#[tokio::test]
async fn a_failed_or_partial_sync_never_replaces_the_good_directory() {
    let fake = FakeGraph::start(small_tenant());
    fake.state.set_page_size(2);
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&fake, secret_file(dir.path()));
    c.max_retries = 1;
    c.max_response_bytes = 64 * 1024;
    let driver = SyncDriver::new(&c).unwrap();
    let registry = prometheus::Registry::new();
    driver.metrics().register(&registry).unwrap();

    let (good, changed) = driver.sync_once().await.unwrap();
    assert!(changed);
    let kept = |driver: &SyncDriver| {
        let current = driver.current().unwrap();
        assert_eq!(current.revision, good.revision);
        assert_eq!(current.graph.agents.len(), 3);
    };

    let failures: [(GraphFault, usize, &str); 3] = [
        (GraphFault::Truncated, 2, "gave up after 2 attempts"),
        (
            GraphFault::Oversized(8 * 1024 * 1024),
            1,
            "response larger than 65536 bytes",
        ),
        (GraphFault::Malformed, 1, "invalid response"),
    ];
    for (fault, times, message) in failures {
        fake.state.inject(FaultTarget::Graph, fault, times);
        let err = driver.sync_once().await.unwrap_err();
        assert!(err.to_string().contains(message), "{fault:?}: {err}");
        kept(&driver);
        assert!(driver
            .status()
            .last_error
            .is_some_and(|e| e.contains(message)));
    }

    // The second page of agents holds an object that cannot be used: nothing of the
    // first page is kept either.
    fake.state.edit(|t| {
        t.agents.push(FakeAgent {
            id: "not-a-guid".into(),
            name: "Broken".into(),
            blueprint_app_id: BP_SALES.into(),
            enabled: true,
            disabled_by_microsoft: None,
            sponsors: vec![],
        })
    });
    let err = driver.sync_once().await.unwrap_err();
    assert!(matches!(err, GraphError::Mapping { .. }), "{err}");
    kept(&driver);
    fake.state.edit(|t| {
        t.agents.pop();
    });

    fake.state.inject(
        FaultTarget::Graph,
        GraphFault::Throttle {
            retry_after_secs: 1,
        },
        1,
    );
    let (again, changed) = driver.sync_once().await.unwrap();
    assert!(!changed, "the same directory read again is no change");
    assert_eq!(again.revision, good.revision);

    let status = driver.status();
    assert_eq!((status.syncs_ok, status.syncs_failed), (2, 4));
    assert_eq!(status.throttled, 1);
    assert_eq!(status.objects.agents, 3);
    assert_eq!(status.last_error, None);
    driver.metrics().observe(&status);
    let text = {
        let mut out = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut out,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    };
    for line in [
        "agentgate_directory_syncs_total{result=\"ok\"} 2",
        "agentgate_directory_syncs_total{result=\"error\"} 4",
        "agentgate_directory_objects{kind=\"agents\"} 3",
        "agentgate_directory_objects{kind=\"agent_users\"} 1",
        "agentgate_directory_stale 0",
        "agentgate_graph_throttled_total 1",
        "agentgate_directory_sync_seconds_count 6",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    let age: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("agentgate_directory_age_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((0..10).contains(&age), "{text}");
}
