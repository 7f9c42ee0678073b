//! HTTP/2 downstream: `h2` by ALPN on TLS listeners and h2c with prior knowledge on plain
//! ones, decided exactly as HTTP/1.1 is, with the same header hygiene and limits.

use crate::support::*;
use agentgate::dev::tls::TestCa;
use agentgate::dev::SigningIdentity;
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

/// A plain gateway that also takes h2c with prior knowledge; `server_extra` adds settings.
fn h2c_gateway(servers: &Servers, server_extra: &str) -> Gateway {
    Gateway::start(
        servers,
        GatewaySpec {
            server_extra: format!("h2c = true\n{server_extra}"),
            ..Default::default()
        },
    )
}

/// The fake identity servers, an h2c gateway in front of them, and an agent's token the
/// gateway's log is checked never to show.
fn h2c_with_an_agent_token() -> (Servers, Gateway, String) {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = h2c_gateway(&servers, "");
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.sent(&token);
    (servers, gw, token)
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

/// Sends every caller kind's token to an allowed route, to a route the shipped policy
/// refuses some kinds, and to a path the path discipline refuses, and sends no token:
/// `h2` (which must speak HTTP/2) gets exactly the status, reason and identity headers
/// `h1` gets. The outcomes span allowed, refused by policy, refused before policy and
/// unauthenticated, so agreeing is not agreeing on one answer.
fn assert_h2_decides_as_http1(
    gw: &Gateway,
    key: &SigningIdentity,
    h1: &reqwest::blocking::Client,
    h2: &reqwest::blocking::Client,
) {
    let mut seen = std::collections::BTreeSet::new();
    for kind in kinds() {
        let token = mint(key, &spec(kind));
        let cases = [
            ("/orders/1", Some(token.as_str())),
            ("/crm/1", Some(&token)),
            ("/orders/..;/admin", Some(&token)),
            ("/orders/1", None),
        ];
        for (path, token) in cases {
            let (a, va) = call(gw, h1, path, token, &[]);
            let (b, vb) = call(gw, h2, path, token, &[]);
            assert_eq!(va, reqwest::Version::HTTP_11);
            assert_eq!(vb, reqwest::Version::HTTP_2);
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
            seen.insert((a.status, a.reason().to_string()));
        }
    }
    for expected in [(400, "invalid_path"), (401, "missing_token")] {
        assert!(
            seen.contains(&(expected.0, expected.1.to_string())),
            "{expected:?} never answered: {seen:?}"
        );
    }
    assert!(
        seen.iter().any(|(s, _)| *s == 200),
        "nothing allowed: {seen:?}"
    );
    assert!(
        seen.iter().any(|(s, _)| *s == 403),
        "nothing refused by policy: {seen:?}"
    );
}

#[test]
fn h2_over_tls_decides_every_caller_kind_exactly_as_http1() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let ca = TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = tls_gateway(&servers, &ca, dir.path());
    gw.base = gw.base.replace("127.0.0.1", "localhost");
    let (h1, h2) = (
        https_client(&ca.cert_pem, false),
        https_client(&ca.cert_pem, true),
    );
    assert_h2_decides_as_http1(&gw, &key, &h1, &h2);
}

#[test]
fn h2c_decides_every_caller_kind_exactly_as_http1() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = h2c_gateway(&servers, "");
    let h1 = reqwest::blocking::Client::builder()
        .http1_only()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_h2_decides_as_http1(&gw, &key, &h1, &h2c_client());
}

#[test]
fn h2c_applies_the_same_checks_and_outlives_the_header_deadline() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = h2c_gateway(
        &servers,
        "header_read_timeout = \"1s\"\nmax_header_bytes = 8192",
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

/// Opens an h2c connection to `addr` and resets `n` requests, each `hold` after sending
/// it; returns how the connection ended (`Ok` when it outlived the flood) and how many
/// requests went out.
async fn rapid_reset(
    addr: &str,
    authority: &str,
    token: &str,
    n: usize,
    hold: Duration,
) -> (Result<(), h2::Error>, usize) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut sent = 0;
    let mut client = Some(client);
    while sent < n {
        let Some(Ok(mut ready)) = (match client.take() {
            Some(c) => Some(c.ready().await),
            None => None,
        }) else {
            break;
        };
        let request = http::Request::get(format!("http://{authority}/orders/1"))
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        let Ok((_response, mut stream)) = ready.send_request(request, true) else {
            break;
        };
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
        client = Some(ready);
    }
    drop(client);
    let ended = tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the connection ends once the client is done")
        .unwrap();
    (ended, sent)
}

