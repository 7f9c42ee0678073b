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
      "agents": {"dddddddd-4444-4444-4444-000000000001": {"display_name": "a", "blueprint": "cccccccc-3333-3333-3333-000000000009",
                 "agent_user": "eeeeeeee-5555-5555-5555-000000000001"}},
      "agent_users": {"eeeeeeee-5555-5555-5555-000000000002": {"parent_agent": "dddddddd-4444-4444-4444-000000000009"}}
    }"#;
    let DirectoryError::Invalid { problems, .. } =
        Directory::parse(bad, Path::new("d.json")).unwrap_err()
    else {
        panic!("expected validation problems")
    };
    assert!(problems.len() >= 4, "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("NOT-A-GUID")));
    assert!(problems
        .iter()
        .any(|p| p.contains("not listed under blueprints")));
    assert!(problems.iter().any(|p| p.contains("agent_users")));
}
