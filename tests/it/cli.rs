//! The operator CLI, run as the real binary: check, eval, test, token decode, completions.

use crate::support::*;
use agentgate::identity::CallerKind;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};

pub fn agentgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentgate"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_accepts_the_demo_and_names_file_and_line_of_a_syntax_error() {
    let ok = agentgate(&["check", "--config", "config/agentgate.toml"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("ok:"));

    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(repo().join("config/agentgate.toml")).unwrap();
    std::fs::write(
        dir.path().join("agentgate.toml"),
        config.replace("../policies", "policies"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/broken.rego"),
        "package agentgate\n\ndecision := {\n  \"allow\": true,\n",
    )
    .unwrap();
    let bad = agentgate(&[
        "check",
        "--config",
        dir.path().join("agentgate.toml").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        text(&bad).contains("broken.rego:"),
        "names the file: {}",
        text(&bad)
    );

    let bad_config = dir.path().join("bad.toml");
    std::fs::write(
        &bad_config,
        config.replace("max_token_bytes = 8192", "max_token_bytes = \"big\""),
    )
    .unwrap();
    let out = agentgate(&["check", "--config", bad_config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("max_token_bytes"), "{}", text(&out));

    assert_eq!(
        agentgate(&["check", "--no-such-flag"]).status.code(),
        Some(2)
    );
}

fn policy_dir(policy: &str, test: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.rego"), policy).unwrap();
    std::fs::write(dir.path().join("p_test.rego"), test).unwrap();
    dir
}

#[test]
fn test_reports_failures_and_uncovered_lines() {
    let dir = policy_dir(
        "package agentgate\n\ndecision := {\"allow\": true, \"reason\": \"ok\"} if input.x == 1\n\nhelper if {\n  input.y == 2\n}\n",
        "package agentgate_test\n\ntest_allows if data.agentgate.decision.allow with input as {\"x\": 1}\n\ntest_wrong if data.agentgate.decision.allow with input as {\"x\": 2}\n",
    );
    let d = dir.path().to_str().unwrap();
    let out = agentgate(&["test", d, "--coverage"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("FAIL data.agentgate_test.test_wrong"), "{t}");
    assert!(t.contains("1 passed, 1 failed"), "{t}");
    assert!(
        t.contains("not covered: lines 6"),
        "names the uncovered helper rule: {t}"
    );

    let only = agentgate(&["test", d, "--run", "allows$", "-v"]);
    let t = text(&only);
    assert_eq!(only.status.code(), Some(0), "{t}");
    assert!(t.contains("PASS data.agentgate_test.test_allows"), "{t}");
    assert!(t.contains("1 passed, 0 failed"), "{t}");

    let shipped = agentgate(&["test", "policies", "--coverage"]);
    assert_eq!(shipped.status.code(), Some(0), "{}", text(&shipped));
}

#[test]
fn eval_agrees_with_the_live_gateway_for_every_caller_kind() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let mut access: Value =
        serde_json::from_slice(&std::fs::read(repo().join("policies/data/access.json")).unwrap())
            .unwrap();
    access["non_agent"]["orders"] = json!([
        {"kinds": ["app", "user", "app_obo_agent_user"], "methods": ["GET"], "path_prefixes": ["/orders"], "roles": ["Orders.Read.All"], "scopes": ["Orders.Read"]}
    ]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            data: vec![("access.json", access)],
            ..Default::default()
        },
    );
    let config = gw.dir.path().join("agentgate.toml");
    let mut compared = 0;
    for kind in CallerKind::ALL {
        for (method, path, roles) in [
            ("GET", "/orders/1", "Orders.Read.All"),
            ("POST", "/orders", "Orders.Read.All"),
            ("GET", "/orders/1", "Nothing"),
        ] {
            let mut s = spec(kind);
            s.roles = vec![roles.into()];
            if roles == "Nothing" {
                s.scopes = vec!["Nothing".into()];
            }
            let token = mint(&key, &s);
            let live = gw.call(method, path, Some(&token));
            let out = agentgate(&[
                "eval",
                "--config",
                config.to_str().unwrap(),
                "--token",
                &token,
                "--method",
                method,
                "--path",
                path,
                "--format",
                "json",
            ]);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out));
            let report: Value = serde_json::from_slice(&out.stdout).unwrap();
            let live_reason = if live.status == 200 {
                "allowed"
            } else {
                live.reason()
            };
            assert_eq!(
                (
                    report["status"].as_u64().unwrap() as u16,
                    report["reason"].as_str().unwrap()
                ),
                (live.status, live_reason),
                "{kind:?} {method} {path}: eval and the gateway disagree"
            );
            assert_eq!(report["caller"]["kind"], kind.as_str());
            assert_eq!(report["verified"], true);
            compared += 1;
        }
    }
    assert_eq!(compared, 18);
}

