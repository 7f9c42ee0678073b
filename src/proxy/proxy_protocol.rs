//! The PROXY protocol (HAProxy, versions 1 and 2): the client address a load balancer that
//! does not speak HTTP (AWS NLB, Azure Load Balancer with Private Link, HAProxy in TCP mode)
//! puts before the connection's first byte.
//!
//! On a listener with `proxy_protocol = true` every connection must open with a header; it
//! is read byte-exact (nothing of the request after it is consumed) within the header
//! deadline, and the address it names becomes the connection's peer address, which is
//! what the client address, the per-client cap and the decision log read. A `LOCAL`
//! command (the balancer's own health check) or an `UNKNOWN` family keeps the TCP peer.
//! Plain listeners read it before admission ([`super::admission`]), TLS listeners before
//! the handshake ([`PreTlsProxyHeader`]). The `ppp` crate parses the header.

use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest version 1 header, `\r\n` included.
const V1_MAX: usize = 107;
/// The version 2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Addresses and extensions a version 2 header may carry (TLVs included); more is refused.
const V2_MAX_BODY: usize = 1024;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyHeaderError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("the PROXY protocol header did not arrive in time")]
    Timeout,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    #[error("the PROXY protocol header names a unix socket")]
    NotInet,
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer may not send PROXY protocol headers (not in server.trusted_proxies)")]
    UntrustedPeer,
}

/// Reads one header from the start of `stream`: the client it names, or `None` when the
/// balancer speaks for itself (`LOCAL`, `UNKNOWN`).
pub async fn read_header<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut head = [0u8; 16];
    stream.read_exact(&mut head[..6]).await?;
    if &head[..6] == b"PROXY " {
        let mut line = head[..6].to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() >= V1_MAX {
                return Err(ProxyHeaderError::Malformed(
                    "version 1 line too long".into(),
                ));
            }
            line.push(stream.read_u8().await?);
        }
        return v1_client(&line);
    }
    if head[..6] != V2_SIGNATURE[..6] {
        return Err(ProxyHeaderError::Missing);
    }
    stream.read_exact(&mut head[6..]).await?;
    let body = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if body > V2_MAX_BODY {
        return Err(ProxyHeaderError::Malformed(format!(
            "version 2 header of {body} bytes"
        )));
    }
    let mut header = head.to_vec();
    header.resize(16 + body, 0);
    stream.read_exact(&mut header[16..]).await?;
    v2_client(&header)
}

fn v1_client(line: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    use ppp::v1::{Addresses, Header};
    let header = Header::try_from(line).map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
    Ok(match header.addresses {
        Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Unknown => None,
    })
}

fn v2_client(bytes: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    use ppp::v2::{Addresses, Command, Header};
    let header = Header::try_from(bytes).map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
    if header.command == Command::Local {
        return Ok(None);
    }
    match header.addresses {
        Addresses::IPv4(a) => Ok(Some(SocketAddr::from((a.source_address, a.source_port)))),
        Addresses::IPv6(a) => Ok(Some(SocketAddr::from((a.source_address, a.source_port)))),
        Addresses::Unspecified => Ok(None),
        Addresses::Unix(_) => Err(ProxyHeaderError::NotInet),
    }
}

/// Which listeners expect PROXY headers, and from whom.
#[derive(Debug, Clone)]
pub struct ProxyProtocol {
    /// Listener addresses with `proxy_protocol = true`.
    listeners: Vec<SocketAddr>,
    /// Peers allowed to send headers (empty: any peer).
    trusted: crate::request::client::TrustedProxies,
    deadline: Duration,
}

impl ProxyProtocol {
    pub fn new(
        listeners: Vec<SocketAddr>,
        trusted: crate::request::client::TrustedProxies,
        deadline: Duration,
    ) -> Self {
        Self {
            listeners,
            trusted,
            deadline,
        }
    }

    /// True when a connection accepted at `local` must open with a header.
    pub fn expects(&self, local: Option<SocketAddr>) -> bool {
        let Some(local) = local else {
            return false;
        };
        self.listeners
            .iter()
            .any(|l| l.port() == local.port() && (l.ip() == local.ip() || l.ip().is_unspecified()))
    }

    /// Reads the header at the start of `stream` (whose socket is `fd`) and makes the
    /// client it names the connection's peer address: a fresh socket digest replaces the
    /// one pingora made, so everything that reads the peer later reads the client. Any
    /// failure closes the connection.
    pub async fn accept<S: AsyncRead + GetSocketDigest + Unpin + ?Sized>(
        &self,
        stream: &mut S,
        fd: RawFd,
    ) -> Result<Option<SocketAddr>, ProxyHeaderError> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        if !self.trusted.is_empty() && !peer.is_some_and(|p| self.trusted.contains(p)) {
            return Err(ProxyHeaderError::UntrustedPeer);
        }
        let client = tokio::time::timeout(self.deadline, read_header(stream))
            .await
            .map_err(|_| ProxyHeaderError::Timeout)??;
        if let Some(client) = client {
            let digest = SocketDigest::from_raw_fd(fd);
            // A fresh cell: this cannot already hold a value.
            let _ = digest.peer_addr.set(Some(PeerAddr::Inet(client)));
            stream.set_socket_digest(digest);
        }
        Ok(client)
    }
}

