//! TLS settings of listeners and upstreams: shapes and their validation.
//!
//! Only the shape is checked here (paths resolved, contradictions refused); the files are
//! read and their contents checked by the TLS module when the gateway starts or reloads.

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
    /// Every connection opens with a PROXY protocol (v1 or v2) header naming the client.
    pub proxy_protocol: bool,
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
        proxy_protocol: raw.proxy_protocol,
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

#[cfg(test)]
mod config_tests {
    use crate::config::{ClientAuth, Config, ConfigError};
    use std::path::{Path, PathBuf};

    const BASE: &str = r#"
[identity]
[[identity.tenants]]
id = "aaaaaaaa-1111-1111-1111-000000000001"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            &format!("{BASE}{text}"),
            Path::new("/etc/agentgate/agentgate.toml"),
        )
    }

    fn problems(text: &str) -> String {
        match parse(text) {
            Err(ConfigError::Invalid { problems, .. }) => problems.join("\n"),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    const ROUTE: &str = r#"
[[routes]]
id = "orders"
path_prefix = "/orders"
upstreams = ["https://127.0.0.1:8443", "https://localhost:9443"]
audiences = ["api://x"]
"#;

    #[test]
    fn the_documented_tables_parse_with_paths_resolved() {
        let c = parse(&format!(
            r#"
[[listeners]]
address = "127.0.0.1:8443"

[listeners.tls]
client_ca = "tls/agents-ca.pem"

[[listeners.tls.certificates]]
cert = "tls/tls.crt"
key = "tls/tls.key"

[[listeners]]
address = "127.0.0.1:8080"
{ROUTE}
[routes.tls]
ca_file = "tls/internal-ca.pem"
client_cert = "tls/gateway.crt"
client_key = "/abs/gateway.key"
"#
        ))
        .unwrap();
        let tls = c.listeners[0].tls.as_ref().unwrap();
        assert_eq!(
            tls.certificates[0].cert,
            PathBuf::from("/etc/agentgate/tls/tls.crt")
        );
        assert_eq!(
            tls.client_ca,
            Some(PathBuf::from("/etc/agentgate/tls/agents-ca.pem"))
        );
        assert_eq!(
            tls.client_auth,
            Some(ClientAuth::Required),
            "a CA bundle alone requires"
        );
        assert_eq!(tls.reload_interval, std::time::Duration::from_secs(5));
        assert!(c.listeners[1].tls.is_none());
        let up = c.routes[0].tls.as_ref().unwrap();
        assert_eq!(
            up.ca_file,
            Some(PathBuf::from("/etc/agentgate/tls/internal-ca.pem"))
        );
        assert_eq!(
            up.server_names[0],
            ("127.0.0.1:8443".parse().unwrap(), "127.0.0.1".into())
        );
        assert_eq!(up.server_names[1].1, "localhost");
        let client = up.client_certificate.as_ref().unwrap();
        assert_eq!(client.key, PathBuf::from("/abs/gateway.key"));
        assert!(!up.insecure_skip_verify);
    }

    #[test]
    fn an_explicit_sni_names_every_upstream_and_plain_routes_have_no_tls() {
        let c = parse(&format!(
            "[[listeners]]\naddress = \"127.0.0.1:8080\"\n{ROUTE}\ntls = {{ sni = \"Orders.Internal\" }}\n\
             [[routes]]\nid = \"crm\"\npath_prefix = \"/crm\"\nupstreams = [\"http://127.0.0.1:80\"]\naudiences = [\"api://x\"]\n"
        ))
        .unwrap();
        let names = &c.routes[0].tls.as_ref().unwrap().server_names;
        assert!(names.iter().all(|(_, n)| n == "orders.internal"));
        assert!(c.routes[1].tls.is_none());
    }

    #[test]
    fn contradictions_are_reported_together() {
        let p = problems(
            r#"
[[listeners]]
address = "127.0.0.1:8443"
tls = { certificates = [], client_auth = "optional", reload_interval = "0s" }

[[routes]]
id = "mixed"
path_prefix = "/m"
upstreams = ["https://127.0.0.1:1", "127.0.0.1:2"]
audiences = ["api://x"]
tls = { insecure_skip_verify = true, ca_file = "ca.pem", client_cert = "c.pem", sni = "" }

[[routes]]
id = "plain"
path_prefix = "/p"
upstreams = ["127.0.0.1:2"]
audiences = ["api://x"]
tls = { ca_file = "ca.pem" }
"#,
        );
        for expected in [
            "listeners[0].tls.certificates is empty",
            "listeners[0].tls.client_auth needs client_ca",
            "listeners[0].tls.reload_interval must be greater than zero",
            "mixes https:// and plain http upstreams",
            "insecure_skip_verify = true ignores ca_file",
            "client_cert and client_key go together",
            "tls.sni is empty",
            "routes[1] (plain).tls applies to https:// upstreams only",
        ] {
            assert!(p.contains(expected), "missing {expected:?} in:\n{p}");
        }
    }
}
