//! Routing: host and longest path prefix to a route and its upstreams.

use crate::authorize::RouteAccess;
use crate::config::RouteConfig;
use crate::policy::input::RouteInput;
use crate::tls::UpstreamTls;
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

/// Routes ordered for matching: longest prefix first, host-specific before any-host.
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

/// Why a request path is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidPath;

impl RouteTable {
    /// Builds the table; fails if an upstream list cannot form a balancer or a route's
    /// upstream TLS files are unusable (an `InvalidData` error naming the route).
    pub fn new(configs: &[RouteConfig]) -> std::io::Result<Self> {
        let mut routes = Vec::with_capacity(configs.len());
        for c in configs {
            let upstreams = LoadBalancer::try_from_iter(c.upstreams.iter().map(|a| a.to_string()))?;
            let tls = match &c.tls {
                Some(t) => Some(Arc::new(UpstreamTls::load(&c.id, t).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                })?)),
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

    /// The route for `host` (port stripped, any case) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        let host = strip_port(host);
        self.routes.iter().find(|r| {
            (r.config.hosts.is_empty()
                || r.config.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)))
                && prefix_matches(&r.config.path_prefix, path)
        })
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// `/orders` matches `/orders` and `/orders/...` but not `/ordersx`; a prefix ending in `/`
/// matches everything below it.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Refuses paths an upstream might resolve differently from the gateway: dot segments,
/// encoded dots and slashes, and backslashes. Without this `/orders/../admin` would be
/// authorised as `/orders` and served as `/admin`.
pub fn check_path(path: &str) -> Result<(), InvalidPath> {
    if !path.starts_with('/') || path.contains('\\') {
        return Err(InvalidPath);
    }
    let lower_has = |needle: &str| {
        path.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    };
    if lower_has("%2e") || lower_has("%2f") || lower_has("%5c") || lower_has("%00") {
        return Err(InvalidPath);
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(InvalidPath);
    }
    Ok(())
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

    #[test]
    fn traversal_and_encoded_separators_are_refused() {
        for bad in [
            "/orders/../admin",
            "/orders/./x",
            "/orders/%2e%2e/admin",
            "/a%2Fb",
            "/a\\b",
            "x",
        ] {
            assert_eq!(check_path(bad), Err(InvalidPath), "{bad}");
        }
        assert_eq!(check_path("/orders/42"), Ok(()));
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("api.example:8080"), "api.example");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("api.example"), "api.example");
    }
}
