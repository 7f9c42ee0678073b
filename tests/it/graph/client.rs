//! The Graph client and reader against the fake Graph: paging, throttling, faults, token
//! endpoint checks and every credential kind.

use super::*;
use agentgate::config::GraphCredential;
use agentgate::dev::graph::{FaultTarget, GraphFault, RecordedRequest, Synthetic};
use agentgate::directory::{Risk, RiskState};
use agentgate::graph::credential::{certificate_thumbprint_s256, AssertionClaims};
use agentgate::graph::{read_directory, Deadline, GraphClient, GraphDirectory, GraphError};
use std::time::Instant;

async fn read(client: &GraphClient) -> Result<GraphDirectory, GraphError> {
    read_directory(
        client,
        TENANT_A,
        true,
        Deadline::after(Duration::from_secs(20)),
    )
    .await
}

fn graph_gets(fake: &FakeGraph) -> Vec<RecordedRequest> {
    fake.state
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect()
}

fn client_with(
    fake: &FakeGraph,
    edit: impl FnOnce(&mut GraphConfig),
) -> (GraphClient, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(fake, secret_file(dir.path()));
    edit(&mut c);
    (GraphClient::new(&c).unwrap(), dir)
}

#[tokio::test]
async fn paging_follows_next_links_over_at_least_three_pages() {
    let mut tenant = small_tenant();
    tenant.synthetic = Some(Synthetic {
        blueprints: 2,
        agents_per_blueprint: 5,
        agent_user_every: 2,
        risky_every: 0,
    });
    let fake = FakeGraph::start(tenant);
    fake.state.set_page_size(3);
    let (client, _dir) = client_with(&fake, |_| {});
    let g = read(&client).await.unwrap();

    assert_eq!(g.counts.blueprints, 4);
    assert_eq!(g.counts.agents, 13);
    assert_eq!(g.counts.agent_users, 6);
    assert_eq!(g.file.agents.len(), 13);
    assert!(g
        .file
        .agents
        .contains_key("dddddddd-0000-4000-8000-000000000009"));
    let pages = fake.requests_to("microsoft.graph.agentIdentity?");
    assert_eq!(pages.len(), 5, "{pages:#?}");
    assert!(pages[0].path.contains("$top=999") && !pages[0].path.contains("$skiptoken"));
    for (page, skip) in pages[1..].iter().zip([3, 6, 9, 12]) {
        assert!(
            page.path.ends_with(&format!("$skiptoken={skip}")),
            "{}",
            page.path
        );
        assert!(
            page.path
                .contains("$expand=sponsors($select=id,displayName)"),
            "{}",
            page.path
        );
    }

    // The mapping, end to end.
    let emea = &g.file.agents[AGENT_EMEA];
    assert_eq!(emea.agent_user.as_deref(), Some(AGENT_USER_EMEA));
    assert_eq!(emea.blueprint, BP_SALES);
    assert_eq!(emea.tenant.as_deref(), Some(TENANT_A));
    assert_eq!(emea.sponsors.len(), 1);
    let risky = &g.file.agents[AGENT_SOUTH_AMERICA];
    assert_eq!(
        (risky.risk, risky.risk_state),
        (Risk::High, RiskState::AtRisk)
    );
    assert!(g.file.blueprints[BP_LEGACY].disabled);
    assert!(!g.file.blueprints[BP_SALES].disabled);
    let prefer = fake.requests_to("/beta/identityProtection/riskyAgents");
    assert_eq!(prefer.len(), 1);
}

#[tokio::test]
async fn a_next_link_off_the_graph_origin_is_refused() {
    let fake = FakeGraph::start(small_tenant());
    fake.state
        .inject(FaultTarget::Graph, GraphFault::ForeignNextLink, 1);
    let (client, _dir) = client_with(&fake, |_| {});
    let err = read(&client).await.unwrap_err();
    assert!(matches!(err, GraphError::ForeignNextLink { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("leaves the Graph origin https://127.0.0.1"),
        "{err}"
    );
    assert!(
        err.to_string().contains("http://graph.attacker.invalid"),
        "{err}"
    );
    assert_eq!(graph_gets(&fake).len(), 1);
}

#[tokio::test]
async fn throttling_waits_at_least_retry_after_before_the_next_request() {
    let fake = FakeGraph::start(small_tenant());
    fake.state.inject(
        FaultTarget::Graph,
        GraphFault::Throttle {
            retry_after_secs: 1,
        },
        1,
    );
    fake.state.inject(
        FaultTarget::Graph,
        GraphFault::Unavailable {
            retry_after_secs: 1,
        },
        1,
    );
    let (client, _dir) = client_with(&fake, |_| {});
    read(&client).await.unwrap();

    let gets = graph_gets(&fake);
    let statuses: Vec<u16> = gets.iter().take(3).map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 503, 200]);
    for pair in gets[..3].windows(2) {
        let waited = pair[1].at.duration_since(pair[0].at);
        assert!(
            waited >= Duration::from_secs(1),
            "a request came {waited:?} after a Retry-After: 1 answer"
        );
    }
    assert_eq!(client.throttled_total(), 2);
}

