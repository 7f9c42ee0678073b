//! The directory sync from Microsoft Graph, against the fake Graph on loopback: the client
//! (credentials, paging, throttling, faults), the periodic driver, and the CLI.

mod cli;
mod client;
mod driver;
mod serve;

use crate::support::*;
use agentgate::config::{GraphConfig, GraphCredential, OnStale};
use agentgate::dev::graph::{
    serve_graph_tls, FakeAgent, FakeAgentUser, FakeBlueprint, FakeCredentials, FakeSponsor,
    FakeTenant, GraphState,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const CLIENT_ID: &str = "bbbbbbbb-2222-2222-2222-0000000000c1";
pub const SECRET: &str = "gr4ph-s3cret-Vq9-not-for-logs";
pub const FEDERATED: &str = "eyJhbGciOiJSUzI1NiJ9.federated-token-one.c2lnbmF0dXJl";
pub const AGENT_NEW: &str = "dddddddd-4444-4444-4444-0000000000a1";

/// The certificate the fake Graph serves (from the test CA the issuer's chains to too).
fn graph_certificate() -> &'static agentgate::dev::tls::IssuedCert {
    static CERT: std::sync::OnceLock<agentgate::dev::tls::IssuedCert> = std::sync::OnceLock::new();
    CERT.get_or_init(|| issuer_ca().issue(&["127.0.0.1", "localhost"]).unwrap())
}

/// The fake Graph, over HTTPS, on a thread and runtime of its own, so tests may drive it from inside
/// their own runtime; stopped on drop.
pub struct FakeGraph {
    pub state: Arc<GraphState>,
    pub url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FakeGraph {
    pub fn start(tenant: FakeTenant) -> FakeGraph {
        let (ready, started) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let state = GraphState::new(
                    listener.local_addr().unwrap(),
                    TENANT_A,
                    credentials(),
                    tenant,
                )
                .unwrap();
                ready.send(state.clone()).unwrap();
                let tls = graph_certificate().server_config(None).unwrap();
                tokio::select! {
                    _ = serve_graph_tls(listener, tls, state) => {}
                    _ = stopped => {}
                }
            });
        });
        let state = started.recv().unwrap();
        FakeGraph {
            url: format!("https://{}", state.addr),
            state,
            _stop: stop,
        }
    }

    /// Requests whose path contains `needle`.
    pub fn requests_to(&self, needle: &str) -> Vec<agentgate::dev::graph::RecordedRequest> {
        self.state
            .requests()
            .into_iter()
            .filter(|r| r.path.contains(needle))
            .collect()
    }
}

/// Every credential kind the fake accepts.
pub fn credentials() -> FakeCredentials {
    FakeCredentials {
        client_id: CLIENT_ID.into(),
        client_secret: Some(SECRET.into()),
        certificate_pem: Some(
            std::fs::read(repo().join("tests/data/graph/client-cert.pem")).unwrap(),
        ),
        federated_token: Some(FEDERATED.into()),
    }
}

fn sponsor(id: &str, name: &str) -> FakeSponsor {
    FakeSponsor {
        id: id.into(),
        odata_type: "#microsoft.graph.user".into(),
        name: name.into(),
    }
}

/// A small tenant: the Sales blueprint (enabled) and the Legacy one (disabled), three
/// agents, one agent user, and risk on one agent.
pub fn small_tenant() -> FakeTenant {
    let mut t = FakeTenant::default();
    for (app_id, name, enabled) in [
        (BP_SALES, "Sales Assistant Agent", true),
        (BP_LEGACY, "Legacy Research Agent", false),
    ] {
        t.blueprints.push(FakeBlueprint {
            object_id: agentgate::dev::graph::principal_id(app_id),
            app_id: app_id.into(),
            name: name.into(),
            enabled,
            publisher: Some("Contoso".into()),
            home_tenant: Some(TENANT_A.into()),
            disabled_by_microsoft: None,
        });
    }
    for (id, name, bp) in [
        (AGENT_EMEA, "Sales Assistant - EMEA", BP_SALES),
        (
            AGENT_SOUTH_AMERICA,
            "Sales Assistant - South America",
            BP_SALES,
        ),
        (AGENT_LEGACY, "Research Crawler", BP_LEGACY),
    ] {
        t.agents.push(FakeAgent {
            id: id.into(),
            name: name.into(),
            blueprint_app_id: bp.into(),
            enabled: true,
            disabled_by_microsoft: None,
            sponsors: vec![sponsor(
                "ffffffff-6666-6666-6666-0000000000a1",
                "Dana Whitfield",
            )],
        });
    }
    t.agent_users.push(FakeAgentUser {
        id: AGENT_USER_EMEA.into(),
        name: "Sales Assistant - EMEA (user)".into(),
        user_principal_name: "emea-agent@contoso.example".into(),
        parent: AGENT_EMEA.into(),
        enabled: true,
    });
    t.risk
        .insert(AGENT_SOUTH_AMERICA.into(), ("high".into(), "atRisk".into()));
    t
}

/// A Graph section for `fake` with short timeouts, authenticating with `credential`.
pub fn config(fake: &FakeGraph, credential: GraphCredential) -> GraphConfig {
    GraphConfig {
        tenant: TENANT_A.into(),
        client_id: CLIENT_ID.into(),
        credential,
        authority: fake.url.clone(),
        graph_url: fake.url.clone(),
        ca_file: Some(ca_file()),
        interval: Duration::from_secs(60),
        max_age: Duration::from_secs(3600),
        on_stale: OnStale::KeepServing,
        timeout: Duration::from_secs(2),
        sync_timeout: Duration::from_secs(20),
        max_response_bytes: 1024 * 1024,
        max_retries: 2,
        page_size: 999,
        read_risk: true,
    }
}

/// A file holding the test CA that the fake Graph's certificate chains to.
pub fn ca_file() -> PathBuf {
    static FILE: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph-ca.pem");
        std::fs::write(&path, &issuer_ca().cert_pem).unwrap();
        (dir, path)
    })
    .1
    .clone()
}

/// A client secret file holding [`SECRET`] in `dir`.
pub fn secret_file(dir: &std::path::Path) -> GraphCredential {
    let path: PathBuf = dir.join("graph-secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    GraphCredential::ClientSecretFile(path)
}

/// The test CA, for HTTP clients that talk to the fake directly.
pub fn test_ca_certificate() -> reqwest::Certificate {
    reqwest::Certificate::from_pem(issuer_ca().cert_pem.as_bytes()).unwrap()
}
