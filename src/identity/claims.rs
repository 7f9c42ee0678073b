//! The strict serde shapes of a token's header and claims.
//!
//! Deserialisation is the first line of defence: a known claim of the wrong JSON type fails
//! the whole token, a known name given twice fails it (serde rejects duplicate fields), and
//! time claims are classified rather than coerced (the CVE-2026-25537 class, where a string
//! `exp` was silently ignored).

use serde::de::{Deserializer, IgnoredAny};
use serde::Deserialize;

/// Latest accepted NumericDate: 9999-12-31T23:59:59Z. Larger values are nonsense.
const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// The JOSE header. Parameters that point at keys (`jku`, `x5u`, `jwk`, `x5c`) or change
/// processing (`crit`, `b64`, `zip`) are recorded as present so the validator can refuse them.
#[derive(Debug, Deserialize)]
pub(crate) struct Header {
    pub alg: String,
    #[serde(default)]
    pub typ: Option<String>,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub crit: bool,
    #[serde(default, deserialize_with = "present")]
    pub jku: bool,
    #[serde(default, deserialize_with = "present")]
    pub x5u: bool,
    #[serde(default, deserialize_with = "present")]
    pub jwk: bool,
    #[serde(default, deserialize_with = "present")]
    pub x5c: bool,
    #[serde(default, deserialize_with = "present")]
    pub b64: bool,
    #[serde(default, deserialize_with = "present")]
    pub zip: bool,
}

impl Header {
    /// True when the header names a key source or an extension we never honour.
    pub fn has_forbidden_parameter(&self) -> bool {
        self.crit || self.jku || self.x5u || self.jwk || self.x5c || self.b64 || self.zip
    }
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// A time claim as found in the token: absent, a valid NumericDate, or anything else.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeClaim {
    #[default]
    Absent,
    At(u64),
    Invalid,
}

impl<'de> Deserialize<'de> for TimeClaim {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Only a non-negative JSON integer in range is a NumericDate; strings, floats, null,
        // booleans, objects and out-of-range numbers are all invalid, never coerced.
        let v = serde_json::Value::deserialize(d)?;
        Ok(match v.as_u64() {
            Some(n) if v.is_u64() && n <= MAX_NUMERIC_DATE => TimeClaim::At(n),
            _ => TimeClaim::Invalid,
        })
    }
}

/// The claims the gateway reads. Display-only and opaque claims are ignored on purpose.
#[derive(Debug, Deserialize)]
pub(crate) struct Claims {
    #[serde(default)]
    pub aud: Option<String>,
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub tid: Option<String>,
    #[serde(default)]
    pub ver: Option<String>,
    #[serde(default)]
    pub exp: TimeClaim,
    #[serde(default)]
    pub nbf: TimeClaim,
    #[serde(default)]
    pub iat: TimeClaim,
    #[serde(default)]
    pub appid: Option<String>,
    #[serde(default)]
    pub azp: Option<String>,
    #[serde(default)]
    pub oid: Option<String>,
    #[serde(default)]
    pub idtyp: Option<String>,
    #[serde(default)]
    pub scp: Option<String>,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub xms_act_fct: Option<String>,
    #[serde(default)]
    pub xms_sub_fct: Option<String>,
    #[serde(default)]
    pub xms_tnt_fct: Option<String>,
    #[serde(default)]
    pub xms_par_app_azp: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp_of(json: &str) -> Result<TimeClaim, serde_json::Error> {
        serde_json::from_str::<Claims>(json).map(|c| c.exp)
    }

    #[test]
    fn time_claims_of_the_wrong_type_are_invalid_not_coerced() {
        for bad in [
            "\"1767225600\"",
            "1767225600.5",
            "null",
            "true",
            "-5",
            "1e300",
            "[1]",
            "{}",
        ] {
            let got = exp_of(&format!("{{\"exp\":{bad}}}")).unwrap();
            assert_eq!(got, TimeClaim::Invalid, "exp = {bad}");
        }
        assert_eq!(
            exp_of("{\"exp\":1767225600}").unwrap(),
            TimeClaim::At(1_767_225_600)
        );
        assert_eq!(exp_of("{}").unwrap(), TimeClaim::Absent);
        assert_eq!(
            exp_of("{\"exp\":253402300800}").unwrap(),
            TimeClaim::Invalid
        );
    }

    #[test]
    fn duplicate_known_claims_are_rejected() {
        assert!(serde_json::from_str::<Claims>("{\"tid\":\"a\",\"tid\":\"b\"}").is_err());
        assert!(serde_json::from_str::<Header>("{\"alg\":\"RS256\",\"alg\":\"none\"}").is_err());
    }

    #[test]
    fn key_pointing_header_parameters_are_seen_even_when_null() {
        let h: Header = serde_json::from_str("{\"alg\":\"RS256\",\"jku\":null}").unwrap();
        assert!(h.has_forbidden_parameter());
        let h: Header = serde_json::from_str("{\"alg\":\"RS256\",\"kid\":\"k\"}").unwrap();
        assert!(!h.has_forbidden_parameter());
    }

    #[test]
    fn wrongly_typed_identity_claims_fail_the_token() {
        assert!(serde_json::from_str::<Claims>("{\"roles\":\"Orders.Read\"}").is_err());
        assert!(serde_json::from_str::<Claims>("{\"aud\":[\"a\",\"b\"]}").is_err());
        assert!(serde_json::from_str::<Claims>("{\"oid\":5}").is_err());
    }
}

/// Parses a JOSE header or a claims set, which must be a JSON object (RFC 7515 §4, RFC 7519
/// §7.2): serde's derived structs would also read a JSON array, positionally. The whole text
/// must be UTF-8 (RFC 8259 §8.1), members the structs skip included.
pub(crate) fn from_json_object<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
) -> Result<T, super::TokenError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(super::TokenError::Malformed);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| super::TokenError::Malformed)?;
    serde_json::from_str(text).map_err(|_| super::TokenError::Malformed)
}

#[cfg(test)]
mod object_tests {
    use super::*;

    #[test]
    fn headers_and_claims_must_be_json_objects() {
        assert!(from_json_object::<Header>(br#"{"alg":"RS256","kid":"k"}"#).is_ok());
        assert!(from_json_object::<Header>(br#"  {"alg":"RS256"}"#).is_ok());
        for bad in [
            &br#"["RS256",null,"kid1"]"#[..],
            b"",
            b" ",
            b"\"RS256\"",
            b"[]",
            b"{\"alg\":\"RS256\",\"x\":\"\xff\"}",
        ] {
            assert!(from_json_object::<Header>(bad).is_err(), "{bad:?}");
            assert!(from_json_object::<Claims>(bad).is_err(), "{bad:?}");
        }
    }
}