#[tokio::test]
async fn a_retry_after_past_the_sync_deadline_fails_without_another_request() {
    let fake = FakeGraph::start(small_tenant());
    fake.state.inject(
        FaultTarget::Graph,
        GraphFault::Throttle {
            retry_after_secs: 30,
        },
        1,
    );
    let (client, _dir) = client_with(&fake, |_| {});
    let started = Instant::now();
    let err = read_directory(
        &client,
        TENANT_A,
        true,
        Deadline::after(Duration::from_secs(3)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            GraphError::Throttled {
                status: 429,
                reason: "past the sync deadline",
                ..
            }
        ),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(graph_gets(&fake).len(), 1);
}

#[tokio::test]
async fn a_server_error_is_retried_and_persistent_ones_fail_the_read() {
    let fake = FakeGraph::start(small_tenant());
    fake.state
        .inject(FaultTarget::Graph, GraphFault::ServerError, 1);
    let (client, _dir) = client_with(&fake, |c| c.max_retries = 2);
    read(&client).await.unwrap();
    let statuses: Vec<u16> = graph_gets(&fake).iter().take(2).map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 200]);

    fake.state
        .inject(FaultTarget::Graph, GraphFault::ServerError, 3);
    let before = graph_gets(&fake).len();
    let err = read(&client).await.unwrap_err();
    match &err {
        GraphError::RetriesExhausted { attempts: 3, last } => {
            assert!(
                matches!(**last, GraphError::Status { status: 500, .. }),
                "{last}"
            )
        }
        other => panic!("expected retries exhausted, got {other}"),
    }
    assert_eq!(graph_gets(&fake).len() - before, 3);
    // The faults are spent: the next read recovers.
    read(&client).await.unwrap();
}

#[tokio::test]
async fn truncated_bodies_are_refused() {
    let fake = FakeGraph::start(small_tenant());
    fake.state
        .inject(FaultTarget::Graph, GraphFault::Truncated, 2);
    let (client, _dir) = client_with(&fake, |c| c.max_retries = 1);
    let err = read(&client).await.unwrap_err();
    match &err {
        GraphError::RetriesExhausted { attempts: 2, last } => {
            assert!(matches!(**last, GraphError::Transport { .. }), "{last}")
        }
        other => panic!("expected a broken transfer, got {other}"),
    }
    read(&client).await.unwrap();
}

