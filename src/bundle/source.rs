//! Where bundles come from: a file, or a URL polled with `If-None-Match`.
//!
//! A [`BundleSource`] polls every `interval`. A new bundle is read and checked
//! ([`super::load_bundle`]) and handed to the caller's `apply` (which compiles it, runs its
//! tests and swaps it in: [`crate::policy::PolicySnapshot::from_files`]); a failed download,
//! a bad signature, a parse error or a refusal by `apply` leaves the last good set in force
//! and is recorded in [`BundleStatus`] and [`BundleCounts`] for `/readyz` and metrics. A
//! bundle that was refused is not tried again until it changes (its ETag or its bytes).
//!
//! Credentials (a bearer token, or an Azure SAS appended as the query string) are read from
//! their file or environment variable at each download, so a rotated secret is picked up,
//! and never appear in a log line, an error or the status: the URL shown is the configured
//! one without its query string, and HTTP errors are reported without their URL.

// Off the request path: the poller's own bookkeeping.
#![allow(clippy::disallowed_types)]

use super::{load_bundle, BundleError, BundleLimits, LoadedBundle, Verification, VerificationKey};
use crate::config::{BundleConfig, BundleCredential, BundleLocation, BundleSigning, SecretSource};
use arc_swap::ArcSwap;
use aws_lc_rs::digest;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why one poll produced no new bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The bundle could not be fetched (network, HTTP status, size, credential).
    #[error("fetch failed: {0}")]
    Fetch(String),
    /// The bundle arrived but is not acceptable (archive, signature, manifest, roots).
    #[error("bundle refused: {0}")]
    Bundle(#[from] BundleError),
    /// The caller's `apply` refused the bundle's policy set (compile errors, failed tests).
    #[error("policy set refused: {0}")]
    Apply(String),
}

/// Why a bundle source could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    #[error("failed to read the bundle signing key {path}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("bundle signing key {path}: {source}")]
    Key { path: String, source: BundleError },
    #[error("failed to build the HTTP client for bundle downloads")]
    Client(#[from] reqwest::Error),
}

/// Where the source stands, for `/readyz`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BundleStatus {
    /// The configured URL without its query string, or the file path.
    pub source: String,
    /// The manifest revision of the bundle in force.
    pub revision: Option<String>,
    /// The content hash of the policy files in force (the snapshot's revision).
    pub policy_revision: Option<String>,
    /// The ETag of the bundle in force, when the server sent one.
    pub etag: Option<String>,
    /// Hex SHA-256 of the bundle in force, as received.
    pub digest: Option<String>,
    /// The last poll that ended with a good bundle in force (new or unchanged).
    pub last_success_unix: Option<u64>,
    /// When the bundle in force was applied.
    pub last_update_unix: Option<u64>,
    pub last_attempt_unix: Option<u64>,
    /// Why the last poll failed; cleared by a poll that ends well.
    pub last_error: Option<String>,
    pub last_error_unix: Option<u64>,
}

/// Counters since start, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BundleCounts {
    pub polls: u64,
    /// New bundles applied.
    pub updated: u64,
    /// Polls that found the bundle unchanged (304, or the same bytes).
    pub unchanged: u64,
    /// Downloads or reads that failed.
    pub fetch_errors: u64,
    /// Bundles refused: archive, signature, manifest, or the policy gate.
    pub rejected: u64,
}

#[derive(Default)]
struct Counters {
    polls: AtomicU64,
    updated: AtomicU64,
    unchanged: AtomicU64,
    fetch_errors: AtomicU64,
    rejected: AtomicU64,
}

/// What the caller does with a new bundle: compile it, run its tests and swap it in
/// ([`crate::policy::PolicySnapshot::from_files`]), or say why not. Runs on a blocking
/// thread.
pub type ApplyBundle = dyn Fn(LoadedBundle) -> Result<(), String> + Send + Sync;

/// What one poll did.
#[derive(Debug)]
pub enum PollOutcome {
    /// A new bundle was checked and applied.
    Updated { revision: String },
    /// Nothing new.
    Unchanged,
    /// Nothing applied; the last good set stays.
    Failed(SourceError),
}

/// The last bundle seen, applied or refused: it is not processed again until it changes.
#[derive(Default)]
struct Seen {
    etag: Option<String>,
    digest: Option<String>,
    /// Why it was refused; `None` when it is the bundle in force.
    refusal: Option<String>,
}

/// Polls a bundle from a file or a URL.
pub struct BundleSource {
    config: BundleConfig,
    verification: Verification,
    limits: BundleLimits,
    client: reqwest::Client,
    seen: Mutex<Seen>,
    status: ArcSwap<BundleStatus>,
    counters: Counters,
}

/// The URL as it may be shown: without query string or fragment.
fn shown_url(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_string()
}

