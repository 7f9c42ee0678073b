//! Building snapshots, at start and on every reload.
//!
//! A reload reads the configuration and the policy set (the policy directory, or the last
//! good bundle from [`Feeds`]) into a complete candidate [`Snapshot`] (routes, the enforced
//! policy set, the shadow set), with the last good directory from Microsoft Graph merged
//! under the set's own directory file, compiles it and runs its Rego tests; only then is it
//! swapped in, atomically, with one store into [`Live`]. On any failure the previous
//! snapshot (and the feeds it was built from) keeps serving and the failure is logged (with
//! file:line:column where the parser gives one), counted and shown on `/readyz`. Triggers
//! ([`watch`]): a file watcher (debounced), SIGHUP, `POST /reload` on the admin listener, a
//! new bundle and a new Graph directory. Nothing here is reachable from the request path
//! except through [`Live`].

// Off the request path: the lock serialises reloads.
#![allow(clippy::disallowed_types)]

mod watch;

pub use watch::ReloadTriggers;

use crate::bundle::LoadedBundle;
use crate::config::{Config, ConfigError};
use crate::directory::{DirectoryError, DirectoryFile};
use crate::graph::{MergeOptions, MergedDirectory, ProvenanceSummary, SyncedDirectory};
use crate::policy::{
    PolicyFiles, PolicyLoadError, PolicySnapshot, ShadowPolicy, TestLimits, DIRECTORY_FILE,
};
use crate::routes::{RouteError, RouteTable};
use crate::snapshot::{Live, Snapshot};
use crate::telemetry::Metrics;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a candidate snapshot was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("policy set in {dir}: {source}")]
    Policy {
        dir: String,
        source: PolicyLoadError,
    },
    #[error("routes: {0}")]
    Routes(#[from] RouteError),
    /// Occurs when `[policy.bundle]` is configured and no bundle has passed its checks yet.
    #[error("[policy.bundle] is configured and no bundle has been loaded yet")]
    NoBundle,
    /// Occurs when the directory from Graph and the set's directory file do not merge into
    /// a valid directory.
    #[error("the directory from Microsoft Graph with {file} on top: {source}")]
    GraphDirectory {
        file: String,
        source: DirectoryError,
    },
    /// Occurs when building the candidate takes longer than `reload.timeout`; whatever was
    /// still running is abandoned, never swapped in.
    #[error("the reload did not finish in time: still building the candidate after {after:.1?} (reload.timeout)")]
    TimedOut { after: Duration },
}

/// What to do when the shadow set cannot be loaded.
#[derive(Debug, Clone)]
pub enum ShadowFallback {
    /// Refuse the whole snapshot (at start).
    Refuse,
    /// Keep this shadow set (on reload: a broken candidate never blocks the enforced set).
    Keep(Option<Arc<ShadowPolicy>>),
}

/// A snapshot ready to swap in, with what a reload reports about it.
pub struct Built {
    pub snapshot: Snapshot,
    /// Why the configured shadow set was not loaded, when the previous one was kept.
    pub shadow_error: Option<ReloadError>,
    /// Where the enforced set's directory came from, when Graph was merged in.
    pub directory: Option<DirectorySources>,
}

/// Where the directory in force came from: the Graph revision it was built from and how
/// much of it the operator's file decided.
#[derive(Debug, Clone, Serialize)]
pub struct DirectorySources {
    /// Content hash of the Graph directory, before the file's overrides.
    pub graph_revision: String,
    /// Content hash of the merged directory in force.
    pub merged_revision: String,
    /// When Graph's directory was read (Unix seconds).
    pub graph_synced_unix: u64,
    /// Entities only the file lists, entities the file overrides, and whether Graph's own
    /// entities are withheld (stale under `refuse_unvouched`).
    pub provenance: ProvenanceSummary,
}

