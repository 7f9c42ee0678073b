//! The directory in force: Graph's as the base, the operator's local file on top.
//!
//! Merge order, for each entity of the local file:
//!
//! 1. not in Graph: added as written (an agent Entra does not list yet, a blueprint of
//!    another tenant);
//! 2. in Graph, field by field:
//!    - kill switches and risk combine to the stricter value: blueprint `disabled` = Graph's
//!      or the file's; `enabled` (agent, agent user) = Graph's and the file's; `risk` = the
//!      higher; `risk_state` = the file's when graver (`confirmedCompromised` > `atRisk` >
//!      the rest), else Graph's. Entra's state is a floor: the file can add restrictions,
//!      never lift one Entra set;
//!    - `revoked_permissions`: Graph's and the file's together;
//!    - lists the file fills (`roles`, `permissions`, `sponsors`) replace Graph's;
//!    - optional values the file sets (`publisher`, `tenant`, `home_tenant`, `agent_user`,
//!      an agent user's `display_name` and `user_principal_name`) replace Graph's;
//!    - values the file always carries (blueprint `name`, agent `display_name` and
//!      `blueprint`, agent user `parent_agent`) are the file's. A file that names another
//!      blueprint than Entra makes that agent's tokens fail as `blueprint_mismatch`.
//!
//! Then, when the Graph data is stale and `on_stale = "refuse_unvouched"`, every entity
//! the file does not list is withheld: served disabled (blueprint `disabled`, agent and agent
//! user `enabled: false`). Last, the result is validated as a whole; a merge that does not
//! validate is refused and the previous directory stays.
//!
//! Provenance is kept compactly: only entities the file lists are recorded (added, or merged
//! with the fields whose value is the file's); every other entity is Graph's.

use super::diff::{changed_fields, EntityKind};
use crate::directory::{
    AgentIdentity, AgentUser, Blueprint, Directory, DirectoryError, DirectoryFile, RiskState,
};
use aws_lc_rs::digest;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Where an entity of the merged directory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Graph,
    File,
    GraphAndFile,
}

/// The provenance of one entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntityProvenance {
    pub source: Source,
    /// For `graph_and_file`: the fields whose merged value is not Graph's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from_file: Vec<String>,
    /// Served disabled: the Graph data is stale and the file does not vouch for the entity.
    pub withheld: bool,
}

/// Counts for `/readyz`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProvenanceSummary {
    /// Entities only the file lists.
    pub file_only: usize,
    /// Entities in both, with at least one field taken from the file.
    pub overridden: usize,
    /// Graph's entities served disabled because the data is stale.
    pub withheld: bool,
}

/// Provenance of every entity of a merged directory.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    file_only: BTreeSet<(EntityKind, String)>,
    /// Entities in both, with the fields whose value is the file's (possibly none).
    merged: BTreeMap<(EntityKind, String), Vec<String>>,
    graph_withheld: bool,
}

/// How to merge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeOptions {
    /// Serve Graph-only entities disabled (stale data under `refuse_unvouched`).
    pub withhold_graph_only: bool,
}

/// The merged, validated directory.
#[derive(Debug, Clone)]
pub struct MergedDirectory {
    /// In file form, sorted: what `data.directory` and `directory sync --out` hold.
    pub file: DirectoryFile,
    pub provenance: Provenance,
    /// Content hash of `file`.
    pub revision: String,
}

// === impl Provenance ===

impl Provenance {
    /// The provenance of an entity that is in the merged directory.
    pub fn of(&self, kind: EntityKind, id: &str) -> EntityProvenance {
        let key = (kind, id.to_string());
        if self.file_only.contains(&key) {
            return EntityProvenance {
                source: Source::File,
                from_file: Vec::new(),
                withheld: false,
            };
        }
        match self.merged.get(&key) {
            Some(fields) => EntityProvenance {
                source: Source::GraphAndFile,
                from_file: fields.clone(),
                withheld: false,
            },
            None => EntityProvenance {
                source: Source::Graph,
                from_file: Vec::new(),
                withheld: self.graph_withheld,
            },
        }
    }

    pub fn summary(&self) -> ProvenanceSummary {
        ProvenanceSummary {
            file_only: self.file_only.len(),
            overridden: self.merged.values().filter(|f| !f.is_empty()).count(),
            withheld: self.graph_withheld,
        }
    }
}

// === impl MergedDirectory ===

impl MergedDirectory {
    /// The provenance of `id`, or `None` when the merged directory does not list it.
    pub fn provenance(&self, kind: EntityKind, id: &str) -> Option<EntityProvenance> {
        let listed = match kind {
            EntityKind::Blueprint => self.file.blueprints.contains_key(id),
            EntityKind::Agent => self.file.agents.contains_key(id),
            EntityKind::AgentUser => self.file.agent_users.contains_key(id),
        };
        listed.then(|| self.provenance.of(kind, id))
    }

    /// The directory as JSON, the shape of `policies/data/directory.json`.
    pub fn write_json(&self, out: impl std::io::Write) -> serde_json::Result<()> {
        serde_json::to_writer_pretty(out, &self.file)
    }

    /// The indexed directory for the request path.
    pub fn to_directory(&self) -> Result<Directory, DirectoryError> {
        Directory::from_file(self.file.clone(), Path::new("merged directory"))
    }
}

/// Feeds serialized bytes into a digest.
struct DigestWriter(digest::Context);

