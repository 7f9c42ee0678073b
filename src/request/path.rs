//! One path discipline, applied before routing: a path is normalised into the form the
//! gateway routes, the policy sees and the upstream receives, or refused when servers could
//! read it differently.
//!
//! Normalised (then forwarded in that form):
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, other escapes
//!   are kept with upper-case hex (RFC 3986 §6.2.2);
//! - runs of `/` collapse into one (`/orders//42` is `/orders/42`).
//!
//! Refused (`400 invalid_path`), because some server on the way would resolve them outside
//! the prefix that was authorised:
//! - anything but an origin-form path (`/...`);
//! - dot segments, plain or encoded (`..`, `%2e%2e`, `.%2E`), and segments of dots followed
//!   by spaces (`.. `, which Windows servers read as `..`);
//! - `;` path parameters (Tomcat and Spring strip them, so `/orders/..;/admin` is `..`);
//! - backslashes and encoded `/` or `\` (IIS and others treat `\` as `/`, and some upstreams
//!   decode `%2f` before routing);
//! - double encoding: `%25` followed, once unreserved escapes are decoded, by two hex digits
//!   or `u` (`%252e` and `%25%32%65` are `.` after a second decoding, `%25u002e` after
//!   IIS's `%u`);
//! - encoded control characters (`%00`-`%1F`, `%7F`), malformed escapes (`%zz`, `%u002e`,
//!   a lone `%`), and escapes that do not decode to UTF-8 (overlong forms such as `%c0%ae`).

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("not an origin-form path")]
    NotOriginForm,
    #[error("a dot segment")]
    DotSegment,
    #[error("a ';' path parameter")]
    PathParameter,
    #[error("a backslash")]
    Backslash,
    #[error("an encoded '/' or '\\'")]
    EncodedSeparator,
    #[error("a double-encoded escape")]
    DoubleEncoding,
    #[error("an encoded control character")]
    ControlCharacter,
    #[error("a malformed percent escape")]
    MalformedEscape,
    #[error("escapes that do not decode to UTF-8")]
    InvalidUtf8,
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The escape at `bytes[i..]` (which starts with `%`), decoded.
fn escape_at(bytes: &[u8], i: usize) -> Result<u8, PathError> {
    match (
        bytes.get(i + 1).copied().and_then(hex_value),
        bytes.get(i + 2).copied().and_then(hex_value),
    ) {
        (Some(hi), Some(lo)) => Ok(hi << 4 | lo),
        _ => Err(PathError::MalformedEscape),
    }
}

/// True when a segment, fully decoded, is `.` or `..` or dots followed by spaces.
fn is_dot_segment(decoded: &[u8]) -> bool {
    let trimmed = decoded
        .iter()
        .rposition(|b| *b != b' ')
        .map_or(&decoded[..0], |end| &decoded[..=end]);
    !trimmed.is_empty() && trimmed.iter().all(|b| *b == b'.')
}

/// True when the normal form holds `%25` followed by `XX` or `u`: an escape once decoded
/// again. Checked on the normal form, where escaped unreserved characters are already
/// decoded, so `%25%32%65` is caught as `%252e` and `%25%75002e` as `%25u002e`.
fn double_encoded(normal: &[u8]) -> bool {
    normal.windows(3).enumerate().any(|(i, w)| {
        w == b"%25"
            && match normal.get(i + 3) {
                Some(b'u' | b'U') => true,
                Some(_) => escape_at(normal, i + 2).is_ok(),
                None => false,
            }
    })
}

/// True when `bytes` is already in normal form: a `/`, then segments of plain characters
/// (no escape, `;`, backslash, control character or space), none empty but the last and
/// none made only of dots. Checked first, so the common case allocates nothing.
fn already_normal(bytes: &[u8]) -> bool {
    let Some(rest) = bytes.strip_prefix(b"/") else {
        return false;
    };
    if rest
        .iter()
        .any(|b| matches!(b, b'%' | b';' | b'\\' | 0x00..=0x20 | 0x7f))
    {
        return false;
    }
    let mut segments = rest.split(|b| *b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment.is_empty() && !last || segment.iter().all(|b| *b == b'.') && !segment.is_empty()
        {
            return false;
        }
    }
    true
}

