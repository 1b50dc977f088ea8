//! HTTP/1.1 at the byte level, for the proxy's fast path ([`super::fast`]): request and
//! response heads parsed with `httparse` into offsets over the received bytes, the
//! framing of a message (RFC 9112 §6), heads written back out with the hop-by-hop
//! headers left behind, and a scanner that finds where a chunked body ends so that it
//! can be relayed as it came. Pure functions over bytes; no I/O.
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::headers::{self, Peer};

/// The largest request head the fast path parses; a longer one goes to hyper.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// The largest response head accepted from a node.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Header lines per head the fast path parses (a request with more goes to hyper).
pub const MAX_HEADERS: usize = 64;

/// One header line, as ranges of its head's bytes.
#[derive(Debug, Clone)]
pub struct Field {
    name: Range<usize>,
    value: Range<usize>,
}

/// Why bytes cannot be taken as a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Not HTTP/1.x as written.
    #[error("malformed HTTP/1 head: {0}")]
    Syntax(String),
    /// The head does not fit.
    #[error("the head is longer than {0} bytes")]
    TooLong(usize),
    /// The framing cannot be told (conflicting or unreadable lengths, unknown codings).
    #[error("unusable message framing: {0}")]
    Framing(&'static str),
}

/// A parsed request head that the fast path can forward: HTTP/1.1 in origin form, its
/// body (if any) framed by one `Content-Length`, no `Transfer-Encoding`, `Expect` or
/// `Upgrade`.
#[derive(Debug)]
pub struct RequestHead {
    bytes: Bytes,
    method: Range<usize>,
    target: Range<usize>,
    fields: Vec<Field>,
    /// The body's length.
    pub content_length: u64,
    /// The client asked to close the connection after this exchange.
    pub close: bool,
}

/// What a client's bytes hold.
#[derive(Debug)]
pub enum RequestParse {
    /// A complete head, the number of bytes it took.
    Head(RequestHead, usize),
    /// Not enough bytes yet.
    Partial,
    /// Something the fast path leaves to hyper (which serves it, or answers the error).
    Other,
}

/// Parses the request head at the start of `buf`.
pub fn parse_request(buf: &[u8]) -> RequestParse {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_HEAD => {
            return RequestParse::Partial;
        }
        _ => return RequestParse::Other,
    };
    if len > MAX_REQUEST_HEAD || req.version != Some(1) {
        return RequestParse::Other;
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return RequestParse::Other;
    };
    if !target.starts_with('/') {
        return RequestParse::Other;
    }
    let at = |s: &[u8]| offsets(buf, s);
    let mut fields = Vec::with_capacity(req.headers.len());
    let mut content_length: Option<u64> = None;
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return RequestParse::Other;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = parse_length(h.value) else {
                return RequestParse::Other;
            };
            if content_length.is_some_and(|c| c != n) {
                return RequestParse::Other;
            }
            content_length = Some(n);
        }
        if name.eq_ignore_ascii_case(b"connection") && has_token(h.value, b"close") {
            close = true;
        }
        fields.push(Field {
            name: at(name),
            value: at(h.value),
        });
    }
    let method = at(method.as_bytes());
    let target = at(target.as_bytes());
    let head = RequestHead {
        bytes: Bytes::copy_from_slice(&buf[..len]),
        method,
        target,
        fields,
        content_length: content_length.unwrap_or(0),
        close,
    };
    RequestParse::Head(head, len)
}

impl RequestHead {
    /// The method, as sent.
    pub fn method(&self) -> &[u8] {
        &self.bytes[self.method.clone()]
    }

    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| self.bytes[f.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .and_then(|f| std::str::from_utf8(&self.bytes[f.value.clone()]).ok())
    }

    /// Whether the method is idempotent (RFC 9110 §9.2.2).
    pub fn idempotent(&self) -> bool {
        matches!(
            self.method(),
            b"GET" | b"HEAD" | b"PUT" | b"DELETE" | b"OPTIONS" | b"TRACE"
        )
    }

    /// Whether the method is `HEAD` (the answer has no body whatever it says).
    pub fn is_head(&self) -> bool {
        self.method() == b"HEAD"
    }

