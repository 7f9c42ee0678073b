//! The decision pipeline, transport-free: bearer token -> verified caller -> directory
//! entries -> policy input -> decision.
//!
//! The proxy calls [`Authorizer::authorize`] once per request; the CLI and the benchmarks
//! call the very same code. Verified tokens are cached by the SHA-256 of the token (never
//! the token itself) until the earlier of `exp` and the cache TTL; lifetime, audience and
//! the signing key's presence are re-checked on every hit, and failures are never cached.

use crate::config::{IdentityConfig, TokenCacheConfig};
use crate::directory::ResolveError;
use crate::identity::pool::StringPool;
use crate::identity::{bearer_token, TokenError, TokenValidator, VerifiedToken};
use crate::policy::input::{build_input, RequestFacts, RouteInput, TokenInput};
use crate::policy::{Decision, DecisionError, PolicySnapshot};
use arc_swap::{ArcSwap, ArcSwapOption};
use aws_lc_rs::digest;
use http::HeaderMap;
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

/// Why a request is refused. Token and directory problems come before policy runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    Token(TokenError),
    Directory(ResolveError),
    /// Policy said no.
    Policy {
        status: u16,
        reason: Arc<str>,
        insufficient_scope: bool,
        response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    },
    /// Policy could not decide (undefined, malformed, error, timeout): fail closed.
    PolicyError(DecisionError),
}

impl Denial {
    /// The stable reason code.
    pub fn reason(&self) -> &str {
        match self {
            Self::Token(e) => e.reason(),
            Self::Directory(e) => e.reason(),
            Self::Policy { reason, .. } => reason,
            Self::PolicyError(_) => "policy_error",
        }
    }
}

/// What the pipeline concluded for one request.
#[derive(Debug)]
pub struct Verdict {
    pub outcome: Result<Allowed, Denial>,
    /// The caller, when the token verified.
    pub caller: Option<Arc<Authenticated>>,
    /// The policy snapshot that decided (or would have).
    pub snapshot: Arc<PolicySnapshot>,
    pub token_time: Duration,
    pub policy_time: Duration,
    /// The input document, when policy ran and the caller asked to keep it.
    pub input: Option<regorus::Value>,
    /// What the shadow policy set would have decided, when one applies to this caller.
    pub shadow: Option<ShadowOutcome>,
}

/// A candidate policy set evaluated beside the enforced one, for all traffic or for some
/// blueprints. It never changes an outcome.
#[derive(Debug)]
pub struct ShadowPolicy {
    pub snapshot: Arc<PolicySnapshot>,
    /// Blueprint app ids in scope; empty means all traffic.
    pub blueprints: Vec<String>,
}

/// The shadow set's verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowOutcome {
    pub revision: String,
    /// `allow`, `deny` or `error`.
    pub outcome: &'static str,
    pub reason: String,
}

/// `allow`, `deny` or `error` for an outcome, as used in metrics labels.
pub fn outcome_label(outcome: &Result<Allowed, Denial>) -> &'static str {
    match outcome {
        Ok(_) => "allow",
        Err(Denial::PolicyError(_)) => "error",
        Err(_) => "deny",
    }
}

fn reason_of(outcome: &Result<Allowed, Denial>) -> &str {
    match outcome {
        Ok(a) => &a.reason,
        Err(d) => d.reason(),
    }
}

impl ShadowOutcome {
    /// True when the shadow set would have decided otherwise than `enforced`.
    pub fn differs_from(&self, enforced: &Result<Allowed, Denial>) -> bool {
        self.outcome != outcome_label(enforced) || self.reason != reason_of(enforced)
    }
}

fn decide(snapshot: &PolicySnapshot, input: regorus::Value) -> Result<Allowed, Denial> {
    match snapshot.decide(input) {
        Ok(Decision::Allow {
            reason,
            headers,
            response_headers,
        }) => Ok(Allowed {
            reason,
            headers,
            response_headers,
        }),
        Ok(Decision::Deny {
            status,
            reason,
            insufficient_scope,
            response_headers,
        }) => Err(Denial::Policy {
            status,
            reason,
            insufficient_scope,
            response_headers,
        }),
        Err(e) => Err(Denial::PolicyError(e)),
    }
}

/// An allowed request's instructions for the upstream leg.
#[derive(Debug, Clone)]
pub struct Allowed {
    pub reason: Arc<str>,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// The per-request facts the pipeline needs besides headers.
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub client_ip: &'a str,
}

