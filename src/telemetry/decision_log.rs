//! One JSON line per decision, written off the request path.
//!
//! Records are serialised on the worker and handed to a writer thread through a queue
//! bounded by bytes (`log.max_queue_bytes`). A request never waits for the log: when the
//! queue is full (a slow disk, a blocked pipe) the record is dropped and counted in
//! `agentgate_decision_log_dropped_total`, which an alert watches. The record type has no
//! field that could hold a token, a signature or an `Authorization` value; the path is
//! logged without its query string and cut at [`MAX_LOGGED_PATH`] bytes.

use crate::config::{LogConfig, LogTarget};
use serde::Serialize;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

/// The longest path written into a record; longer ones are cut on a character boundary and
/// marked with `path_truncated`.
pub const MAX_LOGGED_PATH: usize = 1024;

/// One decision as logged.
#[derive(Debug, Serialize)]
pub struct DecisionRecord<'a> {
    pub time: String,
    pub decision_id: &'a str,
    pub route: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub path_truncated: bool,
    /// The client: the peer, or the address trusted proxies reported.
    pub client_ip: Option<std::net::IpAddr>,
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
    /// On gRPC routes: the `grpc-status` the client got (the gateway's own, or the
    /// upstream's when it sent a valid one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u8>,
    pub reason: &'a str,
    pub revision: &'a str,
    /// The manifest revision of the policy bundle in force, when the set came from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle_revision: Option<&'a str>,
    pub latency_us: u64,
    /// Why the stream guard ended this allowed stream (`token_expired`, `request_timeout`,
    /// or the refusing reload's reason), when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_closed: Option<&'a str>,
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

/// `path` cut to at most [`MAX_LOGGED_PATH`] bytes, and whether it was cut.
pub fn loggable_path(path: &str) -> (&str, bool) {
    if path.len() <= MAX_LOGGED_PATH {
        return (path, false);
    }
    let mut end = MAX_LOGGED_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    (&path[..end], true)
}

/// Queue accounting shared by the request path and the writer thread.
#[derive(Debug, Default)]
struct Queue {
    /// Bytes handed to the writer and not yet written.
    queued: AtomicUsize,
    dropped: AtomicU64,
    written: AtomicU64,
}

/// The decision log writer.
pub struct DecisionLog {
    sender: Sender<Vec<u8>>,
    queue: Arc<Queue>,
    max_queue_bytes: usize,
    /// Allowed decisions are logged when `seen * rate` crosses an integer.
    allow_rate: f64,
    allowed_seen: AtomicU64,
}

/// Decision log counters, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionLogStats {
    pub queued_bytes: usize,
    pub dropped: u64,
    pub written: u64,
}

impl DecisionLog {
    /// Opens the configured target (standard output or a file, appended to) and starts the
    /// writer thread.
    pub fn open(cfg: &LogConfig) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match &cfg.decisions {
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        Self::to_writer(out, cfg.max_queue_bytes, cfg.allow_sample_rate)
    }

