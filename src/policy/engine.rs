//! Compiling a policy set with regorus and evaluating it on the request path.
//!
//! A compiled set is a warmed-up template engine. Each worker thread keeps its own clone
//! (cloning an engine that has evaluated once is cheap; cloning a fresh one recompiles), so
//! evaluation takes no lock. Every evaluation runs under the configured time budget. Once
//! its bytecode agrees with the interpreter, the faster compiled engine decides instead
//! ([`super::compiled`]).

use super::compiled::{CompiledSlot, EngineState};
use super::decision::DecisionError;
use super::errors::{
    entrypoint_problem, interpreter_failure, located, EntrypointProblem, EvalFailure,
};
use super::files::{PolicyFiles, SourceFile};
use super::PolicyLoadError;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The rule every policy set must define.
pub const ENTRYPOINT: &str = "data.agentgate.decision";

/// Work units (compiled: instructions) between clock reads: a few microseconds of work, so
/// a runaway policy still stops promptly, while a decision of a few hundred instructions
/// reads the clock only a few times.
const TIMER_CHECK_INTERVAL: NonZeroU32 = NonZeroU32::new(256).unwrap();

/// The time limit of one evaluation.
fn timer(limit: Duration) -> ExecutionTimerConfig {
    ExecutionTimerConfig {
        limit,
        check_interval: TIMER_CHECK_INTERVAL,
    }
}

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// Engines a thread keeps: the enforced set, a shadow set, and room for a reload in flight.
const ENGINES_PER_THREAD: usize = 4;

thread_local! {
    /// This thread's evaluators: the generation each was cloned from, and the engine.
    static WORKER: RefCell<Vec<(u64, Engine)>> = const { RefCell::new(Vec::new()) };
}

/// A compiled, warmed-up policy set.
pub struct CompiledPolicy {
    generation: u64,
    template: Engine,
    compiled: Arc<CompiledSlot>,
}

impl std::fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPolicy")
            .field("generation", &self.generation)
            .field("engine", &self.compiled.state())
            .finish_non_exhaustive()
    }
}

/// Builds an engine holding `modules` and every data document.
pub fn build_engine(
    modules: &[&SourceFile],
    files: &PolicyFiles,
    timeout: Option<Duration>,
) -> Result<Engine, PolicyLoadError> {
    let mut engine = Engine::new();
    if let Some(limit) = timeout {
        engine.set_execution_timer_config(timer(limit));
    }
    for m in modules {
        engine
            .add_policy(m.name.clone(), m.text.clone())
            .map_err(|e| PolicyLoadError::Rego {
                message: located(&e),
            })?;
    }
    for d in &files.data {
        let json: serde_json::Value =
            serde_json::from_str(&d.text).map_err(|e| PolicyLoadError::Data {
                file: d.name.clone(),
                line: e.line(),
                column: e.column(),
                message: e.to_string(),
            })?;
        // Wrapped from the inside out: `directory` holds the document, `data` the rest.
        let mut mounted = Value::from(json);
        for key in d.data_mount().into_iter().rev() {
            let mut level = BTreeMap::new();
            level.insert(Value::from(key), mounted);
            mounted = Value::from(level);
        }
        engine
            .add_data(mounted)
            .map_err(|e| PolicyLoadError::Data {
                file: d.name.clone(),
                line: 1,
                column: 1,
                message: located(&e),
            })?;
    }
    Ok(engine)
}

impl CompiledPolicy {
    /// Compiles the deciding modules and checks that the entrypoint exists by evaluating it
    /// once on `warmup_input`, which also makes the template cheap to clone.
    pub fn compile(
        files: &PolicyFiles,
        revision: &str,
        timeout: Duration,
        warmup_input: Value,
    ) -> Result<Self, PolicyLoadError> {
        let modules: Vec<&SourceFile> = files.modules.iter().collect();
        let mut engine = build_engine(&modules, files, Some(timeout))?;
        engine.set_input(warmup_input);
        if let Err(e) = engine.eval_rule(ENTRYPOINT.to_string()) {
            let message = located(&e);
            match entrypoint_problem(&e) {
                EntrypointProblem::Missing => {
                    return Err(PolicyLoadError::NoEntrypoint { message })
                }
                // Rules that conflict whatever the input would fail every request.
                EntrypointProblem::Conflict => return Err(PolicyLoadError::Rego { message }),
                // Requests that hit an input-dependent error are denied with policy_error.
                EntrypointProblem::InputDependent => {}
            }
        }
        let data = engine.get_data();
        Ok(Self {
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            template: engine,
            compiled: Arc::new(CompiledSlot::new(
                data,
                timer(timeout),
                revision,
                files.tests.clone(),
            )),
        })
    }

