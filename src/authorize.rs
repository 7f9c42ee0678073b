//! The decision pipeline, transport-free: bearer token -> verified caller -> directory
//! entries -> policy input -> decision.
//!
//! The proxy calls [`Authorizer::authorize`] once per request with the snapshot the request
//! loaded; the CLI and the benchmarks call the very same code. Verified tokens are cached by
//! the SHA-256 of the token (never the token itself) until the earlier of `exp` and the
//! cache TTL; lifetime, audience and the signing key's presence are re-checked on every hit,
//! and failures are never cached.

use crate::config::{IdentityConfig, PolicyConfig, TokenCacheConfig};
use crate::identity::pool::StringPool;
use crate::identity::{bearer_token, TokenError, TokenValidator, VerifiedToken};
use crate::outcome::{Allowed, Outcome, PolicyDenial, Refusal};
use crate::policy::input::{build_input, InputParts, RequestFacts};
use crate::policy::{Decision, PolicySnapshot};
use crate::routes::RouteAccess;
use crate::snapshot::Snapshot;
use aws_lc_rs::digest;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A verified token, as cached. The policy input is built from it per request: kept in
/// the cache, the input's maps cost about 2 KiB per token.
#[derive(Debug)]
pub struct Authenticated {
    pub token: VerifiedToken,
    /// Unix second after which the cache entry is not used.
    cached_until: u64,
}

impl Authenticated {
    /// Wraps a token checked elsewhere (`agentgate eval`), never cached.
    pub fn uncached(token: VerifiedToken) -> Arc<Self> {
        Arc::new(Self {
            cached_until: 0,
            token,
        })
    }
}

/// What the pipeline concluded for one request.
#[derive(Debug)]
pub struct Verdict {
    pub outcome: Outcome,
    /// The caller, when the token verified.
    pub caller: Option<Arc<Authenticated>>,
    pub token_time: Duration,
    pub policy_time: Duration,
    /// The input document, when policy ran and the caller asked to keep it.
    pub input: Option<regorus::Value>,
    /// What the shadow policy set would have decided, when one applies to this caller.
    pub shadow: Option<ShadowVerdict>,
}

/// The shadow set's verdict on one request.
#[derive(Debug, Clone)]
pub struct ShadowVerdict {
    pub revision: String,
    pub outcome: Outcome,
}

/// What policy says for `input`, as an outcome.
fn decide(policy: &PolicySnapshot, input: regorus::Value) -> Outcome {
    match policy.decide(input) {
        Ok(Decision::Allow {
            reason,
            headers,
            response_headers,
        }) => Outcome::Allowed(Allowed {
            reason,
            headers,
            response_headers,
        }),
        Ok(Decision::Deny {
            status,
            reason,
            insufficient_scope,
            response_headers,
        }) => Outcome::Refused(Refusal::Policy(PolicyDenial {
            status,
            reason,
            insufficient_scope,
            response_headers,
        })),
        Err(e) => Outcome::Refused(Refusal::PolicyError(e)),
    }
}

type TokenCache = quick_cache::sync::Cache<[u8; 32], Arc<Authenticated>>;

/// Distinct strings cached tokens may share (ids, issuers, audiences, permissions).
const SHARED_STRINGS: usize = 65_536;

/// Runs the decision pipeline.
pub struct Authorizer {
    validator: TokenValidator,
    cache: Option<TokenCache>,
    /// Shares the strings of cached tokens.
    strings: StringPool,
    cache_ttl: u64,
    max_token_bytes: usize,
    input_headers: Vec<http::HeaderName>,
    /// `policy.time_resolution` in nanoseconds (at least 1).
    time_resolution_ns: u64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
}

/// Token cache counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
}

