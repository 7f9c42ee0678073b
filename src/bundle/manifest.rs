//! The bundle's `/.manifest`: its revision, the `data` paths it owns (`roots`), metadata.
//!
//! As in OPA, a root is a `/`-separated path under `data` (`"agentgate"`, `"directory"`), the
//! empty root `""` owns everything, and a missing `roots` means `[""]`. Two roots of one
//! bundle may not overlap, and every Rego package and every data document of the bundle must
//! lie under one of them.

use super::BundleError;
use serde::{Deserialize, Serialize};

/// What a bundle says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleManifest {
    /// The publisher's revision (e.g. a commit id); empty when the manifest names none.
    pub revision: String,
    /// The `data` paths the bundle owns, without leading or trailing `/`.
    pub roots: Vec<String>,
    /// Free-form metadata from the manifest, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Default for BundleManifest {
    fn default() -> Self {
        Self {
            revision: String::new(),
            roots: vec![String::new()],
            metadata: None,
        }
    }
}

/// The manifest as written; fields OPA knows but this gateway cannot honour are refused.
#[derive(Debug, Deserialize)]
struct RawManifest {
    #[serde(default)]
    revision: String,
    roots: Option<Vec<String>>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    wasm: Vec<serde_json::Value>,
    rego_version: Option<i64>,
    #[serde(default)]
    file_rego_versions: serde_json::Map<String, serde_json::Value>,
}

impl BundleManifest {
    /// Parses and checks a `.manifest` file.
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        let raw: RawManifest =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Manifest {
                message: e.to_string(),
            })?;
        if !raw.wasm.is_empty() {
            return Err(BundleError::Manifest {
                message: "wasm modules are not supported; ship Rego source".into(),
            });
        }
        let v0 = raw.rego_version == Some(0)
            || raw
                .file_rego_versions
                .values()
                .any(|v| v.as_i64() == Some(0));
        if v0 {
            return Err(BundleError::Manifest {
                message: "rego_version 0 is not supported; write Rego v1 (`if`, `contains`)".into(),
            });
        }
        let roots: Vec<String> = raw
            .roots
            .unwrap_or_else(|| vec![String::new()])
            .into_iter()
            .map(|r| r.trim_matches('/').to_string())
            .collect();
        for (i, a) in roots.iter().enumerate() {
            for b in &roots[i + 1..] {
                if overlaps(a, b) {
                    return Err(BundleError::Manifest {
                        message: format!("roots {a:?} and {b:?} overlap"),
                    });
                }
            }
        }
        Ok(Self {
            revision: raw.revision,
            roots,
            metadata: raw.metadata,
        })
    }

    /// Whether `path` (components under `data`) lies under one of the roots.
    pub fn owns(&self, path: &[&str]) -> bool {
        self.roots.iter().any(|root| {
            root.is_empty() || {
                let root: Vec<&str> = root.split('/').collect();
                path.len() >= root.len() && path[..root.len()] == root[..]
            }
        })
    }

    /// Whether `path` is a proper prefix of some root: data there is only allowed to hold
    /// the way down to a root.
    fn leads_to_a_root(&self, path: &[&str]) -> bool {
        self.roots.iter().any(|root| {
            let root: Vec<&str> = root.split('/').collect();
            !root[0].is_empty() && path.len() < root.len() && root[..path.len()] == path[..]
        })
    }

    /// Checks that a data document mounted at `mount` only holds values under the roots.
    ///
    /// A document mounted above a root (a root `data.json`, say) is walked down to the roots,
    /// as OPA does; the first path outside them is reported.
    pub fn check_data(&self, mount: &[&str], value: &serde_json::Value) -> Result<(), String> {
        if self.owns(mount) {
            return Ok(());
        }
        if !self.leads_to_a_root(mount) {
            return Err(format!("data.{}", mount.join(".")));
        }
        let serde_json::Value::Object(members) = value else {
            return Err(format!("data.{}", mount.join(".")));
        };
        for (key, member) in members {
            let mut below = mount.to_vec();
            below.push(key);
            self.check_data(&below, member)?;
        }
        Ok(())
    }
}

fn overlaps(a: &str, b: &str) -> bool {
    if a.is_empty() || b.is_empty() {
        return true;
    }
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('/').collect(), b.split('/').collect());
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_slashes_follow_opa() {
        let m = BundleManifest::parse(b"{}").unwrap();
        assert_eq!(m, BundleManifest::default());
        let m = BundleManifest::parse(
            br#"{"revision":"r1","roots":["/agentgate/","directory"],"metadata":{"by":"ci"}}"#,
        )
        .unwrap();
        assert_eq!(m.revision, "r1");
        assert_eq!(m.roots, ["agentgate", "directory"]);
        assert_eq!(m.metadata.unwrap()["by"], "ci");
    }

    #[test]
    fn overlapping_roots_wasm_and_rego_v0_are_refused() {
        for bad in [
            &br#"{"roots":["a","a/b"]}"#[..],
            br#"{"roots":["","a"]}"#,
            br#"{"roots":["x","x"]}"#,
            br#"{"wasm":[{"entrypoint":"a","module":"/policy.wasm"}]}"#,
            br#"{"rego_version":0}"#,
            br#"{"file_rego_versions":{"/a.rego":0}}"#,
            br#"{"revision":7}"#,
        ] {
            assert!(
                matches!(
                    BundleManifest::parse(bad),
                    Err(BundleError::Manifest { .. })
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Siblings that share a prefix of characters, not of path components, are fine.
        assert!(BundleManifest::parse(br#"{"roots":["agentgate","agentgate_test"]}"#).is_ok());
    }

    #[test]
    fn ownership_is_by_whole_path_components() {
        let m = BundleManifest::parse(br#"{"roots":["agentgate","a/b"]}"#).unwrap();
        assert!(m.owns(&["agentgate"]));
        assert!(m.owns(&["agentgate", "x"]));
        assert!(!m.owns(&["agentgate_test"]));
        assert!(m.owns(&["a", "b", "c"]));
        assert!(!m.owns(&["a"]));
        assert!(!m.owns(&[]));
    }

    #[test]
    fn data_above_a_root_is_walked_down_to_the_roots() {
        let m = BundleManifest::parse(br#"{"roots":["directory","a/b"]}"#).unwrap();
        assert_eq!(m.check_data(&[], &json!({"directory": {"x": 1}})), Ok(()));
        assert_eq!(m.check_data(&["a"], &json!({"b": [1]})), Ok(()));
        assert_eq!(
            m.check_data(&[], &json!({"directory": {}, "access": {}})),
            Err("data.access".into())
        );
        assert_eq!(
            m.check_data(&["a"], &json!({"b": 1, "c": 2})),
            Err("data.a.c".into())
        );
        assert_eq!(m.check_data(&["a"], &json!(3)), Err("data.a".into()));
        assert_eq!(m.check_data(&["x"], &json!({})), Err("data.x".into()));
    }
}
