//! Decision ids: a random per-process prefix and a counter; unique and cheap.

use http::header::HeaderValue;
use pingora::{Error, ErrorType, Result};
use std::sync::atomic::{AtomicU64, Ordering};

/// The header that carries a decision id: on every answer, and to the upstream.
pub const HEADER: &str = "x-agentgate-decision-id";

/// `id` as the value of [`HEADER`], marked never to be indexed in HTTP/2's header
/// compression. Every id is new, so indexing one would only churn the connection's HPACK
/// table: each answer's id would evict an entry and lengthen the search the encoder makes
/// for the next header of the same name (at 64 h2 connections that search took 5% of the
/// gateway's CPU; 2% once the ids stayed out).
pub fn header_value(id: &str) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(id)
        .map_err(|e| Error::because(ErrorType::InternalError, "decision id header", e))?;
    value.set_sensitive(true);
    Ok(value)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_hex_and_their_header_value_is_never_indexed() {
        let ids = DecisionIds::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let value = header_value(&a).unwrap();
        assert_eq!(value.to_str().unwrap(), a);
        assert!(value.is_sensitive());
    }
}
