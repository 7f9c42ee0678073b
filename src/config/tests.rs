use super::*;

const MINIMAL: &str = r#"
[[listeners]]
address = "127.0.0.1:8080"

[identity]
[[identity.tenants]]
id = "AAAAAAAA-1111-1111-1111-000000000001"

[[routes]]
id = "orders"
path_prefix = "/orders"
upstreams = ["127.0.0.1:9001"]
audiences = ["api://bbbbbbbb-2222-2222-2222-000000000001/"]
"#;

#[test]
fn defaults_follow_the_documentation() {
    let c = Config::parse(MINIMAL, Path::new("/etc/agentgate/agentgate.toml")).unwrap();
    assert_eq!(c.identity.algorithms, vec![Algorithm::RS256]);
    assert_eq!(c.identity.leeway, Duration::from_secs(60));
    assert_eq!(c.identity.max_token_bytes, 8192);
    assert_eq!(c.identity.refresh_interval, Duration::from_secs(3600));
    assert_eq!(c.identity.min_refetch_interval, Duration::from_secs(30));
    assert_eq!(c.policy.timeout, Duration::from_millis(25));
    assert_eq!(c.policy.engine, PolicyEngine::Auto);
    assert_eq!(c.policy.dir, PathBuf::from("/etc/agentgate/../policies"));
    assert_eq!(
        c.identity.tenants[0].id,
        "aaaaaaaa-1111-1111-1111-000000000001"
    );
    assert_eq!(
        c.identity.tenants[0].keys,
        KeySource::Discovery {
            authority: "https://login.microsoftonline.com".into()
        }
    );
    assert_eq!(
        c.routes[0].audiences,
        vec!["api://bbbbbbbb-2222-2222-2222-000000000001"]
    );
    assert!(c.token_cache.enabled);
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = MINIMAL
        .replace("127.0.0.1:9001", "not an address")
        .replace("AAAAAAAA-1111-1111-1111-000000000001", "contoso")
        .replace(
            "api://bbbbbbbb-2222-2222-2222-000000000001/",
            "fb60f99c-7a34-4190-8149-302f77469936",
        )
        + "\n[policy]\ninput_headers = [\"Authorization\"]\n";
    let ConfigError::Invalid { problems, .. } =
        Config::parse(&text, Path::new("a.toml")).unwrap_err()
    else {
        panic!("expected validation problems")
    };
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("token exchange")));
    assert!(problems.iter().any(|p| p.contains("not a tenant GUID")));
    assert!(problems.iter().any(|p| p.contains("must not reach policy")));
}

