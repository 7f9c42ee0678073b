use super::*;

const GOOD: &str = r#"{
  "blueprints": {"cccccccc-3333-3333-3333-000000000001": {"name": "Sales Assistant Agent", "publisher": "Contoso"}},
  "agents": {"dddddddd-4444-4444-4444-000000000001": {"display_name": "EMEA", "blueprint": "cccccccc-3333-3333-3333-000000000001",
             "agent_user": "eeeeeeee-5555-5555-5555-000000000001"}},
  "agent_users": {"eeeeeeee-5555-5555-5555-000000000001": {"parent_agent": "dddddddd-4444-4444-4444-000000000001"}}
}"#;

#[test]
fn a_consistent_directory_loads_with_defaults() {
    let d = Directory::parse(GOOD, Path::new("directory.json")).unwrap();
    let agent = &d.agents["dddddddd-4444-4444-4444-000000000001"];
    assert!(agent.enabled);
    assert_eq!(agent.risk, Risk::None);
    assert!(!d.blueprints["cccccccc-3333-3333-3333-000000000001"].disabled);
    assert!(d.has_blueprint("cccccccc-3333-3333-3333-000000000001"));
}

#[test]
fn parse_errors_name_file_line_and_column() {
    let err = Directory::parse(
        "{\n  \"blueprints\": {\n    \"x\": 5\n  }\n}",
        Path::new("data/directory.json"),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("data/directory.json:3:"), "{msg}");
    let err = Directory::parse(r#"{"blueprint": {}}"#, Path::new("d.json")).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}

#[test]
fn every_inconsistency_is_reported() {
    let bad = r#"{
      "blueprints": {"NOT-A-GUID": {"name": "x"}},
      "agents": {"dddddddd-4444-4444-4444-000000000001": {"display_name": "a", "blueprint": "CCCCCCCC-3333-3333-3333-000000000009",
                 "agent_user": "eeeeeeee-5555-5555-5555-000000000001"},
                 "dddddddd-4444-4444-4444-000000000002": {"display_name": "b", "blueprint": "cccccccc-3333-3333-3333-000000000001",
                 "agent_user": "eeeeeeee-5555-5555-5555-000000000002"}},
      "agent_users": {"eeeeeeee-5555-5555-5555-000000000002": {"parent_agent": "dddddddd-4444-4444-4444-000000000009"}}
    }"#;
    let DirectoryError::Invalid { problems, .. } =
        Directory::parse(bad, Path::new("d.json")).unwrap_err()
    else {
        panic!("expected validation problems")
    };
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("NOT-A-GUID")));
    assert!(problems
        .iter()
        .any(|p| p.contains("blueprint") && p.contains("not a lower-case GUID")));
    // Not listed at all, and listed under another parent.
    assert!(problems.iter().any(|p| p.contains(
        "agents.dddddddd-4444-4444-4444-000000000001.agent_user eeeeeeee-5555-5555-5555-000000000001 must be listed"
    )));
    assert!(problems.iter().any(|p| p.contains(
        "agents.dddddddd-4444-4444-4444-000000000002.agent_user eeeeeeee-5555-5555-5555-000000000002 must be listed"
    )));
}

/// States Entra legitimately reports: an agent of a blueprint whose principal is gone from
/// the tenant, and an agent user whose parent agent was deleted.
#[test]
fn unlisted_blueprints_and_parent_agents_are_accepted() {
    let text = r#"{
      "agents": {"dddddddd-4444-4444-4444-000000000001": {"display_name": "a", "blueprint": "cccccccc-3333-3333-3333-000000000009"}},
      "agent_users": {"eeeeeeee-5555-5555-5555-000000000002": {"parent_agent": "dddddddd-4444-4444-4444-000000000009", "enabled": false}}
    }"#;
    let d = Directory::parse(text, Path::new("d.json")).unwrap();
    assert!(!d.has_blueprint("cccccccc-3333-3333-3333-000000000009"));
    assert_eq!(
        d.agents["dddddddd-4444-4444-4444-000000000001"].blueprint,
        "cccccccc-3333-3333-3333-000000000009"
    );
    assert!(!d.agent_users["eeeeeeee-5555-5555-5555-000000000002"].enabled);
}

#[test]
fn risk_state_and_agent_user_risk_parse_with_entra_spelling() {
    let text = r#"{
      "blueprints": {"cccccccc-3333-3333-3333-000000000001": {"name": "b", "risk_state": "atRisk",
                     "home_tenant": "aaaaaaaa-1111-1111-1111-000000000009"}},
      "agents": {"dddddddd-4444-4444-4444-000000000001": {"display_name": "a", "blueprint": "cccccccc-3333-3333-3333-000000000001",
                 "risk": "high", "risk_state": "confirmedCompromised", "agent_user": "eeeeeeee-5555-5555-5555-000000000001"}},
      "agent_users": {"eeeeeeee-5555-5555-5555-000000000001": {"parent_agent": "dddddddd-4444-4444-4444-000000000001",
                      "risk": "medium", "risk_state": "dismissed", "user_principal_name": "a@contoso.example"}}
    }"#;
    let d = Directory::parse(text, Path::new("d.json")).unwrap();
    let bp = &d.blueprints["cccccccc-3333-3333-3333-000000000001"];
    assert_eq!(bp.risk_state, RiskState::AtRisk);
    assert_eq!(bp.risk, Risk::None);
    let agent = &d.agents["dddddddd-4444-4444-4444-000000000001"];
    assert_eq!(
        (agent.risk, agent.risk_state),
        (Risk::High, RiskState::ConfirmedCompromised)
    );
    let user = &d.agent_users["eeeeeeee-5555-5555-5555-000000000001"];
    assert_eq!(
        (user.risk, user.risk_state),
        (Risk::Medium, RiskState::Dismissed)
    );
    assert_eq!(
        RiskState::ConfirmedCompromised.as_str(),
        "confirmedCompromised"
    );
    let err = Directory::parse(
        r#"{"blueprints": {"cccccccc-3333-3333-3333-000000000001": {"name": "b", "risk_state": "compromised"}}}"#,
        Path::new("d.json"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown variant"), "{err}");
}

#[test]
fn the_shipped_directory_still_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/data/directory.json");
    let d = Directory::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
    assert_eq!(d.blueprints.len(), 3);
    assert!(d.agents.values().all(|a| a.risk_state == RiskState::None));
}

#[test]
fn absent_optional_values_are_left_out_when_written() {
    // Rego reads a null as a value: `not agent.agent_user` is false for `null`, so a
    // written directory must leave absent values out, as the operator's file does.
    let text = r#"{
        "blueprints": {"cccccccc-3333-3333-3333-000000000001": {"name": "b"}},
        "agents": {"dddddddd-4444-4444-4444-000000000001": {
            "display_name": "a", "blueprint": "cccccccc-3333-3333-3333-000000000001",
            "sponsors": [{"id": "ffffffff-6666-6666-6666-000000000001", "type": "user"}]}},
        "agent_users": {"eeeeeeee-5555-5555-5555-000000000001": {
            "parent_agent": "dddddddd-4444-4444-4444-000000000009"}}
    }"#;
    let file = DirectoryFile::parse(text, Path::new("d.json")).unwrap();
    let written = serde_json::to_string(&file).unwrap();
    assert!(!written.contains("null"), "{written}");
    let again = DirectoryFile::parse(&written, Path::new("w.json")).unwrap();
    assert_eq!(serde_json::to_string(&again).unwrap(), written);
}