#[tokio::test]
async fn oversized_bodies_are_refused_while_they_stream_and_when_declared() {
    let fake = FakeGraph::start(small_tenant());
    // 256 MiB, chunked (no Content-Length): only the cap stops the read.
    fake.state.inject(
        FaultTarget::Graph,
        GraphFault::Oversized(256 * 1024 * 1024),
        1,
    );
    let (client, _dir) = client_with(&fake, |c| c.max_response_bytes = 64 * 1024);
    let err = read(&client).await.unwrap_err();
    assert!(
        matches!(err, GraphError::TooLarge { limit: 65536, .. }),
        "{err}"
    );
    assert_eq!(
        graph_gets(&fake).len(),
        1,
        "an oversized answer is not retried"
    );

    // A page whose declared length exceeds the cap.
    let mut big = small_tenant();
    big.synthetic = Some(Synthetic {
        blueprints: 1,
        agents_per_blueprint: 400,
        agent_user_every: 0,
        risky_every: 0,
    });
    let fake = FakeGraph::start(big);
    let (client, _dir) = client_with(&fake, |c| c.max_response_bytes = 16 * 1024);
    let err = read(&client).await.unwrap_err();
    assert!(
        err.to_string().contains("response larger than 16384 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn a_slow_answer_is_bounded_by_the_request_timeout_and_the_sync_deadline() {
    let fake = FakeGraph::start(small_tenant());
    fake.state.inject(
        FaultTarget::Graph,
        GraphFault::Slow(Duration::from_secs(10)),
        2,
    );
    let (client, _dir) = client_with(&fake, |c| {
        c.timeout = Duration::from_millis(300);
        c.max_retries = 1;
    });
    let started = Instant::now();
    let err = read(&client).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        err.to_string().contains("no complete answer within 300ms"),
        "{err}"
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    fake.state.clear_faults();
    fake.state.inject(
        FaultTarget::Graph,
        GraphFault::Slow(Duration::from_secs(10)),
        5,
    );
    let (client, _dir) = client_with(&fake, |c| c.timeout = Duration::from_secs(5));
    let started = Instant::now();
    let err = read_directory(
        &client,
        TENANT_A,
        true,
        Deadline::after(Duration::from_secs(1)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, GraphError::Deadline { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Posts a client assertion to the fake's token endpoint: (status, Entra error description).
fn post_assertion(fake: &FakeGraph, assertion: &str) -> (u16, String) {
    let body = form_body(&[
        ("client_id", CLIENT_ID),
        ("scope", &format!("{}/.default", fake.url)),
        ("grant_type", "client_credentials"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion),
    ]);
    let r = reqwest::blocking::Client::builder()
        .tls_certs_merge([test_ca_certificate()])
        .build()
        .unwrap()
        .post(format!("{}/{TENANT_A}/oauth2/v2.0/token", fake.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().unwrap();
    (
        status,
        v["error_description"].as_str().unwrap_or("").to_string(),
    )
}

fn form_body(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                            (b as char).to_string()
                        }
                        _ => format!("%{b:02X}"),
                    })
                    .collect::<String>()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn assertion(
    fake: &FakeGraph,
    key: &str,
    edit: impl FnOnce(&mut AssertionClaims, &mut jsonwebtoken::Header),
) -> String {
    let cert = std::fs::read(repo().join("tests/data/graph/client-cert.pem")).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.x5t_s256 = Some(certificate_thumbprint_s256(&cert).unwrap());
    let t = now();
    let mut claims = AssertionClaims {
        aud: format!("{}/{TENANT_A}/oauth2/v2.0/token", fake.url),
        iss: CLIENT_ID.into(),
        sub: CLIENT_ID.into(),
        jti: "a1b2c3".into(),
        nbf: t,
        iat: t,
        exp: t + 300,
    };
    edit(&mut claims, &mut header);
    let pem = std::fs::read(repo().join(format!("tests/data/keys/{key}.pem"))).unwrap();
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

#[test]
fn the_token_endpoint_checks_the_client_assertion() {
    let fake = FakeGraph::start(small_tenant());
    assert_eq!(
        post_assertion(&fake, &assertion(&fake, "primary", |_, _| {})).0,
        200
    );

    let refused = [
        (
            "signed by another key",
            assertion(&fake, "rotated", |_, _| {}),
        ),
        (
            "expired",
            assertion(&fake, "primary", |c, _| c.exp = now() - 10),
        ),
        (
            "not yet valid",
            assertion(&fake, "primary", |c, _| c.nbf = now() + 600),
        ),
        (
            "for another audience",
            assertion(&fake, "primary", |c, _| {
                c.aud = "https://login.microsoftonline.com/x/oauth2/v2.0/token".into()
            }),
        ),
        (
            "from another issuer",
            assertion(&fake, "primary", |c, _| c.iss = "someone-else".into()),
        ),
        (
            "about another subject",
            assertion(&fake, "primary", |c, _| c.sub = "someone-else".into()),
        ),
        (
            "naming no certificate",
            assertion(&fake, "primary", |_, h| h.x5t_s256 = None),
        ),
    ];
    for (what, a) in refused {
        let (status, description) = post_assertion(&fake, &a);
        assert_eq!(status, 401, "an assertion {what} was accepted");
        assert!(description.starts_with("AADSTS"), "{what}: {description}");
    }
    assert_eq!(post_assertion(&fake, "not-a-jwt").0, 401);
}

#[tokio::test]
async fn every_credential_kind_obtains_a_token() {
    let fake = FakeGraph::start(small_tenant());
    let dir = tempfile::tempdir().unwrap();
    let federated = dir.path().join("federated-token");
    std::fs::write(&federated, FEDERATED).unwrap();
    let env = "AGENTGATE_TEST_GRAPH_SECRET_KINDS";
    std::env::set_var(env, SECRET);
    let kinds = [
        secret_file(dir.path()),
        GraphCredential::ClientSecretEnv(env.into()),
        GraphCredential::Certificate {
            certificate_file: repo().join("tests/data/graph/client-cert.pem"),
            private_key_file: repo().join("tests/data/keys/primary.pem"),
        },
        GraphCredential::FederatedTokenFile(federated),
    ];
    for credential in kinds {
        let client = GraphClient::new(&config(&fake, credential.clone())).unwrap();
        let g = read(&client)
            .await
            .unwrap_or_else(|e| panic!("{credential:?}: {e}"));
        assert_eq!(g.counts.agents, 3);
        assert_eq!(client.tokens_fetched(), 1, "{credential:?}");
    }
    let received = fake.state.received_credentials();
    assert_eq!(received.len(), 4);
    assert_eq!(received[0], SECRET);
    assert_eq!(received[1], SECRET);
    assert_eq!(received[2].split('.').count(), 3, "a signed assertion");
    assert_eq!(received[3], FEDERATED);
}

#[tokio::test]
async fn refused_credentials_are_reported_without_the_secret() {
    let fake = FakeGraph::start(small_tenant());
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-secret");
    std::fs::write(&wrong, "wr0ng-s3cret-Zz8-").unwrap();
    let client =
        GraphClient::new(&config(&fake, GraphCredential::ClientSecretFile(wrong))).unwrap();
    let err = read(&client).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        matches!(&err, GraphError::TokenRefused { status: 401, code, description, .. }
            if code == "invalid_client" && description.starts_with("AADSTS7000215")),
        "{text}"
    );
    assert!(!text.contains("wr0ng-s3cret"), "{text}");

    // A certificate the app registration does not know.
    let client = GraphClient::new(&config(
        &fake,
        GraphCredential::Certificate {
            certificate_file: repo().join("tests/data/graph/unregistered-cert.pem"),
            private_key_file: repo().join("tests/data/keys/rotated.pem"),
        },
    ))
    .unwrap();
    let err = read(&client).await.unwrap_err();
    assert!(
        matches!(&err, GraphError::TokenRefused { code, .. } if code == "invalid_client"),
        "{err}"
    );

    // A key that does not belong to the certificate is refused before any request.
    let err = GraphClient::new(&config(
        &fake,
        GraphCredential::Certificate {
            certificate_file: repo().join("tests/data/graph/client-cert.pem"),
            private_key_file: repo().join("tests/data/keys/rotated.pem"),
        },
    ))
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("does not belong to the certificate"),
        "{err}"
    );
    let err = GraphClient::new(&config(
        &fake,
        GraphCredential::ClientSecretEnv("AGENTGATE_TEST_GRAPH_UNSET".into()),
    ))
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("AGENTGATE_TEST_GRAPH_UNSET is not set"),
        "{err}"
    );
}

#[tokio::test]
async fn the_federated_token_file_is_read_at_every_token_request() {
    let fake = FakeGraph::start(small_tenant());
    fake.state.set_token_lifetime(2);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, FEDERATED).unwrap();
    let client = GraphClient::new(&config(
        &fake,
        GraphCredential::FederatedTokenFile(file.clone()),
    ))
    .unwrap();
    read(&client).await.unwrap();

    // The kubelet rotates the file; Entra only accepts the new token from now on.
    let rotated = "eyJhbGciOiJSUzI1NiJ9.federated-token-two.c2lnbmF0dXJl";
    std::fs::write(&file, rotated).unwrap();
    fake.state.set_federated_token(Some(rotated));
    // Tokens are refreshed at half their lifetime (here 1 s).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    read(&client).await.unwrap();
    assert_eq!(fake.state.received_credentials(), vec![FEDERATED, rotated]);
    assert_eq!(client.tokens_fetched(), 2);
}

#[tokio::test]
async fn the_access_token_is_cached_and_replaced_after_a_401() {
    let fake = FakeGraph::start(small_tenant());
    let (client, _dir) = client_with(&fake, |_| {});
    read(&client).await.unwrap();
    read(&client).await.unwrap();
    assert_eq!(fake.requests_to("/oauth2/v2.0/token").len(), 1);

    fake.state.revoke_tokens();
    let before = fake.state.requests().len();
    read(&client).await.unwrap();
    assert_eq!(client.tokens_fetched(), 2);
    let after: Vec<(bool, u16)> = fake.state.requests()[before..]
        .iter()
        .map(|r| (r.path.contains("/token"), r.status))
        .collect();
    // 401, a new token, then the four collections.
    assert_eq!(
        after,
        [
            (false, 401),
            (true, 200),
            (false, 200),
            (false, 200),
            (false, 200),
            (false, 200)
        ],
        "{after:?}"
    );
}

#[tokio::test]
async fn sponsors_past_the_expansion_limit_are_read_from_the_sponsor_list() {
    let mut tenant = small_tenant();
    tenant.agents[0].sponsors = (0..25)
        .map(|i| FakeSponsor {
            id: format!("ffffffff-6666-6666-6666-{i:012}"),
            odata_type: if i % 2 == 0 {
                "#microsoft.graph.user".into()
            } else {
                "#microsoft.graph.group".into()
            },
            name: format!("Sponsor {i}"),
        })
        .collect();
    let fake = FakeGraph::start(tenant);
    fake.state.set_page_size(10);
    let (client, _dir) = client_with(&fake, |_| {});
    let g = read(&client).await.unwrap();
    assert_eq!(g.file.agents[AGENT_EMEA].sponsors.len(), 25);
    assert_eq!(g.file.agents[AGENT_SOUTH_AMERICA].sponsors.len(), 1);
    let lists = fake.requests_to(&format!(
        "/servicePrincipals/{AGENT_EMEA}/microsoft.graph.agentIdentity/sponsors"
    ));
    assert_eq!(lists.len(), 3, "25 sponsors in pages of 10");
}

#[tokio::test]
async fn an_extra_ca_file_is_trusted_for_https() {
    let fake = FakeGraph::start(small_tenant());
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&fake, secret_file(dir.path()));
    c.max_retries = 0;
    c.ca_file = None;

    let untrusted = GraphClient::new(&c).unwrap();
    let err = read(&untrusted).await.unwrap_err();
    assert!(
        err.to_string().to_ascii_lowercase().contains("certificate"),
        "{err}"
    );

    c.ca_file = Some(ca_file());
    let trusted = GraphClient::new(&c).unwrap();
    let g = read(&trusted).await.unwrap();
    assert_eq!(g.counts.agents, 3);

    c.ca_file = Some(
        repo()
            .join("tests/data/graph/client-cert.pem")
            .with_extension("missing"),
    );
    let err = GraphClient::new(&c).err().unwrap();
    assert!(err.to_string().contains("cannot read ca_file"), "{err}");
}

/// The demo serves the shipped directory from the fake: what Graph then says matches it.
#[tokio::test]
async fn a_fake_tenant_built_from_the_shipped_directory_reads_back_alike() {
    let path = repo().join("policies/data/directory.json");
    let shipped =
        agentgate::directory::DirectoryFile::parse(&std::fs::read_to_string(&path).unwrap(), &path)
            .unwrap();
    let fake = FakeGraph::start(agentgate::dev::graph::FakeTenant::from_directory(&shipped));
    let (client, _dir) = client_with(&fake, |_| {});
    let g = read(&client).await.unwrap();
    assert_eq!(g.file.blueprints.len(), shipped.blueprints.len());
    assert_eq!(g.file.agents.len(), shipped.agents.len());
    for (id, b) in &shipped.blueprints {
        let read = &g.file.blueprints[id];
        assert_eq!(
            (read.disabled, read.risk, read.name.as_str()),
            (b.disabled, b.risk, b.name.as_str()),
            "{id}"
        );
    }
    for (id, a) in &shipped.agents {
        let read = &g.file.agents[id];
        assert_eq!(
            (
                read.enabled,
                read.risk,
                &read.blueprint,
                &read.agent_user,
                &read.sponsors
            ),
            (a.enabled, a.risk, &a.blueprint, &a.agent_user, &a.sponsors),
            "{id}"
        );
    }
    assert_eq!(g.file.agent_users[AGENT_USER_EMEA].parent_agent, AGENT_EMEA);
    // The fake's principal ids lead risk to the blueprint.
    assert_eq!(
        agentgate::dev::graph::principal_id(BP_SALES),
        "0b0b0b0b-3333-3333-3333-000000000001"
    );
}
