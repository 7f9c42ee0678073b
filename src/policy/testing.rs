//! Running the Rego unit tests (`test_*` rules) of a policy directory, with optional
//! filtering and line coverage of the deciding modules.

use super::engine::build_engine;
use super::files::{PolicyFiles, SourceFile};
use super::PolicyLoadError;
use regorus::Value;
use std::collections::{BTreeMap, BTreeSet};
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

/// Line coverage of one deciding module over the tests that ran.
#[derive(Debug, Clone, Default)]
pub struct FileCoverage {
    pub file: String,
    pub covered: BTreeSet<u32>,
    pub not_covered: BTreeSet<u32>,
    /// The module's source, for showing uncovered lines.
    pub source: String,
}

/// Which tests to run, what to collect, and the time they may take.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// Only tests whose full name (`data.pkg.test_x`) matches.
    pub filter: Option<regex::Regex>,
    pub coverage: bool,
    pub limits: TestLimits,
}

/// Time bounds on running a set's tests.
#[derive(Debug, Clone, Copy)]
pub struct TestLimits {
    /// Each test's evaluation; a test that runs longer fails.
    pub per_test: Duration,
    /// The whole run: past it, the run stops with [`PolicyLoadError::TestsTimedOut`].
    pub deadline: Option<Instant>,
}

impl TestLimits {
    /// The default bound on one test, `policy.test_timeout`.
    pub const PER_TEST: Duration = Duration::from_secs(5);

    /// `per_test` for each test, no bound on the whole run.
    pub fn per_test(per_test: Duration) -> Self {
        Self {
            per_test,
            deadline: None,
        }
    }
}

/// Results of a test run.
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    pub outcomes: Vec<TestOutcome>,
    /// Per deciding module, when coverage was asked for.
    pub coverage: Vec<FileCoverage>,
}

/// Compiles modules and tests together and evaluates every `test_*` rule within `limits`.
/// A test passes when its value is exactly `true`.
pub fn run_tests(
    files: &PolicyFiles,
    limits: TestLimits,
) -> Result<Vec<TestOutcome>, PolicyLoadError> {
    let options = TestOptions {
        filter: None,
        coverage: false,
        limits,
    };
    Ok(run_tests_with(files, &options)?.outcomes)
}

/// [`run_tests`] with a filter and coverage.
pub fn run_tests_with(
    files: &PolicyFiles,
    options: &TestOptions,
) -> Result<TestReport, PolicyLoadError> {
    let modules: Vec<&SourceFile> = files.modules.iter().chain(&files.tests).collect();
    let mut template = build_engine(&modules, files, Some(options.limits.per_test))?;
    // One evaluation prepares the engine; clones of an unprepared engine would each
    // recompile every module. Its result (even an error) does not matter.
    template.set_input(Value::new_object());
    let _ = template.eval_rule(super::engine::ENTRYPOINT.to_string());
    template.set_enable_coverage(options.coverage);
    let mut report = TestReport::default();
    let mut covered: BTreeMap<String, FileCoverage> = BTreeMap::new();
    let started_all = Instant::now();
    let total: usize = files.tests.iter().map(|f| f.test_rules().len()).sum();
    for file in &files.tests {
        for (package, rule) in file.test_rules() {
            let name = format!("data.{package}.{rule}");
            if options.filter.as_ref().is_some_and(|f| !f.is_match(&name)) {
                continue;
            }
            if options.limits.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(PolicyLoadError::TestsTimedOut {
                    after: started_all.elapsed(),
                    ran: report.outcomes.len(),
                    total,
                });
            }
            let mut engine = template.clone();
            engine.set_input(Value::new_object());
            let started = Instant::now();
            let result = engine.eval_rule(name.clone());
            let elapsed = started.elapsed();
            let (passed, detail) = match result {
                Ok(Value::Bool(true)) => (true, None),
                Ok(Value::Undefined) => (false, Some("undefined".to_string())),
                Ok(v) => (false, Some(format!("evaluated to {v}"))),
                Err(e) => match super::errors::interpreter_failure(&e) {
                    super::errors::EvalFailure::Timeout => (
                        false,
                        Some(format!(
                            "exceeded its time limit of {:?} (policy.test_timeout)",
                            options.limits.per_test
                        )),
                    ),
                    _ => (false, Some(super::errors::located(&e))),
                },
            };
            if options.coverage {
                merge_coverage(&mut covered, &engine, files);
            }
            report.outcomes.push(TestOutcome {
                name,
                file: file.name.clone(),
                passed,
                detail,
                elapsed,
            });
        }
    }
    report.coverage = covered
        .into_values()
        .map(|mut c| {
            c.not_covered = c.not_covered.difference(&c.covered).copied().collect();
            c
        })
        .collect();
    Ok(report)
}

/// Adds one engine's coverage of the deciding modules (not the tests) to `into`.
fn merge_coverage(
    into: &mut BTreeMap<String, FileCoverage>,
    engine: &regorus::Engine,
    files: &PolicyFiles,
) {
    let Ok(r) = engine.get_coverage_report() else {
        return;
    };
    for f in r.files {
        if !files.modules.iter().any(|m| m.name == f.path) {
            continue;
        }
        let entry = into.entry(f.path.clone()).or_insert_with(|| FileCoverage {
            file: f.path.clone(),
            source: f.code.clone(),
            ..Default::default()
        });
        entry.covered.extend(f.covered);
        entry.not_covered.extend(f.not_covered);
    }
}
