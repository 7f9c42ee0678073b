//! Matching a caller to its directory entries.

use super::{AgentIdentity, AgentUser, Blueprint, Directory};
use crate::identity::{Caller, CallerKind};

/// The directory entries that describe a caller; `None` means not listed (unknown).
#[derive(Debug, Clone, Copy, Default)]
pub struct Resolution<'d> {
    pub blueprint: Option<&'d Blueprint>,
    pub agent: Option<&'d AgentIdentity>,
    pub agent_user: Option<&'d AgentUser>,
}

/// The directory and the token disagree about who the caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Occurs when the agent's directory entry names another blueprint than `xms_par_app_azp`.
    #[error("the directory lists this agent under another blueprint than the token names")]
    BlueprintMismatch,
    /// Occurs when the agent user's directory entry names another parent agent than the actor.
    #[error("the directory lists this agent user under another agent than the token's actor")]
    AgentUserMismatch,
}

impl ResolveError {
    /// The stable reason code.
    pub fn reason(self) -> &'static str {
        match self {
            Self::BlueprintMismatch => "blueprint_mismatch",
            Self::AgentUserMismatch => "agent_user_mismatch",
        }
    }
}

impl Directory {
    /// Finds the caller's blueprint, agent and agent user entries. Entries restricted to
    /// another tenant do not apply (ids are keyed by tenant and id).
    pub fn resolve(&self, caller: &Caller) -> Result<Resolution<'_>, ResolveError> {
        let in_tenant = |t: &Option<String>| t.as_deref().is_none_or(|t| t == &*caller.tenant);
        let mut out = Resolution::default();
        if let Some(bp) = caller.blueprint_id.as_deref() {
            out.blueprint = self.blueprints.get(bp).filter(|b| in_tenant(&b.tenant));
        }
        if let Some(agent_id) = caller.agent_id() {
            out.agent = self.agents.get(agent_id).filter(|a| in_tenant(&a.tenant));
            if let (Some(agent), Some(bp)) = (out.agent, caller.blueprint_id.as_deref()) {
                if agent.blueprint != bp {
                    return Err(ResolveError::BlueprintMismatch);
                }
            }
        }
        if matches!(
            caller.kind,
            CallerKind::AgentUser | CallerKind::AppOboAgentUser
        ) {
            out.agent_user = self.agent_users.get(&*caller.subject_id);
            if caller.kind == CallerKind::AgentUser {
                if let Some(u) = out.agent_user {
                    if u.parent_agent != *caller.actor_id {
                        return Err(ResolveError::AgentUserMismatch);
                    }
                }
            }
        }
        Ok(out)
    }
}
