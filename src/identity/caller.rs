//! Caller classification: which kind of Entra token this is and who stands behind it.
//!
//! Pure: it reads validated claims and decides, following the procedure of the Entra Agent ID
//! token reference (facet 11 = AgentIdentity, 13 = AgentIDUser, `xms_par_app_azp` = the
//! blueprint's app id). Facets are parsed as integer sets; only 11 and 13 carry meaning and
//! any other value is kept for policy but never interpreted. Garbled agent claims fail closed.

use super::claims::Claims;
use super::TokenError;
use crate::guid::is_guid;
use std::sync::Arc;

/// The kind of caller a token represents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallerKind {
    /// An agent identity acting as itself (app-only agent token).
    AgentApp,
    /// An agent identity acting on behalf of a human user.
    AgentObo,
    /// An agent identity acting through its agent user account.
    AgentUser,
    /// A classic application (daemon, service).
    App,
    /// A classic client acting for a human user.
    User,
    /// A classic middle tier acting on behalf of an agent user.
    AppOboAgentUser,
}

impl CallerKind {
    /// Every kind, for metrics and documentation.
    pub const ALL: [CallerKind; 6] = [
        Self::AgentApp,
        Self::AgentObo,
        Self::AgentUser,
        Self::App,
        Self::User,
        Self::AppOboAgentUser,
    ];

    /// The stable name used in policy input, headers, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgentApp => "agent_app",
            Self::AgentObo => "agent_obo",
            Self::AgentUser => "agent_user",
            Self::App => "app",
            Self::User => "user",
            Self::AppOboAgentUser => "app_obo_agent_user",
        }
    }

    /// Parses a stable name back into a kind.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// True for the three kinds whose actor is an agent identity.
    pub fn is_agent(self) -> bool {
        matches!(self, Self::AgentApp | Self::AgentObo | Self::AgentUser)
    }

    /// True for kinds that carry delegated scopes (`scp`) rather than app roles.
    pub fn is_delegated(self) -> bool {
        !matches!(self, Self::AgentApp | Self::App)
    }
}

/// Facet values from `xms_act_fct`, `xms_sub_fct` and `xms_tnt_fct`, sorted and deduplicated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facets {
    pub actor: Vec<u32>,
    pub subject: Vec<u32>,
    pub tenant: Vec<u32>,
}

/// Facet value for an agent identity.
const AGENT_IDENTITY: u32 = 11;
/// Facet value for an agent user.
const AGENT_USER: u32 = 13;

/// Who is calling, identified by (tenant, id) pairs.
#[derive(Debug, Clone)]
pub struct Caller {
    pub kind: CallerKind,
    pub tenant: Arc<str>,
    /// The client application: `appid` (v1) or `azp` (v2). For agents, the agent identity.
    pub actor_id: Arc<str>,
    /// The token subject's object id (`oid`).
    pub subject_id: Arc<str>,
    /// The blueprint app id from `xms_par_app_azp`, for agent kinds.
    pub blueprint_id: Option<Arc<str>>,
    pub facets: Facets,
}

impl Caller {
    /// The agent identity id, for agent kinds.
    pub fn agent_id(&self) -> Option<&str> {
        self.kind.is_agent().then_some(&*self.actor_id)
    }

    /// The user the call is made for (a human or an agent user), for delegated kinds.
    pub fn user_oid(&self) -> Option<&str> {
        self.kind.is_delegated().then_some(&*self.subject_id)
    }
}

/// Parses a space-separated facet claim into a sorted set; anything but plain decimal
/// digits (a sign, say, which `u32::from_str` would take) fails it.
pub fn parse_facets(claim: Option<&str>) -> Result<Vec<u32>, TokenError> {
    let mut out = Vec::new();
    for part in claim.unwrap_or("").split_ascii_whitespace() {
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TokenError::MalformedAgentClaims);
        }
        out.push(
            part.parse::<u32>()
                .map_err(|_| TokenError::MalformedAgentClaims)?,
        );
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Classifies a claims document without verifying anything: for tools that explain a token
/// (`token decode`) and for benchmarks. The gateway itself only classifies verified tokens.
pub fn classify_unverified(claims_json: &[u8]) -> Result<Caller, TokenError> {
    let claims: Claims = super::claims::from_json_object(claims_json)?;
    let tenant: Arc<str> = Arc::from(claims.tid.as_deref().ok_or(TokenError::MissingClaim)?);
    let actor = match claims.ver.as_deref() {
        Some("1.0") => claims.appid.as_deref(),
        _ => claims.azp.as_deref(),
    }
    .ok_or(TokenError::MissingClaim)?;
    let subject = claims.oid.as_deref().ok_or(TokenError::MissingClaim)?;
    classify(&claims, &tenant, actor, subject)
}

/// Classifies validated claims. `actor_id` is the version-appropriate client id.
pub(crate) fn classify(
    claims: &Claims,
    tenant: &Arc<str>,
    actor_id: &str,
    subject_id: &str,
) -> Result<Caller, TokenError> {
    let facets = Facets {
        actor: parse_facets(claims.xms_act_fct.as_deref())?,
        subject: parse_facets(claims.xms_sub_fct.as_deref())?,
        tenant: parse_facets(claims.xms_tnt_fct.as_deref())?,
    };
    let act_agent = facets.actor.binary_search(&AGENT_IDENTITY).is_ok();
    let sub_agent = facets.subject.binary_search(&AGENT_IDENTITY).is_ok();
    let sub_agent_user = facets.subject.binary_search(&AGENT_USER).is_ok();
    let idtyp_app = claims.idtyp.as_deref() == Some("app");
    let parent = claims.xms_par_app_azp.as_deref();

    let (kind, blueprint_id) = if act_agent || parent.is_some() {
        // An agent actor must name its blueprint; without one, blueprint-wide rules
        // could not apply, so the token is refused rather than treated as a plain app.
        let parent = match parent {
            Some(p) if is_guid(p) => p,
            _ => return Err(TokenError::MalformedAgentClaims),
        };
        if !act_agent {
            return Err(TokenError::MalformedAgentClaims);
        }
        let kind = if sub_agent_user {
            CallerKind::AgentUser
        } else if idtyp_app || (sub_agent && subject_id == actor_id) {
            // App-only agent tokens have subject = actor = the agent identity.
            if subject_id != actor_id {
                return Err(TokenError::MalformedAgentClaims);
            }
            CallerKind::AgentApp
        } else {
            CallerKind::AgentObo
        };
        (kind, Some(Arc::from(parent.to_ascii_lowercase())))
    } else if sub_agent_user {
        (CallerKind::AppOboAgentUser, None)
    } else if idtyp_app || (claims.roles.is_some() && claims.scp.is_none()) {
        (CallerKind::App, None)
    } else {
        (CallerKind::User, None)
    };

    Ok(Caller {
        kind,
        tenant: tenant.clone(),
        actor_id: Arc::from(actor_id),
        subject_id: Arc::from(subject_id),
        blueprint_id,
        facets,
    })
}

#[cfg(test)]
mod tests;