/// What a reload takes from outside the files it reads itself: the newest inputs that
/// passed their own checks, kept by the [`Reloader`] for every later reload.
#[derive(Clone, Default)]
pub struct Feeds {
    /// The last bundle that was checked and served, when `[policy.bundle]` is configured.
    pub bundle: Option<Arc<LoadedBundle>>,
    /// The last good directory read from Microsoft Graph, when `[directory.graph]` is.
    pub graph: Option<Arc<SyncedDirectory>>,
}

/// The policy files of a set: `bundle`'s when given, else those in `dir`; with `graph`'s
/// directory merged under the set's own directory file.
fn policy_files(
    dir: &Path,
    bundle: Option<&LoadedBundle>,
    graph: Option<&SyncedDirectory>,
) -> Result<(PolicyFiles, Option<DirectorySources>), ReloadError> {
    let mut files = match bundle {
        Some(b) => b.files.clone(),
        None => PolicyFiles::read(dir).map_err(|e| ReloadError::Policy {
            dir: dir.display().to_string(),
            source: e.into(),
        })?,
    };
    let sources = match graph {
        Some(graph) => {
            let merged = with_graph_directory(&mut files, &graph.graph, graph.merge_options())?;
            Some(DirectorySources {
                graph_revision: graph.revision.clone(),
                merged_revision: merged.revision,
                graph_synced_unix: crate::clock::unix_secs(graph.synced_at),
                provenance: merged.provenance.summary(),
            })
        }
        None => None,
    };
    Ok((files, sources))
}

/// Replaces the set's directory document with `graph`'s directory under it: the set's own
/// file (the operator's overrides) wins field by field (see [`crate::graph::merge()`]).
/// Returns the merged directory, with the provenance of each entity.
pub fn with_graph_directory(
    files: &mut PolicyFiles,
    graph: &DirectoryFile,
    options: MergeOptions,
) -> Result<MergedDirectory, ReloadError> {
    let local = files.directory_document();
    let file = local.map_or(DIRECTORY_FILE.to_string(), |f| f.name.clone());
    let failed = |source| ReloadError::GraphDirectory {
        file: file.clone(),
        source,
    };
    let local = match local {
        Some(f) => DirectoryFile::parse(&f.text, &f.path).map_err(failed)?,
        None => DirectoryFile::default(),
    };
    let merged = crate::graph::merge(graph, &local, options).map_err(failed)?;
    // Plain data with string keys: serialising cannot fail (and an empty text would fail
    // validation, refusing the reload).
    let text = serde_json::to_string(&merged.file).unwrap_or_default();
    files.replace_directory(DIRECTORY_FILE, text);
    Ok(merged)
}

/// Loads a policy set from `files` (read from `origin`) for `config`, its tests run within
/// `limits`.
fn load_policy(
    files: &PolicyFiles,
    origin: &str,
    config: &Config,
    limits: TestLimits,
) -> Result<PolicySnapshot, ReloadError> {
    PolicySnapshot::from_files(files, config.policy.timeout, Some(limits)).map_err(|source| {
        ReloadError::Policy {
            dir: origin.to_string(),
            source,
        }
    })
}