    fn values<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |f| self.bytes[f.name.clone()].eq_ignore_ascii_case(name))
            .map(|f| &self.bytes[f.value.clone()])
    }

    /// The head to send to a node: the request line and every end-to-end header as the
    /// client sent them, the forwarding headers for `peer` (as
    /// [`headers::add_forwarded`] sets them), and `Host: {authority}` if the client sent
    /// none. Appended to `out`.
    pub fn write_upstream(&self, peer: &Peer, authority: &str, out: &mut BytesMut) {
        out.reserve(self.bytes.len() + 160);
        out.put_slice(self.method());
        out.put_u8(b' ');
        out.put_slice(&self.bytes[self.target.clone()]);
        out.put_slice(b" HTTP/1.1\r\n");
        let named = connection_named(self.values(b"connection"));
        let mut host: Option<&[u8]> = None;
        let (mut has_proto, mut has_host) = (false, false);
        for f in &self.fields {
            let name = &self.bytes[f.name.clone()];
            let value = &self.bytes[f.value.clone()];
            if is_hop_by_hop(name, &named) {
                continue;
            }
            if is_forwarding(name) {
                // A trusted proxy's proto and host stay; the lists are extended below.
                let kept = peer.trusted()
                    && (name.eq_ignore_ascii_case(b"x-forwarded-proto")
                        || name.eq_ignore_ascii_case(b"x-forwarded-host"));
                if !kept {
                    continue;
                }
                has_proto |= name.eq_ignore_ascii_case(b"x-forwarded-proto");
                has_host |= name.eq_ignore_ascii_case(b"x-forwarded-host");
            }
            if name.eq_ignore_ascii_case(b"host") {
                host.get_or_insert(value);
            }
            put_field(out, name, value);
        }
        if host.is_none() {
            put_field(out, b"host", authority.as_bytes());
        }
        let text = |name: &'static [u8]| -> Option<String> {
            if !peer.trusted() {
                return None;
            }
            let parts: Vec<&str> = self
                .values(name)
                .filter_map(|v| std::str::from_utf8(v).ok())
                .collect();
            (!parts.is_empty()).then(|| parts.join(", "))
        };
        let host = host
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| h.is_ascii());
        let set = headers::forwarding(peer, text(b"x-forwarded-for"), text(b"forwarded"), host);
        put_field(out, b"x-forwarded-for", set.for_.as_bytes());
        if !has_proto {
            put_field(out, b"x-forwarded-proto", peer.proto().as_bytes());
        }
        if let Some(h) = host.filter(|_| !has_host) {
            put_field(out, b"x-forwarded-host", h.as_bytes());
        }
        put_field(out, b"forwarded", set.forwarded.as_bytes());
        out.put_slice(b"\r\n");
    }
}

/// How the body of a response is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (an answer to `HEAD`, a `204`, a `304`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the node closes the connection.
    UntilClose,
}

/// A parsed response head from a node.
#[derive(Debug)]
pub struct ResponseHead {
    bytes: Bytes,
    reason: Range<usize>,
    fields: Vec<Field>,
    /// The status code.
    pub status: u16,
    /// How its body is delimited.
    pub framing: Framing,
    /// Whether the node's connection may carry another request afterwards.
    pub reusable: bool,
}