/// The sum of `agentgate_requests_total` over the series whose labels contain `label`.
fn requests(metrics: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("agentgate_requests_total{") && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn streams_reset_at_once_cost_no_decision_and_others_are_still_served() {
    let (_servers, gw, token) = h2c_with_an_agent_token();
    let addr = gw.base.trim_start_matches("http://").to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let flood = {
        let (addr, token) = (addr.clone(), token.clone());
        rt.spawn(async move { rapid_reset(&addr, &addr, &token, 50_000, Duration::ZERO).await })
    };
    // Meanwhile a well-behaved client is served.
    let client = h2c_client();
    for _ in 0..20 {
        call(&gw, &client, "/orders/1", Some(&token), &[])
            .0
            .assert_allowed();
    }
    let (ended, sent) = rt.block_on(flood).unwrap();
    assert_eq!(sent, 50_000, "{ended:?}");
    call(&gw, &client, "/orders/1", Some(&token), &[])
        .0
        .assert_allowed();
    // A stream reset before the gateway took it up is dropped by the HTTP/2 layer: only
    // the well-behaved client's 21 requests were decided.
    let metrics = gw.metrics();
    assert_eq!(requests(&metrics, "decision=\"allow\""), 21.0, "{metrics}");
}

#[test]
fn streams_reset_after_they_were_taken_up_are_bounded_per_connection() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    // Every forwarded request stays in flight until the route's read timeout (2 s in these
    // tests), or until its reset abandons it.
    let silent = SilentUpstream::start(b'y');
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            server_extra: "h2c = true\nh2_max_concurrent_streams = 10".into(),
            upstreams: Some(vec![silent.addr.clone()]),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.sent(&token);
    let addr = gw.base.trim_start_matches("http://").to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Each request is reset 20 ms after it was sent, once the gateway is working on it.
    let (ended, sent) = rt.block_on(rapid_reset(
        &addr,
        &addr,
        &token,
        200,
        Duration::from_millis(20),
    ));
    let (most, total) = (silent.most_open(), silent.accepted());
    eprintln!(
        "held resets: {sent} sent, {total} forwarded, at most {most} upstream requests in flight at once"
    );
    assert_eq!(sent, 200, "{ended:?}");
    // A reset ends the request's work: the upstream never holds more than the connection's
    // stream limit, though far more requests than that were forwarded before their reset.
    assert!(most <= 10, "more than h2_max_concurrent_streams in flight");
    assert!(
        total > 20,
        "only {total} requests were forwarded: nothing was bounded"
    );
    gw.call("GET", "/orders/1", Some(&token))
        .assert_denied(504, "upstream_timeout");
}

/// An HTTP/2 frame: 24-bit length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer (RFC 7541 §5.1): `prefix` bits in a first byte that starts with `first`.
fn hpack_int(value: usize, prefix: u8, first: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// An HPACK literal header field without indexing, new name, strings not Huffman-coded.
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut b = vec![0x00];
    for s in [name, value] {
        hpack_int(s.len(), 7, 0, &mut b);
        b.extend_from_slice(s.as_bytes());
    }
    b
}

/// Reads an HPACK integer with a `prefix`-bit prefix at `block[*at]`, moving past it.
fn read_hpack_int(block: &[u8], at: &mut usize, prefix: u8) -> usize {
    let max = (1usize << prefix) - 1;
    let mut value = usize::from(block[*at]) & max;
    *at += 1;
    if value < max {
        return value;
    }
    let mut shift = 0;
    loop {
        let b = block[*at];
        *at += 1;
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return value;
        }
    }
}

/// How a header field is represented in an HPACK block (RFC 7541 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// A whole field from the static or dynamic table.
    Indexed,
    /// A literal added to the dynamic table; its name's index (0: a literal name).
    Added { name: usize },
    /// A literal left out of the table.
    NotIndexed,
    /// A literal no table may ever hold.
    NeverIndexed,
}

/// The representations of a header block's fields, in order (table size updates skipped).
fn hpack_fields(block: &[u8]) -> Vec<Field> {
    let mut at = 0;
    let mut fields = Vec::new();
    while at < block.len() {
        let b = block[at];
        let (field, prefix) = match b {
            _ if b & 0x80 != 0 => (Field::Indexed, 7),
            _ if b & 0xc0 == 0x40 => (Field::Added { name: 0 }, 6),
            _ if b & 0xe0 == 0x20 => {
                read_hpack_int(block, &mut at, 5);
                continue;
            }
            _ if b & 0xf0 == 0x10 => (Field::NeverIndexed, 4),
            _ => (Field::NotIndexed, 4),
        };
        let index = read_hpack_int(block, &mut at, prefix);
        if field != Field::Indexed {
            // A literal name when the index is 0, then the value; each a length and bytes.
            for _ in 0..1 + usize::from(index == 0) {
                let len = read_hpack_int(block, &mut at, 7);
                at += len;
            }
        }
        fields.push(match field {
            Field::Added { .. } => Field::Added { name: index },
            other => other,
        });
    }
    fields
}

