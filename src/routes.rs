//! Routing: host and longest path prefix to a route, its upstreams and what it accepts.
//!
//! The table is part of every snapshot, built by the same reload that builds the policy
//! set, so a request is routed and decided by one set.

use crate::config::RouteConfig;
use crate::policy::input::RouteInput;
use crate::tls::{TlsError, UpstreamTls};
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use std::sync::Arc;

/// One configured route, ready to serve.
pub struct Route {
    pub id: Arc<str>,
    pub config: RouteConfig,
    pub access: RouteAccess,
    pub upstreams: LoadBalancer<RoundRobin>,
    /// Set when the upstreams are `https://`.
    pub tls: Option<Arc<UpstreamTls>>,
}

/// What a route accepts, as the decision pipeline needs it.
#[derive(Debug)]
pub struct RouteAccess {
    /// Accepted `aud` values, without trailing slash.
    pub audiences: Vec<String>,
    /// The route part of the policy input, prepared once.
    pub input: RouteInput,
}

/// Why a route table could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    #[error("route {route}: its upstreams cannot form a balancer")]
    Balancer {
        route: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Routes ordered for matching: longest prefix first, host-specific before any-host.
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// Builds the table, reading each route's upstream TLS files.
    pub fn new(configs: &[RouteConfig]) -> Result<Self, RouteError> {
        let mut routes = Vec::with_capacity(configs.len());
        for c in configs {
            let upstreams = LoadBalancer::try_from_iter(c.upstreams.iter().map(|a| a.to_string()))
                .map_err(|source| RouteError::Balancer {
                    route: c.id.clone(),
                    source,
                })?;
            let tls = match &c.tls {
                Some(t) => Some(Arc::new(UpstreamTls::load(&c.id, t)?)),
                None => None,
            };
            routes.push(Arc::new(Route {
                id: Arc::from(c.id.as_str()),
                access: RouteAccess {
                    audiences: c.audiences.clone(),
                    input: RouteInput::new(&c.id, &c.path_prefix),
                },
                config: c.clone(),
                upstreams,
                tls,
            }));
        }
        routes.sort_by_key(|r| {
            (
                std::cmp::Reverse(r.config.path_prefix.len()),
                r.config.hosts.is_empty(),
            )
        });
        Ok(Self { routes })
    }

    /// Every route, in matching order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    /// The route for `host` (a name without port, any case) and the normalised `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| {
            (r.config.hosts.is_empty()
                || r.config.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)))
                && prefix_matches(&r.config.path_prefix, path)
        })
    }

    /// Routes whose upstream certificates are not verified (`insecure_skip_verify`).
    pub fn unverified_upstreams(&self) -> impl Iterator<Item = &str> {
        self.routes
            .iter()
            .filter(|r| r.tls.as_ref().is_some_and(|t| t.insecure_skip_verify()))
            .map(|r| &*r.id)
    }
}

/// `/orders` matches `/orders` and `/orders/...` but not `/ordersx`; a prefix ending in `/`
/// matches everything below it.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/orders", "/orders"));
        assert!(prefix_matches("/orders", "/orders/42"));
        assert!(!prefix_matches("/orders", "/ordersx"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api/", "/api/x"));
    }
}
