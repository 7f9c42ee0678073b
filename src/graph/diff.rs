//! What changes between two directories: entities added, removed, and changed field by field.

use crate::directory::DirectoryFile;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The three kinds of directory entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Blueprint,
    Agent,
    AgentUser,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blueprint => "blueprint",
            Self::Agent => "agent",
            Self::AgentUser => "agent_user",
        }
    }
}

/// One field whose value differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Value,
    pub after: Value,
}

/// What happened to one entity.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    Added { entry: Value },
    Removed { entry: Value },
    Changed { fields: Vec<FieldChange> },
}

/// A change to one entity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityChange {
    pub kind: EntityKind,
    pub id: String,
    #[serde(flatten)]
    pub change: Change,
}

/// Every change from one directory to another, blueprints first, each kind sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DirectoryDiff {
    pub changes: Vec<EntityChange>,
}

/// The fields of `before` and `after` (entries of one kind) whose values differ, by name.
pub fn changed_fields<T: Serialize>(before: &T, after: &T) -> Vec<FieldChange> {
    let (Ok(Value::Object(a)), Ok(Value::Object(b))) =
        (serde_json::to_value(before), serde_json::to_value(after))
    else {
        return Vec::new();
    };
    // Absent values are not written (an absent field is null on either side).
    let fields: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for field in fields {
        let before = a.get(field).cloned().unwrap_or(Value::Null);
        let after = b.get(field).cloned().unwrap_or(Value::Null);
        if before != after {
            out.push(FieldChange {
                field: field.clone(),
                before,
                after,
            });
        }
    }
    out
}

fn diff_kind<T: Serialize>(
    kind: EntityKind,
    before: &BTreeMap<String, T>,
    after: &BTreeMap<String, T>,
    out: &mut Vec<EntityChange>,
) {
    let value = |t: &T| serde_json::to_value(t).unwrap_or(Value::Null);
    for (id, b) in before {
        let change = match after.get(id) {
            None => Change::Removed { entry: value(b) },
            Some(a) => {
                let fields = changed_fields(b, a);
                if fields.is_empty() {
                    continue;
                }
                Change::Changed { fields }
            }
        };
        out.push(EntityChange {
            kind,
            id: id.clone(),
            change,
        });
    }
    for (id, a) in after {
        if !before.contains_key(id) {
            out.push(EntityChange {
                kind,
                id: id.clone(),
                change: Change::Added { entry: value(a) },
            });
        }
    }
}

/// What changes from `before` to `after`.
pub fn diff(before: &DirectoryFile, after: &DirectoryFile) -> DirectoryDiff {
    let mut changes = Vec::new();
    diff_kind(
        EntityKind::Blueprint,
        &before.blueprints,
        &after.blueprints,
        &mut changes,
    );
    diff_kind(
        EntityKind::Agent,
        &before.agents,
        &after.agents,
        &mut changes,
    );
    diff_kind(
        EntityKind::AgentUser,
        &before.agent_users,
        &after.agent_users,
        &mut changes,
    );
    changes.sort_by(|x, y| (x.kind, &x.id).cmp(&(y.kind, &y.id)));
    DirectoryDiff { changes }
}

// === impl DirectoryDiff ===

impl DirectoryDiff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// (added, removed, changed) entity counts.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for c in &self.changes {
            match c.change {
                Change::Added { .. } => counts.0 += 1,
                Change::Removed { .. } => counts.1 += 1,
                Change::Changed { .. } => counts.2 += 1,
            }
        }
        counts
    }

    /// One line per entity (`+` added, `-` removed, `~` changed with `field: before -> after`)
    /// and a closing count.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for c in &self.changes {
            let kind = c.kind.as_str();
            let _ = match &c.change {
                Change::Added { entry } => {
                    writeln!(out, "+ {kind} {}{}", c.id, label(entry))
                }
                Change::Removed { entry } => {
                    writeln!(out, "- {kind} {}{}", c.id, label(entry))
                }
                Change::Changed { fields } => {
                    let _ = writeln!(out, "~ {kind} {}", c.id);
                    for f in fields {
                        let _ = writeln!(out, "    {}: {} -> {}", f.field, f.before, f.after);
                    }
                    Ok(())
                }
            };
        }
        let (added, removed, changed) = self.counts();
        let _ = writeln!(out, "{added} added, {removed} removed, {changed} changed");
        out
    }
}

/// ` "name"` of an entry, when it has one.
fn label(entry: &Value) -> String {
    ["name", "display_name"]
        .iter()
        .find_map(|k| entry.get(*k).and_then(Value::as_str))
        .map(|n| format!(" {n:?}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file(v: serde_json::Value) -> DirectoryFile {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn added_removed_and_changed_fields_are_named() {
        let before = file(json!({
            "blueprints": {"cccccccc-3333-3333-3333-000000000001": {"name": "Sales"}},
            "agents": {
                "dddddddd-4444-4444-4444-000000000001": {"display_name": "EMEA", "blueprint": "cccccccc-3333-3333-3333-000000000001"},
                "dddddddd-4444-4444-4444-000000000002": {"display_name": "Old", "blueprint": "cccccccc-3333-3333-3333-000000000001"}
            }
        }));
        let after = file(json!({
            "blueprints": {"cccccccc-3333-3333-3333-000000000001": {"name": "Sales"}},
            "agents": {
                "dddddddd-4444-4444-4444-000000000001": {"display_name": "EMEA", "blueprint": "cccccccc-3333-3333-3333-000000000001",
                                                         "enabled": false, "risk": "high"},
                "dddddddd-4444-4444-4444-000000000003": {"display_name": "New", "blueprint": "cccccccc-3333-3333-3333-000000000001"}
            }
        }));
        let d = diff(&before, &after);
        assert_eq!(d.counts(), (1, 1, 1));
        assert_eq!(d.changes[0].id, "dddddddd-4444-4444-4444-000000000001");
        let Change::Changed { fields } = &d.changes[0].change else {
            panic!("expected a change, got {:?}", d.changes[0])
        };
        let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(names, vec!["enabled", "risk"]);
        assert_eq!(
            (&fields[0].before, &fields[0].after),
            (&json!(true), &json!(false))
        );
        let text = d.render_text();
        assert!(text.contains("~ agent dddddddd-4444-4444-4444-000000000001\n    enabled: true -> false\n    risk: \"none\" -> \"high\"\n"), "{text}");
        assert!(
            text.contains("- agent dddddddd-4444-4444-4444-000000000002 \"Old\""),
            "{text}"
        );
        assert!(
            text.contains("+ agent dddddddd-4444-4444-4444-000000000003 \"New\""),
            "{text}"
        );
        assert!(text.ends_with("1 added, 1 removed, 1 changed\n"), "{text}");
        assert!(diff(&after, &after).is_empty());
    }
}