    /// A log writing to `out`, queueing at most `max_queue_bytes`.
    pub fn to_writer(
        out: Box<dyn Write + Send>,
        max_queue_bytes: usize,
        allow_rate: f64,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let queue = Arc::new(Queue::default());
        let writer_queue = queue.clone();
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || write_lines(receiver, out, &writer_queue))?;
        Ok(Self {
            sender,
            queue,
            max_queue_bytes,
            allow_rate,
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

    /// Queues one record as a JSON line, or drops and counts it when the queue is full.
    /// Never blocks.
    pub fn write(&self, record: &DecisionRecord<'_>) {
        let Ok(mut line) = serde_json::to_vec(record) else {
            return;
        };
        line.push(b'\n');
        let len = line.len();
        let before = self.queue.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > self.max_queue_bytes {
            self.queue.queued.fetch_sub(len, Ordering::AcqRel);
            self.queue.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.sender.send(line).is_err() {
            // The writer thread is gone (its output failed for good): count, never wait.
            self.queue.queued.fetch_sub(len, Ordering::AcqRel);
            self.queue.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Bytes waiting, records dropped and records written so far.
    pub fn stats(&self) -> DecisionLogStats {
        DecisionLogStats {
            queued_bytes: self.queue.queued.load(Ordering::Acquire),
            dropped: self.queue.dropped.load(Ordering::Relaxed),
            written: self.queue.written.load(Ordering::Relaxed),
        }
    }
}

/// The writer thread: writes lines as they come, flushing whenever the queue runs empty.
fn write_lines(receiver: Receiver<Vec<u8>>, out: Box<dyn Write + Send>, queue: &Queue) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut failed = false;
    while let Ok(mut line) = receiver.recv() {
        loop {
            let len = line.len();
            if !failed {
                if let Err(e) = out.write_all(&line) {
                    failed = true;
                    tracing::error!(error = %e, "decision log write failed; records are dropped and counted from now on");
                }
            }
            queue.queued.fetch_sub(len, Ordering::AcqRel);
            if failed {
                queue.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                queue.written.fetch_add(1, Ordering::Relaxed);
            }
            match receiver.try_recv() {
                Ok(next) => line = next,
                Err(_) => break,
            }
        }
        if !failed && out.flush().is_err() {
            failed = true;
            tracing::error!(
                "decision log flush failed; records are dropped and counted from now on"
            );
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};

    /// A writer that blocks until released, as a stuck disk or a full pipe does.
    #[derive(Clone, Default)]
    struct Stuck {
        released: Arc<(Mutex<bool>, Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cv) = &*self.released;
            let mut released = lock.lock().unwrap();
            while !*released {
                released = cv.wait(released).unwrap();
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn record(id: &str) -> DecisionRecord<'_> {
        DecisionRecord {
            time: "t".into(),
            decision_id: id,
            route: None,
            method: "GET",
            path: "/x",
            path_truncated: false,
            client_ip: None,
            caller_kind: None,
            tenant: None,
            client_id: None,
            agent_id: None,
            blueprint_id: None,
            blueprint_name: None,
            sponsors: Vec::new(),
            user_oid: None,
            allow: false,
            status: 403,
            grpc_status: None,
            stream_closed: None,
            reason: "r",
            revision: "v",
            bundle_revision: None,
            latency_us: 1,
            shadow: None,
        }
    }

    #[test]
    fn a_stuck_writer_never_blocks_requests_and_drops_are_counted() {
        let stuck = Stuck::default();
        let log = DecisionLog::to_writer(Box::new(stuck.clone()), 2048, 1.0).unwrap();
        let started = std::time::Instant::now();
        for i in 0..10_000 {
            log.write(&record(&i.to_string()));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let stats = log.stats();
        assert!(stats.queued_bytes <= 2048, "{stats:?}");
        assert!(stats.dropped > 9_000, "{stats:?}");
        // Released, the writer writes what was queued, and nothing else.
        *stuck.released.0.lock().unwrap() = true;
        stuck.released.1.notify_all();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while log.stats().queued_bytes > 0 {
            assert!(std::time::Instant::now() < deadline, "{:?}", log.stats());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let stats = log.stats();
        assert_eq!(stats.written + stats.dropped, 10_000, "{stats:?}");
        let lines = stuck.written.lock().unwrap().split(|b| *b == b'\n').count() - 1;
        assert_eq!(lines as u64, stats.written);
    }

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        assert_eq!(loggable_path("/short"), ("/short", false));
        let long = format!("/{}", "é".repeat(1000));
        let (cut, truncated) = loggable_path(&long);
        assert!(truncated);
        assert!(cut.len() <= MAX_LOGGED_PATH && cut.len() >= MAX_LOGGED_PATH - 1);
        assert!(long.starts_with(cut));
    }
}
