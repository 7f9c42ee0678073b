//! The reload triggers: a file watcher on the configuration and the policy directories
//! (debounced, aware of kubelet's ConfigMap swap) and SIGHUP.

use super::Reloader;
use std::path::PathBuf;
use std::sync::Arc;

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
