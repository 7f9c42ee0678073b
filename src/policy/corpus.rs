//! Policy inputs for checking that two engines decide alike.
//!
//! The corpus is driven by the input schema (`docs/policy-input.schema.json`, compiled in),
//! the policy set's own data, and the inputs of the set's own Rego tests:
//! - every input a test of the set evaluates the policy on ([`super::capture::test_inputs`]),
//!   which reaches the allows and denies the author thought of;
//! - each of those with one to three fields replaced, every field of the schema in turn,
//!   which walks the neighbourhood of each case (another method, tenant, issuer, header,
//!   facet, `idtyp`, a flag flipped or mistyped, a field missing);
//! - inputs generated from the schema alone, with values drawn from the vocabulary of the
//!   set's data (every string it holds: ids, route ids, methods, path prefixes,
//!   permissions, named locations) plus values that match nothing and mistyped ones.
//!
//! The sequence is fixed by its seed, so a refusal can be reproduced.

use regorus::Value;
use serde_json::{json, Map, Value as Json};
use std::collections::BTreeSet;

/// The policy input schema, as published.
const SCHEMA: &str = include_str!("../../docs/policy-input.schema.json");

/// 2026-01-01T00:00:00Z; sampled times fall in the two weeks after it.
const EPOCH_SECS: u64 = 1_767_225_600;

/// Mutated copies made of each seed input.
const MUTATIONS_PER_SEED: usize = 4;

/// Strings that are not in any data document: to reach "matches nothing" branches.
const STRANGERS: &[&str] = &[
    "",
    "unlisted",
    "00000000-0000-0000-0000-0000000000f0",
    "/unlisted",
    "GET",
    "DELETE",
    "PURGE",
    "10.1.2.3",
    "203.0.113.9",
    "2001:db8::1",
    "::ffff:10.0.0.1",
    "https://sts.windows.net/00000000-0000-0000-0000-0000000000f0/",
    "api://unlisted",
    "user",
    "app",
];

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

    /// True one time in `n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

/// Every string the data document holds, as values or object keys, plus path variants of
/// the path-like ones and values that match nothing.
fn vocabulary(data: &Json) -> Vec<String> {
    fn walk(doc: &Json, out: &mut BTreeSet<String>) {
        match doc {
            Json::String(s) => {
                out.insert(s.clone());
            }
            Json::Array(a) => a.iter().for_each(|v| walk(v, out)),
            Json::Object(o) => {
                for (k, v) in o {
                    out.insert(k.clone());
                    walk(v, out);
                }
            }
            _ => {}
        }
    }
    let mut words = BTreeSet::new();
    walk(data, &mut words);
    let paths: Vec<String> = words
        .iter()
        .filter(|w| w.starts_with('/'))
        .cloned()
        .collect();
    for p in paths {
        let bare = p.trim_end_matches('/');
        words.insert(format!("{bare}/42"));
        words.insert(format!("{bare}x"));
    }
    words.extend(STRANGERS.iter().map(|s| s.to_string()));
    words.into_iter().collect()
}

/// The input schema with its `$ref`s resolvable.
struct Schema {
    root: Json,
}

impl Schema {
    fn load() -> Self {
        Self {
            root: serde_json::from_str(SCHEMA).unwrap_or(Json::Null),
        }
    }

    /// `node` with a `$ref` followed.
    fn resolve<'a>(&'a self, node: &'a Json) -> &'a Json {
        match node.get("$ref").and_then(Json::as_str) {
            Some(r) => r
                .strip_prefix('#')
                .and_then(|p| self.root.pointer(p))
                .unwrap_or(node),
            None => node,
        }
    }

    /// Every field of the schema: its path from the root and its schema node.
    fn fields(&self) -> Vec<(Vec<String>, &Json)> {
        let mut out = Vec::new();
        self.collect(&self.root, &mut Vec::new(), &mut out);
        out
    }