/// Sends GET `path` on streams 1, 3, 5, ... of one raw h2c connection, one at a time (so
/// the server encodes the answers in this order), each with its `authorization` value (or
/// none), and returns each answer's header block.
fn raw_h2c_answers(addr: &str, path: &str, authorizations: &[Option<String>]) -> Vec<Vec<u8>> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    tcp.write_all(&frame(0x4, 0, 0, &[])).unwrap();
    let mut answers = Vec::new();
    for (stream, authorization) in (1u32..).step_by(2).zip(authorizations) {
        // :method GET, :scheme http; then :path, :authority and authorization as literals.
        let mut block = vec![0x82, 0x86];
        block.extend(literal(":path", path));
        block.extend(literal(":authority", "localhost"));
        if let Some(a) = authorization {
            block.extend(literal("authorization", a));
        }
        // END_STREAM | END_HEADERS.
        tcp.write_all(&frame(0x1, 0x5, stream, &block)).unwrap();
        let mut head = [0u8; 9];
        let answer = loop {
            tcp.read_exact(&mut head).unwrap();
            let len =
                (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            tcp.read_exact(&mut payload).unwrap();
            let on = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            match head[3] {
                0x1 if on == stream => break payload,
                0x3 | 0x7 => panic!("stream {on} reset or connection ended: {payload:?}"),
                _ => {}
            }
        };
        assert_ne!(
            head[4] & 0x4,
            0,
            "an answer's headers in CONTINUATION frames"
        );
        answers.push(answer);
    }
    answers
}

/// Opens stream 1 on a raw h2c connection with a HEADERS frame that never ends, then sends
/// CONTINUATION frames of 100-byte headers until the server stops it or `budget` bytes
/// are sent; what was sent, and the type of the first frame the server sent after its
/// SETTINGS (GOAWAY 7, RST_STREAM 3, HEADERS 1), if any.
fn continuation_flood(addr: &str, budget: usize) -> (usize, Option<u8>) {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    tcp.write_all(&frame(0x4, 0, 0, &[])).unwrap();
    // :method GET, :scheme http, :path /, then :authority, no END_HEADERS.
    let mut first = vec![0x82, 0x86, 0x84];
    first.extend(literal(":authority", "localhost"));
    tcp.write_all(&frame(0x1, 0x1, 1, &first)).unwrap();
    let block = literal("x-flood", &"a".repeat(100));
    let mut sent = 0;
    let mut reader = tcp.try_clone().unwrap();
    let answered = std::thread::spawn(move || {
        // Skip the server's frames until one that ends the flood.
        let mut head = [0u8; 9];
        loop {
            if reader.read_exact(&mut head).is_err() {
                return None;
            }
            let len =
                (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            if reader.read_exact(&mut payload).is_err() {
                return None;
            }
            if matches!(head[3], 0x7 | 0x3 | 0x1) {
                return Some(head[3]);
            }
        }
    });
    while sent < budget {
        if tcp.write_all(&frame(0x9, 0, 1, &block)).is_err() {
            break;
        }
        sent += 9 + block.len();
    }
    let _ = tcp.shutdown(std::net::Shutdown::Write);
    (sent, answered.join().unwrap())
}

#[test]
fn a_continuation_flood_is_cut_off_and_others_are_still_served() {
    let (_servers, gw, token) = h2c_with_an_agent_token();
    let addr = gw.base.trim_start_matches("http://").to_string();
    // 4 MiB of header continuation, 128 times the 32 KiB header limit.
    let budget = 4 << 20;
    let flood = {
        let addr = addr.clone();
        std::thread::spawn(move || continuation_flood(&addr, budget))
    };
    let client = h2c_client();
    for _ in 0..10 {
        call(&gw, &client, "/orders/1", Some(&token), &[])
            .0
            .assert_allowed();
    }
    let (sent, answer) = flood.join().unwrap();
    eprintln!("flood: {sent} bytes sent, server answered with frame type {answer:?}");
    // The server ended the connection (GOAWAY, then close) instead of buffering the flood.
    assert_eq!(answer, Some(0x7), "after {sent} bytes");
    assert!(sent < budget, "the whole flood was taken in");
    call(&gw, &client, "/orders/1", Some(&token), &[])
        .0
        .assert_allowed();
    // The flood never became a request.
    let metrics = gw.metrics();
    assert_eq!(requests(&metrics, "decision=\"allow\""), 11.0, "{metrics}");
    assert_eq!(requests(&metrics, "decision=\"deny\""), 0.0, "{metrics}");
}

#[test]
fn decision_ids_never_enter_the_hpack_table() {
    let (_servers, gw, token) = h2c_with_an_agent_token();
    let addr = gw.base.trim_start_matches("http://");
    let bearer = Some(format!("Bearer {token}"));
    // Allowed answers (the upstream's headers plus the id), then refusals the gateway writes.
    let answers = raw_h2c_answers(
        addr,
        "/orders/1",
        &[bearer.clone(), bearer.clone(), bearer, None, None],
    );
    for (i, block) in answers.iter().enumerate() {
        let fields = hpack_fields(block);
        // Exactly one never-indexed field per answer: its decision id.
        assert_eq!(
            fields.iter().filter(|f| **f == Field::NeverIndexed).count(),
            1,
            "answer {i}: {fields:?}"
        );
        if matches!(i, 1 | 2 | 4) {
            // After the first answer of each kind, only a new `date` (static name 33) may
            // still be added to the table; an id added by name would index the dynamic
            // table's (62 and above).
            assert!(
                fields
                    .iter()
                    .all(|f| !matches!(f, Field::Added { name } if *name != 33)),
                "answer {i}: {fields:?}"
            );
        }
    }
}

#[test]
fn h2_bodies_over_the_route_limit_get_413_declared_or_streamed() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let silent = SilentUpstream::start(b'y');
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            server_extra: "h2c = true".into(),
            route_extra: "max_body_bytes = 1024".into(),
            upstreams: Some(vec![silent.addr.clone()]),
            ..Default::default()
        },
    );
    let mut writer = spec(CallerKind::AgentApp);
    writer.roles = vec!["Orders.Write.All".into()];
    let token = mint(&key, &writer);
    gw.sent(&token);
    let client = h2c_client();
    let post = |body: reqwest::blocking::Body| {
        let r = client
            .post(format!("{}/orders/1", gw.base))
            .bearer_auth(&token)
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        Reply::from(r)
    };
    // A declared content-length over the limit: refused before the upstream is contacted.
    post("y".repeat(1025).into()).assert_denied(413, "body_too_large");
    assert_eq!(silent.accepted(), 0, "the upstream was contacted");
    // No declared length: counted as the DATA frames arrive.
    let streamed = reqwest::blocking::Body::new(std::io::Cursor::new("y".repeat(4096)));
    post(streamed).assert_denied(413, "body_too_large");
    assert!(
        silent.marked_once_closed() <= 1024,
        "more than the limit reached the upstream"
    );
}