/// Parses the response head at the start of `buf`: `Ok(None)` until it is complete. The
/// answer to a `HEAD` request has no body whatever its headers say.
pub fn parse_response(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<(ResponseHead, usize)>, Invalid> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS * 2];
    let mut resp = httparse::Response::new(&mut storage);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(Invalid::TooLong(MAX_RESPONSE_HEAD)),
        Err(e) => return Err(Invalid::Syntax(e.to_string())),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err(Invalid::Syntax("no status line".into()));
    };
    let at = |s: &[u8]| offsets(buf, s);
    let mut fields = Vec::with_capacity(resp.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut coded = false;
    let mut close = false;
    let mut keep_alive = false;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(h.value).ok_or(Invalid::Framing("unreadable Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Invalid::Framing("conflicting Content-Length"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            coded = true;
            // Only the last coding decides; chunked must be last to delimit the body.
            chunked = last_token(h.value).is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= has_token(h.value, b"close");
            keep_alive |= has_token(h.value, b"keep-alive");
        }
        fields.push(Field {
            name: at(name),
            value: at(h.value),
        });
    }
    let reason = at(resp.reason.unwrap_or("").as_bytes());
    let framing = if head_request || status == 204 || status == 304 || (100..200).contains(&status)
    {
        Framing::Empty
    } else if coded {
        if !chunked {
            return Err(Invalid::Framing(
                "a transfer coding other than chunked last",
            ));
        }
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    let persistent = if version == 1 {
        !close
    } else {
        keep_alive && !close
    };
    let head = ResponseHead {
        bytes: Bytes::copy_from_slice(&buf[..len]),
        reason,
        fields,
        status,
        framing,
        reusable: persistent && framing != Framing::UntilClose,
    };
    Ok(Some((head, len)))
}

impl ResponseHead {
    /// The head to send to the client: the status line, every end-to-end header as the
    /// node sent it, the framing the relayed body keeps (`Transfer-Encoding: chunked`
    /// re-added for a chunked body; `Connection: close` for a body that ends with the
    /// node's connection, or when `close`), and a `Date` if the node sent none.
    pub fn write_downstream(&self, close: bool, out: &mut BytesMut) {
        out.reserve(self.bytes.len() + 64);
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(&status_digits(self.status));
        out.put_u8(b' ');
        out.put_slice(&self.bytes[self.reason.clone()]);
        out.put_slice(b"\r\n");
        let named = connection_named(
            self.fields
                .iter()
                .filter(|f| self.bytes[f.name.clone()].eq_ignore_ascii_case(b"connection"))
                .map(|f| &self.bytes[f.value.clone()]),
        );
        let mut dated = false;
        for f in &self.fields {
            let name = &self.bytes[f.name.clone()];
            if is_hop_by_hop(name, &named)
                || (self.framing == Framing::Chunked
                    && name.eq_ignore_ascii_case(b"content-length"))
            {
                continue;
            }
            dated |= name.eq_ignore_ascii_case(b"date");
            put_field(out, name, &self.bytes[f.value.clone()]);
        }
        if !dated {
            let now = httpdate::fmt_http_date(std::time::SystemTime::now());
            put_field(out, b"date", now.as_bytes());
        }
        if self.framing == Framing::Chunked {
            put_field(out, b"transfer-encoding", b"chunked");
        }
        if close || self.framing == Framing::UntilClose {
            put_field(out, b"connection", b"close");
        }
        out.put_slice(b"\r\n");
    }
}

/// A complete answer of the proxy's own (an error in the API's JSON shape).
pub fn write_own(status: u16, reason: &str, body: &[u8], close: bool, out: &mut BytesMut) {
    out.reserve(body.len() + 160);
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(&status_digits(status));
    out.put_u8(b' ');
    out.put_slice(reason.as_bytes());
    out.put_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.put_slice(body.len().to_string().as_bytes());
    out.put_slice(b"\r\ndate: ");
    out.put_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    if close {
        out.put_slice(b"\r\nconnection: close");
    }
    out.put_slice(b"\r\n\r\n");
    out.put_slice(body);
}

/// Where `part` (a slice `httparse` took from `buf`) is in `buf`; an empty range for a
/// slice from anywhere else (an empty reason phrase may be a static `""`).
fn offsets(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    if start <= buf.len() && part.len() <= buf.len() - start {
        start..start + part.len()
    } else {
        0..0
    }
}

/// A status code's three digits (no allocation: this runs once per answer).
fn status_digits(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

fn put_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// The headers `Connection` names (beyond the fixed hop-by-hop set), lower-cased.
fn connection_named<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
    let mut named = Vec::new();
    for v in values {
        for t in v.split(|&b| b == b',') {
            let t = t.trim_ascii();
            if !t.is_empty()
                && !t.eq_ignore_ascii_case(b"close")
                && !t.eq_ignore_ascii_case(b"keep-alive")
            {
                named.push(t.to_ascii_lowercase());
            }
        }
    }
    named
}

fn is_hop_by_hop(name: &[u8], named: &[Vec<u8>]) -> bool {
    headers::HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_str().as_bytes()))
        || named.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// The forwarding headers, which [`RequestHead::write_upstream`] writes itself.
fn is_forwarding(name: &[u8]) -> bool {
    [
        &b"x-forwarded-for"[..],
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n))
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn last_token(value: &[u8]) -> Option<&[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .rfind(|t| !t.is_empty())
}

