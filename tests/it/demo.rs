//! `agentgate demo`, the one command a newcomer runs: the real binary with the shipped demo
//! configuration (moved to free ports), and the calls it prints, run as printed.

use crate::support::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running demo; killed on drop.
struct Demo {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
        for port in ["8080", "9180", "8400", "9001", "8402"] {
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
        let demo = Demo { child, dir };
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

#[test]
fn the_demo_decides_as_it_says_and_a_change_in_its_fake_graph_reaches_a_live_token() {
    let (demo, printed) = Demo::start();
    let calls = bearer_calls(&printed);
    assert_eq!(calls.len(), 3, "{printed}");
    let (allowed_url, allowed_token) = &calls[0];
    assert_eq!(get(allowed_url, allowed_token).0, 200);
    let (status, body) = get(&calls[1].0, &calls[1].1);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"reason\":\"blueprint_disabled\""), "{body}");
    assert_eq!(get(&calls[2].0, &calls[2].1).0, 200);

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
}
