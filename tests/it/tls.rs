//! HTTPS listeners: handshakes with rustls, curl and openssl clients, SNI, protocol
//! versions, certificate rotation under load, refused certificates, client certificates.

use crate::support::*;
use agentgate::dev::tls::{IssuedCert, LeafSpec, TestCa};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `{ cert = "...", key = "..." }` for a written pair.
fn pair(cert: &Path, key: &Path) -> String {
    format!("{{ cert = {:?}, key = {:?} }}", cert, key)
}

/// The listener `tls` table for `pairs`, polled every 100 ms, plus `extra` keys.
fn listener_tls(pairs: &[String], extra: &str) -> String {
    format!(
        "{{ certificates = [{}], reload_interval = \"100ms\"{extra} }}",
        pairs.join(", ")
    )
}

fn start(servers: &Servers, tls: String) -> Gateway {
    Gateway::start(
        servers,
        GatewaySpec {
            listener_tls: Some(tls),
            ..GatewaySpec::default()
        },
    )
}

fn port(gw: &Gateway) -> u16 {
    gw.base.rsplit(':').next().unwrap().parse().unwrap()
}

/// An HTTPS client that trusts only `ca`, sends `name` as SNI (resolved to the gateway),
/// presents `identity` when given, and opens a new connection for every request.
fn client(
    gw: &Gateway,
    ca: &TestCa,
    name: &str,
    identity: Option<&IssuedCert>,
) -> reqwest::blocking::Client {
    let mut b = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap()])
        .resolve(name, ([127, 0, 0, 1], port(gw)).into())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10));
    if let Some(id) = identity {
        let pem = format!("{}{}", id.key_pem, id.cert_pem);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// GET `/orders/1` as an allowed agent through `client`, addressed to `name`.
fn get(gw: &Gateway, client: &reqwest::blocking::Client, name: &str) -> reqwest::Result<Reply> {
    let token = fresh_token(&key("primary"), "tls");
    gw.sent(&token);
    client
        .get(format!("https://{name}:{}/orders/1", port(gw)))
        .bearer_auth(&token)
        .send()
        .map(Reply::from)
}

/// The first PEM certificate in `text`, whitespace removed.
fn first_pem(text: &str) -> String {
    let begin = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a PEM certificate");
    let end = text[begin..].find("-----END CERTIFICATE-----").unwrap() + begin;
    text[begin..end].split_whitespace().collect()
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed (scripts/bootstrap --test)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `openssl s_client` to the gateway with `localhost` as SNI and `extra` arguments.
fn s_client(gw: &Gateway, extra: &[&str]) -> (bool, String) {
    let connect = format!("127.0.0.1:{}", port(gw));
    let mut args = vec!["s_client", "-connect", &connect, "-servername", "localhost"];
    args.extend_from_slice(extra);
    openssl(&args)
}

/// The leaf certificate the gateway presents for `sni` (none: no SNI sent), as openssl
/// s_client sees it.
fn presented(gw: &Gateway, sni: Option<&str>) -> String {
    let connect = format!("127.0.0.1:{}", port(gw));
    let mut args = vec!["s_client", "-connect", &connect];
    match sni {
        Some(name) => args.extend(["-servername", name]),
        None => args.push("-noservername"),
    }
    let (_, text) = openssl(&args);
    first_pem(&text)
}

fn leaf(cert: &IssuedCert) -> String {
    first_pem(&cert.cert_pem)
}

/// Polls until `check` holds, failing the test after 10 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `agentgate_tls_certificate_reloads_total` for `result`, 0 when absent.
fn reloads(gw: &Gateway, result: &str) -> u64 {
    let needle = format!("result=\"{result}\"}} ");
    gw.metrics()
        .lines()
        .find(|l| l.starts_with("agentgate_tls_certificate_reloads_total{") && l.contains(&needle))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().unwrap())
}

#[test]
fn https_listener_serves_rustls_curl_and_openssl_clients() {
    let servers = Servers::start(&[&key("primary")]);
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = ca
        .issue(&["localhost", "127.0.0.1"])
        .unwrap()
        .write(dir.path(), "server")
        .unwrap();
    let gw = start(&servers, listener_tls(&[pair(&c, &k)], ""));
    assert!(gw.base.starts_with("https://"));

    // rustls (reqwest), trusting only the test CA.
    get(&gw, &client(&gw, &ca, "localhost", None), "localhost")
        .unwrap()
        .assert_allowed();

    // curl (OpenSSL), verifying against the CA file.
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let token = fresh_token(&key("primary"), "curl");
    gw.sent(&token);
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&ca_file)
        .args(["-o", "/dev/null", "-w", "%{http_code} %{ssl_verify_result}"])
        .arg(format!("https://localhost:{}/orders/1", port(&gw)))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .output()
        .expect("curl is installed (scripts/bootstrap --test)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200 0",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // openssl s_client: TLS 1.3 and 1.2 both verify; ALPN picks h2 when offered first,
    // http/1.1 for a client that offers only that.
    let ca_path = ca_file.to_str().unwrap();
    for (version, shown, alpn, picked) in [
        ("-tls1_3", "TLSv1.3", "h2,http/1.1", "h2"),
        ("-tls1_2", "TLSv1.2", "h2,http/1.1", "h2"),
        ("-tls1_3", "TLSv1.3", "http/1.1", "http/1.1"),
    ] {
        let (ok, text) = s_client(
            &gw,
            &[
                "-CAfile",
                ca_path,
                "-verify_return_error",
                "-alpn",
                alpn,
                version,
            ],
        );
        assert!(ok, "{text}");
        assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
        assert!(
            text.contains(&format!("Protocol  : {shown}"))
                || text.contains(&format!("New, {shown}")),
            "{text}"
        );
        assert!(
            text.contains(&format!("ALPN protocol: {picked}\n")),
            "{text}"
        );
    }
}

#[test]
fn tls_1_0_and_1_1_are_refused() {
    let servers = Servers::start(&[&key("primary")]);
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = ca
        .issue(&["localhost"])
        .unwrap()
        .write(dir.path(), "s")
        .unwrap();
    let gw = start(&servers, listener_tls(&[pair(&c, &k)], ""));
    for version in ["-tls1", "-tls1_1"] {
        // SECLEVEL=0 lets this OpenSSL offer the old versions at all, so the refusal
        // seen is the gateway's.
        let (ok, text) = s_client(&gw, &[version, "-cipher", "DEFAULT@SECLEVEL=0"]);
        assert!(!ok, "{version} was accepted:\n{text}");
        // rustls answers a ClientHello without TLS 1.2 or 1.3 with a fatal alert
        // (handshake_failure or protocol_version); no cipher is ever agreed.
        assert!(
            text.contains("alert handshake failure") || text.contains("alert protocol version"),
            "{version}:\n{text}"
        );
        assert!(text.contains("Cipher is (NONE)"), "{version}:\n{text}");
    }
    // The same client settings with TLS 1.2 connect: the refusal above is the version.
    let (ok, text) = s_client(&gw, &["-tls1_2", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(ok && text.contains("Protocol  : TLSv1.2"), "{text}");
    let out = Command::new("curl")
        .args([
            "-sk",
            "--tlsv1.0",
            "--tls-max",
            "1.1",
            "--ciphers",
            "DEFAULT@SECLEVEL=0",
        ])
        .arg(format!("https://localhost:{}/orders/1", port(&gw)))
        .output()
        .unwrap();
    // 35: SSL connect error.
    assert_eq!(
        out.status.code(),
        Some(35),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sni_picks_the_certificate_and_unknown_names_get_the_first() {
    let servers = Servers::start(&[&key("primary")]);
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let default = ca.issue(&["default.test"]).unwrap();
    let wildcard = ca.issue(&["*.example.test"]).unwrap();
    let exact = ca.issue(&["api.example.test"]).unwrap();
    let mut pairs = Vec::new();
    for (name, cert) in [
        ("default", &default),
        ("wildcard", &wildcard),
        ("exact", &exact),
    ] {
        let (c, k) = cert.write(dir.path(), name).unwrap();
        pairs.push(pair(&c, &k));
    }
    let gw = start(&servers, listener_tls(&pairs, ""));
    assert_eq!(presented(&gw, Some("api.example.test")), leaf(&exact));
    assert_eq!(presented(&gw, Some("www.example.test")), leaf(&wildcard));
    assert_eq!(presented(&gw, Some("default.test")), leaf(&default));
    assert_eq!(presented(&gw, Some("unknown.test")), leaf(&default));
    assert_eq!(presented(&gw, None), leaf(&default));
    // A rustls client verifies the name it asked for.
    get(
        &gw,
        &client(&gw, &ca, "www.example.test", None),
        "www.example.test",
    )
    .unwrap()
    .assert_allowed();
}

/// A Kubernetes secret volume: `tls.crt -> ..data/tls.crt`, `..data -> ..<version>`.
struct SecretVolume {
    dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn new(dir: &Path, cert: &IssuedCert) -> Self {
        let mut v = SecretVolume {
            dir: dir.to_path_buf(),
            version: 0,
        };
        v.publish(cert);
        for f in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
        v
    }

    /// Writes a new version directory and swaps `..data` to it atomically (rename).
    fn publish(&mut self, cert: &IssuedCert) {
        self.version += 1;
        let version = format!("..2026_01_01_00_00_0{}", self.version);
        std::fs::create_dir(self.dir.join(&version)).unwrap();
        std::fs::write(self.dir.join(&version).join("tls.crt"), &cert.cert_pem).unwrap();
        std::fs::write(self.dir.join(&version).join("tls.key"), &cert.key_pem).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

#[test]
fn rotation_under_load_fails_no_request_and_new_handshakes_get_the_new_certificate() {
    let servers = Servers::start(&[&key("primary")]);
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.issue(&["localhost"]).unwrap();
    let mut volume = SecretVolume::new(dir.path(), &first);
    let gw = Arc::new(start(
        &servers,
        listener_tls(
            &[pair(
                &dir.path().join("tls.crt"),
                &dir.path().join("tls.key"),
            )],
            "",
        ),
    ));
    assert_eq!(presented(&gw, Some("localhost")), leaf(&first));

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (gw, stop, ok, failed) = (gw.clone(), stop.clone(), ok.clone(), failed.clone());
        let ca_pem = ca.cert_pem.clone();
        std::thread::spawn(move || {
            // New connections (a handshake per request) and one kept-alive connection.
            let fresh = reqwest::blocking::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
                .resolve("localhost", ([127, 0, 0, 1], port(&gw)).into())
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let kept = reqwest::blocking::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
                .resolve("localhost", ([127, 0, 0, 1], port(&gw)).into())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            // Bounded: stops when told, or after 5,000 requests.
            for i in 0..5_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let c = if i % 2 == 0 { &fresh } else { &kept };
                match get(&gw, c, "localhost") {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };

    let second = ca.issue(&["localhost"]).unwrap();
    let third = ca.issue(&["localhost"]).unwrap();
    for next in [&second, &third] {
        let before = ok.load(Ordering::Relaxed);
        eventually("requests flow", || {
            ok.load(Ordering::Relaxed) >= before + 20
        });
        volume.publish(next);
        eventually("the new certificate is presented", || {
            presented(&gw, Some("localhost")) == leaf(next)
        });
    }
    let before = ok.load(Ordering::Relaxed);
    eventually("requests flow after the swaps", || {
        ok.load(Ordering::Relaxed) >= before + 20
    });
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during rotation"
    );
    assert!(ok.load(Ordering::Relaxed) >= 60);
    assert_eq!(reloads(&gw, "loaded"), 2);
}

#[test]
fn a_bad_new_pair_is_refused_counted_and_the_old_one_keeps_serving() {
    let servers = Servers::start(&[&key("primary")]);
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = ca.issue(&["localhost"]).unwrap();
    let (c, k) = good.write(dir.path(), "tls").unwrap();
    let gw = start(&servers, listener_tls(&[pair(&c, &k)], ""));
    let https = client(&gw, &ca, "localhost", None);

    let other = ca.issue(&["localhost"]).unwrap();
    let expired = ca
        .issue_with(&LeafSpec::new(&["localhost"]).expired())
        .unwrap();
    let cases: [(&str, &str, &str); 3] = [
        // Files rewritten in place, one after the other, as cert-manager does.
        ("key_mismatch", &other.cert_pem, &good.key_pem),
        (
            "invalid",
            "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
            &good.key_pem,
        ),
        ("expired", &expired.cert_pem, &expired.key_pem),
    ];
    for (reason, cert, key) in cases {
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        eventually(reason, || reloads(&gw, reason) == 1);
        assert_eq!(presented(&gw, Some("localhost")), leaf(&good), "{reason}");
        get(&gw, &https, "localhost").unwrap().assert_allowed();
    }
    // Refused contents are counted once, not on every poll.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(reloads(&gw, "expired"), 1);
    assert_eq!(reloads(&gw, "loaded"), 0);
    assert!(gw.stderr().contains("new listener certificate refused"));

    // A good pair is taken.
    std::fs::write(&c, &other.cert_pem).unwrap();
    std::fs::write(&k, &other.key_pem).unwrap();
    eventually("the good pair loads", || reloads(&gw, "loaded") == 1);
    assert_eq!(presented(&gw, Some("localhost")), leaf(&other));
    get(&gw, &https, "localhost").unwrap().assert_allowed();
}

#[test]
fn a_gateway_with_an_unusable_certificate_does_not_start() {
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = ca.issue(&["localhost"]).unwrap();
    let b = ca.issue(&["localhost"]).unwrap();
    std::fs::write(dir.path().join("a.crt"), &a.cert_pem).unwrap();
    std::fs::write(dir.path().join("b.key"), &b.key_pem).unwrap();
    let config = dir.path().join("agentgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[listeners]]
address = "127.0.0.1:{port}"
tls = {{ certificates = [{{ cert = "a.crt", key = "b.key" }}] }}

[identity]
[[identity.tenants]]
id = "{TENANT_A}"

[policy]
dir = {policies:?}

[[routes]]
id = "orders"
path_prefix = "/orders"
upstreams = ["127.0.0.1:9"]
audiences = ["{API}"]
"#,
            port = free_port(),
            policies = repo().join("policies"),
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agentgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not the private key of the certificate"),
        "{stderr}"
    );
}

/// A gateway whose listener verifies client certificates from `client_ca` (`mode`:
/// `optional` or `required`), otherwise as `spec` says.
fn mtls_gateway(
    servers: &Servers,
    ca: &TestCa,
    client_ca: &TestCa,
    mode: &str,
    spec: GatewaySpec,
) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = ca
        .issue(&["localhost"])
        .unwrap()
        .write(dir.path(), "server")
        .unwrap();
    let client_ca_file = dir.path().join("clients.pem");
    std::fs::write(&client_ca_file, &client_ca.cert_pem).unwrap();
    let gw = Gateway::start(
        servers,
        GatewaySpec {
            listener_tls: Some(listener_tls(
                &[pair(&c, &k)],
                &format!(", client_ca = {client_ca_file:?}, client_auth = \"{mode}\""),
            )),
            ..spec
        },
    );
    (gw, dir)
}

#[test]
fn required_client_certificates_refuse_clients_without_one() {
    let servers = Servers::start(&[&key("primary")]);
    let (ca, clients) = (TestCa::new().unwrap(), TestCa::named("clients").unwrap());
    let (gw, dir) = mtls_gateway(&servers, &ca, &clients, "required", GatewaySpec::default());
    let err = get(&gw, &client(&gw, &ca, "localhost", None), "localhost").unwrap_err();
    assert!(!err.is_status(), "{err:?}");
    // The handshake itself fails: openssl, over TLS 1.2 (where the client learns it
    // during the handshake), gets the server's alert.
    let ca_file = dir.path().join("gateway-ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let (ok, text) = s_client(&gw, &["-CAfile", ca_file.to_str().unwrap(), "-tls1_2"]);
    assert!(!ok, "{text}");
    assert!(text.contains("alert certificate required"), "{text}");
    // A certificate from another CA is refused too.
    let stranger = TestCa::named("stranger")
        .unwrap()
        .issue(&["agent.test"])
        .unwrap();
    assert!(get(
        &gw,
        &client(&gw, &ca, "localhost", Some(&stranger)),
        "localhost"
    )
    .is_err());

    let agent = clients.issue(&["agent.test"]).unwrap();
    let r = get(
        &gw,
        &client(&gw, &ca, "localhost", Some(&agent)),
        "localhost",
    )
    .unwrap();
    r.assert_allowed();
    assert_eq!(
        r.upstream_header("x-agentgate-client-cert-sha256"),
        Some(agentgate::tls::client_cert::sha256_hex(&agent.der).as_str())
    );
}

#[test]
fn optional_client_certificates_serve_clients_without_one_and_expose_verified_ones() {
    let servers = Servers::start(&[&key("primary")]);
    let (ca, clients) = (TestCa::new().unwrap(), TestCa::named("clients").unwrap());
    let (gw, _dir) = mtls_gateway(&servers, &ca, &clients, "optional", GatewaySpec::default());

    let r = get(&gw, &client(&gw, &ca, "localhost", None), "localhost").unwrap();
    r.assert_allowed();
    assert_eq!(r.upstream_header("x-agentgate-client-cert-sha256"), None);

    // A client cannot forge the header: inbound x-agentgate-* headers are dropped.
    let token = fresh_token(&key("primary"), "forge");
    gw.sent(&token);
    let forged = client(&gw, &ca, "localhost", None)
        .get(format!("https://localhost:{}/orders/1", port(&gw)))
        .bearer_auth(&token)
        .header("x-agentgate-client-cert-sha256", "00")
        .send()
        .map(Reply::from)
        .unwrap();
    forged.assert_allowed();
    assert_eq!(
        forged.upstream_header("x-agentgate-client-cert-sha256"),
        None
    );

    let agent = clients.issue(&["agent.test"]).unwrap();
    let r = get(
        &gw,
        &client(&gw, &ca, "localhost", Some(&agent)),
        "localhost",
    )
    .unwrap();
    r.assert_allowed();
    assert_eq!(
        r.upstream_header("x-agentgate-client-cert-sha256"),
        Some(agentgate::tls::client_cert::sha256_hex(&agent.der).as_str())
    );
    // Optional still verifies what is presented.
    let stranger = TestCa::named("stranger")
        .unwrap()
        .issue(&["agent.test"])
        .unwrap();
    assert!(get(
        &gw,
        &client(&gw, &ca, "localhost", Some(&stranger)),
        "localhost"
    )
    .is_err());
}

/// Allows only callers whose connection presented the sales agent's workload certificate,
/// and tells the upstream what the policy saw of it.
const WORKLOAD_BINDING: &str = r#"package agentgate

default decision := {"allow": false, "status": 403, "reason": "workload_certificate_required"}

decision := {
	"allow": true,
	"reason": "workload_bound",
	"headers": {
		"x-seen-subject": input.request.client_certificate.subject,
		"x-seen-sha256": input.request.client_certificate.sha256,
		"x-seen-dns": concat(",", input.request.client_certificate.sans.dns),
	},
} if {
	input.request.client_certificate.sans.uri[_] == "spiffe://contoso.test/agent/sales"
}
"#;

#[test]
fn a_policy_binds_the_token_to_the_workload_certificate_it_sees() {
    let servers = Servers::start(&[&key("primary")]);
    let (ca, clients) = (TestCa::new().unwrap(), TestCa::named("clients").unwrap());
    let (gw, _dir) = mtls_gateway(
        &servers,
        &ca,
        &clients,
        "optional",
        GatewaySpec {
            rego: Some(vec![("policy.rego", WORKLOAD_BINDING.into())]),
            ..Default::default()
        },
    );
    let issue = |uri: &str| {
        let mut spec = LeafSpec::new(&["sales.agents.test"]);
        spec.common_name = Some("sales agent");
        spec.extra_sans = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        clients.issue_with(&spec).unwrap()
    };
    let sales = issue("spiffe://contoso.test/agent/sales");
    let r = get(
        &gw,
        &client(&gw, &ca, "localhost", Some(&sales)),
        "localhost",
    )
    .unwrap();
    r.assert_allowed();
    assert_eq!(r.upstream_header("x-seen-subject"), Some("CN=sales agent"));
    assert_eq!(
        r.upstream_header("x-seen-sha256"),
        Some(agentgate::tls::client_cert::sha256_hex(&sales.der).as_str())
    );
    assert_eq!(r.upstream_header("x-seen-dns"), Some("sales.agents.test"));

    // The same valid token without the certificate, or with another workload's.
    let other = issue("spiffe://contoso.test/agent/research");
    for identity in [None, Some(&other)] {
        get(&gw, &client(&gw, &ca, "localhost", identity), "localhost")
            .unwrap()
            .assert_denied(403, "workload_certificate_required");
    }
}

#[test]
fn a_verified_certificate_that_cannot_be_read_is_refused_not_ignored() {
    let servers = Servers::start(&[&key("primary")]);
    let (ca, clients) = (TestCa::new().unwrap(), TestCa::named("clients").unwrap());
    let (gw, _dir) = mtls_gateway(&servers, &ca, &clients, "optional", GatewaySpec::default());
    // subjectAltName with a DNS name holding byte 0xff: the verifier takes it (it reads
    // names only when it matches them), the certificate parser does not.
    let mut spec = LeafSpec::new(&[]);
    spec.common_name = Some("odd agent");
    spec.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        &[2, 5, 29, 17],
        vec![0x30, 0x03, 0x82, 0x01, 0xff],
    )];
    let odd = clients.issue_with(&spec).unwrap();
    assert!(agentgate::tls::ClientCertificate::from_der(&odd.der).is_err());
    // On an optional listener, no certificate at all is served; an unreadable one is not
    // passed off as none.
    get(&gw, &client(&gw, &ca, "localhost", None), "localhost")
        .unwrap()
        .assert_allowed();
    get(&gw, &client(&gw, &ca, "localhost", Some(&odd)), "localhost")
        .unwrap()
        .assert_denied(403, "client_certificate_unreadable");
    assert!(gw
        .stderr()
        .contains("verified client certificate could not be read; refusing its requests"));
}
