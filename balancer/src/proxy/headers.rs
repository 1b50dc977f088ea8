//! Header rewriting at the proxy's edge: hop-by-hop headers stripped both ways (RFC 9110
//! §7.6.1, plus every header named in `Connection`), and `X-Forwarded-For/-Proto/-Host`
//! and `Forwarded` (RFC 7239) set on the way in: extended when the peer is a trusted
//! proxy, replaced otherwise (a client cannot forge its address or scheme).
use std::net::IpAddr;

use hyper::HeaderMap;
use hyper::header::{self, HeaderName, HeaderValue};

/// Headers that describe one connection, never the message (names pre-parsed: this runs
/// twice per proxied request).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes the hop-by-hop headers, and the headers the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// From a `trusted` peer (a proxy in `--trusted-proxies`): appends the client's address
/// to `X-Forwarded-For` and `Forwarded`, and sets `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (from the request's `Host`) unless an earlier proxy already did.
/// From any other peer, whatever it sent in those headers is dropped first, so they
/// carry the proxy's own view only.
pub fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, proto: &'static str, trusted: bool) {
    if !trusted {
        for name in [
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &header::FORWARDED,
        ] {
            headers.remove(name);
        }
    }
    let ip = client.to_string();
    let xff = match joined(headers, &X_FORWARDED_FOR) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip.clone(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    if let Some(host) = &host
        && !headers.contains_key(&X_FORWARDED_HOST)
        && let Ok(v) = HeaderValue::from_str(host)
    {
        headers.insert(X_FORWARDED_HOST, v);
    }
    let for_ = match client {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let mut element = format!("for={for_};proto={proto}");
    if let Some(host) = host.filter(|h| is_quotable(h)) {
        element.push_str(&format!(";host=\"{host}\""));
    }
    let forwarded = match joined(headers, &header::FORWARDED) {
        Some(prev) => format!("{prev}, {element}"),
        None => element,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, v);
    }
}

/// Every value of `name`, joined by `, ` (a list header may arrive split over lines).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Whether `s` can go inside a quoted-string as is.
fn is_quotable(s: &str) -> bool {
    s.bytes()
        .all(|b| b != b'"' && b != b'\\' && (b == b'\t' || (0x20..0x7f).contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("content-type", "text/plain"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type", "x-kept"]);
    }

    #[test]
    fn forwarded_headers_from_an_untrusted_peer_are_replaced() {
        let mut h = map(&[
            ("host", "example.com"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "admin.internal"),
            ("forwarded", "for=10.0.0.1;proto=https"),
        ]);
        add_forwarded(&mut h, "192.0.2.7".parse().expect("ip"), "http", false);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.7;proto=http;host=\"example.com\""
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn forwarded_headers_from_a_trusted_proxy_are_appended() {
        let mut h = map(&[
            ("host", "example.com:8080"),
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1"),
        ]);
        add_forwarded(&mut h, "192.0.2.7".parse().expect("ip"), "http", true);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com:8080");
        assert_eq!(
            h["forwarded"],
            "for=10.0.0.1, for=192.0.2.7;proto=http;host=\"example.com:8080\""
        );

        let mut h = map(&[]);
        add_forwarded(&mut h, "::1".parse().expect("ip"), "http", false);
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=http");
        assert!(!h.contains_key("x-forwarded-host"));
    }
}
