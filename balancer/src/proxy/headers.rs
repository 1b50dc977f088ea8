//! Header rewriting at the proxy's edge: hop-by-hop headers stripped both ways (RFC 9110
//! §7.6.1, plus every header named in `Connection`), and `X-Forwarded-For/-Proto/-Host`
//! and `Forwarded` (RFC 7239) set on the way in: extended when the peer is a trusted
//! proxy, replaced otherwise (a client cannot forge its address or scheme).
use std::net::IpAddr;

use hyper::HeaderMap;
use hyper::header::{self, HeaderName, HeaderValue};

/// Headers that describe one connection, never the message (names pre-parsed: this runs
/// twice per proxied request).
pub const HOP_BY_HOP: [HeaderName; 9] = [
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

/// A connection's peer as the forwarding headers name it, formatted once per connection
/// (every request on it carries the same address).
#[derive(Debug, Clone)]
pub struct Peer {
    /// The address as `X-Forwarded-For` lists it.
    ip: HeaderValue,
    /// The `for=` value of a `Forwarded` element (an IPv6 address quoted in brackets).
    for_: String,
    /// Whether the peer is a trusted proxy (its forwarding headers are extended).
    trusted: bool,
    /// The scheme it spoke to the proxy.
    proto: &'static str,
}

impl Peer {
    /// The peer at `client`, trusted or not, speaking `proto`.
    pub fn new(client: IpAddr, proto: &'static str, trusted: bool) -> Peer {
        let text = client.to_string();
        let for_ = match client {
            IpAddr::V4(_) => text.clone(),
            IpAddr::V6(_) => format!("\"[{text}]\""),
        };
        Peer {
            ip: HeaderValue::from_str(&text)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            for_,
            trusted,
            proto,
        }
    }

    /// Whether the peer is a trusted proxy.
    pub fn trusted(&self) -> bool {
        self.trusted
    }

    /// The scheme the peer spoke to the proxy.
    pub fn proto(&self) -> &'static str {
        self.proto
    }
}

/// From a `trusted` peer (a proxy in `--trusted-proxies`): appends the client's address
/// to `X-Forwarded-For` and `Forwarded`, and sets `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (from the request's `Host`) unless an earlier proxy already did.
/// From any other peer, whatever it sent in those headers is dropped first, so they
/// carry the proxy's own view only.
pub fn add_forwarded(headers: &mut HeaderMap, peer: &Peer) {
    if !peer.trusted {
        for name in [
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &header::FORWARDED,
        ] {
            headers.remove(name);
        }
    }
    // The `Host` value, shared (its bytes are not copied).
    let host_value = headers.get(header::HOST).cloned();
    let host = host_value.as_ref().and_then(|h| h.to_str().ok());
    let set = forwarding(
        peer,
        joined(headers, &X_FORWARDED_FOR),
        joined(headers, &header::FORWARDED),
        host,
    );
    if let Ok(v) = HeaderValue::from_str(&set.for_) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(peer.proto));
    }
    if let Some(v) = host_value.filter(|v| v.to_str().is_ok())
        && !headers.contains_key(&X_FORWARDED_HOST)
    {
        headers.insert(X_FORWARDED_HOST, v);
    }
    if let Ok(v) = HeaderValue::from_str(&set.forwarded) {
        headers.insert(header::FORWARDED, v);
    }
}

/// The values of `X-Forwarded-For` and `Forwarded` for a request from `peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    /// `X-Forwarded-For`: the earlier list (from a trusted peer), then the peer.
    pub for_: String,
    /// `Forwarded`: the earlier elements (from a trusted peer), then the peer's.
    pub forwarded: String,
}

/// What `X-Forwarded-For` and `Forwarded` say of a request from `peer` to `host` (its
/// `Host` header), after the values an earlier trusted proxy set (`prev_for`,
/// `prev_forwarded`; `None` from any other peer). One rule for both of the proxy's
/// paths: [`add_forwarded`] over a header map, and the fast path's raw head
/// (`h1::RequestHead::write_upstream`).
pub fn forwarding(
    peer: &Peer,
    prev_for: Option<String>,
    prev_forwarded: Option<String>,
    host: Option<&str>,
) -> Forwarding {
    let ip = peer.ip.to_str().unwrap_or_default();
    let for_ = match prev_for {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip.to_owned(),
    };
    let mut element = String::with_capacity(64);
    element.push_str("for=");
    element.push_str(&peer.for_);
    element.push_str(";proto=");
    element.push_str(peer.proto);
    if let Some(host) = host.filter(|h| is_quotable(h)) {
        element.push_str(";host=\"");
        element.push_str(host);
        element.push('"');
    }
    let forwarded = match prev_forwarded {
        Some(prev) => format!("{prev}, {element}"),
        None => element,
    };
    Forwarding { for_, forwarded }
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
        add_forwarded(
            &mut h,
            &Peer::new("192.0.2.7".parse().expect("ip"), "http", false),
        );
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
        add_forwarded(
            &mut h,
            &Peer::new("192.0.2.7".parse().expect("ip"), "http", true),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com:8080");
        assert_eq!(
            h["forwarded"],
            "for=10.0.0.1, for=192.0.2.7;proto=http;host=\"example.com:8080\""
        );

        let mut h = map(&[]);
        add_forwarded(
            &mut h,
            &Peer::new("::1".parse().expect("ip"), "http", false),
        );
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=http");
        assert!(!h.contains_key("x-forwarded-host"));
    }
}
