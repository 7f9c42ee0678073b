//! Policy bundles from a file or a bundle server: a real HTTP server on loopback that
//! speaks ETag/If-None-Match, checks credentials, and fails on demand.

use crate::cli::{agentgate, text};
use crate::support::*;
use agentgate::bundle::build::BuildOptions;
use agentgate::bundle::source::{ApplyBundle, BundleSource, PollOutcome, SourceError};
use agentgate::bundle::{build_bundle, BundleError, LoadedBundle, SigningKey};
use agentgate::config::{
    BundleConfig, BundleCredential, BundleLocation, BundleSigning, SecretSource,
};
use agentgate::identity::CallerKind;
use agentgate::policy::PolicySnapshot;
use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the bundle server serves and what it has seen.
#[derive(Default)]
pub struct Served {
    pub bundle: Vec<u8>,
    pub etag: Option<String>,
    /// Answer every request with this status instead.
    pub fail_with: Option<u16>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Refuse requests without `Authorization: Bearer <this>`.
    pub bearer: Option<String>,
    /// Refuse requests without this exact `sig` query parameter.
    pub sig: Option<String>,
    /// (If-None-Match, status) of every request.
    pub log: Vec<(Option<String>, u16)>,
    /// Every request's query string.
    pub queries: Vec<String>,
}

/// A bundle server on loopback, like a static host or blob storage: a strong ETag per
/// content, 304 on a matching If-None-Match.
pub struct BundleServer {
    pub addr: SocketAddr,
    pub served: Arc<Mutex<Served>>,
    runtime: Option<tokio::runtime::Runtime>,
}

async fn serve_bundle(State(served): State<Arc<Mutex<Served>>>, req: Request) -> Response {
    let delay = served.lock().unwrap().delay;
    tokio::time::sleep(delay).await;
    let mut s = served.lock().unwrap();
    let if_none_match = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let query = req.uri().query().unwrap_or("").to_string();
    s.queries.push(query.clone());
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let status = if let Some(code) = s.fail_with {
        code
    } else if s
        .bearer
        .as_ref()
        .is_some_and(|b| auth != format!("Bearer {b}"))
    {
        401
    } else if s
        .sig
        .as_ref()
        .is_some_and(|sig| !query.split('&').any(|p| p == format!("sig={sig}")))
    {
        403
    } else if if_none_match.is_some() && if_none_match == s.etag {
        304
    } else {
        200
    };
    s.log.push((if_none_match, status));
    let mut response = match status {
        200 => s.bundle.clone().into_response(),
        other => http::StatusCode::from_u16(other).unwrap().into_response(),
    };
    if let (Some(tag), 200 | 304) = (&s.etag, status) {
        response.headers_mut().insert("etag", tag.parse().unwrap());
    }
    response
}

impl BundleServer {
    pub fn start() -> BundleServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let served = Arc::new(Mutex::new(Served::default()));
        let addr = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let app = axum::Router::new()
                .fallback(serve_bundle)
                .with_state(served.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
            addr
        });
        BundleServer {
            addr,
            served,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/bundles/agentgate.tar.gz", self.addr)
    }

    /// Serves `bundle` under an ETag derived from its bytes.
    pub fn publish(&self, bundle: Vec<u8>) {
        let mut s = self.served.lock().unwrap();
        s.etag = Some(format!(
            "\"{:x}-{}\"",
            bundle.len(),
            bundle.iter().map(|b| *b as u64).sum::<u64>()
        ));
        s.bundle = bundle;
    }

    /// Stops answering: connections are refused from now on.
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for BundleServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A copy of the shipped policies with `edit` applied to the directory document.
pub fn policy_dir(edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(repo().join("policies/."))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let path = dir.path().join("data/directory.json");
    let mut directory: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut directory);
    std::fs::write(&path, serde_json::to_vec_pretty(&directory).unwrap()).unwrap();
    dir
}

/// A bundle of the shipped policies with `edit` applied to the directory.
pub fn bundle_with(
    revision: &str,
    key: Option<&SigningKey>,
    edit: impl FnOnce(&mut Value),
) -> Vec<u8> {
    let dir = policy_dir(edit);
    build_bundle(
        dir.path(),
        &BuildOptions {
            revision: Some(revision.into()),
            signing_key: key,
        },
    )
    .unwrap()
}

