use super::*;
use serde_json::json;

const TENANT: &str = "aaaaaaaa-1111-1111-1111-000000000001";
const BP: &str = "cccccccc-3333-3333-3333-000000000001";
const BP_PRINCIPAL: &str = "c0c0c0c0-3333-3333-3333-000000000001";
const AGENT: &str = "dddddddd-4444-4444-4444-000000000001";
const USER: &str = "eeeeeeee-5555-5555-5555-000000000001";

fn objects<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Vec<T> {
    serde_json::from_value(v).unwrap()
}

fn blueprint(enabled: serde_json::Value, by_microsoft: serde_json::Value) -> serde_json::Value {
    json!({"id": BP_PRINCIPAL, "appId": BP, "displayName": "Sales", "accountEnabled": enabled,
           "appOwnerOrganizationId": "AAAAAAAA-1111-1111-1111-00000000000F",
           "publisherName": "Contoso", "disabledByMicrosoftStatus": by_microsoft})
}

fn agent(enabled: bool, sponsors: serde_json::Value) -> serde_json::Value {
    json!({"id": AGENT.to_uppercase(), "displayName": "EMEA", "agentIdentityBlueprintId": BP,
           "accountEnabled": enabled, "disabledByMicrosoftStatus": null, "sponsors": sponsors})
}

#[test]
fn risk_levels_fail_closed() {
    assert_eq!(risk_level(Some("none")), Risk::None);
    assert_eq!(risk_level(Some("low")), Risk::Low);
    assert_eq!(risk_level(Some("medium")), Risk::Medium);
    assert_eq!(risk_level(Some("high")), Risk::High);
    for hidden_or_unknown in [
        Some("hidden"),
        Some("unknownFutureValue"),
        Some("severe"),
        None,
    ] {
        assert_eq!(
            risk_level(hidden_or_unknown),
            Risk::High,
            "{hidden_or_unknown:?}"
        );
    }
}

#[test]
fn risk_states_keep_entra_values_and_unknown_ones_are_at_risk() {
    for (text, state) in [
        ("none", RiskState::None),
        ("confirmedSafe", RiskState::ConfirmedSafe),
        ("remediated", RiskState::Remediated),
        ("dismissed", RiskState::Dismissed),
        ("atRisk", RiskState::AtRisk),
        ("confirmedCompromised", RiskState::ConfirmedCompromised),
    ] {
        assert_eq!(risk_state(Some(text)), state);
        assert_eq!(state.as_str(), text);
    }
    assert_eq!(risk_state(Some("unknownFutureValue")), RiskState::AtRisk);
    assert_eq!(risk_state(None), RiskState::AtRisk);
}

#[test]
fn blueprint_principals_map_by_app_id_and_disable_fail_closed() {
    let cases = [
        (json!(true), json!(null), false),
        (json!(true), json!("NotDisabled"), false),
        (json!(false), json!(null), true),
        (json!(null), json!(null), true),
        (
            json!(true),
            json!("DisabledDueToViolationOfServicesAgreement"),
            true,
        ),
    ];
    for (enabled, by_microsoft, disabled) in cases {
        let mut b = DirectoryBuilder::new(TENANT);
        b.add_blueprints(objects(json!([blueprint(
            enabled.clone(),
            by_microsoft.clone()
        )])));
        let g = b.finish().unwrap();
        let bp = &g.file.blueprints[BP];
        assert_eq!(bp.disabled, disabled, "{enabled} {by_microsoft}");
        assert_eq!(bp.name, "Sales");
        assert_eq!(bp.publisher.as_deref(), Some("Contoso"));
        assert_eq!(bp.tenant.as_deref(), Some(TENANT));
        assert_eq!(
            bp.home_tenant.as_deref(),
            Some("aaaaaaaa-1111-1111-1111-00000000000f")
        );
        assert_eq!(g.counts.blueprints, 1);
    }
}

#[test]
fn agents_keep_user_and_group_sponsors_sorted() {
    let mut b = DirectoryBuilder::new(TENANT);
    b.add_agents(objects(json!([agent(true, json!([
        {"@odata.type": "#microsoft.graph.user", "id": "ffffffff-6666-6666-6666-0000000000b2", "displayName": "Dana"},
        {"@odata.type": "#microsoft.graph.group", "id": "ffffffff-6666-6666-6666-0000000000a1", "displayName": "Sales Ops"},
        {"@odata.type": "#microsoft.graph.servicePrincipal", "id": "ffffffff-6666-6666-6666-0000000000c3"}
    ]))])));
    let g = b.finish().unwrap();
    let a = &g.file.agents[AGENT];
    assert!(a.enabled);
    assert_eq!(a.blueprint, BP);
    assert_eq!(a.tenant.as_deref(), Some(TENANT));
    let sponsors: Vec<(&str, SponsorKind)> =
        a.sponsors.iter().map(|s| (s.id.as_str(), s.kind)).collect();
    assert_eq!(
        sponsors,
        vec![
            ("ffffffff-6666-6666-6666-0000000000a1", SponsorKind::Group),
            ("ffffffff-6666-6666-6666-0000000000b2", SponsorKind::User),
        ]
    );
}

