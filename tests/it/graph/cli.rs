//! `agentgate directory sync` and `directory diff`, run as the real binary against the fake
//! Graph: the merged file, atomic replacement, and nothing secret in what the binary prints.

use super::*;
use agentgate::dev::graph::{FaultTarget, GraphFault};
use agentgate::directory::{Directory, Risk};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};

/// A configuration for `fake` in `dir`, with `credential` lines in `[directory.graph]`.
fn write_config(dir: &Path, fake: &FakeGraph, credential: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("policies/data")).unwrap();
    let path = dir.join("agentgate.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[listeners]]
address = "127.0.0.1:1"

[identity]
[[identity.tenants]]
id = "{TENANT_A}"

[policy]
dir = "policies"

[[routes]]
id = "orders"
path_prefix = "/orders"
upstreams = ["127.0.0.1:1"]
audiences = ["{API_URI}"]

[directory.graph]
tenant = "{TENANT_A}"
client_id = "{CLIENT_ID}"
authority = "{url}"
graph_url = "{url}"
ca_file = "{ca}"
timeout = "2s"
sync_timeout = "20s"
max_retries = 1
{credential}
"#,
            url = fake.url,
            ca = ca_file().display()
        ),
    )
    .unwrap();
    path
}

/// The operator's overrides: a kill switch on EMEA, an agent Graph does not know yet, and
/// the Sales blueprint's permissions (which Graph does not hold).
fn local_overrides() -> Value {
    json!({
        "blueprints": {BP_SALES: {"name": "Sales Assistant Agent", "permissions": ["Orders.Read.All"]}},
        "agents": {
            AGENT_EMEA: {"display_name": "Sales Assistant - EMEA", "blueprint": BP_SALES, "enabled": false},
            AGENT_NEW: {"display_name": "Created a minute ago", "blueprint": BP_SALES}
        }
    })
}

fn agentgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentgate"));
    cmd.args(args).env("RUST_LOG", "trace");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

#[test]
fn sync_writes_the_merged_directory_atomically() {
    use std::os::unix::fs::MetadataExt;
    let fake = FakeGraph::start(small_tenant());
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path());
    let agentgate::config::GraphCredential::ClientSecretFile(secret) = secret else {
        unreachable!()
    };
    let config = write_config(
        dir.path(),
        &fake,
        &format!("client_secret_file = {:?}", secret.display().to_string()),
    );
    let local = dir.path().join("policies/data/directory.json");
    std::fs::write(&local, local_overrides().to_string()).unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("directory.json");
    std::fs::write(&out, "{\"old\": true}").unwrap();
    let inode_before = std::fs::metadata(&out).unwrap().ino();
    let config = config.to_str().unwrap();
    let out_arg = out.to_str().unwrap();

    let ok = agentgate(
        &["directory", "sync", "--config", config, "--out", out_arg],
        &[],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("4 agents, 1 agent users"),
        "{}",
        text(&ok)
    );
    let written = std::fs::read_to_string(&out).unwrap();
    let d = Directory::parse(&written, &out).unwrap();
    assert!(!d.agents[AGENT_EMEA].enabled, "the local kill switch wins");
    assert!(
        d.agents[AGENT_NEW].enabled,
        "an agent Graph does not know is kept"
    );
    assert_eq!(
        d.agents[AGENT_SOUTH_AMERICA].risk,
        Risk::High,
        "risk from Graph"
    );
    assert!(d.blueprints[BP_LEGACY].disabled, "disabled in Entra");
    assert_eq!(d.blueprints[BP_SALES].permissions, vec!["Orders.Read.All"]);
    assert_eq!(d.agent_users[AGENT_USER_EMEA].parent_agent, AGENT_EMEA);
    assert_ne!(
        std::fs::metadata(&out).unwrap().ino(),
        inode_before,
        "replaced by a rename, not rewritten in place"
    );
    assert_eq!(leftovers(&out_dir), Vec::<String>::new());

    // A failing sync leaves the file as it was.
    fake.state
        .inject(FaultTarget::Graph, GraphFault::ServerError, 100);
    let failed = agentgate(
        &["directory", "sync", "--config", config, "--out", out_arg],
        &[],
    );
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    assert!(text(&failed).contains("HTTP 500"), "{}", text(&failed));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), written);
    assert_eq!(leftovers(&out_dir), Vec::<String>::new());
    fake.state.clear_faults();

    // The local override file is never the output of a merged sync.
    let refused = agentgate(
        &[
            "directory",
            "sync",
            "--config",
            config,
            "--out",
            local.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused).contains("refusing to overwrite the local override file"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        serde_json::from_str::<Value>(&std::fs::read_to_string(&local).unwrap()).unwrap(),
        local_overrides()
    );

    let graph_only = agentgate(
        &[
            "directory",
            "sync",
            "--config",
            config,
            "--out",
            out_arg,
            "--graph-only",
        ],
        &[],
    );
    assert_eq!(graph_only.status.code(), Some(0), "{}", text(&graph_only));
    let d = Directory::parse(&std::fs::read_to_string(&out).unwrap(), &out).unwrap();
    assert!(d.agents[AGENT_EMEA].enabled);
    assert!(!d.agents.contains_key(AGENT_NEW));
}