fn disable_sales(d: &mut Value) {
    d["blueprints"][BP_SALES]["disabled"] = true.into();
}

fn config(location: BundleLocation) -> BundleConfig {
    BundleConfig {
        location,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        max_bytes: 1024 * 1024,
        credential: None,
        signing: None,
    }
}

/// The gate the gateway applies: compile, run every Rego test, swap.
struct Enforced {
    snapshot: ArcSwap<Option<PolicySnapshot>>,
    applied: Mutex<Vec<String>>,
}

fn gate() -> (Arc<Enforced>, Arc<ApplyBundle>) {
    let enforced = Arc::new(Enforced {
        snapshot: ArcSwap::from_pointee(None),
        applied: Mutex::new(Vec::new()),
    });
    let e = enforced.clone();
    let apply: Arc<ApplyBundle> = Arc::new(move |bundle: LoadedBundle| {
        let snapshot = PolicySnapshot::from_files(
            &bundle.files,
            Duration::from_secs(1),
            Some(agentgate::policy::TestLimits::per_test(
                Duration::from_secs(5),
            )),
        )
        .map_err(|err| err.to_string())?;
        e.snapshot.store(Arc::new(Some(snapshot)));
        e.applied.lock().unwrap().push(bundle.manifest.revision);
        Ok(())
    });
    (enforced, apply)
}

