//! The shipped policies' own Rego unit tests, and the refusal to start on a broken set.

use crate::support::*;
use agentgate::policy::{testing::run_tests, PolicyFiles, PolicySnapshot, TestLimits};
use std::time::Duration;

#[test]
fn shipped_rego_unit_tests_pass() {
    let files = PolicyFiles::read(&repo().join("policies")).unwrap();
    let outcomes = run_tests(&files, TestLimits::per_test(TestLimits::PER_TEST)).unwrap();
    assert!(
        outcomes.len() >= 30,
        "expected the shipped test suite, found {} tests",
        outcomes.len()
    );
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|t| !t.passed)
        .map(|t| format!("{} ({:?})", t.name, t.detail))
        .collect();
    assert!(failed.is_empty(), "failing Rego tests: {failed:#?}");
    // Every concern of the library has tests.
    for concern in [
        "access",
        "decision",
        "directory",
        "hours",
        "network",
        "risk",
        "non_agent",
    ] {
        assert!(
            outcomes.iter().any(|t| t.file.contains(concern)),
            "no tests for {concern}"
        );
    }
}

#[test]
fn a_policy_set_with_a_failing_test_or_a_syntax_error_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.rego"),
        "package agentgate\n\ndecision := {\"allow\": false, \"reason\": \"no\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p_test.rego"),
        "package agentgate_test\n\ntest_allows if data.agentgate.decision.allow\n",
    )
    .unwrap();
    let err = PolicySnapshot::load(
        dir.path(),
        Duration::from_millis(5),
        Some(TestLimits::per_test(Duration::from_secs(5))),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("test_allows"), "{err}");

    std::fs::remove_file(dir.path().join("p_test.rego")).unwrap();
    std::fs::write(
        dir.path().join("p.rego"),
        "package agentgate\n\ndecision := {\"allow\": \n",
    )
    .unwrap();
    let err = PolicySnapshot::load(
        dir.path(),
        Duration::from_millis(5),
        Some(TestLimits::per_test(Duration::from_secs(5))),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("p.rego:"), "names the file and line: {err}");
}
