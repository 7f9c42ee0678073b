//! TLS settings of listeners and upstreams: shapes and their validation.
//!
//! Only the shape is checked here (paths resolved, contradictions refused); the files are
//! read and their contents checked by [`crate::tls`] when the gateway starts or reloads.

use super::raw::{ClientAuth, RawListener, RawUpstreamTls};
use super::socket;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One public listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    /// HTTPS when set, plain HTTP/1.1 otherwise.
    pub tls: Option<ListenerTlsConfig>,
}

/// A listener's certificates and client-certificate policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTlsConfig {
    /// Chosen by SNI; the first serves clients that send no SNI or an unknown name.
    pub certificates: Vec<CertificateFiles>,
    /// Client certificates are verified against this bundle when set.
    pub client_ca: Option<PathBuf>,
    /// `None` when no client certificate is asked for.
    pub client_auth: Option<ClientAuth>,
    /// How often the files are checked for a new certificate.
    pub reload_interval: Duration,
}

/// A PEM certificate chain (leaf first) and the PEM private key that goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How the gateway connects to a route's `https://` upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsConfig {
    /// The name sent as SNI and verified, per upstream address: the route's `sni`, or
    /// else the host of the upstream's URL.
    pub server_names: Vec<(SocketAddr, String)>,
    /// Trusted instead of the system roots when set.
    pub ca_file: Option<PathBuf>,
    /// Presented to the upstream when it asks for a client certificate.
    pub client_certificate: Option<CertificateFiles>,
    /// No verification of the upstream certificate at all.
    pub insecure_skip_verify: bool,
}

/// Validates one `[[listeners]]` entry.
pub(super) fn listener(
    raw: &RawListener,
    i: usize,
    base: &Path,
    problems: &mut Vec<String>,
) -> Option<ListenerConfig> {
    let key = format!("listeners[{i}]");
    let address = socket(&raw.address, &format!("{key}.address"), problems);
    let tls = raw.tls.as_ref().map(|t| {
        if t.certificates.is_empty() {
            problems.push(format!(
                "{key}.tls.certificates is empty: add {{ cert = \"tls.crt\", key = \"tls.key\" }}"
            ));
        }
        if t.client_auth.is_some() && t.client_ca.is_none() {
            problems.push(format!(
                "{key}.tls.client_auth needs client_ca, the PEM bundle client certificates are verified against"
            ));
        }
        if t.reload_interval.is_zero() {
            problems.push(format!(
                "{key}.tls.reload_interval must be greater than zero"
            ));
        }
        ListenerTlsConfig {
            certificates: t
                .certificates
                .iter()
                .map(|c| CertificateFiles {
                    cert: base.join(&c.cert),
                    key: base.join(&c.key),
                })
                .collect(),
            client_ca: t.client_ca.as_ref().map(|p| base.join(p)),
            // A CA bundle without a mode means the certificate is required: fail closed.
            client_auth: t
                .client_ca
                .as_ref()
                .map(|_| t.client_auth.unwrap_or(ClientAuth::Required)),
            reload_interval: t.reload_interval,
        }
    });
    Some(ListenerConfig {
        address: address?,
        tls,
    })
}

/// An upstream URL split into scheme, address and host name.
struct Upstream {
    https: bool,
    address: SocketAddr,
    host: String,
}

