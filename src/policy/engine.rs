//! Compiling a policy set with regorus and evaluating it on the request path.
//!
//! A compiled set is a warmed-up template engine. Each worker thread keeps its own clone
//! (cloning an engine that has evaluated once is cheap; cloning a fresh one recompiles), so
//! evaluation takes no lock. Every evaluation runs under the configured time budget.

use super::decision::DecisionError;
use super::files::{PolicyFiles, SourceFile};
use super::PolicyLoadError;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The rule every policy set must define.
pub const ENTRYPOINT: &str = "data.agentgate.decision";

/// Work units between clock reads; small enough to stop a runaway policy promptly.
const TIMER_CHECK_INTERVAL: u32 = 16;

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
}

impl std::fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPolicy")
            .field("generation", &self.generation)
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
            check_interval: NonZeroU32::new(TIMER_CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
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
        let stem = d
            .name
            .rsplit('/')
            .next()
            .and_then(|n| n.strip_suffix(".json"))
            .unwrap_or(&d.name);
        let mut mount = BTreeMap::new();
        mount.insert(Value::from(stem), Value::from(json));
        engine
            .add_data(Value::from(mount))
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
        Ok(Self {
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            template: engine,
        })
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

    /// Evaluates the entrypoint on this thread's evaluator.
    pub fn evaluate(&self, input: Value) -> Result<Value, DecisionError> {
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
