//! Compiling a policy set with regorus and evaluating it on the request path.
//!
//! A compiled set is a warmed-up template engine. Each worker thread keeps its own clone
//! (cloning an engine that has evaluated once is cheap; cloning a fresh one recompiles), so
//! evaluation takes no lock. Every evaluation runs under the configured time budget. Once
//! its bytecode agrees with the interpreter, the faster compiled engine decides instead
//! ([`super::compiled`]).

use super::compiled::{cross_check_due, CompiledSlot, EngineState, VmFailure};
use super::decision::DecisionError;
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

/// Work units between clock reads; small enough to stop a runaway policy promptly.
pub(super) const TIMER_CHECK_INTERVAL: NonZeroU32 = NonZeroU32::new(16).unwrap();

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
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit,
            check_interval: TIMER_CHECK_INTERVAL,
        });
    }
    for m in modules {
        engine
            .add_policy(m.name.clone(), m.text.clone())
            .map_err(|e| PolicyLoadError::Rego {
                message: format!("{e:#}"),
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
                message: format!("{e:#}"),
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
            let message = format!("{e:#}");
            if message.contains("not a valid rule path") || message.contains("not found") {
                return Err(PolicyLoadError::NoEntrypoint { message });
            }
            // Rules that conflict whatever the input would fail every request: refuse the set.
            if message.contains("conflicts with rule") || message.contains("multiple outputs") {
                return Err(PolicyLoadError::Rego { message });
            }
            // Other runtime errors may depend on the input; requests that hit them are denied
            // with policy_error.
        }
        let data = engine.get_data();
        Ok(Self {
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            template: engine,
            compiled: Arc::new(CompiledSlot::new(data, timeout, revision)),
        })
    }

    /// Which engine decides.
    pub fn engine_state(&self) -> EngineState {
        self.compiled.state()
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
            .map_err(|e| DecisionError::Evaluation(format!("{e:#}")))?;
        let report = engine
            .get_coverage_report()
            .map_err(|e| DecisionError::Evaluation(format!("{e:#}")))?;
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
            Ok(value) if cross_check_due() => match self.interpret(kept) {
                Ok(expected) if expected != value => {
                    self.compiled
                        .demote("a live cross-check decided differently");
                    Ok(expected)
                }
                _ => Ok(value),
            },
            Ok(value) => Ok(value),
            Err(VmFailure::Timeout) => Err(DecisionError::Timeout),
            // The interpreter is the reference: if it decides, the compiled engine was wrong.
            Err(VmFailure::Error(message)) => self.reference_answer(kept, &message),
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
            engine.eval_rule(ENTRYPOINT.to_string()).map_err(|e| {
                let message = format!("{e:#}");
                if message.contains("time limit") {
                    DecisionError::Timeout
                } else {
                    DecisionError::Evaluation(message)
                }
            })
        })
    }
}
