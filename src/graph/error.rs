//! Why reading the directory from Graph failed. No variant ever carries a secret, an
//! assertion or an access token: messages name the URL, the status and Entra's error code.

use crate::directory::DirectoryError;
use std::time::Duration;

/// Why a Graph read (or the token request before it) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// Occurs when the configured credential cannot be read or used (file, variable,
    /// certificate or key); the message never includes the credential.
    #[error("credential: {0}")]
    Credential(String),
    /// Occurs when the extra trust roots or the HTTP client cannot be set up.
    #[error("HTTP client: {0}")]
    Client(String),
    /// Occurs when the token endpoint refuses the credential (Entra's `error` code and
    /// description, e.g. `invalid_client` / `AADSTS7000215`).
    #[error("token endpoint {url} refused the credential: HTTP {status} {code}: {description}")]
    TokenRefused {
        url: String,
        status: u16,
        code: String,
        description: String,
    },
    /// Occurs when the token endpoint answers something that is not a token.
    #[error("token endpoint {url}: {message}")]
    TokenResponse { url: String, message: String },
    /// Occurs when the connection fails, breaks, or a request outlives its timeout.
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    /// Occurs when Graph answers with an error status that retrying does not fix.
    #[error("GET {url}: HTTP {status}{}", code.as_ref().map(|c| format!(" {c}")).unwrap_or_default())]
    Status {
        url: String,
        status: u16,
        code: Option<String>,
    },
    /// Occurs when a response body exceeds `max_response_bytes`.
    #[error("{url}: response larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    /// Occurs when a response is not the JSON shape Graph documents.
    #[error("{url}: invalid response: {message}")]
    Json { url: String, message: String },
    /// Occurs when Graph keeps throttling past the retries, or asks to wait past the sync
    /// deadline.
    #[error("{url}: throttled (HTTP {status}, Retry-After {retry_after:?}) {reason}")]
    Throttled {
        url: String,
        status: u16,
        retry_after: Option<Duration>,
        reason: &'static str,
    },
    /// Occurs when retries are exhausted; `last` is the final failure.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        attempts: u32,
        last: Box<GraphError>,
    },
    /// Occurs when the whole sync outlives `sync_timeout`.
    #[error("sync deadline of {limit:?} reached")]
    Deadline { limit: Duration },
    /// Occurs when `@odata.nextLink` points outside the configured Graph origin.
    #[error("{url}: @odata.nextLink leaves the Graph origin {origin} (points to {target})")]
    ForeignNextLink {
        url: String,
        origin: String,
        target: String,
    },
    /// Occurs when objects Graph returned cannot be mapped (ids that are not GUIDs, a
    /// missing blueprint reference); every problem is listed.
    #[error("Graph returned objects that cannot be used:\n  - {}", problems.join("\n  - "))]
    Mapping { problems: Vec<String> },
    /// Occurs when the sync's metrics cannot be created.
    #[error("metrics: {0}")]
    Metrics(String),
    /// Occurs when the merged directory does not validate.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

impl GraphError {
    /// True for failures that may pass on their own: transport errors, timeouts, 5xx.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}
