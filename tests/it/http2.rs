//! HTTP/2 downstream: `h2` by ALPN on TLS listeners and h2c with prior knowledge on plain
//! ones, decided exactly as HTTP/1.1 is, with the same header hygiene and limits.

use crate::support::*;
use agentgate::dev::tls::TestCa;
use agentgate::identity::CallerKind;
use std::time::Duration;

/// A TLS gateway with a certificate for localhost from `ca`.
fn tls_gateway(servers: &Servers, ca: &TestCa, dir: &std::path::Path) -> Gateway {
    let (cert, key) = ca
        .issue(&["localhost", "127.0.0.1"])
        .unwrap()
        .write(dir, "server")
        .unwrap();
    Gateway::start(
        servers,
        GatewaySpec {
            listener_tls: Some(format!(
                "{{ certificates = [{{ cert = {cert:?}, key = {key:?} }}] }}"
            )),
            ..Default::default()
        },
    )
}

fn https_client(ca: &TestCa, http2: bool) -> reqwest::blocking::Client {
    let b = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10));
    let b = if http2 { b } else { b.http1_only() };
    b.build().unwrap()
}

fn h2c_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A GET through `client` with `token` and `headers`; the reply and its HTTP version.
fn call(
    gw: &Gateway,
    client: &reqwest::blocking::Client,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> (Reply, reqwest::Version) {
    let mut req = client.get(format!("{}{path}", gw.base));
    if let Some(t) = token {
        gw.sent(t);
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().unwrap();
    let version = resp.version();
    (Reply::from(resp), version)
}

fn kinds() -> [CallerKind; 6] {
    [
        CallerKind::AgentApp,
        CallerKind::AgentObo,
        CallerKind::AgentUser,
        CallerKind::App,
        CallerKind::User,
        CallerKind::AppOboAgentUser,
    ]
}

#[test]
fn h2_over_tls_decides_every_caller_kind_exactly_as_http1() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = tls_gateway(&servers, &ca, dir.path());
    gw.base = gw.base.replace("127.0.0.1", "localhost");
    let (h1, h2) = (https_client(&ca, false), https_client(&ca, true));
    for kind in kinds() {
        let token = mint(&key, &spec(kind));
        for path in ["/orders/1", "/crm/1", "/orders/../admin"] {
            let (a, va) = call(&gw, &h1, path, Some(&token), &[]);
            let (b, vb) = call(&gw, &h2, path, Some(&token), &[]);
            assert_eq!(va, reqwest::Version::HTTP_11);
            assert_eq!(vb, reqwest::Version::HTTP_2, "ALPN must pick h2");
            assert_eq!(
                (a.status, a.reason()),
                (b.status, b.reason()),
                "{kind:?} {path}: HTTP/1.1 {:?} vs h2 {:?}",
                a.body,
                b.body
            );
            if a.status == 200 {
                for header in ["x-agentgate-caller-kind", "x-agentgate-client-id", "host"] {
                    assert_eq!(
                        a.upstream_header(header),
                        b.upstream_header(header),
                        "{header}"
                    );
                }
            }
        }
    }
}

#[test]
fn h2c_applies_the_same_checks_and_outlives_the_header_deadline() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            server_extra: "h2c = true\nheader_read_timeout = \"1s\"\nmax_header_bytes = 8192"
                .into(),
            ..Default::default()
        },
    );
    let client = h2c_client();
    let token = mint(&key, &spec(CallerKind::AgentApp));

    // Allowed, with spoofed identity headers stripped (also in their `_` spelling).
    let (r, version) = call(
        &gw,
        &client,
        "/orders/1",
        Some(&token),
        &[
            ("x-agentgate-user-oid", "spoofed"),
            ("x_agentgate_user_oid", "spoofed"),
            ("x-original-url", "/admin"),
        ],
    );
    assert_eq!(version, reqwest::Version::HTTP_2);
    r.assert_allowed();
    assert_eq!(r.upstream_header("x-agentgate-user-oid"), None);
    assert_eq!(r.upstream_header("x_agentgate_user_oid"), None);
    assert_eq!(r.upstream_header("x-original-url"), None);
    assert_eq!(
        r.upstream_header("x-agentgate-caller-kind"),
        Some("agent_app")
    );

    // The path discipline, the token and the routes, as on HTTP/1.1.
    call(&gw, &client, "/orders/..;/admin", Some(&token), &[])
        .0
        .assert_denied(400, "invalid_path");
    let (r, _) = call(&gw, &client, "/orders/1", None, &[]);
    r.assert_denied(401, "missing_token");
    assert_eq!(r.www_authenticate(), "Bearer realm=\"agentgate\"");
    call(&gw, &client, "/nowhere", Some(&token), &[])
        .0
        .assert_denied(404, "no_route");

    // A header list over max_header_bytes never reaches the decision.
    let big = "a".repeat(9000);
    let refused = client
        .get(format!("{}/orders/1", gw.base))
        .bearer_auth(&token)
        .header("x-big", big)
        .send();
    // The HTTP/2 layer itself answers (its header list limit is max_header_bytes), before
    // any decision: 431 with no body.
    let refused = Reply::from(refused.unwrap());
    assert_eq!(
        (refused.status, refused.reason()),
        (431, ""),
        "{:?}",
        refused.body
    );

    // The same h2c connection, idle past header_read_timeout, still serves: the HTTP/1
    // header deadline does not apply to HTTP/2 frames.
    drop(client);
    let client = h2c_client();
    call(&gw, &client, "/orders/1", Some(&token), &[])
        .0
        .assert_allowed();
    let listener = gw.base.trim_start_matches("http://").to_string();
    let open = || {
        metric(
            &gw.metrics(),
            &format!("agentgate_connections_open{{listener=\"{listener}\"}}"),
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while open() != 1.0 {
        assert!(std::time::Instant::now() < deadline, "open: {}", open());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(open(), 1.0, "the idle h2c connection was cut");
    call(&gw, &client, "/orders/1", Some(&token), &[])
        .0
        .assert_allowed();
}
