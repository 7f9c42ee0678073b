//! `https://` upstreams: verification against a CA file or the system roots, SNI, expired,
//! untrusted and wrong-host certificates, client certificates, insecure_skip_verify.

use crate::support::*;
use agentgate::dev::tls::{self_signed, serve_tls, IssuedCert, LeafSpec, TestCa, TlsPeer};
use agentgate::tls::client_cert::sha256_hex;
use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;

/// An HTTPS echo server: it answers like the sample API, adding the SHA-256 of the
/// client certificate it verified (or null).
struct TlsUpstream {
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

async fn echo(
    ConnectInfo(peer): ConnectInfo<TlsPeer>,
    version: axum::http::Version,
    headers: HeaderMap,
) -> Json<Value> {
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
        .collect();
    Json(json!({
        "service": "sample-api",
        "client_cert_sha256": peer.client_certificate.map(|d| sha256_hex(&d)),
        "version": format!("{version:?}"),
        "headers": headers,
    }))
}

impl TlsUpstream {
    /// Serves with `cert`; requires a client certificate from `client_ca` when given.
    fn start(cert: &IssuedCert, client_ca: Option<&TestCa>) -> Self {
        Self::start_alpn(cert, client_ca, &[b"http/1.1"])
    }

    /// As `start`, agreeing only to the ALPN protocols `alpn`.
    fn start_alpn(cert: &IssuedCert, client_ca: Option<&TestCa>, alpn: &[&[u8]]) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let config = cert.server_config_with_alpn(client_ca, alpn).unwrap();
        let addr = runtime.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(serve_tls(l, config, Router::new().fallback(echo)));
            addr
        });
        TlsUpstream {
            addr,
            _runtime: runtime,
        }
    }
}

/// A gateway whose routes go to `upstream` over HTTPS with the route `tls` table `tls`.
fn gateway(servers: &Servers, upstream: &TlsUpstream, tls: Option<String>) -> Gateway {
    gateway_with(servers, upstream, tls, "")
}

/// As `gateway`, with `route_lines` added to the route.
fn gateway_with(
    servers: &Servers,
    upstream: &TlsUpstream,
    tls: Option<String>,
    route_lines: &str,
) -> Gateway {
    Gateway::start(
        servers,
        GatewaySpec {
            upstreams: Some(vec![format!("https://127.0.0.1:{}", upstream.addr.port())]),
            route_extra: format!(
                "{}\n{route_lines}",
                tls.map_or(String::new(), |t| format!("tls = {t}"))
            ),
            ..GatewaySpec::default()
        },
    )
}

fn write_ca(dir: &Path, ca: &TestCa) -> String {
    let path = dir.join("upstream-ca.pem");
    std::fs::write(&path, &ca.cert_pem).unwrap();
    format!("{path:?}")
}

fn call(gw: &Gateway) -> Reply {
    gw.call(
        "GET",
        "/orders/1",
        Some(&fresh_token(&key("primary"), "up")),
    )
}

/// The failure is a 502 upstream_tls_error, counted under that reason.
#[track_caller]
fn assert_tls_error(gw: &Gateway) {
    call(gw).assert_denied(502, "upstream_tls_error");
    assert!(
        gw.metrics()
            .lines()
            .any(|l| l.starts_with("agentgate_requests_total{")
                && l.contains("reason=\"upstream_tls_error\"")
                && l.ends_with(" 1")),
        "{}",
        gw.metrics()
    );
}

#[test]
fn a_trusted_upstream_is_reached_by_ip_and_by_explicit_sni() {
    let servers = Servers::start(&[&key("primary")]);
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_ca(dir.path(), &ca);

    let by_ip = TlsUpstream::start(&ca.issue(&["127.0.0.1"]).unwrap(), None);
    let gw = gateway(&servers, &by_ip, Some(format!("{{ ca_file = {ca_file} }}")));
    let r = call(&gw);
    r.assert_allowed();
    assert_eq!(r.body["client_cert_sha256"], Value::Null);
    assert!(r.upstream_header("x-agentgate-decision-id").is_some());
    assert_eq!(
        gw.readiness()["unverified_upstreams"],
        serde_json::json!([])
    );
    assert!(!gw.stderr().contains("INSECURE"));
    drop(gw);

    let by_name = TlsUpstream::start(&ca.issue(&["orders.internal.test"]).unwrap(), None);
    let gw = gateway(
        &servers,
        &by_name,
        Some(format!(
            "{{ ca_file = {ca_file}, sni = \"orders.internal.test\" }}"
        )),
    );
    call(&gw).assert_allowed();
}