    fn collect<'a>(
        &'a self,
        node: &'a Json,
        at: &mut Vec<String>,
        out: &mut Vec<(Vec<String>, &'a Json)>,
    ) {
        let node = self.resolve(node);
        if !at.is_empty() {
            out.push((at.clone(), node));
        }
        let branches = node.get("oneOf").and_then(Json::as_array);
        for branch in branches.into_iter().flatten().chain(std::iter::once(node)) {
            let branch = self.resolve(branch);
            for (name, child) in branch
                .get("properties")
                .and_then(Json::as_object)
                .into_iter()
                .flatten()
            {
                at.push(name.clone());
                self.collect(child, at, out);
                at.pop();
            }
        }
    }
}

/// Generates values for schema nodes.
struct Generator<'a> {
    schema: &'a Schema,
    words: &'a [String],
    rng: Sampler,
}

impl Generator<'_> {
    fn word(&mut self) -> Json {
        Json::String(self.words[self.rng.below(self.words.len())].clone())
    }

    /// A value of another type than the schema asks for, or null.
    fn mistyped(&mut self) -> Json {
        match self.rng.below(5) {
            0 => Json::Null,
            1 => json!("true"),
            2 => json!(3),
            3 => json!([]),
            _ => json!({}),
        }
    }

    fn integer(&mut self, name: &str) -> Json {
        match name {
            "time_ns" => json!((EPOCH_SECS + self.rng.next() % (14 * 86_400)) * 1_000_000_000),
            _ => match self.rng.below(8) {
                0 => json!(0),
                1 => json!(3),
                2 => json!(11),
                3 => json!(13),
                4 => json!(EPOCH_SECS + 3600),
                5 => json!(self.rng.next() % 1_000),
                _ => json!(EPOCH_SECS),
            },
        }
    }

    /// A value for `node`, the field called `name`; mostly well typed.
    fn value(&mut self, node: &Json, name: &str, depth: usize) -> Json {
        let node = self.schema.resolve(node);
        if self.rng.one_in(16) {
            return self.mistyped();
        }
        if let Some(branches) = node.get("oneOf").and_then(Json::as_array) {
            let pick = &branches[self.rng.below(branches.len())];
            return self.value(pick, name, depth);
        }
        if let Some(values) = node.get("enum").and_then(Json::as_array) {
            return if self.rng.one_in(8) {
                self.word()
            } else {
                values[self.rng.below(values.len())].clone()
            };
        }
        let types: Vec<&str> = match node.get("type") {
            Some(Json::String(t)) => vec![t.as_str()],
            Some(Json::Array(ts)) => ts.iter().filter_map(Json::as_str).collect(),
            _ => vec!["string"],
        };
        match types[self.rng.below(types.len())] {
            "null" => Json::Null,
            "boolean" => Json::Bool(self.rng.one_in(2)),
            "integer" | "number" => self.integer(name),
            "array" => {
                let items = node
                    .get("items")
                    .cloned()
                    .unwrap_or(json!({"type": "string"}));
                Json::Array(
                    (0..self.rng.below(4))
                        .map(|_| self.value(&items, name, depth + 1))
                        .collect(),
                )
            }
            "object" => self.object(node, depth),
            _ => self.word(),
        }
    }

    fn object(&mut self, node: &Json, depth: usize) -> Json {
        let mut out = Map::new();
        if depth > 6 {
            return Json::Object(out);
        }
        for (name, child) in node
            .get("properties")
            .and_then(Json::as_object)
            .into_iter()
            .flatten()
        {
            if !self.rng.one_in(12) {
                let v = self.value(child, name, depth + 1);
                out.insert(name.clone(), v);
            }
        }
        if let Some(extra) = node.get("additionalProperties").filter(|a| a.is_object()) {
            for _ in 0..self.rng.below(3) {
                let key = match self.word() {
                    Json::String(s) => s,
                    _ => String::new(),
                };
                let v = self.value(extra, &key, depth + 1);
                out.insert(key, v);
            }
        }
        Json::Object(out)
    }

    /// `seed` with one to three schema fields replaced by fresh values or removed.
    fn mutate(&mut self, seed: &Json, fields: &[(Vec<String>, &Json)]) -> Json {
        let mut input = seed.clone();
        for _ in 0..=self.rng.below(3) {
            let (path, node) = &fields[self.rng.below(fields.len())];
            let Some((last, parents)) = path.split_last() else {
                continue;
            };
            let value = if self.rng.one_in(10) {
                None
            } else {
                Some(self.value(node, last, parents.len()))
            };
            set_path(&mut input, parents, last, value);
        }
        input
    }
}

