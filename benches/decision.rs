//! Criterion benchmarks of the decision path, without network on the measured path: token
//! validation (RS256, cache miss and hit), caller classification, input building, policy
//! evaluation of the shipped set (interpreter and compiled engine, and the compiled engine
//! with ten times the data and route rules), and the whole decision (compiled engine, the
//! gateway's default).
//!
//! Full run: `cargo bench --bench decision`. Smoke: `cargo bench --bench decision -- --quick`.
//! Keys are fetched once at setup from a dev issuer on loopback, as the gateway would.

// Tests and tools may lock and read the clock as they like: the rules are for the gateway.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use agentgate::authorize::Authorizer;
use agentgate::config::Config;
use agentgate::dev::servers::{serve_issuer, IssuerState};
use agentgate::dev::{SigningIdentity, TokenSpec};
use agentgate::identity::caller::classify_unverified;
use agentgate::identity::{CallerKind, KeyStore, TokenValidator};
use agentgate::policy::input::{build_input, InputParts, RequestFacts, RouteInput};
use agentgate::policy::{EngineState, PolicySnapshot};
use agentgate::routes::{RouteAccess, RouteTable};
use agentgate::snapshot::Snapshot;
use base64::Engine;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::path::Path;
use std::sync::Arc;

const TENANT: &str = "aaaaaaaa-1111-1111-1111-000000000001";

/// The policy time budget here: benchmarks measure speed, so a busy machine must not turn a
/// slow evaluation into a failed run.
const BUDGET: std::time::Duration = std::time::Duration::from_secs(1);

struct Setup {
    rt: tokio::runtime::Runtime,
    config: Config,
    key: SigningIdentity,
    keys: Arc<KeyStore>,
}

fn now() -> u64 {
    agentgate::clock::unix_now()
}

fn setup() -> Setup {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let key = SigningIdentity::from_pem(
        &std::fs::read(root.join("tests/data/keys/primary.pem")).unwrap(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(serve_issuer(
        listener,
        IssuerState::new(addr, vec![key.jwk.clone()]),
    ));
    let text = std::fs::read_to_string(root.join("config/agentgate.toml"))
        .unwrap()
        .replace("http://127.0.0.1:8400", &format!("http://{addr}"));
    let config = Config::parse(&text, &root.join("config/agentgate.toml")).unwrap();
    let keys = Arc::new(KeyStore::new(&config.identity).unwrap());
    rt.block_on(keys.refresh_due());
    assert!(keys.ready(), "keys did not load from the loopback issuer");
    Setup {
        rt,
        config,
        key,
        keys,
    }
}

/// A copy of the policy directory whose data is `factor` times larger: that many times the
/// blueprints, agents and blueprint access entries, and that many times the rules on the
/// benchmarked route, the extra ones (matching nothing) ahead of the real ones.
fn scaled_policy_dir(dir: &Path, factor: usize) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(out.path().join("agentgate")).unwrap();
    std::fs::create_dir_all(out.path().join("data")).unwrap();
    for e in std::fs::read_dir(dir.join("agentgate")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), out.path().join("agentgate").join(e.file_name())).unwrap();
    }
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("data").join(name)).unwrap()).unwrap()
    };
    let (mut directory, mut access) = (read("directory.json"), read("access.json"));
    let blueprints = directory["blueprints"].as_object().unwrap().clone();
    let agents = directory["agents"].as_object().unwrap().clone();
    let access_blueprints = access["blueprints"].as_object().unwrap().clone();
    for copy in 1..factor {
        let renamed = |id: &str| format!("{:04x}{}", 0x1000 * copy, &id[4..]);
        for (id, entry) in &blueprints {
            directory["blueprints"][renamed(id)] = entry.clone();
        }
        for (id, entry) in &agents {
            let mut entry = entry.clone();
            let blueprint = entry["blueprint"].as_str().unwrap().to_string();
            entry["blueprint"] = renamed(&blueprint).into();
            entry.as_object_mut().unwrap().remove("agent_user");
            directory["agents"][renamed(id)] = entry;
        }
        for (id, entry) in &access_blueprints {
            access["blueprints"][renamed(id)] = entry.clone();
        }
    }
    let rules = access["blueprints"]["cccccccc-3333-3333-3333-000000000001"]["routes"]["orders"]
        .as_array_mut()
        .unwrap();
    let extra: Vec<serde_json::Value> = (0..rules.len() * (factor - 1))
        .map(|i| {
            serde_json::json!({"methods": ["DELETE"], "path_prefixes": [format!("/archive-{i}")],
                "roles": ["Orders.Archive"], "scopes": ["Orders.Archive"]})
        })
        .collect();
    rules.splice(0..0, extra);
    for (name, doc) in [("directory.json", directory), ("access.json", access)] {
        std::fs::write(out.path().join("data").join(name), doc.to_string()).unwrap();
    }
    out
}

fn agent_token(s: &Setup, uti: u64) -> String {
    let mut extra = serde_json::Map::new();
    extra.insert("uti".into(), uti.into());
    let spec = TokenSpec {
        kind: CallerKind::AgentApp,
        tenant: TENANT.into(),
        version: "1.0".into(),
        audience: "api://bbbbbbbb-2222-2222-2222-000000000001".into(),
        client: "dddddddd-4444-4444-4444-000000000001".into(),
        blueprint: Some("cccccccc-3333-3333-3333-000000000001".into()),
        subject: None,
        roles: vec!["Orders.Read.All".into()],
        scopes: vec![],
        issued_at: now(),
        lifetime_secs: 3600,
        extra,
    };
    s.key.sign(&spec.claims()).unwrap()
}

