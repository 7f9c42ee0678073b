use super::archive::{read_entries, write_entries, BundleEntry};
use super::build::BuildOptions;
use super::*;
use crate::policy::PolicySnapshot;
use std::path::Path;
use std::time::Duration;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn key_pem(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("tests/data/keys").join(name)).unwrap()
}

fn shipped(options: &BuildOptions<'_>) -> Vec<u8> {
    build_bundle(&repo().join("policies"), options).unwrap()
}

fn load(bytes: &[u8], verification: &Verification) -> Result<LoadedBundle, BundleError> {
    load_bundle(bytes, verification, &BundleLimits::default())
}

fn rsa_verification() -> Verification {
    Verification::Key(
        VerificationKey::from_pem(&key_pem("primary.pub.pem"), jsonwebtoken::Algorithm::RS256)
            .unwrap(),
    )
}

/// The bundle's entries, edited by `edit`, packed again (signature left as it was).
fn repack(bytes: &[u8], edit: impl FnOnce(&mut Vec<BundleEntry>)) -> Vec<u8> {
    let mut entries = read_entries(bytes, &BundleLimits::default()).unwrap();
    edit(&mut entries);
    write_entries(&entries).unwrap()
}

fn text(entries: &[BundleEntry], name: &str) -> String {
    let e = entries.iter().find(|e| e.name == name).unwrap();
    String::from_utf8(e.bytes.clone()).unwrap()
}

fn set(entries: &mut [BundleEntry], name: &str, text: &str) {
    entries.iter_mut().find(|e| e.name == name).unwrap().bytes = text.as_bytes().to_vec();
}

