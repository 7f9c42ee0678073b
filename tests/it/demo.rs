//! `agentgate demo`, the one command a newcomer runs: the real binary with the shipped demo
//! configuration (moved to free ports), and the calls it prints, run as printed.

use crate::support::*;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running demo; killed on drop.
struct Demo {
    child: Child,
    dir: tempfile::TempDir,
    /// The HTTPS listener's base URL and CA file, as printed.
    tls: Option<(String, PathBuf)>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A killed demo cannot remove its certificate directory.
        if let Some(dir) = self.tls.as_ref().and_then(|(_, ca)| ca.parent()) {
            if dir.starts_with(std::env::temp_dir()) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

impl Demo {
    /// Starts the demo and waits for its printed calls and for `/readyz` 200.
    fn start() -> (Demo, String) {
        let dir = tempfile::tempdir().unwrap();
        let mut text = std::fs::read_to_string(repo().join("config/agentgate.toml"))
            .unwrap()
            .replace("\"../policies\"", &format!("{:?}", repo().join("policies")))
            .replace(
                "\"dev/",
                &format!("\"{}/", repo().join("config/dev").display()),
            );
        for port in ["8080", "9180", "8400", "9001", "8402", "8443"] {
            let moved = format!("127.0.0.1:{}", free_port());
            text = text.replace(&format!("127.0.0.1:{port}"), &moved);
        }
        let config = dir.path().join("agentgate.toml");
        std::fs::write(&config, text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_agentgate"))
            .args(["demo", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(dir.path().join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut demo = Demo {
            child,
            dir,
            tls: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let printed = loop {
            let printed = demo.read("stdout.log");
            if printed.contains("Mint more with") {
                break printed;
            }
            assert!(
                Instant::now() < deadline,
                "no calls printed:\n{}",
                demo.read("stderr.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        demo.tls = printed
            .lines()
            .find_map(|l| l.trim().strip_prefix("proxy TLS   "))
            .and_then(|l| {
                let (base, rest) = l.split_once("  (HTTP/1.1 and h2; throwaway CA ")?;
                Some((base.to_string(), PathBuf::from(rest.strip_suffix(')')?)))
            });
        let admin = printed
            .lines()
            .find_map(|l| l.trim().strip_prefix("admin       "))
            .and_then(|l| l.split_whitespace().next())
            .expect("the admin address is printed")
            .to_string();
        loop {
            if reqwest::blocking::get(&admin).is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never ready:\n{}",
                demo.read("stderr.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (demo, printed)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Stops the demo as Ctrl-C does and waits for it to exit.
    fn interrupt(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after SIGINT:\n{}",
                self.read("stderr.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The printed `curl` lines with a bearer token: (URL, token).
fn bearer_calls(printed: &str) -> Vec<(String, String)> {
    printed
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("curl -si ")?;
            let (url, auth) = rest.split_once(" -H 'Authorization: Bearer ")?;
            Some((url.to_string(), auth.trim_end_matches('\'').to_string()))
        })
        .collect()
}

/// A printed `curl --cacert` line: a call over the demo's HTTPS listener.
#[derive(Debug)]
struct TlsCall {
    ca: PathBuf,
    http2: bool,
    url: String,
    token: Option<String>,
}

/// The printed `curl --cacert` lines, in order.
fn tls_calls(printed: &str) -> Vec<TlsCall> {
    printed
        .lines()
        .filter_map(|l| {
            let (ca, rest) = l.strip_prefix("curl --cacert ")?.split_once(' ')?;
            let (http2, rest) = match rest.strip_prefix("--http2 -si ") {
                Some(rest) => (true, rest),
                None => (false, rest.strip_prefix("--http1.1 -si ")?),
            };
            let (url, token) = match rest.split_once(" -H 'Authorization: Bearer ") {
                Some((url, auth)) => (url, Some(auth.strip_suffix('\'')?.to_string())),
                None => (rest, None),
            };
            Some(TlsCall {
                ca: PathBuf::from(ca),
                http2,
                url: url.to_string(),
                token,
            })
        })
        .collect()
}

/// The printed `curl -X PATCH` lines: (URL, body).
fn patch_calls(printed: &str) -> Vec<(String, String)> {
    printed
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("curl -si -X PATCH ")?;
            let (url, rest) = rest.split_once(' ')?;
            let body = rest.split_once("-d '")?.1.trim_end_matches('\'');
            Some((url.to_string(), body.to_string()))
        })
        .collect()
}

fn get(url: &str, token: &str) -> (u16, String) {
    let r = reqwest::blocking::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn patch(url: &str, body: &str) {
    let r = reqwest::blocking::Client::new()
        .patch(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "{url} {body}");
}

/// Repeats the call until it answers `status`, failing after 10 s.
fn until(url: &str, token: &str, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (got, body) = get(url, token);
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "still {got} (not {status}): {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the printed HTTPS calls: each call's HTTP/1.1 and h2 lines, with the plain lines'
/// tokens then none, answer `statuses` over TLS verified against the printed CA file, which
/// lies in the system's temporary directory.
fn run_tls_calls(demo: &Demo, printed: &str, plain: &[(String, String)], statuses: &[u16]) {
    let (base, ca) = demo.tls.as_ref().expect("the HTTPS listener is printed");
    assert!(base.starts_with("https://localhost:"), "{base}");
    assert!(
        ca.starts_with(std::env::temp_dir()) && ca.ends_with("ca.pem"),
        "{}",
        ca.display()
    );
    let calls = tls_calls(printed);
    assert_eq!(calls.len(), 2 * statuses.len(), "{printed}");
    let tokens = plain.iter().map(|(_, t)| Some(t.as_str())).chain([None]);
    let ca_pem = std::fs::read_to_string(ca).unwrap();
    let (h1, h2) = (https_client(&ca_pem, false), https_client(&ca_pem, true));
    for ((pair, token), &status) in calls.chunks(2).zip(tokens).zip(statuses) {
        let expected = [
            (false, &h1, reqwest::Version::HTTP_11),
            (true, &h2, reqwest::Version::HTTP_2),
        ];
        for (call, (http2, client, version)) in pair.iter().zip(expected) {
            assert_eq!((&call.ca, call.http2), (ca, http2), "{call:?}");
            assert_eq!(call.url, format!("{base}/orders/42"));
            assert_eq!(call.token.as_deref(), token, "the plain line's token");
            let mut request = client.get(&call.url);
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            let r = request.send().unwrap();
            assert_eq!(
                (r.status().as_u16(), r.version()),
                (status, version),
                "{call:?}"
            );
        }
    }
}

#[test]
fn the_demo_decides_as_it_says_and_a_change_in_its_fake_graph_reaches_a_live_token() {
    let (mut demo, printed) = Demo::start();
    let calls = bearer_calls(&printed);
    assert_eq!(calls.len(), 3, "{printed}");
    let (allowed_url, allowed_token) = &calls[0];
    let (status, body) = get(allowed_url, allowed_token);
    assert_eq!(status, 200, "{body}\n{}", demo.read("stderr.log"));
    let (status, body) = get(&calls[1].0, &calls[1].1);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"reason\":\"blueprint_disabled\""), "{body}");
    assert_eq!(get(&calls[2].0, &calls[2].1).0, 200);
    // The same calls over HTTPS, as HTTP/1.1 and h2; then without a token.
    run_tls_calls(&demo, &printed, &calls, &[200, 403, 200, 401]);

    // The printed PATCH disables the agent in the fake Graph; the next sync refuses the
    // same, still valid token; the second PATCH lets it through again.
    let patches = patch_calls(&printed);
    assert_eq!(patches.len(), 2, "{printed}");
    assert!(patches[0].1.contains("false") && patches[1].1.contains("true"));
    patch(&patches[0].0, &patches[0].1);
    let body = until(allowed_url, allowed_token, 403);
    assert!(body.contains("\"reason\":\"agent_disabled\""), "{body}");
    patch(&patches[1].0, &patches[1].1);
    until(allowed_url, allowed_token, 200);

    let log = demo.read("stderr.log");
    assert!(
        log.contains("directory synced from Microsoft Graph"),
        "{log}"
    );
    let secret = std::fs::read_to_string(repo().join("config/dev/graph-secret")).unwrap();
    assert!(
        !log.contains(secret.trim()),
        "the Graph client secret was logged"
    );
    assert!(!log.contains(allowed_token.as_str()), "a token was logged");
    let (_, ca) = demo.tls.as_ref().unwrap();
    let key = std::fs::read_to_string(ca.with_file_name("server.key")).unwrap();
    let key_line = key.lines().nth(1).unwrap();
    assert!(!log.contains(key_line), "the TLS key was logged");

    // Ctrl-C: the demo exits cleanly and its certificate directory goes with it.
    let ca = ca.clone();
    let status = demo.interrupt();
    assert!(status.success(), "{status}: {}", demo.read("stderr.log"));
    assert!(!ca.parent().unwrap().exists(), "{} is left", ca.display());
}
