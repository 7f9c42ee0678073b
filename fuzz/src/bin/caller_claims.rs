//! `classify_unverified` on arbitrary bytes: who a token's claims say is calling.
//!
//! An accepted classification must agree with the claims it came from, read again here
//! independently of the parser's own claims type: the tenant is `tid`, the actor `appid`
//! (v1) or `azp`, the subject `oid`. Agent kinds carry the agent identity facet and the
//! `xms_par_app_azp` blueprint as a lower-case GUID; other kinds carry neither; an app-only
//! agent is its own subject; agent users carry the agent user facet; facet lists are sorted
//! and free of duplicates.
//!
//! The re-read has the parser's tolerance: claims nobody reads are skipped unvalidated, as
//! serde skips them. A strict JSON reader refuses more: invalid UTF-8 or out-of-range
//! numbers in a skipped claim.

#![no_main]

use agentgate::guid::is_guid;
use agentgate::identity::caller::classify_unverified;
use agentgate::identity::CallerKind;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

const AGENT_IDENTITY: u32 = 11;
const AGENT_USER: u32 = 13;

/// The claims classification reads.
#[derive(Deserialize)]
struct Named {
    tid: Option<String>,
    ver: Option<String>,
    appid: Option<String>,
    azp: Option<String>,
    oid: Option<String>,
    xms_par_app_azp: Option<String>,
}

fn strictly_increasing(values: &[u32]) -> bool {
    values.windows(2).all(|w| w[0] < w[1])
}

fuzz_target!(|data: &[u8]| {
    let Ok(caller) = classify_unverified(data) else {
        return;
    };
    assert_eq!(
        data.trim_ascii_start().first(),
        Some(&b'{'),
        "classified claims that are not a JSON object"
    );
    std::str::from_utf8(data).expect("classified claims that are not UTF-8");
    let claims: Named = serde_json::from_slice(data).expect("classified ill-typed claims");
    assert_eq!(Some(&*caller.tenant), claims.tid.as_deref());
    let actor = if claims.ver.as_deref() == Some("1.0") {
        &claims.appid
    } else {
        &claims.azp
    };
    assert_eq!(Some(&*caller.actor_id), actor.as_deref());
    assert_eq!(Some(&*caller.subject_id), claims.oid.as_deref());

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
        let named = claims.xms_par_app_azp.map(|p| p.to_ascii_lowercase());
        assert_eq!(Some(blueprint), named.as_deref());
        assert!(facets.actor.contains(&AGENT_IDENTITY));
    } else {
        assert!(caller.blueprint_id.is_none());
        assert!(claims.xms_par_app_azp.is_none());
        assert!(!facets.actor.contains(&AGENT_IDENTITY));
    }
    match caller.kind {
        CallerKind::AgentApp => assert_eq!(caller.actor_id, caller.subject_id),
        CallerKind::AgentUser | CallerKind::AppOboAgentUser => {
            assert!(facets.subject.contains(&AGENT_USER))
        }
        _ => {}
    }
});
