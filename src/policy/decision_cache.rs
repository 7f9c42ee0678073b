//! Decisions remembered per policy set, so a caller repeating a request skips evaluation.
//!
//! A policy set that calls only pure builtins ([`PURE_BUILTINS`]: none reads the clock,
//! randomness, the network or the runtime, none prints) decides the same input the same
//! way every time. Such a set's decisions are remembered by input: an entry answers only
//! an input exactly equal to the one it was decided for (full structural equality; the
//! hash below only picks the slot). The cache belongs to one
//! policy snapshot, so a reload starts empty, and it is used only while the compiled engine
//! serves: that is when the set's builtins are known (from the program's builtin table),
//! and a demotion of the compiled engine ends it for good. Failures are never remembered
//! (a timeout, for one, says nothing about the next evaluation).
//!
//! The request time is part of the input. It reaches policy rounded down to
//! `policy.time_resolution` (1 s by default), so a caller repeating a request within that
//! resolution is answered from the cache. The time is left out of the slot hash, so the
//! next period's entry replaces the last one instead of filling the cache. An input is
//! remembered the second time its slot comes up: inputs that never repeat (a request id
//! on every request) take no entry and evict nothing.

use super::decision::Decision;
use regorus::rvm::program::Program;
use regorus::Value;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Builtins whose answer follows from their arguments alone and that act on nothing. A
/// set calling any other builtin (the clock, randomness, the network, the runtime,
/// output, or one a later regorus adds) is never cached.
const PURE_BUILTINS: [&str; 119] = [
    "__builtin_sets.intersection",
    "__builtin_sets.union",
    "abs",
    "array.concat",
    "array.reverse",
    "array.slice",
    "base64.decode",
    "base64.encode",
    "base64.is_valid",
    "base64url.decode",
    "base64url.encode",
    "base64url.encode_no_pad",
    "bits.and",
    "bits.lsh",
    "bits.negate",
    "bits.or",
    "bits.rsh",
    "bits.xor",
    "ceil",
    "concat",
    "contains",
    "count",
    "endswith",
    "floor",
    "format_int",
    "glob.match",
    "glob.quote_meta",
    "graph.reachable",
    "graph.reachable_paths",
    "hex.decode",
    "hex.encode",
    "indexof",
    "indexof_n",
    "intersection",
    "is_array",
    "is_boolean",
    "is_null",
    "is_number",
    "is_object",
    "is_set",
    "is_string",
    "json.filter",
    "json.is_valid",
    "json.marshal",
    "json.marshal_with_options",
    "json.match_schema",
    "json.patch",
    "json.remove",
    "json.unmarshal",
    "json.verify_schema",
    "lower",
    "max",
    "min",
    "net.cidr_contains",
    "net.cidr_expand",
    "net.cidr_is_valid",
    "numbers.range",
    "numbers.range_step",
    "object.filter",
    "object.get",
    "object.keys",
    "object.remove",
    "object.subset",
    "object.union",
    "object.union_n",
    "product",
    "regex.find_all_string_submatch_n",
    "regex.find_n",
    "regex.globs_match",
    "regex.is_valid",
    "regex.match",
    "regex.replace",
    "regex.split",
    "regex.template_match",
    "replace",
    "round",
    "semver.compare",
    "semver.is_valid",
    "sort",
    "split",
    "sprintf",
    "startswith",
    "strings.any_prefix_match",
    "strings.any_suffix_match",
    "strings.count",
    "strings.replace_n",
    "strings.reverse",
    "substring",
    "sum",
    "time.add_date",
    "time.clock",
    "time.date",
    "time.diff",
    "time.format",
    "time.parse_duration_ns",
    "time.parse_ns",
    "time.parse_rfc3339_ns",
    "time.weekday",
    "to_number",
    "trim",
    "trim_left",
    "trim_prefix",
    "trim_right",
    "trim_space",
    "trim_suffix",
    "type_name",
    "union",
    "units.parse",
    "units.parse_bytes",
    "upper",
    "urlquery.decode",
    "urlquery.decode_object",
    "urlquery.encode",
    "urlquery.encode_object",
    "uuid.parse",
    "walk",
    "yaml.is_valid",
    "yaml.marshal",
    "yaml.unmarshal",
];

/// The first builtin `program` calls that is not known to be pure.
pub fn first_impure_builtin(program: &Program) -> Option<&str> {
    program
        .builtin_info_table
        .iter()
        .map(|b| b.name.as_str())
        .find(|name| !PURE_BUILTINS.contains(name))
}

/// Process-wide decision cache lookups, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheLookups {
    pub hits: u64,
    pub misses: u64,
}

