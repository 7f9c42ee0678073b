//! What one request carries from phase to phase.

use super::respond::Dialect;
use super::streams::Stream;
use crate::authorize::{Authenticated, ShadowVerdict};
use crate::outcome::{grpc_status_for, Outcome, UpstreamFailure};
use crate::routes::Route;
use crate::snapshot::Snapshot;
use std::sync::Arc;
use std::time::Instant;

/// Per-request facts carried between phases.
pub struct RequestCtx {
    pub(super) started: Instant,
    pub(super) decision_id: String,
    /// The snapshot this request is routed and decided by, loaded once when it starts.
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) route: Option<Arc<Route>>,
    pub(super) caller: Option<Arc<Authenticated>>,
    /// What the gateway decided, once it has.
    pub(super) outcome: Option<Outcome>,
    /// Why an allowed request got no answer from its upstream.
    pub(super) upstream_failure: Option<UpstreamFailure>,
    /// When the request left for the upstream.
    pub(super) forwarded_at: Option<Instant>,
    pub(super) tries: usize,
    /// The shadow verdict and whether it differs from the enforced one.
    pub(super) shadow: Option<(ShadowVerdict, bool)>,
    /// This request's position on its connection (1 for the first).
    pub(super) nth_on_connection: u32,
    /// The origin-form target and host to send upstream instead of the ones received: set
    /// when the path was normalised or the target came in absolute form.
    pub(super) upstream_target: Option<(String, String)>,
    /// Request body bytes received so far (counted against the route's `max_body_bytes`).
    pub(super) body_bytes: u64,
    /// The client: the peer, or the address trusted proxies name (see `request::client`).
    pub(super) client_ip: Option<std::net::IpAddr>,
    /// The `grpc-status` the upstream answered with (gRPC routes).
    pub(super) grpc_status: Option<GrpcStatus>,
    /// The descriptor of the upstream connection, while the request is using it.
    pub(super) upstream_fd: Option<std::os::fd::RawFd>,
    /// Set when the request is a registered long-lived stream.
    pub(super) stream: Option<Stream>,
}

/// A `grpc-status` as an upstream sent it: a code, or something that is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcStatus {
    Code(u8),
    Invalid,
}

impl GrpcStatus {
    /// Reads a `grpc-status` header value.
    pub fn parse(value: &http::HeaderValue) -> Self {
        match value.to_str().ok().and_then(|v| v.parse::<u8>().ok()) {
            Some(code) if code <= 16 => Self::Code(code),
            _ => Self::Invalid,
        }
    }

    /// A closed metric label: `0` to `16`, or `invalid`.
    pub fn label(self) -> &'static str {
        const CODES: [&str; 17] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16",
        ];
        match self {
            Self::Code(code) => CODES[usize::from(code)],
            Self::Invalid => "invalid",
        }
    }
}

impl RequestCtx {
    /// The reason code the request ends with: the upstream failure's, else the outcome's.
    pub(super) fn reason(&self) -> &str {
        match (&self.upstream_failure, &self.outcome) {
            (Some(f), _) => f.reason(),
            (None, Some(o)) => o.reason(),
            (None, None) => "",
        }
    }

    /// How the gateway's own answers are shaped: gRPC on gRPC routes.
    pub(super) fn dialect(&self) -> Dialect {
        match &self.route {
            Some(route) if route.config.grpc => Dialect::Grpc,
            _ => Dialect::Http,
        }
    }

    /// The `grpc-status` the client got on a gRPC route: the gateway's for its own
    /// answers (a stream the guard ended included), else the upstream's valid one.
    pub(super) fn grpc_status_sent(&self) -> Option<u8> {
        if self.dialect() != Dialect::Grpc {
            return None;
        }
        if let Some(cause) = self.stream.as_ref().and_then(|s| s.closed()) {
            return Some(grpc_status_for(cause.status()));
        }
        match (&self.upstream_failure, &self.outcome) {
            (Some(f), _) => Some(grpc_status_for(f.status())),
            (None, Some(Outcome::Refused(r))) => Some(r.grpc_status()),
            _ => match self.grpc_status {
                Some(GrpcStatus::Code(code)) => Some(code),
                _ => None,
            },
        }
    }

    pub(super) fn allowed(&self) -> bool {
        matches!(self.outcome, Some(Outcome::Allowed(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_statuses_are_codes_or_invalid() {
        let parse = |v: &'static str| GrpcStatus::parse(&http::HeaderValue::from_static(v));
        assert_eq!(parse("0"), GrpcStatus::Code(0));
        assert_eq!(parse("16").label(), "16");
        assert_eq!(parse("17"), GrpcStatus::Invalid);
        assert_eq!(parse("-1"), GrpcStatus::Invalid);
        assert_eq!(parse("ok").label(), "invalid");
    }
}