impl Enforced {
    fn sales_disabled(&self) -> bool {
        let snapshot = self.snapshot.load();
        let snapshot = (**snapshot).as_ref().expect("a set was applied");
        snapshot.directory.blueprints[BP_SALES].disabled
    }
    fn applied(&self) -> Vec<String> {
        self.applied.lock().unwrap().clone()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn updated(outcome: PollOutcome) -> String {
    match outcome {
        PollOutcome::Updated { revision } => revision,
        other => panic!("expected an update, got {other:?}"),
    }
}

fn failed(outcome: PollOutcome) -> SourceError {
    match outcome {
        PollOutcome::Failed(e) => e,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn a_url_source_downloads_once_then_revalidates_with_the_etag() {
    let server = BundleServer::start();
    server.publish(bundle_with("r1", None, |_| {}));
    let source = BundleSource::new(&config(BundleLocation::Url(server.url()))).unwrap();
    let (enforced, apply) = gate();
    let rt = runtime();

    assert_eq!(updated(rt.block_on(source.poll(&apply))), "r1");
    assert!(!enforced.sales_disabled());
    assert!(matches!(
        rt.block_on(source.poll(&apply)),
        PollOutcome::Unchanged
    ));
    let etag = server.served.lock().unwrap().etag.clone();
    assert_eq!(
        server.served.lock().unwrap().log,
        [(None, 200), (etag.clone(), 304)]
    );

    // The kill switch, published.
    server.publish(bundle_with("r2", None, disable_sales));
    assert_eq!(updated(rt.block_on(source.poll(&apply))), "r2");
    assert!(enforced.sales_disabled());
    assert_eq!(enforced.applied(), ["r1", "r2"]);

    let status = source.status();
    assert_eq!(status.revision.as_deref(), Some("r2"));
    assert_eq!(status.etag, server.served.lock().unwrap().etag);
    assert_eq!(status.source, server.url());
    assert!(status.last_error.is_none());
    assert!(status.last_update_unix.is_some() && status.last_success_unix.is_some());
    let counts = source.counts();
    assert_eq!(
        (
            counts.polls,
            counts.updated,
            counts.unchanged,
            counts.fetch_errors,
            counts.rejected
        ),
        (3, 2, 1, 0, 0)
    );
}

#[test]
fn every_failure_keeps_the_last_good_set_and_is_reported() {
    let signer =
        SigningKey::from_pem(&std::fs::read(repo().join("tests/data/keys/primary.pem")).unwrap())
            .unwrap();
    let mut server = BundleServer::start();
    server.publish(bundle_with("good", Some(&signer), |_| {}));
    let mut cfg = config(BundleLocation::Url(server.url()));
    cfg.max_bytes = 256 * 1024;
    cfg.timeout = Duration::from_millis(500);
    cfg.signing = Some(BundleSigning {
        key_file: repo().join("tests/data/keys/primary.pub.pem"),
        alg: jsonwebtoken::Algorithm::RS256,
    });
    let source = BundleSource::new(&cfg).unwrap();
    let (enforced, apply) = gate();
    let rt = runtime();
    assert_eq!(updated(rt.block_on(source.poll(&apply))), "good");

    let still_good = |e: &SourceError, expected: &str| {
        assert_eq!(e.to_string(), expected);
        assert_eq!(enforced.applied(), ["good"]);
        assert!(!enforced.sales_disabled());
        let status = source.status();
        assert_eq!(status.revision.as_deref(), Some("good"));
        assert_eq!(status.last_error.as_deref(), Some(expected));
    };

    // The server fails.
    server.served.lock().unwrap().fail_with = Some(500);
    let e = failed(rt.block_on(source.poll(&apply)));
    still_good(&e, "fetch failed: HTTP 500 Internal Server Error");
    server.served.lock().unwrap().fail_with = None;

    // Someone flips the kill switch off in a signed bundle without the key.
    let signed = bundle_with("tampered", Some(&signer), disable_sales);
    let unsigned_edit = bundle_with("tampered", None, |_| {});
    let tampered = {
        use agentgate::bundle::archive::{read_entries, write_entries};
        let limits = agentgate::bundle::BundleLimits::default();
        let mut entries = read_entries(&signed, &limits).unwrap();
        let honest = read_entries(&unsigned_edit, &limits).unwrap();
        let directory = honest
            .iter()
            .find(|e| e.name == "directory/data.json")
            .unwrap();
        let slot = entries
            .iter_mut()
            .find(|e| e.name == "directory/data.json")
            .unwrap();
        slot.bytes = directory.bytes.clone();
        write_entries(&entries).unwrap()
    };
    server.publish(tampered);
    let e = failed(rt.block_on(source.poll(&apply)));
    assert!(matches!(
        e,
        SourceError::Bundle(BundleError::Signature { .. })
    ));
    still_good(
        &e,
        "bundle refused: signature: directory/data.json: digest mismatch",
    );
    // The same refused bundle is not processed again: a 304, and the error stays.
    assert!(matches!(
        rt.block_on(source.poll(&apply)),
        PollOutcome::Unchanged
    ));
    assert_eq!(server.served.lock().unwrap().log.last().unwrap().1, 304);
    assert!(source
        .status()
        .last_error
        .as_deref()
        .unwrap()
        .contains("digest mismatch"));

    // A bundle whose own Rego tests fail never gets past the gate.
    let failing = policy_dir(|_| {});
    std::fs::write(
        failing.path().join("agentgate/zz_gate_test.rego"),
        "package agentgate_test\n\ntest_the_gate_refuses_this_set if false\n",
    )
    .unwrap();
    let options = BuildOptions {
        revision: Some("failing-tests".into()),
        signing_key: Some(&signer),
    };
    server.publish(build_bundle(failing.path(), &options).unwrap());
    let e = failed(rt.block_on(source.poll(&apply)));
    assert!(matches!(e, SourceError::Apply(_)), "{e}");
    assert!(
        e.to_string().contains("test_the_gate_refuses_this_set"),
        "{e}"
    );
    assert_eq!(enforced.applied(), ["good"]);

    // Too large, too slow, or gone.
    server.publish(vec![0x1f; 300 * 1024]);
    let e = failed(rt.block_on(source.poll(&apply)));
    still_good(&e, "fetch failed: the bundle is larger than 262144 bytes");
    server.served.lock().unwrap().delay = Duration::from_secs(2);
    let e = failed(rt.block_on(source.poll(&apply)));
    still_good(&e, "fetch failed: timed out");
    server.stop();
    let e = failed(rt.block_on(source.poll(&apply)));
    assert!(
        e.to_string().starts_with("fetch failed: connection failed"),
        "{e}"
    );
    assert_eq!(enforced.applied(), ["good"]);

    let counts = source.counts();
    assert_eq!(
        (
            counts.polls,
            counts.updated,
            counts.unchanged,
            counts.fetch_errors,
            counts.rejected
        ),
        (8, 1, 1, 4, 2)
    );
}

#[test]
fn credentials_are_sent_read_afresh_and_never_shown() {
    let server = BundleServer::start();
    server.publish(bundle_with("r1", None, |_| {}));
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, "first-token-value-0123456789\n").unwrap();
    server.served.lock().unwrap().bearer = Some("first-token-value-0123456789".into());
    let mut cfg = config(BundleLocation::Url(server.url()));
    cfg.credential = Some(BundleCredential::Bearer(SecretSource::File(
        token_file.clone(),
    )));
    let source = BundleSource::new(&cfg).unwrap();
    let (_, apply) = gate();
    let rt = runtime();
    assert_eq!(updated(rt.block_on(source.poll(&apply))), "r1");

    // The server rotates the token before the file does: refused, and said so.
    server.served.lock().unwrap().bearer = Some("second-token-value-9876543210".into());
    let e = failed(rt.block_on(source.poll(&apply)));
    assert_eq!(
        e.to_string(),
        "fetch failed: HTTP 401 Unauthorized (the credential was refused)"
    );
    // The mounted secret is updated: the next poll reads it.
    std::fs::write(&token_file, "second-token-value-9876543210").unwrap();
    assert!(matches!(
        rt.block_on(source.poll(&apply)),
        PollOutcome::Unchanged
    ));
    assert!(source.status().last_error.is_none());

    // An Azure SAS goes into the query string, after the URL's own parameters.
    let sas_server = BundleServer::start();
    sas_server.publish(bundle_with("r1", None, |_| {}));
    sas_server.served.lock().unwrap().sig = Some("c2lnbmF0dXJlLXNlY3JldA%3D%3D".into());
    let sas_file = secrets.path().join("sas");
    std::fs::write(
        &sas_file,
        "?sv=2024-11-04&sr=b&sig=c2lnbmF0dXJlLXNlY3JldA%3D%3D\n",
    )
    .unwrap();
    let mut cfg = config(BundleLocation::Url(format!(
        "{}?tenant=contoso",
        sas_server.url()
    )));
    cfg.credential = Some(BundleCredential::SasToken(SecretSource::File(
        sas_file.clone(),
    )));
    let sas_source = BundleSource::new(&cfg).unwrap();
    assert_eq!(updated(rt.block_on(sas_source.poll(&apply))), "r1");
    assert_eq!(
        sas_server.served.lock().unwrap().queries,
        ["tenant=contoso&sv=2024-11-04&sr=b&sig=c2lnbmF0dXJlLXNlY3JldA%3D%3D"]
    );
    // Nothing shown carries a secret, even when the request fails.
    sas_server.served.lock().unwrap().fail_with = Some(404);
    let e = failed(rt.block_on(sas_source.poll(&apply)));
    let shown = format!("{e} {:?} {:?}", sas_source.status(), source.status());
    for secret in ["c2lnbmF0dXJl", "sv=2024", "tenant=contoso", "token-value"] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
    assert_eq!(sas_source.status().source, sas_server.url());

    std::fs::write(&sas_file, "  \n").unwrap();
    let e = failed(rt.block_on(sas_source.poll(&apply)));
    assert_eq!(e.to_string(), "fetch failed: the token is empty");
}

#[test]
fn a_file_source_notices_changes_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bundle.tar.gz");
    std::fs::write(&file, bundle_with("r1", None, |_| {})).unwrap();
    let source = BundleSource::new(&config(BundleLocation::File(file.clone()))).unwrap();
    let (enforced, apply) = gate();
    let rt = runtime();
    assert_eq!(updated(rt.block_on(source.poll(&apply))), "r1");
    assert!(matches!(
        rt.block_on(source.poll(&apply)),
        PollOutcome::Unchanged
    ));
    std::fs::write(&file, bundle_with("r2", None, disable_sales)).unwrap();
    assert_eq!(updated(rt.block_on(source.poll(&apply))), "r2");
    assert!(enforced.sales_disabled());
    std::fs::remove_file(&file).unwrap();
    let e = failed(rt.block_on(source.poll(&apply)));
    assert!(
        e.to_string()
            .starts_with("fetch failed: cannot read the bundle file"),
        "{e}"
    );
    assert_eq!(source.status().revision.as_deref(), Some("r2"));
    assert!(source.status().etag.is_none());
}

#[test]
fn the_background_loop_applies_a_published_bundle_and_stops_on_shutdown() {
    let server = BundleServer::start();
    server.publish(bundle_with("r1", None, |_| {}));
    let source = Arc::new(BundleSource::new(&config(BundleLocation::Url(server.url()))).unwrap());
    let (enforced, apply) = gate();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let running = {
        let source = source.clone();
        rt.spawn(async move { source.run(apply, shutdown).await })
    };
    let wait_for = |revision: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while source.status().revision.as_deref() != Some(revision) {
            assert!(
                std::time::Instant::now() < deadline,
                "{revision} never applied: {:?}",
                source.status()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("r1");
    server.publish(bundle_with("r2", None, disable_sales));
    wait_for("r2");
    assert!(enforced.sales_disabled());
    stop.send(true).unwrap();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), running).await })
        .expect("the loop stops on shutdown")
        .unwrap();
}

