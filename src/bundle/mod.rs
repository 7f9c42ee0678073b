//! Policy bundles in OPA's bundle format, so that every replica of a gateway can load one
//! policy set from a file or an HTTP server (`opa build`, any static host, blob storage).
//!
//! A bundle is a gzipped tarball:
//!
//! - `/.manifest`: `{"revision": "...", "roots": ["agentgate", "directory", ...],
//!   "metadata": {...}}` ([`BundleManifest`]; optional, as in OPA);
//! - `.rego` modules at any path (`*_test.rego` are the set's tests);
//! - `data.json` files whose directory is their place under `data`:
//!   `/directory/data.json` is `data.directory`, a root `/data.json` merges at `data`;
//! - optionally `/.signatures.json` ([`signature`]).
//!
//! [`load_bundle`] reads one into the [`PolicyFiles`] the gateway already compiles and tests
//! ([`crate::policy::PolicySnapshot::from_files`]), after refusing hostile archives
//! ([`archive`]), checking the signature before anything is parsed, and checking that every
//! package and data document lies under the manifest's roots. [`build`] goes the other way,
//! from a policy directory to a deterministic bundle. [`source::BundleSource`] polls a
//! file or a URL and hands each new bundle to the caller.

pub mod archive;
pub mod build;
pub mod canonical;
pub mod manifest;
pub mod signature;
pub mod source;

pub use build::build_bundle;
pub use manifest::BundleManifest;
pub use signature::{SigningKey, Verification, VerificationKey};

use crate::policy::files::{PolicyFiles, SourceFile};
use archive::BundleEntry;
use aws_lc_rs::digest;
use std::path::PathBuf;

/// The manifest's path inside a bundle.
pub const MANIFEST_FILE: &str = ".manifest";

/// The data document the gateway validates as its agent directory.
const DIRECTORY_MOUNT: &str = "directory";

/// Caps on what one bundle may hold, against decompression bombs and runaway uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleLimits {
    /// Regular files in the archive.
    pub max_files: usize,
    /// Decompressed bytes of one file.
    pub max_file_bytes: u64,
    /// Decompressed bytes of the whole tar stream.
    pub max_total_bytes: u64,
}

