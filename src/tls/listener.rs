//! HTTPS listeners: certificates by SNI, live certificate reload, client certificates.
//!
//! Each listener's certificate/key files are re-read every `reload_interval`. Polling the
//! contents, rather than watching for file events, sees every way a pair is replaced: an
//! in-place rewrite (cert-manager), a rename over the old file, and the atomic `..data`
//! symlink swap of a Kubernetes secret volume, where the watched paths never change. A
//! changed pair is read again after a short pause (a writer that replaces the two files
//! one after the other is given time to finish), checked, and swapped into the resolver:
//! handshakes from then on get the new certificate, connections already open keep theirs.
//! A pair that fails the check is refused, logged and counted, and the previous
//! certificate keeps serving; the same refused contents are not counted again.

// Off the request path: certificate reload bookkeeping; handshakes read the resolver's ArcSwap.
#![allow(clippy::disallowed_types)]

use super::client_cert::CaptureClientCertificate;
use super::material::{self, LoadedCertificate, PairBytes, PairError};
use super::resolver::{CertTable, NamedCertificate, SniResolver};
use super::TlsError;
use crate::config::{CertificateFiles, ClientAuth, ListenerConfig, ListenerTlsConfig};
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ALPN;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The protocols listeners offer by ALPN: `h2`, then `http/1.1`.
pub const LISTENER_ALPN: ALPN = ALPN::H2H1;

/// How long a changed pair is left alone before it is read again and checked.
const SETTLE: Duration = Duration::from_millis(100);

/// Certificate reload counters and expiry gauges, for the metrics registry.
#[derive(Clone)]
pub struct TlsMetrics {
    /// `agentgate_tls_certificate_reloads_total{listener, result}`.
    pub reloads: IntCounterVec,
    /// `agentgate_tls_certificate_not_after_seconds{listener, cert}`.
    pub not_after: IntGaugeVec,
}

impl TlsMetrics {
    pub fn new() -> prometheus::Result<Self> {
        Ok(Self {
            reloads: IntCounterVec::new(
                Opts::new(
                    "agentgate_tls_certificate_reloads_total",
                    "Listener certificate changes by result: loaded, or why refused (unreadable, invalid, key_mismatch, expired, not_yet_valid).",
                ),
                &["listener", "result"],
            )?,
            not_after: IntGaugeVec::new(
                Opts::new(
                    "agentgate_tls_certificate_not_after_seconds",
                    "Expiry (Unix time) of each certificate a listener serves.",
                ),
                &["listener", "cert"],
            )?,
        })
    }

    /// The collectors to register.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.reloads.clone()),
            Box::new(self.not_after.clone()),
        ]
    }
}

/// One configured certificate and what is known of its files.
struct Slot {
    files: CertificateFiles,
    state: Mutex<SlotState>,
}

struct SlotState {
    /// The contents serving now.
    serving: PairBytes,
    certificate: NamedCertificate,
    /// The last refusal, so a broken pair is reported once, not on every poll.
    refused: Option<Refused>,
}

#[derive(Debug, PartialEq, Eq)]
enum Refused {
    Unreadable,
    Contents(PairBytes),
}

/// A listener's TLS: the resolver handshakes use and the files behind it.
pub struct ListenerTls {
    address: SocketAddr,
    label: String,
    slots: Vec<Slot>,
    resolver: Arc<SniResolver>,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    reload_interval: Duration,
    metrics: TlsMetrics,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl ListenerTls {
    /// Loads and checks every certificate and the client CA bundle. Any problem is fatal:
    /// a listener never starts with fewer certificates than configured.
    pub fn load(
        address: SocketAddr,
        config: &ListenerTlsConfig,
        metrics: &TlsMetrics,
    ) -> Result<Self, TlsError> {
        let provider = super::provider();
        let now = crate::clock::now();
        let label = address.to_string();
        let mut slots = Vec::with_capacity(config.certificates.len());
        for files in &config.certificates {
            let (loaded, bytes) = material::load_pair(files, &provider, now).map_err(|source| {
                TlsError::Certificate {
                    listener: address,
                    source,
                }
            })?;
            warn_unnamed(address, files, &loaded);
            metrics
                .not_after
                .with_label_values(&[&label, &files.cert.display().to_string()])
                .set(loaded.not_after);
            slots.push(Slot {
                files: files.clone(),
                state: Mutex::new(SlotState {
                    serving: bytes,
                    certificate: named(loaded),
                    refused: None,
                }),
            });
        }
        let table = CertTable::new(&slots.iter().map(|s| s.certificate()).collect::<Vec<_>>())
            .ok_or(TlsError::NoCertificates(address))?;
        let client_verifier = match (&config.client_ca, config.client_auth) {
            (Some(ca), Some(mode)) => Some(client_verifier(address, ca, mode)?),
            _ => None,
        };
        Ok(Self {
            address,
            label,
            slots,
            resolver: Arc::new(SniResolver::new(table)),
            client_verifier,
            reload_interval: config.reload_interval,
            metrics: metrics.clone(),
        })
    }

    /// The listener's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// pingora settings for this listener: TLS 1.2 and 1.3 (pingora's rustls acceptor
    /// allows no others), certificates from the live resolver, client certificates
    /// verified when configured and captured for [`super::client_certificate`], and
    /// [`LISTENER_ALPN`].
    pub fn settings(&self) -> Result<TlsSettings, TlsError> {
        super::install_default_provider();
        let mut settings = TlsSettings::with_callbacks(Box::new(CaptureClientCertificate))
            .map_err(|e| TlsError::Settings(e.to_string()))?;
        settings.set_cert_resolver(self.resolver.clone());
        if let Some(v) = &self.client_verifier {
            settings.set_client_cert_verifier(v.clone());
        }
        settings.set_alpn(LISTENER_ALPN);
        Ok(settings)
    }

    /// Re-reads every certificate's files and swaps in those that changed and pass the
    /// checks. Returns how many were swapped in.
    pub async fn reload_changed(&self) -> usize {
        let mut changed = 0;
        for slot in &self.slots {
            if self.reload_slot(slot).await {
                changed += 1;
            }
        }
        if changed > 0 {
            let certificates: Vec<NamedCertificate> =
                self.slots.iter().map(Slot::certificate).collect();
            if let Some(table) = CertTable::new(&certificates) {
                self.resolver.replace(table);
            }
        }
        changed
    }

    async fn reload_slot(&self, slot: &Slot) -> bool {
        if let Seen::Known = slot.look() {
            return false;
        }
        // A writer may still be replacing the second file (or renaming one into place):
        // look again in a moment, and judge what is there then.
        tokio::time::sleep(SETTLE).await;
        let bytes = match slot.look() {
            Seen::Known => return false,
            Seen::Unreadable(e) => {
                self.refuse(slot, &e, Refused::Unreadable);
                return false;
            }
            Seen::New(bytes) => bytes,
        };
        let cert = slot.files.cert.display().to_string();
        match material::check_pair(&slot.files, &bytes, &super::provider(), crate::clock::now()) {
            Ok(loaded) => {
                warn_unnamed(self.address, &slot.files, &loaded);
                tracing::info!(listener = %self.address, cert = %cert, not_after = loaded.not_after, "listener certificate reloaded");
                self.metrics
                    .not_after
                    .with_label_values(&[&self.label, &cert])
                    .set(loaded.not_after);
                self.metrics
                    .reloads
                    .with_label_values(&[&self.label, "loaded"])
                    .inc();
                slot.serve(bytes, named(loaded));
                true
            }
            Err(e) => {
                self.refuse(slot, &e, Refused::Contents(bytes));
                false
            }
        }
    }

    /// Reports a refused pair once and remembers it.
    fn refuse(&self, slot: &Slot, e: &PairError, refused: Refused) {
        tracing::error!(listener = %self.address, error = %e, "new listener certificate refused; the previous one keeps serving");
        self.metrics
            .reloads
            .with_label_values(&[&self.label, e.reason()])
            .inc();
        slot.lock().refused = Some(refused);
    }
}

/// What the files of a slot hold now, compared with what is known of them.
enum Seen {
    /// Serving, or already refused.
    Known,
    /// Cannot be read (first time since they last could be).
    Unreadable(PairError),
    /// Contents not seen before.
    New(PairBytes),
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn certificate(&self) -> NamedCertificate {
        self.lock().certificate.clone()
    }

