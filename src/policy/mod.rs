//! Policy: the Rego files and directory data an operator edits, compiled into an immutable
//! [`PolicySnapshot`] that the gateway swaps atomically.
//!
//! Evaluation ([`PolicySnapshot::decide`]) is bounded in time and fails closed: only an
//! `allow` of exactly `true` in a well-formed decision lets a request through.

mod capture;
pub mod compiled;
pub mod corpus;
pub mod decision;
pub mod decision_cache;
pub mod engine;
pub mod errors;
pub mod files;
pub mod input;
mod shadow;
pub mod testing;

pub use decision::{Decision, DecisionError};
pub use files::PolicyFiles;
pub use shadow::ShadowPolicy;
pub use testing::TestLimits;

use crate::config::{PolicyConfig, PolicyEngine};
use crate::directory::{Directory, DirectoryError};
pub use compiled::EngineState;
use decision_cache::{DecisionCache, Lookup};
use engine::CompiledPolicy;
use input::PreparedDirectory;
use regorus::Value;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The operator's directory file in a policy directory (mounted at `data.directory`).
pub const DIRECTORY_FILE: &str = "data/directory.json";

/// Why a policy directory could not become a snapshot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyLoadError {
    #[error(transparent)]
    Read(#[from] files::ReadError),
    /// Occurs when a module does not parse or compile; the message names file:line:column.
    #[error("{message}")]
    Rego { message: String },
    /// Occurs when a data document is not valid JSON.
    #[error("{file}:{line}:{column}: {message}")]
    Data {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// Occurs when no module defines `data.agentgate.decision`.
    #[error("no module defines data.agentgate.decision ({message}): add `package agentgate` with a `decision` rule")]
    NoEntrypoint { message: String },
    /// Occurs when the policy directory has no deciding module at all.
    #[error("no .rego files found in {dir}")]
    NoModules { dir: String },
    /// Occurs when Rego unit tests fail; the set is not used.
    #[error("{} Rego test(s) failed: {}", failed.len(), failed.join(", "))]
    TestsFailed { failed: Vec<String> },
    /// Occurs when the Rego tests do not all finish before the deadline; the set is not used.
    #[error("the Rego tests did not finish in time: {ran} of {total} ran in {after:.1?} (reload.timeout)")]
    TestsTimedOut {
        after: Duration,
        ran: usize,
        total: usize,
    },
}

/// One complete, immutable policy set: modules, data, directory and revision.
#[derive(Debug)]
pub struct PolicySnapshot {
    /// Content hash of every file in the set.
    pub revision: String,
    pub loaded_at: SystemTime,
    pub directory: Directory,
    pub prepared: PreparedDirectory,
    compiled: CompiledPolicy,
    /// Decisions remembered while the set serves ([`decision_cache`]).
    decisions: OnceLock<DecisionCache>,
}

impl PolicySnapshot {
    /// Reads, validates and compiles the policy directory, each evaluation bounded by
    /// `timeout`. With `tests`, the set's Rego unit tests must all pass within those limits.
    pub fn load(
        dir: &Path,
        timeout: Duration,
        tests: Option<TestLimits>,
    ) -> Result<Self, PolicyLoadError> {
        let files = PolicyFiles::read(dir)?;
        Self::from_files(&files, timeout, tests)
    }

    /// Loads a set for the gateway to enforce: its Rego tests must pass (each within
    /// `policy.test_timeout`, all before `deadline`), and the compiled engine starts in the
    /// background unless the configuration asks for the interpreter.
    pub fn load_to_serve(
        dir: &Path,
        config: &PolicyConfig,
        deadline: Option<std::time::Instant>,
    ) -> Result<Self, PolicyLoadError> {
        let limits = TestLimits {
            per_test: config.test_timeout,
            deadline,
        };
        let snapshot = Self::load(dir, config.timeout, Some(limits))?;
        snapshot.start_engine(config);
        Ok(snapshot)
    }

    /// Readies the set to serve: starts the compiled engine in the background unless
    /// `config` asks for the interpreter, and with it the decision cache, which serves once
    /// the compiled engine does and only if the set calls pure builtins alone.
    pub fn start_engine(&self, config: &PolicyConfig) {
        if config.engine == PolicyEngine::Auto {
            if config.decision_cache > 0 {
                self.remember_decisions(config.decision_cache);
            }
            self.compiled.start_compiled_engine();
        }
    }

    /// Gives the set a decision cache of `capacity` entries (the first call decides).
    pub fn remember_decisions(&self, capacity: usize) {
        self.decisions.get_or_init(|| DecisionCache::new(capacity));
    }

    /// Builds a snapshot from files already read.
    pub fn from_files(
        files: &PolicyFiles,
        timeout: Duration,
        tests: Option<TestLimits>,
    ) -> Result<Self, PolicyLoadError> {
        if files.modules.is_empty() {
            return Err(PolicyLoadError::NoModules {
                dir: "the policy directory".into(),
            });
        }
        let directory = match files.data.iter().find(|f| f.data_mount() == ["directory"]) {
            Some(f) => Directory::parse(&f.text, Path::new(&f.name))?,
            None => Directory::default(),
        };
        let revision = files.revision();
        let compiled = CompiledPolicy::compile(files, &revision, timeout, Value::new_object())?;
        if let Some(limits) = tests {
            let failed: Vec<String> = testing::run_tests(files, limits)?
                .into_iter()
                .filter(|t| !t.passed)
                .map(|t| format!("{} ({})", t.name, t.detail.unwrap_or_default()))
                .collect();
            if !failed.is_empty() {
                return Err(PolicyLoadError::TestsFailed { failed });
            }
        }
        Ok(Self {
            revision,
            loaded_at: crate::clock::now(),
            prepared: PreparedDirectory::new(&directory),
            directory,
            compiled,
            decisions: OnceLock::new(),
        })
    }

    /// Which engine decides for this set.
    pub fn engine_state(&self) -> EngineState {
        self.compiled.engine_state()
    }

    /// Compiles and checks the set on this thread; returns which engine now decides.
    pub fn compile_now(&self) -> EngineState {
        self.compiled.compile_now()
    }

    /// Evaluates `input` with coverage: the decision value and the evaluated lines per module.
    pub fn explain(
        &self,
        input: Value,
    ) -> Result<(Value, regorus::coverage::Report), DecisionError> {
        self.compiled.explain(input)
    }

    /// Decisions remembered now (0 without a decision cache).
    pub fn cached_decisions(&self) -> usize {
        self.decisions.get().map_or(0, DecisionCache::entries)
    }

    /// The decision for `input`: remembered, or evaluated (and remembered when the set
    /// decides purely and the input came up before). Failures are never remembered.
    pub fn decide(&self, input: Value) -> Result<Decision, DecisionError> {
        let Some(cache) = self
            .decisions
            .get()
            .filter(|_| self.compiled.decides_purely())
        else {
            return self.evaluate(input);
        };
        let slot = cache.slot(&input);
        let remember = match cache.lookup(&slot) {
            Lookup::Hit(decision) => return Ok(decision),
            Lookup::Miss { remember } => remember,
        };
        let decision = self.evaluate(input.clone())?;
        // This very evaluation may have sent the compiled engine back.
        if remember && self.compiled.decides_purely() {
            cache.insert(slot, &decision);
        }
        Ok(decision)
    }

    /// Evaluates the decision for `input`.
    fn evaluate(&self, input: Value) -> Result<Decision, DecisionError> {
        let value = self.compiled.evaluate(input)?;
        Decision::from_value(&value)
    }
}