/// Normalises `path` (the request target's path, without the query), or refuses it.
/// Borrows when the path is already normal, which is the common case.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if already_normal(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    // The normal form, and every escape decoded (for the UTF-8 and dot-segment checks).
    let mut normal = Vec::with_capacity(bytes.len());
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut segment_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'/' => {
                if is_dot_segment(&decoded[segment_start..]) {
                    return Err(PathError::DotSegment);
                }
                if normal.last() != Some(&b'/') {
                    normal.push(b'/');
                    decoded.push(b'/');
                }
                segment_start = decoded.len();
                i += 1;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::PathParameter),
            b'%' => {
                let value = escape_at(bytes, i)?;
                match value {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0x00..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                    b'%' => normal.extend_from_slice(b"%25"),
                    v if is_unreserved(v) => normal.push(v),
                    v => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        normal.extend_from_slice(&[
                            b'%',
                            HEX[usize::from(v >> 4)],
                            HEX[usize::from(v & 0xf)],
                        ]);
                    }
                }
                decoded.push(value);
                i += 3;
            }
            0x00..=0x20 | 0x7f => return Err(PathError::ControlCharacter),
            _ => {
                normal.push(b);
                decoded.push(b);
                i += 1;
            }
        }
    }
    if is_dot_segment(&decoded[segment_start..]) {
        return Err(PathError::DotSegment);
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::InvalidUtf8);
    }
    if double_encoded(&normal) {
        return Err(PathError::DoubleEncoding);
    }
    if normal == bytes {
        return Ok(Cow::Borrowed(path));
    }
    // Only ASCII was written to `normal` (escapes for everything else), or the input's own
    // bytes, which were UTF-8.
    String::from_utf8(normal)
        .map(Cow::Owned)
        .map_err(|_| PathError::InvalidUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_agrees_with_the_full_one() {
        for p in [
            "/",
            "/orders",
            "/orders/",
            "/orders/42",
            "//orders",
            "/orders//42",
            "/a/./b",
            "/a/../b",
            "/a/.",
            "/...",
            "/a/b.c",
            "/a%41",
            "/a;b",
            "/a b",
            "x",
            "",
        ] {
            if already_normal(p.as_bytes()) {
                assert_eq!(normalize(p), Ok(Cow::Borrowed(p)), "{p:?}");
            }
        }
        assert!(already_normal(b"/orders/42") && already_normal(b"/") && already_normal(b"/a/"));
        assert!(!already_normal(b"//a") && !already_normal(b"/a/..") && !already_normal(b"/%41"));
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for p in [
            "/",
            "/orders",
            "/orders/42",
            "/orders/",
            "/a-b_c~d.e",
            "/x%20y",
            "/caf%C3%A9",
        ] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_slashes_collapsed() {
        let n = |p| normalize(p).map(Cow::into_owned);
        assert_eq!(n("/%6Frders/42"), Ok("/orders/42".into()));
        assert_eq!(n("/orders//42"), Ok("/orders/42".into()));
        assert_eq!(n("//orders///42//"), Ok("/orders/42/".into()));
        assert_eq!(n("/file%2ejson"), Ok("/file.json".into()));
        assert_eq!(n("/a%3ab"), Ok("/a%3Ab".into()));
        assert_eq!(n("/50%25off"), Ok("/50%25off".into()));
    }

    #[test]
    fn ambiguous_forms_are_refused() {
        let cases = [
            ("", PathError::NotOriginForm),
            ("*", PathError::NotOriginForm),
            ("orders", PathError::NotOriginForm),
            ("/orders/../admin", PathError::DotSegment),
            ("/orders/..", PathError::DotSegment),
            ("/orders/%2e%2e/admin", PathError::DotSegment),
            ("/orders/.%2E/admin", PathError::DotSegment),
            ("/orders/./x", PathError::DotSegment),
            ("/orders/..%20/admin", PathError::DotSegment),
            ("/orders/.../x", PathError::DotSegment),
            ("/orders/..;/admin", PathError::PathParameter),
            ("/orders;x/42", PathError::PathParameter),
            ("/orders\\..\\admin", PathError::Backslash),
            ("/orders%2fadmin", PathError::EncodedSeparator),
            ("/orders%5Cadmin", PathError::EncodedSeparator),
            ("/orders/%252e%252e/admin", PathError::DoubleEncoding),
            ("/orders/%25252e", PathError::DoubleEncoding),
            ("/orders/%25u002e", PathError::DoubleEncoding),
            (
                "/orders/%25%32%65%25%32%65/admin",
                PathError::DoubleEncoding,
            ),
            ("/orders/%25%75002e", PathError::DoubleEncoding),
            ("/orders/%25%55", PathError::DoubleEncoding),
            ("/orders/%00", PathError::ControlCharacter),
            ("/orders/%0d%0a", PathError::ControlCharacter),
            ("/orders/%7f", PathError::ControlCharacter),
            ("/orders/%u002e%u002e/admin", PathError::MalformedEscape),
            ("/orders/%", PathError::MalformedEscape),
            ("/orders/%zz", PathError::MalformedEscape),
            ("/orders/%c0%ae%c0%ae/admin", PathError::InvalidUtf8),
            ("/orders/%e0%80%ae", PathError::InvalidUtf8),
            ("/orders/%ff", PathError::InvalidUtf8),
        ];
        for (p, want) in cases {
            assert_eq!(normalize(p), Err(want), "{p:?}");
        }
    }
}
