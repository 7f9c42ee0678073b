//! Signing keys per trusted tenant: fetched at start, refreshed periodically and on an
//! unknown `kid`, kept through outages up to a maximum age.
//!
//! The request path reads keys with one `ArcSwap::load`. Only an unknown `kid` or a missing
//! key set takes the per-tenant fetch lock, and the fetch itself is single-flight and rate
//! limited, so a flood of unknown `kid`s costs at most one fetch per interval.

use super::jwks::{fetch_keys, KeyMap, KeyRules, SigningKey};
use super::TokenError;
use crate::config::{IdentityConfig, KeySource};
use crate::entra::Issuers;
use arc_swap::ArcSwapOption;
use jsonwebtoken::Algorithm;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Why the key store could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    #[error("failed to read identity.ca_file {path}")]
    CaFile {
        path: String,
        source: std::io::Error,
    },
    #[error("identity.ca_file {path} holds no usable PEM certificate")]
    CaCertificates {
        path: String,
        source: reqwest::Error,
    },
    #[error("failed to build the HTTP client for key fetches")]
    Client(#[source] reqwest::Error),
}

/// The key sets of every trusted tenant.
pub struct KeyStore {
    tenants: Vec<Arc<TenantKeys>>,
    index: HashMap<String, usize>,
    client: reqwest::Client,
    settings: Settings,
}

struct Settings {
    algorithms: Vec<Algorithm>,
    issuers: Issuers,
    refresh_interval: Duration,
    min_refetch_interval: Duration,
    max_key_age: Duration,
    fetch_timeout: Duration,
    max_response_bytes: usize,
}

/// One tenant's keys and fetch bookkeeping.
pub struct TenantKeys {
    pub tenant: Arc<str>,
    source: KeySource,
    current: ArcSwapOption<KeySet>,
    fetch_lock: Mutex<FetchState>,
    fetches_ok: AtomicU64,
    fetches_failed: AtomicU64,
    consecutive_failures: AtomicU32,
}

impl TenantKeys {
    fn attempts(&self) -> u64 {
        self.fetches_ok.load(Ordering::Acquire) + self.fetches_failed.load(Ordering::Acquire)
    }
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

/// A parsed key set and when it was fetched.
pub struct KeySet {
    keys: KeyMap,
    fetched_at: Instant,
    fetched_unix: u64,
}

/// A snapshot of one tenant's key state, for health and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TenantKeyStatus {
    pub tenant: String,
    pub keys: usize,
    /// Seconds since the last successful fetch; `None` when none succeeded.
    pub age_seconds: Option<u64>,
    pub fetched_at_unix: Option<u64>,
    pub usable: bool,
    pub fetches_ok: u64,
    pub fetches_failed: u64,
}

// === impl KeyStore ===

