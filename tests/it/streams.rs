//! Long-lived streams: WebSocket upgrades only where a route allows them, and open streams
//! (WebSocket, server-sent events) ended at the token's `exp`, on a reload whose policy
//! refuses them, and at the route's `request_timeout`. A real WebSocket client and echo
//! upstream (tokio-tungstenite) and the real gateway binary.

use crate::support::*;
use agentgate::identity::CallerKind;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The shipped access data with every `orders` rule repeated for the `live` route.
fn access_with_live_route() -> Value {
    let text = std::fs::read_to_string(repo().join("policies/data/access.json")).unwrap();
    let mut access: Value = serde_json::from_str(&text).unwrap();
    let to_live = |rules: &Value| {
        let mut rules = rules.clone();
        for rule in rules.as_array_mut().unwrap() {
            rule["path_prefixes"] = serde_json::json!(["/live"]);
        }
        rules
    };
    for blueprint in access["blueprints"].as_object_mut().unwrap().values_mut() {
        if let Some(orders) = blueprint["routes"].get("orders").cloned() {
            blueprint["routes"]["live"] = to_live(&orders);
        }
    }
    let non_agent = access["non_agent"]["orders"].clone();
    access["non_agent"]["live"] = to_live(&non_agent);
    access
}

/// A WebSocket echo server; the handshake headers of each connection are recorded.
fn echo_upstream(rt: &tokio::runtime::Runtime) -> (String, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                // The error type is tungstenite's to choose.
                #[allow(clippy::result_large_err)]
                let callback = |req: &http::Request<()>, resp| {
                    record.lock().unwrap().push(req.headers().clone());
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A gateway with a `live` route (WebSocket upgrades allowed) to `upstream`.
fn live_gateway(servers: &Servers, upstream: &str, route_lines: &str) -> Gateway {
    live_gateway_with(
        servers,
        upstream,
        route_lines,
        GatewaySpec {
            data: vec![("access.json", access_with_live_route())],
            ..Default::default()
        },
    )
}

/// As [`live_gateway`], otherwise as `spec` says.
fn live_gateway_with(
    servers: &Servers,
    upstream: &str,
    route_lines: &str,
    spec: GatewaySpec,
) -> Gateway {
    Gateway::start(
        servers,
        GatewaySpec {
            extra_config: format!(
                r#"
[[routes]]
id = "live"
path_prefix = "/live"
upstreams = ["{upstream}"]
audiences = ["{API_URI}"]
websocket = true
read_timeout = "60s"
{route_lines}
"#
            ),
            ..spec
        },
    )
}

/// Opens a WebSocket to `path` with `token`; the refusal's status and body otherwise.
async fn connect(gw: &Gateway, path: &str, token: Option<&str>) -> Result<Socket, (u16, Value)> {
    let url = format!("{}{path}", gw.base.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    if let Some(t) = token {
        gw.sent(t);
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("WebSocket connect failed: {e}"),
    }
}

/// Sends `text` and expects it back.
async fn echo(ws: &mut Socket, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an echo within 5 s")
        .expect("the stream is open")
        .expect("a message");
    assert_eq!(back, Message::text(text));
}

/// Waits up to `limit` for the stream to end; when it ended.
async fn ended_within(ws: &mut Socket, limit: Duration) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return Some(Instant::now()),
            Ok(Some(Ok(_))) => {}
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn websockets_pass_where_the_route_allows_them_and_nowhere_else() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (upstream, seen) = echo_upstream(&rt);
    let gw = live_gateway(&servers, &upstream, "");
    let token = mint(&key, &spec(CallerKind::AgentApp));
    rt.block_on(async {
        let mut ws = connect(&gw, "/live/chat", Some(&token)).await.unwrap();
        echo(&mut ws, "hello").await;
        echo(&mut ws, "again").await;

        let (status, body) = connect(&gw, "/live/chat", None).await.unwrap_err();
        assert_eq!(
            (status, body["reason"].as_str()),
            (401, Some("missing_token"))
        );
        // The orders route does not allow upgrades: refused before the token is read.
        let (status, body) = connect(&gw, "/orders/chat", Some(&token))
            .await
            .unwrap_err();
        assert_eq!(
            (status, body["reason"].as_str()),
            (403, Some("upgrade_not_allowed"))
        );
    });
    // Only the allowed upgrade reached the upstream, with the identity headers and
    // without the token.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["x-agentgate-agent-id"], AGENT_EMEA);
    assert_eq!(seen[0]["x-agentgate-caller-kind"], "agent_app");
    assert!(!seen[0].contains_key("authorization"));
    let decisions = gw.wait_decisions(3);
    let refused = decisions
        .iter()
        .find(|d| d["reason"] == "upgrade_not_allowed")
        .expect("the refused upgrade is logged");
    assert_eq!(
        (refused["status"].as_u64(), refused["route"].as_str()),
        (Some(403), Some("orders"))
    );
}

#[test]
fn an_h2c_upgrade_offer_is_dropped_and_the_request_served() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(&servers, GatewaySpec::default());
    let token = mint(&key, &spec(CallerKind::AgentApp));
    // What `curl --http2 http://...` sends.
    let reply = gw.call_with(
        "GET",
        "/orders/1",
        Some(&token),
        &[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        ],
    );
    reply.assert_allowed();
    assert_eq!(reply.upstream_header("upgrade"), None);
    assert_eq!(reply.upstream_header("http2-settings"), None);
}

#[test]
fn an_open_websocket_ends_when_its_token_expires() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (upstream, _) = echo_upstream(&rt);
    let gw = live_gateway(&servers, &upstream, "");
    let mut short = spec(CallerKind::AgentApp);
    short.lifetime_secs = 4;
    let token = mint(&key, &short);
    let exp = (short.issued_at + 4) as f64;
    let ended_at = rt.block_on(async {
        let mut ws = connect(&gw, "/live/chat", Some(&token)).await.unwrap();
        // Open and working until just before exp.
        while unix_now() < exp - 1.0 {
            echo(&mut ws, "ping").await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        ended_within(&mut ws, Duration::from_secs(6)).await
    });
    let ended_at = ended_at.expect("the stream outlived its token");
    let ended_unix = unix_now() - ended_at.elapsed().as_secs_f64();
    eprintln!("the stream ended {:.3} s after exp", ended_unix - exp);
    assert!(
        ended_unix >= exp - 0.05 && ended_unix <= exp + 0.5,
        "ended at {ended_unix:.3}, token exp {exp}"
    );
    let metrics = gw.metrics();
    assert_eq!(
        metric(
            &metrics,
            r#"agentgate_streams_closed_total{cause="token_expired",route="live"}"#
        ),
        1.0
    );
    let decisions = gw.wait_decisions(1);
    assert_eq!(
        decisions[0]["stream_closed"], "token_expired",
        "{decisions:?}"
    );
    assert_eq!(decisions[0]["allow"], true);
    assert_eq!(decisions[0]["status"], 101);
}

#[test]
fn a_reload_that_refuses_an_open_stream_ends_it_and_only_it() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (upstream, _) = echo_upstream(&rt);
    let gw = live_gateway(&servers, &upstream, "");
    let agent = mint(&key, &spec(CallerKind::AgentApp));
    let app = mint(&key, &spec(CallerKind::App));
    let (mut agent_ws, mut app_ws) = rt.block_on(async {
        let mut a = connect(&gw, "/live/chat", Some(&agent)).await.unwrap();
        let mut b = connect(&gw, "/live/chat", Some(&app)).await.unwrap();
        echo(&mut a, "agent").await;
        echo(&mut b, "app").await;
        (a, b)
    });
    // The sales blueprint loses the live route; the classic app keeps it.
    let mut access = access_with_live_route();
    access["blueprints"][BP_SALES]["routes"]
        .as_object_mut()
        .unwrap()
        .remove("live");
    std::fs::write(
        gw.dir.path().join("policies/data/access.json"),
        serde_json::to_vec_pretty(&access).unwrap(),
    )
    .unwrap();
    let (status, body) = gw.reload();
    assert_eq!(status, 200, "{body}");
    let swapped = Instant::now();
    let ended = rt.block_on(ended_within(&mut agent_ws, Duration::from_secs(5)));
    let took = ended.expect("the refused stream stayed open") - swapped;
    eprintln!("refused stream ended {took:?} after the reload");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    rt.block_on(echo(&mut app_ws, "still here"));
    let metrics = gw.metrics();
    assert_eq!(
        metric(
            &metrics,
            r#"agentgate_streams_closed_total{cause="denied",route="live"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "agentgate_streams_closed_total{cause=\"token_expired\""
        ),
        0.0
    );
    let decisions = gw.wait_decisions(1);
    let closed: Vec<&Value> = decisions
        .iter()
        .filter(|d| d.get("stream_closed").is_some())
        .collect();
    assert_eq!(closed.len(), 1, "{decisions:?}");
    assert_eq!(closed[0]["caller_kind"], "agent_app");
    assert_eq!(closed[0]["stream_closed"], "route_not_allowed");
}

