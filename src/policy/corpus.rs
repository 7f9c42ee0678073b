//! Sample policy inputs for checking that two engines decide alike.
//!
//! The inputs have the shape the gateway builds (docs/policy-input.md) and draw their values
//! from the policy set's own data: blueprint, agent and agent-user ids from
//! `data.directory`, route ids from `data.access`, and every method, path prefix and
//! permission the data mentions, plus values that match nothing. Flags, risk levels and risk
//! states take good, bad and malformed values, so the deny branches are reached as well as
//! the allows.
//! The sequence is fixed by its seed, so a refusal can be reproduced.

use regorus::Value;
use serde_json::{json, Map, Value as Json};
use std::collections::BTreeSet;

const KINDS: &[&str] = &[
    "agent_app",
    "agent_obo",
    "agent_user",
    "app",
    "user",
    "app_obo_agent_user",
    "unknown_kind",
];
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
const CLIENT_IPS: &[&str] = &[
    "127.0.0.1",
    "::1",
    "10.1.2.3",
    "192.168.7.9",
    "::ffff:10.0.0.1",
    "203.0.113.9",
    "2001:db8::1",
];
/// 2026-01-01T00:00:00Z; sampled times fall in the two weeks after it.
const EPOCH_SECS: u64 = 1_767_225_600;

/// Values found in the data document, with ones that match nothing added.
struct Vocabulary {
    blueprints: Vec<String>,
    agents: Vec<String>,
    agent_users: Vec<String>,
    routes: Vec<String>,
    paths: Vec<String>,
    permissions: Vec<String>,
    clients: Vec<String>,
}

/// A small deterministic generator (xorshift64*): no dependency, same inputs every run.
struct Sampler(u64);

impl Sampler {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &'a [String]) -> &'a str {
        &items[self.below(items.len())]
    }

