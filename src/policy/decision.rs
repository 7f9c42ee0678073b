//! Reading the policy's decision object, failing closed on anything unexpected.
//!
//! A request is allowed only when `allow` is exactly `true` and the object is well formed.
//! Anything else (undefined, another type, a bad header, an invalid reason) becomes a
//! [`DecisionError`], which the gateway turns into a 403 `policy_error`.

use http::{HeaderName, HeaderValue};
use regorus::Value;
use std::str::FromStr;
use std::sync::Arc;

/// What policy decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        reason: Arc<str>,
        /// Added to the upstream request.
        headers: Vec<(HeaderName, HeaderValue)>,
        /// Added to the response sent to the client.
        response_headers: Vec<(HeaderName, HeaderValue)>,
    },
    Deny {
        status: u16,
        reason: Arc<str>,
        /// Report `error="insufficient_scope"` (RFC 6750) with the 403.
        insufficient_scope: bool,
        response_headers: Vec<(HeaderName, HeaderValue)>,
    },
}

/// Why a decision value could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecisionError {
    #[error("data.agentgate.decision is undefined")]
    Undefined,
    #[error("the decision is malformed: {0}")]
    Malformed(String),
    #[error("policy evaluation failed: {0}")]
    Evaluation(String),
    #[error("policy evaluation exceeded its time limit")]
    Timeout,
}

/// Fields the decision object may carry.
const KNOWN_FIELDS: [&str; 6] = [
    "allow",
    "status",
    "reason",
    "headers",
    "response_headers",
    "error",
];

impl Decision {
    /// Interprets the value of `data.agentgate.decision`.
    pub fn from_value(v: &Value) -> Result<Decision, DecisionError> {
        let bad = |m: &str| DecisionError::Malformed(m.to_string());
        let obj = match v {
            Value::Undefined => return Err(DecisionError::Undefined),
            Value::Object(o) => o,
            _ => return Err(bad("not an object")),
        };
        let mut allow = None;
        let mut status = None;
        let mut reason = None;
        let mut headers = Vec::new();
        let mut response_headers = Vec::new();
        let mut insufficient_scope = false;
        for (k, val) in obj.iter() {
            let key = k.as_string().map_err(|_| bad("non-string key"))?;
            match key.as_ref() {
                "allow" => match val {
                    Value::Bool(b) => allow = Some(*b),
                    _ => return Err(bad("allow is not a boolean")),
                },
                "status" => {
                    status = Some(val.as_u64().map_err(|_| bad("status is not an integer"))?)
                }
                "reason" => reason = Some(reason_code(val)?),
                "headers" => headers = header_list(val, "headers")?,
                "response_headers" => response_headers = header_list(val, "response_headers")?,
                "error" => match val.as_string().map(|s| s.as_ref()) {
                    Ok("insufficient_scope") => insufficient_scope = true,
                    _ => return Err(bad("error must be \"insufficient_scope\"")),
                },
                other => {
                    return Err(DecisionError::Malformed(format!(
                        "unknown field {other:?} (expected one of {KNOWN_FIELDS:?})"
                    )))
                }
            }
        }
        let allow = allow.ok_or_else(|| bad("allow is missing"))?;
        let reason = reason.ok_or_else(|| bad("reason is missing"))?;
        if allow {
            return Ok(Decision::Allow {
                reason,
                headers,
                response_headers,
            });
        }
        let status = match status {
            None => 403,
            Some(s @ 400..=499) if s != 401 => s as u16,
            Some(_) => return Err(bad("status must be a 4xx code other than 401")),
        };
        Ok(Decision::Deny {
            status,
            reason,
            insufficient_scope,
            response_headers,
        })
    }
}

/// Reasons are stable codes: lower-case letters, digits and `_`, at most 64 bytes.
fn reason_code(v: &Value) -> Result<Arc<str>, DecisionError> {
    let s = v
        .as_string()
        .map_err(|_| DecisionError::Malformed("reason is not a string".into()))?;
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(s.clone())
    } else {
        Err(DecisionError::Malformed(
            "reason must match [a-z0-9_]{1,64}".into(),
        ))
    }
}

/// Header names policy may never set: credentials, routing, framing and the gateway's own.
fn reserved(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("x-agentgate-")
        || matches!(
            n,
            "authorization"
                | "host"
                | "content-length"
                | "transfer-encoding"
                | "connection"
                | "upgrade"
                | "te"
                | "trailer"
                | "keep-alive"
                | "proxy-authorization"
                | "www-authenticate"
                | "set-cookie"
                | "cookie"
        )
}

fn header_list(v: &Value, field: &str) -> Result<Vec<(HeaderName, HeaderValue)>, DecisionError> {
    let bad = |m: String| DecisionError::Malformed(format!("{field}: {m}"));
    let obj = v.as_object().map_err(|_| bad("not an object".into()))?;
    let mut out = Vec::with_capacity(obj.len());
    for (k, val) in obj.iter() {
        let name = k.as_string().map_err(|_| bad("non-string name".into()))?;
        let value = val
            .as_string()
            .map_err(|_| bad(format!("{name}: value is not a string")))?;
        let name = HeaderName::from_str(name)
            .map_err(|_| bad(format!("{name:?} is not a header name")))?;
        if reserved(&name) {
            return Err(bad(format!("{name} is reserved")));
        }
        let value =
            HeaderValue::from_str(value).map_err(|_| bad(format!("{name}: invalid value")))?;
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
