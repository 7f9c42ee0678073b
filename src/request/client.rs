//! Who the client is: the peer of the connection, or, behind proxies the operator trusts
//! (`server.trusted_proxies`), the address those proxies report in `X-Forwarded-For`.
//!
//! `X-Forwarded-For` is read right to left, the way it was appended: each hop that is a
//! trusted proxy vouches for the address before it, and the first address that is not a
//! trusted proxy is the client. Whatever lies left of it was written by someone the gateway
//! does not trust and is never read. From an untrusted peer the header is not read at all,
//! and the upstream gets it replaced, never appended to.

use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use std::net::IpAddr;

/// The operator's trusted proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    /// True when no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `addr` is one of the trusted proxies.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.0.iter().any(|n| n.contains(&addr))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` element as an address: a bare IPv4 or IPv6 address, with an
/// optional port (`1.2.3.4:80`, `[::1]:80`) as some proxies write it.
fn forwarded_element(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Some(addr);
    }
    if let Ok(socket) = text.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    let bracketed = text.strip_prefix('[')?.strip_suffix(']')?;
    bracketed.parse::<IpAddr>().ok()
}

/// The client of a request that came from `peer` with `headers`.
///
/// An element that is not an address (or a header that is not text) ends the walk: the
/// hop that wrote it is the client as far as the gateway can tell.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    let values: Vec<&HeaderValue> = headers.get_all("x-forwarded-for").iter().collect();
    for value in values.iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for element in text.rsplit(',') {
            match forwarded_element(element) {
                Some(addr) => {
                    client = canonical(addr);
                    if !trusted.contains(client) {
                        return client;
                    }
                }
                None => return client,
            }
        }
    }
    client
}

/// The `X-Forwarded-For` the upstream gets: the trusted chain as received with the peer
/// appended, or, from an untrusted peer, the peer alone.
pub fn forwarded_for(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> String {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return peer.to_string();
    }
    let mut chain: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let peer = peer.to_string();
    chain.push(&peer);
    chain.join(", ")
}

/// The RFC 7239 `Forwarded` element naming `client` and the protocol it used.
pub fn forwarded(client: IpAddr, proto: &str) -> String {
    match client {
        IpAddr::V4(v4) => format!("for={v4};proto={proto}"),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\";proto={proto}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&["10.1.1.1"]);
        assert_eq!(client_address(ip("203.0.113.9"), &h, &t), ip("203.0.113.9"));
        assert_eq!(forwarded_for(ip("203.0.113.9"), &h, &t), "203.0.113.9");
        let none = TrustedProxies::default();
        assert_eq!(client_address(ip("10.0.0.1"), &h, &none), ip("10.0.0.1"));
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let t = trusted(&["10.0.0.0/8", "192.168.1.1/32"]);
        // The client spoofs a first element; the trusted hops appended the rest.
        let h = headers(&["6.6.6.6, 198.51.100.7", "192.168.1.1"]);
        assert_eq!(client_address(ip("10.0.0.5"), &h, &t), ip("198.51.100.7"));
        assert_eq!(
            forwarded_for(ip("10.0.0.5"), &h, &t),
            "6.6.6.6, 198.51.100.7, 192.168.1.1, 10.0.0.5"
        );
        // Every hop trusted: the leftmost.
        let h = headers(&["10.9.9.9, 10.8.8.8"]);
        assert_eq!(client_address(ip("10.0.0.5"), &h, &t), ip("10.9.9.9"));
        // No header: the trusted peer itself.
        assert_eq!(
            client_address(ip("10.0.0.5"), &HeaderMap::new(), &t),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_read_and_garbage_stops_the_walk() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&["198.51.100.7:4711"]);
        assert_eq!(client_address(ip("10.0.0.5"), &h, &t), ip("198.51.100.7"));
        let h = headers(&["[2001:db8::1]:443"]);
        assert_eq!(client_address(ip("10.0.0.5"), &h, &t), ip("2001:db8::1"));
        let h = headers(&["[2001:db8::2]"]);
        assert_eq!(client_address(ip("10.0.0.5"), &h, &t), ip("2001:db8::2"));
        assert_eq!(
            client_address(ip("::ffff:10.0.0.5"), &headers(&["1.2.3.4"]), &t),
            ip("1.2.3.4")
        );
        // `unknown` (RFC 7239 obfuscation) or junk: the trusted hop that wrote it.
        let h = headers(&["198.51.100.7, unknown, 10.2.2.2"]);
        assert_eq!(client_address(ip("10.0.0.5"), &h, &t), ip("10.2.2.2"));
    }

    #[test]
    fn forwarded_elements_quote_ipv6() {
        assert_eq!(
            forwarded(ip("192.0.2.1"), "https"),
            "for=192.0.2.1;proto=https"
        );
        assert_eq!(
            forwarded(ip("2001:db8::1"), "http"),
            "for=\"[2001:db8::1]\";proto=http"
        );
    }
}
