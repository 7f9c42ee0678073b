use super::*;
use crate::directory::{Risk, SponsorKind};
use serde_json::json;

const TENANT: &str = "aaaaaaaa-1111-1111-1111-000000000001";
const BP: &str = "cccccccc-3333-3333-3333-000000000001";
const BP_LOCAL: &str = "cccccccc-3333-3333-3333-000000000002";
const AGENT: &str = "dddddddd-4444-4444-4444-000000000001";
const AGENT_2: &str = "dddddddd-4444-4444-4444-000000000002";
const AGENT_NEW: &str = "dddddddd-4444-4444-4444-0000000000a0";
const USER: &str = "eeeeeeee-5555-5555-5555-000000000001";

fn file(v: serde_json::Value) -> DirectoryFile {
    serde_json::from_value(v).unwrap()
}

/// What Graph says: one enabled blueprint with two agents (one disabled in Entra, one
/// compromised) and an agent user.
fn graph() -> DirectoryFile {
    file(json!({
        "blueprints": {BP: {"name": "Sales (Entra)", "tenant": TENANT, "publisher": "Contoso",
                            "home_tenant": TENANT, "risk": "low"}},
        "agents": {
            AGENT: {"display_name": "EMEA", "blueprint": BP, "tenant": TENANT, "agent_user": USER,
                    "sponsors": [{"id": "ffffffff-6666-6666-6666-0000000000a1", "type": "user", "name": "Dana"}]},
            AGENT_2: {"display_name": "Invoices", "blueprint": BP, "tenant": TENANT, "enabled": false,
                      "risk": "high", "risk_state": "confirmedCompromised"}
        },
        "agent_users": {USER: {"parent_agent": AGENT, "display_name": "EMEA (user)", "risk": "medium"}}
    }))
}

#[test]
fn local_kill_switches_and_extra_risk_win() {
    let local = file(json!({
        "blueprints": {BP: {"name": "Sales Assistant", "disabled": true, "permissions": ["Orders.Read"],
                            "revoked_permissions": ["Orders.Write"]}},
        "agents": {AGENT: {"display_name": "EMEA", "blueprint": BP, "enabled": false,
                           "risk": "medium", "risk_state": "atRisk"}},
        "agent_users": {USER: {"parent_agent": AGENT, "enabled": false, "risk": "high"}}
    }));
    let m = merge(&graph(), &local, MergeOptions::default()).unwrap();
    let bp = &m.file.blueprints[BP];
    assert!(bp.disabled);
    assert_eq!(bp.name, "Sales Assistant");
    assert_eq!(bp.permissions, vec!["Orders.Read"]);
    assert_eq!(bp.revoked_permissions, vec!["Orders.Write"]);
    // Values the file leaves unset stay Graph's.
    assert_eq!(bp.publisher.as_deref(), Some("Contoso"));
    assert_eq!(bp.tenant.as_deref(), Some(TENANT));
    assert_eq!(bp.risk, Risk::Low);
    let a = &m.file.agents[AGENT];
    assert!(!a.enabled);
    assert_eq!((a.risk, a.risk_state), (Risk::Medium, RiskState::AtRisk));
    assert_eq!(a.agent_user.as_deref(), Some(USER));
    assert_eq!(a.sponsors[0].kind, SponsorKind::User);
    let u = &m.file.agent_users[USER];
    assert!(!u.enabled);
    assert_eq!(u.risk, Risk::High);
    assert_eq!(u.display_name.as_deref(), Some("EMEA (user)"));

    let p = m.provenance(EntityKind::Blueprint, BP).unwrap();
    assert_eq!(p.source, Source::GraphAndFile);
    assert_eq!(
        p.from_file,
        vec!["disabled", "name", "permissions", "revoked_permissions"]
    );
    let p = m.provenance(EntityKind::Agent, AGENT).unwrap();
    assert_eq!(p.from_file, vec!["enabled", "risk", "risk_state"]);
    assert_eq!(
        m.provenance(EntityKind::Agent, AGENT_2).unwrap(),
        EntityProvenance {
            source: Source::Graph,
            from_file: vec![],
            withheld: false
        }
    );
    assert_eq!(m.provenance(EntityKind::Agent, AGENT_NEW), None);
}