#[test]
fn the_shipped_policies_as_a_bundle_compile_and_pass_their_tests() {
    let bytes = shipped(&BuildOptions {
        revision: Some("git-abc123".into()),
        signing_key: None,
    });
    let loaded = load(&bytes, &Verification::Unsigned).unwrap();
    assert_eq!(loaded.manifest.revision, "git-abc123");
    assert_eq!(
        loaded.manifest.roots,
        ["access", "agentgate", "agentgate_test", "directory"]
    );
    let data: Vec<&str> = loaded.files.data.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(data, ["access/data.json", "directory/data.json"]);

    let from_bundle = PolicySnapshot::from_files(
        &loaded.files,
        Duration::from_secs(1),
        Some(crate::policy::TestLimits::per_test(Duration::from_secs(5))),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let from_dir = PolicySnapshot::load(
        &repo().join("policies"),
        Duration::from_secs(1),
        Some(crate::policy::TestLimits::per_test(Duration::from_secs(5))),
    )
    .unwrap();
    // The same directory, typed and validated, from either layout.
    assert_eq!(
        from_bundle.directory.blueprints.len(),
        from_dir.directory.blueprints.len()
    );
    assert!(!from_bundle.directory.blueprints.is_empty());
    assert_eq!(
        loaded.files.modules.len() + loaded.files.tests.len(),
        PolicyFiles::read(&repo().join("policies"))
            .map(|f| f.modules.len() + f.tests.len())
            .unwrap()
    );

    let (files, manifest) = PolicyFiles::from_bundle(&bytes, &Verification::Unsigned).unwrap();
    assert_eq!(manifest, loaded.manifest);
    assert_eq!(files.revision(), loaded.files.revision());
}

#[test]
fn building_twice_gives_the_same_bytes_and_the_default_revision_is_the_content_hash() {
    let a = shipped(&BuildOptions::default());
    assert_eq!(a, shipped(&BuildOptions::default()));
    let loaded = load(&a, &Verification::Unsigned).unwrap();
    let dir_revision = PolicyFiles::read(&repo().join("policies"))
        .unwrap()
        .revision();
    assert_eq!(loaded.manifest.revision, dir_revision);
}

#[test]
fn a_signed_bundle_loads_only_untampered_and_only_where_a_key_is_configured() {
    let signer = SigningKey::from_pem(&key_pem("primary.pem")).unwrap();
    let signed = shipped(&BuildOptions {
        revision: Some("r1".into()),
        signing_key: Some(&signer),
    });
    let key = rsa_verification();
    let loaded = load(&signed, &key).unwrap();
    PolicySnapshot::from_files(
        &loaded.files,
        Duration::from_secs(1),
        Some(crate::policy::TestLimits::per_test(Duration::from_secs(5))),
    )
    .unwrap();

    // A signed bundle where no key is configured, an unsigned one where one is.
    assert!(matches!(
        load(&signed, &Verification::Unsigned),
        Err(BundleError::Signature { .. })
    ));
    let unsigned = shipped(&BuildOptions::default());
    assert!(matches!(
        load(&unsigned, &key),
        Err(BundleError::Signature { .. })
    ));

    // The kill switch flipped back by someone without the key.
    let tampered = repack(&signed, |entries| {
        let directory = text(entries, "directory/data.json");
        set(
            entries,
            "directory/data.json",
            &directory.replace("\"disabled\": true", "\"disabled\": false"),
        );
    });
    match load(&tampered, &key) {
        Err(BundleError::Signature { message }) => {
            assert_eq!(message, "directory/data.json: digest mismatch")
        }
        other => panic!("{other:?}"),
    }
    // A module slipped in, or one taken out.
    let added = repack(&signed, |entries| {
        entries.push(BundleEntry {
            name: "agentgate/allow_all.rego".into(),
            bytes: b"package agentgate\n".to_vec(),
        })
    });
    assert!(matches!(
        load(&added, &key),
        Err(BundleError::Signature { .. })
    ));
    let removed = repack(&signed, |entries| {
        entries.retain(|e| e.name != "agentgate/risk_test.rego")
    });
    assert!(matches!(
        load(&removed, &key),
        Err(BundleError::Signature { .. })
    ));
    // Offline tools may skip the check.
    assert!(load(&tampered, &Verification::Skip).is_ok());
}

#[test]
fn packages_and_data_outside_the_roots_are_refused() {
    let bytes = shipped(&BuildOptions::default());
    let narrowed = |roots: &str| {
        repack(&bytes, |entries| {
            set(entries, ".manifest", &format!("{{\"roots\":{roots}}}"))
        })
    };
    match load(
        &narrowed(r#"["agentgate","agentgate_test","access"]"#),
        &Verification::Unsigned,
    ) {
        Err(BundleError::OutsideRoots { what, .. }) => {
            assert_eq!(what, "directory/data.json: data.directory")
        }
        other => panic!("{other:?}"),
    }
    match load(
        &narrowed(r#"["agentgate","access","directory"]"#),
        &Verification::Unsigned,
    ) {
        Err(BundleError::OutsideRoots { what, .. }) => {
            assert!(what.ends_with("package agentgate_test"), "{what}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_root_data_json_merges_at_data() {
    let bytes = shipped(&BuildOptions::default());
    let merged = repack(&bytes, |entries| {
        let access = text(entries, "access/data.json");
        entries.retain(|e| e.name != "access/data.json");
        entries.push(BundleEntry {
            name: "data.json".into(),
            bytes: format!("{{\"access\": {access}}}").into_bytes(),
        });
    });
    let loaded = load(&merged, &Verification::Unsigned).unwrap();
    assert_eq!(loaded.files.data[0].data_mount(), Vec::<&str>::new());
    // The access tests pass only if data.access is where the policies look for it.
    PolicySnapshot::from_files(
        &loaded.files,
        Duration::from_secs(1),
        Some(crate::policy::TestLimits::per_test(Duration::from_secs(5))),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_directory_must_be_one_document() {
    let bytes = shipped(&BuildOptions::default());
    for (name, body) in [
        ("data.json", r#"{"directory": {"blueprints": {}}}"#),
        ("directory/extra/data.json", r#"{"x": 1}"#),
    ] {
        let odd = repack(&bytes, |entries| {
            entries.push(BundleEntry {
                name: name.into(),
                bytes: body.as_bytes().to_vec(),
            })
        });
        match load(&odd, &Verification::Unsigned) {
            Err(BundleError::DirectoryData { path }) => assert_eq!(path, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn unsupported_contents_are_named() {
    let bytes = shipped(&BuildOptions::default());
    for (name, what) in [
        ("access/data.yaml", "YAML data (convert it to data.json)"),
        ("patch.json", "a delta bundle"),
        ("policy.wasm", "WebAssembly"),
    ] {
        let odd = repack(&bytes, |entries| {
            entries.push(BundleEntry {
                name: name.into(),
                bytes: b"{}".to_vec(),
            })
        });
        match load(&odd, &Verification::Unsigned) {
            Err(e @ BundleError::Unsupported { .. }) => {
                assert_eq!(e.to_string(), format!("{name}: {what} is not supported"))
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // Anything else (a README) is carried but never loaded.
    let readme = repack(&bytes, |entries| {
        entries.push(BundleEntry {
            name: "README.md".into(),
            bytes: b"# policies".to_vec(),
        })
    });
    assert!(load(&readme, &Verification::Unsigned).is_ok());
}

#[test]
fn broken_files_are_reported_with_their_place() {
    let bytes = shipped(&BuildOptions::default());
    let broken = repack(&bytes, |entries| {
        set(entries, "access/data.json", "{\n  \"routes\": [1,\n}")
    });
    match load(&broken, &Verification::Unsigned) {
        Err(BundleError::Data { file, line, .. }) => {
            assert_eq!((file.as_str(), line), ("access/data.json", 3))
        }
        other => panic!("{other:?}"),
    }
    let latin1 = repack(&bytes, |entries| {
        entries
            .iter_mut()
            .find(|e| e.name == "agentgate/decision.rego")
            .unwrap()
            .bytes
            .push(0xe9)
    });
    assert!(matches!(
        load(&latin1, &Verification::Unsigned),
        Err(BundleError::NotUtf8 { .. })
    ));
}
