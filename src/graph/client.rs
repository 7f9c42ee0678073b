//! The HTTP side of Graph: the access token, and GETs that page, retry and stay bounded.
//!
//! Every request is bounded three ways: `timeout` per attempt (body included), a cap on the
//! body while it streams in, and the deadline of the whole sync. Throttling (`429`, `503`)
//! is answered by waiting at least `Retry-After` seconds, and failures that may pass (other
//! `5xx`, transport errors, timeouts) by exponential backoff, up to `max_retries` retries; no
//! request is ever sent before the wait is over. `@odata.nextLink` is followed only while it
//! stays on the configured Graph origin, so the access token is never sent elsewhere, and
//! redirects are not followed at all.

use super::credential::{ClientAuth, ClientCredential, JWT_BEARER_ASSERTION};
use super::error::GraphError;
use super::secret::Secret;
use crate::config::GraphConfig;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// First backoff after a transient failure; doubles per attempt.
const BASE_BACKOFF: Duration = Duration::from_millis(500);
/// Longest backoff between two attempts (Retry-After may ask for longer).
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest refresh margin before a token's expiry.
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Longest Entra error description kept in an error message.
const MAX_DESCRIPTION_CHARS: usize = 240;

/// The end of a sync: every request and every wait must finish before it.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    limit: Duration,
}

impl Deadline {
    /// `limit` from now.
    pub fn after(limit: Duration) -> Self {
        Self {
            at: Instant::now() + limit,
            limit,
        }
    }

    fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    fn expired(&self) -> GraphError {
        GraphError::Deadline { limit: self.limit }
    }
}

/// A Graph client for one tenant and app registration.
pub struct GraphClient {
    http: reqwest::Client,
    graph_url: String,
    graph_origin: Url,
    token_url: String,
    scope: String,
    client_id: String,
    credential: ClientCredential,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    timeout: Duration,
    max_response_bytes: usize,
    max_retries: u32,
    page_size: u32,
    requests: AtomicU64,
    throttled: AtomicU64,
    tokens_fetched: AtomicU64,
}

struct CachedToken {
    token: Secret,
    refresh_at: Instant,
}

/// What one attempt of a request came to.
enum Attempt {
    /// A failure worth another attempt, after at least `retry_after` when Graph said so.
    Retry {
        error: GraphError,
        retry_after: Option<Duration>,
    },
    /// A failure no retry fixes.
    Fail(GraphError),
}

impl From<GraphError> for Attempt {
    fn from(error: GraphError) -> Self {
        if error.is_transient() {
            Attempt::Retry {
                error,
                retry_after: None,
            }
        } else {
            Attempt::Fail(error)
        }
    }
}

/// One page of a Graph collection.
#[derive(Deserialize)]
struct Page<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct TokenErrorBody {
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct GraphErrorBody {
    error: GraphErrorDetail,
}

#[derive(Deserialize)]
struct GraphErrorDetail {
    code: Option<String>,
}

fn transport(url: &str, e: &reqwest::Error) -> GraphError {
    let mut message = if e.is_timeout() {
        "timed out".to_string()
    } else {
        "request failed".to_string()
    };
    // The chain below the request error names the cause (refused, reset, TLS, ...).
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    GraphError::Transport {
        url: url.to_string(),
        message,
    }
}

/// `Retry-After` as delay-seconds (what Graph sends) or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate_seconds(value)?;
    let now = crate::clock::unix_now();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Unix seconds of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate_seconds(value: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(&{
        let parts: Vec<&str> = value.split_whitespace().collect();
        let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
            return None;
        };
        let month = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .iter()
        .position(|m| m == month)?
            + 1;
        format!("{year}-{month:02}-{day:0>2}T{time}Z")
    })
    .ok()?;
    Some(crate::clock::unix_secs(t))
}

/// Exponential backoff for the `attempt`-th retry (1-based), with up to 25 % jitter so
/// several gateways do not retry in step.
fn backoff(attempt: u32) -> Duration {
    let base = BASE_BACKOFF
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let nanos = crate::clock::unix_nanos(crate::clock::now());
    base + base.mul_f64((nanos % 1000) as f64 / 4000.0)
}

