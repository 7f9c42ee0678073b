//! `agentgate bundle build`, and the policy files `check` and `test` read: a policy
//! directory, a bundle file, or the configured bundle source.

use crate::bundle::build::BuildOptions;
use crate::bundle::source::{verification, BundleSource};
use crate::bundle::{build_bundle, load_bundle, BundleLimits, BundleManifest, SigningKey};
use crate::bundle::{LoadedBundle, Verification};
use crate::config::Config;
use crate::policy::PolicyFiles;
use anyhow::{Context, Result};
use std::path::Path;

/// Builds the bundle of `dir` into `output`, replacing it atomically (a server publishing
/// the file never serves half of it). Prints what was written.
pub fn build(
    dir: &Path,
    output: &Path,
    revision: Option<String>,
    signing_key: Option<&Path>,
) -> Result<()> {
    let key = signing_key
        .map(|path| {
            let pem = std::fs::read(path)
                .with_context(|| format!("failed to read the signing key {}", path.display()))?;
            SigningKey::from_pem(&pem).with_context(|| path.display().to_string())
        })
        .transpose()?;
    let bytes = build_bundle(
        dir,
        &BuildOptions {
            revision,
            signing_key: key.as_ref(),
        },
    )
    .with_context(|| format!("policy directory {}", dir.display()))?;
    let loaded = load_bundle(&bytes, &Verification::Skip, &BundleLimits::default())?;
    let mut staged = output.as_os_str().to_owned();
    staged.push(format!(".tmp-{}", std::process::id()));
    std::fs::write(&staged, &bytes)
        .and_then(|()| std::fs::rename(&staged, output))
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "wrote {}: revision {}, roots {:?}, {} modules, {} tests, {} data documents, {}, sha256 {}",
        output.display(),
        loaded.manifest.revision,
        loaded.manifest.roots,
        loaded.files.modules.len(),
        loaded.files.tests.len(),
        loaded.files.data.len(),
        match &key {
            Some(k) => format!("signed ({:?})", k.alg()),
            None => "unsigned".into(),
        },
        loaded.digest,
    );
    Ok(())
}

/// The policy files at `path` for offline tools: a bundle file (its signature is not
/// checked here) or a policy directory.
pub fn read_offline(path: &Path) -> Result<PolicyFiles> {
    if path.is_file() {
        let bytes =
            std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
        let loaded = load_bundle(&bytes, &Verification::Skip, &BundleLimits::default())
            .with_context(|| format!("bundle {}", path.display()))?;
        return Ok(loaded.files);
    }
    Ok(PolicyFiles::read(path)?)
}

/// The policy files the gateway would load under `config`, with the bundle manifest when
/// they come from a bundle: `bundle` (a file, checked against the configured signing key),
/// else the configured bundle source (fetched once), else the policy directory.
pub fn read_configured(
    config: &Config,
    bundle: Option<&Path>,
) -> Result<(PolicyFiles, Option<BundleManifest>)> {
    let source = config.policy.bundle.as_ref();
    let loaded: LoadedBundle = match (bundle, source) {
        (Some(path), _) => {
            let verification = verification(source.and_then(|s| s.signing.as_ref()))?;
            let bytes = std::fs::read(path)
                .with_context(|| format!("failed to read {}", path.display()))?;
            load_bundle(&bytes, &verification, &BundleLimits::default())
                .with_context(|| format!("bundle {}", path.display()))?
        }
        (None, Some(config)) => {
            let source = BundleSource::new(config)?;
            let shown = source.status().source.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(source.fetch_once())
                .with_context(|| format!("bundle from {shown}"))?
        }
        (None, None) => return Ok((PolicyFiles::read(&config.policy.dir)?, None)),
    };
    Ok((loaded.files, Some(loaded.manifest)))
}
