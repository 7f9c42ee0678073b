//! `check_request` and `raw_has_content_length` on arbitrary request header blocks.
//!
//! The bytes are parsed the way the proxy's HTTP/1 front end parses them (httparse, up to
//! 256 headers, `Content-Length` dropped when `Transfer-Encoding` is present), and the
//! framing check then sees that header map together with the raw block, as in the gateway.
//! Invariants: the raw block shows every `Content-Length` the parser saw, so dropping it
//! hides nothing (the verdict equals the one on the full map without the raw block); a
//! request with both `Content-Length` and `Transfer-Encoding` is always refused; an accepted
//! request has at most one `Content-Length`, a `u64` one, and at most one
//! `Transfer-Encoding`, a plain `chunked`; the size cap can only add `HeadersTooLarge`.

#![no_main]

use agentgate::request::framing::{check_request, raw_has_content_length, FramingError};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

/// The most headers the front end parses in one request.
const MAX_HEADERS: usize = 256;
/// The default `server.max_header_bytes`.
const MAX_HEADER_BYTES: usize = 32 * 1024;

fuzz_target!(|data: &[u8]| {
    // Whatever the bytes, the raw scan alone must not panic.
    let _ = raw_has_content_length(data);

    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(block_len)) = request.parse(data) else {
        return;
    };
    let raw = &data[..block_len];
    let mut full = HeaderMap::new();
    for h in request.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return;
        };
        full.append(name, value);
    }
    let has_length = full.contains_key(CONTENT_LENGTH);
    let has_encoding = full.contains_key(TRANSFER_ENCODING);
    if has_length {
        assert!(
            raw_has_content_length(raw),
            "a parsed Content-Length the raw scan misses"
        );
    }
    let mut parsed = full.clone();
    if has_length && has_encoding {
        parsed.remove(CONTENT_LENGTH);
    }

    let verdict = check_request(&parsed, Some(raw), usize::MAX);
    assert_eq!(verdict, check_request(&full, None, usize::MAX));
    assert_ne!(verdict, Err(FramingError::HeadersTooLarge));
    if has_length && has_encoding {
        assert_eq!(verdict, Err(FramingError::LengthAndChunked));
    }
    if verdict.is_ok() {
        let lengths: Vec<_> = full.get_all(CONTENT_LENGTH).iter().collect();
        let encodings: Vec<_> = full.get_all(TRANSFER_ENCODING).iter().collect();
        assert!(lengths.is_empty() || encodings.is_empty());
        assert!(lengths.len() <= 1 && encodings.len() <= 1);
        if let Some(length) = lengths.first() {
            let digits = length
                .to_str()
                .expect("accepted a non-ASCII Content-Length");
            assert!(
                digits.parse::<u64>().is_ok(),
                "accepted Content-Length {digits:?}"
            );
        }
        if let Some(encoding) = encodings.first() {
            assert!(encoding.as_bytes().eq_ignore_ascii_case(b"chunked"));
        }
    }

    let capped = check_request(&parsed, Some(raw), MAX_HEADER_BYTES);
    assert!(capped == verdict || capped == Err(FramingError::HeadersTooLarge));
});
