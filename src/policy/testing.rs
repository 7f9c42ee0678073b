//! Running the Rego unit tests (`test_*` rules) of a policy directory.

use super::engine::build_engine;
use super::files::{PolicyFiles, SourceFile};
use super::PolicyLoadError;
use regorus::Value;
use std::time::{Duration, Instant};

/// The outcome of one `test_*` rule.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    /// `data.<package>.<rule>`.
    pub name: String,
    /// The file that defines it.
    pub file: String,
    pub passed: bool,
    /// Why it failed: `false`, undefined, or the evaluation error.
    pub detail: Option<String>,
    pub elapsed: Duration,
}

/// Finds the `test_*` rules of a module: `(package path, rule name)` pairs.
fn test_rules(file: &SourceFile) -> Vec<(String, String)> {
    let mut package = None;
    let mut rules = Vec::new();
    for line in file.text.lines() {
        let line = line.trim_start();
        if let Some(p) = line.strip_prefix("package ") {
            package = Some(p.trim().to_string());
        } else if line.starts_with("test_") {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if let Some(p) = &package {
                if !rules.iter().any(|(_, r)| r == &name) {
                    rules.push((p.clone(), name));
                }
            }
        }
    }
    rules
}

/// Compiles modules and tests together and evaluates every `test_*` rule. A test passes
/// when its value is exactly `true`.
pub fn run_tests(files: &PolicyFiles) -> Result<Vec<TestOutcome>, PolicyLoadError> {
    let modules: Vec<&SourceFile> = files.modules.iter().chain(&files.tests).collect();
    let template = build_engine(&modules, files, None)?;
    let mut outcomes = Vec::new();
    for file in &files.tests {
        for (package, rule) in test_rules(file) {
            let name = format!("data.{package}.{rule}");
            let mut engine = template.clone();
            engine.set_input(Value::new_object());
            let started = Instant::now();
            let result = engine.eval_rule(name.clone());
            let elapsed = started.elapsed();
            let (passed, detail) = match result {
                Ok(Value::Bool(true)) => (true, None),
                Ok(Value::Undefined) => (false, Some("undefined".to_string())),
                Ok(v) => (false, Some(format!("evaluated to {v}"))),
                Err(e) => (false, Some(format!("{e:#}"))),
            };
            outcomes.push(TestOutcome {
                name,
                file: file.name.clone(),
                passed,
                detail,
                elapsed,
            });
        }
    }
    Ok(outcomes)
}