impl Default for BundleLimits {
    fn default() -> Self {
        Self {
            max_files: 1_000,
            max_file_bytes: 16 * 1024 * 1024,
            max_total_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why a bundle was refused. Nothing of a refused bundle is ever used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("not a gzipped tarball")]
    NotGzip,
    #[error("archive is corrupt or truncated: {message}")]
    Archive { message: String },
    #[error("{path:?}: path escapes the bundle or is not a plain relative path")]
    UnsafePath { path: String },
    #[error("{path:?}: {kind} entries are not allowed")]
    UnsupportedEntry { path: String, kind: &'static str },
    #[error("{path}: appears twice in the archive")]
    DuplicateEntry { path: String },
    #[error("more than {limit} files")]
    TooManyFiles { limit: usize },
    #[error("{path}: larger than {limit} bytes")]
    FileTooLarge { path: String, limit: u64 },
    #[error("more than {limit} bytes once decompressed")]
    TooLarge { limit: u64 },
    #[error(".manifest: {message}")]
    Manifest { message: String },
    #[error("signing key: {message}")]
    Key { message: String },
    #[error("signature: {message}")]
    Signature { message: String },
    #[error("{file}:{line}:{column}: {message}")]
    Data {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: not UTF-8 text")]
    NotUtf8 { path: String },
    #[error("{path}: {what} is not supported")]
    Unsupported { path: String, what: &'static str },
    #[error("{what} is outside the manifest roots {roots:?}")]
    OutsideRoots { what: String, roots: Vec<String> },
    #[error("{path}: data.directory must come from directory/data.json alone")]
    DirectoryData { path: String },
    #[error("{message}")]
    Rego { message: String },
    #[error("failed to read the policy directory: {0}")]
    Read(#[from] crate::policy::files::ReadError),
    #[error("failed to write the archive: {0}")]
    Write(std::io::Error),
}

/// A bundle read and checked, ready for [`crate::policy::PolicySnapshot::from_files`].
#[derive(Debug, Clone)]
pub struct LoadedBundle {
    pub files: PolicyFiles,
    pub manifest: BundleManifest,
    /// Hex SHA-256 of the bundle's bytes as received.
    pub digest: String,
}

/// Reads the gzipped bundle `bytes`, verifies it as `verification` asks and checks it.
pub fn load_bundle(
    bytes: &[u8],
    verification: &Verification,
    limits: &BundleLimits,
) -> Result<LoadedBundle, BundleError> {
    let entries = archive::read_entries(bytes, limits)?;
    let signatures = entries
        .iter()
        .find(|e| e.name == signature::SIGNATURES_FILE);
    match (verification, signatures) {
        (Verification::Key(key), Some(sig)) => signature::verify(&sig.bytes, &entries, key)?,
        (Verification::Key(_), None) => {
            return Err(BundleError::Signature {
                message: "the bundle is not signed and a signing key is configured".into(),
            })
        }
        (Verification::Unsigned, Some(_)) => {
            return Err(BundleError::Signature {
                message: "the bundle is signed but no signing key is configured".into(),
            })
        }
        (Verification::Unsigned, None) | (Verification::Skip, _) => {}
    }
    let manifest = match entries.iter().find(|e| e.name == MANIFEST_FILE) {
        Some(m) => BundleManifest::parse(&m.bytes)?,
        None => BundleManifest::default(),
    };
    let mut files = PolicyFiles::default();
    for entry in &entries {
        let base = entry.name.rsplit('/').next().unwrap_or(&entry.name);
        let bucket = match base {
            _ if entry.name == MANIFEST_FILE || entry.name == signature::SIGNATURES_FILE => {
                continue
            }
            "data.yaml" | "data.yml" => Err("YAML data (convert it to data.json)"),
            "patch.json" => Err("a delta bundle"),
            "plan.json" => Err("a compiled plan"),
            b if b.ends_with(".wasm") => Err("WebAssembly"),
            b if b.ends_with("_test.rego") => Ok(&mut files.tests),
            b if b.ends_with(".rego") => Ok(&mut files.modules),
            "data.json" => Ok(&mut files.data),
            _ => continue, // READMEs and the like: signed if the bundle is, never loaded
        };
        let bucket = bucket.map_err(|what| BundleError::Unsupported {
            path: entry.name.clone(),
            what,
        })?;
        bucket.push(source_file(entry)?);
    }
    check_ownership(&files, &manifest)?;
    for list in [&mut files.modules, &mut files.tests, &mut files.data] {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let digest = digest::digest(&digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(LoadedBundle {
        files,
        manifest,
        digest,
    })
}

impl PolicyFiles {
    /// Reads a gzipped bundle into policy files with the default [`BundleLimits`]; the
    /// manifest says which revision the publisher gave it.
    pub fn from_bundle(
        bytes: &[u8],
        verification: &Verification,
    ) -> Result<(PolicyFiles, BundleManifest), BundleError> {
        let loaded = load_bundle(bytes, verification, &BundleLimits::default())?;
        Ok((loaded.files, loaded.manifest))
    }
}

fn source_file(entry: &BundleEntry) -> Result<SourceFile, BundleError> {
    let text = String::from_utf8(entry.bytes.clone()).map_err(|_| BundleError::NotUtf8 {
        path: entry.name.clone(),
    })?;
    Ok(SourceFile {
        name: entry.name.clone(),
        path: PathBuf::from(&entry.name),
        text,
    })
}

/// Every package and every data document must lie under the manifest's roots, and the
/// agent directory must be one document at `data.directory`.
fn check_ownership(files: &PolicyFiles, manifest: &BundleManifest) -> Result<(), BundleError> {
    let outside = |what: String| BundleError::OutsideRoots {
        what,
        roots: manifest.roots.clone(),
    };
    for module in files.modules.iter().chain(&files.tests) {
        let package = build::package_path(module)?;
        let path: Vec<&str> = package.iter().map(String::as_str).collect();
        if !manifest.owns(&path) {
            return Err(outside(format!(
                "{}: package {}",
                module.name,
                package.join(".")
            )));
        }
    }
    for doc in &files.data {
        let value: serde_json::Value =
            serde_json::from_str(&doc.text).map_err(|e| BundleError::Data {
                file: doc.name.clone(),
                line: e.line(),
                column: e.column(),
                message: e.to_string(),
            })?;
        let mount = doc.data_mount();
        manifest
            .check_data(&mount, &value)
            .map_err(|path| outside(format!("{}: {path}", doc.name)))?;
        let directory_elsewhere = match mount.as_slice() {
            [] => value.get(DIRECTORY_MOUNT).is_some(),
            [first, _, ..] => *first == DIRECTORY_MOUNT,
            [_] => false,
        };
        if directory_elsewhere {
            return Err(BundleError::DirectoryData {
                path: doc.name.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
