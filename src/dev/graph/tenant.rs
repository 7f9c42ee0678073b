//! The tenant the fake serves: explicit objects, and synthetic ones made from their index.

use crate::directory::{DirectoryFile, Risk, SponsorKind};
use std::collections::BTreeMap;

/// A blueprint principal (the blueprint in this tenant).
#[derive(Debug, Clone)]
pub struct FakeBlueprint {
    pub object_id: String,
    pub app_id: String,
    pub name: String,
    pub enabled: bool,
    pub publisher: Option<String>,
    pub home_tenant: Option<String>,
    pub disabled_by_microsoft: Option<String>,
}

/// An agent identity.
#[derive(Debug, Clone)]
pub struct FakeAgent {
    pub id: String,
    pub name: String,
    pub blueprint_app_id: String,
    pub enabled: bool,
    pub disabled_by_microsoft: Option<String>,
    pub sponsors: Vec<FakeSponsor>,
}

/// A sponsor: a user or a group (or, to test refusal, another type).
#[derive(Debug, Clone)]
pub struct FakeSponsor {
    pub id: String,
    /// `@odata.type`, e.g. `#microsoft.graph.user`.
    pub odata_type: String,
    pub name: String,
}

/// An agent user.
#[derive(Debug, Clone)]
pub struct FakeAgentUser {
    pub id: String,
    pub name: String,
    pub user_principal_name: String,
    pub parent: String,
    pub enabled: bool,
}

/// A generated tenant: `blueprints` blueprints of `agents_per_blueprint` agents each. Every
/// `agent_user_every`-th agent has an agent user and every `risky_every`-th agent is at
/// medium risk (0: none). Objects are made when a page is served.
#[derive(Debug, Clone, Copy)]
pub struct Synthetic {
    pub blueprints: usize,
    pub agents_per_blueprint: usize,
    pub agent_user_every: usize,
    pub risky_every: usize,
}

/// The tenant the fake serves: explicit objects first, then the synthetic ones.
#[derive(Debug, Clone, Default)]
pub struct FakeTenant {
    pub blueprints: Vec<FakeBlueprint>,
    pub agents: Vec<FakeAgent>,
    pub agent_users: Vec<FakeAgentUser>,
    /// Risk by object id: (riskLevel, riskState).
    pub risk: BTreeMap<String, (String, String)>,
    pub synthetic: Option<Synthetic>,
}

/// Ids of synthetic objects: blueprint app ids, blueprint principal ids, agents, agent
/// users, sponsors.
const SYN_BLUEPRINT: &str = "cccccccc";
const SYN_PRINCIPAL: &str = "c0c0c0c0";
pub(super) const SYN_AGENT: &str = "dddddddd";
const SYN_AGENT_USER: &str = "eeeeeeee";
const SYN_SPONSOR: &str = "ffffffff";

pub(super) fn synthetic_id(prefix: &str, index: usize) -> String {
    format!("{prefix}-0000-4000-8000-{index:012x}")
}

pub(super) fn synthetic_index(prefix: &str, id: &str) -> Option<usize> {
    let rest = id.strip_prefix(prefix)?.strip_prefix("-0000-4000-8000-")?;
    usize::from_str_radix(rest, 16).ok()
}

// === impl FakeTenant ===

impl FakeTenant {
    /// The tenant a directory file describes: its blueprints, agents and agent users (a
    /// blueprint principal's object id is its app id with `0b0b0b0b` as first group),
    /// with their enabled state and risk. What Graph does not hold (permissions, roles,
    /// revocations) is left out.
    pub fn from_directory(d: &DirectoryFile) -> Self {
        let mut t = FakeTenant::default();
        let level = |r: Risk| r.as_str().to_string();
        for (app_id, b) in &d.blueprints {
            let object_id = principal_id(app_id);
            if b.risk != Risk::None || b.risk_state.severity() > 0 {
                t.risk.insert(
                    object_id.clone(),
                    (level(b.risk), b.risk_state.as_str().into()),
                );
            }
            t.blueprints.push(FakeBlueprint {
                object_id,
                app_id: app_id.clone(),
                name: b.name.clone(),
                enabled: !b.disabled,
                publisher: b.publisher.clone(),
                home_tenant: b.home_tenant.clone(),
                disabled_by_microsoft: None,
            });
        }
        for (id, a) in &d.agents {
            if a.risk != Risk::None || a.risk_state.severity() > 0 {
                t.risk
                    .insert(id.clone(), (level(a.risk), a.risk_state.as_str().into()));
            }
            t.agents.push(FakeAgent {
                id: id.clone(),
                name: a.display_name.clone(),
                blueprint_app_id: a.blueprint.clone(),
                enabled: a.enabled,
                disabled_by_microsoft: None,
                sponsors: a
                    .sponsors
                    .iter()
                    .map(|s| FakeSponsor {
                        id: s.id.clone(),
                        odata_type: match s.kind {
                            SponsorKind::User => "#microsoft.graph.user".into(),
                            SponsorKind::Group => "#microsoft.graph.group".into(),
                        },
                        name: s.name.clone().unwrap_or_default(),
                    })
                    .collect(),
            });
        }
        for (id, u) in &d.agent_users {
            if u.risk != Risk::None || u.risk_state.severity() > 0 {
                t.risk
                    .insert(id.clone(), (level(u.risk), u.risk_state.as_str().into()));
            }
            t.agent_users.push(FakeAgentUser {
                id: id.clone(),
                name: u.display_name.clone().unwrap_or_default(),
                user_principal_name: u.user_principal_name.clone().unwrap_or_default(),
                parent: u.parent_agent.clone(),
                enabled: u.enabled,
            });
        }
        t
    }

