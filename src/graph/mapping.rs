//! From Graph objects to directory entries.
//!
//! | directory | Graph |
//! |---|---|
//! | blueprint (key: `appId`) | `agentIdentityBlueprintPrincipal`: `displayName`, `disabled` = not `accountEnabled` or disabled by Microsoft, `publisherName`, `appOwnerOrganizationId` (home tenant) |
//! | agent (key: `id`) | `agentIdentity`: `displayName`, `agentIdentityBlueprintId` (the blueprint's appId), `enabled` = `accountEnabled` and not disabled by Microsoft, `sponsors` (users and groups) |
//! | agent user (key: `id`) | `agentUser`: `identityParentId`, `displayName`, `userPrincipalName`, `accountEnabled`; the parent agent's `agent_user` points back |
//! | `risk`, `risk_state` | `riskyAgents` entry with the same object id (a blueprint principal's id leads to its appId) |
//!
//! Fail closed: `accountEnabled` missing counts as disabled; `disabledByMicrosoftStatus`
//! anything but null or `NotDisabled` disables; a risk level of `hidden`, missing or unknown
//! reads as `high`; an unknown risk state reads as `atRisk`. Every entry carries the synced
//! tenant, so it only applies to tokens of that tenant. Ids are lower-cased; an id that is
//! not a GUID, or an agent without a blueprint, fails the whole read.

use crate::directory::{
    AgentIdentity, AgentUser, Blueprint, DirectoryFile, Risk, RiskState, Sponsor, SponsorKind,
};
use crate::guid::is_guid;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `$select` of blueprint principals.
pub const BLUEPRINT_SELECT: &str =
    "id,appId,displayName,accountEnabled,appOwnerOrganizationId,publisherName,disabledByMicrosoftStatus";
/// `$select` of agent identities.
pub const AGENT_SELECT: &str =
    "id,appId,displayName,agentIdentityBlueprintId,accountEnabled,disabledByMicrosoftStatus";
/// `$select` of sponsors, expanded or listed.
pub const SPONSOR_SELECT: &str = "id,displayName";
/// `$select` of agent users.
pub const AGENT_USER_SELECT: &str =
    "id,displayName,userPrincipalName,accountEnabled,identityParentId";
/// Graph returns at most this many objects in an expanded relationship of a directory
/// object; an agent listing this many sponsors is read again through its sponsors list.
pub const EXPAND_LIMIT: usize = 20;

/// An `agentIdentityBlueprintPrincipal`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlueprintPrincipal {
    pub id: String,
    pub app_id: Option<String>,
    pub display_name: Option<String>,
    pub account_enabled: Option<bool>,
    pub app_owner_organization_id: Option<String>,
    pub publisher_name: Option<String>,
    pub disabled_by_microsoft_status: Option<String>,
}

/// An `agentIdentity`, with its sponsors when expanded.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentIdentityObject {
    pub id: String,
    pub display_name: Option<String>,
    pub agent_identity_blueprint_id: Option<String>,
    pub account_enabled: Option<bool>,
    pub disabled_by_microsoft_status: Option<String>,
    #[serde(default)]
    pub sponsors: Vec<DirectoryObjectRef>,
    #[serde(rename = "sponsors@odata.nextLink")]
    pub sponsors_next_link: Option<String>,
}

/// A user or group (a sponsor), with its `@odata.type`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryObjectRef {
    #[serde(rename = "@odata.type")]
    pub odata_type: Option<String>,
    pub id: String,
    pub display_name: Option<String>,
}

/// An `agentUser`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentUserObject {
    pub id: String,
    pub display_name: Option<String>,
    pub user_principal_name: Option<String>,
    pub account_enabled: Option<bool>,
    pub identity_parent_id: Option<String>,
}

/// A `riskyAgent` (`riskyAgentIdentity`, `riskyAgentIdentityBlueprintPrincipal` or
/// `riskyAgentUser`): `id` is the object id of that agent object.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RiskyAgentObject {
    #[serde(rename = "@odata.type")]
    pub odata_type: Option<String>,
    pub id: String,
    pub risk_level: Option<String>,
    pub risk_state: Option<String>,
    pub is_deleted: Option<bool>,
}

/// Objects of each kind read in one sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ObjectCounts {
    pub blueprints: usize,
    pub agents: usize,
    pub agent_users: usize,
    pub risky_agents: usize,
}

/// Entra's risk level, fail closed: `hidden`, missing and unknown values are `high`.
pub fn risk_level(value: Option<&str>) -> Risk {
    match value {
        Some("none") => Risk::None,
        Some("low") => Risk::Low,
        Some("medium") => Risk::Medium,
        Some("high") => Risk::High,
        // `hidden`: the level is not disclosed to this reader; `unknownFutureValue` and
        // anything newer: not understood. Either way the entity is treated as high risk.
        _ => Risk::High,
    }
}

