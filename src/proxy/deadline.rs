//! A deadline on reading each request's header block, against slowloris clients.
//!
//! pingora bounds each individual read, so a client that trickles one byte every few seconds
//! can hold a connection open almost forever. [`HeaderDeadline`] wraps every accepted
//! connection: from the first read of a request's header block until its terminating blank
//! line, reads must finish within the deadline or the connection fails with `TimedOut`. Body
//! reads are not limited (the route's read timeout governs the upstream side), and the next
//! request's header is armed again once the response has been written.
//!
//! The scanner reads header blocks the way the HTTP/1 parser does (httparse): empty lines
//! before the request line are skipped, and a line ends with `\n` or `\r\n`. So neither
//! leading `\r\n\r\n` nor bare `\n` line endings can make it think a header block ended
//! while the parser is still waiting for one.
//!
//! A connection that opens with the HTTP/2 client preface (over TLS after ALPN `h2`, or
//! h2c with prior knowledge) has no header blocks to scan: the deadline stays off for it,
//! and the HTTP/2 layer's own limits apply (header list size, concurrent streams, resets).

use async_trait::async_trait;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, UniqueID, UniqueIDType,
};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

type Stream = pingora::protocols::Stream;

/// Where the connection stands with respect to the current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a header block.
    Header(HeaderScan),
    /// Header complete: body reads and the response follow.
    Request,
    /// A response was written; the next read starts a new header.
    Responded,
    /// An HTTP/2 connection: nothing to scan, no deadline.
    Http2,
}

/// The start of the HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

/// Where the scanner stands inside a header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderScan {
    /// Before the request line: empty lines (`\r`, `\n`) are skipped, as the parser does.
    Leading,
    /// Inside a line.
    InLine,
    /// At the start of a line, after a line ending.
    LineStart,
    /// At the start of a line, after its `\r`.
    LineStartCr,
}

impl HeaderScan {
    /// Advances over `bytes`; returns the number of bytes up to and including the blank line
    /// that ends the header block, or `None` while the block continues.
    pub fn advance(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            if *self == Self::InLine {
                // Nothing inside a line matters but its end: skip to it.
                match memchr::memchr(b'\n', &bytes[i..]) {
                    Some(at) => i += at,
                    None => return None,
                }
            }
            *self = match (*self, bytes[i]) {
                (Self::Leading, b'\r' | b'\n') => Self::Leading,
                (Self::LineStart, b'\n') | (Self::LineStartCr, b'\n') => return Some(i + 1),
                (Self::LineStart, b'\r') => Self::LineStartCr,
                (_, b'\n') => Self::LineStart,
                _ => Self::InLine,
            };
            i += 1;
        }
        None
    }
}

/// A connection whose request header blocks must arrive within a deadline.
pub struct HeaderDeadline {
    inner: Stream,
    deadline: Duration,
    /// Allocated at the first header read and re-armed with `reset` for every later request.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` runs for the header block being read now.
    armed: bool,
    phase: Phase,
    /// How many bytes read so far match [`H2_PREFACE_START`]; `None` once one did not.
    preface: Option<usize>,
}