/// The demo configuration in `dir`, reading policies from the repository, plus `extra`.
fn demo_config(dir: &std::path::Path, extra: &str) -> String {
    let text = std::fs::read_to_string(repo().join("config/agentgate.toml"))
        .unwrap()
        .replace("\"../policies\"", &format!("{:?}", repo().join("policies")));
    let path = dir.join("agentgate.toml");
    std::fs::write(&path, format!("{text}\n{extra}\n")).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn bundle_build_is_deterministic_and_check_and_test_accept_its_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let first = agentgate(&[
        "bundle",
        "build",
        "policies",
        "-o",
        &out("a.tar.gz"),
        "--revision",
        "r1",
    ]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert!(text(&first).contains("revision r1"), "{}", text(&first));
    assert!(text(&first).contains("unsigned"), "{}", text(&first));
    let again = agentgate(&[
        "bundle",
        "build",
        "policies",
        "-o",
        &out("b.tar.gz"),
        "--revision",
        "r1",
    ]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(
        std::fs::read(out("a.tar.gz")).unwrap(),
        std::fs::read(out("b.tar.gz")).unwrap()
    );

    let tested = agentgate(&["test", &out("a.tar.gz")]);
    assert_eq!(tested.status.code(), Some(0), "{}", text(&tested));
    assert!(
        text(&tested).contains(" passed, 0 failed"),
        "{}",
        text(&tested)
    );

    let config = demo_config(tmp.path(), "");
    let checked = agentgate(&["check", "--config", &config, "--bundle", &out("a.tar.gz")]);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked));
    assert!(
        text(&checked).contains("bundle revision \"r1\""),
        "{}",
        text(&checked)
    );

    // A bundle whose tests fail is reported by both.
    let failing = policy_dir(|_| {});
    std::fs::write(
        failing.path().join("agentgate/zz_cli_test.rego"),
        "package agentgate_test\n\ntest_fails_on_purpose if false\n",
    )
    .unwrap();
    let built = agentgate(&[
        "bundle",
        "build",
        failing.path().to_str().unwrap(),
        "-o",
        &out("failing.tar.gz"),
    ]);
    assert_eq!(built.status.code(), Some(0), "{}", text(&built));
    let tested = agentgate(&["test", &out("failing.tar.gz")]);
    assert_eq!(tested.status.code(), Some(1), "{}", text(&tested));
    assert!(
        text(&tested).contains("FAIL data.agentgate_test.test_fails_on_purpose"),
        "{}",
        text(&tested)
    );
    let checked = agentgate(&[
        "check",
        "--config",
        &config,
        "--bundle",
        &out("failing.tar.gz"),
    ]);
    assert_eq!(checked.status.code(), Some(1), "{}", text(&checked));
    assert!(
        text(&checked).contains("test_fails_on_purpose"),
        "{}",
        text(&checked)
    );
}