/// Builds the snapshot `config` describes, with `feeds`. The compiled policy engines are
/// not started: see [`ready_to_serve`].
pub fn build_snapshot(
    config: &Config,
    limits: TestLimits,
    shadow: ShadowFallback,
    feeds: &Feeds,
) -> Result<Built, ReloadError> {
    let graph = feeds.graph.as_deref();
    let (bundle, origin) = match (&config.policy.bundle, &feeds.bundle) {
        (Some(_), Some(b)) => (
            Some(&**b),
            format!("bundle revision {:?}", b.manifest.revision),
        ),
        (Some(_), None) => return Err(ReloadError::NoBundle),
        (None, _) => (None, config.policy.dir.display().to_string()),
    };
    let (files, directory) = policy_files(&config.policy.dir, bundle, graph)?;
    let policy = load_policy(&files, &origin, config, limits)?;
    let routes = RouteTable::new(&config.routes)?;
    let loaded = config.shadow.as_ref().map(|s| {
        let origin = s.dir.display().to_string();
        policy_files(&s.dir, None, graph)
            .and_then(|(files, _)| load_policy(&files, &origin, config, limits))
            .map(|snapshot| {
                Arc::new(ShadowPolicy {
                    snapshot: Arc::new(snapshot),
                    blueprints: s.blueprints.clone(),
                })
            })
    });
    let (shadow, shadow_error) = match (loaded, shadow) {
        (None, _) => (None, None),
        (Some(Ok(s)), _) => (Some(s), None),
        (Some(Err(e)), ShadowFallback::Refuse) => return Err(e),
        (Some(Err(e)), ShadowFallback::Keep(previous)) => (previous, Some(e)),
    };
    Ok(Built {
        snapshot: Snapshot {
            routes,
            policy: Arc::new(policy),
            shadow,
            bundle_revision: bundle.map(|b| b.manifest.revision.as_str().into()),
        },
        shadow_error,
        directory,
    })
}

/// Readies a snapshot that is sure to serve: a policy set whose revision `previous` already
/// serves is taken from it (with its compiled engine, warm), any other starts its compiled
/// engine.
pub fn ready_to_serve(
    mut snapshot: Snapshot,
    previous: Option<&Snapshot>,
    config: &Config,
) -> Snapshot {
    let reuse = |new: Arc<PolicySnapshot>, old: Option<&Arc<PolicySnapshot>>| match old {
        Some(old) if old.revision == new.revision => old.clone(),
        _ => {
            new.start_engine(&config.policy);
            new
        }
    };
    snapshot.policy = reuse(snapshot.policy, previous.map(|p| &p.policy));
    if let Some(shadow) = snapshot.shadow.take() {
        let old = previous.and_then(|p| p.shadow.as_ref());
        snapshot.shadow = Some(match old {
            Some(old) if Arc::ptr_eq(old, &shadow) => shadow,
            _ => Arc::new(ShadowPolicy {
                snapshot: reuse(shadow.snapshot.clone(), old.map(|o| &o.snapshot)),
                blueprints: shadow.blueprints.clone(),
            }),
        });
    }
    snapshot
}

/// Reads the configuration and builds its snapshot before `deadline`.
fn build_candidate(
    config_path: &Path,
    deadline: Instant,
    shadow: ShadowFallback,
    feeds: &Feeds,
) -> Result<(Config, Built), ReloadError> {
    let config = Config::load(config_path)?;
    let limits = TestLimits {
        per_test: config.policy.test_timeout,
        deadline: Some(deadline),
    };
    let built = build_snapshot(&config, limits, shadow, feeds)?;
    Ok((config, built))
}

/// [`build_candidate`] on a thread of its own, waited for until `timeout` after `started`:
/// a policy that never finishes (a builtin the evaluation timer cannot interrupt) fails the
/// reload instead of holding the reload lock forever.
fn build_candidate_within(
    config_path: &Path,
    started: Instant,
    timeout: Duration,
    shadow: ShadowFallback,
    feeds: &Feeds,
) -> Result<(Config, Built), ReloadError> {
    let deadline = started + timeout;
    let (tx, rx) = std::sync::mpsc::channel();
    let path = config_path.to_path_buf();
    let fallback = shadow.clone();
    let fed = feeds.clone();
    let spawned = std::thread::Builder::new()
        .name("reload-candidate".into())
        .spawn(move || {
            let _ = tx.send(build_candidate(&path, deadline, fallback, &fed));
        });
    if spawned.is_err() {
        return build_candidate(config_path, deadline, shadow, feeds);
    }
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(candidate) => candidate,
        Err(_) => {
            tracing::warn!("a reload candidate is still being built past reload.timeout; it is abandoned and will never be used");
            Err(ReloadError::TimedOut {
                after: started.elapsed(),
            })
        }
    }
}

