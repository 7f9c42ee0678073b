//! The inputs a policy set's own Rego tests evaluate it with.
//!
//! Tests hand the policy its input with `with input as X`, where `X` is often a variable
//! bound at run time (`decide(inp) := d if { d := data.agentgate.decision with input as inp }`),
//! so the inputs cannot be read off the source. Instead, every `with input as X` of the test
//! modules is rewritten to `with input as __agentgate_test_input(X)`, an extension function
//! that records its argument and returns it unchanged, and the tests are run: each input
//! the policy sees is recorded as it is used. The positions come from regorus's own parser
//! (the `with` modifiers of the syntax tree), not from pattern matching on the text.

// Off the request path: inputs recorded while a set's tests run.
#![allow(clippy::disallowed_types)]

use super::files::SourceFile;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};
use serde_json::Value as Json;
use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The extension function the rewritten tests call.
const CAPTURE: &str = "__agentgate_test_input";

/// The byte ranges of every `with input as X` modifier in a module's syntax tree.
fn input_modifiers(ast: &Json, out: &mut Vec<(usize, usize)>) {
    match ast {
        Json::Object(o) => {
            if let Some(mods) = o.get("with_mods").and_then(Json::as_array) {
                for m in mods {
                    let span = &m["span"];
                    if let (Some(start), Some(end)) = (span["start"].as_u64(), span["end"].as_u64())
                    {
                        out.push((start as usize, end as usize));
                    }
                }
            }
            o.values().for_each(|v| input_modifiers(v, out));
        }
        Json::Array(a) => a.iter().for_each(|v| input_modifiers(v, out)),
        _ => {}
    }
}

/// `text` with each `with input as X` at `spans` turned into `with input as CAPTURE(X)`.
/// Modifiers of other documents (`with data.x as y`, `with input.a as b`) stay as they are.
fn rewrite(text: &str, mut spans: Vec<(usize, usize)>) -> String {
    spans.sort_unstable();
    spans.dedup();
    let mut out = text.to_string();
    for (start, end) in spans.into_iter().rev() {
        let Some(modifier) = text.get(start..end) else {
            continue;
        };
        let mut words = modifier.splitn(2, char::is_whitespace);
        let (Some("with"), Some(rest)) = (words.next(), words.next()) else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(after_input) = rest.strip_prefix("input") else {
            continue;
        };
        let Some(value) = after_input.trim_start().strip_prefix("as") else {
            continue;
        };
        if !value.starts_with(char::is_whitespace) {
            continue;
        }
        out.replace_range(
            start..end,
            &format!("with input as {CAPTURE}({})", value.trim()),
        );
    }
    out
}

/// The tests of `tests` rewritten to record their inputs; modules that do not parse are
/// left out (the loader reports them).
fn instrumented(tests: &[SourceFile]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in tests {
        let mut parser = Engine::new();
        if parser.add_policy(t.name.clone(), t.text.clone()).is_err() {
            continue;
        }
        let Ok(ast) = parser.get_ast_as_json() else {
            continue;
        };
        let Ok(ast) = serde_json::from_str::<Json>(&ast) else {
            continue;
        };
        let mut spans = Vec::new();
        input_modifiers(&ast, &mut spans);
        out.push((t.name.clone(), rewrite(&t.text, spans)));
    }
    out
}

/// Every distinct input the `test_*` rules of `tests` evaluate the policy with. `engine`
/// holds the set's deciding modules and data; each test runs within `per_test`. Tests that
/// fail or time out still contribute the inputs they used before stopping.
pub fn test_inputs(
    mut engine: Engine,
    tests: &[SourceFile],
    rules: &[String],
    per_test: Duration,
) -> Vec<Value> {
    let seen = Arc::new(Mutex::new(Vec::<Value>::new()));
    let record = seen.clone();
    let capture = move |args: Vec<Value>| -> anyhow::Result<Value> {
        let input = args.into_iter().next().unwrap_or(Value::Undefined);
        record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(input.clone());
        Ok(input)
    };
    if engine
        .add_extension(CAPTURE.to_string(), 1, Box::new(capture))
        .is_err()
    {
        return Vec::new();
    }
    for (name, text) in instrumented(tests) {
        if engine.add_policy(name, text).is_err() {
            return Vec::new();
        }
    }
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: per_test,
        check_interval: NonZeroU32::new(16).unwrap_or(NonZeroU32::MIN),
    });
    for rule in rules {
        engine.set_input(Value::new_object());
        let _ = engine.eval_rule(rule.clone());
    }
    let recorded = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    let mut distinct = BTreeSet::new();
    recorded
        .into_iter()
        .filter(|v| *v != Value::Undefined && distinct.insert(v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_input_modifiers_are_rewritten() {
        let text = "package t_test\n\
                    test_a if { data.p.d with input as {\"a\": 1} with data.x as 2 }\n\
                    test_b if { data.p.d with input.a as 3 }\n";
        let source = SourceFile {
            name: "t_test.rego".into(),
            path: "t_test.rego".into(),
            text: text.into(),
        };
        let (_, rewritten) = instrumented(std::slice::from_ref(&source)).remove(0);
        assert!(
            rewritten.contains("with input as __agentgate_test_input({\"a\": 1}) with data.x as 2"),
            "{rewritten}"
        );
        assert!(rewritten.contains("with input.a as 3"), "{rewritten}");
    }

    #[test]
    fn inputs_bound_at_run_time_are_recorded_once_each() {
        let module = "package p\nd := input.a";
        let test = SourceFile {
            name: "p_test.rego".into(),
            path: "p_test.rego".into(),
            text: "package p_test\n\
                   decide(inp) := x if { x := data.p.d with input as inp }\n\
                   test_one if { decide({\"a\": 1}) == 1 }\n\
                   test_two if { every n in [1, 2, 2] { decide({\"a\": n}) == n } }\n\
                   test_fails if { decide({\"a\": 9}) == 0 }\n"
                .into(),
        };
        let mut engine = Engine::new();
        engine.add_policy("p.rego".into(), module.into()).unwrap();
        let rules = [
            "data.p_test.test_one",
            "data.p_test.test_two",
            "data.p_test.test_fails",
        ]
        .map(String::from);
        let inputs = test_inputs(engine, &[test], &rules, Duration::from_secs(5));
        let shown: Vec<String> = inputs.iter().map(|v| v.to_string()).collect();
        assert_eq!(shown, ["{\"a\":1}", "{\"a\":2}", "{\"a\":9}"]);
    }
}
