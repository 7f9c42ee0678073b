//! Certificate selection by SNI, swappable while connections are open.
//!
//! Names come from each certificate's subjectAltName DNS entries (the subject CN is not
//! used, as in browsers). An exact name wins over a wildcard; `*.example.com` matches one
//! label (`a.example.com`, not `example.com` nor `a.b.example.com`). When two certificates
//! claim a name, the one listed first wins. A client that sends no SNI (for example one
//! that connects by IP address) or a name no certificate covers gets the first certificate
//! listed: the listener always answers, and the client's own name check decides.

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// One certificate with the names it serves.
#[derive(Debug, Clone)]
pub struct NamedCertificate {
    pub key: Arc<CertifiedKey>,
    /// Lower-case DNS names, `*.` wildcards included.
    pub dns_names: Vec<String>,
}

/// The selection table built from a listener's certificates.
#[derive(Debug)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl CertTable {
    /// Builds the table; the first certificate is the default. `None` without certificates.
    pub fn new(certificates: &[NamedCertificate]) -> Option<Self> {
        let default = certificates.first()?.key.clone();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for c in certificates {
            for name in &c.dns_names {
                let (map, key) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut wildcard, parent),
                    None => (&mut exact, name.as_str()),
                };
                // A `*` anywhere else is not a wildcard browsers honour: never matched.
                if key.contains('*') || key.is_empty() {
                    continue;
                }
                map.entry(key.to_string()).or_insert_with(|| c.key.clone());
            }
        }
        Some(Self {
            exact,
            wildcard,
            default,
        })
    }

    /// The certificate for `server_name` (any case), or the default.
    pub fn select(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            return &self.default;
        };
        if let Some(k) = self.exact.get(&name) {
            return k;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
    }
}

/// A rustls certificate resolver over a [`CertTable`] that can be replaced at any time:
/// handshakes already under way keep the key they picked, new ones see the new table.
#[derive(Debug)]
pub struct SniResolver {
    table: ArcSwap<CertTable>,
}

impl SniResolver {
    pub fn new(table: CertTable) -> Self {
        Self {
            table: ArcSwap::from_pointee(table),
        }
    }

    /// Serves `table` to every handshake from now on.
    pub fn replace(&self, table: CertTable) {
        self.table.store(Arc::new(table));
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.table.load().select(hello.server_name()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;

    /// A distinguishable key: the certificate bytes are a marker (never sent anywhere).
    fn named(marker: u8, names: &[&str]) -> NamedCertificate {
        let key = crate::tls::provider()
            .key_provider
            .load_private_key(
                rustls::pki_types::PrivateKeyDer::try_from(
                    rcgen::KeyPair::generate().unwrap().serialize_der(),
                )
                .unwrap(),
            )
            .unwrap();
        NamedCertificate {
            key: Arc::new(CertifiedKey::new(
                vec![CertificateDer::from(vec![marker])],
                key,
            )),
            dns_names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn marker(k: &Arc<CertifiedKey>) -> u8 {
        k.cert[0].as_ref()[0]
    }

    #[test]
    fn exact_names_beat_wildcards_and_unknown_names_get_the_default() {
        let table = CertTable::new(&[
            named(1, &["default.test"]),
            named(2, &["*.example.test"]),
            named(3, &["api.example.test", "*.f*.test", "*."]),
        ])
        .unwrap();
        let pick = |n: Option<&str>| marker(table.select(n));
        assert_eq!(pick(Some("api.example.test")), 3);
        assert_eq!(pick(Some("API.Example.Test.")), 3);
        assert_eq!(pick(Some("www.example.test")), 2);
        assert_eq!(pick(Some("example.test")), 1, "a wildcard covers one label");
        assert_eq!(
            pick(Some("a.b.example.test")),
            1,
            "a wildcard covers one label"
        );
        assert_eq!(pick(Some("x.foo.test")), 1, "partial wildcards are ignored");
        assert_eq!(pick(Some("default.test")), 1);
        assert_eq!(pick(Some("unknown.test")), 1);
        assert_eq!(pick(None), 1);
    }

    #[test]
    fn the_first_certificate_listed_wins_a_shared_name() {
        let table = CertTable::new(&[
            named(1, &["shared.test"]),
            named(2, &["shared.test", "*.test"]),
            named(3, &["*.test"]),
        ])
        .unwrap();
        assert_eq!(marker(table.select(Some("shared.test"))), 1);
        assert_eq!(marker(table.select(Some("other.test"))), 2);
        assert!(CertTable::new(&[]).is_none());
    }
}
