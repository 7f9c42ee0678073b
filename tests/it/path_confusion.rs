//! Path confusion: request targets that known proxies and servers have read differently
//! (Tomcat and Spring path parameters, nginx merge-slashes and alias off-by-slash, IIS
//! backslashes, `%u` and overlong UTF-8, double decoding), each sent as raw bytes to a
//! gateway whose token is allowed `/orders` only. For every shape the table states the
//! outcome: refused with an exact status and reason, or forwarded with exactly which path
//! (as the echo upstream received it).

use crate::support::*;
use agentgate::identity::CallerKind;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What must happen to one request target.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The gateway refuses with this status and reason.
    Refused(u16, &'static str),
    /// The upstream receives exactly this path.
    Forwarded(&'static str),
}
use Expect::*;

/// `(origin of the shape, request target, expectation)`.
const SHAPES: &[(&str, &str, Expect)] = &[
    // Tomcat / Jetty: `;` path parameters are stripped before routing, so `..;` is `..`.
    ("tomcat", "/orders/..;/admin", Refused(400, "invalid_path")),
    ("tomcat", "/orders;/../admin", Refused(400, "invalid_path")),
    ("tomcat", "/orders/;/../admin", Refused(400, "invalid_path")),
    ("tomcat", "/orders/.;/admin", Refused(400, "invalid_path")),
    (
        "tomcat",
        "/orders;jsessionid=abc/42",
        Refused(400, "invalid_path"),
    ),
    (
        "tomcat",
        "/orders/%2e%2e;/admin",
        Refused(400, "invalid_path"),
    ),
    (
        "tomcat",
        "/orders/..;x=1/admin",
        Refused(400, "invalid_path"),
    ),
    // Spring: encoded dots and separators decoded after security checks.
    (
        "spring",
        "/orders/%2e%2e/admin",
        Refused(400, "invalid_path"),
    ),
    ("spring", "/orders/%2E./admin", Refused(400, "invalid_path")),
    ("spring", "/orders/.%2e/admin", Refused(400, "invalid_path")),
    ("spring", "/orders/%2e/admin", Refused(400, "invalid_path")),
    ("spring", "/orders/..%2fadmin", Refused(400, "invalid_path")),
    ("spring", "/orders%2fadmin", Refused(400, "invalid_path")),
    (
        "spring",
        "/orders/%2F..%2Fadmin",
        Refused(400, "invalid_path"),
    ),
    ("spring", "/orders/42%0a", Refused(400, "invalid_path")),
    (
        "spring",
        "/orders/42%0d%0aX-Injected:%20y",
        Refused(400, "invalid_path"),
    ),
    ("spring", "/orders/%00/admin", Refused(400, "invalid_path")),
    ("spring", "/orders/%7f", Refused(400, "invalid_path")),
    // Plain traversal.
    (
        "traversal",
        "/orders/../admin",
        Refused(400, "invalid_path"),
    ),
    ("traversal", "/orders/./42", Refused(400, "invalid_path")),
    ("traversal", "/orders/..", Refused(400, "invalid_path")),
    (
        "traversal",
        "/orders//../admin",
        Refused(400, "invalid_path"),
    ),
    // nginx: merge_slashes, and the alias off-by-slash (`location /orders` + `alias`).
    ("nginx", "/orders//42", Forwarded("/orders/42")),
    ("nginx", "//orders/42", Forwarded("/orders/42")),
    ("nginx", "/orders///", Forwarded("/orders/")),
    ("nginx", "/orders../admin", Refused(404, "no_route")),
    ("nginx", "/orders..%2fadmin", Refused(400, "invalid_path")),
    ("nginx", "/ordersx", Refused(404, "no_route")),
    ("nginx", "/ORDERS/42", Refused(404, "no_route")),
    // IIS / Windows: `%u` escapes, trailing dots and spaces, backslashes.
    (
        "iis",
        "/orders/%u002e%u002e/admin",
        Refused(400, "invalid_path"),
    ),
    ("iis", "/orders/%5c..%5cadmin", Refused(400, "invalid_path")),
    ("iis", "/orders/..%5cadmin", Refused(400, "invalid_path")),
    ("iis", "/orders/..%20/admin", Refused(400, "invalid_path")),
    ("iis", "/orders/.../admin", Refused(400, "invalid_path")),
    ("iis", "/orders/.%20/admin", Refused(400, "invalid_path")),
    (
        "iis",
        "/orders/..%c0%af/admin",
        Refused(400, "invalid_path"),
    ),
    (
        "iis",
        "/orders/%c0%ae%c0%ae/admin",
        Refused(400, "invalid_path"),
    ),
    (
        "iis",
        "/orders/%e0%80%ae%e0%80%ae/admin",
        Refused(400, "invalid_path"),
    ),
    ("iis", "/orders/%c1%9c", Refused(400, "invalid_path")),
    ("iis", "/orders/%ff", Refused(400, "invalid_path")),
    // Double decoding: a second decoding turns `%252e` into `.`.
    (
        "double",
        "/orders/%252e%252e/admin",
        Refused(400, "invalid_path"),
    ),
    (
        "double",
        "/orders/%252E%252E%252Fadmin",
        Refused(400, "invalid_path"),
    ),
    (
        "double",
        "/orders/%25252e%25252e/admin",
        Refused(400, "invalid_path"),
    ),
    ("double", "/orders/%255c", Refused(400, "invalid_path")),
    ("double", "/orders/%252f", Refused(400, "invalid_path")),
    ("double", "/orders/%25u002e", Refused(400, "invalid_path")),
    ("double", "/orders/%2500", Refused(400, "invalid_path")),
    // The escape after `%25` itself escaped: `%25%32%65` is `%252e` once `2` and `e` decode.
    (
        "double",
        "/orders/%25%32%65%25%32%65/admin",
        Refused(400, "invalid_path"),
    ),
    ("double", "/orders/%25%75002e", Refused(400, "invalid_path")),
    ("double", "/orders/50%25off", Forwarded("/orders/50%25off")),
    // Malformed escapes.
    ("escape", "/orders/%", Refused(400, "invalid_path")),
    ("escape", "/orders/%zz", Refused(400, "invalid_path")),
    ("escape", "/orders/%2", Refused(400, "invalid_path")),
    // Normalisation: unreserved characters decoded, other escapes upper-cased.
    ("normalise", "/%6Frders/42", Forwarded("/orders/42")),
    ("normalise", "/orders/%34%32", Forwarded("/orders/42")),
    ("normalise", "/orders/a%7eb", Forwarded("/orders/a~b")),
    (
        "normalise",
        "/orders/file%2ejson",
        Forwarded("/orders/file.json"),
    ),
    ("normalise", "/orders/%3a", Forwarded("/orders/%3A")),
    (
        "normalise",
        "/orders/caf%C3%A9",
        Forwarded("/orders/caf%C3%A9"),
    ),
    ("normalise", "/orders/.hidden", Forwarded("/orders/.hidden")),
    ("normalise", "/orders/42.", Forwarded("/orders/42.")),
    (
        "normalise",
        "/orders/42?next=/../admin",
        Forwarded("/orders/42"),
    ),
    // Absolute form: the target's own authority and path, sent upstream in origin form.
    (
        "absolute",
        "http://api.example/orders/42",
        Forwarded("/orders/42"),
    ),
    (
        "absolute",
        "http://api.example/orders/../admin",
        Refused(400, "invalid_path"),
    ),
    (
        "absolute",
        "http://api.example//orders//42",
        Forwarded("/orders/42"),
    ),
    // Not an origin-form path at all.
    ("form", "*", Refused(400, "invalid_path")),
];

/// Sends `GET target` with `token` as raw bytes; returns the status and the JSON body.
fn send(gw: &Gateway, target: &str, token: &str) -> (u16, Value) {
    send_raw(
        gw,
        &format!("GET {target} HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    )
}

#[test]
fn path_confusion_shapes_are_refused_or_forwarded_normalised() {
    assert!(SHAPES.len() >= 40, "only {} shapes", SHAPES.len());
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(&servers, GatewaySpec::default());
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.sent(&token);
    let mut wrong = Vec::new();
    for (origin, target, expect) in SHAPES {
        let (status, body) = send(&gw, target, &token);
        let ok = match expect {
            Refused(want, reason) => {
                status == *want && body["reason"] == *reason && body["service"] != "sample-api"
            }
            Forwarded(path) => {
                status == 200 && body["service"] == "sample-api" && body["path"] == *path
            }
        };
        if !ok {
            wrong.push(format!(
                "[{origin}] {target}: expected {expect:?}, got {status} {body}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Sends raw request bytes; returns the status and the JSON body.
fn send_raw(gw: &Gateway, request: &str) -> (u16, Value) {
    let addr = gw.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Host routing reads the host one way: the absolute-form authority over `Host`, any case, a
/// trailing dot dropped; the upstream gets that host and an origin-form target.
#[test]
fn hosts_are_read_one_way_for_routing_and_forwarding() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            route_extra: "hosts = [\"api.example\"]".into(),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.sent(&token);
    let get = |target: &str, host: Option<&str>| {
        let host = host.map_or(String::new(), |h| format!("Host: {h}\r\n"));
        send_raw(
            &gw,
            &format!("GET {target} HTTP/1.1\r\n{host}Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
        )
    };
    let routed = |(status, body): (u16, Value), host: &str| {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["headers"]["host"], host, "{body}");
        assert_eq!(body["path"], "/orders/1", "{body}");
    };
    routed(get("/orders/1", Some("api.example")), "api.example");
    routed(get("/orders/1", Some("API.Example.")), "API.Example.");
    routed(
        get("/orders/1", Some("api.example.:8080")),
        "api.example.:8080",
    );
    // Absolute form: the authority routes and is what the upstream is told, Host or not.
    routed(get("http://api.example/orders/1", None), "api.example");
    // The HTTP layer itself refuses an absolute-form authority that differs from `Host`.
    let (status, body) = get("http://api.example/orders/1", Some("other.example"));
    assert_eq!(status, 400, "{body}");
    assert_ne!(body["service"], "sample-api");
    routed(get("http://api.example./orders/1", None), "api.example");
    routed(get("http://API.example/orders/1", None), "api.example");
    let (status, body) = get("http://other.example/orders/1", None);
    assert_eq!(
        (status, &body["reason"]),
        (404, &Value::from("no_route")),
        "{body}"
    );
    // No host at all, or a malformed one; two `Host` headers the HTTP layer refuses itself.
    let (status, body) = get("/orders/1", None);
    assert_eq!(
        (status, &body["reason"]),
        (400, &Value::from("missing_host")),
        "{body}"
    );
    let (status, body) = send_raw(
        &gw,
        &format!("GET /orders/1 HTTP/1.1\r\nHost: api.example\r\nHost: other.example\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 400, "{body}");
    assert_ne!(body["service"], "sample-api");
    let (status, body) = get("/orders/1", Some("api.example.."));
    assert_eq!(
        (status, &body["reason"]),
        (400, &Value::from("invalid_host")),
        "{body}"
    );
}