fn truncate(text: &str, max: usize) -> String {
    let first_line = text.lines().next().unwrap_or("");
    match first_line.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &first_line[..i]),
        None => first_line.to_string(),
    }
}

// === impl GraphClient ===

impl GraphClient {
    /// Builds the client: loads the credential and the extra trust roots. Nothing is
    /// requested yet.
    pub fn new(config: &GraphConfig) -> Result<Self, GraphError> {
        let credential = ClientCredential::load(&config.credential)?;
        // rustls picks no provider by itself when two are compiled in (aws-lc-rs, ring).
        crate::crypto::install_default_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                GraphError::Client(format!("cannot read ca_file {}: {e}", ca.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| GraphError::Client(format!("ca_file {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(GraphError::Client(format!(
                    "ca_file {} holds no PEM certificate",
                    ca.display()
                )));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| GraphError::Client(e.to_string()))?;
        let graph_origin = Url::parse(&config.graph_url)
            .map_err(|e| GraphError::Client(format!("graph_url {}: {e}", config.graph_url)))?;
        Ok(Self {
            http,
            graph_url: config.graph_url.clone(),
            graph_origin,
            token_url: format!("{}/{}/oauth2/v2.0/token", config.authority, config.tenant),
            scope: format!("{}/.default", config.graph_url),
            client_id: config.client_id.clone(),
            credential,
            token: tokio::sync::Mutex::new(None),
            timeout: config.timeout,
            max_response_bytes: config.max_response_bytes,
            max_retries: config.max_retries,
            page_size: config.page_size,
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            tokens_fetched: AtomicU64::new(0),
        })
    }

    /// `$top` for collection requests.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// HTTP requests sent, token requests included.
    pub fn requests_total(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Answers that throttled (`429`, `503`).
    pub fn throttled_total(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Access tokens obtained from the token endpoint.
    pub fn tokens_fetched(&self) -> u64 {
        self.tokens_fetched.load(Ordering::Relaxed)
    }

    /// The credential in words, for logs.
    pub fn describe_credential(&self) -> String {
        self.credential.describe()
    }

    /// GETs every page of the collection at `path` (relative to the Graph URL, e.g.
    /// `/v1.0/users/microsoft.graph.agentUser?$select=id`), handing each page's `value` to
    /// `on_page` in order. Fails as a whole: a caller never sees a result for some pages
    /// only, unless it kept them itself.
    pub async fn for_each_page<T, F>(
        &self,
        path: &str,
        headers: &[(&'static str, &'static str)],
        deadline: Deadline,
        mut on_page: F,
    ) -> Result<(), GraphError>
    where
        T: DeserializeOwned,
        F: FnMut(Vec<T>) -> Result<(), GraphError>,
    {
        let mut url = format!("{}{path}", self.graph_url);
        loop {
            let page: Page<T> = self.get_json(&url, headers, deadline).await?;
            on_page(page.value)?;
            match page.next_link {
                None => return Ok(()),
                Some(next) => {
                    self.check_origin(&url, &next)?;
                    url = next;
                }
            }
        }
    }

    /// Refuses a next link that is not on the Graph origin (scheme, host and port).
    fn check_origin(&self, from: &str, next: &str) -> Result<(), GraphError> {
        let same = Url::parse(next).is_ok_and(|u| {
            u.scheme() == self.graph_origin.scheme()
                && u.host_str() == self.graph_origin.host_str()
                && u.port_or_known_default() == self.graph_origin.port_or_known_default()
        });
        if same {
            return Ok(());
        }
        Err(GraphError::ForeignNextLink {
            url: from.to_string(),
            origin: self.graph_origin.origin().ascii_serialization(),
            target: Url::parse(next)
                .map_or_else(|_| truncate(next, 80), |u| u.origin().ascii_serialization()),
        })
    }

    /// GETs `url` as JSON, with retries.
    async fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        headers: &[(&'static str, &'static str)],
        deadline: Deadline,
    ) -> Result<T, GraphError> {
        let body = self
            .with_retries(url, deadline, || self.get_once(url, headers, deadline))
            .await?;
        serde_json::from_slice(&body).map_err(|e| GraphError::Json {
            url: url.to_string(),
            message: e.to_string(),
        })
    }

    /// One GET with the current access token.
    async fn get_once(
        &self,
        url: &str,
        headers: &[(&'static str, &'static str)],
        deadline: Deadline,
    ) -> Result<Vec<u8>, Attempt> {
        let token = self.access_token(deadline).await.map_err(Attempt::Fail)?;
        let mut request = self
            .http
            .get(url)
            .bearer_auth(token.expose())
            .header("accept", "application/json");
        for (name, value) in headers {
            request = request.header(*name, HeaderValue::from_static(value));
        }
        let (status, headers, body) = self.send(url, request, deadline).await?;
        match status {
            s if s.is_success() => Ok(body),
            StatusCode::UNAUTHORIZED => {
                // The token may have been revoked or expired early: get a new one.
                *self.token.lock().await = None;
                Err(Attempt::Retry {
                    error: self.status_error(url, status, &body),
                    retry_after: None,
                })
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                Err(self.throttled_attempt(url, status, &headers))
            }
            _ => Err(self.status_error(url, status, &body).into()),
        }
    }

    fn throttled_attempt(&self, url: &str, status: StatusCode, headers: &HeaderMap) -> Attempt {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        let retry_after = retry_after(headers);
        Attempt::Retry {
            error: GraphError::Throttled {
                url: url.to_string(),
                status: status.as_u16(),
                retry_after,
                reason: "on every attempt",
            },
            retry_after,
        }
    }

    fn status_error(&self, url: &str, status: StatusCode, body: &[u8]) -> GraphError {
        let code = serde_json::from_slice::<GraphErrorBody>(body)
            .ok()
            .and_then(|b| b.error.code)
            .map(|c| truncate(&c, 80));
        GraphError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            code,
        }
    }

