//! Protocol upgrades (`Upgrade`, RFC 9110 §7.8): which ones the gateway forwards.
//!
//! pingora treats any HTTP/1.1 request with an `Upgrade` header as an upgrade attempt and
//! switches to raw byte relaying once the upstream answers 101. The gateway forwards
//! exactly one protocol, WebSocket, and only on routes that allow it; any other upgrade
//! offer (`h2c` from `curl --http2`, ...) is dropped before routing so the request is
//! served as the plain HTTP/1.1 request it also is (a server may ignore `Upgrade`).

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Version};

/// The one upgrade the gateway forwards.
pub const WEBSOCKET: &str = "websocket";

/// `HTTP2-Settings`, sent with an `h2c` upgrade offer.
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// The upgrade an HTTP/1.1 request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// `Upgrade: websocket`.
    WebSocket,
    /// Any other protocol, or several.
    Other,
}

/// The upgrade `headers` ask for, if any. Only HTTP/1.1 upgrades; HTTP/2 has none.
pub fn requested(headers: &HeaderMap, version: Version) -> Option<Upgrade> {
    if version != Version::HTTP_11 {
        return None;
    }
    let mut values = headers.get_all(UPGRADE).iter();
    let first = values.next()?;
    let websocket = values.next().is_none()
        && first
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case(WEBSOCKET));
    Some(if websocket {
        Upgrade::WebSocket
    } else {
        Upgrade::Other
    })
}

/// The headers that carry an upgrade offer besides `Connection`: `Upgrade` and, for
/// `h2c`, `HTTP2-Settings`.
pub const OFFER_HEADERS: [HeaderName; 2] = [UPGRADE, HTTP2_SETTINGS];

/// The `Connection` options left once an upgrade offer is dropped (`close`, ...), or
/// `None` when none are.
pub fn connection_without_offer(headers: &HeaderMap) -> Option<HeaderValue> {
    let kept: Vec<&str> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case("upgrade")
                && !t.eq_ignore_ascii_case("http2-settings")
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(", ")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_a_single_websocket_token_is_a_websocket_upgrade() {
        let v11 = Version::HTTP_11;
        let ws = headers(&[("upgrade", " WebSocket "), ("connection", "Upgrade")]);
        assert_eq!(requested(&ws, v11), Some(Upgrade::WebSocket));
        let h2c = headers(&[
            ("upgrade", "h2c"),
            ("connection", "Upgrade, HTTP2-Settings"),
        ]);
        assert_eq!(requested(&h2c, v11), Some(Upgrade::Other));
        let list = headers(&[("upgrade", "websocket, h2c")]);
        assert_eq!(requested(&list, v11), Some(Upgrade::Other));
        let twice = headers(&[("upgrade", "websocket"), ("upgrade", "websocket")]);
        assert_eq!(requested(&twice, v11), Some(Upgrade::Other));
        assert_eq!(requested(&headers(&[]), v11), None);
        assert_eq!(requested(&ws, Version::HTTP_2), None);
        assert_eq!(requested(&ws, Version::HTTP_10), None);
    }

    #[test]
    fn only_other_connection_options_survive_a_dropped_offer() {
        let h2c = headers(&[
            ("upgrade", "h2c"),
            ("connection", "Upgrade, HTTP2-Settings"),
        ]);
        assert_eq!(connection_without_offer(&h2c), None);
        let closing = headers(&[("connection", "close, Upgrade"), ("connection", "te")]);
        assert_eq!(connection_without_offer(&closing).unwrap(), "close, te");
        assert_eq!(connection_without_offer(&headers(&[])), None);
    }
}