static HITS: AtomicU64 = AtomicU64::new(0);
static MISSES: AtomicU64 = AtomicU64::new(0);

/// The totals so far.
pub fn cache_lookups() -> CacheLookups {
    CacheLookups {
        hits: HITS.load(Ordering::Relaxed),
        misses: MISSES.load(Ordering::Relaxed),
    }
}

/// One remembered decision and the input it was made for.
#[derive(Debug)]
struct Remembered {
    input: Value,
    decision: Decision,
}

/// A bounded map from policy input to decision.
pub struct DecisionCache {
    entries: quick_cache::sync::Cache<u64, Arc<Remembered>>,
    /// The slots looked up once, by slot number: an input is remembered the second time its
    /// slot comes up, so inputs that never repeat (a request id on every request) cost no
    /// entry and evict nothing.
    seen: Box<[AtomicU64]>,
    hasher: foldhash::fast::RandomState,
}

/// What the cache knows of one input.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The decision made for exactly this input.
    Hit(Decision),
    /// Not remembered; `remember` when the input's slot came up before, so the decision
    /// is worth keeping.
    Miss { remember: bool },
}

impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// Where an input's entry lives, and the input.
pub struct Slot<'a> {
    key: u64,
    input: &'a Value,
}

impl DecisionCache {
    /// Room for `capacity` decisions.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(capacity),
            seen: (0..capacity.max(64).next_power_of_two())
                .map(|_| AtomicU64::new(0))
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Decisions held.
    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// The slot of `input`.
    pub fn slot<'a>(&self, input: &'a Value) -> Slot<'a> {
        let mut h = self.hasher.build_hasher();
        hash_input(input, &mut h);
        Slot {
            key: h.finish(),
            input,
        }
    }

    /// The decision remembered for exactly this input, or whether to remember it.
    pub fn lookup(&self, slot: &Slot<'_>) -> Lookup {
        let entry = self.entries.get(&slot.key);
        if let Some(e) = entry.filter(|e| e.input == *slot.input) {
            HITS.fetch_add(1, Ordering::Relaxed);
            return Lookup::Hit(e.decision.clone());
        }
        MISSES.fetch_add(1, Ordering::Relaxed);
        // `seen` has a power-of-two length: the mask picks a place for the slot.
        let place = &self.seen[slot.key as usize & (self.seen.len() - 1)];
        Lookup::Miss {
            remember: place.swap(slot.key, Ordering::Relaxed) == slot.key,
        }
    }

    /// Remembers `decision` for the slot's input, replacing what the slot held.
    pub fn insert(&self, slot: Slot<'_>, decision: &Decision) {
        let entry = Remembered {
            input: slot.input.clone(),
            decision: decision.clone(),
        };
        self.entries.insert(slot.key, Arc::new(entry));
    }
}

/// Hashes the input document, leaving out `request.time_ns`.
fn hash_input(input: &Value, h: &mut impl Hasher) {
    let Value::Object(parts) = input else {
        return hash_value(input, h);
    };
    for (name, part) in parts.iter() {
        hash_value(name, h);
        match (name.as_string().ok().map(|s| &**s), part) {
            (Some("request"), Value::Object(fields)) => {
                for (field, value) in fields.iter() {
                    if field.as_string().is_ok_and(|f| &**f != "time_ns") {
                        hash_value(field, h);
                        hash_value(value, h);
                    }
                }
            }
            _ => hash_value(part, h),
        }
    }
}