#[test]
fn request_timeout_bounds_a_slow_answer_and_an_open_event_stream() {
    use std::io::{Read, Write};
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    // Answers the first connection never, the others with an event stream that stays open.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (n, conn) in listener.incoming().enumerate() {
            let mut c = conn.unwrap();
            if n > 0 {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                let _ = c.write_all(format!("{head}d\r\ndata: first\n\n\r\n").as_bytes());
            }
            held.push(c);
        }
    });
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            upstreams: Some(vec![upstream]),
            route_extra: "request_timeout = \"500ms\"".into(),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    // Before the answer began: 504 request_timeout (the route's read_timeout is 2 s).
    let started = Instant::now();
    gw.call("GET", "/orders/slow", Some(&token))
        .assert_denied(504, "request_timeout");
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    // During the answer: the event stream ends about half a second after the request began.
    gw.sent(&token);
    let started = Instant::now();
    let mut response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("{}/orders/events", gw.base))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut first = [0u8; 13];
    response.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"data: first\n\n");
    let mut rest = Vec::new();
    assert!(
        response.read_to_end(&mut rest).is_err(),
        "the stream ended cleanly"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "ended after {took:?}"
    );
    let metrics = gw.metrics();
    assert_eq!(
        metric(
            &metrics,
            r#"agentgate_streams_closed_total{cause="request_timeout",route="orders"}"#
        ),
        2.0
    );
}

