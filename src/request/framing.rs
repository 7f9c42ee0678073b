//! Request framing checks that close the door on request smuggling and header abuse.
//!
//! A request whose length a front end and a back end could read differently is refused with
//! 400 and the connection is closed (RFC 9112 §6.1, §6.3): `Content-Length` together with
//! `Transfer-Encoding`, conflicting or repeated `Content-Length`, and any
//! `Transfer-Encoding` other than a single plain `chunked`. Oversized header blocks get 431.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::HeaderMap;

/// Why a request's framing or headers are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("Content-Length and Transfer-Encoding together")]
    LengthAndChunked,
    #[error("more than one Content-Length, or a malformed one")]
    BadContentLength,
    #[error("a Transfer-Encoding other than a single chunked")]
    BadTransferEncoding,
    #[error("the request header block is too large")]
    HeadersTooLarge,
}

/// True when the raw header block has a `Content-Length` line. The HTTP parser drops
/// `Content-Length` when `Transfer-Encoding` is present (RFC 9112 §6.3 allows that), so the
/// parsed headers alone cannot show the ambiguity; the raw bytes can.
pub fn raw_has_content_length(raw: &[u8]) -> bool {
    raw.split(|b| *b == b'\n')
        .any(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

/// Checks framing and header size; `max_header_bytes` bounds names plus values. `raw` is the
/// request's header block as received, when available.
pub fn check_request(
    headers: &HeaderMap,
    raw: Option<&[u8]>,
    max_header_bytes: usize,
) -> Result<(), FramingError> {
    let size: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if size > max_header_bytes {
        return Err(FramingError::HeadersTooLarge);
    }
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let mut encodings = headers.get_all(TRANSFER_ENCODING).iter();
    let length = lengths.next();
    let encoding = encodings.next();
    if encoding.is_some() && (length.is_some() || raw.is_some_and(raw_has_content_length)) {
        return Err(FramingError::LengthAndChunked);
    }
    if let Some(l) = length {
        let digits = l.as_bytes();
        if lengths.next().is_some()
            || digits.is_empty()
            || digits.len() > 19
            || !digits.iter().all(u8::is_ascii_digit)
        {
            return Err(FramingError::BadContentLength);
        }
    }
    if let Some(te) = encoding {
        if encodings.next().is_some() || !te.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(FramingError::BadTransferEncoding);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let cases = [
            (
                vec![("content-length", "5"), ("transfer-encoding", "chunked")],
                FramingError::LengthAndChunked,
            ),
            (
                vec![("content-length", "5"), ("content-length", "6")],
                FramingError::BadContentLength,
            ),
            (
                vec![("content-length", "5"), ("content-length", "5")],
                FramingError::BadContentLength,
            ),
            (
                vec![("content-length", "5, 5")],
                FramingError::BadContentLength,
            ),
            (
                vec![("content-length", "+5")],
                FramingError::BadContentLength,
            ),
            (
                vec![("transfer-encoding", "xchunked")],
                FramingError::BadTransferEncoding,
            ),
            (
                vec![("transfer-encoding", "chunked, identity")],
                FramingError::BadTransferEncoding,
            ),
            (
                vec![
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                FramingError::BadTransferEncoding,
            ),
            (
                vec![("transfer-encoding", "gzip")],
                FramingError::BadTransferEncoding,
            ),
        ];
        for (h, want) in cases {
            assert_eq!(
                check_request(&headers(&h), None, 32 * 1024),
                Err(want),
                "{h:?}"
            );
        }
    }

    #[test]
    fn ordinary_requests_pass_and_huge_headers_do_not() {
        assert_eq!(
            check_request(&headers(&[("content-length", "42")]), None, 1024),
            Ok(())
        );
        assert_eq!(
            check_request(&headers(&[("transfer-encoding", "Chunked")]), None, 1024),
            Ok(())
        );
        assert_eq!(check_request(&headers(&[]), None, 1024), Ok(()));
        let big = "a".repeat(2000);
        assert_eq!(
            check_request(&headers(&[("x-big", &big)]), None, 1024),
            Err(FramingError::HeadersTooLarge)
        );
    }

    #[test]
    fn a_content_length_dropped_by_the_parser_is_still_seen() {
        let te = headers(&[("transfer-encoding", "chunked")]);
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nCONTENT-LENGTH: 4\r\n\r\n";
        assert_eq!(
            check_request(&te, Some(raw), 1024),
            Err(FramingError::LengthAndChunked)
        );
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Content-Length: 4\r\n\r\n";
        assert_eq!(check_request(&te, Some(raw), 1024), Ok(()));
    }
}