#[test]
fn check_verifies_a_signed_bundle_against_the_configured_key() {
    let tmp = tempfile::tempdir().unwrap();
    let signed = tmp.path().join("signed.tar.gz");
    let built = agentgate(&[
        "bundle",
        "build",
        "policies",
        "-o",
        signed.to_str().unwrap(),
        "--revision",
        "r7",
        "--signing-key",
        "tests/data/keys/bundle-ec.pem",
    ]);
    assert_eq!(built.status.code(), Some(0), "{}", text(&built));
    assert!(text(&built).contains("signed (ES256)"), "{}", text(&built));

    let section = format!(
        "[policy.bundle]\nfile = {:?}\nsigning_key = {:?}\nsignature_alg = \"ES256\"\n",
        signed,
        repo().join("tests/data/keys/bundle-ec.pub.pem")
    );
    let config = demo_config(tmp.path(), &section);
    let ok = agentgate(&["check", "--config", &config]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(
        text(&ok).contains("bundle revision \"r7\""),
        "{}",
        text(&ok)
    );

    // The kill switch turned off inside the signed bundle.
    let tampered = {
        use agentgate::bundle::archive::{read_entries, write_entries};
        let mut entries = read_entries(
            &std::fs::read(&signed).unwrap(),
            &agentgate::bundle::BundleLimits::default(),
        )
        .unwrap();
        let directory = entries
            .iter_mut()
            .find(|e| e.name == "directory/data.json")
            .unwrap();
        let text = String::from_utf8(directory.bytes.clone()).unwrap();
        assert!(text.contains("\"disabled\": true"));
        directory.bytes = text
            .replace("\"disabled\": true", "\"disabled\": false")
            .into_bytes();
        write_entries(&entries).unwrap()
    };
    std::fs::write(&signed, tampered).unwrap();
    let refused = agentgate(&["check", "--config", &config]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("directory/data.json: digest mismatch"),
        "{}",
        text(&refused)
    );
    // Offline tests do not check signatures.
    assert_eq!(
        agentgate(&["test", signed.to_str().unwrap()]).status.code(),
        Some(0)
    );

    // An unsigned bundle where a key is configured.
    let unsigned = tmp.path().join("unsigned.tar.gz");
    agentgate(&[
        "bundle",
        "build",
        "policies",
        "-o",
        unsigned.to_str().unwrap(),
    ]);
    let refused = agentgate(&[
        "check",
        "--config",
        &config,
        "--bundle",
        unsigned.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("not signed"), "{}", text(&refused));
}

#[test]
fn check_fetches_the_configured_bundle_url_with_a_token_from_the_environment() {
    let server = BundleServer::start();
    server.publish(bundle_with("from-server", None, |_| {}));
    server.served.lock().unwrap().bearer = Some("env-token-0123456789abcdef".into());
    let tmp = tempfile::tempdir().unwrap();
    let section = format!(
        "[policy.bundle]\nurl = {:?}\nauth_token_env = \"AGENTGATE_BUNDLE_TOKEN\"\n",
        server.url()
    );
    let config = demo_config(tmp.path(), &section);
    let run = |token: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agentgate"));
        command
            .args(["check", "--config", &config])
            .current_dir(repo());
        match token {
            Some(t) => command.env("AGENTGATE_BUNDLE_TOKEN", t),
            None => command.env_remove("AGENTGATE_BUNDLE_TOKEN"),
        };
        command.output().unwrap()
    };
    let ok = run(Some("env-token-0123456789abcdef"));
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(
        text(&ok).contains("bundle revision \"from-server\""),
        "{}",
        text(&ok)
    );

    let unset = run(None);
    assert_eq!(unset.status.code(), Some(1), "{}", text(&unset));
    assert!(
        text(&unset).contains("the environment variable AGENTGATE_BUNDLE_TOKEN is not set"),
        "{}",
        text(&unset)
    );
    let wrong = run(Some("wrong-token-abcdef0123456789"));
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong));
    assert!(text(&wrong).contains("HTTP 401"), "{}", text(&wrong));
    assert!(!text(&wrong).contains("wrong-token"), "{}", text(&wrong));
}

