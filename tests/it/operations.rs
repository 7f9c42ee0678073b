//! Running it in production: live reload under load, kill switches without restart,
//! metrics, and graceful upgrade.

use crate::support::*;
use agentgate::dev::SigningIdentity;
use agentgate::identity::CallerKind;
use agentgate::policy::PolicyFiles;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ALLOW_SET: &str =
    "package agentgate\n\ndecision := {\"allow\": true, \"reason\": \"set_a\"}\n";
const ALLOW_TEST: &str = "package agentgate_test\n\ntest_allows if data.agentgate.decision.allow\n";
const DENY_SET: &str =
    "package agentgate\n\ndecision := {\"allow\": false, \"status\": 403, \"reason\": \"set_b\"}\n";
const DENY_TEST: &str =
    "package agentgate_test\n\ntest_denies if not data.agentgate.decision.allow\n";

/// The four kinds of broken set; each must be refused.
fn broken(i: usize) -> (&'static str, &'static str) {
    match i % 3 {
        0 => ("package agentgate\n\ndecision := {\"allow\": true,\n", ALLOW_TEST),
        1 => (ALLOW_SET, DENY_TEST),
        _ => (
            "package agentgate\n\ndecision := {\"allow\": true, \"reason\": \"a\"}\n\ndecision := {\"allow\": false, \"reason\": \"b\"}\n",
            "package agentgate_test\n\ntest_nothing if true\n",
        ),
    }
}

fn write_set(dir: &Path, policy: &str, test: &str, generation: usize) -> String {
    // The generation comment makes every set a distinct revision.
    std::fs::write(
        dir.join("policy.rego"),
        format!("# generation {generation}\n{policy}"),
    )
    .unwrap();
    std::fs::write(dir.join("policy_test.rego"), test).unwrap();
    PolicyFiles::read(dir).unwrap().revision()
}

#[test]
fn reloads_under_load_never_serve_a_broken_set() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Arc::new(Gateway::start(
        &servers,
        GatewaySpec {
            rego: Some(vec![
                ("policy.rego", ALLOW_SET.into()),
                ("policy_test.rego", ALLOW_TEST.into()),
            ]),
            extra_config: "\n[reload]\nwatch = false\n".into(),
            ..Default::default()
        },
    ));
    let dir = gw.dir.path().join("policies");
    let mut valid: HashMap<String, &str> = HashMap::new();
    valid.insert(PolicyFiles::read(&dir).unwrap().revision(), "set_a");
    let mut refused = HashSet::new();

    let stop = Arc::new(AtomicBool::new(false));
    let token = mint(&key, &spec(CallerKind::AgentApp));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (gw, stop, token) = (gw.clone(), stop.clone(), token.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let r = gw.call("GET", "/orders/1", Some(&token));
                    let reason = if r.status == 200 {
                        "set_a".to_string()
                    } else {
                        r.reason().to_string()
                    };
                    let id = r.headers["x-agentgate-decision-id"]
                        .to_str()
                        .unwrap()
                        .to_string();
                    seen.push((r.status, reason, id));
                }
                seen
            })
        })
        .collect();

    for i in 0..200 {
        if i % 2 == 0 {
            let (policy, test, reason) = if i % 4 == 0 {
                (DENY_SET, DENY_TEST, "set_b")
            } else {
                (ALLOW_SET, ALLOW_TEST, "set_a")
            };
            let rev = write_set(&dir, policy, test, i);
            let (status, body) = gw.reload();
            assert_eq!(status, 200, "valid set {i} refused: {body}");
            assert_eq!(body["revision"], rev.as_str());
            valid.insert(rev, reason);
        } else {
            let (policy, test) = broken(i / 2);
            let rev = write_set(&dir, policy, test, i);
            let (status, body) = gw.reload();
            assert_eq!(status, 422, "broken set {i} accepted: {body}");
            refused.insert(rev);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let responses: Vec<_> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(
        responses.len() >= 50,
        "too little traffic during the reloads: {}",
        responses.len()
    );

    // The decision log is written by a background thread: wait for the last records.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log: HashMap<String, serde_json::Value> = loop {
        let log: HashMap<String, serde_json::Value> = gw
            .decisions()
            .into_iter()
            .map(|d| (d["decision_id"].as_str().unwrap().to_string(), d))
            .collect();
        if responses.iter().all(|(_, _, id)| log.contains_key(id)) {
            break log;
        }
        assert!(Instant::now() < deadline, "decisions missing from the log");
        std::thread::sleep(Duration::from_millis(10));
    };
    for (status, reason, id) in &responses {
        assert!(
            *status == 200 || *status == 403,
            "status {status} ({reason}) during reloads"
        );
        let record = &log[id];
        let revision = record["revision"].as_str().unwrap();
        assert!(
            !refused.contains(revision) || valid.contains_key(revision),
            "a refused set served {id}"
        );
        // The outcome is exactly what that complete revision decides.
        assert_eq!(
            valid.get(revision),
            Some(&reason.as_str()),
            "decision {id} does not match revision {revision}"
        );
    }
    let served: HashSet<&str> = log
        .values()
        .map(|d| d["revision"].as_str().unwrap())
        .collect();
    assert!(
        served.len() > 10,
        "traffic saw only {} revisions",
        served.len()
    );
}

