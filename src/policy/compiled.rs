//! The compiled engine: regorus's RVM running a policy set compiled to bytecode, about twice
//! as fast as the interpreter.
//!
//! The interpreter is the reference. A set is compiled off the request path, and the
//! compiled program serves only after it has decided a sample of inputs exactly as the
//! interpreter does ([`super::corpus`]). While serving, one evaluation in
//! [`CROSS_CHECK_EVERY`] per thread is decided by both; a difference, or a compiled-engine
//! error where the interpreter succeeds, sends the set back to the interpreter for good and
//! that request gets the interpreter's answer. So a construct the compiler gets wrong costs
//! speed, never a wrong decision that goes unnoticed.

use super::capture::test_inputs;
use super::corpus::sample_inputs;
use super::decision_cache::first_impure_builtin;
use super::errors::{vm_failure, EvalFailure};
use super::files::SourceFile;
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::rvm::vm::RegoVM;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Rc, Value};
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Inputs generated from the schema alone that both engines decide before the compiled one
/// serves, besides the set's test inputs and their mutations ([`super::corpus`]).
pub const GENERATED_CASES: usize = 2000;

/// Per thread, one evaluation in this many is decided by both engines.
pub const CROSS_CHECK_EVERY: u32 = 1024;

/// After promotion, every allowed decision among this many evaluations is cross-checked.
pub const EARLY_CROSS_CHECKS: u32 = 10_000;

/// How long one of the set's tests may run while its inputs are captured.
const CAPTURE_PER_TEST: Duration = Duration::from_secs(5);

/// Compiled engines a thread keeps (enforced, shadow, and room for a reload in flight).
const VMS_PER_THREAD: usize = 4;

/// Where a policy set's compiled engine stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineState {
    /// The interpreter serves; compilation and the check have not finished (or not begun).
    Interpreter,
    /// The compiled engine serves.
    Compiled,
    /// The compiler refused the set or decided differently; the interpreter serves for good.
    Refused,
}

/// Process-wide counts of compiled-engine events, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineEvents {
    /// Sets whose compiled engine passed the check and now serves.
    pub promoted: u64,
    /// Sets the compiler could not compile or that decided a sample input differently.
    pub refused: u64,
    /// Serving compiled engines sent back to the interpreter by a live cross-check.
    pub demoted: u64,
    /// Live cross-checks run.
    pub cross_checks: u64,
}

static PROMOTED: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static DEMOTED: AtomicU64 = AtomicU64::new(0);
static CROSS_CHECKS: AtomicU64 = AtomicU64::new(0);

/// The totals so far.
pub fn engine_events() -> EngineEvents {
    EngineEvents {
        promoted: PROMOTED.load(Ordering::Relaxed),
        refused: REFUSED.load(Ordering::Relaxed),
        demoted: DEMOTED.load(Ordering::Relaxed),
        cross_checks: CROSS_CHECKS.load(Ordering::Relaxed),
    }
}

const INTERPRETER: u8 = 0;
const COMPILED: u8 = 1;
const REFUSED_STATE: u8 = 2;

/// One policy set's compiled program, shared by every thread once it serves.
#[derive(Debug)]
pub struct CompiledSlot {
    state: AtomicU8,
    program: OnceLock<Arc<Program>>,
    data: Value,
    timer: ExecutionTimerConfig,
    /// The set's revision, for logs.
    revision: String,
    /// The set's test modules, whose inputs seed the check.
    tests: Vec<SourceFile>,
    /// Evaluations left during which every allowed decision is cross-checked.
    early_checks: AtomicU32,
    /// The program calls only pure builtins: its decisions may be remembered.
    pure: AtomicBool,
}

thread_local! {
    /// This thread's VMs: the generation each runs, and the VM.
    static VMS: RefCell<Vec<(u64, RegoVM)>> = const { RefCell::new(Vec::new()) };
    /// Evaluations on this thread until the next cross-check.
    static UNTIL_CROSS_CHECK: Cell<u32> = const { Cell::new(CROSS_CHECK_EVERY) };
}

/// True when this thread's periodic cross-check is due.
fn periodic_cross_check_due() -> bool {
    UNTIL_CROSS_CHECK.with(|left| {
        let n = left.get().saturating_sub(1);
        if n == 0 {
            left.set(CROSS_CHECK_EVERY);
            CROSS_CHECKS.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            left.set(n);
            false
        }
    })
}