/// Sets (or with `None`, removes) `parents.last` in `doc`, creating objects on the way.
fn set_path(doc: &mut Json, parents: &[String], last: &str, value: Option<Json>) {
    let mut at = doc;
    for p in parents {
        if !at.is_object() {
            *at = Json::Object(Map::new());
        }
        let Json::Object(map) = at else { return };
        at = map
            .entry(p.clone())
            .or_insert_with(|| Json::Object(Map::new()));
    }
    if !at.is_object() {
        *at = Json::Object(Map::new());
    }
    if let Json::Object(map) = at {
        match value {
            Some(v) => {
                map.insert(last.to_string(), v);
            }
            None => {
                map.remove(last);
            }
        }
    }
}

/// The inputs both engines must decide alike for the set whose data document is `data`:
/// the empty input, every seed (the set's test inputs), [`MUTATIONS_PER_SEED`] mutations of
/// each seed, then `generated` inputs built from the schema alone. Made one at a time.
pub fn sample_inputs(
    data: &Value,
    seeds: &[Value],
    generated: usize,
    seed: u64,
) -> impl Iterator<Item = Value> {
    let data: Json = serde_json::from_str(&data.to_string()).unwrap_or(Json::Null);
    let seeds: Vec<Json> = seeds
        .iter()
        .filter_map(|s| serde_json::from_str(&s.to_string()).ok())
        .collect();
    let schema = Schema::load();
    let words = vocabulary(&data);
    let mut rng = Sampler(seed | 1);
    let mut out: Vec<Value> = vec![Value::new_object()];
    {
        let fields = schema.fields();
        let mut g = Generator {
            schema: &schema,
            words: &words,
            rng: Sampler(rng.next() | 1),
        };
        for s in &seeds {
            out.push(Value::from(s.clone()));
            for _ in 0..MUTATIONS_PER_SEED {
                out.push(Value::from(g.mutate(s, &fields)));
            }
        }
    }
    let mut g = Generator {
        schema: &schema,
        words: &words,
        rng,
    };
    let root = schema.root.clone();
    out.into_iter()
        .chain((0..generated).map(move |_| Value::from(g.object(&root, 0))))
        .collect::<Vec<_>>()
        .into_iter()
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
        let inputs = |seed| sample_inputs(&data(), &[], 50, seed).collect::<Vec<_>>();
        assert_eq!(inputs(7), inputs(7));
        assert_ne!(inputs(7), inputs(8));
    }

    #[test]
    fn generated_inputs_cover_every_field_of_the_schema_and_the_data() {
        let inputs: Vec<String> = sample_inputs(&data(), &[], 2000, 1)
            .map(|v| v.to_string())
            .collect();
        assert_eq!(inputs[0], "{}");
        for (path, _) in Schema::load().fields() {
            let leaf = format!("\"{}\":", path.last().unwrap());
            assert!(
                inputs.iter().any(|i| i.contains(&leaf)),
                "no input has the field {}",
                path.join(".")
            );
        }
        for needle in [
            "\"bp1\"",
            "\"ag1\"",
            "\"orders\"",
            "\"crm\"",
            "\"/orders/42\"",
            "\"/crm/\"",
            "\"R2\"",
            "\"c1\"",
            "\"unlisted\"",
            "\"agent_user\"",
            "\"idtyp\":null",
        ] {
            assert!(
                inputs.iter().any(|i| i.contains(needle)),
                "no sampled input mentions {needle}"
            );
        }
    }

    #[test]
    fn seeds_come_first_then_their_mutations_which_change_them() {
        let seed = Value::from(json!({"request": {"method": "GET", "path": "/orders/42"},
            "token": {"kind": "agent_app", "idtyp": "app", "roles": ["R"]}}));
        let inputs: Vec<Value> =
            sample_inputs(&data(), std::slice::from_ref(&seed), 0, 3).collect();
        assert_eq!(inputs.len(), 2 + MUTATIONS_PER_SEED);
        assert_eq!(inputs[1], seed);
        for m in &inputs[2..] {
            assert_ne!(*m, seed, "a mutation left the seed unchanged");
        }
    }
}