impl std::io::Write for DigestWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Content hash of a directory: SHA-256 of its canonical JSON (sorted keys), 12 hex digits.
pub fn revision(file: &DirectoryFile) -> String {
    let mut w = DigestWriter(digest::Context::new(&digest::SHA256));
    // Writing into a digest cannot fail, and the types always serialize.
    let _ = serde_json::to_writer(&mut w, file);
    w.0.finish()
        .as_ref()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Merges `local` over a copy of `graph` (see the module docs).
pub fn merge(
    graph: &DirectoryFile,
    local: &DirectoryFile,
    options: MergeOptions,
) -> Result<MergedDirectory, DirectoryError> {
    merge_owned(graph.clone(), local, options)
}

/// Merges `local` over `graph`, consuming it.
pub fn merge_owned(
    mut graph: DirectoryFile,
    local: &DirectoryFile,
    options: MergeOptions,
) -> Result<MergedDirectory, DirectoryError> {
    let mut provenance = Provenance {
        graph_withheld: options.withhold_graph_only,
        ..Provenance::default()
    };
    if options.withhold_graph_only {
        withhold(&mut graph, local);
    }
    overlay(
        EntityKind::Blueprint,
        &mut graph.blueprints,
        &local.blueprints,
        merge_blueprint,
        &mut provenance,
    );
    overlay(
        EntityKind::Agent,
        &mut graph.agents,
        &local.agents,
        merge_agent,
        &mut provenance,
    );
    overlay(
        EntityKind::AgentUser,
        &mut graph.agent_users,
        &local.agent_users,
        merge_agent_user,
        &mut provenance,
    );
    let problems = graph.problems();
    if !problems.is_empty() {
        return Err(DirectoryError::Invalid {
            file: "Graph directory merged with the local file".into(),
            problems,
        });
    }
    Ok(MergedDirectory {
        revision: revision(&graph),
        file: graph,
        provenance,
    })
}

/// Serves every Graph entity the file does not list as disabled.
fn withhold(graph: &mut DirectoryFile, local: &DirectoryFile) {
    for (id, b) in &mut graph.blueprints {
        if !local.blueprints.contains_key(id) {
            b.disabled = true;
        }
    }
    for (id, a) in &mut graph.agents {
        if !local.agents.contains_key(id) {
            a.enabled = false;
        }
    }
    for (id, u) in &mut graph.agent_users {
        if !local.agent_users.contains_key(id) {
            u.enabled = false;
        }
    }
}

fn overlay<T: Clone + Serialize>(
    kind: EntityKind,
    base: &mut BTreeMap<String, T>,
    local: &BTreeMap<String, T>,
    merge_one: fn(&T, &T) -> T,
    provenance: &mut Provenance,
) {
    for (id, l) in local {
        match base.get_mut(id) {
            None => {
                base.insert(id.clone(), l.clone());
                provenance.file_only.insert((kind, id.clone()));
            }
            Some(g) => {
                let merged = merge_one(g, l);
                let fields = changed_fields(g, &merged)
                    .into_iter()
                    .map(|f| f.field)
                    .collect();
                provenance.merged.insert((kind, id.clone()), fields);
                *g = merged;
            }
        }
    }
}

/// The graver of two risk states; Graph's on a tie.
fn graver(graph: RiskState, file: RiskState) -> RiskState {
    if file.severity() > graph.severity() {
        file
    } else {
        graph
    }
}

/// The file's list when it has one, else Graph's.
fn list_or<T: Clone>(file: &[T], graph: &[T]) -> Vec<T> {
    if file.is_empty() { graph } else { file }.to_vec()
}

fn merge_blueprint(g: &Blueprint, l: &Blueprint) -> Blueprint {
    let mut revoked = g.revoked_permissions.clone();
    revoked.extend(
        l.revoked_permissions
            .iter()
            .filter(|p| !g.revoked_permissions.contains(p))
            .cloned(),
    );
    Blueprint {
        name: l.name.clone(),
        publisher: l.publisher.clone().or_else(|| g.publisher.clone()),
        tenant: l.tenant.clone().or_else(|| g.tenant.clone()),
        roles: list_or(&l.roles, &g.roles),
        permissions: list_or(&l.permissions, &g.permissions),
        disabled: g.disabled || l.disabled,
        revoked_permissions: revoked,
        risk: g.risk.max(l.risk),
        risk_state: graver(g.risk_state, l.risk_state),
        home_tenant: l.home_tenant.clone().or_else(|| g.home_tenant.clone()),
    }
}

fn merge_agent(g: &AgentIdentity, l: &AgentIdentity) -> AgentIdentity {
    AgentIdentity {
        display_name: l.display_name.clone(),
        blueprint: l.blueprint.clone(),
        tenant: l.tenant.clone().or_else(|| g.tenant.clone()),
        sponsors: list_or(&l.sponsors, &g.sponsors),
        enabled: g.enabled && l.enabled,
        agent_user: l.agent_user.clone().or_else(|| g.agent_user.clone()),
        risk: g.risk.max(l.risk),
        risk_state: graver(g.risk_state, l.risk_state),
    }
}

fn merge_agent_user(g: &AgentUser, l: &AgentUser) -> AgentUser {
    AgentUser {
        parent_agent: l.parent_agent.clone(),
        display_name: l.display_name.clone().or_else(|| g.display_name.clone()),
        user_principal_name: l
            .user_principal_name
            .clone()
            .or_else(|| g.user_principal_name.clone()),
        enabled: g.enabled && l.enabled,
        risk: g.risk.max(l.risk),
        risk_state: graver(g.risk_state, l.risk_state),
    }
}

#[cfg(test)]
mod tests;