impl Authorizer {
    pub fn new(
        validator: TokenValidator,
        identity: &IdentityConfig,
        cache: &TokenCacheConfig,
        policy: &PolicyConfig,
    ) -> Self {
        Self {
            validator,
            cache: cache.enabled.then(|| TokenCache::new(cache.capacity)),
            strings: StringPool::new(SHARED_STRINGS),
            cache_ttl: cache.max_ttl.as_secs(),
            max_token_bytes: identity.max_token_bytes,
            input_headers: policy.input_headers.clone(),
            time_resolution_ns: u64::try_from(policy.time_resolution.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
        }
    }

    /// The token validator (and through it, the key store).
    pub fn validator(&self) -> &TokenValidator {
        &self.validator
    }

    /// Token cache hits, misses and entries.
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            hits: self.cache_hits.load(Ordering::Relaxed),
            misses: self.cache_misses.load(Ordering::Relaxed),
            entries: self.cache.as_ref().map_or(0, |c| c.len()),
        }
    }

    /// Decides one request on `snapshot` for a route that accepts `route`. `keep_input`
    /// retains the input document in the verdict (for explanation tools; the proxy passes
    /// false).
    pub async fn authorize(
        &self,
        snapshot: &Snapshot,
        route: &RouteAccess,
        request: &RequestFacts<'_>,
        keep_input: bool,
    ) -> Verdict {
        let started = Instant::now();
        let now = request.time_ns / 1_000_000_000;
        match self
            .authenticate(request.headers, &route.audiences, now)
            .await
        {
            Ok(caller) => {
                let mut verdict = self.decide_for(caller, snapshot, route, request, keep_input);
                verdict.token_time = started.elapsed().saturating_sub(verdict.policy_time);
                verdict
            }
            Err(e) => Verdict {
                outcome: Outcome::Refused(Refusal::Token(e)),
                caller: None,
                token_time: started.elapsed(),
                policy_time: Duration::ZERO,
                input: None,
                shadow: None,
            },
        }
    }

    /// Decides for a caller already authenticated (the second half of [`Self::authorize`]);
    /// `agentgate eval --no-verify` enters here with an unverified token.
    pub fn decide_for(
        &self,
        caller: Arc<Authenticated>,
        snapshot: &Snapshot,
        route: &RouteAccess,
        request: &RequestFacts<'_>,
        keep_input: bool,
    ) -> Verdict {
        let policy = &snapshot.policy;
        let policy_started = Instant::now();
        let (outcome, input, shadow) = match policy.directory.resolve(&caller.token.caller) {
            Err(e) => (Outcome::Refused(Refusal::Directory(e)), None, None),
            Ok(resolution) => {
                let seen = RequestFacts {
                    time_ns: request.time_ns - request.time_ns % self.time_resolution_ns,
                    ..*request
                };
                let input = build_input(
                    &seen,
                    InputParts {
                        route: &route.input,
                        token: &caller.token,
                        directory: &policy.prepared,
                        resolution: &resolution,
                        input_headers: &self.input_headers,
                    },
                );
                let blueprint = caller.token.caller.blueprint_id.as_deref();
                let shadow = snapshot
                    .shadow
                    .as_ref()
                    .filter(|s| s.applies_to(blueprint))
                    .map(|s| (s, input.clone()));
                let kept = keep_input.then(|| input.clone());
                let outcome = decide(policy, input);
                let shadow = shadow.map(|(s, input)| ShadowVerdict {
                    revision: s.snapshot.revision.clone(),
                    outcome: decide(&s.snapshot, input),
                });
                (outcome, kept, shadow)
            }
        };
        Verdict {
            outcome,
            caller: Some(caller),
            token_time: Duration::ZERO,
            policy_time: policy_started.elapsed(),
            input,
            shadow,
        }
    }

    async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        audiences: &[String],
        now: u64,
    ) -> Result<Arc<Authenticated>, TokenError> {
        let bearer = bearer_token(headers, self.max_token_bytes)?;
        let leeway = self.validator.leeway();
        let key = self.cache.as_ref().map(|_| cache_key(bearer));
        if let (Some(cache), Some(key)) = (&self.cache, &key) {
            if let Some(hit) = cache.get(key) {
                if now <= hit.cached_until && self.validator.key_still_valid(&hit.token) {
                    self.cache_hits.fetch_add(1, Ordering::Relaxed);
                    hit.token.check_time(now, leeway)?;
                    hit.token.check_audience(audiences)?;
                    return Ok(hit);
                }
                cache.remove(key);
            }
            self.cache_misses.fetch_add(1, Ordering::Relaxed);
        }
        let mut token = self.validator.verify(bearer, now).await?;
        token.check_audience(audiences)?;
        if self.cache.is_some() {
            self.strings.share_token(&mut token);
        }
        let entry = Arc::new(Authenticated {
            cached_until: token
                .expires_at
                .saturating_add(leeway)
                .min(now.saturating_add(self.cache_ttl)),
            token,
        });
        if let (Some(cache), Some(key)) = (&self.cache, key) {
            cache.insert(key, entry.clone());
        }
        Ok(entry)
    }
}

/// SHA-256 of the token: the cache never holds a usable credential.
fn cache_key(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