    fn pick_str(&mut self, items: &[&'static str]) -> &'static str {
        items[self.below(items.len())]
    }

    /// True one time in `n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn subset(&mut self, items: &[String], max: usize) -> Vec<String> {
        (0..self.below(max + 1))
            .map(|_| self.pick(items).to_string())
            .collect()
    }

    /// Mostly `good`; otherwise a wrong, missing-like or mistyped value.
    fn flag(&mut self, good: bool) -> Json {
        match self.below(8) {
            0 => Json::Bool(!good),
            1 => Json::Null,
            2 => Json::String(good.to_string()),
            _ => Json::Bool(good),
        }
    }

    fn risk(&mut self) -> Json {
        match self.below(8) {
            0 => json!("high"),
            1 => json!("medium"),
            2 => Json::Null,
            3 => json!(3),
            4 => json!("low"),
            _ => json!("none"),
        }
    }

    /// Mostly no risk state; otherwise each of Entra's states, or a malformed one.
    fn risk_state(&mut self) -> Json {
        match self.below(10) {
            0 => json!("confirmedCompromised"),
            1 => json!("atRisk"),
            2 => json!("dismissed"),
            3 => Json::Null,
            _ => json!("none"),
        }
    }
}

fn keys(doc: &Json, path: &[&str]) -> Vec<String> {
    let mut at = doc;
    for p in path {
        match at.get(p) {
            Some(v) => at = v,
            None => return Vec::new(),
        }
    }
    at.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Every string under a key named one of `names`, anywhere in `doc`.
fn strings_under(doc: &Json, names: &[&str], out: &mut BTreeSet<String>) {
    match doc {
        Json::Object(o) => {
            for (k, v) in o {
                if names.contains(&k.as_str()) {
                    collect_strings(v, out);
                }
                strings_under(v, names, out);
            }
        }
        Json::Array(a) => a.iter().for_each(|v| strings_under(v, names, out)),
        _ => {}
    }
}

fn collect_strings(doc: &Json, out: &mut BTreeSet<String>) {
    match doc {
        Json::String(s) => {
            out.insert(s.clone());
        }
        Json::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

fn with_unknown(mut values: Vec<String>, unknown: &str) -> Vec<String> {
    values.push(unknown.to_string());
    values
}

impl Vocabulary {
    fn new(data: &Json) -> Self {
        let mut routes: BTreeSet<String> =
            keys(data, &["access", "non_agent"]).into_iter().collect();
        if let Some(bps) = data.pointer("/access/blueprints").and_then(Json::as_object) {
            for bp in bps.values() {
                routes.extend(keys(bp, &["routes"]));
            }
        }
        let mut prefixes = BTreeSet::new();
        strings_under(data, &["path_prefixes"], &mut prefixes);
        let mut paths: BTreeSet<String> = ["/".to_string(), "/unlisted".to_string()].into();
        for p in &prefixes {
            let bare = p.trim_end_matches('/');
            paths.insert(p.clone());
            paths.insert(format!("{bare}/42"));
            paths.insert(format!("{bare}x"));
        }
        let mut permissions = BTreeSet::new();
        strings_under(
            data,
            &["roles", "scopes", "permissions", "revoked_permissions"],
            &mut permissions,
        );
        permissions.insert("Unlisted.Permission".into());
        let mut clients = BTreeSet::new();
        strings_under(data, &["clients"], &mut clients);
        Self {
            blueprints: with_unknown(
                keys(data, &["directory", "blueprints"]),
                "00000000-0000-0000-0000-0000000000b0",
            ),
            agents: with_unknown(
                keys(data, &["directory", "agents"]),
                "00000000-0000-0000-0000-0000000000a0",
            ),
            agent_users: with_unknown(
                keys(data, &["directory", "agent_users"]),
                "00000000-0000-0000-0000-0000000000e0",
            ),
            routes: with_unknown(routes.into_iter().collect(), "unlisted-route"),
            paths: paths.into_iter().collect(),
            permissions: permissions.into_iter().collect(),
            clients: with_unknown(
                clients.into_iter().collect(),
                "00000000-0000-0000-0000-0000000000c0",
            ),
        }
    }
}

/// The empty input, then `count` inputs for the policy set whose data document is `data`,
/// from `seed`. Made one at a time, so a long check holds one input in memory.
pub fn sample_inputs(data: &Value, count: usize, seed: u64) -> impl Iterator<Item = Value> {
    let data: Json = serde_json::from_str(&data.to_string()).unwrap_or(Json::Null);
    let words = Vocabulary::new(&data);
    let mut rng = Sampler(seed | 1);
    // The degenerate input: a policy must still decide (and both engines alike).
    std::iter::once(Value::new_object())
        .chain((0..count).map(move |_| Value::from(one_input(&words, &mut rng))))
}

fn one_input(w: &Vocabulary, rng: &mut Sampler) -> Json {
    let kind = rng.pick_str(KINDS);
    let route = rng.pick(&w.routes);
    let tenant = "aaaaaaaa-1111-1111-1111-000000000001";
    let mut input = Map::new();
    input.insert(
        "request".into(),
        json!({
            "method": rng.pick_str(METHODS),
            "host": "api.example",
            "path": rng.pick(&w.paths),
            "query": "",
            "client_ip": rng.pick_str(CLIENT_IPS),
            "headers": {"user-agent": "agentgate-verify"},
            "time_ns": (EPOCH_SECS + rng.next() % (14 * 86_400)) * 1_000_000_000,
        }),
    );
    input.insert("route".into(), json!({"id": route, "path_prefix": "/"}));
    let agent_kind = kind.starts_with("agent_");
    let actor = if agent_kind {
        rng.pick(&w.agents).to_string()
    } else {
        rng.pick(&w.clients).to_string()
    };
    input.insert(
        "token".into(),
        json!({
            "kind": kind,
            "version": if rng.one_in(2) { "1.0" } else { "2.0" },
            "tenant": tenant,
            "issuer": format!("https://sts.windows.net/{tenant}/"),
            "audience": "api://verify",
            "roles": rng.subset(&w.permissions, 3),
            "scopes": rng.subset(&w.permissions, 3),
            "facets": {"actor": [11], "subject": [11], "tenant": [3]},
            "idtyp": "app",
            "issued_at": EPOCH_SECS,
            "not_before": EPOCH_SECS,
            "expires_at": EPOCH_SECS + 3600,
        }),
    );
    input.insert("actor".into(), json!({"tenant": tenant, "id": actor}));
    input.insert("subject".into(), json!({"tenant": tenant, "id": actor}));
    if agent_kind {
        let known = !rng.one_in(6);
        input.insert(
            "agent".into(),
            json!({
                "id": actor, "known": known, "display_name": "verify",
                "enabled": rng.flag(true), "risk": rng.risk(), "risk_state": rng.risk_state(),
                "agent_user": rng.pick(&w.agent_users), "sponsors": [],
            }),
        );
        let revoked = if rng.one_in(3) {
            json!([rng.pick(&w.permissions)])
        } else {
            json!([])
        };
        let mut blueprint = json!({
            "id": rng.pick(&w.blueprints), "known": rng.flag(true), "name": "verify",
            "publisher": "verify", "disabled": rng.flag(false), "risk": rng.risk(),
            "risk_state": rng.risk_state(), "roles": [], "permissions": rng.subset(&w.permissions, 3),
            "revoked_permissions": revoked,
        });
        if rng.one_in(8) {
            if let Some(b) = blueprint.as_object_mut() {
                b.remove("revoked_permissions");
            }
        }
        input.insert("blueprint".into(), blueprint);
    } else if !rng.one_in(4) {
        input.insert("agent".into(), Json::Null);
        input.insert("blueprint".into(), Json::Null);
    }
    let user = match kind {
        "agent_app" | "app" => Json::Null,
        "agent_user" | "app_obo_agent_user" => json!({
            "id": rng.pick(&w.agent_users), "type": "agent_user", "enabled": rng.flag(true),
            "risk": rng.risk(), "risk_state": rng.risk_state(),
        }),
        _ => {
            json!({"id": "00000000-0000-0000-0000-0000000000f0", "type": "human", "enabled": rng.flag(true)})
        }
    };
    input.insert("user".into(), user);
    Json::Object(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Value {
        Value::from(json!({
            "directory": {"blueprints": {"bp1": {}}, "agents": {"ag1": {}}, "agent_users": {}},
            "access": {
                "blueprints": {"bp1": {"routes": {"orders": [{"methods": ["GET"], "path_prefixes": ["/orders"], "roles": ["R"]}]}}},
                "non_agent": {"crm": [{"kinds": ["app"], "clients": ["c1"], "methods": ["GET"], "path_prefixes": ["/crm/"], "roles": ["R2"]}]}
            }
        }))
    }

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let inputs = |seed| sample_inputs(&data(), 50, seed).collect::<Vec<_>>();
        assert_eq!(inputs(7), inputs(7));
        assert_ne!(inputs(7), inputs(8));
    }

    #[test]
    fn inputs_draw_on_the_data_and_on_values_it_lacks() {
        let inputs: Vec<String> = sample_inputs(&data(), 400, 1)
            .map(|v| v.to_string())
            .collect();
        for needle in [
            "\"bp1\"",
            "\"ag1\"",
            "\"orders\"",
            "\"crm\"",
            "\"/orders/42\"",
            "\"/crm/\"",
            "\"R2\"",
            "\"c1\"",
            "unlisted-route",
            "Unlisted.Permission",
            "\"agent_user\"",
            "confirmedCompromised",
        ] {
            assert!(
                inputs.iter().any(|i| i.contains(needle)),
                "no sampled input mentions {needle}"
            );
        }
        assert_eq!(inputs[0], "{}");
    }
}