/// What the last reloads did, for `/readyz` and the admin endpoint.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    pub revision: String,
    pub shadow_revision: Option<String>,
    pub loaded_at_unix: u64,
    pub last_attempt_unix: u64,
    pub last_trigger: String,
    pub last_error: Option<String>,
    pub last_shadow_error: Option<String>,
    /// Where the directory in force came from, when it was merged from Graph.
    pub directory: Option<DirectorySources>,
}

/// Performs reloads; one at a time.
pub struct Reloader {
    config_path: PathBuf,
    /// The configuration in force; the lock serialises reloads (never taken by requests).
    running: Mutex<Config>,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    status: ArcSwap<ReloadStatus>,
    /// The feeds the snapshot in force was built from; replaced only with a snapshot.
    feeds: ArcSwap<Feeds>,
}

impl Reloader {
    /// A reloader for a gateway started with `config` and `feeds`, serving `live`.
    pub fn new(config: Config, feeds: Feeds, live: Arc<Live>, metrics: Arc<Metrics>) -> Self {
        let snapshot = live.load();
        let shadow = snapshot
            .shadow
            .as_ref()
            .map(|s| s.snapshot.revision.clone());
        metrics.set_revisions(&snapshot.policy.revision, shadow.as_deref());
        metrics
            .last_reload_success
            .set(crate::clock::unix_now() as i64);
        let status = ReloadStatus {
            revision: snapshot.policy.revision.clone(),
            shadow_revision: shadow,
            loaded_at_unix: crate::clock::unix_now(),
            last_attempt_unix: crate::clock::unix_now(),
            last_trigger: "start".into(),
            ..Default::default()
        };
        Self {
            config_path: config.path.clone(),
            running: Mutex::new(config),
            live,
            metrics,
            status: ArcSwap::from_pointee(status),
            feeds: ArcSwap::from_pointee(feeds),
        }
    }

    /// The paths whose changes trigger a reload: the config file and the policy directories.
    pub fn watched_paths(&self) -> Vec<PathBuf> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut paths = vec![running.policy.dir.clone(), self.config_path.clone()];
        if let Some(s) = &running.shadow {
            paths.push(s.dir.clone());
        }
        paths
    }

    /// The outcome of the reloads so far.
    pub fn status(&self) -> Arc<ReloadStatus> {
        self.status.load_full()
    }

    /// Builds a candidate snapshot and swaps it in. Returns the enforced revision.
    pub fn reload(&self, trigger: &str) -> Result<String, ReloadError> {
        self.reload_fed(trigger, |_| {})
    }

    /// Like [`Reloader::reload`], with the feeds changed by `update` (a new bundle, a new
    /// Graph directory). The changed feeds are kept only when their snapshot is swapped in:
    /// a refused bundle or directory never reaches a later reload.
    pub fn reload_fed(
        &self,
        trigger: &str,
        update: impl FnOnce(&mut Feeds),
    ) -> Result<String, ReloadError> {
        let started = Instant::now();
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut feeds = (*self.feeds.load_full()).clone();
        update(&mut feeds);
        let mut status = (*self.status.load_full()).clone();
        status.last_attempt_unix = crate::clock::unix_now();
        status.last_trigger = trigger.to_string();
        let result = self.apply(&mut running, &mut status, &feeds, started);
        match &result {
            Ok(revision) => {
                self.feeds.store(Arc::new(feeds));
                status.last_error = None;
                self.metrics
                    .last_reload_success
                    .set(crate::clock::unix_now() as i64);
                tracing::info!(revision = %revision, trigger, took_ms = started.elapsed().as_millis() as u64, "reload applied");
            }
            Err(e) => {
                self.metrics.reloads.with_label_values(&["error"]).inc();
                status.last_error = Some(e.to_string());
                tracing::error!(trigger, error = %e, "reload refused; the previous set keeps serving");
            }
        }
        self.status.store(Arc::new(status));
        result
    }

    fn apply(
        &self,
        running: &mut Config,
        status: &mut ReloadStatus,
        feeds: &Feeds,
        started: Instant,
    ) -> Result<String, ReloadError> {
        let previous = self.live.load();
        let (candidate, built) = build_candidate_within(
            &self.config_path,
            started,
            running.reload.timeout,
            ShadowFallback::Keep(previous.shadow.clone()),
            feeds,
        )?;
        warn_about_restart_only_changes(&candidate, running);
        let Built {
            snapshot,
            shadow_error,
            directory,
        } = built;
        status.directory = directory;
        let revision = snapshot.policy.revision.clone();
        let shadow_revision = snapshot
            .shadow
            .as_ref()
            .map(|s| s.snapshot.revision.clone());
        let unchanged = revision == status.revision
            && snapshot.bundle_revision == previous.bundle_revision
            && candidate.routes == running.routes
            && shadow_revision == status.shadow_revision;
        if !unchanged {
            // Compiled only once it is sure to serve: an unchanged candidate is dropped.
            self.live
                .store(ready_to_serve(snapshot, Some(&previous), &candidate));
            status.loaded_at_unix = crate::clock::unix_now();
        }
        status.revision = revision.clone();
        status.shadow_revision = shadow_revision;
        status.last_shadow_error = shadow_error.map(|e| {
            tracing::error!(error = %e, "shadow policy set refused; the previous shadow set stays");
            e.to_string()
        });
        self.metrics
            .set_revisions(&status.revision, status.shadow_revision.as_deref());
        self.metrics
            .reloads
            .with_label_values(&[if unchanged { "unchanged" } else { "ok" }])
            .inc();
        *running = Config {
            routes: candidate.routes,
            policy: candidate.policy,
            shadow: candidate.shadow,
            ..running.clone()
        };
        Ok(revision)
    }
}