#[test]
fn diff_shows_what_a_sync_would_change() {
    let fake = FakeGraph::start(small_tenant());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &fake,
        "client_secret_env = \"AGENTGATE_GRAPH_SECRET\"",
    );
    std::fs::write(
        dir.path().join("policies/data/directory.json"),
        local_overrides().to_string(),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let env = [("AGENTGATE_GRAPH_SECRET", SECRET)];

    let out = agentgate(&["directory", "diff", "--config", config], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "+ agent {AGENT_SOUTH_AMERICA} \"Sales Assistant - South America\""
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "+ blueprint {BP_LEGACY} \"Legacy Research Agent\""
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("~ blueprint {BP_SALES}\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains("    publisher: null -> \"Contoso\""),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "~ agent {AGENT_EMEA}\n    agent_user: null -> \"{AGENT_USER_EMEA}\"\n"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("4 added, 0 removed, 2 changed"), "{stdout}");

    // Against an earlier sync: Entra has since disabled an agent and raised a risk.
    let earlier = dir.path().join("earlier.json");
    let out_arg = earlier.to_str().unwrap();
    let synced = agentgate(
        &["directory", "sync", "--config", config, "--out", out_arg],
        &env,
    );
    assert_eq!(synced.status.code(), Some(0), "{}", text(&synced));
    assert!(fake.state.set_account_enabled(AGENT_LEGACY, false));
    assert!(fake.state.set_risk(AGENT_USER_EMEA, "medium", "atRisk"));
    let out = agentgate(
        &[
            "directory",
            "diff",
            "--config",
            config,
            "--against",
            out_arg,
            "--format",
            "json",
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let changes: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        changes,
        json!({"changes": [
            {"kind": "agent", "id": AGENT_LEGACY, "change": "changed",
             "fields": [{"field": "enabled", "before": true, "after": false}]},
            {"kind": "agent_user", "id": AGENT_USER_EMEA, "change": "changed",
             "fields": [{"field": "risk", "before": "none", "after": "medium"},
                        {"field": "risk_state", "before": "none", "after": "atRisk"}]}
        ]})
    );
}

/// Runs a sync with every credential kind, and with refused ones, at trace level: neither
/// the secret, the federated token, a client assertion nor an access token may appear in
/// anything the binary prints.
#[test]
fn secrets_and_tokens_never_reach_logs_or_errors() {
    let fake = FakeGraph::start(small_tenant());
    let dir = tempfile::tempdir().unwrap();
    let federated = dir.path().join("federated-token");
    std::fs::write(&federated, FEDERATED).unwrap();
    let out = dir.path().join("out.json");
    let cert = repo().join("tests/data/graph/client-cert.pem");
    let key = repo().join("tests/data/keys/primary.pem");
    let wrong = "wr0ng-s3cret-Kp2-never-print";
    let secret_env = "client_secret_env = \"AGENTGATE_GRAPH_SECRET\"".to_string();
    let certificate = format!(
        "certificate_file = {:?}\nprivate_key_file = {:?}",
        cert.display().to_string(),
        key.display().to_string()
    );
    let federated = format!(
        "federated_token_file = {:?}",
        federated.display().to_string()
    );
    // (the [directory.graph] credential lines, the secret in the environment, exit code)
    let runs = [
        (secret_env.clone(), Some(SECRET), 0),
        (certificate, None, 0),
        (federated, None, 0),
        (secret_env, Some(wrong), 1),
    ];
    let mut printed = String::new();
    for (credential, secret, code) in &runs {
        let config = write_config(dir.path(), &fake, credential);
        let env: Vec<(&str, &str)> = secret
            .iter()
            .map(|s| ("AGENTGATE_GRAPH_SECRET", *s))
            .collect();
        let o = agentgate(
            &[
                "directory",
                "sync",
                "--config",
                config.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &env,
        );
        assert_eq!(o.status.code(), Some(*code), "{credential}: {}", text(&o));
        printed.push_str(&text(&o));
    }
    assert!(
        printed.contains("invalid_client: AADSTS7000215"),
        "the refusal is explained"
    );
    assert!(
        printed.contains("obtained a Graph access token"),
        "trace logs were written"
    );
    assert!(
        printed.contains("Graph answered"),
        "trace logs were written"
    );

    let mut needles = vec![SECRET.to_string(), FEDERATED.to_string(), wrong.to_string()];
    needles.extend(fake.state.issued_tokens());
    needles.extend(fake.state.received_credentials());
    assert!(needles.len() >= 3 + 3 + 4, "{needles:?}");
    for needle in needles {
        // A JWT's signature alone would be a leak too.
        for part in [needle.as_str(), needle.rsplit('.').next().unwrap_or("")] {
            if part.len() >= 12 {
                assert!(
                    !printed.contains(part),
                    "the binary printed a secret or token"
                );
            }
        }
    }
}

#[test]
fn eval_with_graph_decides_on_the_merged_directory_and_says_where_values_came_from() {
    let fake = FakeGraph::start(small_tenant());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &fake,
        "client_secret_env = \"AGENTGATE_GRAPH_SECRET\"",
    );
    // The shipped policies, with the local overrides as the set's directory file.
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(repo().join("policies/."))
        .arg(dir.path().join("policies"))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        dir.path().join("policies/data/directory.json"),
        local_overrides().to_string(),
    )
    .unwrap();
    let key = key("primary");
    let mut caller = spec(agentgate::identity::CallerKind::AgentApp);
    caller.client = AGENT_SOUTH_AMERICA.into();
    let token = mint(&key, &caller);
    let config = config.to_str().unwrap();
    let env = [("AGENTGATE_GRAPH_SECRET", SECRET)];
    let eval = |graph: bool| {
        let mut args = vec![
            "eval",
            "--config",
            config,
            "--token",
            &token,
            "--path",
            "/orders/1",
            "--no-verify",
            "--explain",
            "--format",
            "json",
        ];
        if graph {
            args.push("--graph");
        }
        let out = agentgate(&args, &env);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };

    // The file alone does not list the agent (an agent of a known blueprint is allowed);
    // Graph lists it at high risk.
    let local_only = eval(false);
    assert_eq!(local_only["reason"], "allowed", "{local_only}");
    assert_eq!(local_only["explain"]["sources"], json!({}));
    let merged = eval(true);
    assert_eq!(merged["reason"], "risk_high", "{merged}");
    assert_eq!(merged["directory"]["graph"], true);
    let sources = &merged["explain"]["sources"];
    let agent = &sources[format!("data.directory.agents[\"{AGENT_SOUTH_AMERICA}\"]")];
    assert_eq!(agent["source"], "graph", "{sources}");
    let blueprint = &sources[format!("data.directory.blueprints[\"{BP_SALES}\"]")];
    assert_eq!(blueprint["source"], "graph_and_file", "{sources}");
    assert!(
        blueprint["from_file"]
            .as_array()
            .unwrap()
            .contains(&json!("permissions")),
        "{sources}"
    );
    // Nothing secret in what eval printed.
    let out = agentgate(
        &[
            "eval",
            "--config",
            config,
            "--token",
            &token,
            "--path",
            "/orders/1",
            "--no-verify",
            "--graph",
            "--explain",
        ],
        &env,
    );
    let printed = text(&out);
    assert!(
        printed.contains("from graph_and_file (the file decided: "),
        "{printed}"
    );
    assert!(!printed.contains(SECRET));
}