    /// Sends `request` and reads the body under the cap, within the per-request timeout and
    /// what is left of the deadline.
    async fn send(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
        deadline: Deadline,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), Attempt> {
        let budget = self.timeout.min(deadline.remaining());
        self.requests.fetch_add(1, Ordering::Relaxed);
        let exchange = async {
            let mut response = request.send().await.map_err(|e| transport(url, &e))?;
            let status = response.status();
            let headers = response.headers().clone();
            let too_large = || GraphError::TooLarge {
                url: url.to_string(),
                limit: self.max_response_bytes,
            };
            if response
                .content_length()
                .is_some_and(|l| l > self.max_response_bytes as u64)
            {
                return Err(too_large());
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| transport(url, &e))? {
                if body.len() + chunk.len() > self.max_response_bytes {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, headers, body))
        };
        match tokio::time::timeout(budget, exchange).await {
            Ok(Ok(answer)) => {
                tracing::debug!(
                    url,
                    status = answer.0.as_u16(),
                    bytes = answer.2.len(),
                    "Graph answered"
                );
                Ok(answer)
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) if deadline.remaining().is_zero() => Err(Attempt::Fail(deadline.expired())),
            Err(_) => Err(Attempt::Retry {
                error: GraphError::Transport {
                    url: url.to_string(),
                    message: format!("no complete answer within {budget:?}"),
                },
                retry_after: None,
            }),
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, the retries are used up, or the
    /// next wait would end past the deadline. Never starts an attempt before the wait
    /// Graph asked for is over.
    async fn with_retries<T, Fut>(
        &self,
        url: &str,
        deadline: Deadline,
        mut attempt: impl FnMut() -> Fut,
    ) -> Result<T, GraphError>
    where
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let mut attempts = 0u32;
        loop {
            if deadline.remaining().is_zero() {
                return Err(deadline.expired());
            }
            attempts += 1;
            let (error, asked) = match attempt().await {
                Ok(v) => return Ok(v),
                Err(Attempt::Fail(e)) => return Err(e),
                Err(Attempt::Retry { error, retry_after }) => (error, retry_after),
            };
            if attempts > self.max_retries {
                return Err(GraphError::RetriesExhausted {
                    attempts,
                    last: Box::new(error),
                });
            }
            let wait = backoff(attempts).max(asked.unwrap_or_default());
            if wait >= deadline.remaining() {
                return Err(match error {
                    GraphError::Throttled {
                        url,
                        status,
                        retry_after,
                        ..
                    } => GraphError::Throttled {
                        url,
                        status,
                        retry_after,
                        reason: "past the sync deadline",
                    },
                    _ => deadline.expired(),
                });
            }
            tracing::warn!(url, attempt = attempts, wait_ms = wait.as_millis() as u64, error = %error, "Graph request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// The cached access token, or a new one when it is missing or close to expiry.
    async fn access_token(&self, deadline: Deadline) -> Result<Secret, GraphError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(t.token.clone());
        }
        let fresh = self
            .with_retries(&self.token_url, deadline, || self.token_once(deadline))
            .await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// One client credentials request.
    async fn token_once(&self, deadline: Deadline) -> Result<CachedToken, Attempt> {
        let url = self.token_url.as_str();
        let auth = self
            .credential
            .client_auth(&self.client_id, url)
            .map_err(Attempt::Fail)?;
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("client_id", &self.client_id)
                .append_pair("scope", &self.scope)
                .append_pair("grant_type", "client_credentials");
            match &auth {
                ClientAuth::Secret(s) => form.append_pair("client_secret", s.expose()),
                ClientAuth::Assertion(a) => form
                    .append_pair("client_assertion_type", JWT_BEARER_ASSERTION)
                    .append_pair("client_assertion", a.expose()),
            };
            form.finish()
        };
        let request = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        let (status, headers, body) = self.send(url, request, deadline).await?;
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            return Err(self.throttled_attempt(url, status, &headers));
        }
        if status.is_server_error() {
            return Err(self.status_error(url, status, &body).into());
        }
        if !status.is_success() {
            let refusal = serde_json::from_slice::<TokenErrorBody>(&body).ok();
            let field = |f: fn(&TokenErrorBody) -> Option<&String>| {
                refusal
                    .as_ref()
                    .and_then(f)
                    .map_or_else(|| "-".to_string(), |s| truncate(s, MAX_DESCRIPTION_CHARS))
            };
            return Err(Attempt::Fail(GraphError::TokenRefused {
                url: url.to_string(),
                status: status.as_u16(),
                code: field(|b| b.error.as_ref()),
                description: field(|b| b.error_description.as_ref()),
            }));
        }
        // Only the shape is reported: a serde message could quote the token.
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            Attempt::Fail(GraphError::TokenResponse {
                url: url.to_string(),
                message: format!(
                    "not a token response ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            })
        })?;
        self.tokens_fetched.fetch_add(1, Ordering::Relaxed);
        let lifetime = Duration::from_secs(parsed.expires_in);
        let margin = MAX_REFRESH_MARGIN.min(lifetime / 2);
        tracing::debug!(
            expires_in = parsed.expires_in,
            credential = %self.credential.describe(),
            "obtained a Graph access token"
        );
        Ok(CachedToken {
            token: Secret::new(parsed.access_token),
            refresh_at: Instant::now() + lifetime - margin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        assert_eq!(
            httpdate_seconds("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter_and_a_ceiling() {
        for attempt in 1..=12 {
            let expected = BASE_BACKOFF
                .saturating_mul(1 << (attempt - 1))
                .min(MAX_BACKOFF);
            let b = backoff(attempt);
            assert!(
                b >= expected && b <= expected.mul_f64(1.25),
                "{attempt}: {b:?}"
            );
        }
    }

    #[test]
    fn long_descriptions_are_cut_to_their_first_line() {
        assert_eq!(
            truncate("AADSTS7000215: bad\nTrace ID: x", 100),
            "AADSTS7000215: bad"
        );
        assert_eq!(truncate("abcdef", 3), "abc...");
    }
}
