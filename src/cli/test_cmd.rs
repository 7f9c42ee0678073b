//! `agentgate test`: run the Rego unit tests of a policy directory or bundle, with coverage.

use crate::policy::testing::{run_tests_with, TestLimits, TestOptions, TestReport};
use anyhow::{Context, Result};
use std::path::Path;
use std::time::Duration;

/// Runs the tests, each within `per_test`; returns true when all passed.
pub fn run(
    dir: &Path,
    filter: Option<&str>,
    coverage: bool,
    verbose: bool,
    per_test: Duration,
) -> Result<bool> {
    let files = super::bundle_cmd::read_offline(dir)?;
    let options = TestOptions {
        filter: filter
            .map(regex::Regex::new)
            .transpose()
            .context("--run is not a valid regular expression")?,
        coverage,
        limits: TestLimits::per_test(per_test),
    };
    let report = run_tests_with(&files, &options)
        .with_context(|| format!("policy set in {}", dir.display()))?;
    print!("{}", render(&report, verbose));
    Ok(report.outcomes.iter().all(|t| t.passed))
}

/// The human report: failures always, every test with `verbose`, coverage, and a summary.
pub fn render(report: &TestReport, verbose: bool) -> String {
    let mut out = String::new();
    for t in &report.outcomes {
        if !t.passed {
            out.push_str(&format!(
                "FAIL {} ({}): {}\n",
                t.name,
                t.file,
                t.detail.as_deref().unwrap_or("")
            ));
        } else if verbose {
            out.push_str(&format!("PASS {} ({:.1?})\n", t.name, t.elapsed));
        }
    }
    if !report.coverage.is_empty() {
        out.push_str("\ncoverage:\n");
        for f in &report.coverage {
            let total = f.covered.len() + f.not_covered.len();
            let percent = if total == 0 {
                100.0
            } else {
                100.0 * f.covered.len() as f64 / total as f64
            };
            out.push_str(&format!(
                "  {}: {percent:.1}% ({}/{total} lines)\n",
                f.file,
                f.covered.len()
            ));
            if !f.not_covered.is_empty() {
                let lines: Vec<String> = f.not_covered.iter().map(u32::to_string).collect();
                out.push_str(&format!("    not covered: lines {}\n", lines.join(", ")));
                if verbose {
                    let source: Vec<&str> = f.source.split('\n').collect();
                    for n in &f.not_covered {
                        let text = source.get(*n as usize - 1).copied().unwrap_or("");
                        out.push_str(&format!("    {}:{n}: {text}\n", f.file));
                    }
                }
            }
        }
    }
    let failed = report.outcomes.iter().filter(|t| !t.passed).count();
    out.push_str(&format!(
        "\n{} passed, {failed} failed\n",
        report.outcomes.len() - failed
    ));
    out
}