/// A `Content-Length` value: digits only (a list of equal values, as some senders
/// repeat it, counts once).
fn parse_length(value: &[u8]) -> Option<u64> {
    let mut found: Option<u64> = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(part).ok()?.parse().ok()?;
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// Finds the end of a chunked body in bytes fed to it piece by piece (RFC 9112 §7.1:
/// chunk sizes in hex with optional extensions, data, CRLF, and after the last chunk
/// optional trailer lines and an empty line).
#[derive(Debug, Clone, Default)]
pub struct ChunkedEnd {
    state: Chunk,
    size: u64,
    digits: u8,
    line: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk size's hex digits.
    #[default]
    Size,
    /// After the size: extensions up to the line's end.
    Extension,
    /// Expecting the LF that ends the size line.
    SizeLf,
    /// Inside the chunk's data (`size` bytes left).
    Data,
    /// Expecting the CR after the data.
    DataCr,
    /// Expecting the LF after the data.
    DataLf,
    /// After the last chunk: at the start of a trailer line, or the empty line.
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// Expecting the LF of the final empty line.
    EndLf,
    /// The body has ended.
    Done,
}

/// Longest chunk-size line or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

impl ChunkedEnd {
    /// Takes the next bytes of the body: `Ok(Some(n))` when the body ends after the first
    /// `n` of them, `Ok(None)` when it goes on past them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, Invalid> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                Chunk::Size => match (b as char).to_digit(16) {
                    Some(d) => {
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err(Invalid::Framing("chunk size too large"));
                        }
                        self.size = self.size * 16 + u64::from(d);
                    }
                    None if self.digits == 0 => {
                        return Err(Invalid::Framing("chunk size missing"));
                    }
                    None if b == b'\r' => self.state = Chunk::SizeLf,
                    None if b == b';' || b == b' ' || b == b'\t' => {
                        self.state = Chunk::Extension;
                        self.line = 0;
                    }
                    None => return Err(Invalid::Framing("bad chunk size")),
                },
                Chunk::Extension => {
                    self.line += 1;
                    if self.line > MAX_CHUNK_LINE {
                        return Err(Invalid::Framing("chunk extension too long"));
                    }
                    if b == b'\r' {
                        self.state = Chunk::SizeLf;
                    } else if b == b'\n' {
                        return Err(Invalid::Framing("bare LF in chunk size line"));
                    }
                }
                Chunk::SizeLf => {
                    if b != b'\n' {
                        return Err(Invalid::Framing("chunk size line not ended by CRLF"));
                    }
                    self.digits = 0;
                    if self.size == 0 {
                        self.state = Chunk::TrailerStart;
                    } else {
                        self.state = Chunk::Data;
                    }
                }
                Chunk::Data => {
                    let left = bytes.len() - i;
                    let take = usize::try_from(self.size).map_or(left, |s| s.min(left));
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = Chunk::DataCr;
                    }
                    continue;
                }
                Chunk::DataCr => {
                    if b != b'\r' {
                        return Err(Invalid::Framing("chunk data not followed by CRLF"));
                    }
                    self.state = Chunk::DataLf;
                }
                Chunk::DataLf => {
                    if b != b'\n' {
                        return Err(Invalid::Framing("chunk data not followed by CRLF"));
                    }
                    self.state = Chunk::Size;
                }
                Chunk::TrailerStart => {
                    if b == b'\r' {
                        self.state = Chunk::EndLf;
                    } else {
                        self.state = Chunk::Trailer;
                        self.line = 1;
                    }
                }
                Chunk::Trailer => {
                    self.line += 1;
                    if self.line > MAX_CHUNK_LINE {
                        return Err(Invalid::Framing("trailer line too long"));
                    }
                    if b == b'\n' {
                        self.state = Chunk::TrailerStart;
                    }
                }
                Chunk::EndLf => {
                    if b != b'\n' {
                        return Err(Invalid::Framing("chunked body not ended by CRLF"));
                    }
                    self.state = Chunk::Done;
                    return Ok(Some(i + 1));
                }
                Chunk::Done => return Ok(Some(i)),
            }
            i += 1;
        }
        Ok((self.state == Chunk::Done).then_some(bytes.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> (RequestHead, usize) {
        match parse_request(raw.as_bytes()) {
            RequestParse::Head(h, n) => (h, n),
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    fn upstream(raw: &str, peer: &Peer) -> String {
        let (h, _) = head(raw);
        let mut out = BytesMut::new();
        h.write_upstream(peer, "10.0.0.9:8080", &mut out);
        String::from_utf8(out.to_vec()).expect("utf-8")
    }

    fn untrusted() -> Peer {
        Peer::new("192.0.2.7".parse().expect("ip"), "http", false)
    }

    #[test]
    fn a_simple_request_is_taken_and_the_rest_is_left_for_hyper() {
        let (h, n) = head("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-PLB-Key: k1\r\n\r\nNEXT");
        assert_eq!(
            n,
            "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-PLB-Key: k1\r\n\r\n".len()
        );
        assert_eq!(
            (h.method(), h.content_length, h.close),
            (&b"GET"[..], 0, false)
        );
        assert_eq!(h.header("x-plb-key"), Some("k1"));
        assert!(h.idempotent() && !h.is_head());
        let (h, _) = head("POST / HTTP/1.1\r\nContent-Length: 12\r\nConnection: close\r\n\r\n");
        assert_eq!(
            (h.content_length, h.close, h.idempotent()),
            (12, true, false)
        );
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            RequestParse::Partial
        ));
        for other in [
            "GET / HTTP/1.0\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(
                matches!(parse_request(other.as_bytes()), RequestParse::Other),
                "{other:?}"
            );
        }
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_REQUEST_HEAD));
        assert!(matches!(
            parse_request(long.as_bytes()),
            RequestParse::Other
        ));
    }

    #[test]
    fn the_upstream_head_drops_hop_by_hop_and_replaces_an_untrusted_peers_forwarding() {
        let out = upstream(
            "GET /p HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, x-secret\r\n\
             Keep-Alive: timeout=5\r\nX-Secret: 1\r\nTE: trailers\r\nX-Kept: yes\r\n\
             X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: admin.internal\r\nForwarded: for=10.0.0.1\r\n\r\n",
            &untrusted(),
        );
        assert_eq!(
            out,
            "GET /p HTTP/1.1\r\nHost: example.com\r\nX-Kept: yes\r\n\
             x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: example.com\r\n\
             forwarded: for=192.0.2.7;proto=http;host=\"example.com\"\r\n\r\n"
        );
        // No Host: the node's authority.
        let out = upstream("GET / HTTP/1.1\r\n\r\n", &untrusted());
        assert!(out.contains("host: 10.0.0.9:8080\r\n"), "{out}");
        assert!(!out.contains("x-forwarded-host"), "{out}");
    }

    #[test]
    fn the_upstream_head_extends_a_trusted_proxys_forwarding_as_the_header_map_path_does() {
        let raw = "GET / HTTP/1.1\r\nHost: example.com:8080\r\nX-Forwarded-For: 10.0.0.1\r\n\
                   X-Forwarded-For: 10.0.0.2\r\nForwarded: for=10.0.0.1\r\n\
                   X-Forwarded-Proto: https\r\n\r\n";
        let peer = Peer::new("192.0.2.7".parse().expect("ip"), "http", true);
        let out = upstream(raw, &peer);
        // The same values as the HeaderMap path gives.
        let mut map = hyper::HeaderMap::new();
        map.insert("host", "example.com:8080".parse().expect("v"));
        map.append("x-forwarded-for", "10.0.0.1".parse().expect("v"));
        map.append("x-forwarded-for", "10.0.0.2".parse().expect("v"));
        map.insert("forwarded", "for=10.0.0.1".parse().expect("v"));
        map.insert("x-forwarded-proto", "https".parse().expect("v"));
        headers::add_forwarded(&mut map, &peer);
        let out = out.to_ascii_lowercase();
        for name in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "forwarded",
        ] {
            let want = map[name].to_str().expect("text").to_ascii_lowercase();
            assert!(
                out.contains(&format!("{name}: {want}\r\n")),
                "{name}: {want} in {out}"
            );
            assert_eq!(out.matches(&format!("\n{name}: ")).count(), 1, "{out}");
        }
    }

    fn response(raw: &str, head_request: bool) -> ResponseHead {
        parse_response(raw.as_bytes(), head_request)
            .expect("valid")
            .expect("complete")
            .0
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let r = response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false);
        assert_eq!(
            (r.status, r.framing, r.reusable),
            (200, Framing::Length(5), true)
        );
        let r = response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true);
        assert_eq!(r.framing, Framing::Empty);
        let r = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n",
            false,
        );
        assert_eq!(r.framing, Framing::Chunked);
        let r = response("HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!(r.framing, Framing::Empty);
        let r = response("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((r.framing, r.reusable), (Framing::UntilClose, false));
        let r = response(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(!r.reusable);
        let r = response("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        assert!(!r.reusable);
        let r = response(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(r.reusable);
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n", false)
                .expect("partial")
                .is_none()
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/9 200\r\n\r\n",
        ] {
            assert!(parse_response(bad.as_bytes(), false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_downstream_head_keeps_the_framing_and_drops_hop_by_hop() {
        let r = response(
            "HTTP/1.1 200 Fine\r\nDate: Mon, 07 Dec 2026 04:00:00 GMT\r\nContent-Length: 2\r\n\
             Keep-Alive: timeout=5\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nX-End: 2\r\n\r\n",
            false,
        );
        let mut out = BytesMut::new();
        r.write_downstream(false, &mut out);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 200 Fine\r\nDate: Mon, 07 Dec 2026 04:00:00 GMT\r\nContent-Length: 2\r\n\
              X-End: 2\r\n\r\n"
        );
        let r = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        let mut out = BytesMut::new();
        r.write_downstream(true, &mut out);
        let text = String::from_utf8(out.to_vec()).expect("utf-8");
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(text.contains("date: "), "{text}");
        assert!(
            !text.to_ascii_lowercase().contains("content-length"),
            "{text}"
        );
    }

    #[test]
    fn empty_values_and_reasons_are_kept_empty() {
        let (h, _) = head("GET / HTTP/1.1\r\nX-Empty:\r\nHost: t\r\n\r\n");
        let mut out = BytesMut::new();
        h.write_upstream(&untrusted(), "n:1", &mut out);
        assert!(
            out.starts_with(b"GET / HTTP/1.1\r\nX-Empty: \r\nHost: t\r\n"),
            "{out:?}"
        );
        for raw in [
            "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 \r\n\r\n",
        ] {
            let r = response(raw, false);
            let mut out = BytesMut::new();
            r.write_downstream(false, &mut out);
            assert!(out.starts_with(b"HTTP/1.1 200 \r\n"), "{raw:?}: {out:?}");
        }
    }

    /// Bytes from a fixed linear congruential sequence, biased toward HTTP's own.
    fn noise(seed: &mut u64, n: usize) -> Vec<u8> {
        const ALPHABET: &[u8] = b"GET HTTP/1.1\r\n:;0123456789abcdefABCDEF -,chunkedContent-Length";
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = (*seed >> 33) as usize;
                if r.is_multiple_of(8) {
                    (r >> 8) as u8
                } else {
                    ALPHABET[r % ALPHABET.len()]
                }
            })
            .collect()
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parsers() {
        let mut seed = 7;
        let prefixes: [&[u8]; 4] = [
            b"",
            b"GET / HTTP/1.1\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: ",
        ];
        for i in 0..20_000 {
            let mut bytes = prefixes[i % prefixes.len()].to_vec();
            bytes.extend(noise(&mut seed, i % 300));
            if i % 3 == 0 {
                bytes.extend_from_slice(b"\r\n\r\n");
            }
            if let RequestParse::Head(h, n) = parse_request(&bytes) {
                assert!(n <= bytes.len());
                let mut out = BytesMut::new();
                h.write_upstream(&untrusted(), "n:1", &mut out);
            }
            if let Ok(Some((r, n))) = parse_response(&bytes, i % 5 == 0) {
                assert!(n <= bytes.len());
                let mut out = BytesMut::new();
                r.write_downstream(i % 2 == 0, &mut out);
            }
            let mut c = ChunkedEnd::default();
            for piece in bytes.chunks(1 + i % 7) {
                match c.feed(piece) {
                    Ok(Some(n)) => {
                        assert!(n <= piece.len());
                        break;
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn the_end_of_a_chunked_body_is_found_across_pieces() {
        let body =
            b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        let mut whole = ChunkedEnd::default();
        assert_eq!(whole.feed(body), Ok(Some(end)));
        for split in 1..body.len() {
            let mut c = ChunkedEnd::default();
            let (a, b) = body.split_at(split);
            match c.feed(a).expect("valid") {
                Some(n) => assert_eq!(n, end, "split {split}"),
                None => assert_eq!(c.feed(b), Ok(Some(end - split)), "split {split}"),
            }
        }
        let mut c = ChunkedEnd::default();
        assert_eq!(c.feed(b"0\r\n\r\n"), Ok(Some(5)));
        for bad in [
            &b"x\r\n"[..],
            b"4\r\nWikiXX",
            b"4\nWiki",
            b"fffffffffffffffff\r\n",
        ] {
            assert!(ChunkedEnd::default().feed(bad).is_err(), "{bad:?}");
        }
    }
}