impl BundleSource {
    /// Sets up a source for `config`, reading the signing key now.
    pub fn new(config: &BundleConfig) -> Result<Self, SetupError> {
        let verification = verification(config.signing.as_ref())?;
        // rustls picks no provider by itself when two are compiled in (aws-lc-rs, ring).
        crate::crypto::install_default_provider();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A redirect could carry the token or the signature elsewhere: point the
            // configuration at the final location instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let source = match &config.location {
            BundleLocation::Url(url) => shown_url(url),
            BundleLocation::File(path) => path.display().to_string(),
        };
        Ok(Self {
            config: config.clone(),
            verification,
            limits: BundleLimits::default(),
            client,
            seen: Mutex::new(Seen::default()),
            status: ArcSwap::from_pointee(BundleStatus {
                source,
                ..BundleStatus::default()
            }),
            counters: Counters::default(),
        })
    }

    /// The time between two polls.
    pub fn interval(&self) -> Duration {
        self.config.interval
    }

    /// Where the source stands.
    pub fn status(&self) -> Arc<BundleStatus> {
        self.status.load_full()
    }

    /// The counters since start.
    pub fn counts(&self) -> BundleCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BundleCounts {
            polls: get(&self.counters.polls),
            updated: get(&self.counters.updated),
            unchanged: get(&self.counters.unchanged),
            fetch_errors: get(&self.counters.fetch_errors),
            rejected: get(&self.counters.rejected),
        }
    }

    /// Fetches and checks the bundle once, whatever was seen before, without applying it
    /// or touching the status (`agentgate check`).
    pub async fn fetch_once(&self) -> Result<LoadedBundle, SourceError> {
        let (bytes, _) = self
            .download(None)
            .await?
            .ok_or_else(|| SourceError::Fetch("the server answered 304 Not Modified".into()))?;
        self.check(bytes).await
    }

    /// Polls once: a new bundle is checked and handed to `apply`, which swaps it in or says
    /// why not.
    pub async fn poll(&self, apply: &Arc<ApplyBundle>) -> PollOutcome {
        self.counters.polls.fetch_add(1, Ordering::Relaxed);
        let attempt = crate::clock::unix_now();
        let outcome = self.poll_inner(apply).await;
        let mut status = (*self.status.load_full()).clone();
        status.last_attempt_unix = Some(attempt);
        match &outcome {
            Ok(Some((loaded, etag))) => {
                self.counters.updated.fetch_add(1, Ordering::Relaxed);
                status.revision = Some(loaded.manifest.revision.clone());
                status.policy_revision = Some(loaded.files.revision());
                status.etag = etag.clone();
                status.digest = Some(loaded.digest.clone());
                status.last_update_unix = Some(attempt);
                status.last_success_unix = Some(attempt);
                status.last_error = None;
            }
            Ok(None) => {
                self.counters.unchanged.fetch_add(1, Ordering::Relaxed);
                // Unchanged is only a success when what is unchanged is the bundle in force.
                let refusal = self.seen_lock().refusal.clone();
                match refusal {
                    None => {
                        status.last_success_unix = Some(attempt);
                        status.last_error = None;
                    }
                    Some(why) => {
                        status.last_error = Some(why);
                        status.last_error_unix = Some(attempt);
                    }
                }
            }
            Err(e) => {
                let counter = match e {
                    SourceError::Fetch(_) => &self.counters.fetch_errors,
                    SourceError::Bundle(_) | SourceError::Apply(_) => &self.counters.rejected,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                status.last_error = Some(e.to_string());
                status.last_error_unix = Some(attempt);
            }
        }
        self.status.store(Arc::new(status));
        match outcome {
            Ok(Some((loaded, _))) => PollOutcome::Updated {
                revision: loaded.manifest.revision,
            },
            Ok(None) => PollOutcome::Unchanged,
            Err(e) => PollOutcome::Failed(e),
        }
    }

    /// Polls every `interval` until `shutdown` flips (the first poll at once), logging what
    /// changed. `apply` runs on a blocking thread.
    pub async fn run(
        &self,
        apply: Arc<ApplyBundle>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticks = tokio::time::interval(self.config.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            match self.poll(&apply).await {
                PollOutcome::Updated { revision } => {
                    tracing::info!(source = %self.status().source, revision = %revision, "policy bundle applied");
                }
                PollOutcome::Unchanged => {}
                PollOutcome::Failed(e) => {
                    tracing::error!(source = %self.status().source, error = %e, "policy bundle not applied; the last good set keeps serving");
                }
            }
        }
    }

    fn seen_lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Ok(None)`: nothing new; `Ok(Some)`: applied, with its ETag.
    async fn poll_inner(
        &self,
        apply: &Arc<ApplyBundle>,
    ) -> Result<Option<(LoadedBundle, Option<String>)>, SourceError> {
        let etag = self.seen_lock().etag.clone();
        let Some((bytes, etag)) = self.download(etag).await? else {
            return Ok(None);
        };
        let digest = hex_sha256(&bytes);
        if self.seen_lock().digest.as_deref() == Some(digest.as_str()) {
            self.seen_lock().etag = etag;
            return Ok(None);
        }
        let result = self.check(bytes).await;
        let result = match result {
            Ok(loaded) => {
                let apply = apply.clone();
                let candidate = loaded.clone();
                match tokio::task::spawn_blocking(move || apply(candidate)).await {
                    Ok(Ok(())) => Ok(loaded),
                    Ok(Err(why)) => Err(SourceError::Apply(why)),
                    Err(e) => Err(SourceError::Apply(format!("the policy gate failed: {e}"))),
                }
            }
            Err(e) => Err(e),
        };
        let mut seen = self.seen_lock();
        seen.etag = etag.clone();
        seen.digest = Some(digest);
        seen.refusal = result.as_ref().err().map(ToString::to_string);
        drop(seen);
        result.map(|loaded| Some((loaded, etag)))
    }

    /// Reads and checks a bundle on a blocking thread (decompression and hashing).
    async fn check(&self, bytes: Vec<u8>) -> Result<LoadedBundle, SourceError> {
        let verification = self.verification.clone();
        let limits = self.limits;
        tokio::task::spawn_blocking(move || load_bundle(&bytes, &verification, &limits))
            .await
            .map_err(|e| SourceError::Fetch(format!("bundle check failed: {e}")))?
            .map_err(SourceError::Bundle)
    }

    /// The bundle's bytes and ETag, or `None` when the server says it has not changed.
    async fn download(
        &self,
        etag: Option<String>,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, SourceError> {
        let url = match &self.config.location {
            BundleLocation::File(path) => return self.read_file(path).await.map(Some),
            BundleLocation::Url(url) => url,
        };
        let mut url = reqwest::Url::parse(url)
            .map_err(|e| SourceError::Fetch(format!("invalid url: {e}")))?;
        let mut request = self.client.get(url.clone());
        match &self.config.credential {
            None => {}
            Some(BundleCredential::Bearer(secret)) => {
                request = request.bearer_auth(read_secret(secret)?);
            }
            Some(BundleCredential::SasToken(secret)) => {
                let sas = read_secret(secret)?;
                let sas = sas.trim_start_matches('?');
                let query = match url.query() {
                    Some(q) if !q.is_empty() => format!("{q}&{sas}"),
                    _ => sas.to_string(),
                };
                url.set_query(Some(&query));
                request = self.client.get(url);
            }
        }
        if let Some(tag) = &etag {
            request = request.header(http::header::IF_NONE_MATCH, tag);
        }
        let mut response = request.send().await.map_err(|e| fetch_error(&e))?;
        let status = response.status();
        if status == http::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 | 403 => " (the credential was refused)",
                300..=399 => " (redirects are not followed: configure the final URL)",
                _ => "",
            };
            return Err(SourceError::Fetch(format!("HTTP {status}{hint}")));
        }
        let max = self.config.max_bytes;
        let too_large = || SourceError::Fetch(format!("the bundle is larger than {max} bytes"));
        if response.content_length().is_some_and(|n| n > max) {
            return Err(too_large());
        }
        let etag = response
            .headers()
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fetch_error(&e))? {
            if body.len() as u64 + chunk.len() as u64 > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some((body, etag)))
    }

    async fn read_file(
        &self,
        path: &std::path::Path,
    ) -> Result<(Vec<u8>, Option<String>), SourceError> {
        let max = self.config.max_bytes;
        let path = path.to_path_buf();
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            use std::io::Read;
            let mut bytes = Vec::new();
            std::fs::File::open(&path)?
                .take(max + 1)
                .read_to_end(&mut bytes)?;
            Ok(bytes)
        })
        .await
        .map_err(|e| SourceError::Fetch(e.to_string()))?
        .map_err(|e| SourceError::Fetch(format!("cannot read the bundle file: {e}")))?;
        if read.len() as u64 > max {
            return Err(SourceError::Fetch(format!(
                "the bundle is larger than {max} bytes"
            )));
        }
        Ok((read, None))
    }
}

/// What bundles must satisfy under `signing`: signed with its key, or unsigned.
pub fn verification(signing: Option<&BundleSigning>) -> Result<Verification, SetupError> {
    let Some(signing) = signing else {
        return Ok(Verification::Unsigned);
    };
    let path = signing.key_file.display().to_string();
    let pem = std::fs::read(&signing.key_file).map_err(|source| SetupError::KeyFile {
        path: path.clone(),
        source,
    })?;
    VerificationKey::from_pem(&pem, signing.alg)
        .map(Verification::Key)
        .map_err(|source| SetupError::Key { path, source })
}

fn hex_sha256(bytes: &[u8]) -> String {
    digest::digest(&digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A secret from its file or environment variable, trimmed; the error never holds it.
fn read_secret(source: &SecretSource) -> Result<String, SourceError> {
    let value = match source {
        SecretSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
            SourceError::Fetch(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?,
        SecretSource::Env(name) => std::env::var(name).map_err(|_| {
            SourceError::Fetch(format!("the environment variable {name} is not set"))
        })?,
    };
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(SourceError::Fetch("the token is empty".into()));
    }
    Ok(value)
}

/// An HTTP failure, described without its URL (which may carry a shared access signature).
fn fetch_error(e: &reqwest::Error) -> SourceError {
    if e.is_timeout() {
        return SourceError::Fetch("timed out".into());
    }
    let mut message = if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    SourceError::Fetch(message)
}
