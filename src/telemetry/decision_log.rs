//! One JSON line per decision, written off the request path.
//!
//! Records are serialised on the worker and handed to a background writer thread through a
//! bounded channel (tracing-appender's non-blocking writer), so a slow disk never stalls a
//! request. The record type has no field that could hold a token, a signature or an
//! `Authorization` value, and the path is logged without its query string.

use crate::config::{LogConfig, LogTarget};
use serde::Serialize;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The shadow set's verdict, when one was evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowRecord<'a>>,
}

/// The shadow policy set's verdict beside the enforced one.
#[derive(Debug, Serialize)]
pub struct ShadowRecord<'a> {
    pub revision: &'a str,
    pub outcome: &'a str,
    pub reason: &'a str,
    pub mismatch: bool,
}

/// The decision log writer.
pub struct DecisionLog {
    writer: NonBlocking,
    _guard: WorkerGuard,
    /// Allowed decisions are logged when `seen * rate` crosses an integer.
    allow_rate: f64,
    allowed_seen: AtomicU64,
}

impl DecisionLog {
    /// Opens the configured target (standard output or a file, appended to).
    pub fn open(cfg: &LogConfig) -> std::io::Result<Self> {
        let builder = tracing_appender::non_blocking::NonBlockingBuilder::default()
            // Not lossy: when the writer falls behind, requests wait rather than lose records.
            .lossy(false);
        let (writer, guard) = match &cfg.decisions {
            LogTarget::Stdout => builder.finish(std::io::stdout()),
            LogTarget::File(path) => builder.finish(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        Ok(Self {
            writer,
            _guard: guard,
            allow_rate: cfg.allow_sample_rate,
            allowed_seen: AtomicU64::new(0),
        })
    }

    /// Whether this decision is logged: denies always, allowed ones at the sample rate.
    pub fn wants(&self, allow: bool) -> bool {
        if !allow || self.allow_rate >= 1.0 {
            return true;
        }
        let n = self.allowed_seen.fetch_add(1, Ordering::Relaxed) as f64;
        (n * self.allow_rate).floor() != ((n + 1.0) * self.allow_rate).floor()
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
