//! Decision ids: a random per-process prefix and a counter; unique and cheap.

use std::sync::atomic::{AtomicU64, Ordering};

/// Hands out decision ids, 32 lower-case hex digits each.
#[derive(Debug)]
pub struct DecisionIds {
    prefix: u64,
    counter: AtomicU64,
}

impl DecisionIds {
    pub fn new() -> Self {
        let mut bytes = [0u8; 8];
        // A fixed prefix only weakens uniqueness across restarts, never security.
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        Self {
            prefix: u64::from_le_bytes(bytes),
            counter: AtomicU64::new(0),
        }
    }

    /// The next id.
    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{:016x}", self.prefix, n)
    }
}

impl Default for DecisionIds {
    fn default() -> Self {
        Self::new()
    }
}
