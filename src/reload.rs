//! Live reload of policies, directory data and routes.
//!
//! A reload reads the configuration and the policy directory into a complete candidate set,
//! compiles it and runs its Rego tests; only then is it swapped in, atomically, with one
//! `ArcSwap::store`. On any failure the previous set keeps serving and the failure is logged
//! (with file:line where the parser gives one), counted and shown on `/readyz`. Triggers: a
//! file watcher (debounced), SIGHUP, and `POST /reload` on the admin listener. Nothing here
//! is reachable from the request path except through the `ArcSwap`s it stores into.

use crate::authorize::{Authorizer, ShadowPolicy};
use crate::config::{Config, ConfigError};
use crate::policy::{PolicyLoadError, PolicySnapshot, TestLimits};
use crate::proxy::routes::RouteTable;
use crate::telemetry::Metrics;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Why a candidate set was refused.
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
    Routes(std::io::Error),
    /// Occurs when building the candidate takes longer than `reload.timeout`; whatever was
    /// still running is abandoned, never swapped in.
    #[error("the reload did not finish in time: still building the candidate after {after:.1?} (reload.timeout)")]
    TimedOut { after: std::time::Duration },
}

/// A complete, valid candidate: what a reload swaps in.
struct Candidate {
    config: Config,
    policy: PolicySnapshot,
    routes: RouteTable,
}

/// Reads and checks everything a reload needs, with the set's Rego tests run before
/// `deadline` (each within `policy.test_timeout`).
fn build_candidate(
    config_path: &std::path::Path,
    deadline: std::time::Instant,
) -> Result<Candidate, ReloadError> {
    let config = Config::load(config_path)?;
    let limits = TestLimits {
        per_test: config.policy.test_timeout,
        deadline: Some(deadline),
    };
    let policy = PolicySnapshot::load(&config.policy.dir, config.policy.timeout, Some(limits))
        .map_err(|source| ReloadError::Policy {
            dir: config.policy.dir.display().to_string(),
            source,
        })?;
    let routes = RouteTable::new(&config.routes).map_err(ReloadError::Routes)?;
    Ok(Candidate {
        config,
        policy,
        routes,
    })
}

/// [`build_candidate`] on a thread of its own, waited for until `deadline`: a policy that
/// never finishes (a builtin the evaluation timer cannot interrupt) fails the reload instead
/// of holding the reload lock forever.
fn build_candidate_within(
    config_path: &std::path::Path,
    started: std::time::Instant,
    timeout: std::time::Duration,
) -> Result<Candidate, ReloadError> {
    let deadline = started + timeout;
    let (tx, rx) = std::sync::mpsc::channel();
    let path = config_path.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("reload-candidate".into())
        .spawn(move || {
            let _ = tx.send(build_candidate(&path, deadline));
        });
    if spawned.is_err() {
        return build_candidate(config_path, deadline);
    }
    match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
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
}

/// Performs reloads; one at a time.
pub struct Reloader {
    config_path: PathBuf,
    /// The configuration in force; the lock serialises reloads (never taken by requests).
    running: Mutex<Config>,
    authorizer: Arc<Authorizer>,
    routes: Arc<ArcSwap<RouteTable>>,
    metrics: Arc<Metrics>,
    status: ArcSwap<ReloadStatus>,
}

/// Loads the shadow set named by the configuration, if any.
pub fn load_shadow(config: &Config) -> Option<Result<ShadowPolicy, ReloadError>> {
    let shadow = config.shadow.as_ref()?;
    Some(
        PolicySnapshot::load_to_serve(&shadow.dir, &config.policy, None)
            .map(|s| ShadowPolicy {
                snapshot: Arc::new(s),
                blueprints: shadow.blueprints.clone(),
            })
            .map_err(|source| ReloadError::Policy {
                dir: shadow.dir.display().to_string(),
                source,
            }),
    )
}

