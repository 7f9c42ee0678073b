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
    assert_eq!(c.server.h2_idle_timeout, Some(Duration::from_secs(60)));
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
fn the_policy_time_resolution_and_decision_cache_are_bounded() {
    let parsed = |resolution: &str| {
        Config::parse(
            &format!("{MINIMAL}\n[policy]\ntime_resolution = \"{resolution}\"\n"),
            Path::new("a.toml"),
        )
    };
    let c = Config::parse(MINIMAL, Path::new("a.toml")).unwrap();
    assert_eq!(c.policy.time_resolution, Duration::from_secs(1));
    assert_eq!(c.policy.decision_cache, 4096);
    assert_eq!(
        parsed("1ms").unwrap().policy.time_resolution,
        Duration::from_millis(1)
    );
    let ConfigError::Invalid { problems, .. } = Config::parse(
        &format!("{MINIMAL}\n[policy]\ndecision_cache = 1048577\n"),
        Path::new("a.toml"),
    )
    .unwrap_err() else {
        panic!("expected a validation problem for decision_cache")
    };
    assert_eq!(
        problems,
        ["policy.decision_cache must be at most 1048576 entries"]
    );
    for bad in ["0s", "2h"] {
        let ConfigError::Invalid { problems, .. } = parsed(bad).unwrap_err() else {
            panic!("expected a validation problem for {bad}")
        };
        assert_eq!(
            problems,
            ["policy.time_resolution must be between 1ns and 1h"],
            "{bad}"
        );
    }
}