    /// Which engine decides.
    pub fn engine_state(&self) -> EngineState {
        self.compiled.state()
    }

    /// True when the same input is sure to get the same decision (see
    /// [`CompiledSlot::decides_purely`]).
    pub fn decides_purely(&self) -> bool {
        self.compiled.decides_purely()
    }

    /// Compiles the set to bytecode on a background thread and lets the compiled engine
    /// decide once it agrees with the interpreter; the interpreter decides until then.
    pub fn start_compiled_engine(&self) {
        let slot = self.compiled.clone();
        let template = self.template.clone();
        let seed = self.generation;
        let spawned = std::thread::Builder::new()
            .name("policy-compile".into())
            .spawn(move || slot.compile_and_verify(template, ENTRYPOINT, seed));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the policy compiler; the interpreter decides");
        }
    }

    /// Compiles and checks the set on this thread (for tests and tools).
    pub fn compile_now(&self) -> EngineState {
        self.compiled
            .compile_and_verify(self.template.clone(), ENTRYPOINT, self.generation);
        self.compiled.state()
    }

    /// Evaluates the entrypoint on a fresh clone with coverage on: the value, and the lines
    /// of each module the evaluation went through (for `agentgate eval --explain`).
    pub fn explain(
        &self,
        input: Value,
    ) -> Result<(Value, regorus::coverage::Report), DecisionError> {
        let mut engine = self.template.clone();
        engine.set_enable_coverage(true);
        engine.set_input(input);
        let value = engine
            .eval_rule(ENTRYPOINT.to_string())
            .map_err(|e| DecisionError::Evaluation(located(&e)))?;
        let report = engine
            .get_coverage_report()
            .map_err(|e| DecisionError::Evaluation(located(&e)))?;
        Ok((value, report))
    }

    /// Evaluates the entrypoint: on the compiled engine when it serves, else the interpreter.
    pub fn evaluate(&self, input: Value) -> Result<Value, DecisionError> {
        let Some(program) = self.compiled.serving() else {
            return self.interpret(input);
        };
        // A reference-counted clone, for a cross-check or a fallback to the interpreter.
        let kept = input.clone();
        match self.compiled.evaluate(self.generation, program, input) {
            // Undefined is never a decision: the compiled engine's known slips (an `else`
            // not taken) show up as undefined, so the interpreter answers and, if it
            // decides, the compiled engine is sent back.
            Ok(Value::Undefined) => self.reference_answer(kept, "undefined decision"),
            Ok(value) if self.compiled.cross_check_due(&value) => self.cross_checked(kept, value),
            Ok(value) => Ok(value),
            Err(EvalFailure::Timeout) => Err(DecisionError::Timeout),
            // The interpreter is the reference: if it decides, the compiled engine was wrong.
            Err(EvalFailure::Error) => self.reference_answer(kept, "compiled engine error"),
        }
    }

    /// Decides `input` on the interpreter too. Anything but the very same answer (another
    /// value, an error, a timeout) sends the set back to the interpreter for good, and the
    /// interpreter's answer stands: its value, or its failure, which denies.
    fn cross_checked(&self, input: Value, compiled: Value) -> Result<Value, DecisionError> {
        match self.interpret(input) {
            Ok(expected) if expected == compiled => Ok(compiled),
            Ok(expected) => {
                self.compiled
                    .demote("a live cross-check decided differently");
                Ok(expected)
            }
            Err(e) => {
                self.compiled
                    .demote("the interpreter failed on a live cross-check");
                Err(e)
            }
        }
    }

    /// The interpreter's answer where the compiled engine gave none; if the interpreter
    /// decides, the compiled engine was wrong and is sent back.
    fn reference_answer(&self, input: Value, why: &str) -> Result<Value, DecisionError> {
        let answer = self.interpret(input);
        if answer.as_ref().is_ok_and(|v| *v != Value::Undefined) {
            self.compiled.demote(why);
        }
        answer
    }

    /// Evaluates the entrypoint on this thread's interpreter.
    fn interpret(&self, input: Value) -> Result<Value, DecisionError> {
        WORKER.with_borrow_mut(|engines| {
            let index = match engines.iter().position(|(g, _)| *g == self.generation) {
                Some(i) => i,
                None => {
                    // Newest sets go first; the oldest (long since swapped out) is dropped.
                    engines.truncate(ENGINES_PER_THREAD - 1);
                    engines.insert(0, (self.generation, self.template.clone()));
                    0
                }
            };
            let engine = &mut engines[index].1;
            engine.set_input(input);
            engine
                .eval_rule(ENTRYPOINT.to_string())
                .map_err(|e| match interpreter_failure(&e) {
                    EvalFailure::Timeout => DecisionError::Timeout,
                    EvalFailure::Error => DecisionError::Evaluation(located(&e)),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::files::SourceFile;

    fn set_of(rego: &str) -> CompiledPolicy {
        let files = PolicyFiles {
            modules: vec![SourceFile {
                name: "t.rego".into(),
                path: "t.rego".into(),
                text: format!("package agentgate\n{rego}"),
            }],
            ..PolicyFiles::default()
        };
        CompiledPolicy::compile(&files, "r", Duration::from_secs(1), Value::new_object()).unwrap()
    }

    fn json(v: serde_json::Value) -> Value {
        Value::from(v)
    }

    #[test]
    fn a_cross_check_the_interpreter_fails_demotes_and_denies() {
        let set = set_of(
            r#"decision := {"allow": true, "reason": "allowed"} if { 10 / input.n > 1 }
            else := {"allow": false, "status": 403, "reason": "no"}"#,
        );
        assert_eq!(set.compile_now(), EngineState::Compiled);
        let allowed = json(serde_json::json!({"allow": true, "reason": "allowed"}));
        // The interpreter agrees: the compiled answer stands.
        let agrees = set.cross_checked(json(serde_json::json!({"n": 2})), allowed.clone());
        assert_eq!(agrees, Ok(allowed.clone()));
        assert_eq!(set.engine_state(), EngineState::Compiled);
        // The interpreter fails (division by zero): no compiled answer stands alone.
        let failed = set.cross_checked(json(serde_json::json!({"n": 0})), allowed);
        assert!(
            matches!(failed, Err(DecisionError::Evaluation(_))),
            "{failed:?}"
        );
        assert_eq!(set.engine_state(), EngineState::Refused);
    }

    #[test]
    fn a_cross_check_that_disagrees_demotes_and_the_interpreter_answer_stands() {
        let set = set_of(r#"decision := {"allow": false, "status": 403, "reason": "no"}"#);
        assert_eq!(set.compile_now(), EngineState::Compiled);
        let wrong = json(serde_json::json!({"allow": true, "reason": "allowed"}));
        let answer = set.cross_checked(json(serde_json::json!({})), wrong);
        assert_eq!(
            answer,
            Ok(json(
                serde_json::json!({"allow": false, "status": 403, "reason": "no"})
            ))
        );
        assert_eq!(set.engine_state(), EngineState::Refused);
    }

    #[test]
    fn an_interpreter_timeout_is_a_timeout() {
        let set = set_of(
            r#"decision := {"allow": count([1 | some x in numbers.range(1, 100000); some y in numbers.range(1, 100000)]) > 0}"#,
        );
        let mut slow = set.template.clone();
        slow.set_execution_timer_config(timer(Duration::from_millis(10)));
        let set = CompiledPolicy {
            template: slow,
            ..set
        };
        assert_eq!(
            set.interpret(json(serde_json::json!({}))),
            Err(DecisionError::Timeout)
        );
    }
}