impl KeyStore {
    /// Builds the store for the configured tenants; nothing is fetched yet.
    pub fn new(cfg: &IdentityConfig) -> Result<Self, KeyStoreError> {
        // rustls picks no provider by itself when two are compiled in (aws-lc-rs, ring).
        crate::crypto::install_default_provider();
        let mut client = reqwest::Client::builder()
            .connect_timeout(cfg.fetch_timeout)
            .timeout(cfg.fetch_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0);
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path).map_err(|source| KeyStoreError::CaFile {
                path: path.display().to_string(),
                source,
            })?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                KeyStoreError::CaCertificates {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            client = client.tls_certs_merge(roots);
        }
        let client = client.build().map_err(KeyStoreError::Client)?;
        let tenants: Vec<Arc<TenantKeys>> = cfg
            .tenants
            .iter()
            .map(|t| {
                Arc::new(TenantKeys {
                    tenant: Arc::from(t.id.as_str()),
                    source: t.keys.clone(),
                    current: ArcSwapOption::empty(),
                    fetch_lock: Mutex::new(FetchState::default()),
                    fetches_ok: AtomicU64::new(0),
                    fetches_failed: AtomicU64::new(0),
                    consecutive_failures: AtomicU32::new(0),
                })
            })
            .collect();
        let index = tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (t.tenant.to_string(), i))
            .collect();
        Ok(Self {
            tenants,
            index,
            client,
            settings: Settings {
                algorithms: cfg.algorithms.clone(),
                issuers: cfg.issuers.clone(),
                refresh_interval: cfg.refresh_interval,
                min_refetch_interval: cfg.min_refetch_interval,
                max_key_age: cfg.max_key_age,
                fetch_timeout: cfg.fetch_timeout,
                max_response_bytes: cfg.max_response_bytes,
            },
        })
    }

    /// The tenant's slot, when the tenant is trusted.
    pub fn tenant(&self, tid: &str) -> Option<&Arc<TenantKeys>> {
        self.index.get(tid).map(|i| &self.tenants[*i])
    }

    /// True when the tenant's current key set still holds `kid` (the cache re-check).
    pub fn still_holds(&self, tenant: &TenantKeys, kid: &str) -> bool {
        tenant
            .current
            .load()
            .as_ref()
            .is_some_and(|set| self.is_fresh(set) && set.keys.contains_key(kid))
    }

    /// The key for `kid`, fetching once (single-flight, rate limited) when it is unknown.
    pub async fn key(&self, tenant: &TenantKeys, kid: &str) -> Result<Arc<SigningKey>, TokenError> {
        if let Some(k) = self.lookup(tenant, kid) {
            return Ok(k);
        }
        // Bound the wait: queued requests give up with the fetch timeout, not later.
        let wait = self.settings.fetch_timeout + Duration::from_millis(250);
        match tokio::time::timeout(wait, self.refetch_for(tenant, kid)).await {
            Ok(r) => r,
            Err(_) => Err(self.miss_error(tenant)),
        }
    }

    fn lookup(&self, tenant: &TenantKeys, kid: &str) -> Option<Arc<SigningKey>> {
        let set = tenant.current.load();
        let set = set.as_ref()?;
        if !self.is_fresh(set) {
            return None;
        }
        set.keys.get(kid).cloned()
    }

    fn is_fresh(&self, set: &KeySet) -> bool {
        set.fetched_at.elapsed() <= self.settings.max_key_age
    }

    fn miss_error(&self, tenant: &TenantKeys) -> TokenError {
        match tenant.current.load().as_ref() {
            Some(set) if self.is_fresh(set) => TokenError::UnknownKey,
            _ => TokenError::KeysUnavailable,
        }
    }

    async fn refetch_for(
        &self,
        tenant: &TenantKeys,
        kid: &str,
    ) -> Result<Arc<SigningKey>, TokenError> {
        let attempts_before = tenant.attempts();
        let mut state = tenant.fetch_lock.lock().await;
        // Single flight: if a fetch finished while this request waited for the lock, its
        // result is this request's answer too.
        if let Some(k) = self.lookup(tenant, kid) {
            return Ok(k);
        }
        let coalesced = tenant.attempts() != attempts_before;
        let recently = state
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.settings.min_refetch_interval);
        if !recently && !coalesced {
            self.fetch_locked(tenant, &mut state, "unknown kid").await;
        }
        self.lookup(tenant, kid)
            .ok_or_else(|| self.miss_error(tenant))
    }

    async fn fetch_locked(&self, tenant: &TenantKeys, state: &mut FetchState, why: &str) {
        state.last_attempt = Some(Instant::now());
        let rules = KeyRules {
            tenant: &tenant.tenant,
            algorithms: &self.settings.algorithms,
            issuers: &self.settings.issuers,
        };
        let result = fetch_keys(
            &self.client,
            &tenant.source,
            rules,
            self.settings.max_response_bytes,
            self.settings.fetch_timeout,
        )
        .await;
        match result {
            Ok(keys) => {
                let count = keys.len();
                let removed = tenant.current.load().as_ref().map_or(0, |old| {
                    old.keys.keys().filter(|k| !keys.contains_key(*k)).count()
                });
                tenant.current.store(Some(Arc::new(KeySet {
                    keys,
                    fetched_at: Instant::now(),
                    fetched_unix: crate::clock::unix_now(),
                })));
                tenant.fetches_ok.fetch_add(1, Ordering::Release);
                tenant.consecutive_failures.store(0, Ordering::Relaxed);
                state.last_error = None;
                tracing::info!(tenant = %tenant.tenant, keys = count, removed, reason = why, "signing keys loaded");
            }
            Err(e) => {
                tenant.fetches_failed.fetch_add(1, Ordering::Release);
                tenant.consecutive_failures.fetch_add(1, Ordering::Relaxed);
                let kept = tenant.current.load().as_ref().map_or(0, |s| s.keys.len());
                tracing::warn!(tenant = %tenant.tenant, error = %e, kept_keys = kept, reason = why, "signing key fetch failed; keeping the last good set");
                state.last_error = Some(e.to_string());
            }
        }
    }

    /// Fetches every tenant whose keys are due: missing, older than the refresh interval,
    /// or failing (retried with exponential backoff capped at the refresh interval).
    pub async fn refresh_due(&self) {
        for tenant in &self.tenants {
            let mut state = tenant.fetch_lock.lock().await;
            let failures = tenant.consecutive_failures.load(Ordering::Relaxed);
            let due =
                match state.last_attempt {
                    None => true,
                    Some(last) if failures > 0 => {
                        last.elapsed() >= backoff(failures, self.settings.refresh_interval)
                    }
                    Some(_) => tenant.current.load().as_ref().is_none_or(|set| {
                        set.fetched_at.elapsed() >= self.settings.refresh_interval
                    }),
                };
            if due {
                self.fetch_locked(tenant, &mut state, "refresh").await;
            }
        }
    }

    /// Runs [`Self::refresh_due`] every second until `shutdown` flips.
    pub async fn run_refresh(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            self.refresh_due().await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// True when every tenant has a usable key set.
    pub fn ready(&self) -> bool {
        self.tenants.iter().all(|t| {
            t.current
                .load()
                .as_ref()
                .is_some_and(|s| self.is_fresh(s) && !s.keys.is_empty())
        })
    }

    /// Per-tenant key state.
    pub fn status(&self) -> Vec<TenantKeyStatus> {
        let now = crate::clock::unix_now();
        self.tenants
            .iter()
            .map(|t| {
                let set = t.current.load();
                TenantKeyStatus {
                    tenant: t.tenant.to_string(),
                    keys: set.as_ref().map_or(0, |s| s.keys.len()),
                    age_seconds: set.as_ref().map(|s| now.saturating_sub(s.fetched_unix)),
                    fetched_at_unix: set.as_ref().map(|s| s.fetched_unix),
                    usable: set.as_ref().is_some_and(|s| self.is_fresh(s)),
                    fetches_ok: t.fetches_ok.load(Ordering::Relaxed),
                    fetches_failed: t.fetches_failed.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

/// 1 s, 2 s, 4 s ... capped at `cap`.
fn backoff(failures: u32, cap: Duration) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(16)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let cap = Duration::from_secs(60);
        assert_eq!(backoff(1, cap), Duration::from_secs(1));
        assert_eq!(backoff(3, cap), Duration::from_secs(4));
        assert_eq!(backoff(30, cap), cap);
    }
}
