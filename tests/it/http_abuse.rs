//! HTTP-level abuse over raw sockets: smuggling shapes, oversized headers, connection reuse.

use crate::support::*;
use agentgate::identity::CallerKind;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Sends raw bytes on a fresh connection; returns the response head and whether the server
/// then closed the connection.
fn raw(gw: &Gateway, request: &str) -> (String, bool) {
    let addr = gw.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match s.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break false, // timed out with the connection still open
        }
    };
    (String::from_utf8_lossy(&buf).to_string(), closed)
}

fn status(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn smuggling_shapes_get_400_and_a_closed_connection() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(&servers, GatewaySpec::default());
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.sent(&token);
    let cases = [
        ("CL and TE", format!("POST /orders HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")),
        ("TE and CL", format!("POST /orders HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\nAuthorization: Bearer {token}\r\n\r\n0\r\n\r\n")),
        ("two Content-Length", format!("POST /orders HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde")),
        ("obfuscated TE", format!("POST /orders HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n")),
        ("TE list", format!("POST /orders HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n")),
        ("two TE", format!("POST /orders HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")),
    ];
    for (what, request) in cases {
        let (head, closed) = raw(&gw, &request);
        assert_eq!(status(&head), 400, "{what}: {head}");
        assert!(
            closed,
            "{what}: the connection must be closed after an ambiguous request"
        );
        assert!(!head.contains("sample-api"), "{what}: reached the upstream");
    }
}

#[test]
fn oversized_header_blocks_get_431() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(&servers, GatewaySpec::default());
    let big = "x".repeat(40 * 1024);
    let (head, _) = raw(
        &gw,
        &format!("GET /orders/1 HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n"),
    );
    assert_eq!(status(&head), 431, "{head}");
    assert!(head.contains("headers_too_large"));
}

#[test]
fn connections_are_closed_after_the_request_cap() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            extra_config: String::new(),
            server_extra: "max_requests_per_connection = 3".into(),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.sent(&token);
    let request =
        format!("GET /orders/1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n");
    let addr = gw.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
    for i in 1..=3 {
        s.write_all(request.as_bytes()).unwrap();
        let (status, close) = read_response(&mut reader);
        assert_eq!(status, 200, "request {i}");
        assert!(
            !close || i == 3,
            "request {i} closed the connection before the cap"
        );
    }
    // After the cap the server closes the connection (a timeout here would mean it did not).
    let mut rest = Vec::new();
    let n = reader
        .read_to_end(&mut rest)
        .expect("the connection must be closed after the cap");
    assert_eq!(n, 0);
}

/// Reads one response with a Content-Length body: (status, `Connection: close`).
fn read_response(r: &mut impl std::io::BufRead) -> (u16, bool) {
    let (mut status, mut length, mut close) = (0, 0, false);
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if l.starts_with("http/1.1 ") {
            status = status_of(&l);
        } else if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        } else if l == "connection: close" {
            close = true;
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).unwrap();
    (status, close)
}

fn status_of(head: &str) -> u16 {
    status(head)
}

/// Slow clients that trickle header bytes are cut off at the header read deadline while
/// legitimate clients keep being served. CI runs 50 slow clients; set
/// `AGENTGATE_SLOWLORIS_CLIENTS=1000` for the full-scale run.
#[test]
fn slowloris_clients_are_cut_off_and_legitimate_clients_keep_working() {
    let slow_clients: usize = std::env::var("AGENTGATE_SLOWLORIS_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            server_extra: "header_read_timeout = \"1s\"".into(),
            ..Default::default()
        },
    );
    let addr = gw.base.trim_start_matches("http://").to_string();
    let slow: Vec<_> = (0..slow_clients)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.write_all(b"GET /orders/1 HTTP/1.1\r\nHost: a\r\n")
                    .unwrap();
                s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                // One header byte every 250 ms, for at most 20 s: a slowloris.
                for _ in 0..80 {
                    std::thread::sleep(Duration::from_millis(250));
                    if s.write_all(b"X").is_err() {
                        return true;
                    }
                    let mut b = [0u8; 512];
                    match s.read(&mut b) {
                        Ok(0) => return true,
                        Ok(_) => return true, // an error response, then the close
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => return true,
                    }
                }
                false
            })
        })
        .collect();
    let token = mint(&key, &spec(CallerKind::AgentApp));
    let (mut ok, total) = (0, 200);
    for _ in 0..total {
        if gw.call("GET", "/orders/1", Some(&token)).status == 200 {
            ok += 1;
        }
    }
    let cut_off = slow
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|closed| *closed)
        .count();
    assert_eq!(
        cut_off, slow_clients,
        "every slow client is disconnected by the header deadline"
    );
    assert!(
        ok * 100 >= total * 99,
        "legitimate success rate {ok}/{total}"
    );
}