#[test]
fn the_file_cannot_lift_what_entra_set() {
    // The shipped file style writes every flag out: enabled true, risk none.
    let local = file(json!({
        "agents": {AGENT_2: {"display_name": "Invoices", "blueprint": BP, "enabled": true,
                             "risk": "none", "risk_state": "confirmedSafe"}},
        "agent_users": {USER: {"parent_agent": AGENT, "enabled": true, "risk": "none"}}
    }));
    let m = merge(&graph(), &local, MergeOptions::default()).unwrap();
    let a = &m.file.agents[AGENT_2];
    assert!(!a.enabled);
    assert_eq!(
        (a.risk, a.risk_state),
        (Risk::High, RiskState::ConfirmedCompromised)
    );
    assert_eq!(m.file.agent_users[USER].risk, Risk::Medium);
    assert!(m
        .provenance(EntityKind::Agent, AGENT_2)
        .unwrap()
        .from_file
        .is_empty());
}

#[test]
fn entities_graph_does_not_know_are_kept_from_the_file() {
    let local = file(json!({
        "blueprints": {BP_LOCAL: {"name": "Partner blueprint"}},
        "agents": {AGENT_NEW: {"display_name": "Just created", "blueprint": BP}}
    }));
    let m = merge(&graph(), &local, MergeOptions::default()).unwrap();
    assert!(m.file.agents[AGENT_NEW].enabled);
    assert_eq!(m.file.agents.len(), 3);
    assert_eq!(
        m.provenance(EntityKind::Agent, AGENT_NEW).unwrap().source,
        Source::File
    );
    assert_eq!(
        m.provenance(EntityKind::Blueprint, BP_LOCAL)
            .unwrap()
            .source,
        Source::File
    );
    assert_eq!(m.provenance.summary().file_only, 2);
}

#[test]
fn stale_graph_entities_the_file_does_not_vouch_for_are_withheld() {
    let local = file(json!({
        "agents": {AGENT: {"display_name": "EMEA", "blueprint": BP}}
    }));
    let m = merge(
        &graph(),
        &local,
        MergeOptions {
            withhold_graph_only: true,
        },
    )
    .unwrap();
    assert!(m.file.blueprints[BP].disabled);
    assert!(m.file.agents[AGENT].enabled, "vouched for by the file");
    assert!(!m.file.agent_users[USER].enabled);
    let p = m.provenance(EntityKind::Blueprint, BP).unwrap();
    assert!(p.withheld && p.source == Source::Graph);
    assert!(!m.provenance(EntityKind::Agent, AGENT).unwrap().withheld);
    assert!(m.provenance.summary().withheld);
}

#[test]
fn a_merge_that_does_not_validate_is_refused() {
    // The file links the agent to an agent user that names another parent.
    let local = file(json!({
        "agents": {AGENT_2: {"display_name": "Invoices", "blueprint": BP, "agent_user": USER}}
    }));
    let err = merge(&graph(), &local, MergeOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "agents.{AGENT_2}.agent_user {USER} must be listed under agent_users with parent_agent {AGENT_2}"
        )),
        "{err}"
    );
}

#[test]
fn the_revision_is_a_content_hash() {
    let empty = DirectoryFile::default();
    let a = merge(&graph(), &empty, MergeOptions::default()).unwrap();
    let b = merge_owned(graph(), &empty, MergeOptions::default()).unwrap();
    assert_eq!(a.revision, b.revision);
    assert_eq!(a.revision.len(), 12);
    let mut changed = graph();
    changed.agents.get_mut(AGENT).unwrap().enabled = false;
    let c = merge_owned(changed, &empty, MergeOptions::default()).unwrap();
    assert_ne!(a.revision, c.revision);
    // The JSON written parses back into the same directory.
    let mut out = Vec::new();
    a.write_json(&mut out).unwrap();
    let back = crate::directory::Directory::parse(
        std::str::from_utf8(&out).unwrap(),
        Path::new("out.json"),
    )
    .unwrap();
    assert_eq!(back.agents.len(), 2);
    assert_eq!(a.to_directory().unwrap().agents.len(), 2);
}
