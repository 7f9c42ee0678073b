//! Reading a policy directory: Rego modules, their tests, and data documents.

use aws_lc_rs::digest;
use std::path::{Path, PathBuf};

/// One file read from the policy directory.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the policy directory, with `/` separators (stable in messages).
    pub name: String,
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// The `test_*` rules this module defines: `(package path, rule name)` pairs.
    pub fn test_rules(&self) -> Vec<(String, String)> {
        let mut package = None;
        let mut rules = Vec::new();
        for line in self.text.lines() {
            let line = line.trim_start();
            if let Some(p) = line.strip_prefix("package ") {
                package = Some(p.trim().to_string());
            } else if line.starts_with("test_") {
                let name: String = line
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if let Some(p) = &package {
                    if !rules.iter().any(|(_, r)| r == &name) {
                        rules.push((p.clone(), name));
                    }
                }
            }
        }
        rules
    }

    /// The full names (`data.<package>.<rule>`) of the `test_*` rules this module defines.
    pub fn test_rule_names(&self) -> Vec<String> {
        self.test_rules()
            .into_iter()
            .map(|(package, rule)| format!("data.{package}.{rule}"))
            .collect()
    }
}

/// The contents of a policy directory.
#[derive(Debug, Clone, Default)]
pub struct PolicyFiles {
    /// `.rego` modules that decide (not tests).
    pub modules: Vec<SourceFile>,
    /// `*_test.rego` modules.
    pub tests: Vec<SourceFile>,
    /// Data documents, each mounted where [`SourceFile::data_mount`] says: a policy
    /// directory's `data/<name>.json` at `data.<name>`, a bundle's `a/b/data.json` at
    /// `data.a.b`.
    pub data: Vec<SourceFile>,
}

impl SourceFile {
    /// For a data document, its place under `data`, from its name: `data/directory.json`
    /// (policy directory layout) and `directory/data.json` (bundle layout) are both
    /// `["directory"]`; a bundle's root `data.json` is `[]`, merged into `data` itself.
    pub fn data_mount(&self) -> Vec<&str> {
        let mut parts: Vec<&str> = self.name.split('/').collect();
        match parts.pop() {
            Some("data.json") => parts,
            Some(file) => vec![file.strip_suffix(".json").unwrap_or(file)],
            None => Vec::new(),
        }
    }
}

/// Why a policy directory could not be read.
#[derive(Debug, thiserror::Error)]
#[error("failed to read {path}")]
pub struct ReadError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl PolicyFiles {
    /// Reads every `.rego` file under `dir` (recursively) and every `dir/data/*.json`.
    pub fn read(dir: &Path) -> Result<Self, ReadError> {
        let mut files = PolicyFiles::default();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let entries = std::fs::read_dir(&d).map_err(|source| ReadError {
                path: d.clone(),
                source,
            })?;
            for entry in entries {
                let path = entry
                    .map_err(|source| ReadError {
                        path: d.clone(),
                        source,
                    })?
                    .path();
                let name = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .replace('\\', "/");
                let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if file_name.starts_with('.') {
                    continue; // editor swap files and hidden directories
                }
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let bucket = if file_name.ends_with("_test.rego") {
                    &mut files.tests
                } else if file_name.ends_with(".rego") {
                    &mut files.modules
                } else if file_name.ends_with(".json") && path.parent() == Some(&dir.join("data")) {
                    &mut files.data
                } else {
                    continue;
                };
                let text = std::fs::read_to_string(&path).map_err(|source| ReadError {
                    path: path.clone(),
                    source,
                })?;
                bucket.push(SourceFile { name, path, text });
            }
        }
        for list in [&mut files.modules, &mut files.tests, &mut files.data] {
            list.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(files)
    }

    /// The data document mounted at `data.directory`, if the set has one.
    pub fn directory_document(&self) -> Option<&SourceFile> {
        self.data.iter().find(|f| f.data_mount() == ["directory"])
    }

    /// Replaces the text of the `data.directory` document, adding one named `name` when
    /// the set has none.
    pub fn replace_directory(&mut self, name: &str, text: String) {
        match self
            .data
            .iter_mut()
            .find(|f| f.data_mount() == ["directory"])
        {
            Some(f) => f.text = text,
            None => {
                self.data.push(SourceFile {
                    name: name.to_string(),
                    path: name.into(),
                    text,
                });
                self.data.sort_by(|a, b| a.name.cmp(&b.name));
            }
        }
    }

    /// A content hash over every file (names and bytes): the revision of this set.
    pub fn revision(&self) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        for f in self.modules.iter().chain(&self.tests).chain(&self.data) {
            ctx.update(f.name.as_bytes());
            ctx.update(&[0]);
            ctx.update(f.text.as_bytes());
            ctx.update(&[0]);
        }
        ctx.finish()
            .as_ref()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}
