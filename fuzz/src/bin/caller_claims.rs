//! `classify_unverified` on arbitrary bytes: who a token's claims say is calling.
//!
//! An accepted classification must agree with the claims it came from, read here again as a
//! plain JSON value: the tenant is `tid`, the actor `appid` (v1) or `azp`, the subject `oid`.
//! Agent kinds carry the agent identity facet and a lower-case GUID blueprint; other kinds
//! carry no blueprint; an app-only agent is its own subject; agent users carry the agent user
//! facet; facet lists are sorted and free of duplicates.
//!
//! The re-read is lossy about UTF-8: the claims parser (serde_json into a struct) skips claims
//! it does not know without validating their bytes, so invalid UTF-8 in an ignored claim
//! does not refuse the token; invalid bytes become U+FFFD before the claims are read again.

#![no_main]

use agentgate::guid::is_guid;
use agentgate::identity::caller::classify_unverified;
use agentgate::identity::CallerKind;
use libfuzzer_sys::fuzz_target;

const AGENT_IDENTITY: u32 = 11;
const AGENT_USER: u32 = 13;

fn strictly_increasing(values: &[u32]) -> bool {
    values.windows(2).all(|w| w[0] < w[1])
}

fuzz_target!(|data: &[u8]| {
    let Ok(caller) = classify_unverified(data) else {
        return;
    };
    let claims: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(data))
        .expect("classified claims that are not JSON");
    let claim = |name: &str| claims.get(name).and_then(|v| v.as_str());
    assert_eq!(Some(&*caller.tenant), claim("tid"));
    let actor = if claim("ver") == Some("1.0") {
        claim("appid")
    } else {
        claim("azp")
    };
    assert_eq!(Some(&*caller.actor_id), actor);
    assert_eq!(Some(&*caller.subject_id), claim("oid"));

    let facets = &caller.facets;
    assert!(strictly_increasing(&facets.actor));
    assert!(strictly_increasing(&facets.subject));
    assert!(strictly_increasing(&facets.tenant));

    if caller.kind.is_agent() {
        let blueprint = caller
            .blueprint_id
            .as_deref()
            .expect("an agent without a blueprint");
        assert!(is_guid(blueprint));
        assert!(!blueprint.bytes().any(|b| b.is_ascii_uppercase()));
        assert_eq!(
            Some(blueprint),
            claim("xms_par_app_azp")
                .map(str::to_ascii_lowercase)
                .as_deref()
        );
        assert!(facets.actor.contains(&AGENT_IDENTITY));
    } else {
        assert!(caller.blueprint_id.is_none());
        assert!(!facets.actor.contains(&AGENT_IDENTITY));
        assert!(claims.get("xms_par_app_azp").is_none_or(|p| p.is_null()));
    }
    match caller.kind {
        CallerKind::AgentApp => assert_eq!(caller.actor_id, caller.subject_id),
        CallerKind::AgentUser | CallerKind::AppOboAgentUser => {
            assert!(facets.subject.contains(&AGENT_USER))
        }
        _ => {}
    }
});