impl CompiledSlot {
    /// An empty slot for a set with data document `data` and test modules `tests`, each
    /// evaluation bounded by `timer`; the interpreter serves.
    pub fn new(
        data: Value,
        timer: ExecutionTimerConfig,
        revision: &str,
        tests: Vec<SourceFile>,
    ) -> Self {
        Self {
            state: AtomicU8::new(INTERPRETER),
            program: OnceLock::new(),
            data,
            timer,
            revision: revision.to_string(),
            tests,
            early_checks: AtomicU32::new(EARLY_CROSS_CHECKS),
            pure: AtomicBool::new(false),
        }
    }

    /// True when the compiled engine's `value` must be decided by the interpreter too:
    /// every allow among the first [`EARLY_CROSS_CHECKS`] evaluations after promotion, then
    /// one evaluation in [`CROSS_CHECK_EVERY`] per thread.
    pub fn cross_check_due(&self, value: &Value) -> bool {
        let early = self.early_checks.load(Ordering::Relaxed) > 0
            && self.early_checks.fetch_sub(1, Ordering::Relaxed) > 0;
        if early && value["allow"] == Value::Bool(true) {
            CROSS_CHECKS.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        periodic_cross_check_due()
    }

    pub fn state(&self) -> EngineState {
        match self.state.load(Ordering::Acquire) {
            COMPILED => EngineState::Compiled,
            REFUSED_STATE => EngineState::Refused,
            _ => EngineState::Interpreter,
        }
    }

    /// The program, when the compiled engine serves.
    pub fn serving(&self) -> Option<&Arc<Program>> {
        if self.state.load(Ordering::Acquire) == COMPILED {
            self.program.get()
        } else {
            None
        }
    }

    /// True when the compiled engine serves a program that calls only pure builtins: the
    /// same input gets the same decision, so decisions may be remembered.
    pub fn decides_purely(&self) -> bool {
        self.state.load(Ordering::Acquire) == COMPILED && self.pure.load(Ordering::Acquire)
    }

    /// Sends the set back to the interpreter for good.
    pub fn demote(&self, why: &str) {
        if self.state.swap(REFUSED_STATE, Ordering::AcqRel) == COMPILED {
            DEMOTED.fetch_add(1, Ordering::Relaxed);
            tracing::error!(revision = %self.revision, why, "compiled policy engine disagreed with the interpreter; the interpreter decides from now on");
        }
    }

    /// Compiles `template`'s set and checks it against the interpreter on sample inputs;
    /// serves the compiled engine when every decision agrees. Run off the request path.
    pub fn compile_and_verify(&self, mut template: Engine, entrypoint: &str, seed: u64) {
        let revision = self.revision.as_str();
        let started = Instant::now();
        match self.verify(&mut template, entrypoint, seed) {
            Ok((program, cases)) => {
                match first_impure_builtin(&program) {
                    None => self.pure.store(true, Ordering::Release),
                    Some(builtin) => tracing::info!(
                        revision,
                        builtin,
                        "policy decisions are not cached: the set calls a builtin whose answer does not follow from its input"
                    ),
                }
                if self.program.set(program).is_ok()
                    && self
                        .state
                        .compare_exchange(
                            INTERPRETER,
                            COMPILED,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        )
                        .is_ok()
                {
                    PROMOTED.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        revision,
                        cases,
                        took_ms = started.elapsed().as_millis() as u64,
                        "compiled policy engine agrees with the interpreter; it now decides"
                    );
                }
            }
            Err(why) => {
                self.state.store(REFUSED_STATE, Ordering::Release);
                REFUSED.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(revision, why = %why, "compiled policy engine not used; the interpreter decides");
            }
        }
    }