/// Reads the PROXY header of connections to TLS listeners, before the handshake.
pub struct PreTlsProxyHeader(pub ProxyProtocol);

#[async_trait]
impl PreTlsProcess for PreTlsProxyHeader {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let local = stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied());
        if !self.0.expects(local) {
            return Ok(());
        }
        let fd = stream.as_raw_fd();
        match self.0.accept(stream, fd).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "connection refused: PROXY protocol");
                Err(pingora::Error::because(
                    pingora::ErrorType::AcceptError,
                    "PROXY protocol header",
                    e,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a header from `bytes`; the result and what is left unread.
    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyHeaderError>, Vec<u8>) {
        let mut rest = bytes;
        let result = read_header(&mut rest).await;
        (result, rest.to_vec())
    }

    fn v2(command: ppp::v2::Command, addresses: ppp::v2::Addresses) -> Vec<u8> {
        ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | command,
            ppp::v2::Protocol::Stream,
            addresses,
        )
        .build()
        .unwrap()
    }

    #[tokio::test]
    async fn version_1_headers_name_the_client_and_leave_the_request_unread() {
        let (client, rest) =
            read(b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(client.unwrap(), Some("203.0.113.9:51000".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (client, _) = read(b"PROXY TCP6 2001:db8::9 2001:db8::1 51000 443\r\n").await;
        assert_eq!(
            client.unwrap(),
            Some("[2001:db8::9]:51000".parse().unwrap())
        );
        let (client, rest) = read(b"PROXY UNKNOWN\r\nGET").await;
        assert_eq!(client.unwrap(), None);
        assert_eq!(rest, b"GET");
    }

    #[tokio::test]
    async fn version_2_headers_name_the_client_or_the_balancer_itself() {
        let proxied: SocketAddr = "198.51.100.4:40000".parse().unwrap();
        let local: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let mut bytes = v2(ppp::v2::Command::Proxy, (proxied, local).into());
        bytes.extend_from_slice(b"GET");
        let (client, rest) = read(&bytes).await;
        assert_eq!(client.unwrap(), Some(proxied));
        assert_eq!(rest, b"GET");
        let six: SocketAddr = "[2001:db8::4]:40000".parse().unwrap();
        let bytes = v2(
            ppp::v2::Command::Proxy,
            (six, "[2001:db8::1]:443".parse::<SocketAddr>().unwrap()).into(),
        );
        assert_eq!(read(&bytes).await.0.unwrap(), Some(six));
        let health = v2(ppp::v2::Command::Local, ppp::v2::Addresses::Unspecified);
        assert_eq!(read(&health).await.0.unwrap(), None);
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for (bytes, expected) in [
            (
                &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
                "no PROXY protocol header",
            ),
            (b"PROXY TCP4 203.0.113.9 10.0.0.1 51000\r\n", "malformed"),
            (
                b"PROXY TCP4 999.0.113.9 10.0.0.1 51000 443\r\n",
                "malformed",
            ),
            (b"PROXY TCP4 203.0.113.9", "reading"),
        ] {
            let error = read(bytes).await.0.unwrap_err().to_string();
            assert!(error.contains(expected), "{bytes:?}: {error}");
        }
        let mut endless = b"PROXY TCP4 ".to_vec();
        endless.resize(500, b'1');
        let error = read(&endless).await.0.unwrap_err().to_string();
        assert!(error.contains("version 1 line too long"), "{error}");
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        let error = read(&huge).await.0.unwrap_err().to_string();
        assert!(error.contains("version 2 header of 65535 bytes"), "{error}");
    }

    #[test]
    fn listeners_match_by_port_and_address_or_wildcard() {
        let pp = ProxyProtocol::new(
            vec![
                "0.0.0.0:8443".parse().unwrap(),
                "127.0.0.1:8080".parse().unwrap(),
            ],
            crate::request::client::TrustedProxies::default(),
            Duration::from_secs(1),
        );
        assert!(pp.expects(Some("10.1.2.3:8443".parse().unwrap())));
        assert!(pp.expects(Some("127.0.0.1:8080".parse().unwrap())));
        assert!(!pp.expects(Some("127.0.0.2:8080".parse().unwrap())));
        assert!(!pp.expects(Some("127.0.0.1:9000".parse().unwrap())));
        assert!(!pp.expects(None));
    }
}