/// Parses `host:port`, `http://host:port` or `https://host[:port]` (port 443 by default).
fn upstream(value: &str, key: &str, problems: &mut Vec<String>) -> Option<Upstream> {
    let (https, rest) = if let Some(rest) = value.strip_prefix("https://") {
        (true, rest)
    } else {
        (false, value.strip_prefix("http://").unwrap_or(value))
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        problems.push(format!(
            "{key}: {value:?} must be host:port, http://host:port or https://host[:port], without a path"
        ));
        return None;
    }
    // An IPv6 host is bracketed, so a port follows "]:"; any other host takes ":port".
    let has_port = if rest.starts_with('[') {
        rest.contains("]:")
    } else {
        rest.contains(':')
    };
    let with_port = if https && !has_port {
        format!("{rest}:443")
    } else {
        rest.to_string()
    };
    let address = socket(&with_port, key, problems)?;
    let host = with_port
        .rsplit_once(':')
        .map_or(with_port.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    Some(Upstream {
        https,
        address,
        host,
    })
}

/// Validates a route's upstream URLs and TLS table: the addresses, and the TLS settings
/// when the upstreams are `https://`.
pub(super) fn upstreams(
    values: &[String],
    tls: Option<&RawUpstreamTls>,
    key: &str,
    base: &Path,
    problems: &mut Vec<String>,
) -> (Vec<SocketAddr>, Option<UpstreamTlsConfig>) {
    let parsed: Vec<Upstream> = values
        .iter()
        .filter_map(|u| upstream(u, &format!("{key}.upstreams"), problems))
        .collect();
    let addresses = parsed.iter().map(|u| u.address).collect();
    let https = parsed.iter().filter(|u| u.https).count();
    if https == 0 {
        if tls.is_some() {
            problems.push(format!(
                "{key}.tls applies to https:// upstreams only; write the upstreams as https://host:port"
            ));
        }
        return (addresses, None);
    }
    if https != parsed.len() {
        problems.push(format!(
            "{key}.upstreams mixes https:// and plain http upstreams; use one scheme per route"
        ));
    }
    let default = RawUpstreamTls {
        sni: None,
        ca_file: None,
        client_cert: None,
        client_key: None,
        insecure_skip_verify: false,
    };
    let tls = tls.unwrap_or(&default);
    if tls.sni.as_deref().is_some_and(|s| s.trim().is_empty()) {
        problems.push(format!("{key}.tls.sni is empty"));
    }
    if tls.insecure_skip_verify && tls.ca_file.is_some() {
        problems.push(format!(
            "{key}.tls: insecure_skip_verify = true ignores ca_file; remove one of them"
        ));
    }
    let client_certificate = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(k)) => Some(CertificateFiles {
            cert: base.join(cert),
            key: base.join(k),
        }),
        (None, None) => None,
        _ => {
            problems.push(format!("{key}.tls: client_cert and client_key go together"));
            None
        }
    };
    let server_names = parsed
        .iter()
        .map(|u| {
            let name = tls.sni.clone().unwrap_or_else(|| u.host.clone());
            (u.address, name.to_ascii_lowercase())
        })
        .collect();
    (
        addresses,
        Some(UpstreamTlsConfig {
            server_names,
            ca_file: tls.ca_file.as_ref().map(|p| base.join(p)),
            client_certificate,
            insecure_skip_verify: tls.insecure_skip_verify,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> (Option<(bool, SocketAddr, String)>, Vec<String>) {
        let mut problems = Vec::new();
        let u = upstream(value, "u", &mut problems).map(|u| (u.https, u.address, u.host));
        (u, problems)
    }

    #[test]
    fn upstream_urls_give_scheme_address_and_host() {
        let (u, p) = parse("https://127.0.0.1:8443");
        assert_eq!(
            u,
            Some((true, "127.0.0.1:8443".parse().unwrap(), "127.0.0.1".into()))
        );
        assert!(p.is_empty());
        let (u, _) = parse("https://127.0.0.1");
        assert_eq!(u.unwrap().1, "127.0.0.1:443".parse().unwrap());
        let (u, _) = parse("https://[::1]:9443");
        assert_eq!(u, Some((true, "[::1]:9443".parse().unwrap(), "::1".into())));
        let (u, _) = parse("http://127.0.0.1:80");
        assert!(!u.unwrap().0);
        let (u, _) = parse("127.0.0.1:9001");
        assert!(!u.unwrap().0);
    }

    #[test]
    fn upstream_urls_with_paths_or_credentials_are_refused() {
        for bad in [
            "https://127.0.0.1:8443/api",
            "https://user@127.0.0.1:1",
            "https://",
        ] {
            let (u, p) = parse(bad);
            assert!(u.is_none(), "{bad}");
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
        }
    }
}