impl Reloader {
    /// A reloader for a gateway started with `config`.
    pub fn new(
        config: Config,
        authorizer: Arc<Authorizer>,
        routes: Arc<ArcSwap<RouteTable>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let snapshot = authorizer.policy().load();
        let shadow = authorizer.shadow().map(|s| s.snapshot.revision.clone());
        metrics.set_revisions(&snapshot.revision, shadow.as_deref());
        metrics
            .last_reload_success
            .set(crate::clock::unix_now() as i64);
        let status = ReloadStatus {
            revision: snapshot.revision.clone(),
            shadow_revision: shadow,
            loaded_at_unix: crate::clock::unix_now(),
            last_attempt_unix: crate::clock::unix_now(),
            last_trigger: "start".into(),
            ..Default::default()
        };
        Self {
            config_path: config.path.clone(),
            running: Mutex::new(config),
            authorizer,
            routes,
            metrics,
            status: ArcSwap::from_pointee(status),
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

    /// Builds a candidate set and swaps it in. Returns the enforced revision.
    pub fn reload(&self, trigger: &str) -> Result<String, ReloadError> {
        let started = std::time::Instant::now();
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut status = (*self.status.load_full()).clone();
        status.last_attempt_unix = crate::clock::unix_now();
        status.last_trigger = trigger.to_string();
        let result = self.apply(&mut running, &mut status, started);
        match &result {
            Ok(revision) => {
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
        started: std::time::Instant,
    ) -> Result<String, ReloadError> {
        let Candidate {
            config: candidate,
            policy,
            routes,
        } = build_candidate_within(&self.config_path, started, running.reload.timeout)?;

        // The candidate is complete and valid: swap it in.
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
        let revision = policy.revision.clone();
        let unchanged = revision == status.revision && candidate.routes == running.routes;
        if !unchanged {
            // Compiled only once it is sure to serve: an unchanged candidate is dropped.
            policy.start_engine(&candidate.policy);
            self.authorizer.policy().store(Arc::new(policy));
            self.routes.store(Arc::new(routes));
            status.loaded_at_unix = crate::clock::unix_now();
        }
        status.revision = revision.clone();

        match load_shadow(&candidate) {
            None => {
                self.authorizer.set_shadow(None);
                status.shadow_revision = None;
                status.last_shadow_error = None;
            }
            Some(Ok(shadow)) => {
                status.shadow_revision = Some(shadow.snapshot.revision.clone());
                status.last_shadow_error = None;
                self.authorizer.set_shadow(Some(shadow));
            }
            // A broken shadow set never blocks the enforced one; the old shadow stays.
            Some(Err(e)) => {
                tracing::error!(error = %e, "shadow policy set refused; the previous shadow set stays");
                status.last_shadow_error = Some(e.to_string());
            }
        }
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

/// The files whose changes matter: the configuration file, and `.rego`/`.json` files under
/// the policy directories (not logs, pid files or editor swap files next to them), plus
/// kubelet's swap of a ConfigMap volume holding either.
///
/// kubelet updates a mounted ConfigMap atomically: it writes the new files into a hidden
/// timestamped directory (`..2026_01_02_03_04_05.123`), then renames a new `..data` symlink
/// over the old one; the visible names are symlinks through `..data`. So the rename of
/// `..data` in the volume's root is the change, and writes inside hidden directories are
/// not (they are invisible until the swap).
struct RelevantPaths {
    config: PathBuf,
    config_dir: Option<PathBuf>,
    dirs: Vec<PathBuf>,
}

/// kubelet's symlink to the current contents of a ConfigMap or Secret volume.
const KUBELET_DATA_LINK: &str = "..data";

/// `path` with its directory made canonical and its own name kept, so a file that is a
/// symlink (as in a ConfigMap volume) keeps its name instead of resolving to its target.
fn canonical_dir_of(path: &std::path::Path) -> PathBuf {
    match (
        path.parent().and_then(|p| p.canonicalize().ok()),
        path.file_name(),
    ) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

impl RelevantPaths {
    /// Canonical forms, so events reported under another spelling of a path still match.
    fn new(config: &std::path::Path, dirs: &[PathBuf]) -> Self {
        let canonical = |p: &std::path::Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        let config = canonical_dir_of(config);
        Self {
            config_dir: config.parent().map(PathBuf::from),
            config,
            dirs: dirs.iter().map(|d| canonical(d)).collect(),
        }
    }

    fn matches(&self, path: &std::path::Path) -> bool {
        let path = canonical_dir_of(path);
        if path == self.config {
            return true;
        }
        let parent = path.parent();
        if path.file_name().is_some_and(|n| n == KUBELET_DATA_LINK)
            && (parent == self.config_dir.as_deref()
                || self.dirs.iter().any(|d| parent == Some(d.as_path())))
        {
            return true;
        }
        let policy_file = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("rego" | "json")
        );
        // Hidden files and anything in a hidden directory (editor swap files, kubelet's
        // staging directories) are skipped, as the policy reader skips them.
        let visible_under = |dir: &PathBuf| {
            path.strip_prefix(dir).is_ok_and(|rest| {
                rest.components()
                    .all(|c| !c.as_os_str().to_string_lossy().starts_with('.'))
            })
        };
        policy_file && self.dirs.iter().any(visible_under)
    }
}

/// The background task that turns file changes and SIGHUP into reloads.
pub struct ReloadTriggers {
    pub reloader: Arc<Reloader>,
    pub watch: bool,
    pub debounce: std::time::Duration,
}

impl ReloadTriggers {
    /// Runs until `shutdown` flips.
    pub async fn run(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        use notify::Watcher;
        let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel::<()>();
        let watched = self.reloader.watched_paths();
        let dirs: Vec<PathBuf> = watched.iter().filter(|p| p.is_dir()).cloned().collect();
        let relevant = RelevantPaths::new(&self.reloader.config_path, &dirs);
        let _watcher = if self.watch {
            let watcher =
                notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                    if let Ok(e) = event {
                        if !e.kind.is_access() && e.paths.iter().any(|p| relevant.matches(p)) {
                            let _ = tx.send(());
                        }
                    }
                });
            match watcher {
                Ok(mut w) => {
                    for path in watched {
                        // A file's directory is watched (editors replace files rather than
                        // write them); events are filtered down to the files that matter.
                        let (target, mode) = if path.is_dir() {
                            (path.clone(), notify::RecursiveMode::Recursive)
                        } else {
                            (
                                path.parent().map(PathBuf::from).unwrap_or(path.clone()),
                                notify::RecursiveMode::NonRecursive,
                            )
                        };
                        if let Err(e) = w.watch(&target, mode) {
                            tracing::warn!(path = %target.display(), error = %e, "cannot watch for changes; use SIGHUP or POST /reload");
                        }
                    }
                    Some(w)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "file watching unavailable; use SIGHUP or POST /reload");
                    None
                }
            }
        } else {
            None
        };
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP");
                None
            }
        };
        loop {
            let trigger = tokio::select! {
                Some(()) = changes.recv() => {
                    // Wait for a quiet moment so a multi-file edit is read as one set.
                    while let Ok(Some(())) = tokio::time::timeout(self.debounce, changes.recv()).await {}
                    "watch"
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "sighup",
                _ = shutdown.changed() => return,
            };
            let reloader = self.reloader.clone();
            let _ = tokio::task::spawn_blocking(move || reloader.reload(trigger)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RelevantPaths;
    use std::path::Path;

    #[test]
    fn kubelet_swaps_and_visible_policy_files_matter_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        let policies = root.path().join("policies");
        std::fs::create_dir_all(etc.join("..2026_01_01_00_00_00.1")).unwrap();
        std::fs::write(etc.join("..2026_01_01_00_00_00.1/agentgate.toml"), "").unwrap();
        std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", etc.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/agentgate.toml", etc.join("agentgate.toml")).unwrap();
        std::fs::create_dir_all(policies.join("..2026_01_01_00_00_00.1/data")).unwrap();
        std::fs::create_dir_all(policies.join("agentgate")).unwrap();
        let relevant =
            RelevantPaths::new(&etc.join("agentgate.toml"), std::slice::from_ref(&policies));

        for yes in [
            etc.join("agentgate.toml"),
            etc.join("..data"),
            policies.join("..data"),
            policies.join("agentgate/decision.rego"),
            policies.join("data/directory.json"),
        ] {
            assert!(relevant.matches(&yes), "{}", yes.display());
        }
        for no in [
            etc.join("..data_tmp"),
            etc.join("..2026_01_01_00_00_00.1/agentgate.toml"),
            policies.join("..2026_01_01_00_00_00.1/data/directory.json"),
            policies.join("agentgate/.decision.rego.swp"),
            policies.join("agentgate/notes.txt"),
            policies.join("agentgate/..data"),
            root.path().join("other/..data"),
            Path::new("/elsewhere/decision.rego").to_path_buf(),
        ] {
            assert!(!relevant.matches(&no), "{}", no.display());
        }
    }
}
