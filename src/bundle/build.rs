//! From a policy directory to a bundle (`agentgate bundle build`).
//!
//! Modules and tests keep their paths; `data/<name>.json` becomes `<name>/data.json`, so it
//! mounts at the same `data.<name>`. The manifest's roots are the first segment of every
//! package and data document, so the bundle owns exactly what it holds. The output is the
//! same bytes for the same input and options: entries sorted by name, fixed mode, owner and
//! mtime, and a fixed gzip header.

use super::archive::{write_entries, BundleEntry};
use super::signature::{sign, SigningKey, SIGNATURES_FILE};
use super::{load_bundle, BundleError, BundleLimits, Verification, MANIFEST_FILE};
use crate::policy::files::{PolicyFiles, SourceFile};
use std::collections::BTreeSet;
use std::path::Path;

/// How to build a bundle.
#[derive(Default)]
pub struct BuildOptions<'a> {
    /// The manifest revision; the content hash of the policy files when `None`.
    pub revision: Option<String>,
    /// Signs the bundle (`/.signatures.json`) when given.
    pub signing_key: Option<&'a SigningKey>,
}

/// Builds the gzipped bundle of the policy directory `dir`.
pub fn build_bundle(dir: &Path, options: &BuildOptions<'_>) -> Result<Vec<u8>, BundleError> {
    let files = PolicyFiles::read(dir)?;
    let mut roots = BTreeSet::new();
    let mut entries = Vec::new();
    for module in files.modules.iter().chain(&files.tests) {
        let package = package_path(module)?;
        roots.insert(package.first().cloned().unwrap_or_default());
        entries.push(entry(&module.name, &module.text));
    }
    for doc in &files.data {
        let mount = doc.data_mount();
        roots.insert(mount.first().map(|s| s.to_string()).unwrap_or_default());
        let name = match mount.is_empty() {
            true => "data.json".to_string(),
            false => format!("{}/data.json", mount.join("/")),
        };
        entries.push(entry(&name, &doc.text));
    }
    // The empty root owns everything and may not sit beside another.
    let roots: Vec<String> = match roots.contains("") {
        true => vec![String::new()],
        false => roots.into_iter().collect(),
    };
    let manifest = serde_json::json!({
        "revision": options.revision.clone().unwrap_or_else(|| files.revision()),
        "roots": roots,
    });
    entries.push(BundleEntry {
        name: MANIFEST_FILE.into(),
        bytes: format!("{manifest}\n").into_bytes(),
    });
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(key) = options.signing_key {
        entries.push(BundleEntry {
            name: SIGNATURES_FILE.into(),
            bytes: sign(&entries, key)?,
        });
        entries.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let bytes = write_entries(&entries).map_err(BundleError::Write)?;
    // What is written must load: the same checks a gateway makes, signature aside.
    load_bundle(&bytes, &Verification::Skip, &BundleLimits::default())?;
    Ok(bytes)
}

fn entry(name: &str, text: &str) -> BundleEntry {
    BundleEntry {
        name: name.to_string(),
        bytes: text.as_bytes().to_vec(),
    }
}

/// The package of a module as a path under `data` (`package agentgate.x` is
/// `["agentgate", "x"]`).
pub(super) fn package_path(module: &SourceFile) -> Result<Vec<String>, BundleError> {
    let package = regorus::Engine::new()
        .add_policy(module.name.clone(), module.text.clone())
        .map_err(|e| BundleError::Rego {
            message: format!("{e:#}"),
        })?;
    Ok(package
        .strip_prefix("data.")
        .unwrap_or(&package)
        .split('.')
        .map(str::to_string)
        .collect())
}
