//! The agent directory: blueprints, agent identities and agent users, as the operator keeps
//! them in `policies/data/directory.json` or as read from Microsoft Graph.
//!
//! The file is validated into typed entries (every problem reported with its JSON path), and
//! the same document is handed to Rego as `data.directory`. Lookups are by id, so the request
//! path does a hash lookup and never scans. The directory enriches what a token says; it never
//! overrides it: an entry naming another blueprint than the token is a mismatch, not a fix.
//!
//! Validation accepts every state Entra can legitimately be in: an agent whose blueprint is
//! not listed (its blueprint principal was deleted from the tenant, or not read) and an agent
//! user whose parent agent is not listed (soft-deleted). Such an agent reaches policy with
//! `blueprint.known: false` and is refused as `unknown_blueprint`.

mod resolve;

pub use resolve::{Resolution, ResolveError};

use crate::guid::is_guid;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Risk level of a blueprint, an agent or an agent user (Entra ID Protection's scale),
/// ordered from least to most severe.
///
/// Entra also reports `hidden` (the level is not disclosed to the reader) and may add values
/// later; the Graph mapping reads both as [`Risk::High`] (fail closed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    #[default]
    None,
    Low,
    Medium,
    High,
}

impl Risk {
    /// The lower-case name used in policy input.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// Where an entity stands in Entra ID Protection's risk workflow (`riskState`), with Entra's
/// own spelling (`"confirmedCompromised"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RiskState {
    #[default]
    None,
    ConfirmedSafe,
    Remediated,
    Dismissed,
    AtRisk,
    ConfirmedCompromised,
}

impl RiskState {
    /// The name used in policy input and in the directory file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ConfirmedSafe => "confirmedSafe",
            Self::Remediated => "remediated",
            Self::Dismissed => "dismissed",
            Self::AtRisk => "atRisk",
            Self::ConfirmedCompromised => "confirmedCompromised",
        }
    }

    /// How alarming the state is: 2 confirmed compromised, 1 at risk, 0 for the states in
    /// which nothing is (or no longer is) suspected.
    pub fn severity(self) -> u8 {
        match self {
            Self::ConfirmedCompromised => 2,
            Self::AtRisk => 1,
            Self::None | Self::ConfirmedSafe | Self::Remediated | Self::Dismissed => 0,
        }
    }
}

/// An agent identity blueprint: the kind of agent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Blueprint {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// The tenant the blueprint principal lives in, when restricted to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Roles the blueprint's agents offer.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Permissions granted to the blueprint (and inherited by its agents).
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Disables every agent of the blueprint.
    #[serde(default)]
    pub disabled: bool,
    /// Permissions that no longer count for any agent of the blueprint, even when a token
    /// still carries them.
    #[serde(default)]
    pub revoked_permissions: Vec<String>,
    #[serde(default)]
    pub risk: Risk,
    #[serde(default)]
    pub risk_state: RiskState,
    /// The blueprint's home tenant (Entra's `appOwnerOrganizationId`), which differs from
    /// `tenant` for a blueprint published by another organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_tenant: Option<String>,
}

/// Someone accountable for an agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sponsor {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: SponsorKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A sponsor is a user or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SponsorKind {
    User,
    Group,
}

/// An agent identity.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentIdentity {
    pub display_name: String,
    /// The blueprint's app id.
    pub blueprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default)]
    pub sponsors: Vec<Sponsor>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_user: Option<String>,
    #[serde(default)]
    pub risk: Risk,
    #[serde(default)]
    pub risk_state: RiskState,
}

/// An agent user: the 1:1 user account of an agent identity.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentUser {
    pub parent_agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub risk: Risk,
    #[serde(default)]
    pub risk_state: RiskState,
}

fn yes() -> bool {
    true
}

/// The directory file as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryFile {
    #[serde(default)]
    pub blueprints: BTreeMap<String, Blueprint>,
    #[serde(default)]
    pub agents: BTreeMap<String, AgentIdentity>,
    #[serde(default)]
    pub agent_users: BTreeMap<String, AgentUser>,
}

/// Why a directory file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// Occurs when the JSON does not parse or has the wrong shape.
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Occurs when entries contradict each other; every problem is listed.
    #[error("{file}: invalid directory:\n  - {}", problems.join("\n  - "))]
    Invalid { file: String, problems: Vec<String> },
}

/// The validated directory, indexed by id.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub blueprints: HashMap<String, Blueprint>,
    pub agents: HashMap<String, AgentIdentity>,
    pub agent_users: HashMap<String, AgentUser>,
}

// === impl Directory ===

impl Directory {
    /// Parses and validates directory JSON; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, DirectoryError> {
        Self::from_file(DirectoryFile::parse(text, file)?, file)
    }

    /// Validates a directory already in its file shape (merged, or read from Graph); `file`
    /// names it in errors.
    pub fn from_file(raw: DirectoryFile, file: &Path) -> Result<Self, DirectoryError> {
        let problems = raw.problems();
        if !problems.is_empty() {
            return Err(DirectoryError::Invalid {
                file: file.display().to_string(),
                problems,
            });
        }
        Ok(Self {
            blueprints: raw.blueprints.into_iter().collect(),
            agents: raw.agents.into_iter().collect(),
            agent_users: raw.agent_users.into_iter().collect(),
        })
    }

    /// True when `id` is a blueprint the operator listed (bounds metric label values).
    pub fn has_blueprint(&self, id: &str) -> bool {
        self.blueprints.contains_key(id)
    }
}

impl DirectoryFile {
    /// Parses directory JSON without validating it; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, DirectoryError> {
        serde_json::from_str(text).map_err(|e| DirectoryError::Parse {
            file: file.display().to_string(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }

    /// Every consistency problem (ids that are not lower-case GUIDs, agent users that do
    /// not name their agent back); empty when the directory is valid.
    pub fn problems(&self) -> Vec<String> {
        validate(self)
    }
}

fn validate(d: &DirectoryFile) -> Vec<String> {
    let mut problems = Vec::new();
    let mut guid = |what: &str, id: &str| {
        if !is_guid(id) || id.bytes().any(|b| b.is_ascii_uppercase()) {
            problems.push(format!("{what} {id:?} is not a lower-case GUID"));
        }
    };
    for id in d.blueprints.keys() {
        guid("blueprints key", id);
    }
    for (id, a) in &d.agents {
        guid("agents key", id);
        guid(&format!("agents.{id}.blueprint"), &a.blueprint);
        for s in &a.sponsors {
            guid(&format!("agents.{id}.sponsors[].id"), &s.id);
        }
    }
    for (id, u) in &d.agent_users {
        guid("agent_users key", id);
        guid(&format!("agent_users.{id}.parent_agent"), &u.parent_agent);
    }
    // An agent's blueprint and an agent user's parent agent need not be listed: Entra keeps
    // agents of a deleted blueprint principal for a day, and agent users of a deleted agent
    // for good. An unlisted blueprint reaches policy as unknown, which denies.
    for (id, a) in &d.agents {
        if let Some(u) = &a.agent_user {
            match d.agent_users.get(u) {
                Some(entry) if &entry.parent_agent == id => {}
                _ => problems.push(format!(
                    "agents.{id}.agent_user {u} must be listed under agent_users with parent_agent {id}"
                )),
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests;