    fn verify(
        &self,
        template: &mut Engine,
        entrypoint: &str,
        seed: u64,
    ) -> Result<(Arc<Program>, usize), String> {
        let rules: Vec<String> = self
            .tests
            .iter()
            .flat_map(|t| t.test_rule_names())
            .collect();
        let seeds = test_inputs(template.clone(), &self.tests, &rules, CAPTURE_PER_TEST);
        let rule: Rc<str> = Rc::from(entrypoint);
        let policy = template
            .compile_with_entrypoint(&rule)
            .map_err(|e| format!("compiling: {e:#}"))?;
        let program = Compiler::compile_from_policy(&policy, &[entrypoint])
            .map_err(|e| format!("compiling to bytecode: {e}"))?;
        // The check must not fail on a slow machine: it compares answers, not speed.
        let generous = ExecutionTimerConfig {
            limit: Duration::from_secs(10),
            check_interval: std::num::NonZeroU32::MIN,
        };
        template.set_execution_timer_config(generous);
        let mut vm = self.new_vm(&program, Some(generous))?;
        let mut cases = 0;
        for (i, input) in sample_inputs(&self.data, &seeds, GENERATED_CASES, seed).enumerate() {
            cases += 1;
            template.set_input(input.clone());
            let expected = template
                .eval_rule(entrypoint.to_string())
                .map_err(|e| super::errors::located(&e));
            vm.set_input(input);
            let got = vm.execute().map_err(|e| e.to_string());
            match (&expected, &got) {
                (Ok(a), Ok(b)) if a == b => {}
                (Err(_), Err(_)) => vm = self.new_vm(&program, Some(generous))?,
                _ => {
                    return Err(format!(
                    "sample input {i} (seed {seed}): interpreter gave {}, compiled engine gave {}",
                    show(&expected),
                    show(&got)
                ))
                }
            }
        }
        Ok((program, cases))
    }

    fn new_vm(
        &self,
        program: &Arc<Program>,
        timer: Option<ExecutionTimerConfig>,
    ) -> Result<RegoVM, String> {
        let mut vm = RegoVM::new();
        vm.load_program(program.clone());
        vm.set_data(self.data.clone())
            .map_err(|e| format!("loading data: {e}"))?;
        vm.set_execution_timer_config(timer);
        Ok(vm)
    }

    /// Evaluates `input` on this thread's VM for generation `generation`.
    pub fn evaluate(
        &self,
        generation: u64,
        program: &Arc<Program>,
        input: Value,
    ) -> Result<Value, EvalFailure> {
        VMS.with_borrow_mut(|vms| {
            let index = match vms.iter().position(|(g, _)| *g == generation) {
                Some(i) => i,
                None => {
                    let vm = self
                        .new_vm(program, Some(self.timer))
                        .map_err(|_| EvalFailure::Error)?;
                    vms.truncate(VMS_PER_THREAD - 1);
                    vms.insert(0, (generation, vm));
                    0
                }
            };
            let vm = &mut vms[index].1;
            vm.set_input(input);
            let result = vm.execute();
            result.map_err(|e| {
                // A VM stopped mid-run is not reused.
                vms.remove(index);
                vm_failure(&e)
            })
        })
    }
}

