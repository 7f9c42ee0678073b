//! `normalize` on arbitrary request paths.
//!
//! Invariants of an accepted path: it is origin-form, normalising it again changes nothing,
//! it has no `//`, no dot segment (decoded or not), no `;`, no `\`, and every
//! escape is upper-case hex of a byte that is not unreserved, and not `/`, `\` or a control
//! character; its decoded bytes are UTF-8.

#![no_main]

use agentgate::request::path::normalize;
use libfuzzer_sys::fuzz_target;

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'A'..=b'F' => b - b'A' + 10,
        _ => panic!("escape digit {:?} is not upper-case hex", b as char),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(normal) = normalize(path) else {
        return;
    };
    assert!(normal.starts_with('/'), "accepted {normal:?}");
    assert_eq!(normalize(&normal).as_deref(), Ok(&*normal), "not idempotent");
    assert!(!normal.contains("//") && !normal.contains(';') && !normal.contains('\\'));

    let bytes = normal.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = hex(bytes[i + 1]) << 4 | hex(bytes[i + 2]);
            assert!(
                !(byte.is_ascii_alphanumeric() || b"-._~/\\".contains(&byte)),
                "kept the escape of {:?}",
                byte as char
            );
            assert!(!byte.is_ascii_control(), "kept an encoded control character");
            decoded.push(byte);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(decoded).expect("escapes that are not UTF-8");
    for segment in decoded.split('/').skip(1) {
        let dots = segment.trim_end_matches(' ');
        assert!(
            dots.is_empty() || !dots.bytes().all(|b| b == b'.'),
            "dot segment {segment:?} in {normal:?}"
        );
    }
});