#[test]
fn the_gateway_serves_the_bundle_and_applies_each_published_one() {
    let server = BundleServer::start();
    // The first bundle disables the Sales Assistant blueprint; the policy directory (which
    // the configuration also names) does not: a refusal proves the bundle is enforced.
    server.publish(bundle_with("r1", None, disable_sales));
    let key = key("primary");
    let servers = Servers::start(&[&key]);
    let gw = Gateway::start(
        &servers,
        GatewaySpec {
            extra_config: format!(
                "\n[policy.bundle]\nurl = \"{}\"\ninterval = \"1s\"\n",
                server.url()
            ),
            admin_token: Some("bundle-admin-token-0123456789"),
            ..Default::default()
        },
    );
    let token = mint(&key, &spec(CallerKind::AgentApp));
    gw.call("GET", "/orders/1", Some(&token))
        .assert_denied(403, "blueprint_disabled");
    let ready = gw.readiness();
    assert_eq!(ready["bundle"]["revision"], "r1", "{ready}");
    assert_eq!(ready["bundle"]["last_error"], Value::Null, "{ready}");

    // A published bundle is enforced within one poll interval (plus the reload).
    server.publish(bundle_with("r2", None, |_| {}));
    let took = gw.until_status(&token, 200);
    assert!(took < Duration::from_secs(5), "r2 took {took:?}");
    gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
    assert_eq!(gw.readiness()["bundle"]["revision"], "r2");
    // Every decision line says which bundle decided it.
    let decisions = gw.decisions();
    let last = decisions.last().expect("decision lines");
    assert_eq!(last["allow"], true, "{last}");
    assert_eq!(last["bundle_revision"], "r2", "{last}");

    // A broken bundle is refused; the last good set keeps serving and says why.
    server.publish(b"not a gzipped tarball".to_vec());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready = gw.readiness();
        if ready["bundle"]["last_error"].is_string() {
            assert_eq!(ready["bundle"]["revision"], "r2", "{ready}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never refused: {ready}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
    let metrics = gw.metrics();
    assert!(
        metric(
            &metrics,
            "agentgate_bundle_polls_total{result=\"rejected\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(metric(&metrics, "agentgate_bundle_polls_total{result=\"updated\"}") >= 2.0);
    assert!(metric(&metrics, "agentgate_bundle_last_success_timestamp_seconds") > 0.0);
    assert_eq!(
        metric(&metrics, "agentgate_bundle_revision_info{revision=\"r2\"}"),
        1.0
    );

    // A bundle whose directory does not validate is refused the same way (the reload's
    // gate: compile, validate, run every Rego test).
    server.publish(bundle_with("r3-broken", None, |d| {
        d["agents"]["not-a-guid"] = serde_json::json!({});
    }));
    std::thread::sleep(Duration::from_millis(2500));
    gw.call("GET", "/orders/1", Some(&token)).assert_allowed();
    let ready = gw.readiness();
    assert_eq!(ready["bundle"]["revision"], "r2", "{ready}");
    assert!(ready["bundle"]["last_error"].is_string(), "{ready}");
}

#[test]
fn a_gateway_whose_first_bundle_cannot_be_read_does_not_start() {
    let server = BundleServer::start();
    server.served.lock().unwrap().fail_with = Some(503);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentgate.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:{}\"\n[admin]\naddress = \"127.0.0.1:{}\"\n\
             [identity]\n[[identity.tenants]]\nid = \"{TENANT_A}\"\n\
             [policy]\ndir = \"{}\"\n[policy.bundle]\nurl = \"{}\"\n\
             [[routes]]\nid = \"orders\"\npath_prefix = \"/orders\"\nupstreams = [\"127.0.0.1:1\"]\naudiences = [\"{API_URI}\"]\n",
            free_port(),
            free_port(),
            repo().join("policies").display(),
            server.url()
        ),
    )
    .unwrap();
    let out = agentgate(&["serve", "--config", config.to_str().unwrap()]);
    let printed = text(&out);
    assert!(!out.status.success(), "{printed}");
    assert!(
        printed.contains("the first policy bundle from")
            && printed.contains("no policy set to serve")
            && printed.contains("503"),
        "{printed}"
    );
}