/// Logs the sections of `candidate` that differ from `running` but only apply on restart.
fn warn_about_restart_only_changes(candidate: &Config, running: &Config) {
    for (what, changed) in [
        ("listeners", candidate.listeners != running.listeners),
        ("admin", candidate.admin != running.admin),
        ("identity", candidate.identity != running.identity),
        ("server", candidate.server != running.server),
        ("token_cache", candidate.token_cache != running.token_cache),
        ("log", candidate.log != running.log),
        ("reload", candidate.reload != running.reload),
    ] {
        if changed {
            tracing::warn!(section = what, "configuration changed; restart agentgate (or upgrade with SIGQUIT + --upgrade) to apply it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::DirectoryFile;

    fn graph() -> DirectoryFile {
        DirectoryFile::parse(
            r#"{"blueprints": {"cccccccc-3333-3333-3333-000000000001": {"name": "From Graph"}}}"#,
            Path::new("graph"),
        )
        .unwrap()
    }

    fn files_with_directory(text: Option<&str>) -> PolicyFiles {
        let mut files = PolicyFiles::default();
        if let Some(text) = text {
            files.replace_directory(DIRECTORY_FILE, text.to_string());
        }
        files
    }

    #[test]
    fn the_graph_directory_is_added_when_the_set_has_no_directory_file() {
        let mut files = files_with_directory(None);
        let merged = with_graph_directory(&mut files, &graph(), MergeOptions::default()).unwrap();
        let doc = files.directory_document().expect("a directory document");
        assert_eq!(doc.name, DIRECTORY_FILE);
        assert!(doc.text.contains("From Graph"), "{}", doc.text);
        assert_eq!(merged.file.blueprints.len(), 1);
    }

    #[test]
    fn a_directory_file_that_does_not_parse_refuses_the_merge_and_is_left_alone() {
        let mut files = files_with_directory(Some("{ not json"));
        let err = with_graph_directory(&mut files, &graph(), MergeOptions::default())
            .expect_err("refused");
        assert!(
            matches!(&err, ReloadError::GraphDirectory { file, .. } if file == DIRECTORY_FILE),
            "{err}"
        );
        assert_eq!(files.directory_document().unwrap().text, "{ not json");
    }
}