#[test]
fn eval_explains_and_warns_without_verification() {
    let key = key("primary");
    let token = mint(&key, &spec(CallerKind::AgentApp));
    let out = agentgate(&[
        "eval",
        "--token",
        &token,
        "--path",
        "/orders/1",
        "--no-verify",
        "--explain",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("WARNING: --no-verify"), "{t}");
    assert!(t.contains("verified   NO"), "{t}");
    assert!(t.contains("caller     agent_app"), "{t}");
    assert!(t.contains("Sales Assistant Agent"), "{t}");
    assert!(t.contains("explain: lines evaluated"), "{t}");
    assert!(t.contains("decision.rego"), "{t}");

    // A JWKS file that holds the key verifies; one that does not, refuses.
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [key.jwk]}).to_string()).unwrap();
    let eval_with_jwks = || {
        let out = agentgate(&[
            "eval",
            "--token",
            &token,
            "--path",
            "/orders/1",
            "--jwks",
            jwks.to_str().unwrap(),
            "--format",
            "json",
        ]);
        (
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
            text(&out),
        )
    };
    let (report, out) = eval_with_jwks();
    assert_eq!(
        (report["outcome"].as_str(), report["verified"].as_bool()),
        (Some("allow"), Some(true)),
        "{out}"
    );
    std::fs::write(
        &jwks,
        json!({"keys": [crate::support::key("rotated").jwk]}).to_string(),
    )
    .unwrap();
    let (report, out) = eval_with_jwks();
    assert_eq!(report["reason"], "unknown_key", "{out}");
}

#[test]
fn token_mint_count_gives_distinct_tokens_the_gateway_accepts() {
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(&servers, GatewaySpec::default());
    let out = agentgate(&[
        "token",
        "mint",
        "--config",
        "config/agentgate.toml",
        "--key",
        "tests/data/keys/primary.pem",
        "--client",
        AGENT_EMEA,
        "--blueprint",
        BP_SALES,
        "--role",
        "Orders.Read.All",
        "--aud",
        API_URI,
        "--tenant",
        TENANT_A,
        "--count",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tokens: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let distinct: std::collections::HashSet<&String> = tokens.iter().collect();
    assert_eq!((tokens.len(), distinct.len()), (5, 5));
    for token in &tokens {
        gw.call("GET", "/orders/1", Some(token)).assert_allowed();
    }
}

#[test]
fn token_decode_explains_the_caller_and_verifies_only_with_keys() {
    let key = key("primary");
    let token = mint(&key, &spec(CallerKind::AgentUser));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token.txt");
    std::fs::write(&file, format!("Bearer {token}\n")).unwrap();
    let out = agentgate(&["token", "decode", &format!("@{}", file.display())]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("caller kind:  agent_user"), "{t}");
    assert!(t.contains("13 (agent user)"), "{t}");
    assert!(t.contains("NOT VERIFIED"), "{t}");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [key.jwk]}).to_string()).unwrap();
    let out = agentgate(&["token", "decode", &token, "--jwks", jwks.to_str().unwrap()]);
    assert!(text(&out).contains("signature:    valid"), "{}", text(&out));
    let garbage = agentgate(&["token", "decode", "not-a-token"]);
    assert_eq!(garbage.status.code(), Some(1));
    assert!(
        text(&garbage).contains("base64url") || text(&garbage).contains("no payload"),
        "{}",
        text(&garbage)
    );
}

#[test]
fn help_has_examples_and_completions_are_generated() {
    for cmd in [
        vec!["--help"],
        vec!["eval", "--help"],
        vec!["test", "--help"],
        vec!["token", "decode", "--help"],
        vec!["check", "--help"],
    ] {
        let out = agentgate(&cmd);
        assert_eq!(out.status.code(), Some(0));
        if cmd.len() > 1 {
            assert!(
                text(&out).contains("Example"),
                "{cmd:?} --help lacks examples"
            );
        }
    }
    let out = agentgate(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains("_agentgate") && script.contains("eval"),
        "{script}"
    );
    assert!(Path::new(env!("CARGO_BIN_EXE_agentgate")).exists());
}

/// `serve` never trusts the committed dev key: a configuration with `[dev]` is the demo's.
/// With it, `eval` verifies demo tokens against the dev key itself, so the documented
/// policy-editing loop (`token mint`, then `eval`) works without the demo running.
#[test]
fn serve_refuses_the_demo_configuration_and_eval_verifies_demo_tokens_offline() {
    let serve = agentgate(&["serve", "--config", "config/agentgate.toml"]);
    assert_eq!(serve.status.code(), Some(1), "{}", text(&serve));
    assert!(
        text(&serve).contains("[dev] section") && text(&serve).contains("agentgate demo"),
        "{}",
        text(&serve)
    );
    let minted = agentgate(&[
        "token",
        "mint",
        "--kind",
        "agent_app",
        "--client",
        AGENT_EMEA,
        "--blueprint",
        BP_SALES,
        "--role",
        "Orders.Read.All",
    ]);
    assert_eq!(minted.status.code(), Some(0), "{}", text(&minted));
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_string();
    // Nothing listens on the dev issuer's port: the key must come from the dev key file.
    assert!(std::net::TcpStream::connect("127.0.0.1:8400").is_err());
    for (method, status, reason) in [
        ("GET", 200, "allowed"),
        ("DELETE", 403, "route_not_allowed"),
    ] {
        let out = agentgate(&[
            "eval",
            "--token",
            &token,
            "--method",
            method,
            "--path",
            "/orders/42",
            "--format",
            "json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["verified"], true);
        assert_eq!(
            (report["status"].as_u64(), report["reason"].as_str()),
            (Some(status), Some(reason)),
            "{report}"
        );
    }
}