#[test]
fn disabling_a_blueprint_blocks_its_agents_without_restart() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            extra_config: "\n[reload]\ndebounce = \"50ms\"\n".into(),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.call("GET", "/orders/1", Some(&token)).assert_allowed();

    let path = gw.dir.path().join("policies/data/directory.json");
    let original = std::fs::read_to_string(&path).unwrap();
    let mut directory: serde_json::Value = serde_json::from_str(&original).unwrap();
    directory["blueprints"][BP_SALES]["disabled"] = true.into();

    // The file watcher picks the edit up: poll until enforced and report how long it took.
    let written = Instant::now();
    std::fs::write(&path, serde_json::to_vec_pretty(&directory).unwrap()).unwrap();
    let deadline = written + Duration::from_secs(20);
    loop {
        let r = gw.call("GET", "/orders/1", Some(&token));
        if r.status == 403 {
            r.assert_denied(403, "blueprint_disabled");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the kill switch was not enforced within 20 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "kill switch: file write to enforcement took {:?}",
        written.elapsed()
    );

    // SIGHUP brings it back; the next request after the reload is allowed again.
    std::fs::write(&path, &original).unwrap();
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.call("GET", "/orders/1", Some(&token)).status != 200 {
        assert!(
            Instant::now() < deadline,
            "re-enabling was not enforced within 20 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Other blueprints never noticed.
    let mut invoice = spec(CallerKind::AgentApp);
    invoice.client = AGENT_INVOICE.into();
    invoice.blueprint = Some(BP_INVOICE.into());
    gw.call("GET", "/orders/1", Some(&mint(&key, &invoice)))
        .assert_allowed();
}

#[test]
fn a_broken_edit_is_refused_reported_and_the_old_set_keeps_serving() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            extra_config: "\n[reload]\nwatch = false\n".into(),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    let path = gw.dir.path().join("policies/data/directory.json");
    std::fs::write(&path, "{\n  \"blueprints\": {\n    \"oops\n}").unwrap();
    let (status, body) = gw.reload();
    assert_eq!(status, 422);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("data/directory.json:4:"),
        "names file and line: {error}"
    );

    gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
    let ready = gw.readiness();
    assert!(
        ready["reload"]["last_error"]
            .as_str()
            .unwrap()
            .contains("directory.json"),
        "{ready}"
    );
    assert_eq!(
        ready["ready"], true,
        "a refused edit does not make the gateway unready"
    );
    let metrics = gw.metrics();
    assert!(
        metrics.contains("agentgate_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
}

#[test]
fn metrics_pass_promtool_and_move_with_traffic() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(&servers, GatewaySpec::default());
    let allowed = format!(
        "agentgate_requests_total{{blueprint=\"{BP_SALES}\",caller_kind=\"agent_app\",decision=\"allow\",reason=\"allowed\",route=\"orders\"}}"
    );
    let before = gw.metrics();
    let token = mint(&key, &spec(CallerKind::AgentApp));
    for _ in 0..3 {
        gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
    }
    gw.call("GET", "/orders/1", None)
        .assert_denied(401, "missing_token");
    let unknown = {
        let mut s = spec(CallerKind::AgentApp);
        s.client = "dddddddd-4444-4444-4444-0000000000ee".into();
        s.blueprint = Some("cccccccc-3333-3333-3333-0000000000ee".into());
        mint(&key, &s)
    };
    gw.call("GET", "/orders/1", Some(&unknown))
        .assert_denied(403, "unknown_blueprint");
    let after = gw.metrics();
    assert_eq!(
        metric(&after, &allowed) - metric(&before, &allowed),
        3.0,
        "{after}"
    );
    assert!(after.contains("reason=\"missing_token\""));
    // A blueprint outside the directory is labelled unknown, never by its id.
    assert!(after.contains("blueprint=\"unknown\""));
    assert!(!after.contains("cccccccc-3333-3333-3333-0000000000ee"));
    assert!(
        metric(
            &after,
            "agentgate_token_cache_requests_total{result=\"hit\"}"
        ) >= 2.0,
        "{after}"
    );
    assert!(metric(&after, "agentgate_signing_keys{") >= 1.0);
    assert!(after.contains("agentgate_policy_revision_info{revision="));

    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is required ({e}); install it with: apt-get install -y prometheus")
        });
    use std::io::Write;
    let mut child = promtool;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(after.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The shipped alert rules parse, and every metric they name is one the gateway defines.
    let rules = repo().join("contrib/agentgate-alerts.yml");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(rules).unwrap();
    let named: std::collections::BTreeSet<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("agentgate_"))
        .collect();
    // The gateway's own metrics, and those of the bundle and Graph sources.
    let defined = [
        "src/telemetry/metrics.rs",
        "src/proxy/sources.rs",
        "src/graph/sync.rs",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(repo().join(f)).unwrap())
    .collect::<String>();
    for name in named {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n));
        assert!(
            defined.contains(&format!("\"{family}\"")),
            "the alert rules use {name}, which the gateway does not define"
        );
    }
}