/// Hashes a value so that equal values hash alike. Numbers hash by their integer value
/// where they have one (the input's numbers all do), else by kind only.
fn hash_value(v: &Value, h: &mut impl Hasher) {
    std::mem::discriminant(v).hash(h);
    match v {
        Value::Null | Value::Undefined => {}
        Value::Bool(b) => b.hash(h),
        Value::Number(n) => {
            if let Some(i) = n.as_i128() {
                i.hash(h);
            }
        }
        Value::String(s) => s.hash(h),
        Value::Array(items) => {
            items.len().hash(h);
            items.iter().for_each(|i| hash_value(i, h));
        }
        Value::Set(items) => {
            items.len().hash(h);
            items.iter().for_each(|i| hash_value(i, h));
        }
        Value::Object(fields) => {
            fields.len().hash(h);
            for (k, v) in fields.iter() {
                hash_value(k, h);
                hash_value(v, h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(path: &str, time_ns: u64) -> Value {
        Value::from(serde_json::json!({
            "request": {"method": "GET", "path": path, "time_ns": time_ns},
            "token": {"roles": ["Orders.Read"], "expires_at": 1767229500u64},
        }))
    }

    fn allow(reason: &str) -> Decision {
        Decision::Allow {
            reason: reason.into(),
            headers: Vec::new(),
            response_headers: Vec::new(),
        }
    }

    fn found(cache: &DecisionCache, input: &Value) -> Option<Decision> {
        match cache.lookup(&cache.slot(input)) {
            Lookup::Hit(decision) => Some(decision),
            Lookup::Miss { .. } => None,
        }
    }

    #[test]
    fn an_entry_answers_only_the_very_same_input() {
        let cache = DecisionCache::new(16);
        let first = input("/orders/1", 1_000);
        cache.insert(cache.slot(&first), &allow("first"));
        assert_eq!(found(&cache, &first.clone()), Some(allow("first")));
        assert_eq!(found(&cache, &input("/orders/2", 1_000)), None);
        // Another time shares the slot but is not the same input.
        let later = input("/orders/1", 2_000);
        assert_eq!(cache.slot(&later).key, cache.slot(&first).key);
        assert_eq!(found(&cache, &later), None);
        // ... and its entry replaces the earlier one.
        cache.insert(cache.slot(&later), &allow("later"));
        assert_eq!(found(&cache, &later), Some(allow("later")));
        assert_eq!(found(&cache, &first), None);
        assert_eq!(cache.entries(), 1);
    }

    #[test]
    fn an_input_is_worth_remembering_when_its_slot_comes_up_again() {
        let cache = DecisionCache::new(16);
        let once = input("/orders/1", 1_000);
        let lookup = |i: &Value| cache.lookup(&cache.slot(i));
        assert_eq!(lookup(&once), Lookup::Miss { remember: false });
        assert_eq!(lookup(&once), Lookup::Miss { remember: true });
        // The next second's input comes up in the same slot.
        assert_eq!(
            lookup(&input("/orders/1", 2_000)),
            Lookup::Miss { remember: true }
        );
        // Any other input's first time is not worth an entry (last: it may share a place
        // with the one above and take it over).
        assert_eq!(
            lookup(&input("/orders/2", 1_000)),
            Lookup::Miss { remember: false }
        );
    }

    #[test]
    fn equal_values_hash_alike_and_fields_count() {
        let cache = DecisionCache::new(16);
        let a = input("/orders/1", 5);
        let b = Value::from(serde_json::json!({
            "token": {"expires_at": 1767229500u64, "roles": ["Orders.Read"]},
            "request": {"time_ns": 5, "path": "/orders/1", "method": "GET"},
        }));
        assert_eq!(a, b);
        assert_eq!(cache.slot(&a).key, cache.slot(&b).key);
        let other_token = Value::from(serde_json::json!({
            "request": {"method": "GET", "path": "/orders/1", "time_ns": 5},
            "token": {"roles": ["Orders.Read"], "expires_at": 1767229501u64},
        }));
        assert_ne!(cache.slot(&a).key, cache.slot(&other_token).key);
    }

    #[test]
    fn a_colliding_slot_never_answers_another_input() {
        let cache = DecisionCache::new(16);
        let decided = input("/orders/1", 1);
        let slot = cache.slot(&decided);
        let other = input("/admin", 1);
        // Force the other input into the same slot: equality, not the hash, decides.
        let forged = Slot {
            key: slot.key,
            input: &other,
        };
        cache.insert(slot, &allow("orders"));
        assert!(matches!(cache.lookup(&forged), Lookup::Miss { .. }));
    }

    #[test]
    fn every_builtin_is_pure_except_those_that_reach_outside() {
        let impure: Vec<&str> = regorus::unstable::BUILTINS
            .keys()
            .copied()
            .filter(|name| !PURE_BUILTINS.contains(name))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(
            impure,
            // With this build's regorus features (`http.send` and `test.sleep` are
            // not built in, and not in the pure list either).
            [
                "opa.runtime",
                "rand.intn",
                "time.now_ns",
                "trace",
                "uuid.rfc4122"
            ]
        );
    }

    #[test]
    fn impure_builtins_are_named() {
        let mut program = Program::new();
        for name in ["time.clock", "object.get"] {
            program.add_builtin_info(regorus::rvm::program::BuiltinInfo {
                name: name.into(),
                num_args: 1,
            });
        }
        assert_eq!(first_impure_builtin(&program), None);
        program.add_builtin_info(regorus::rvm::program::BuiltinInfo {
            name: "print".into(),
            num_args: 2,
        });
        assert_eq!(first_impure_builtin(&program), Some("print"));
    }
}
