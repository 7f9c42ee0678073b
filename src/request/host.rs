//! The host a request is for, read one way for routing, policy and the upstream.
//!
//! An absolute-form request target (`GET http://api.example/orders`) names the host itself,
//! and the `Host` header is then ignored (RFC 9112 §3.2.2); otherwise the one `Host` header
//! does. More than one `Host` header, or one that is not a valid authority, is refused
//! (`400 invalid_host`); an HTTP/1.1 request with no host at all too (`400 missing_host`,
//! RFC 9112 §3.2). The host is lower-cased and a trailing dot (the DNS root) is dropped, so
//! `API.example.` routes like `api.example`.

use http::{HeaderMap, Uri, Version};
use std::borrow::Cow;

/// Why a request's host was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("more than one Host header, or one that is not a host[:port]")]
    Invalid,
    #[error("an HTTP/1.1 request without a host")]
    Missing,
}

/// The request's host in canonical form (`name` or `name:port`), empty for an HTTP/1.0
/// request that names none. `raw_target` is the request target as received (pingora keeps
/// an absolute-form target there and only its path in `uri`).
pub fn request_host<'a>(
    uri: &'a Uri,
    raw_target: &'a [u8],
    headers: &'a HeaderMap,
    version: Version,
) -> Result<Cow<'a, str>, HostError> {
    if let Some(authority) = uri.authority() {
        return canonical(authority.as_str());
    }
    if let Some(authority) = absolute_form_authority(raw_target)? {
        return canonical(authority);
    }
    let mut hosts = headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(h), None) => {
            let text = h.to_str().map_err(|_| HostError::Invalid)?;
            if !is_host_and_port(text) {
                return Err(HostError::Invalid);
            }
            canonical(text)
        }
        (Some(_), Some(_)) => Err(HostError::Invalid),
        (None, _) if version == Version::HTTP_10 || version == Version::HTTP_09 => {
            Ok(Cow::Borrowed(""))
        }
        (None, _) => Err(HostError::Missing),
    }
}

/// The authority of an absolute-form target (`http://host[:port]/...`), if it is one.
fn absolute_form_authority(raw: &[u8]) -> Result<Option<&str>, HostError> {
    let scheme_len = if raw.len() >= 7 && raw[..7].eq_ignore_ascii_case(b"http://") {
        7
    } else if raw.len() >= 8 && raw[..8].eq_ignore_ascii_case(b"https://") {
        8
    } else {
        return Ok(None);
    };
    let rest = &raw[scheme_len..];
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = std::str::from_utf8(&rest[..end]).map_err(|_| HostError::Invalid)?;
    if !is_host_and_port(authority) {
        return Err(HostError::Invalid);
    }
    Ok(Some(authority))
}

/// True when `s` is `host[:port]`: a registered name or IP literal (RFC 3986 §3.2.2) and an
/// optional decimal port; no user information. Checked in place, without allocating.
fn is_host_and_port(s: &str) -> bool {
    let (name, port) = split_port(s);
    let name_ok = match name.strip_prefix('[') {
        Some(literal) => literal
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(
                            b,
                            b'-' | b'.'
                                | b'_'
                                | b'~'
                                | b'%'
                                | b'!'
                                | b'$'
                                | b'&'
                                | b'\''
                                | b'('
                                | b')'
                                | b'*'
                                | b'+'
                                | b','
                                | b';'
                                | b'='
                        )
                })
        }
    };
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    name_ok && port_ok
}

/// Lower-cases `host[:port]` and drops a trailing dot from the name.
fn canonical(authority: &str) -> Result<Cow<'_, str>, HostError> {
    if authority.is_empty() || authority.contains('@') {
        return Err(HostError::Invalid);
    }
    let (name, port) = split_port(authority);
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.ends_with('.') {
        return Err(HostError::Invalid);
    }
    let lower = !trimmed.bytes().any(|b| b.is_ascii_uppercase());
    if lower && trimmed.len() == name.len() {
        return Ok(Cow::Borrowed(authority));
    }
    let mut out = trimmed.to_ascii_lowercase();
    if let Some(port) = port {
        out.push(':');
        out.push_str(port);
    }
    Ok(Cow::Owned(out))
}

/// `(name, port)`; IPv6 literals keep their brackets.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.split_once(']') {
            Some((_, rest)) => (
                &authority[..authority.len() - rest.len()],
                rest.strip_prefix(':'),
            ),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (authority, None),
    }
}

/// The host name without its port (IPv6 literals without brackets), for route matching.
pub fn host_name(host: &str) -> &str {
    let (name, _) = split_port(host);
    name.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As pingora hands it over: an absolute-form target only as raw bytes, its path as `uri`.
    fn host(target: &str, hosts: &[&str], version: Version) -> Result<String, HostError> {
        let uri: Uri = target.parse().unwrap();
        let uri: Uri = uri.path_and_query().unwrap().as_str().parse().unwrap();
        let mut headers = HeaderMap::new();
        for h in hosts {
            headers.append(http::header::HOST, h.parse().unwrap());
        }
        request_host(&uri, target.as_bytes(), &headers, version).map(Cow::into_owned)
    }

    #[test]
    fn the_absolute_form_authority_wins_over_the_host_header() {
        let v11 = Version::HTTP_11;
        assert_eq!(
            host("http://API.example/x", &[], v11),
            Ok("api.example".into())
        );
        assert_eq!(
            host("http://api.example:8443/x", &["other.example"], v11),
            Ok("api.example:8443".into())
        );
        assert_eq!(host("/x", &["api.example"], v11), Ok("api.example".into()));
        assert_eq!(
            host("HTTPS://api.example", &[], v11),
            Ok("api.example".into())
        );
        // An authority carried in the URI itself (HTTP/2's :authority) is used as is.
        let uri: Uri = "https://h2.example/x".parse().unwrap();
        let none = HeaderMap::new();
        let got = request_host(&uri, b"/x", &none, Version::HTTP_2);
        assert_eq!(got, Ok(Cow::Borrowed("h2.example")));
    }

    #[test]
    fn trailing_dots_and_case_do_not_change_the_host() {
        let v11 = Version::HTTP_11;
        assert_eq!(host("/x", &["API.Example."], v11), Ok("api.example".into()));
        assert_eq!(
            host("/x", &["api.example.:8080"], v11),
            Ok("api.example:8080".into())
        );
        assert_eq!(host("/x", &["[::1]:8080"], v11), Ok("[::1]:8080".into()));
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("api.example:8080"), "api.example");
        assert_eq!(host_name("api.example"), "api.example");
    }

    #[test]
    fn missing_repeated_or_malformed_hosts_are_refused() {
        let v11 = Version::HTTP_11;
        assert_eq!(host("/x", &[], v11), Err(HostError::Missing));
        assert_eq!(host("/x", &[], Version::HTTP_10), Ok(String::new()));
        assert_eq!(
            host("/x", &["a.example", "b.example"], v11),
            Err(HostError::Invalid)
        );
        assert_eq!(
            host("/x", &["user@a.example"], v11),
            Err(HostError::Invalid)
        );
        assert_eq!(host("/x", &["a b"], v11), Err(HostError::Invalid));
        assert_eq!(host("/x", &["a.example:80x"], v11), Err(HostError::Invalid));
        assert_eq!(host("/x", &["[::1"], v11), Err(HostError::Invalid));
        assert_eq!(host("/x", &["a/b"], v11), Err(HostError::Invalid));
        assert_eq!(host("/x", &["a.example.."], v11), Err(HostError::Invalid));
        assert_eq!(host("/x", &["."], v11), Err(HostError::Invalid));
    }
}