    pub(super) fn synthetic_counts(&self) -> (usize, usize, usize, usize) {
        self.synthetic.map_or((0, 0, 0, 0), |s| {
            let agents = s.blueprints * s.agents_per_blueprint;
            let every = |n: usize| if n == 0 { 0 } else { agents.div_ceil(n) };
            (
                s.blueprints,
                agents,
                every(s.agent_user_every),
                every(s.risky_every),
            )
        })
    }

    /// Which kind of agent object `id` is: `agent`, `blueprint` (principal) or `agent_user`.
    pub(super) fn kind_of(&self, id: &str) -> Option<&'static str> {
        let id = id.to_ascii_lowercase();
        let (bps, agents, users, _) = self.synthetic_counts();
        let synthetic_user = synthetic_index(SYN_AGENT_USER, &id).filter(|i| {
            self.synthetic
                .is_some_and(|s| s.agent_user_every > 0 && i % s.agent_user_every == 0)
                && *i < agents
        });
        if self.agents.iter().any(|a| a.id == id)
            || synthetic_index(SYN_AGENT, &id).is_some_and(|i| i < agents)
        {
            Some("agent")
        } else if self.blueprints.iter().any(|b| b.object_id == id)
            || synthetic_index(SYN_PRINCIPAL, &id).is_some_and(|i| i < bps)
        {
            Some("blueprint")
        } else if self.agent_users.iter().any(|u| u.id == id)
            || (users > 0 && synthetic_user.is_some())
        {
            Some("agent_user")
        } else {
            None
        }
    }

    /// The agent at `index` of the listing (explicit ones first).
    pub(super) fn agent_at(&self, index: usize) -> Option<FakeAgent> {
        if let Some(a) = self.agents.get(index) {
            return Some(a.clone());
        }
        let s = self.synthetic?;
        let i = index - self.agents.len();
        (i < s.blueprints * s.agents_per_blueprint).then(|| FakeAgent {
            id: synthetic_id(SYN_AGENT, i),
            name: format!("Synthetic agent {i}"),
            blueprint_app_id: synthetic_id(SYN_BLUEPRINT, i / s.agents_per_blueprint.max(1)),
            enabled: true,
            disabled_by_microsoft: None,
            sponsors: vec![FakeSponsor {
                id: synthetic_id(SYN_SPONSOR, i % 5000),
                odata_type: "#microsoft.graph.user".into(),
                name: format!("Sponsor {}", i % 5000),
            }],
        })
    }

    pub(super) fn blueprint_at(&self, index: usize) -> Option<FakeBlueprint> {
        if let Some(b) = self.blueprints.get(index) {
            return Some(b.clone());
        }
        let s = self.synthetic?;
        let i = index - self.blueprints.len();
        (i < s.blueprints).then(|| FakeBlueprint {
            object_id: synthetic_id(SYN_PRINCIPAL, i),
            app_id: synthetic_id(SYN_BLUEPRINT, i),
            name: format!("Synthetic blueprint {i}"),
            enabled: true,
            publisher: Some("Synthetic".into()),
            home_tenant: None,
            disabled_by_microsoft: None,
        })
    }

    pub(super) fn agent_user_at(&self, index: usize) -> Option<FakeAgentUser> {
        if let Some(u) = self.agent_users.get(index) {
            return Some(u.clone());
        }
        let s = self.synthetic.filter(|s| s.agent_user_every > 0)?;
        let agent = (index - self.agent_users.len()) * s.agent_user_every;
        (agent < s.blueprints * s.agents_per_blueprint).then(|| FakeAgentUser {
            id: synthetic_id(SYN_AGENT_USER, agent),
            name: format!("Synthetic agent user {agent}"),
            user_principal_name: format!("agent-{agent}@synthetic.example"),
            parent: synthetic_id(SYN_AGENT, agent),
            enabled: true,
        })
    }
}

/// The object id the fake gives the principal of blueprint `app_id`.
pub fn principal_id(app_id: &str) -> String {
    match app_id.split_once('-') {
        Some((_, rest)) => format!("0b0b0b0b-{rest}"),
        None => app_id.to_string(),
    }
}