#[test]
fn syntax_errors_carry_the_location() {
    let err = Config::parse("[identity\n", Path::new("a.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("a.toml:1:10: "), "{err}");
    let err = Config::parse("[server]\nthreadz = 2\n", Path::new("a.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("threadz"), "{err}");
}

#[test]
fn only_rsa_algorithms_are_configurable() {
    let text = MINIMAL.replace(
        "[identity]",
        "[identity]\nalgorithms = [\"HS256\", \"none\"]",
    );
    let ConfigError::Invalid { problems, .. } =
        Config::parse(&text, Path::new("a.toml")).unwrap_err()
    else {
        panic!("expected validation problems")
    };
    assert_eq!(problems.len(), 2, "{problems:#?}");
}

fn with_graph(section: &str) -> Result<Config, ConfigError> {
    Config::parse(
        &format!("{MINIMAL}\n[directory.graph]\n{section}\n"),
        Path::new("/etc/agentgate/agentgate.toml"),
    )
}

fn graph_problems(section: &str) -> Vec<String> {
    match with_graph(section).unwrap_err() {
        ConfigError::Invalid { problems, .. } => problems,
        other => panic!("expected validation problems, got {other}"),
    }
}

const GRAPH_IDS: &str = r#"tenant = "AAAAAAAA-1111-1111-1111-000000000001"
client_id = "bbbbbbbb-2222-2222-2222-00000000000a""#;

#[test]
fn the_graph_section_is_optional_and_documented_defaults_apply() {
    let c = Config::parse(MINIMAL, Path::new("a.toml")).unwrap();
    assert_eq!(c.directory.graph, None);

    let c = with_graph(&format!(
        "{GRAPH_IDS}\nclient_secret_file = \"secrets/graph\""
    ))
    .unwrap();
    let g = c.directory.graph.unwrap();
    assert_eq!(g.tenant, "aaaaaaaa-1111-1111-1111-000000000001");
    assert_eq!(
        g.credential,
        GraphCredential::ClientSecretFile(PathBuf::from("/etc/agentgate/secrets/graph"))
    );
    assert_eq!(g.authority, "https://login.microsoftonline.com");
    assert_eq!(g.graph_url, "https://graph.microsoft.com");
    assert_eq!(g.interval, Duration::from_secs(60));
    assert_eq!(g.max_age, Duration::from_secs(3600));
    assert_eq!(g.on_stale, OnStale::KeepServing);
    assert_eq!(g.timeout, Duration::from_secs(10));
    assert_eq!(g.sync_timeout, Duration::from_secs(300));
    assert_eq!(g.max_response_bytes, 8 * 1024 * 1024);
    assert_eq!(g.max_retries, 4);
    assert_eq!(g.page_size, 999);
    assert!(g.read_risk);
    assert_eq!(g.ca_file, None);
}

#[test]
fn each_graph_credential_kind_is_accepted() {
    let cases = [
        (
            "client_secret_env = \"GRAPH_SECRET\"",
            GraphCredential::ClientSecretEnv("GRAPH_SECRET".into()),
        ),
        (
            "certificate_file = \"graph.crt\"\nprivate_key_file = \"graph.key\"",
            GraphCredential::Certificate {
                certificate_file: PathBuf::from("/etc/agentgate/graph.crt"),
                private_key_file: PathBuf::from("/etc/agentgate/graph.key"),
            },
        ),
        (
            "federated_token_file = \"/var/run/secrets/azure/tokens/azure-identity-token\"",
            GraphCredential::FederatedTokenFile(PathBuf::from(
                "/var/run/secrets/azure/tokens/azure-identity-token",
            )),
        ),
    ];
    for (lines, expected) in cases {
        let c = with_graph(&format!(
            "{GRAPH_IDS}\n{lines}\ngraph_url = \"http://127.0.0.1:9/\"\non_stale = \"refuse_unvouched\"\nca_file = \"ca.pem\""
        ))
        .unwrap();
        let g = c.directory.graph.unwrap();
        assert_eq!(g.credential, expected);
        assert_eq!(g.graph_url, "http://127.0.0.1:9");
        assert_eq!(g.on_stale, OnStale::RefuseUnvouched);
        assert_eq!(g.ca_file, Some(PathBuf::from("/etc/agentgate/ca.pem")));
    }
}

#[test]
fn graph_credentials_must_be_exactly_one() {
    let none = graph_problems(GRAPH_IDS);
    assert_eq!(none.len(), 1, "{none:#?}");
    assert!(none[0].contains("exactly one credential") && none[0].contains("0 given"));

    let two = graph_problems(&format!(
        "{GRAPH_IDS}\nclient_secret_env = \"S\"\nfederated_token_file = \"t\""
    ));
    assert_eq!(two.len(), 1, "{two:#?}");
    assert!(two[0].contains("2 given"));

    let half = graph_problems(&format!("{GRAPH_IDS}\ncertificate_file = \"c.pem\""));
    assert!(half.iter().any(|p| p.contains("go together")), "{half:#?}");
}

#[test]
fn every_graph_problem_is_reported_at_once() {
    let problems = graph_problems(
        r#"tenant = "contoso.onmicrosoft.com"
client_id = "gateway"
client_secret_env = "1BAD-NAME"
authority = "ftp://login.example"
graph_url = ""
interval = "0s"
max_age = "0s"
timeout = "0s"
max_response_bytes = 10
max_retries = 50
page_size = 1000"#,
    );
    for needle in [
        "tenant \"contoso.onmicrosoft.com\" is not a tenant GUID",
        "client_id \"gateway\"",
        "not an environment variable name",
        "directory.graph.authority = \"ftp://login.example\" must be an http(s) URL",
        "directory.graph.graph_url = \"\" must be an http(s) URL",
        "interval must be at least 1s",
        "timeout must be greater than zero",
        "max_response_bytes must be at least 4096",
        "max_retries must be at most 10",
        "page_size must be between 1 and 999",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "missing {needle:?} in {problems:#?}"
        );
    }
    let unknown = with_graph(&format!("{GRAPH_IDS}\nclient_secret = \"inline\""))
        .unwrap_err()
        .to_string();
    assert!(
        unknown.starts_with("/etc/agentgate/agentgate.toml:18:1: client_secret: unknown field"),
        "{unknown}"
    );
    // An inline secret is not a field, and the error must not echo its value.
    assert!(!unknown.contains("inline"), "{unknown}");
}