impl std::fmt::Debug for HeaderDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDeadline")
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl HeaderDeadline {
    pub fn new(inner: Stream, deadline: Duration) -> Self {
        Self {
            inner,
            deadline,
            timer: None,
            armed: false,
            phase: Phase::Header(HeaderScan::Leading),
            preface: Some(0),
        }
    }

    /// Follows the first bytes of the connection: once they are the HTTP/2 preface, the
    /// connection is HTTP/2 for good.
    fn check_preface(&mut self, bytes: &[u8]) {
        let Some(matched) = self.preface else {
            return;
        };
        let rest = &H2_PREFACE_START[matched..];
        let n = rest.len().min(bytes.len());
        self.preface = (rest[..n] == bytes[..n]).then_some(matched + n);
        if self.preface == Some(H2_PREFACE_START.len()) {
            self.preface = None;
            self.phase = Phase::Http2;
            self.armed = false;
        }
    }

    /// Advances the header scanner over newly read bytes; disarms the deadline at the end of
    /// the header block.
    fn scan(&mut self, bytes: &[u8]) {
        let Phase::Header(mut scan) = self.phase else {
            return;
        };
        self.phase = match scan.advance(bytes) {
            Some(_) => {
                self.armed = false;
                Phase::Request
            }
            None => Phase::Header(scan),
        };
    }
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.phase == Phase::Responded {
            this.phase = Phase::Header(HeaderScan::Leading);
        }
        if let Phase::Header(_) = this.phase {
            let deadline = this.deadline;
            let timer = match (&mut this.timer, this.armed) {
                (Some(timer), true) => timer,
                (Some(timer), false) => {
                    timer.as_mut().reset(tokio::time::Instant::now() + deadline);
                    timer
                }
                (timer @ None, _) => timer.insert(Box::pin(tokio::time::sleep(deadline))),
            };
            this.armed = true;
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request header not received within the header read deadline",
                )));
            }
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let read = &buf.filled()[before..];
            this.check_preface(read);
            this.scan(read);
        }
        result
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.phase == Phase::Request {
            self.phase = Phase::Responded;
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.phase == Phase::Request {
            self.phase = Phase::Responded;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// === delegation of pingora's connection traits ===

#[async_trait]
impl Shutdown for HeaderDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeaderDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderDeadline {
    // TLS listeners: the session's TLS digest (client certificate) and ALPN come from here.
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderDeadline {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeaderDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeaderDeadline {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, d: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(d)
    }
}

#[async_trait]
impl Peek for HeaderDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderScan;

    /// Feeds `chunks` one read at a time; the offset just past the header block, if it ended.
    fn end_of_header(chunks: &[&[u8]]) -> Option<usize> {
        let mut scan = HeaderScan::Leading;
        let mut seen = 0;
        for c in chunks {
            if let Some(n) = scan.advance(c) {
                return Some(seen + n);
            }
            seen += c.len();
        }
        None
    }

    #[test]
    fn a_header_block_ends_at_its_blank_line_however_it_is_split() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody";
        assert_eq!(end_of_header(&[req]), Some(req.len() - 4));
        let bytes: Vec<&[u8]> = req.chunks(1).collect();
        assert_eq!(end_of_header(&bytes), Some(req.len() - 4));
        // Bare LF line endings, which the parser accepts too.
        assert_eq!(end_of_header(&[b"GET / HTTP/1.1\nHost: a\n\n"]), Some(24));
        assert_eq!(end_of_header(&[b"GET / HTTP/1.1\nHost: a\r\n\n"]), Some(25));
        assert_eq!(
            end_of_header(&[b"GET / HTTP/1.1\r\nHost: a\n\r\n"]),
            Some(26)
        );
    }

    #[test]
    fn empty_lines_before_the_request_line_never_end_a_header_block() {
        for leading in [
            &b"\r\n\r\n"[..],
            b"\n\n\n",
            b"\r\r\n\n",
            &[b'\r'; 100],
            b"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n",
        ] {
            assert_eq!(end_of_header(&[leading]), None, "{leading:?}");
            // Then a request line and headers trickle in: still no end until the blank line.
            assert_eq!(
                end_of_header(&[leading, b"GET / HTTP/1.1\r\n", b"X-A: 1\r\n"]),
                None
            );
            let done = end_of_header(&[leading, b"GET / HTTP/1.1\r\n", b"X-A: 1\r\n\r\n"]);
            assert_eq!(done, Some(leading.len() + 26), "{leading:?}");
        }
    }

    /// The end of the header block by its definition: after any empty lines, the first `\n`
    /// that follows a line ending (`\n` or `\n\r`).
    fn end_of_header_by_definition(bytes: &[u8]) -> Option<usize> {
        let start = bytes.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
        (start + 1..bytes.len())
            .find(|&i| {
                bytes[i] == b'\n'
                    && (bytes[i - 1] == b'\n' || (bytes[i - 1] == b'\r' && bytes[i - 2] == b'\n'))
            })
            .map(|i| i + 1)
    }

    proptest::proptest! {
        #[test]
        fn skipping_to_line_ends_finds_the_same_end(
            bytes in proptest::collection::vec(
                proptest::sample::select(vec![b'\r', b'\n', b'a', b':', b' ']), 0..64),
            split in 0usize..64,
        ) {
            let split = split.min(bytes.len());
            let expected = end_of_header_by_definition(&bytes);
            proptest::prop_assert_eq!(end_of_header(&[&bytes]), expected);
            proptest::prop_assert_eq!(
                end_of_header(&[&bytes[..split], &bytes[split..]]),
                expected
            );
        }
    }

    #[test]
    fn line_endings_inside_a_line_do_not_end_it() {
        assert_eq!(end_of_header(&[b"GET / HTTP/1.1\r\nA: \r1\r\n"]), None);
        assert_eq!(end_of_header(&[b"GET / HTTP/1.1\r\nA: 1\r\r\n"]), None);
    }
}
