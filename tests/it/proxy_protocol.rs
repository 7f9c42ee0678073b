//! The PROXY protocol behind TCP load balancers: on a listener with `proxy_protocol = true`
//! the client the header names is the client everywhere (policy, forwarding headers,
//! decision log), on plain and TLS listeners; a connection without a header is closed.

use crate::support::*;
use agentgate::dev::tls::TestCa;
use agentgate::identity::CallerKind;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

/// The shipped access data, with the sales blueprint held to loopback and 10/8.
fn located_access() -> Value {
    let mut access: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("policies/data/access.json")).unwrap(),
    )
    .unwrap();
    access["blueprints"][BP_SALES]["locations"] = json!(["loopback", "corp_network"]);
    access
}

fn v2_header(client: &str) -> Vec<u8> {
    let client: SocketAddr = client.parse().unwrap();
    let local: SocketAddr = "10.0.0.1:443".parse().unwrap();
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (client, local),
    )
    .build()
    .unwrap()
}

fn request(token: &str, extra: &str) -> String {
    format!(
        "GET /orders/1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n{extra}Connection: close\r\n\r\n"
    )
}

/// The status and JSON body of a raw HTTP/1.1 answer (`None` when the connection closed
/// without one).
fn parse(answer: &[u8]) -> Option<(u16, Value)> {
    let text = String::from_utf8_lossy(answer);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// The client address of each decision line.
fn clients(decisions: &[Value]) -> Vec<&str> {
    decisions
        .iter()
        .filter_map(|d| d["client_ip"].as_str())
        .collect()
}

/// Writes `prefix` and `request` on one plain connection and reads the answer.
fn plain_call(gw: &Gateway, prefix: &[u8], request: &str) -> Option<(u16, Value)> {
    plain_call_from(gw, "127.0.0.1", prefix, request)
}

/// As `plain_call`, connecting from the local address `from`.
fn plain_call_from(gw: &Gateway, from: &str, prefix: &[u8], request: &str) -> Option<(u16, Value)> {
    let addr: SocketAddr = gw.base.trim_start_matches("http://").parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut tcp = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap().into_std().unwrap()
    });
    tcp.set_nonblocking(false).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // The gateway may close a refused connection before the request is written.
    let _ = tcp
        .write_all(prefix)
        .and_then(|()| tcp.write_all(request.as_bytes()));
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    parse(&answer)
}

#[test]
fn a_proxy_header_names_the_client_on_a_plain_listener() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            listener_extra: "proxy_protocol = true".into(),
            data: vec![("access.json", located_access())],
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.sent(&token);

    // Version 1 from the corporate network: allowed, and the upstream is told who called.
    let (status, body) = plain_call(
        &gw,
        b"PROXY TCP4 10.1.2.3 10.0.0.1 51000 443\r\n",
        &request(&token, ""),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"]["x-forwarded-for"], "10.1.2.3");
    assert_eq!(body["headers"]["forwarded"], "for=10.1.2.3;proto=http");

    // Version 2 from the internet, with a spoofed X-Forwarded-For: the location rule
    // refuses the real client.
    let (status, body) = plain_call(
        &gw,
        &v2_header("203.0.113.7:40000"),
        &request(&token, "X-Forwarded-For: 10.9.9.9\r\n"),
    )
    .unwrap();
    assert_eq!(
        (status, body["reason"].as_str()),
        (403, Some("location_denied"))
    );

    // No header: closed without an answer, and counted (the harness's own readiness
    // probes, plain connects, count too: compare before and after).
    let refused = |gw: &Gateway| {
        metric(
            &gw.metrics(),
            "agentgate_connections_refused_total{limit=\"proxy_protocol\"",
        )
    };
    let before = refused(&gw);
    assert_eq!(plain_call(&gw, b"", &request(&token, "")), None);
    assert_eq!(refused(&gw), before + 1.0);

    let decisions = gw.wait_decisions(2);
    assert_eq!(
        clients(&decisions),
        ["10.1.2.3", "203.0.113.7"],
        "{decisions:?}"
    );
}

#[test]
fn a_proxy_header_before_the_tls_handshake_names_the_client() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, cert_key) = ca
        .issue(&["localhost"])
        .unwrap()
        .write(dir.path(), "server")
        .unwrap();
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            listener_tls: Some(format!(
                "{{ certificates = [{{ cert = {cert:?}, key = {cert_key:?} }}] }}"
            )),
            listener_extra: "proxy_protocol = true".into(),
            data: vec![("access.json", located_access())],
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.sent(&token);
    let addr = gw.base.trim_start_matches("https://").to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let call = |header: Vec<u8>| {
        rt.block_on(async {
            use rustls::pki_types::pem::PemObject;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            agentgate::tls::install_default_provider();
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(
                    rustls::pki_types::CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())
                        .unwrap(),
                )
                .unwrap();
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            tcp.write_all(&header).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await?;
            tls.write_all(request(&token, "").as_bytes()).await?;
            let mut answer = Vec::new();
            let _ = tls.read_to_end(&mut answer).await;
            Ok::<_, std::io::Error>(parse(&answer))
        })
    };
    let (status, body) = call(b"PROXY TCP4 10.1.2.3 10.0.0.1 51000 443\r\n".to_vec())
        .unwrap()
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"]["x-forwarded-for"], "10.1.2.3");
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    let (status, body) = call(v2_header("203.0.113.7:40000")).unwrap().unwrap();
    assert_eq!(
        (status, body["reason"].as_str()),
        (403, Some("location_denied"))
    );
    // Without a header the handshake never starts: the connection is closed.
    assert!(call(Vec::new()).is_err());
    let decisions = gw.wait_decisions(2);
    assert_eq!(
        clients(&decisions),
        ["10.1.2.3", "203.0.113.7"],
        "{decisions:?}"
    );
}

#[test]
fn only_trusted_peers_may_send_a_header_and_a_silent_one_is_cut_off() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            listener_extra: "proxy_protocol = true".into(),
            server_extra: "trusted_proxies = [\"127.0.0.2/32\"]\nheader_read_timeout = \"1s\""
                .into(),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.sent(&token);
    let header = b"PROXY TCP4 10.1.2.3 10.0.0.1 51000 443\r\n";
    // The balancer (trusted) is believed.
    let (status, body) = plain_call_from(&gw, "127.0.0.2", header, &request(&token, "")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"]["x-forwarded-for"], "10.1.2.3");
    // Any other peer is closed without an answer, valid header or not.
    assert_eq!(
        plain_call_from(&gw, "127.0.0.1", header, &request(&token, "")),
        None
    );
    // A trusted peer that sends nothing is cut off at the header deadline.
    let started = std::time::Instant::now();
    assert_eq!(plain_call_from(&gw, "127.0.0.2", b"", ""), None);
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(900)
            && waited < std::time::Duration::from_secs(5),
        "{waited:?}"
    );
    let decisions = gw.wait_decisions(1);
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(decisions[0]["client_ip"], "10.1.2.3");
}
