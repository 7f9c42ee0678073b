//! Reading regorus's errors, in one place.
//!
//! Evaluation limits come as typed errors (`LimitError` from the interpreter, `VmError` from
//! the compiled engine) and are matched by type. Whether a set defines its entrypoint, or
//! defines it twice, regorus only says in words; those two are matched here on its
//! messages, and the tests below pin them to the regorus version in use.

use regorus::rvm::vm::VmError;
use regorus::LimitError;

/// Why an evaluation gave no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalFailure {
    /// The evaluation ran past its time limit.
    Timeout,
    /// Anything else: a runtime error in the policy, a limit other than time.
    Error,
}

/// Classifies an interpreter error.
pub fn interpreter_failure(e: &anyhow::Error) -> EvalFailure {
    let timed_out = e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<LimitError>(),
            Some(LimitError::TimeLimitExceeded { .. })
        )
    });
    if timed_out {
        EvalFailure::Timeout
    } else {
        EvalFailure::Error
    }
}

/// Classifies a compiled-engine error.
pub fn vm_failure(e: &VmError) -> EvalFailure {
    match e {
        VmError::TimeLimitExceeded { .. } => EvalFailure::Timeout,
        _ => EvalFailure::Error,
    }
}

/// What an error on a set's first evaluation of its entrypoint says about the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntrypointProblem {
    /// No rule defines the entrypoint.
    Missing,
    /// Rules conflict whatever the input: every request would fail.
    Conflict,
    /// A runtime error that may depend on the input.
    InputDependent,
}

/// Classifies an error from evaluating the entrypoint on the empty input.
pub fn entrypoint_problem(e: &anyhow::Error) -> EntrypointProblem {
    let message = format!("{e:#}");
    if message.contains("not a valid rule path") || message.contains("not found") {
        EntrypointProblem::Missing
    } else if message.contains("conflicts with rule") || message.contains("multiple outputs") {
        EntrypointProblem::Conflict
    } else {
        EntrypointProblem::InputDependent
    }
}

/// A regorus error as `file:line:column: message`, without the lines of policy source
/// regorus quotes under it: error bodies, `/readyz` and logs say where, never echo what.
pub fn located(e: &anyhow::Error) -> String {
    without_source(&format!("{e:#}"))
}

/// [`located`] for an error already rendered as text.
pub fn without_source(message: &str) -> String {
    let mut location = None;
    let mut texts = Vec::new();
    for line in message.lines() {
        let line = line.trim();
        let quoted_source = line.starts_with('|')
            || line.split_once('|').is_some_and(|(n, _)| {
                !n.trim().is_empty() && n.trim().bytes().all(|b| b.is_ascii_digit())
            });
        if let Some(at) = line.strip_prefix("--> ") {
            location.get_or_insert_with(|| at.to_string());
        } else if let Some(text) = line.strip_prefix("error: ") {
            texts.push(text);
        } else if !quoted_source && !line.is_empty() {
            texts.push(line.trim_end_matches(':'));
        }
    }
    let text = texts.join(": ");
    match location {
        Some(at) if text.is_empty() => at,
        Some(at) => format!("{at}: {text}"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regorus::utils::limits::ExecutionTimerConfig;
    use regorus::{Engine, Value};
    use std::num::NonZeroU32;
    use std::time::Duration;

    fn engine(rego: &str) -> Engine {
        let mut e = Engine::new();
        e.add_policy("t.rego".into(), format!("package agentgate\n{rego}"))
            .unwrap();
        e.set_input(Value::new_object());
        e
    }

    const SLOW: &str =
        "decision := {\"allow\": count([1 | some x in numbers.range(1, 100000); some y in numbers.range(1, 100000)]) > 0}";

    #[test]
    fn an_interpreter_timeout_is_told_from_other_errors() {
        let mut slow = engine(SLOW);
        slow.set_execution_timer_config(ExecutionTimerConfig {
            limit: Duration::from_millis(20),
            check_interval: NonZeroU32::MIN,
        });
        let e = slow
            .eval_rule("data.agentgate.decision".into())
            .unwrap_err();
        assert_eq!(interpreter_failure(&e), EvalFailure::Timeout);
        let mut failing = engine("decision := 1 / 0");
        let e = failing
            .eval_rule("data.agentgate.decision".into())
            .unwrap_err();
        assert_eq!(interpreter_failure(&e), EvalFailure::Error);
    }

    #[test]
    fn a_vm_timeout_is_told_from_other_errors() {
        let timeout = VmError::TimeLimitExceeded {
            elapsed: Duration::from_secs(1),
            limit: Duration::from_millis(1),
            pc: 0,
        };
        assert_eq!(vm_failure(&timeout), EvalFailure::Timeout);
        let other = VmError::InstructionLimitExceeded {
            limit: 1,
            executed: 2,
            pc: 0,
        };
        assert_eq!(vm_failure(&other), EvalFailure::Error);
    }

    #[test]
    fn messages_keep_the_location_and_drop_the_quoted_source() {
        let mut parse = Engine::new();
        let e = parse
            .add_policy(
                "agentgate/a.rego".into(),
                "package agentgate\nsecret := \"hunter2\"\ndecision := {\"allow\": true\n".into(),
            )
            .unwrap_err();
        let shown = located(&e);
        assert!(shown.starts_with("agentgate/a.rego:4:1: "), "{shown}");
        assert!(shown.contains("expecting `}`"), "{shown}");
        assert!(
            !shown.contains('|') && !shown.contains("hunter2"),
            "{shown}"
        );
        let mut runtime = engine("decision := {\"allow\": startswith(input.p, \"hunter2\")}");
        runtime.set_input(Value::from(serde_json::json!({"p": 3})));
        let e = runtime
            .eval_rule("data.agentgate.decision".into())
            .unwrap_err();
        let shown = located(&e);
        assert!(shown.starts_with("t.rego:2:"), "{shown}");
        assert!(shown.contains("expects string argument"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn entrypoint_problems_are_recognised_on_this_regorus() {
        let mut missing = engine("other := 1");
        let e = missing
            .eval_rule("data.agentgate.decision".into())
            .unwrap_err();
        assert_eq!(entrypoint_problem(&e), EntrypointProblem::Missing);
        let mut conflict = engine("decision := 1\ndecision := 2");
        let e = conflict
            .eval_rule("data.agentgate.decision".into())
            .unwrap_err();
        assert_eq!(entrypoint_problem(&e), EntrypointProblem::Conflict);
        let mut runtime = engine("decision := 1 / 0");
        let e = runtime
            .eval_rule("data.agentgate.decision".into())
            .unwrap_err();
        assert_eq!(entrypoint_problem(&e), EntrypointProblem::InputDependent);
    }
}
