//! A candidate policy set evaluated beside the enforced one, for all traffic or for some
//! blueprints. It never changes an outcome.

use super::PolicySnapshot;
use std::sync::Arc;

/// The shadow set and its scope.
#[derive(Debug)]
pub struct ShadowPolicy {
    pub snapshot: Arc<PolicySnapshot>,
    /// Blueprint app ids in scope; empty means all traffic.
    pub blueprints: Vec<String>,
}

impl ShadowPolicy {
    /// True when a caller of `blueprint` is in scope.
    pub fn applies_to(&self, blueprint: Option<&str>) -> bool {
        self.blueprints.is_empty()
            || blueprint.is_some_and(|bp| self.blueprints.iter().any(|b| b == bp))
    }
}
