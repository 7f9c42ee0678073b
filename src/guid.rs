//! GUID syntax, the shape of every Entra object, tenant and application id.

/// True when `s` is a GUID in the canonical 8-4-4-4-12 hexadecimal form Entra puts in tokens.
///
/// ```
/// assert!(agentgate::guid::is_guid("aaaaaaaa-1111-1111-1111-000000000001"));
/// assert!(!agentgate::guid::is_guid("not-a-guid"));
/// ```
pub fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}