    fn look(&self) -> Seen {
        let read = material::read_pair(&self.files);
        let s = self.lock();
        match read {
            Err(_) if s.refused == Some(Refused::Unreadable) => Seen::Known,
            Err(e) => Seen::Unreadable(e),
            Ok(bytes)
                if s.serving == bytes
                    || matches!(&s.refused, Some(Refused::Contents(r)) if *r == bytes) =>
            {
                Seen::Known
            }
            Ok(bytes) => Seen::New(bytes),
        }
    }

    fn serve(&self, bytes: PairBytes, certificate: NamedCertificate) {
        let mut s = self.lock();
        s.serving = bytes;
        s.certificate = certificate;
        s.refused = None;
    }
}

fn named(loaded: LoadedCertificate) -> NamedCertificate {
    NamedCertificate {
        key: loaded.key,
        dns_names: loaded.dns_names,
    }
}

fn warn_unnamed(address: SocketAddr, files: &CertificateFiles, loaded: &LoadedCertificate) {
    if loaded.dns_names.is_empty() {
        tracing::warn!(listener = %address, cert = %files.cert.display(), "certificate has no DNS subjectAltName: SNI never selects it (it serves only as the default)");
    }
}

fn client_verifier(
    address: SocketAddr,
    ca: &std::path::Path,
    mode: ClientAuth,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in material::ca_bundle(ca).map_err(|source| TlsError::Certificate {
        listener: address,
        source,
    })? {
        roots.add(cert).map_err(|e| TlsError::ClientCa {
            listener: address,
            detail: e.to_string(),
        })?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), super::provider());
    let builder = match mode {
        ClientAuth::Optional => builder.allow_unauthenticated(),
        ClientAuth::Required => builder,
    };
    builder.build().map_err(|e| TlsError::ClientCa {
        listener: address,
        detail: e.to_string(),
    })
}

/// Loads the TLS of every listener that has it, with the metrics they report to (the caller
/// registers their collectors).
pub fn load_all(
    listeners: &[ListenerConfig],
) -> Result<(Vec<Arc<ListenerTls>>, TlsMetrics), TlsError> {
    let tls_metrics = TlsMetrics::new().map_err(|e| TlsError::Settings(e.to_string()))?;
    let loaded = listeners
        .iter()
        .filter_map(|l| Some((l.address, l.tls.as_ref()?)))
        .map(|(address, tls)| ListenerTls::load(address, tls, &tls_metrics).map(Arc::new))
        .collect::<Result<_, _>>()?;
    Ok((loaded, tls_metrics))
}

/// Polls every TLS listener's certificate files (a pingora background service).
pub struct CertificateReloader {
    listeners: Vec<Arc<ListenerTls>>,
}

impl CertificateReloader {
    pub fn new(listeners: Vec<Arc<ListenerTls>>) -> Self {
        Self { listeners }
    }
}

#[async_trait]
impl BackgroundService for CertificateReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(interval) = self.listeners.iter().map(|l| l.reload_interval).min() else {
            return;
        };
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticks.tick() => {
                    for l in &self.listeners {
                        l.reload_changed().await;
                    }
                }
            }
        }
    }
}
