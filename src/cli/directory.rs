//! `agentgate directory sync` and `agentgate directory diff`: one read of the directory from
//! Microsoft Graph, with the same reader and merge the gateway uses.

use crate::config::{Config, GraphConfig};
use crate::directory::DirectoryFile;
use crate::graph::{
    diff, merge_owned, read_directory, Deadline, GraphClient, MergeOptions, MergedDirectory,
};
use crate::policy::DIRECTORY_FILE;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The configured Graph section, or a message saying how to add one.
fn graph_config(config: &Config) -> Result<&GraphConfig> {
    config.directory.graph.as_ref().with_context(|| {
        format!(
            "{} has no [directory.graph] section: add tenant, client_id and a credential (see docs/directory-sync.md)",
            config.path.display()
        )
    })
}

/// The operator's local directory file (the overrides), empty when there is none.
fn local_file(config: &Config) -> Result<(PathBuf, DirectoryFile)> {
    let path = config.policy.dir.join(DIRECTORY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let file = DirectoryFile::parse(&text, &path)?;
            let problems = file.problems();
            if !problems.is_empty() {
                bail!(
                    "{}: invalid directory:\n  - {}",
                    path.display(),
                    problems.join("\n  - ")
                );
            }
            Ok((path, file))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((path, DirectoryFile::default())),
        Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
}

/// Reads the directory from Graph once, as a sync of the gateway does.
pub fn read_graph(config: &Config) -> Result<DirectoryFile> {
    let graph = graph_config(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let client = GraphClient::new(graph)?;
    let read = runtime
        .block_on(read_directory(
            &client,
            &graph.tenant,
            graph.read_risk,
            Deadline::after(graph.sync_timeout),
        ))
        .context("reading the directory from Microsoft Graph")?;
    Ok(read.file)
}

/// Reads Graph once and merges `local` on top.
fn read_and_merge(config: &Config, local: &DirectoryFile) -> Result<MergedDirectory> {
    let graph = read_graph(config)?;
    Ok(merge_owned(graph, local, MergeOptions::default())?)
}

/// The same path, whether or not `a` exists yet.
fn same_file(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| {
        p.canonicalize().ok().or_else(|| {
            let parent = p.parent().filter(|d| !d.as_os_str().is_empty())?;
            Some(parent.canonicalize().ok()?.join(p.file_name()?))
        })
    };
    matches!((canonical(a), canonical(b)), (Some(x), Some(y)) if x == y)
}

/// Writes `merged` to `out` atomically: a temporary file in the same directory, synced, then
/// renamed over `out`. Readers see the old file or the new one, never a part.
fn write_atomically(merged: &MergedDirectory, out: &Path) -> Result<()> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .with_context(|| format!("{} is not a file path", out.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("failed to create {}", tmp.display()))?;
        let mut w = std::io::BufWriter::new(file);
        merged.write_json(&mut w)?;
        w.write_all(b"\n")?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, out)
            .with_context(|| format!("failed to move {} to {}", tmp.display(), out.display()))?;
        // The rename itself is durable once the directory is synced.
        std::fs::File::open(&dir).and_then(|d| d.sync_all())?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `directory sync`: reads Graph, merges the local file (unless `graph_only`), validates,
/// and writes the result to `out` atomically.
pub fn sync(config: &Config, out: &Path, graph_only: bool) -> Result<()> {
    graph_config(config)?;
    let (local_path, local) = if graph_only {
        (PathBuf::new(), DirectoryFile::default())
    } else {
        local_file(config)?
    };
    if !graph_only && same_file(out, &local_path) {
        bail!(
            "refusing to overwrite the local override file {} with the merged directory: \
             the next sync would read Entra's state back as local overrides (and a disable \
             could never be lifted). Write elsewhere, or pass --graph-only",
            local_path.display()
        );
    }
    let merged = read_and_merge(config, &local)?;
    write_atomically(&merged, out)?;
    let summary = merged.provenance.summary();
    println!(
        "ok: wrote {}: {} blueprints, {} agents, {} agent users, revision {} ({} only in the local file, {} with local overrides)",
        out.display(),
        merged.file.blueprints.len(),
        merged.file.agents.len(),
        merged.file.agent_users.len(),
        merged.revision,
        summary.file_only,
        summary.overridden,
    );
    Ok(())
}

/// `directory diff`: what a sync would change compared with `against` (default: the local
/// directory file).
pub fn diff_cmd(config: &Config, against: Option<&Path>, json: bool) -> Result<()> {
    graph_config(config)?;
    let (local_path, local) = local_file(config)?;
    let (against_path, before) = match against {
        None => (local_path, local.clone()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("failed to read {}", p.display()))?;
            (p.to_path_buf(), DirectoryFile::parse(&text, p)?)
        }
    };
    let merged = read_and_merge(config, &local)?;
    let changes = diff(&before, &merged.file);
    if json {
        println!("{}", serde_json::to_string_pretty(&changes)?);
    } else {
        println!(
            "sync (revision {}) compared with {}:",
            merged.revision,
            against_path.display()
        );
        print!("{}", changes.render_text());
    }
    Ok(())
}
