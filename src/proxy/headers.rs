//! The trusted identity headers: strip every inbound `x-agentgate-*`, then add ours.

use crate::authorize::{Allowed, Authenticated};
use pingora::http::RequestHeader;
use pingora::Result;

/// Prefix of every header the gateway vouches for.
pub const PREFIX: &str = "x-agentgate-";

/// Removes every header whose name starts with `x-agentgate-` (any case; header names are
/// stored lower-case), so a client can never pose as the gateway.
pub fn strip_identity_headers(req: &mut RequestHeader) {
    let spoofed: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|n| n.as_str().starts_with(PREFIX))
        .cloned()
        .collect();
    for name in spoofed {
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
    req.insert_header("x-agentgate-decision-id", decision_id)?;
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
