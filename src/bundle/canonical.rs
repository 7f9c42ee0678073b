//! The canonical form of a JSON document that bundle signatures hash.
//!
//! OPA hashes its structured files (`data.json`, `.manifest`) over a normal form so that a
//! signature does not depend on whitespace or key order: object keys sorted byte-wise, no
//! insignificant whitespace, numbers exactly as written, and strings encoded the way Go's
//! `encoding/json` encodes them with HTML escaping off (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`,
//! `\t`, other control characters as `\u00XX`, and U+2028/U+2029 always escaped). Any other
//! file is hashed over its bytes.

use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// The canonical bytes of the JSON document `text` (a UTF-8 byte order mark is ignored).
pub fn canonical_json(text: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
    let root: &RawValue = serde_json::from_slice(text)?;
    let mut out = Vec::with_capacity(text.len());
    write_value(root, &mut out)?;
    Ok(out)
}

fn write_value(value: &RawValue, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let raw = value.get();
    match raw.as_bytes().first() {
        Some(b'{') => {
            // Later duplicates win, as in Go's map decoding.
            let members: BTreeMap<String, &RawValue> = serde_json::from_str(raw)?;
            out.push(b'{');
            for (i, (key, member)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_value(member, out)?;
            }
            out.push(b'}');
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(raw)?;
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Some(b'"') => {
            let s: String = serde_json::from_str(raw)?;
            write_string(&s, out);
        }
        // Numbers, booleans and null: exactly as written (RawValue holds no whitespace).
        _ => out.extend_from_slice(raw.as_bytes()),
    }
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                let b = c as u32 as usize;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[b >> 4]);
                out.push(HEX[b & 0xf]);
            }
            '\u{2028}' => out.extend_from_slice(b"\\u2028"),
            '\u{2029}' => out.extend_from_slice(b"\\u2029"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::canonical_json;

    fn canon(text: &str) -> String {
        String::from_utf8(canonical_json(text.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn keys_are_sorted_and_whitespace_dropped_at_every_depth() {
        assert_eq!(
            canon("{ \"b\": [ 1, {\"z\": true, \"a\": null} ],\n  \"a\": \"x\" }"),
            r#"{"a":"x","b":[1,{"a":null,"z":true}]}"#
        );
    }

    #[test]
    fn numbers_keep_their_spelling() {
        assert_eq!(
            canon(r#"[1.50, 1e3, -0, 12345678901234567890123]"#),
            "[1.50,1e3,-0,12345678901234567890123]"
        );
    }

    #[test]
    fn strings_are_escaped_like_go_without_html_escaping() {
        assert_eq!(
            canon(r#"["<a&b>", "\u0001\u0008\f\n\r\t\"\\", "\u2028\u2029", "\/é"]"#),
            r#"["<a&b>","\u0001\b\f\n\r\t\"\\","\u2028\u2029","/é"]"#
        );
    }

    #[test]
    fn a_byte_order_mark_is_ignored_and_garbage_refused() {
        assert_eq!(canon("\u{feff}{\"a\":1}"), r#"{"a":1}"#);
        assert!(canonical_json(b"{\"a\":").is_err());
        assert!(canonical_json(b"{} {}").is_err());
    }

    #[test]
    fn a_later_duplicate_key_wins() {
        assert_eq!(canon(r#"{"a":1,"a":2}"#), r#"{"a":2}"#);
    }
}