#[test]
fn idle_h2_connections_and_trickled_header_blocks_are_closed_but_open_streams_are_not() {
    use std::io::{Read, Write};
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let (events, finish) = event_stream_upstream();
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            server_extra: "h2c = true\nh2_idle_timeout = \"1s\"".into(),
            upstreams: Some(vec![events]),
            ..Default::default()
        },
    );
    let addr = gw.base.trim_start_matches("http://").to_string();
    // How long the gateway keeps a raw h2c connection that sends `then` after its
    // preface (every 300 ms, when `trickle`), until it closes it.
    let held = |then: Vec<u8>, trickle: Option<Vec<u8>>| {
        let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        tcp.write_all(&frame(0x4, 0, 0, &[])).unwrap();
        tcp.write_all(&then).unwrap();
        let opened = std::time::Instant::now();
        let mut buf = [0u8; 1024];
        while opened.elapsed() < Duration::from_secs(10) {
            match tcp.read(&mut buf) {
                Ok(0) => return opened.elapsed(),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return opened.elapsed(),
            }
            if let Some(t) = &trickle {
                if tcp.write_all(t).is_err() {
                    return opened.elapsed();
                }
            }
        }
        panic!("the connection was held open for 10 s");
    };
    // Nothing after the preface.
    let idle = held(Vec::new(), None);
    // A header block that never ends: HEADERS without END_HEADERS, then a CONTINUATION
    // of a few bytes every 300 ms. No stream opens while it arrives.
    let mut first = vec![0x82, 0x86, 0x84];
    first.extend(literal(":authority", "localhost"));
    let trickled = held(
        frame(0x1, 0x1, 1, &first),
        Some(frame(0x9, 0, 1, &literal("x-slow", "a"))),
    );
    for (what, took) in [("idle", idle), ("trickled", trickled)] {
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{what}: closed after {took:?}"
        );
    }

    // A stream open longer than the idle timeout is not cut: an event stream over h2c
    // whose upstream holds it for 1.6 s (the routes' read_timeout here is 2 s).
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.sent(&token);
    let mut response = h2c_client()
        .get(format!("{}/orders/events", gw.base))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let mut first = [0u8; 13];
    response.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"data: first\n\n");
    std::thread::sleep(Duration::from_millis(1600));
    finish.send(()).unwrap();
    let mut rest = String::new();
    response.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "data: second\n\n");
}