#[test]
fn an_agent_disabled_by_microsoft_or_listed_twice_disabled_is_disabled() {
    let mut b = DirectoryBuilder::new(TENANT);
    let mut by_microsoft = agent(true, json!([]));
    by_microsoft["disabledByMicrosoftStatus"] = json!("DisabledDueToViolationOfServicesAgreement");
    b.add_agents(objects(json!([by_microsoft])));
    assert!(!b.finish().unwrap().file.agents[AGENT].enabled);

    let mut b = DirectoryBuilder::new(TENANT);
    b.add_agents(objects(json!([agent(false, json!([]))])));
    b.add_agents(objects(json!([agent(true, json!([]))])));
    let g = b.finish().unwrap();
    assert!(!g.file.agents[AGENT].enabled);
    assert_eq!(g.counts.agents, 2);
}

#[test]
fn agent_users_link_back_and_orphans_stay() {
    let mut b = DirectoryBuilder::new(TENANT);
    b.add_agents(objects(json!([agent(true, json!([]))])));
    b.add_agent_users(objects(json!([
        {"id": USER, "displayName": "EMEA (user)", "userPrincipalName": "emea@contoso.example",
         "accountEnabled": true, "identityParentId": AGENT},
        {"id": "eeeeeeee-5555-5555-5555-000000000009", "accountEnabled": true,
         "identityParentId": "dddddddd-4444-4444-4444-000000000009"}
    ])));
    let g = b.finish().unwrap();
    assert_eq!(g.file.agents[AGENT].agent_user.as_deref(), Some(USER));
    let u = &g.file.agent_users[USER];
    assert_eq!(u.parent_agent, AGENT);
    assert_eq!(
        u.user_principal_name.as_deref(),
        Some("emea@contoso.example")
    );
    assert!(u.enabled);
    assert!(g
        .file
        .agent_users
        .contains_key("eeeeeeee-5555-5555-5555-000000000009"));
    assert_eq!(g.file.problems(), Vec::<String>::new());
}

#[test]
fn risky_agents_land_on_their_object_whatever_the_kind() {
    let mut b = DirectoryBuilder::new(TENANT);
    b.add_blueprints(objects(json!([blueprint(json!(true), json!(null))])));
    b.add_agents(objects(json!([agent(true, json!([]))])));
    b.add_agent_users(objects(json!([
        {"id": USER, "accountEnabled": true, "identityParentId": AGENT}
    ])));
    b.add_risky_agents(objects(json!([
        {"@odata.type": "#microsoft.graph.riskyAgentIdentity", "id": AGENT,
         "riskLevel": "hidden", "riskState": "atRisk"},
        {"@odata.type": "#microsoft.graph.riskyAgentUser", "id": USER,
         "riskLevel": "medium", "riskState": "dismissed"},
        {"@odata.type": "#microsoft.graph.riskyAgentIdentityBlueprintPrincipal", "id": BP_PRINCIPAL,
         "riskLevel": "high", "riskState": "confirmedCompromised"},
        {"@odata.type": "#microsoft.graph.riskyAgentIdentity", "id": "dddddddd-4444-4444-4444-00000000dead",
         "riskLevel": "high", "riskState": "atRisk"},
        {"@odata.type": "#microsoft.graph.riskyAgentUser", "id": USER,
         "riskLevel": "high", "riskState": "confirmedCompromised", "isDeleted": true}
    ])));
    let g = b.finish().unwrap();
    let a = &g.file.agents[AGENT];
    assert_eq!((a.risk, a.risk_state), (Risk::High, RiskState::AtRisk));
    let u = &g.file.agent_users[USER];
    assert_eq!((u.risk, u.risk_state), (Risk::Medium, RiskState::Dismissed));
    let bp = &g.file.blueprints[BP];
    assert_eq!(
        (bp.risk, bp.risk_state),
        (Risk::High, RiskState::ConfirmedCompromised)
    );
    assert_eq!(g.counts.risky_agents, 5);
}

#[test]
fn unusable_objects_fail_the_whole_read() {
    let mut b = DirectoryBuilder::new(TENANT);
    b.add_agents(objects(json!([
        {"id": "not-a-guid", "agentIdentityBlueprintId": BP, "accountEnabled": true},
        {"id": AGENT, "accountEnabled": true}
    ])));
    b.add_agent_users(objects(json!([{"id": USER, "accountEnabled": true}])));
    let problems = b.finish().unwrap_err();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].contains("\"not-a-guid\" is not a GUID"));
    assert!(problems[1].contains("has no agentIdentityBlueprintId"));
    assert!(problems[2].contains("has no identityParentId"));
}

#[test]
fn a_cut_expansion_asks_for_the_sponsor_list() {
    let many: Vec<serde_json::Value> = (0..EXPAND_LIMIT)
        .map(|i| json!({"@odata.type": "#microsoft.graph.user", "id": format!("ffffffff-6666-6666-6666-{i:012}")}))
        .collect();
    let full: AgentIdentityObject = serde_json::from_value(agent(true, json!(many))).unwrap();
    assert!(needs_sponsor_list(&full));
    let few: AgentIdentityObject = serde_json::from_value(agent(true, json!([]))).unwrap();
    assert!(!needs_sponsor_list(&few));
    let mut linked = agent(true, json!([]));
    linked["sponsors@odata.nextLink"] = json!("https://graph.microsoft.com/next");
    assert!(needs_sponsor_list(&serde_json::from_value(linked).unwrap()));
}
