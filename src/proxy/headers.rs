//! The trusted identity headers: strip every inbound `x-agentgate-*`, then add ours.
//!
//! CGI, WSGI, Rack and several Java servers fold `_` and `-` together (and case), so
//! `x_agentgate_user_oid` reads upstream as `X-Agentgate-User-Oid`. Inbound names are
//! therefore compared with `_` read as `-`. Method and URL override headers, which make an
//! upstream act on another method or path than the one authorised, are stripped too unless
//! the route opts in. Upgrade offers the gateway does not forward are dropped here too.

use super::decision_id;
use crate::authorize::Authenticated;
use crate::outcome::Allowed;
use pingora::http::RequestHeader;
use pingora::Result;

/// Prefix of every header the gateway vouches for.
pub const PREFIX: &str = "x-agentgate-";

/// Headers that make common frameworks act on another method or URL than the request's.
const OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-method",
];

/// `name` as servers that fold `_` into `-` read it (header names are stored lower-case).
fn folds_to(name: &str, target: &str) -> bool {
    name.len() >= target.len()
        && name
            .bytes()
            .zip(target.bytes())
            .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
}

/// True when an upstream could read `name` as one of the gateway's identity headers.
pub fn is_identity_header(name: &str) -> bool {
    folds_to(name, PREFIX)
}

/// True when an upstream could read `name` as a method or URL override.
pub fn is_override_header(name: &str) -> bool {
    OVERRIDE_HEADERS
        .iter()
        .any(|h| name.len() == h.len() && folds_to(name, h))
}

/// Removes every header an upstream could read as `x-agentgate-*` (any case, `_` for `-`),
/// so a client can never pose as the gateway, and, unless `keep_overrides`, every method or
/// URL override header.
pub fn strip_inbound_headers(req: &mut RequestHeader, keep_overrides: bool) {
    let unwanted: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|n| {
            is_identity_header(n.as_str()) || (!keep_overrides && is_override_header(n.as_str()))
        })
        .cloned()
        .collect();
    for name in unwanted {
        req.remove_header(&name);
    }
}

/// Adds the identity headers of an allowed request, and the policy's own headers.
pub fn add_identity_headers(
    req: &mut RequestHeader,
    decision_id: &str,
    caller: &Authenticated,
    allowed: &Allowed,
) -> Result<()> {
    let c = &caller.token.caller;
    req.insert_header(decision_id::HEADER, decision_id::header_value(decision_id)?)?;
    req.insert_header("x-agentgate-caller-kind", c.kind.as_str())?;
    req.insert_header("x-agentgate-tenant", &*c.tenant)?;
    req.insert_header("x-agentgate-client-id", &*c.actor_id)?;
    if let Some(agent) = c.agent_id() {
        req.insert_header("x-agentgate-agent-id", agent)?;
    }
    if let Some(bp) = &c.blueprint_id {
        req.insert_header("x-agentgate-blueprint-id", &**bp)?;
    }
    if let Some(user) = c.user_oid() {
        req.insert_header("x-agentgate-user-oid", user)?;
    }
    for (n, v) in &allowed.headers {
        req.insert_header(n.clone(), v.clone())?;
    }
    Ok(())
}

/// Drops an upgrade offer the gateway does not forward (see [`crate::request::upgrade`]),
/// keeping the other `Connection` options.
pub fn drop_upgrade_offer(req: &mut RequestHeader) -> Result<()> {
    let connection = crate::request::upgrade::connection_without_offer(&req.headers);
    for name in &crate::request::upgrade::OFFER_HEADERS {
        req.remove_header(name);
    }
    req.remove_header(&http::header::CONNECTION);
    if let Some(value) = connection {
        req.insert_header(http::header::CONNECTION, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_an_upstream_would_fold_into_ours_are_recognised() {
        for n in [
            "x-agentgate-user-oid",
            "x_agentgate_user_oid",
            "x-agentgate_agent-id",
            "x_agentgate-",
            "x-agentgate-",
        ] {
            assert!(is_identity_header(n), "{n}");
        }
        for n in [
            "x-agentgatex",
            "x-agent-gate-id",
            "agentgate-user",
            "x-agentgat",
        ] {
            assert!(!is_identity_header(n), "{n}");
        }
        for n in [
            "x-http-method-override",
            "x_http_method_override",
            "x-original-url",
            "x_rewrite_url",
            "x-http-method",
        ] {
            assert!(is_override_header(n), "{n}");
        }
        for n in ["x-http-method-overrides", "x-original", "x-url"] {
            assert!(!is_override_header(n), "{n}");
        }
    }
}