fn show(result: &Result<Value, String>) -> String {
    match result {
        Ok(v) => v.to_string(),
        Err(e) => format!("error ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::files::{PolicyFiles, SourceFile};
    use crate::policy::PolicySnapshot;
    use std::path::Path;

    fn shipped() -> PolicySnapshot {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        PolicySnapshot::load(&dir, Duration::from_secs(1), None).unwrap()
    }

    fn set_of(rego: &str) -> PolicySnapshot {
        let module = SourceFile {
            name: "t.rego".into(),
            path: "t.rego".into(),
            text: format!("package agentgate\n{rego}"),
        };
        let files = PolicyFiles {
            modules: vec![module],
            ..PolicyFiles::default()
        };
        PolicySnapshot::from_files(&files, Duration::from_secs(1), None).unwrap()
    }

    fn input(json: serde_json::Value) -> Value {
        Value::from(json)
    }

    /// The shipped set's data documents, as mounted.
    fn shipped_data() -> Value {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/data");
        let doc = |name: &str| {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        };
        input(serde_json::json!({
            "directory": doc("directory.json"),
            "access": doc("access.json"),
        }))
    }

    #[test]
    fn remembered_decisions_are_the_engines_own() {
        let reference = shipped();
        let cached = shipped();
        assert_eq!(cached.compile_now(), EngineState::Compiled);
        // Eight slots for hundreds of inputs: entries are replaced all the time.
        cached.remember_decisions(8);
        let inputs: Vec<Value> = sample_inputs(&shipped_data(), &[], 400, 21).collect();
        let hits_before = crate::policy::decision_cache::cache_lookups().hits;
        let mut decided = 0;
        for (i, input) in inputs.iter().enumerate() {
            let expected = reference.decide(input.clone());
            decided += u64::from(expected.is_ok());
            // Remembered the second time, answered from the cache the third.
            for round in 0..3 {
                assert_eq!(
                    cached.decide(input.clone()),
                    expected,
                    "input {i}, round {round}"
                );
            }
        }
        assert!(decided > 100, "only {decided} of the sample inputs decided");
        let hits = crate::policy::decision_cache::cache_lookups().hits - hits_before;
        assert!(
            hits >= decided,
            "{hits} hits for {decided} repeated decisions"
        );
        assert_eq!(cached.engine_state(), EngineState::Compiled);
    }

    #[test]
    fn a_set_that_reads_the_clock_is_never_cached() {
        let allow = r#"{"allow": true, "reason": "allowed"}"#;
        let pure = set_of(&format!("decision := {allow} if input.n > 0"));
        let clock = set_of(&format!("decision := {allow} if time.now_ns() > input.n"));
        for set in [&pure, &clock] {
            assert_eq!(set.compile_now(), EngineState::Compiled);
            set.remember_decisions(8);
            for _ in 0..3 {
                assert!(set.decide(input(serde_json::json!({"n": 1}))).is_ok());
            }
        }
        assert_eq!(pure.cached_decisions(), 1);
        assert_eq!(clock.cached_decisions(), 0);
    }

    #[test]
    fn failures_are_never_remembered() {
        let set =
            set_of(r#"decision := {"allow": true, "reason": "allowed"} if { 10 / input.n > 1 }"#);
        assert_eq!(set.compile_now(), EngineState::Compiled);
        set.remember_decisions(8);
        // Undefined for n = 20, an evaluation error for n = 0: neither is a decision.
        for n in [20, 0, 20, 0] {
            assert!(set.decide(input(serde_json::json!({"n": n}))).is_err());
        }
        assert_eq!(set.cached_decisions(), 0);
        for _ in 0..2 {
            assert!(set.decide(input(serde_json::json!({"n": 2}))).is_ok());
        }
        assert_eq!(set.cached_decisions(), 1);
    }

    #[test]
    fn the_shipped_set_compiles_and_agrees_with_the_interpreter() {
        let interpreted = shipped();
        let compiled = shipped();
        assert_eq!(compiled.compile_now(), EngineState::Compiled);
        assert_eq!(interpreted.engine_state(), EngineState::Interpreter);
        // Fresh seeds, beyond the check the promotion ran.
        let data = shipped_data();
        for seed in [11, 12, 13] {
            for (i, input) in sample_inputs(&data, &[], 3000, seed).enumerate() {
                assert_eq!(
                    compiled.decide(input.clone()),
                    interpreted.decide(input),
                    "seed {seed}, input {i}"
                );
            }
        }
        assert_eq!(compiled.engine_state(), EngineState::Compiled);
    }

    #[test]
    fn a_set_the_compiler_gets_wrong_on_sample_inputs_stays_interpreted() {
        // The RVM of regorus 0.14 does not take the `else` after a body that iterated.
        let set = set_of(
            r#"decision := {"allow": true, "reason": "allowed"} if {
                some m in ["PUT"]
                input.request.method == m
            } else := {"allow": false, "status": 403, "reason": "route_not_allowed"}"#,
        );
        assert_eq!(set.compile_now(), EngineState::Refused);
        let get = input(serde_json::json!({"request": {"method": "GET"}}));
        assert!(matches!(
            set.decide(get),
            Ok(crate::policy::Decision::Deny { status: 403, .. })
        ));
    }

    #[test]
    fn a_set_the_compiler_refuses_stays_interpreted() {
        // Reading `data` whole is outside what the compiler accepts.
        let set = set_of(r#"decision := {"allow": count(data) >= 0, "reason": "allowed"}"#);
        assert_eq!(set.compile_now(), EngineState::Refused);
        assert!(set.decide(input(serde_json::json!({}))).is_ok());
    }

    #[test]
    fn a_slip_outside_the_sample_falls_back_to_the_interpreter_and_demotes() {
        // The slip only shows for a path no sample input has, so the check passes.
        let set = set_of(
            r#"decision := special if {
                input.request.path == "/very/rare"
            } else := {"allow": false, "status": 403, "reason": "route_not_allowed"}

            special := {"allow": true, "reason": "allowed"} if {
                some m in ["PUT"]
                input.request.method == m
            } else := {"allow": false, "status": 403, "reason": "rare_path"}"#,
        );
        assert_eq!(set.compile_now(), EngineState::Compiled);
        set.remember_decisions(8);
        let common =
            |path: &str| input(serde_json::json!({"request": {"path": path, "method": "GET"}}));
        for _ in 0..2 {
            assert!(set.decide(common("/orders/1")).is_ok());
        }
        assert_eq!(set.cached_decisions(), 1);
        let before = engine_events().demoted;
        match set.decide(common("/very/rare")) {
            Ok(crate::policy::Decision::Deny { reason, .. }) => assert_eq!(&*reason, "rare_path"),
            other => panic!("expected the interpreter's rare_path denial, got {other:?}"),
        }
        assert_eq!(set.engine_state(), EngineState::Refused);
        assert!(engine_events().demoted > before);
        // What the compiled engine decided is no longer remembered or added to.
        for _ in 0..2 {
            assert!(set.decide(common("/orders/2")).is_ok());
        }
        assert_eq!(set.cached_decisions(), 1);
    }

    #[test]
    fn one_evaluation_in_every_cross_check_period_is_checked() {
        let due = std::thread::spawn(|| {
            (0..3 * CROSS_CHECK_EVERY)
                .filter(|_| periodic_cross_check_due())
                .count()
        })
        .join()
        .unwrap();
        assert_eq!(due, 3);
    }

    #[test]
    fn every_allow_is_cross_checked_for_the_first_evaluations_after_promotion() {
        let slot = CompiledSlot::new(
            Value::new_object(),
            ExecutionTimerConfig {
                limit: Duration::from_secs(1),
                check_interval: std::num::NonZeroU32::MIN,
            },
            "r",
            Vec::new(),
        );
        let allow = input(serde_json::json!({"allow": true, "reason": "allowed"}));
        let deny = input(serde_json::json!({"allow": false, "reason": "no"}));
        let (early_allows, early_denies, later_allows) = std::thread::spawn(move || {
            let half = EARLY_CROSS_CHECKS / 2;
            let early_allows = (0..half).filter(|_| slot.cross_check_due(&allow)).count();
            let early_denies = (0..half).filter(|_| slot.cross_check_due(&deny)).count();
            let later = (0..4 * CROSS_CHECK_EVERY)
                .filter(|_| slot.cross_check_due(&allow))
                .count();
            (early_allows, early_denies, later)
        })
        .join()
        .unwrap();
        // Every early allow; early denies only at the periodic rate; then the periodic rate.
        assert_eq!(early_allows, (EARLY_CROSS_CHECKS / 2) as usize);
        assert!(early_denies <= (EARLY_CROSS_CHECKS / 2 / CROSS_CHECK_EVERY + 1) as usize);
        assert!((3..=5).contains(&later_allows), "{later_allows}");
    }

    #[test]
    fn a_slip_only_the_sets_own_tests_reach_keeps_the_set_interpreted() {
        // The compiler's known slip, behind a header value no data mentions: only the set's
        // own test, which sends it, leads the check there.
        let module = SourceFile {
            name: "t.rego".into(),
            path: "t.rego".into(),
            text: r#"package agentgate
decision := special if {
    input.request.headers["x-request-id"] == "only-in-a-test"
} else := {"allow": false, "status": 403, "reason": "route_not_allowed"}

special := {"allow": true, "reason": "allowed"} if {
    some m in ["PUT"]
    input.request.method == m
} else := {"allow": false, "status": 403, "reason": "rare_header"}
"#
            .into(),
        };
        let test = SourceFile {
            name: "t_test.rego".into(),
            path: "t_test.rego".into(),
            text: r#"package agentgate_test
test_rare_header if {
    d := data.agentgate.decision with input as {"request": {"method": "GET", "headers": {"x-request-id": "only-in-a-test"}}}
    d.reason == "rare_header"
}
"#
            .into(),
        };
        let files = PolicyFiles {
            modules: vec![module],
            tests: vec![test],
            ..PolicyFiles::default()
        };
        let set = PolicySnapshot::from_files(&files, Duration::from_secs(1), None).unwrap();
        assert_eq!(set.compile_now(), EngineState::Refused);
    }
}