/// Opens a connection, sends `prefix`, then trickles `trickle` one byte every 200 ms; returns
/// how long the gateway kept the connection open (at most `give_up`).
fn held_open(addr: &str, prefix: &[u8], trickle: &[u8], give_up: Duration) -> Duration {
    let started = std::time::Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    s.write_all(prefix).unwrap();
    for b in trickle.iter().cycle() {
        if started.elapsed() > give_up {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if s.write_all(&[*b]).is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(_) => break,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    started.elapsed()
}

/// Empty lines before the request line are skipped by the HTTP parser, so they must not read
/// as the end of a header block: the deadline stays armed whatever precedes the request line,
/// and for bare-LF line endings too.
#[test]
fn leading_empty_lines_do_not_disarm_the_header_deadline() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            server_extra: "header_read_timeout = \"1s\"".into(),
            ..Default::default()
        },
    );
    let addr = gw.base.trim_start_matches("http://");
    let give_up = Duration::from_secs(8);
    let cases: [(&str, Vec<u8>, &[u8]); 4] = [
        ("CRLF CRLF first", b"\r\n\r\n".to_vec(), b"GET /orders/1 HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ("a thousand CRLFs first", b"\r\n".repeat(1000), b"GET /orders/1 HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ("bare LFs first", b"\n\n\n\n".to_vec(), b"GET /orders/1 HTTP/1.1\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ("trickled CRLFs", Vec::new(), b"\r\n"),
    ];
    for (what, prefix, trickle) in cases {
        let held = held_open(addr, &prefix, trickle, give_up);
        assert!(
            held < Duration::from_secs(4),
            "{what}: the connection stayed open {held:?} with a 1 s header deadline"
        );
    }
    // A request that completes its header in time is still served after leading empty lines.
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.sent(&token);
    let (head, _) = raw(
        &gw,
        &format!("\r\n\r\nGET /orders/1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status(&head), 200, "{head}");
}

/// Reads the whole answer on a connection the gateway closes.
fn read_all(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).to_string()
}

#[test]
fn connections_over_the_per_client_and_per_listener_caps_are_refused_clearly() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            server_extra: "max_connections_per_client = 3\nmax_connections = 5".into(),
            ..Default::default()
        },
    );
    let addr = gw.base.trim_start_matches("http://").to_string();
    let listener = addr.clone();
    // Three idle connections from 127.0.0.1 fill its share.
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    // Connections are admitted asynchronously: wait until the gateway counts all three.
    let open = format!("agentgate_connections_open{{listener=\"{listener}\"}}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&gw.metrics(), &open) < 3.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "open connections never reached 3"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut fourth = TcpStream::connect(&addr).unwrap();
    let answer = read_all(&mut fourth);
    assert_eq!(status(&answer), 503, "{answer}");
    assert!(
        answer.contains("\"reason\":\"too_many_connections\""),
        "{answer}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    let refused_client =
        format!("agentgate_connections_refused_total{{limit=\"client\",listener=\"{listener}\"}}");
    assert_eq!(metric(&gw.metrics(), &refused_client), 1.0);

    // Another client address (127.0.0.2 is loopback too) still gets in, up to the listener cap.
    let from = |ip: &str| connect_from(ip, &addr);
    let other: Vec<TcpStream> = (0..2).map(|_| from("127.0.0.2")).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&gw.metrics(), &open) < 5.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "open connections never reached 5"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut sixth = from("127.0.0.3");
    let answer = read_all(&mut sixth);
    assert_eq!(status(&answer), 503, "{answer}");
    assert!(answer.contains("too_many_connections"), "{answer}");
    let refused_listener = format!(
        "agentgate_connections_refused_total{{limit=\"listener\",listener=\"{listener}\"}}"
    );
    assert_eq!(metric(&gw.metrics(), &refused_listener), 1.0);

    // Closing connections frees the caps: a real request goes through again.
    drop(held);
    drop(other);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&gw.metrics(), &open) > 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "connections never closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
}

