//! gRPC routes: a real tonic client through the gateway (h2c) to a real tonic server behind
//! it (h2c upstream), unary and server-streaming; refusals a gRPC client understands
//! (`grpc-status` 16 and 7 with the reason in `grpc-message`); the upstream's own statuses
//! counted by `grpc-status`; open streams ended at `exp` and by a refusing reload.

use crate::support::*;
use agentgate::identity::CallerKind;
use serde_json::Value;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::server::HealthReporter;

/// The health service's path prefix, routed as gRPC.
const SERVICE: &str = "/grpc.health.v1.Health";

/// The shipped access data plus a rule letting the sales blueprint call the health service.
fn access_with_health_route() -> Value {
    let text = std::fs::read_to_string(repo().join("policies/data/access.json")).unwrap();
    let mut access: Value = serde_json::from_str(&text).unwrap();
    access["blueprints"][BP_SALES]["routes"]["health"] = serde_json::json!([
        {"methods": ["POST"], "path_prefixes": [SERVICE], "roles": ["Orders.Read.All"], "scopes": ["Orders.Read"]}
    ]);
    access
}

/// A tonic health server on a free port, reporting `orders` as serving.
async fn health_server() -> (std::net::SocketAddr, HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("orders", tonic_health::ServingStatus::Serving)
        .await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve(addr),
    );
    // Serving once a TCP connection is accepted.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return (addr, reporter);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the gRPC upstream did not start");
}

fn grpc_gateway(servers: &Servers, upstream: std::net::SocketAddr) -> Gateway {
    Gateway::start(
        servers,
        GatewaySpec {
            data: vec![("access.json", access_with_health_route())],
            server_extra: "h2c = true".into(),
            extra_config: format!(
                r#"
[[routes]]
id = "health"
path_prefix = "{SERVICE}"
upstreams = ["{upstream}"]
audiences = ["{API_URI}"]
grpc = true
"#
            ),
            ..Default::default()
        },
    )
}

async fn client(gw: &Gateway) -> HealthClient<Channel> {
    let channel = Channel::from_shared(gw.base.clone())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

/// A request for `service`, carrying `token` when there is one.
fn check(service: &str, gw: &Gateway, token: Option<&str>) -> tonic::Request<HealthCheckRequest> {
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: service.into(),
    });
    if let Some(t) = token {
        gw.sent(t);
        let value: MetadataValue<_> = format!("Bearer {t}").parse().unwrap();
        req.metadata_mut().insert("authorization", value);
    }
    req
}

/// Asserts a refusal's gRPC code, message and decision id.
fn assert_refused(status: &tonic::Status, code: tonic::Code, reason: &str) {
    assert_eq!(
        (status.code(), status.message()),
        (code, reason),
        "{status:?}"
    );
    let id = status.metadata().get("x-agentgate-decision-id");
    assert!(
        id.is_some_and(|v| !v.is_empty()),
        "no decision id: {status:?}"
    );
}

#[test]
fn grpc_unary_and_streaming_calls_are_allowed_and_refused_as_grpc() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (upstream, reporter) = rt.block_on(health_server());
    let gw = grpc_gateway(&servers, upstream);
    let allowed = mint(&key, &spec(CallerKind::AgentApp));
    // The classic app has no rule for the health route: policy denies it.
    let denied = mint(&key, &spec(CallerKind::App));

    rt.block_on(async {
        let mut client = client(&gw).await;

        // Unary: allowed, then both refusals, then the upstream's own NOT_FOUND.
        let ok = client
            .check(check("orders", &gw, Some(&allowed)))
            .await
            .unwrap();
        assert_eq!(ok.get_ref().status(), ServingStatus::Serving);
        let missing = client.check(check("orders", &gw, None)).await.unwrap_err();
        assert_refused(&missing, tonic::Code::Unauthenticated, "missing_token");
        let bad = client
            .check(check("orders", &gw, Some("not.a.token")))
            .await
            .unwrap_err();
        assert_refused(&bad, tonic::Code::Unauthenticated, "malformed_token");
        let forbidden = client
            .check(check("orders", &gw, Some(&denied)))
            .await
            .unwrap_err();
        assert_refused(
            &forbidden,
            tonic::Code::PermissionDenied,
            "non_agent_denied",
        );
        let unknown = client
            .check(check("no-such-service", &gw, Some(&allowed)))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

        // Server-streaming: each status change arrives while the stream stays open.
        let mut stream = client
            .watch(check("orders", &gw, Some(&allowed)))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(first.status(), ServingStatus::Serving);
        reporter
            .set_service_status("orders", tonic_health::ServingStatus::NotServing)
            .await;
        let second = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("the second streamed message")
            .unwrap()
            .unwrap();
        assert_eq!(second.status(), ServingStatus::NotServing);
        drop(stream);
        let refused = client
            .watch(check("orders", &gw, Some(&denied)))
            .await
            .unwrap_err();
        assert_refused(&refused, tonic::Code::PermissionDenied, "non_agent_denied");
    });

    // The upstream's answers by grpc-status: the allowed check (OK) and the unknown service
    // (NOT_FOUND); the stream ended by the client has none; refusals never reached it.
    let metrics = gw.metrics();
    assert_eq!(
        metric(
            &metrics,
            r#"agentgate_grpc_responses_total{grpc_status="0",route="health"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"agentgate_grpc_responses_total{grpc_status="5",route="health"}"#
        ),
        1.0,
        "{metrics}"
    );
    let decisions = gw.wait_decisions(7);
    let grpc: Vec<(bool, u64, &str)> = decisions
        .iter()
        .filter(|d| d["route"] == "health")
        .filter_map(|d| {
            Some((
                d["allow"].as_bool()?,
                d["grpc_status"].as_u64()?,
                d["reason"].as_str()?,
            ))
        })
        .collect();
    assert!(grpc.contains(&(false, 16, "missing_token")), "{grpc:?}");
    assert!(grpc.contains(&(false, 7, "non_agent_denied")), "{grpc:?}");
    assert!(grpc.contains(&(true, 0, "allowed")), "{grpc:?}");
    assert!(grpc.contains(&(true, 5, "allowed")), "{grpc:?}");
}

