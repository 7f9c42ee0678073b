use super::*;
use crate::identity::claims::Claims;

fn classify_json(json: &str) -> Result<Caller, TokenError> {
    let claims: Claims = serde_json::from_str(json).unwrap();
    let tenant: Arc<str> = Arc::from("aaaaaaaa-1111-1111-1111-000000000001");
    let actor = claims.appid.clone().or(claims.azp.clone()).unwrap();
    let subject = claims.oid.clone().unwrap();
    classify(&claims, &tenant, &actor, &subject)
}

const BP: &str = "cccccccc-3333-3333-3333-000000000001";
const AGENT: &str = "dddddddd-4444-4444-4444-000000000001";

#[test]
fn agent_app_only_token() {
    let c = classify_json(&format!(
        r#"{{"appid":"{AGENT}","oid":"{AGENT}","idtyp":"app","xms_act_fct":"3 11 9","xms_sub_fct":"11 3 9","xms_par_app_azp":"{BP}"}}"#
    ))
    .unwrap();
    assert_eq!(c.kind, CallerKind::AgentApp);
    assert_eq!(c.agent_id(), Some(AGENT));
    assert_eq!(c.blueprint_id.as_deref(), Some(BP));
    assert_eq!(c.user_oid(), None);
    assert_eq!(c.facets.actor, vec![3, 9, 11]);
}

#[test]
fn agent_obo_and_agent_user_tokens() {
    let obo = classify_json(&format!(
        r#"{{"appid":"{AGENT}","oid":"ffffffff-6666-6666-6666-000000000001","idtyp":"user","xms_act_fct":"3 9 11","xms_sub_fct":"3 10","xms_par_app_azp":"{BP}"}}"#
    ))
    .unwrap();
    assert_eq!(obo.kind, CallerKind::AgentObo);
    assert_eq!(obo.user_oid(), Some("ffffffff-6666-6666-6666-000000000001"));
    let au = classify_json(&format!(
        r#"{{"azp":"{AGENT}","oid":"eeeeeeee-5555-5555-5555-000000000001","xms_act_fct":"11 3 9","xms_sub_fct":"13 3","xms_par_app_azp":"{BP}"}}"#
    ))
    .unwrap();
    assert_eq!(au.kind, CallerKind::AgentUser);
}

#[test]
fn classic_kinds() {
    let app = classify_json(r#"{"appid":"99999999-7777-7777-7777-000000000001","oid":"99999999-7777-7777-7777-0000000000b1","idtyp":"app","xms_act_fct":"9 3"}"#).unwrap();
    assert_eq!(app.kind, CallerKind::App);
    assert_eq!(app.agent_id(), None);
    let roles_only = classify_json(r#"{"appid":"a","oid":"b","roles":["R"]}"#).unwrap();
    assert_eq!(roles_only.kind, CallerKind::App);
    let user = classify_json(r#"{"azp":"a","oid":"u","scp":"Orders.Read"}"#).unwrap();
    assert_eq!(user.kind, CallerKind::User);
    let mid = classify_json(
        r#"{"appid":"a","oid":"u","idtyp":"user","xms_act_fct":"3 9","xms_sub_fct":"3 13"}"#,
    )
    .unwrap();
    assert_eq!(mid.kind, CallerKind::AppOboAgentUser);
}

#[test]
fn malformed_agent_claims_fail_closed() {
    let base = |act: &str, par: Option<&str>| {
        let par = par.map_or(String::new(), |p| format!(r#","xms_par_app_azp":"{p}""#));
        format!(r#"{{"appid":"{AGENT}","oid":"{AGENT}","idtyp":"app","xms_act_fct":"{act}"{par}}}"#)
    };
    for json in [
        base("3 11 x", Some(BP)),
        base("3 11 9", Some("not-a-guid")),
        base("3 11 9", None),
        base("3 9", Some(BP)),
        base("-1 11", Some(BP)),
    ] {
        assert_eq!(
            classify_json(&json).unwrap_err(),
            TokenError::MalformedAgentClaims,
            "{json}"
        );
    }
    // An app-only agent token whose subject is not the agent itself.
    let json = format!(
        r#"{{"appid":"{AGENT}","oid":"someone-else","idtyp":"app","xms_act_fct":"11","xms_par_app_azp":"{BP}"}}"#
    );
    assert_eq!(
        classify_json(&json).unwrap_err(),
        TokenError::MalformedAgentClaims
    );
}

#[test]
fn facets_are_integer_sets_and_unknown_values_are_kept() {
    assert_eq!(parse_facets(Some("28 7 7 2")).unwrap(), vec![2, 7, 28]);
    assert_eq!(parse_facets(None).unwrap(), Vec::<u32>::new());
    assert!(parse_facets(Some("1.5")).is_err());
    assert!(parse_facets(Some("+11")).is_err());
    assert!(parse_facets(Some("11 -3")).is_err());
}

#[test]
fn kind_names_round_trip() {
    for k in CallerKind::ALL {
        assert_eq!(CallerKind::parse(k.as_str()), Some(k));
    }
    assert_eq!(CallerKind::parse("agent"), None);
}
