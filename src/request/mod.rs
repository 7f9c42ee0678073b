//! What the gateway reads of a request before anything else, transport-free so the proxy
//! and `agentgate eval` apply the very same rules: its framing ([`framing`]), and its target,
//! read once and one way: the path the gateway routes, the policy sees and the upstream
//! receives ([`path`]), and the host ([`host`]); who the client is ([`client`]); and the
//! protocol upgrade it asks for ([`upgrade`]).

pub mod client;
pub mod framing;
pub mod host;
pub mod path;
pub mod upgrade;

pub use host::{host_name, request_host, HostError};
pub use path::{normalize, PathError};

use http::{HeaderMap, Uri, Version};
use std::borrow::Cow;

/// A request target that passed the discipline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// Canonical `host[:port]` (see [`host`]).
    pub host: Cow<'a, str>,
    /// The normalised path (see [`path`]).
    pub path: Cow<'a, str>,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    /// True when the upstream must be sent another target than the one received: the path
    /// was normalised, or the target was in absolute form.
    pub rewritten: bool,
}

/// Why a request target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the request target is longer than {0} bytes")]
    TooLong(usize),
    #[error("the request target is not UTF-8")]
    NotUtf8,
    #[error("path: {0}")]
    Path(#[from] PathError),
    #[error("host: {0}")]
    Host(#[from] HostError),
}

/// Reads a request's target: `uri` and `raw_target` as pingora parsed and kept them (an
/// absolute-form target only survives in `raw_target`), refused when `raw_target` is longer
/// than `max_uri_bytes`.
pub fn read<'a>(
    uri: &'a Uri,
    raw_target: &'a [u8],
    raw_is_utf8: bool,
    headers: &'a HeaderMap,
    version: Version,
    max_uri_bytes: usize,
) -> Result<Target<'a>, TargetError> {
    if raw_target.len() > max_uri_bytes {
        return Err(TargetError::TooLong(max_uri_bytes));
    }
    if !raw_is_utf8 {
        return Err(TargetError::NotUtf8);
    }
    let host = request_host(uri, raw_target, headers, version)?;
    let path = normalize(uri.path())?;
    let rewritten = matches!(path, Cow::Owned(_)) || !raw_target.starts_with(b"/");
    Ok(Target {
        host,
        path,
        query: uri.query().unwrap_or(""),
        rewritten,
    })
}

impl Target<'_> {
    /// The host name without its port, for route matching.
    pub fn host_name(&self) -> &str {
        host_name(&self.host)
    }

    /// The origin-form target to send upstream: the normalised path and the query.
    pub fn origin_form(&self) -> String {
        if self.query.is_empty() {
            self.path.to_string()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}
