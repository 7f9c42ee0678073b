//! One JSON line per decision, written off the request path.
//!
//! Records are serialised on the worker and handed to a background writer thread through a
//! bounded channel (tracing-appender's non-blocking writer), so a slow disk never stalls a
//! request. The record type has no field that could hold a token, a signature or an
//! `Authorization` value, and the path is logged without its query string.

use serde::Serialize;
use std::io::Write;
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};

/// One decision as logged.
#[derive(Debug, Serialize)]
pub struct DecisionRecord<'a> {
    pub time: String,
    pub decision_id: &'a str,
    pub route: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub caller_kind: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub agent_id: Option<&'a str>,
    pub blueprint_id: Option<&'a str>,
    pub blueprint_name: Option<&'a str>,
    pub sponsors: Vec<&'a str>,
    pub user_oid: Option<&'a str>,
    pub allow: bool,
    pub status: u16,
    pub reason: &'a str,
    pub revision: &'a str,
    pub latency_us: u64,
}

/// The decision log writer.
pub struct DecisionLog {
    writer: NonBlocking,
    _guard: WorkerGuard,
}

impl DecisionLog {
    /// Logs to standard output.
    pub fn stdout() -> Self {
        // Not lossy: when the writer falls behind, requests wait rather than lose records.
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .finish(std::io::stdout());
        Self {
            writer,
            _guard: guard,
        }
    }

    /// Writes one record as a JSON line.
    pub fn write(&self, record: &DecisionRecord<'_>) {
        let Ok(mut line) = serde_json::to_vec(record) else {
            return;
        };
        line.push(b'\n');
        let mut w = self.writer.clone();
        if let Err(e) = w.write_all(&line) {
            tracing::warn!(error = %e, "decision log write failed");
        }
    }
}