#[test]
fn a_request_the_guard_ended_is_not_sent_again() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    // Answers the first request on each connection and holds every later one: the second
    // request through the gateway waits on a pooled connection, which pingora would
    // otherwise retry on a new one (where it would be answered).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap().to_string();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut c = conn.unwrap();
            let counter = counter.clone();
            std::thread::spawn(move || {
                let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
                let mut answered = false;
                while let Ok(n @ 1..) = c.read(&mut buf) {
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        counter.fetch_add(1, Ordering::SeqCst);
                        if !answered {
                            answered = true;
                            let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                        }
                    }
                }
            });
        }
    });
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            upstreams: Some(vec![upstream]),
            route_extra: "request_timeout = \"500ms\"".into(),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    let first = gw.call("GET", "/orders/1", Some(&token));
    assert_eq!((first.status, first.body.as_str()), (200, Some("ok")));
    gw.call("GET", "/orders/2", Some(&token))
        .assert_denied(504, "request_timeout");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(received.load(Ordering::SeqCst), 2);
}

#[test]
fn the_policy_sees_a_websocket_upgrade_as_one() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (upstream, _) = echo_upstream(&rt);
    let rego = r#"package agentgate

default decision := {"allow": false, "reason": "websocket_only"}

decision := {"allow": true, "reason": "upgrade_seen"} if input.request.upgrade == "websocket"
"#;
    let gw = live_gateway_with(
        &servers,
        &upstream,
        "",
        GatewaySpec {
            rego: Some(vec![("policy.rego", rego.into())]),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    rt.block_on(async {
        let mut ws = connect(&gw, "/live/chat", Some(&token)).await.unwrap();
        echo(&mut ws, "upgraded").await;
    });
    gw.call("GET", "/live/chat", Some(&token))
        .assert_denied(403, "websocket_only");
}