/// Entra's risk state; an unknown state is `atRisk` (flagged, severity unknown).
pub fn risk_state(value: Option<&str>) -> RiskState {
    match value {
        Some("none") => RiskState::None,
        Some("confirmedSafe") => RiskState::ConfirmedSafe,
        Some("remediated") => RiskState::Remediated,
        Some("dismissed") => RiskState::Dismissed,
        Some("atRisk") => RiskState::AtRisk,
        Some("confirmedCompromised") => RiskState::ConfirmedCompromised,
        _ => RiskState::AtRisk,
    }
}

/// `disabledByMicrosoftStatus` disables unless null or `NotDisabled`.
fn disabled_by_microsoft(status: Option<&str>) -> bool {
    status.is_some_and(|s| !s.eq_ignore_ascii_case("NotDisabled"))
}

/// The sponsor kind of a `@odata.type`; other types are not sponsors Entra allows.
fn sponsor_kind(odata_type: Option<&str>) -> Option<SponsorKind> {
    match odata_type? {
        "#microsoft.graph.user" => Some(SponsorKind::User),
        "#microsoft.graph.group" => Some(SponsorKind::Group),
        _ => None,
    }
}

/// Builds the Graph directory page by page, so only one page of raw objects is in memory at
/// a time.
#[derive(Debug)]
pub struct DirectoryBuilder {
    tenant: String,
    file: DirectoryFile,
    /// Blueprint principal object id -> blueprint appId (risky entries name the object).
    principal_app_ids: HashMap<String, String>,
    counts: ObjectCounts,
    problems: Vec<String>,
    skipped_sponsors: usize,
    unmatched_risk: usize,
}

/// The directory as Graph describes it, before local overrides.
#[derive(Debug, Clone, Default)]
pub struct GraphDirectory {
    pub file: DirectoryFile,
    pub counts: ObjectCounts,
}

// === impl DirectoryBuilder ===

impl DirectoryBuilder {
    /// An empty directory of `tenant`.
    pub fn new(tenant: &str) -> Self {
        Self {
            tenant: tenant.to_string(),
            file: DirectoryFile::default(),
            principal_app_ids: HashMap::new(),
            counts: ObjectCounts::default(),
            problems: Vec::new(),
            skipped_sponsors: 0,
            unmatched_risk: 0,
        }
    }

    /// A lower-case GUID, or a problem naming `what`.
    fn guid(&mut self, what: &str, id: &str) -> Option<String> {
        let lower = id.to_ascii_lowercase();
        if is_guid(&lower) {
            Some(lower)
        } else {
            if self.problems.len() < 20 {
                self.problems.push(format!("{what} {id:?} is not a GUID"));
            }
            None
        }
    }

    pub fn add_blueprints(&mut self, page: Vec<BlueprintPrincipal>) {
        for p in page {
            self.counts.blueprints += 1;
            let Some(object_id) = self.guid("blueprint principal id", &p.id) else {
                continue;
            };
            let Some(app_id) = p
                .app_id
                .as_deref()
                .and_then(|a| self.guid(&format!("blueprint principal {object_id} appId"), a))
            else {
                continue;
            };
            let disabled = p.account_enabled != Some(true)
                || disabled_by_microsoft(p.disabled_by_microsoft_status.as_deref());
            let home_tenant = p.app_owner_organization_id.map(|t| t.to_ascii_lowercase());
            self.principal_app_ids.insert(object_id, app_id.clone());
            let entry = self
                .file
                .blueprints
                .entry(app_id)
                .or_insert_with(|| Blueprint {
                    name: p.display_name.clone().unwrap_or_default(),
                    publisher: p.publisher_name.clone(),
                    tenant: Some(self.tenant.clone()),
                    roles: Vec::new(),
                    permissions: Vec::new(),
                    disabled,
                    revoked_permissions: Vec::new(),
                    risk: Risk::None,
                    risk_state: RiskState::None,
                    home_tenant: home_tenant.clone(),
                });
            // One principal per blueprint and tenant; should Graph list two, either one
            // being disabled disables the blueprint.
            entry.disabled |= disabled;
        }
    }

    /// Adds a page of agent identities. Sponsors come from the expansion; an agent whose
    /// expansion may have been cut ([`needs_sponsor_list`]) gets its full list through
    /// [`DirectoryBuilder::set_sponsors`].
    pub fn add_agents(&mut self, page: Vec<AgentIdentityObject>) {
        for a in page {
            self.counts.agents += 1;
            let Some(id) = self.guid("agent identity id", &a.id) else {
                continue;
            };
            let Some(blueprint) = a.agent_identity_blueprint_id.as_deref() else {
                self.problems.push(format!(
                    "agent identity {id} has no agentIdentityBlueprintId"
                ));
                continue;
            };
            let Some(blueprint) =
                self.guid(&format!("agent {id} agentIdentityBlueprintId"), blueprint)
            else {
                continue;
            };
            let sponsors = self.sponsors(&id, a.sponsors);
            let enabled = a.account_enabled == Some(true)
                && !disabled_by_microsoft(a.disabled_by_microsoft_status.as_deref());
            let entry = AgentIdentity {
                display_name: a.display_name.unwrap_or_default(),
                blueprint,
                tenant: Some(self.tenant.clone()),
                sponsors,
                enabled,
                agent_user: None,
                risk: Risk::None,
                risk_state: RiskState::None,
            };
            match self.file.agents.get_mut(&id) {
                // Listed twice (it changed while pages were read): disabled if either says so.
                Some(existing) => existing.enabled &= entry.enabled,
                None => {
                    self.file.agents.insert(id, entry);
                }
            }
        }
    }