/// True while the process runs (a zombie awaiting its parent counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        })
        .unwrap_or(false)
}

#[test]
fn sigterm_keeps_accepting_for_the_grace_period_while_readyz_says_draining() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let mut gw = Gateway::start(
        &servers,
        GatewaySpec {
            grace_period: "3s",
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.sent(&token);
    let client = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let connection = |r: &reqwest::blocking::Response| {
        r.headers()
            .get("connection")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let before = client
        .get(format!("{}/orders/1", gw.base))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(
        (before.status().as_u16(), connection(&before).as_deref()),
        (200, Some("keep-alive"))
    );
    let signalled = Instant::now();
    gw.signal("TERM");

    // Load balancers still route here for a while: new connections are served, and
    // /readyz tells health checks to stop sending. Every answer closes its connection,
    // so keep-alive clients move to another process before accepting ends.
    let mut served = 0;
    while signalled.elapsed() < Duration::from_secs(2) {
        let r = client
            .get(format!("{}/orders/1", gw.base))
            .bearer_auth(&token)
            .send()
            .unwrap_or_else(|e| panic!("refused {:?} after SIGTERM: {e:?}", signalled.elapsed()));
        assert_eq!(r.status(), 200);
        if served > 0 {
            // The first may have been answered before the signal was handled.
            assert_eq!(connection(&r).as_deref(), Some("close"));
        }
        served += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served >= 10, "{served}");
    let ready = client.get(format!("{}/readyz", gw.admin)).send().unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.json::<serde_json::Value>().unwrap();
    assert_eq!(
        (&body["ready"], &body["draining"]),
        (&false.into(), &true.into())
    );

    // Then accepting stops and the process leaves on its own: the grace period, the
    // second for requests in flight and the runtimes' exit.
    let status = gw.exit_within(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(3),
        "left {:?} after SIGTERM, inside its grace period",
        signalled.elapsed()
    );
    assert!(gw
        .stderr()
        .contains("SIGTERM: still accepting for the grace period"));
}

#[test]
fn sigint_during_the_sigterm_drain_stops_at_once() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let mut gw = Gateway::start(
        &servers,
        GatewaySpec {
            grace_period: "60s",
            ..Default::default()
        },
    );
    gw.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.stderr().contains("SIGTERM: still accepting") {
        assert!(Instant::now() < deadline, "SIGTERM never started a drain");
        std::thread::sleep(Duration::from_millis(20));
    }
    gw.signal("INT");
    // A 60 s drain cut short.
    gw.exit_within(Duration::from_secs(10));
}

/// Polls `/readyz` until `gw` answers and its tenant's keys are usable; returns the status
/// and document of that answer.
fn readiness_once_keys_are_usable(gw: &Gateway) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = gw.admin_request("GET", "/readyz").send() {
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().unwrap();
            if body["pid"] == gw.child.id() && body["tenants"][0]["usable"] == true {
                return (status, body);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no keys in 20 s:\n{}",
            gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A gateway started while something else listens on its proxy port: the servers it uses,
/// that listener, and the gateway.
fn spawn_with_a_taken_port(key: &SigningIdentity) -> (Servers, std::net::TcpListener, Gateway) {
    let servers = Servers::start(&[key]);
    let port = free_port();
    let holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let gw = Gateway::spawn(
        &servers,
        GatewaySpec {
            port: Some(port),
            ..Default::default()
        },
    );
    (servers, holder, gw)
}

#[test]
fn readyz_says_503_while_the_proxy_port_is_taken_and_200_once_it_is_bound() {
    let key = key("primary");
    let (_servers, holder, mut gw) = spawn_with_a_taken_port(&key);
    // Everything else is ready; pingora tries the taken port again every second.
    let (status, body) = readiness_once_keys_are_usable(&gw);
    assert_eq!(
        (
            status,
            &body["ready"],
            &body["listening"],
            &body["draining"]
        ),
        (503, &false.into(), &false.into(), &false.into()),
        "{body}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let body = gw.readiness();
    assert_eq!(
        (&body["ready"], &body["listening"]),
        (&false.into(), &false.into())
    );

    drop(holder);
    gw.wait_ready();
    assert_eq!(gw.readiness()["listening"], true);
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.sent(&token);
    let r = reqwest::blocking::Client::new()
        .get(format!("{}/orders/1", gw.base))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Takes about 30 s: pingora's retries of a taken address.
#[test]
fn a_proxy_port_that_stays_taken_stops_the_gateway_with_an_error() {
    let key = key("primary");
    let (_servers, _holder, mut gw) = spawn_with_a_taken_port(&key);
    let status = gw.exit_within(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", gw.stderr());
    let log = gw.stderr();
    assert!(
        log.contains("a listener could not be bound; the gateway stops"),
        "{log}"
    );
    assert!(
        log.contains("agentgate: a listener's address stayed in use, so the gateway stopped"),
        "{log}"
    );
}

#[test]
fn graceful_upgrade_under_load_loses_nothing() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    // Both processes accept for a moment (pingora's five seconds), as in production; then
    // the old one has three seconds for requests in flight.
    let old = Arc::new(Gateway::start(
        &servers,
        GatewaySpec {
            graceful_shutdown_timeout: "3s",
            ..Default::default()
        },
    ));
    let token = mint(&key, &spec(CallerKind::AgentApp));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, token, base) = (stop.clone(), token.clone(), old.base.clone());
            std::thread::spawn(move || {
                // A new connection per request: every connect must find a listener.
                let client = reqwest::blocking::Client::builder()
                    .pool_max_idle_per_host(0)
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match client
                        .get(format!("{base}/orders/1"))
                        .bearer_auth(&token)
                        .send()
                    {
                        Ok(r) if r.status() == 200 => ok += 1,
                        Ok(r) => failed.push(format!("status {}", r.status())),
                        Err(e) => failed.push(format!("{e:?}")),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    old.sent(&token);
    // A connection the old process accepts before the handover but whose request comes
    // only after the old process stopped accepting: it must still be answered.
    let mut early = std::net::TcpStream::connect(old.base.trim_start_matches("http://")).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    // The new process waits for the listening sockets; then the old one hands them over.
    let config = old.dir.path().join("agentgate.toml");
    let mut new = std::process::Command::new(env!("CARGO_BIN_EXE_agentgate"))
        .args(["serve", "--upgrade", "--config"])
        .arg(&config)
        .stdout(std::fs::File::create(old.dir.path().join("stdout-new.log")).unwrap())
        .stderr(std::fs::File::create(old.dir.path().join("stderr-new.log")).unwrap())
        .spawn()
        .unwrap();
    let sock = old.dir.path().join("upgrade.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "the new process never opened the upgrade socket"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    old.signal("QUIT");
    let deadline = Instant::now() + Duration::from_secs(20);
    // pingora logs this line when the old process's listeners stop accepting.
    while !old.stderr().contains("Broadcasting graceful shutdown") {
        assert!(
            Instant::now() < deadline,
            "the old process never stopped accepting"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let sent = write!(
        early,
        "GET /orders/1 HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {token}\r\n\r\n"
    );
    early
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let read = early.read_to_string(&mut answer);
    let head = answer.to_ascii_lowercase();
    assert!(
        sent.is_ok() && head.starts_with("http/1.1 200") && head.contains("connection: close"),
        "a request on a connection accepted before the handover was not answered \
         (write: {sent:?}, read: {read:?}): {answer:?}"
    );
    while reqwest::blocking::get(format!("{}/readyz", old.admin))
        .map(|r| r.status() != 200)
        .unwrap_or(true)
        || alive(old.child.id())
    {
        assert!(
            Instant::now() < deadline,
            "the old process did not hand over and exit within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Keep the load on the new process for a moment, then stop.
    for _ in 0..20 {
        reqwest::blocking::get(format!("{}/healthz", old.admin)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let (ok, failed) = c.join().unwrap();
        assert!(
            failed.is_empty(),
            "requests failed during the upgrade: {failed:?}"
        );
        total += ok;
    }
    assert!(total > 0);
    let _ = new.kill();
    let _ = new.wait();
    let logged = std::fs::read_to_string(old.dir.path().join("stderr-new.log")).unwrap_or_default();
    assert!(!logged.contains(&token));
}

#[test]
fn a_shadow_set_is_evaluated_beside_the_enforced_one_without_changing_outcomes() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    // The candidate denies everything; it shadows the Invoice blueprint only.
    let dir = tempfile::tempdir().unwrap();
    let shadow = dir.path().join("shadow");
    std::fs::create_dir_all(&shadow).unwrap();
    std::fs::write(
        shadow.join("candidate.rego"),
        "package agentgate\n\ndecision := {\"allow\": false, \"status\": 403, \"reason\": \"candidate_says_no\"}\n",
    )
    .unwrap();
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            extra_config: format!(
                "\n[shadow]\ndir = \"{}\"\nblueprints = [\"{BP_INVOICE}\"]\n",
                shadow.display()
            ),
            ..Default::default()
        },
    );
    let mut invoice = spec(CallerKind::AgentApp);
    invoice.client = AGENT_INVOICE.into();
    invoice.blueprint = Some(BP_INVOICE.into());
    // Enforced outcomes are unchanged for both blueprints.
    let invoice_reply = gw.call("GET", "/orders/1", Some(&mint(&key, &invoice)));
    invoice_reply.assert_allowed();
    gw.call(
        "GET",
        "/orders/1",
        Some(&mint(&key, &spec(CallerKind::AgentApp))),
    )
    .assert_allowed();

    let metrics = gw.metrics();
    let line = format!("agentgate_shadow_mismatches_total{{blueprint=\"{BP_INVOICE}\",enforced=\"allow\",shadow=\"deny\"}} 1");
    assert!(metrics.contains(&line), "{metrics}");
    assert!(!metrics.contains(&format!(
        "agentgate_shadow_mismatches_total{{blueprint=\"{BP_SALES}\""
    )));
    assert!(metrics.contains("role=\"shadow\""));

    let decisions = gw.wait_decisions(2);
    let shadowed: Vec<_> = decisions
        .iter()
        .filter(|d| d.get("shadow").is_some())
        .collect();
    assert_eq!(shadowed.len(), 1, "only the Invoice blueprint is shadowed");
    let record = shadowed[0];
    assert_eq!(
        record["decision_id"].as_str(),
        invoice_reply
            .headers
            .get("x-agentgate-decision-id")
            .and_then(|v| v.to_str().ok())
    );
    assert_eq!(record["blueprint_id"], BP_INVOICE);
    assert_eq!(record["reason"], "allowed");
    assert_eq!(record["shadow"]["outcome"], "deny");
    assert_eq!(record["shadow"]["reason"], "candidate_says_no");
    assert_eq!(record["shadow"]["mismatch"], true);
    // The verdict came from the shadow set in force.
    let shadow_revision = record["shadow"]["revision"].as_str().unwrap();
    assert_eq!(
        metric(
            &metrics,
            &format!(
                "agentgate_policy_revision_info{{revision=\"{shadow_revision}\",role=\"shadow\"}}"
            )
        ),
        1.0,
        "{metrics}"
    );
}

#[test]
fn allowed_decisions_can_be_sampled_but_denies_are_always_logged() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            extra_config: "\n[log]\nallow_sample_rate = 0.0\n".into(),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    for _ in 0..5 {
        gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
        gw.call("DELETE", "/orders/1", Some(&token))
            .assert_denied(403, "route_not_allowed");
    }
    gw.call("GET", "/orders/1", None)
        .assert_denied(401, "missing_token");
    let decisions = gw.wait_decisions(6);
    assert_eq!(decisions.len(), 6, "{decisions:#?}");
    assert!(decisions.iter().all(|d| d["allow"] == false));
    let d = &decisions[0];
    for field in [
        "time",
        "decision_id",
        "route",
        "method",
        "path",
        "caller_kind",
        "tenant",
        "agent_id",
        "blueprint_id",
        "blueprint_name",
        "sponsors",
        "user_oid",
        "allow",
        "status",
        "reason",
        "revision",
        "latency_us",
    ] {
        assert!(d.get(field).is_some(), "decision log lacks {field}: {d}");
    }
    assert_eq!(d["blueprint_name"], "Sales Assistant Agent");
    assert_eq!(d["sponsors"][0], "ffffffff-6666-6666-6666-0000000000a1");
}

/// Allows every request, except that one rare path goes through an `else` after an
/// iterating body, which the compiled engine of regorus 0.14 does not take. No sample input
/// has that path, so the compiled engine passes its check and serves.
const RARE_SLIP_SET: &str = r#"package agentgate

decision := rare if {
	input.request.path == "/orders/very/rare"
} else := {"allow": true, "reason": "allowed"}

rare := {"allow": true, "reason": "allowed"} if {
	some m in ["PUT"]
	input.request.method == m
} else := {"allow": false, "status": 403, "reason": "rare_path"}
"#;

#[test]
fn a_compiled_engine_slip_is_answered_by_the_interpreter_and_reported() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            rego: Some(vec![("policy.rego", RARE_SLIP_SET.into())]),
            ..Default::default()
        },
    );
    gw.wait_policy_engine("compiled");
    let metrics = gw.metrics();
    assert_eq!(
        metric(
            &metrics,
            "agentgate_policy_engine_compiled{role=\"enforced\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "agentgate_policy_engine_events_total{event=\"promoted\"}"
        ),
        1.0
    );
    let token = fresh_token(&key, "slip");
    gw.sent(&token);
    gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
    // The interpreter's answer, not the compiled engine's undefined (a policy_error).
    gw.call("GET", "/orders/very/rare", Some(&token))
        .assert_denied(403, "rare_path");
    let readiness = gw.readiness();
    assert_eq!(readiness["policy_engine"], "refused");
    let metrics = gw.metrics();
    assert_eq!(
        metric(
            &metrics,
            "agentgate_policy_engine_compiled{role=\"enforced\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(
            &metrics,
            "agentgate_policy_engine_events_total{event=\"demoted\"}"
        ),
        1.0
    );
    // The rare request is logged with the interpreter's answer, under the revision whose
    // compiled engine was sent back.
    let decisions = gw.wait_decisions(2);
    let rare: Vec<_> = decisions
        .iter()
        .filter(|d| d["path"] == "/orders/very/rare")
        .collect();
    assert_eq!(rare.len(), 1, "{decisions:?}");
    assert_eq!(
        (&rare[0]["allow"], &rare[0]["status"], &rare[0]["reason"]),
        (
            &serde_json::json!(false),
            &serde_json::json!(403),
            &serde_json::json!("rare_path")
        ),
        "{}",
        rare[0]
    );
    assert_eq!(rare[0]["revision"], readiness["revision"]);
    gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
    // A reloaded set gets its own compiled engine.
    std::fs::write(
        gw.dir.path().join("policies/policy.rego"),
        "package agentgate\n\ndecision := {\"allow\": true, \"reason\": \"allowed\"}\n",
    )
    .unwrap();
    assert_eq!(gw.reload().0, 200);
    gw.wait_policy_engine("compiled");
    gw.call("GET", "/orders/very/rare", Some(&token))
        .assert_allowed();
}

/// A Rego test that never ends cannot hold reloads hostage: each test runs within
/// `policy.test_timeout`, the whole reload within `reload.timeout`; the reload that runs out
/// fails with a clear error, the old set keeps serving, and the next good edit applies.
#[test]
fn slow_rego_tests_time_out_and_the_old_set_keeps_serving() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            policy_extra: "test_timeout = \"1s\"".into(),
            extra_config: "\n[reload]\nwatch = false\ntimeout = \"8s\"\n".into(),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    let policies = gw.dir.path().join("policies/agentgate");
    let slow = |n: usize| {
        (0..n)
            .map(|i| {
                format!("test_slow_{i} if {{ count([1 | some x in numbers.range(1, 100000); some y in numbers.range(1, 100000)]) > {i} }}\n")
            })
            .collect::<String>()
    };

    // One endless test: it fails at its own limit, the reload is refused.
    std::fs::write(
        policies.join("slow_test.rego"),
        format!("package agentgate_test\n{}", slow(1)),
    )
    .unwrap();
    let started = Instant::now();
    let (status, body) = gw.reload();
    let took = started.elapsed();
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("test_slow_0") && error.contains("exceeded its time limit of 1s"),
        "{error}"
    );
    assert!(took < Duration::from_secs(8), "the reload took {took:?}");
    gw.call("GET", "/orders/1", Some(&token)).assert_allowed();

    // Many of them: the reload deadline ends the run before they all time out one by one.
    std::fs::write(
        policies.join("slow_test.rego"),
        format!("package agentgate_test\n{}", slow(30)),
    )
    .unwrap();
    let started = Instant::now();
    let (status, body) = gw.reload();
    let took = started.elapsed();
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("did not finish in time") && error.contains("reload.timeout"),
        "{error}"
    );
    assert!(
        took < Duration::from_secs(20),
        "30 slow tests took {took:?}: the deadline did not stop them"
    );
    gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
    let ready = gw.readiness();
    assert!(
        ready["reload"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("did not finish in time")),
        "{ready}"
    );

    // The kill switch still gets through once the slow tests are gone.
    std::fs::remove_file(policies.join("slow_test.rego")).unwrap();
    let directory = gw.dir.path().join("policies/data/directory.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&directory).unwrap()).unwrap();
    doc["blueprints"][BP_SALES]["disabled"] = true.into();
    std::fs::write(&directory, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let (status, body) = gw.reload();
    assert_eq!(status, 200, "{body}");
    gw.call("GET", "/orders/1", Some(&token))
        .assert_denied(403, "blueprint_disabled");
}

/// A decision log whose reader stops reading (a stuck pipe, a full disk) never stalls
/// requests: records beyond `log.max_queue_bytes` are dropped and counted.
#[test]
fn a_stuck_decision_log_drops_and_counts_instead_of_stalling_requests() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let fifo_dir = tempfile::tempdir().unwrap();
    let fifo = fifo_dir.path().join("decisions.pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // A reader that opens the pipe and never reads: the pipe fills, then writes block.
    let mut reader = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec sleep 120 < '{}'", fifo.display()))
        .spawn()
        .unwrap();
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            extra_config: format!(
                "\n[log]\ndecisions = \"{}\"\nmax_queue_bytes = 65536\n",
                fifo.display()
            ),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    // Each call gives up after 10 s: a request waiting for the log would fail here.
    for _ in 0..1_000 {
        gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
    }
    let metrics = gw.metrics();
    let dropped = metric(
        &metrics,
        "agentgate_decision_log_records_total{result=\"dropped\"}",
    );
    let written = metric(
        &metrics,
        "agentgate_decision_log_records_total{result=\"written\"}",
    );
    let queued = metric(&metrics, "agentgate_decision_log_queue_bytes");
    let _ = reader.kill();
    let _ = reader.wait();
    assert!(dropped > 0.0, "nothing was dropped: {metrics}");
    assert!(queued <= 65536.0, "queue holds {queued} bytes");
    assert!(
        written + dropped <= 1_000.0,
        "{written} written, {dropped} dropped"
    );
}

/// The admin listener answers only for allowed hosts (against DNS rebinding), and with a
/// token configured, `/metrics`, `/reload` and the details of `/readyz` require it.
#[test]
fn the_admin_listener_checks_the_host_and_the_token() {
    const TOKEN: &str = "admin-token-0123456789abcdef";
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            admin_token: Some(TOKEN),
            admin_extra: "allowed_hosts = [\"agentgate-admin.example\"]".into(),
            ..Default::default()
        },
    );
    let client = reqwest::blocking::Client::new();
    let get = |path: &str, host: Option<&str>, token: Option<&str>| {
        let mut req = client.get(format!("{}{path}", gw.admin));
        if let Some(h) = host {
            req = req.header("host", h);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        let www = r
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        (status, r.text().unwrap(), www)
    };
    // Without the token: health and the bare verdict only.
    assert_eq!(get("/healthz", None, None).0, 200);
    let (status, body, _) = get("/readyz", None, None);
    assert_eq!((status, body.as_str()), (200, "{\"ready\":true}"));
    for path in ["/metrics", "/readyz"] {
        let (status, body, www) = get(path, None, Some("wrong-token-0123456789"));
        if path == "/metrics" {
            assert_eq!(status, 401, "{body}");
            assert!(
                body.contains("\"reason\":\"admin_token_required\""),
                "{body}"
            );
            assert_eq!(www.as_deref(), Some("Bearer realm=\"agentgate-admin\""));
        } else {
            assert_eq!(body, "{\"ready\":true}");
        }
    }
    let (status, body) = {
        let r = client.post(format!("{}/reload", gw.admin)).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(status, 401, "{body}");
    // With it: everything.
    let (status, body, _) = get("/metrics", None, Some(TOKEN));
    assert_eq!(status, 200);
    assert!(
        body.contains("agentgate_requests_total") || body.contains("agentgate_"),
        "{body}"
    );
    let (_, body, _) = get("/readyz", None, Some(TOKEN));
    assert!(body.contains("\"revision\""), "{body}");
    assert_eq!(gw.reload().0, 200);
    // Hosts: IP literals, localhost and the allowed names; nothing else, token or not.
    for host in [
        "127.0.0.1",
        "localhost",
        "AGENTGATE-admin.example.",
        "[::1]:9180",
    ] {
        assert_eq!(get("/metrics", Some(host), Some(TOKEN)).0, 200, "{host}");
    }
    for host in [
        "evil.example",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
    ] {
        let (status, body, _) = get("/metrics", Some(host), Some(TOKEN));
        assert_eq!(status, 403, "{host}");
        assert!(body.contains("\"reason\":\"host_not_allowed\""), "{body}");
        assert_eq!(get("/healthz", Some(host), None).0, 403, "{host}");
    }
    assert!(!gw.stderr().contains(TOKEN), "the admin token was logged");
}