#[test]
fn durations_counted_in_seconds_refuse_fractions() {
    let text = MINIMAL.replace("[identity]\n", "[identity]\nleeway = \"1500ms\"\n")
        + "\n[server]\ngraceful_shutdown_timeout = \"500ms\"\n\
           \n[token_cache]\nmax_ttl = \"30s 250ms\"\n";
    let ConfigError::Invalid { problems, .. } =
        Config::parse(&text, Path::new("a.toml")).unwrap_err()
    else {
        panic!("expected validation problems")
    };
    assert_eq!(
        problems,
        [
            "identity.leeway must be a whole number of seconds, not 1s 500ms",
            "server.graceful_shutdown_timeout must be a whole number of seconds, not 500ms",
            "token_cache.max_ttl must be a whole number of seconds, not 30s 250ms",
        ]
    );
    let text = MINIMAL.to_string() + "\n[server]\ngraceful_shutdown_timeout = \"2m\"\n";
    let c = Config::parse(&text, Path::new("a.toml")).unwrap();
    assert_eq!(c.server.graceful_shutdown_timeout, Duration::from_secs(120));
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
    // The location, never the file's text.
    let err = Config::parse("[server]\nthreads = \"s3cr3t\n", Path::new("a.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("a.toml:2:"), "{err}");
    assert!(err.contains("threads:"), "{err}");
    assert!(!err.contains("s3cr3t") && !err.contains('|'), "{err}");
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

#[test]
fn a_non_loopback_admin_listener_needs_a_token() {
    let open = MINIMAL.replace(
        "[identity]",
        "[admin]\naddress = \"0.0.0.0:9180\"\n\n[identity]",
    );
    let err = Config::parse(&open, Path::new("a.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("admin.address 0.0.0.0:9180 is not a loopback address"),
        "{err}"
    );
    let with_token = MINIMAL.replace(
        "[identity]",
        "[admin]\naddress = \"0.0.0.0:9180\"\ntoken_file = \"admin.token\"\n\n[identity]",
    );
    let config = Config::parse(&with_token, Path::new("/etc/agentgate/a.toml")).unwrap();
    assert_eq!(
        config.admin.token_file.as_deref(),
        Some(Path::new("/etc/agentgate/admin.token"))
    );
}

#[test]
fn plain_http_key_urls_are_only_for_the_demo() {
    let http = MINIMAL.replace(
        "[identity]",
        "[identity]\nauthority = \"http://127.0.0.1:8400\"",
    );
    let err = Config::parse(&http, Path::new("a.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is plain HTTP"), "{err}");
    let jwks = MINIMAL.replace(
        "id = \"AAAAAAAA-1111-1111-1111-000000000001\"",
        "id = \"AAAAAAAA-1111-1111-1111-000000000001\"\njwks_uri = \"http://keys.example/jwks\"",
    );
    assert!(Config::parse(&jwks, Path::new("a.toml")).is_err());
    let demo = format!("{http}\n[dev]\nissuer = \"127.0.0.1:8400\"\nkey = \"dev/k.pem\"\n");
    assert!(Config::parse(&demo, Path::new("a.toml")).is_ok());
}

#[test]
fn the_demo_tls_listener_is_a_loopback_address_of_its_own() {
    let dev = |tls: &str| {
        format!("{MINIMAL}\n[dev]\nissuer = \"127.0.0.1:8400\"\nkey = \"k.pem\"\n{tls}")
    };
    let none = Config::parse(&dev(""), Path::new("a.toml")).unwrap();
    assert_eq!(none.dev.unwrap().tls_listener, None);
    let tls = Config::parse(
        &dev("tls_listener = \"127.0.0.1:8443\"\n"),
        Path::new("a.toml"),
    )
    .unwrap();
    assert_eq!(
        tls.dev.unwrap().tls_listener,
        Some("127.0.0.1:8443".parse().unwrap())
    );
    assert_eq!(
        tls.listeners.len(),
        1,
        "the demo adds its listener at start"
    );
    for (value, problem) in [
        (
            "nowhere",
            "dev.tls_listener = \"nowhere\" is not a host:port",
        ),
        ("192.0.2.1:8443", "use a loopback or wildcard address"),
        ("127.0.0.1:8080", "is also a [[listeners]] address"),
    ] {
        let err = Config::parse(
            &dev(&format!("tls_listener = {value:?}\n")),
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(problem), "{value}: {err}");
    }
}

#[test]
fn the_cloud_sets_the_authority_and_the_issuer_forms() {
    let gov = MINIMAL.replace("[identity]", "[identity]\ncloud = \"us_government\"");
    let config = Config::parse(&gov, Path::new("a.toml")).unwrap();
    let tid = "aaaaaaaa-1111-1111-1111-000000000001";
    assert_eq!(
        config.identity.tenants[0].keys,
        KeySource::Discovery {
            authority: "https://login.microsoftonline.us".into()
        }
    );
    assert_eq!(
        config.identity.issuers.v2(tid),
        format!("https://login.microsoftonline.us/{tid}/v2.0")
    );
    let custom = MINIMAL.replace(
        "[identity]",
        "[identity]\nv2_issuer_host = \"login.example.test\"",
    );
    let config = Config::parse(&custom, Path::new("a.toml")).unwrap();
    assert_eq!(
        config.identity.issuers.v1(tid),
        format!("https://sts.windows.net/{tid}/")
    );
    assert_eq!(
        config.identity.issuers.v2(tid),
        format!("https://login.example.test/{tid}/v2.0")
    );
    let bad = MINIMAL.replace("[identity]", "[identity]\nv1_issuer_host = \"https://x/\"");
    assert!(Config::parse(&bad, Path::new("a.toml")).is_err());
}

#[test]
fn every_form_of_the_exchange_audience_is_refused_on_routes() {
    for aud in [
        "fb60f99c-7a34-4190-8149-302f77469936",
        "api://AzureADTokenExchange/",
    ] {
        let text = MINIMAL.replace(
            "audiences = [\"api://bbbbbbbb-2222-2222-2222-000000000001/\"]",
            &format!("audiences = [\"{aud}\"]"),
        );
        let err = Config::parse(&text, Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("token exchange endpoint"), "{aud}: {err}");
    }
}
fn problems(extra: &str) -> Vec<String> {
    match Config::parse(&format!("{MINIMAL}{extra}"), Path::new("/etc/ag/a.toml")) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

#[test]
fn a_bundle_source_reads_its_keys_and_defaults() {
    let c = Config::parse(
        &format!(
            "{MINIMAL}\n[policy.bundle]\nurl = \"https://blob.example/policies/bundle.tar.gz?sv=2024\"\n\
             sas_token_file = \"secrets/sas\"\nsigning_key = \"keys/bundle.pub.pem\"\nsignature_alg = \"ES256\"\n"
        ),
        Path::new("/etc/ag/a.toml"),
    )
    .unwrap();
    let b = c.policy.bundle.unwrap();
    assert_eq!(
        b.location,
        BundleLocation::Url("https://blob.example/policies/bundle.tar.gz?sv=2024".into())
    );
    assert_eq!(b.interval, Duration::from_secs(10));
    assert_eq!(b.timeout, Duration::from_secs(5));
    assert_eq!(b.max_bytes, 8 * 1024 * 1024);
    assert_eq!(
        b.credential,
        Some(BundleCredential::SasToken(SecretSource::File(
            "/etc/ag/secrets/sas".into()
        )))
    );
    assert_eq!(
        b.signing,
        Some(BundleSigning {
            key_file: "/etc/ag/keys/bundle.pub.pem".into(),
            alg: Algorithm::ES256
        })
    );

    let c = Config::parse(
        &format!("{MINIMAL}\n[policy.bundle]\nfile = \"bundle.tar.gz\"\ninterval = \"1s\"\n"),
        Path::new("/etc/ag/a.toml"),
    )
    .unwrap();
    let b = c.policy.bundle.unwrap();
    assert_eq!(
        b.location,
        BundleLocation::File("/etc/ag/bundle.tar.gz".into())
    );
    assert_eq!(
        (b.interval, b.credential, b.signing),
        (Duration::from_secs(1), None, None)
    );
    assert_eq!(
        Config::parse(MINIMAL, Path::new("a.toml"))
            .unwrap()
            .policy
            .bundle,
        None
    );
}

#[test]
fn a_bundle_source_is_validated_with_clear_problems() {
    assert_eq!(
        problems("\n[policy.bundle]\ninterval = \"500ms\"\ntimeout = \"0s\"\nmax_bytes = 10\n"),
        [
            "policy.bundle: set exactly one of url and file",
            "policy.bundle.interval must be at least 1s",
            "policy.bundle.timeout must be greater than zero",
            "policy.bundle.max_bytes must be at least 1024",
        ]
    );
    assert_eq!(
        problems("\n[policy.bundle]\nurl = \"ftp://host/b.tar.gz\"\nfile = \"b.tar.gz\"\n"),
        ["policy.bundle: set exactly one of url and file"]
    );
    assert_eq!(
        problems("\n[policy.bundle]\nurl = \"ftp://host/b.tar.gz\"\nsignature_alg = \"HS256\"\n"),
        [
            "policy.bundle.url \"ftp://host/b.tar.gz\" must be an http(s) URL",
            "policy.bundle.signature_alg \"HS256\" is not supported: use RS256 or ES256",
        ]
    );
    assert_eq!(
        problems(
            "\n[policy.bundle]\nurl = \"https://u:p@host/b.tar.gz?sv=1&sig=abc\"\n\
             auth_token_env = \"T\"\nsas_token_env = \"S\"\n"
        ),
        [
            "policy.bundle.url must not hold credentials: use auth_token_file",
            "policy.bundle.url must not hold a shared access signature: put it in sas_token_file or sas_token_env",
            "policy.bundle: set at most one of auth_token_file, auth_token_env, sas_token_file and sas_token_env",
        ]
    );
    // A token never travels in clear text, except to this machine.
    assert_eq!(
        problems("\n[policy.bundle]\nurl = \"http://bundles.internal/b.tar.gz\"\nauth_token_env = \"T\"\n"),
        ["policy.bundle: a token is only sent over https (or http to a loopback address)"]
    );
    for local in [
        "http://127.0.0.1:8000/b",
        "http://[::1]:8000/b",
        "http://localhost/b",
    ] {
        let text =
            format!("{MINIMAL}\n[policy.bundle]\nurl = \"{local}\"\nauth_token_env = \"T\"\n");
        assert!(Config::parse(&text, Path::new("a.toml")).is_ok(), "{local}");
    }
    assert_eq!(
        problems("\n[policy.bundle]\nfile = \"b.tar.gz\"\nauth_token_file = \"t\"\n"),
        ["policy.bundle: a token only applies to a url, not to a file"]
    );
    assert_eq!(
        problems("\n[policy.bundle]\nurl = \"https://h/b\"\nauth_token_env = \"\"\n"),
        ["policy.bundle: the token's environment variable name is empty"]
    );
    let typo = format!("{MINIMAL}\n[policy.bundle]\nfile = \"b\"\npoll = \"1s\"\n");
    let err = Config::parse(&typo, Path::new("a.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `poll`"), "{err}");
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
            "{GRAPH_IDS}\n{lines}\ngraph_url = \"https://127.0.0.1:9/\"\non_stale = \"refuse_unvouched\"\nca_file = \"ca.pem\""
        ))
        .unwrap();
        let g = c.directory.graph.unwrap();
        assert_eq!(g.credential, expected);
        assert_eq!(g.graph_url, "https://127.0.0.1:9");
        assert_eq!(g.authority, "https://login.microsoftonline.com");
        assert_eq!(g.on_stale, OnStale::RefuseUnvouched);
        assert_eq!(g.ca_file, Some(PathBuf::from("/etc/agentgate/ca.pem")));
    }
}

#[test]
fn graph_is_reached_over_https_outside_the_demo() {
    let http =
        format!("{GRAPH_IDS}\nclient_secret_env = \"S\"\ngraph_url = \"http://127.0.0.1:9\"");
    let problems = graph_problems(&http);
    assert!(problems[0].contains("is plain HTTP"), "{problems:#?}");
    let demo = format!(
        "{MINIMAL}\n[directory.graph]\n{http}\n\n[dev]\nissuer = \"127.0.0.1:8400\"\nkey = \"k.pem\"\n"
    );
    assert!(Config::parse(&demo, Path::new("a.toml")).is_ok());
    let gov = format!(
        "{}\n[directory.graph]\n{GRAPH_IDS}\nclient_secret_env = \"S\"\n",
        MINIMAL.replace("[identity]", "[identity]\ncloud = \"us_government\"")
    );
    let g = Config::parse(&gov, Path::new("a.toml"))
        .unwrap()
        .directory
        .graph
        .unwrap();
    assert_eq!(g.authority, "https://login.microsoftonline.us");
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
        "directory.graph.authority = \"ftp://login.example\" must be an https:// URL",
        "directory.graph.graph_url = \"\" must be an https:// URL",
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

/// `MINIMAL`'s route with `lines` added.
fn route_with(lines: &str) -> Result<Config, ConfigError> {
    let text = MINIMAL.replace(
        "upstreams = [\"127.0.0.1:9001\"]",
        &format!("upstreams = [\"127.0.0.1:9001\"]\n{lines}"),
    );
    Config::parse(&text, Path::new("a.toml"))
}

#[test]
fn route_protocols_default_to_http1_and_grpc_implies_h2() {
    let plain = &route_with("").unwrap().routes[0];
    assert!(!plain.upstream_h2 && !plain.grpc && !plain.websocket);
    assert_eq!(plain.request_timeout, None);
    let grpc = &route_with("grpc = true").unwrap().routes[0];
    assert!(grpc.grpc && grpc.upstream_h2);
    let h2 = &route_with("upstream_protocol = \"h2\"").unwrap().routes[0];
    assert!(h2.upstream_h2 && !h2.grpc);
    let ws = &route_with("websocket = true\nrequest_timeout = \"90s\"")
        .unwrap()
        .routes[0];
    assert!(ws.websocket);
    assert_eq!(ws.request_timeout, Some(Duration::from_secs(90)));
    let zero = &route_with("request_timeout = \"0s\"").unwrap().routes[0];
    assert_eq!(zero.request_timeout, None);
}

#[test]
fn route_protocols_that_cannot_work_are_refused() {
    for (lines, problem) in [
        (
            "grpc = true\nupstream_protocol = \"http1\"",
            "grpc needs upstream_protocol = \"h2\"",
        ),
        (
            "websocket = true\nupstream_protocol = \"h2\"",
            "websocket upgrades need upstream_protocol = \"http1\"",
        ),
        ("websocket = true\ngrpc = true", "websocket upgrades need"),
    ] {
        let err = route_with(lines).unwrap_err().to_string();
        assert!(err.contains(problem), "{lines}: {err}");
    }
    let err = route_with("upstream_protocol = \"h3\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `h3`"), "{err}");
}

#[test]
fn an_h2_idle_timeout_of_zero_means_none() {
    let text = MINIMAL.to_string() + "\n[server]\nh2_idle_timeout = \"0s\"\n";
    let c = Config::parse(&text, Path::new("/etc/agentgate/agentgate.toml")).unwrap();
    assert_eq!(c.server.h2_idle_timeout, None);
    let text = MINIMAL.to_string() + "\n[server]\nh2_idle_timeout = \"5m\"\n";
    let c = Config::parse(&text, Path::new("/etc/agentgate/agentgate.toml")).unwrap();
    assert_eq!(c.server.h2_idle_timeout, Some(Duration::from_secs(300)));
}