#[test]
fn grpc_refusals_are_grpc_shaped_for_http1_clients_too() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (upstream, _reporter) = rt.block_on(health_server());
    let gw = grpc_gateway(&servers, upstream);
    // An HTTP/1.1 refusal on a gRPC route is still gRPC-shaped: 200 with grpc-status.
    let reply = reqwest::blocking::Client::new()
        .post(format!("{}{SERVICE}/Check", gw.base))
        .header("content-type", "application/grpc")
        .send()
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["grpc-status"], "16");
    assert_eq!(reply.headers()["grpc-message"], "missing_token");
    assert_eq!(reply.headers()["content-type"], "application/grpc");
    // Routes that are not gRPC keep their JSON refusals.
    gw.call("GET", "/orders/1", None)
        .assert_denied(401, "missing_token");
}

/// Opens a watch on `orders` with `token` and reads its first message.
async fn open_watch(
    client: &mut HealthClient<Channel>,
    gw: &Gateway,
    token: &str,
) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    let mut stream = client
        .watch(check("orders", gw, Some(token)))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    stream
}

/// Waits up to `limit` for `stream` to end; the status it ended with and when.
async fn ended(
    stream: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
    limit: Duration,
) -> (tonic::Status, std::time::Instant) {
    match tokio::time::timeout(limit, stream.message()).await {
        Ok(Err(status)) => (status, std::time::Instant::now()),
        Ok(Ok(message)) => panic!("the stream went on: {message:?}"),
        Err(_) => panic!("the stream stayed open for {limit:?}"),
    }
}

#[test]
fn an_open_grpc_stream_ends_on_a_reload_that_refuses_it_and_at_its_tokens_exp() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (upstream, _reporter) = rt.block_on(health_server());
    let gw = grpc_gateway(&servers, upstream);
    let mut short = spec(CallerKind::AgentApp);
    short.lifetime_secs = 3;
    let short_lived = mint(&key, &short);
    let exp = short.issued_at + 3;
    let token = mint(&key, &spec(CallerKind::AgentApp));

    let mut client = rt.block_on(client(&gw));
    // At exp: UNAUTHENTICATED token_expired in the call's trailers (the guard wakes at exp;
    // the bound leaves room for a loaded machine).
    let (status, _) = rt.block_on(async {
        let mut expiring = open_watch(&mut client, &gw, &short_lived).await;
        ended(&mut expiring, Duration::from_secs(6)).await
    });
    let late = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - exp as f64;
    assert!((0.0..0.5).contains(&late), "ended {late:.3}s after exp");
    assert_refused(&status, tonic::Code::Unauthenticated, "token_expired");

    // A reload that takes the route from the caller's blueprint: PERMISSION_DENIED.
    let mut watched = rt.block_on(open_watch(&mut client, &gw, &token));
    let mut access = access_with_health_route();
    access["blueprints"][BP_SALES]["routes"]
        .as_object_mut()
        .unwrap()
        .remove("health");
    std::fs::write(
        gw.dir.path().join("policies/data/access.json"),
        serde_json::to_vec_pretty(&access).unwrap(),
    )
    .unwrap();
    let (code, body) = gw.reload();
    assert_eq!(code, 200, "{body}");
    let swapped = std::time::Instant::now();
    let (status, at) = rt.block_on(ended(&mut watched, Duration::from_secs(5)));
    assert!(
        at - swapped < Duration::from_secs(1),
        "took {:?}",
        at - swapped
    );
    assert_refused(&status, tonic::Code::PermissionDenied, "route_not_allowed");

    let metrics = gw.metrics();
    for cause in ["token_expired", "denied"] {
        let series = format!(r#"agentgate_streams_closed_total{{cause="{cause}",route="health"}}"#);
        assert_eq!(metric(&metrics, &series), 1.0, "{metrics}");
    }
    let decisions = gw.wait_decisions(2);
    let closed: Vec<(bool, u64, &str)> = decisions
        .iter()
        .filter_map(|d| {
            Some((
                d["allow"].as_bool()?,
                d["grpc_status"].as_u64()?,
                d["stream_closed"].as_str()?,
            ))
        })
        .collect();
    assert_eq!(
        closed,
        [(true, 16, "token_expired"), (true, 7, "route_not_allowed")],
        "{decisions:?}"
    );
}