#[test]
fn an_h2_route_negotiates_h2_with_its_tls_upstream() {
    let servers = Servers::start(&[&key("primary")]);
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_ca(dir.path(), &ca);
    // An upstream that agrees to h2 alone.
    let h2_only = TlsUpstream::start_alpn(&ca.issue(&["127.0.0.1"]).unwrap(), None, &[b"h2"]);
    let tls = Some(format!("{{ ca_file = {ca_file} }}"));
    let gw = gateway_with(
        &servers,
        &h2_only,
        tls.clone(),
        "upstream_protocol = \"h2\"",
    );
    let r = call(&gw);
    r.assert_allowed();
    assert_eq!(r.body["version"], "HTTP/2.0");
    assert!(r.upstream_header("x-agentgate-decision-id").is_some());
    drop(gw);
    // An HTTP/1.1 route cannot agree on a protocol with it: a TLS failure, not a hang.
    assert_tls_error(&gateway(&servers, &h2_only, tls));
}

#[test]
fn expired_untrusted_and_wrong_host_certificates_are_upstream_tls_errors() {
    let servers = Servers::start(&[&key("primary")]);
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_ca(dir.path(), &ca);

    let expired = TlsUpstream::start(
        &ca.issue_with(&LeafSpec::new(&["127.0.0.1"]).expired())
            .unwrap(),
        None,
    );
    assert_tls_error(&gateway(
        &servers,
        &expired,
        Some(format!("{{ ca_file = {ca_file} }}")),
    ));

    // Self-signed, verified against the system roots (no ca_file).
    let untrusted = TlsUpstream::start(&self_signed(&["127.0.0.1"]).unwrap(), None);
    assert_tls_error(&gateway(&servers, &untrusted, None));

    let wrong_host = TlsUpstream::start(&ca.issue(&["other.test"]).unwrap(), None);
    assert_tls_error(&gateway(
        &servers,
        &wrong_host,
        Some(format!("{{ ca_file = {ca_file} }}")),
    ));
}

#[test]
fn insecure_skip_verify_accepts_any_certificate_and_says_so() {
    let servers = Servers::start(&[&key("primary")]);
    let untrusted = TlsUpstream::start(&self_signed(&["other.test"]).unwrap(), None);
    let gw = gateway(
        &servers,
        &untrusted,
        Some("{ insecure_skip_verify = true }".into()),
    );
    call(&gw).assert_allowed();
    assert!(
        gw.stderr()
            .contains("INSECURE: routes.tls.insecure_skip_verify = true"),
        "{}",
        gw.stderr()
    );
    // Visible to whoever watches readiness, route by route.
    assert_eq!(
        gw.readiness()["unverified_upstreams"],
        serde_json::json!(["orders"])
    );
}

#[test]
fn the_route_client_certificate_is_presented_to_an_upstream_that_requires_one() {
    let servers = Servers::start(&[&key("primary")]);
    let (ca, clients) = (TestCa::new().unwrap(), TestCa::named("clients").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_ca(dir.path(), &ca);
    let upstream = TlsUpstream::start(&ca.issue(&["127.0.0.1"]).unwrap(), Some(&clients));
    let gateway_cert = clients.issue(&["agentgate.test"]).unwrap();
    let (cert, key_file) = gateway_cert.write(dir.path(), "gateway-client").unwrap();

    let gw = gateway(
        &servers,
        &upstream,
        Some(format!(
            "{{ ca_file = {ca_file}, client_cert = {cert:?}, client_key = {key_file:?} }}"
        )),
    );
    let r = call(&gw);
    r.assert_allowed();
    assert_eq!(r.body["client_cert_sha256"], sha256_hex(&gateway_cert.der));
    drop(gw);

    // Without one, the upstream refuses the handshake.
    assert_tls_error(&gateway(
        &servers,
        &upstream,
        Some(format!("{{ ca_file = {ca_file} }}")),
    ));
}