    fn sponsors(&mut self, agent: &str, objects: Vec<DirectoryObjectRef>) -> Vec<Sponsor> {
        let mut out = Vec::with_capacity(objects.len());
        for o in objects {
            let Some(kind) = sponsor_kind(o.odata_type.as_deref()) else {
                self.skipped_sponsors += 1;
                continue;
            };
            if let Some(id) = self.guid(&format!("agent {agent} sponsor id"), &o.id) {
                out.push(Sponsor {
                    id,
                    kind,
                    name: o.display_name,
                });
            }
        }
        // Sorted, so the same sponsors always make the same directory (and revision).
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Replaces an agent's sponsors with its complete list.
    pub fn set_sponsors(&mut self, agent: &str, objects: Vec<DirectoryObjectRef>) {
        let sponsors = self.sponsors(agent, objects);
        if let Some(a) = self.file.agents.get_mut(agent) {
            a.sponsors = sponsors;
        }
    }

    pub fn add_agent_users(&mut self, page: Vec<AgentUserObject>) {
        for u in page {
            self.counts.agent_users += 1;
            let Some(id) = self.guid("agent user id", &u.id) else {
                continue;
            };
            let Some(parent) = u.identity_parent_id.as_deref() else {
                self.problems
                    .push(format!("agent user {id} has no identityParentId"));
                continue;
            };
            let Some(parent) = self.guid(&format!("agent user {id} identityParentId"), parent)
            else {
                continue;
            };
            let entry = AgentUser {
                parent_agent: parent,
                display_name: u.display_name,
                user_principal_name: u.user_principal_name,
                enabled: u.account_enabled == Some(true),
                risk: Risk::None,
                risk_state: RiskState::None,
            };
            match self.file.agent_users.get_mut(&id) {
                Some(existing) => existing.enabled &= entry.enabled,
                None => {
                    self.file.agent_users.insert(id, entry);
                }
            }
        }
    }

    pub fn add_risky_agents(&mut self, page: Vec<RiskyAgentObject>) {
        for r in page {
            self.counts.risky_agents += 1;
            if r.is_deleted == Some(true) {
                continue;
            }
            let Some(id) = self.guid("risky agent id", &r.id) else {
                continue;
            };
            let level = risk_level(r.risk_level.as_deref());
            let state = risk_state(r.risk_state.as_deref());
            // Matched by object id whatever the declared type says: ids are unique across
            // the directory, and a type Entra adds later still lands on its object.
            let target = if let Some(a) = self.file.agents.get_mut(&id) {
                Some((&mut a.risk, &mut a.risk_state))
            } else if let Some(u) = self.file.agent_users.get_mut(&id) {
                Some((&mut u.risk, &mut u.risk_state))
            } else {
                self.principal_app_ids
                    .get(&id)
                    .and_then(|app| self.file.blueprints.get_mut(app))
                    .map(|b| (&mut b.risk, &mut b.risk_state))
            };
            match target {
                // Listed twice (two principals of one blueprint): the graver entry counts.
                Some((risk, risk_state)) => {
                    *risk = (*risk).max(level);
                    if state.severity() >= risk_state.severity() {
                        *risk_state = state;
                    }
                }
                None => self.unmatched_risk += 1,
            }
        }
    }

    /// Links agents to their agent users and returns the directory, or every problem found.
    pub fn finish(mut self) -> Result<GraphDirectory, Vec<String>> {
        if !self.problems.is_empty() {
            return Err(self.problems);
        }
        // Entra keeps agent users 1:1 with their agent; should two name the same parent,
        // the smallest id is linked (both stay listed).
        for (id, user) in &self.file.agent_users {
            if let Some(agent) = self.file.agents.get_mut(&user.parent_agent) {
                if agent.agent_user.as_ref().is_none_or(|linked| id < linked) {
                    agent.agent_user = Some(id.clone());
                }
            }
        }
        if self.skipped_sponsors > 0 {
            tracing::warn!(
                skipped = self.skipped_sponsors,
                "Graph listed sponsors that are neither users nor groups; they were left out"
            );
        }
        if self.unmatched_risk > 0 {
            tracing::debug!(
                unmatched = self.unmatched_risk,
                "risky agents not in the directory (deleted or out of scope)"
            );
        }
        Ok(GraphDirectory {
            file: self.file,
            counts: self.counts,
        })
    }
}

/// True when an agent's expanded sponsors may be incomplete.
pub fn needs_sponsor_list(agent: &AgentIdentityObject) -> bool {
    agent.sponsors_next_link.is_some() || agent.sponsors.len() >= EXPAND_LIMIT
}

#[cfg(test)]
mod tests;