/// The route facts the pipeline needs.
#[derive(Debug)]
pub struct RouteAccess {
    pub audiences: Vec<String>,
    pub input: RouteInput,
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
    policy: Arc<ArcSwap<PolicySnapshot>>,
    shadow: ArcSwapOption<ShadowPolicy>,
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
        input_headers: Vec<http::HeaderName>,
        policy: Arc<ArcSwap<PolicySnapshot>>,
    ) -> Self {
        Self {
            validator,
            cache: cache.enabled.then(|| TokenCache::new(cache.capacity)),
            strings: StringPool::new(SHARED_STRINGS),
            cache_ttl: cache.max_ttl.as_secs(),
            max_token_bytes: identity.max_token_bytes,
            input_headers,
            policy,
            shadow: ArcSwapOption::empty(),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
        }
    }

    /// Installs (or with `None`, removes) the shadow policy set.
    pub fn set_shadow(&self, shadow: Option<ShadowPolicy>) {
        self.shadow.store(shadow.map(Arc::new));
    }

    /// The shadow policy set, if any.
    pub fn shadow(&self) -> Option<Arc<ShadowPolicy>> {
        self.shadow.load_full()
    }

    /// The live policy snapshot holder.
    pub fn policy(&self) -> &Arc<ArcSwap<PolicySnapshot>> {
        &self.policy
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

    /// Decides one request at unix time `now_ns` (nanoseconds). `keep_input` retains the
    /// input document in the verdict (for explanation tools; the proxy passes false).
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        line: RequestLine<'_>,
        route: &RouteAccess,
        now_ns: u64,
        keep_input: bool,
    ) -> Verdict {
        let snapshot = self.policy.load_full();
        let started = Instant::now();
        let now = now_ns / 1_000_000_000;
        let caller = match self.authenticate(headers, &route.audiences, now).await {
            Ok(c) => c,
            Err(e) => {
                return Verdict {
                    outcome: Err(Denial::Token(e)),
                    caller: None,
                    snapshot,
                    token_time: started.elapsed(),
                    policy_time: Duration::ZERO,
                    input: None,
                    shadow: None,
                }
            }
        };
        let mut verdict =
            self.decide_for(caller, headers, line, route, now_ns, keep_input, snapshot);
        verdict.token_time = started.elapsed().saturating_sub(verdict.policy_time);
        verdict
    }

    /// Decides for a caller already authenticated (the second half of [`Self::authorize`]);
    /// `agentgate eval --no-verify` enters here with an unverified token.
    #[allow(clippy::too_many_arguments)]
    pub fn decide_for(
        &self,
        caller: Arc<Authenticated>,
        headers: &HeaderMap,
        line: RequestLine<'_>,
        route: &RouteAccess,
        now_ns: u64,
        keep_input: bool,
        snapshot: Arc<PolicySnapshot>,
    ) -> Verdict {
        let token_time = Duration::ZERO;
        let resolution = match snapshot.directory.resolve(&caller.token.caller) {
            Ok(r) => r,
            Err(e) => {
                return Verdict {
                    outcome: Err(Denial::Directory(e)),
                    caller: Some(caller),
                    snapshot,
                    token_time,
                    policy_time: Duration::ZERO,
                    input: None,
                    shadow: None,
                }
            }
        };
        let policy_started = Instant::now();
        let facts = RequestFacts {
            method: line.method,
            host: line.host,
            path: line.path,
            query: line.query,
            client_ip: line.client_ip,
            headers: self
                .input_headers
                .iter()
                .filter_map(|h| Some((h.as_str(), headers.get(h)?.to_str().ok()?)))
                .collect(),
            time_ns: now_ns,
        };
        let input = build_input(
            &facts,
            &route.input,
            &caller.token,
            &TokenInput::new(&caller.token),
            &snapshot.prepared,
            &resolution,
        );
        let kept = keep_input.then(|| input.clone());
        let shadow = self.shadow.load();
        let shadow_input = shadow
            .as_ref()
            .filter(|s| {
                s.blueprints.is_empty()
                    || caller
                        .token
                        .caller
                        .blueprint_id
                        .as_deref()
                        .is_some_and(|bp| s.blueprints.iter().any(|b| b == bp))
            })
            .map(|s| (s, input.clone()));
        let outcome = decide(&snapshot, input);
        let policy_time = policy_started.elapsed();
        let shadow = shadow_input.map(|(s, input)| {
            let o = decide(&s.snapshot, input);
            ShadowOutcome {
                revision: s.snapshot.revision.clone(),
                outcome: outcome_label(&o),
                reason: reason_of(&o).to_string(),
            }
        });
        Verdict {
            outcome,
            caller: Some(caller),
            snapshot,
            token_time,
            policy_time,
            input: kept,
            shadow,
        }
    }

    async fn authenticate(
        &self,
        headers: &HeaderMap,
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