fn benches(c: &mut Criterion) {
    let s = setup();
    let validator = TokenValidator::new(s.keys.clone(), &s.config.identity);
    let token = agent_token(&s, 1);
    let snapshot = Arc::new(PolicySnapshot::load(&s.config.policy.dir, BUDGET, None).unwrap());
    let route = RouteAccess {
        audiences: s.config.routes[0].audiences.clone(),
        input: RouteInput::new("orders", "/orders"),
    };

    c.bench_function("token/verify_rs256_uncached", |b| {
        b.iter(|| s.rt.block_on(validator.verify(&token, now())).unwrap())
    });

    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).unwrap())
        .unwrap();
    c.bench_function("caller/classify", |b| {
        b.iter(|| classify_unverified(&claims).unwrap())
    });

    let verified = s.rt.block_on(validator.verify(&token, now())).unwrap();
    let resolution = snapshot.directory.resolve(&verified.caller).unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("user-agent", "bench".parse().unwrap());
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    let facts = RequestFacts {
        method: "GET",
        host: "api.contoso.example",
        path: "/orders/42",
        query: "",
        client_ip: "127.0.0.1",
        headers: &headers,
        time_ns: now() * 1_000_000_000,
        upgrade: None,
        client_certificate: None,
    };
    let parts = InputParts {
        route: &route.input,
        token: &verified,
        directory: &snapshot.prepared,
        resolution: &resolution,
        input_headers: &s.config.policy.input_headers,
    };
    c.bench_function("policy/input_build", |b| {
        b.iter(|| build_input(&facts, parts))
    });
    let input = build_input(&facts, parts);
    c.bench_function("policy/evaluate_shipped", |b| {
        b.iter(|| snapshot.decide(input.clone()).unwrap())
    });
    // The gateway's default: the compiled engine, once it agrees with the interpreter.
    let compiled = Arc::new(PolicySnapshot::load(&s.config.policy.dir, BUDGET, None).unwrap());
    assert_eq!(compiled.compile_now(), EngineState::Compiled);
    c.bench_function("policy/evaluate_shipped_compiled", |b| {
        b.iter(|| compiled.decide(input.clone()).unwrap())
    });
    // The same input again, answered by the decision cache of a set that serves.
    let remembered = PolicySnapshot::load(&s.config.policy.dir, BUDGET, None).unwrap();
    assert_eq!(remembered.compile_now(), EngineState::Compiled);
    remembered.remember_decisions(s.config.policy.decision_cache);
    assert_eq!(
        remembered.decide(input.clone()),
        compiled.decide(input.clone())
    );
    c.bench_function("policy/decide_remembered", |b| {
        b.iter(|| remembered.decide(input.clone()).unwrap())
    });
    // An input never seen before (a new x-request-id): the cache's cost on a miss.
    let mut request_id = 0u64;
    let mut new_input = || {
        request_id += 1;
        let mut headers = http::HeaderMap::new();
        headers.insert("x-request-id", request_id.into());
        build_input(
            &RequestFacts {
                headers: &headers,
                ..facts
            },
            parts,
        )
    };
    c.bench_function("policy/decide_new_input_cache_off", |b| {
        b.iter_batched(
            &mut new_input,
            |i| compiled.decide(i).unwrap(),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("policy/decide_new_input_cache_on", |b| {
        b.iter_batched(
            &mut new_input,
            |i| remembered.decide(i).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let scaled_dir = scaled_policy_dir(&s.config.policy.dir, 10);
    let scaled = PolicySnapshot::load(scaled_dir.path(), BUDGET, None).unwrap();
    assert_eq!(scaled.compile_now(), EngineState::Compiled);
    assert_eq!(scaled.decide(input.clone()), compiled.decide(input.clone()));
    c.bench_function("policy/evaluate_compiled_10x_data", |b| {
        b.iter(|| scaled.decide(input.clone()).unwrap())
    });

    let serving = Snapshot {
        routes: RouteTable::new(&s.config.routes).unwrap(),
        policy: compiled.clone(),
        shadow: None,
        bundle_revision: None,
    };
    for (name, cache) in [
        ("decision/whole_cached_token", true),
        ("decision/whole_uncached_token", false),
    ] {
        let mut cache_cfg = s.config.token_cache.clone();
        cache_cfg.enabled = cache;
        let authorizer = Authorizer::new(
            TokenValidator::new(s.keys.clone(), &s.config.identity),
            &s.config.identity,
            &cache_cfg,
            &s.config.policy,
        );
        c.bench_function(name, |b| {
            b.iter(|| {
                let facts = RequestFacts {
                    time_ns: now() * 1_000_000_000,
                    ..facts
                };
                let v =
                    s.rt.block_on(authorizer.authorize(&serving, &route, &facts, false));
                assert!(v.outcome.allowed().is_some());
            })
        });
    }
}

criterion_group!(decision, benches);
criterion_main!(decision);