/// A TCP connection to `addr` from the loopback address `ip`.
fn connect_from(ip: &str, addr: &str) -> TcpStream {
    let local: std::net::SocketAddr = format!("{ip}:0").parse().unwrap();
    let socket = match local {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4().unwrap(),
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6().unwrap(),
    };
    socket.bind(local).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt.block_on(socket.connect(addr.parse().unwrap())).unwrap();
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// Request targets beyond `server.max_uri_bytes` are refused with 414, and no path is
/// written whole into the decision log.
#[test]
fn oversized_request_targets_get_414_and_are_logged_truncated() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(&servers, GatewaySpec::default());
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.sent(&token);
    let request = |target: &str| {
        raw(
            &gw,
            &format!("GET {target} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
        )
        .0
    };
    let huge = format!("/orders/{}", "a".repeat(60 * 1024));
    let head = request(&huge);
    assert_eq!(status(&head), 414, "{}", &head[..head.len().min(300)]);
    assert!(head.contains("\"reason\":\"uri_too_long\""));
    // Just over the default 8 KiB, counting the query too.
    let over = format!("/orders/1?q={}", "b".repeat(8 * 1024));
    assert_eq!(status(&request(&over)), 414);
    // Long but allowed: a 404 whose path is logged cut at 1 KiB.
    let long = format!("/nowhere/{}", "c".repeat(4 * 1024));
    assert_eq!(status(&request(&long)), 404);
    let decisions = gw.wait_decisions(3);
    let logged: Vec<(&str, usize, bool)> = decisions
        .iter()
        .map(|d| {
            (
                d["reason"].as_str().unwrap(),
                d["path"].as_str().unwrap().len(),
                d["path_truncated"] == true,
            )
        })
        .collect();
    // The query is never logged, so the second path is short; the others are cut.
    assert_eq!(
        logged,
        [
            ("uri_too_long", 1024, true),
            ("uri_too_long", "/orders/1".len(), false),
            ("no_route", 1024, true)
        ]
    );
}

#[test]
fn bodies_over_the_route_limit_get_413_declared_or_streamed() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let limited = |upstreams: Option<Vec<String>>| {
        Gateway::start(
            &servers,
            GatewaySpec {
                route_extra: "max_body_bytes = 1024".into(),
                upstreams,
                ..Default::default()
            },
        )
    };
    let gw = limited(None);
    let mut writer = spec(CallerKind::AgentApp);
    writer.roles = vec!["Orders.Write.All".into()];
    let token = mint(&key, &writer);
    gw.sent(&token);
    let head = |extra: &str| {
        format!("POST /orders/1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n{extra}\r\n")
    };
    let reason = |response: &str| {
        response
            .split("\"reason\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_string()
    };

    // Within the limit: forwarded.
    let body = "x".repeat(1024);
    let (response, _) = raw(
        &gw,
        &format!(
            "{}{body}",
            head("Content-Length: 1024\r\nConnection: close\r\n")
        ),
    );
    assert_eq!(status(&response), 200, "{response}");

    // Over it, in front of an upstream that counts the body bytes it receives.
    let silent = SilentUpstream::start(b'y');
    let gw = limited(Some(vec![silent.addr.clone()]));
    gw.sent(&token);

    // A declared length over the limit: refused before the upstream is contacted.
    let (response, closed) = raw(&gw, &head("Content-Length: 1025\r\n"));
    assert_eq!(status(&response), 413, "{response}");
    assert_eq!(reason(&response), "body_too_large", "{response}");
    assert!(closed, "the connection must close: the body was not read");
    assert_eq!(silent.accepted(), 0, "the upstream was contacted");

    // A chunked body with no declared length: counted as it streams. The first chunk
    // arrives alone and is forwarded; the second takes it past the limit, and nothing of
    // it or what follows reaches the upstream.
    let addr = gw.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let chunk = "y".repeat(600);
    s.write_all(
        format!(
            "{}258\r\n{chunk}\r\n",
            head("Transfer-Encoding: chunked\r\n")
        )
        .as_bytes(),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while silent.accepted() == 0 {
        assert!(std::time::Instant::now() < deadline, "never forwarded");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    // The gateway may already have closed: it answers once the limit is passed.
    let _ = s.write_all(format!("258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n").as_bytes());
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    assert_eq!(status(&response), 413, "{response}");
    assert_eq!(reason(&response), "body_too_large", "{response}");
    assert_eq!(
        silent.marked_once_closed(),
        600,
        "the upstream must get the first chunk and nothing past the limit"
    );

    // Both refusals are decisions in the log with that reason.
    let decisions = gw.wait_decisions(2);
    let refused = decisions
        .iter()
        .filter(|d| d["reason"] == "body_too_large" && d["status"] == 413)
        .count();
    assert_eq!(refused, 2, "{decisions:?}");
}
