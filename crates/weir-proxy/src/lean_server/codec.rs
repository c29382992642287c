//! The HTTP/1.1 wire format of Weir's own downstream server (RFC 9112), without I/O: request
//! heads parsed with `httparse` — only the requests the server takes itself — and response
//! heads and bodies written as hyper's server writes them (the same framing, `date`,
//! `connection: close` and trailer rules), so a client cannot tell which of the two answered.

use std::cell::RefCell;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    DATE, HOST, MAX_FORWARDS, SET_COOKIE, TE, TRAILER, TRANSFER_ENCODING,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};

use crate::pool::codec::{
    HeadScratch, MAX_HEADERS, ends_chunked, parse_length, record_spans, wire_header_name,
};

/// What the front of the connection's buffer holds.
#[derive(Debug)]
// Taken apart where it is returned; boxing the request would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// Not yet a whole request head.
    Partial,
    /// A request this server serves, its head removed from the buffer.
    Request(RequestHead),
    /// Anything else, left in the buffer untouched: a request with a body, an upgrade,
    /// `expect`, `CONNECT`, HTTP/1.0, HTTP/2's preface, or a head that is malformed or over
    /// the limit. hyper's server takes the connection from there (and answers a bad head with
    /// its `400`, `414` or `431`).
    Other,
}

/// A request head the server serves: HTTP/1.1, no body.
#[derive(Debug)]
pub struct RequestHead {
    /// The request, with an empty body.
    pub request: Request<()>,
    /// The client asked to close the connection after this request (`connection: close`).
    pub close: bool,
}

/// Parses a request head from the front of `buf`. A head longer than `limit` bytes is left to
/// hyper (which refuses it). `scratch` is kept by the caller between requests.
pub fn parse_request(buf: &mut BytesMut, limit: usize, scratch: &mut HeadScratch) -> Parsed {
    let spans = &mut scratch.spans;
    spans.clear();
    let (method, path, used) = {
        let base = buf.as_ptr() as usize;
        let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut request,
            buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(used)) if used <= limit && request.version == Some(1) => {
                record_spans(base, request.headers, spans);
                let (Some(method), Some(path)) = (request.method, request.path) else {
                    return Parsed::Other;
                };
                let Ok(method) = Method::from_bytes(method.as_bytes()) else {
                    return Parsed::Other;
                };
                (method, (path.as_ptr() as usize - base, path.len()), used)
            }
            Ok(httparse::Status::Partial) if buf.len() <= limit => return Parsed::Partial,
            _ => return Parsed::Other,
        }
    };
    if method == Method::CONNECT {
        return Parsed::Other;
    }
    // Decided on the raw bytes, so that a request left to hyper is still in the buffer whole.
    let mut close = false;
    for &(name_at, name_len, value_at, value_len) in spans.iter() {
        let name = &buf[name_at..name_at + name_len];
        let value = &buf[value_at..value_at + value_len];
        if name.eq_ignore_ascii_case(b"content-length") {
            if value != b"0" {
                return Parsed::Other;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Parsed::Other;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Other;
                }
                close |= token.eq_ignore_ascii_case(b"close");
            }
        }
    }
    let head = buf.split_to(used).freeze();
    match build_request(&head, method, path, scratch) {
        Some(request) => Parsed::Request(RequestHead { request, close }),
        None => {
            // Not a head the `http` types accept: back in the buffer, for hyper to answer.
            let mut restored = BytesMut::with_capacity(head.len() + buf.len());
            restored.extend_from_slice(&head);
            restored.extend_from_slice(buf);
            *buf = restored;
            Parsed::Other
        }
    }
}

fn build_request(
    head: &Bytes,
    method: Method,
    path: (usize, usize),
    scratch: &mut HeadScratch,
) -> Option<Request<()>> {
    let uri = Uri::from_maybe_shared(head.slice(path.0..path.0 + path.1)).ok()?;
    // Room for what the proxy adds on the way up (`x-forwarded-proto`, `x-request-id`,
    // `x-envoy-expected-rq-timeout-ms`, ...) without growing the map, which rehashes every entry.
    let mut headers = scratch.header_map(scratch.spans.len() + 6);
    for &(name_at, name_len, value_at, value_len) in &scratch.spans {
        let name = wire_header_name(&head[name_at..name_at + name_len]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_at + value_len)).ok()?;
        headers.append(name, value);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some(request)
}

/// What is known of a response body's length before it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// The body has already ended.
    Ended,
    /// Exactly this many bytes.
    Known(u64),
    /// Not known.
    Unknown,
}

/// How a response body is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes (after the head says so, or none for `HEAD`, `204`, `304`).
    Length(u64),
    /// Chunks; trailers only with a name the response's `trailer` header lists.
    Chunked {
        /// The trailer names the response announced.
        trailers: Vec<HeaderName>,
    },
    /// Everything until the connection closes.
    UntilClose,
}

/// A response head as written.
#[derive(Debug)]
pub struct ResponseHead {
    /// How its body goes out.
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// A response this server will not write (hyper's server refuses the same ones).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// An informational status: one response per request, so it cannot be followed by another.
    #[error("a 1xx response cannot be sent as a request's answer")]
    Informational,
    /// Two `content-length` values that differ, or one that is not a number.
    #[error("the response has an invalid content-length")]
    BadLength,
}

/// Writes the head of a response to a `method` request (HTTP/1.1), given what is known of the
/// body's length; `keep_alive` is false when the connection closes after it (then the head says
/// `connection: close`). Nothing is written if it fails.
pub fn encode_response(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    method: &Method,
    length: BodyLength,
    keep_alive: bool,
) -> Result<ResponseHead, EncodeError> {
    let status = parts.status;
    if status.is_informational() {
        return Err(EncodeError::Informational);
    }
    let start = out.len();
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let head_only = *method == Method::HEAD;
    let no_body_status = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let may_chunk = !head_only && !no_body_status;
    let may_have_length = !no_body_status;

    let mut framing: Option<Framing> = None;
    let mut length_value: Option<u64> = None;
    let mut chunked_last = false;
    let mut trailers: Vec<HeaderName> = Vec::new();
    let mut announced_trailers = false;
    let mut wrote_date = false;
    let mut close = !keep_alive;
    let mut close_written = false;
    // The name whose values are being joined on one line (`connection`, `transfer-encoding`,
    // `trailer`, as hyper writes them).
    let mut joining: Option<&HeaderName> = None;
    for (name, value) in &parts.headers {
        if joining.is_some_and(|j| j != name) {
            if joining == Some(&TRANSFER_ENCODING) && !chunked_last {
                out.extend_from_slice(b", chunked");
            }
            out.extend_from_slice(b"\r\n");
            joining = None;
        }
        if *name == CONTENT_LENGTH {
            match length {
                // The body's own length wins; the header's first value is written as it is.
                BodyLength::Known(n) => {
                    if framing.is_none() {
                        framing = Some(Framing::Length(n));
                        write_line(out, name, value);
                    }
                }
                BodyLength::Unknown => {
                    let Ok(declared) = parse_length(value.as_bytes()) else {
                        out.truncate(start);
                        return Err(EncodeError::BadLength);
                    };
                    match length_value {
                        Some(previous) if previous != declared => {
                            out.truncate(start);
                            return Err(EncodeError::BadLength);
                        }
                        Some(_) => {}
                        None => {
                            length_value = Some(declared);
                            framing = Some(Framing::Length(declared));
                            write_line(out, name, value);
                        }
                    }
                }
                // No body: only the answer to HEAD keeps the length it describes.
                BodyLength::Ended => {
                    if head_only && framing.is_none() {
                        framing = Some(Framing::Length(0));
                        write_line(out, name, value);
                    }
                }
            }
            continue;
        }
        if *name == TRANSFER_ENCODING || *name == TRAILER {
            if !may_chunk {
                continue;
            }
            if *name == TRANSFER_ENCODING {
                chunked_last = ends_chunked(value.as_bytes());
                framing = Some(Framing::Chunked { trailers: Vec::new() });
            } else {
                announced_trailers = true;
                trailers.extend(
                    value
                        .as_bytes()
                        .split(|b| *b == b',')
                        .filter_map(|n| HeaderName::from_bytes(n.trim_ascii()).ok()),
                );
            }
            join(out, &mut joining, name, value);
            continue;
        }
        if *name == CONNECTION {
            let closes = value
                .as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
            close |= closes;
            close_written |= closes;
            join(out, &mut joining, name, value);
            continue;
        }
        wrote_date |= *name == DATE;
        write_line(out, name, value);
    }
    if let Some(j) = joining {
        if *j == TRANSFER_ENCODING && !chunked_last {
            out.extend_from_slice(b", chunked");
        }
        out.extend_from_slice(b"\r\n");
    }
    let mut framing = match framing {
        Some(f) => f,
        None => match length {
            BodyLength::Unknown if may_chunk => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked { trailers: Vec::new() }
            }
            BodyLength::Unknown => Framing::UntilClose,
            BodyLength::Ended | BodyLength::Known(0) => {
                if may_have_length && !head_only {
                    out.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::Length(0)
            }
            BodyLength::Known(n) => {
                if may_have_length {
                    out.extend_from_slice(b"content-length: ");
                    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                Framing::Length(n)
            }
        },
    };
    if head_only || no_body_status {
        framing = Framing::Length(0);
    }
    if let Framing::Chunked { trailers: allowed } = &mut framing
        && announced_trailers
    {
        *allowed = trailers;
    }
    if close && !close_written {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        with_date(|date| out.extend_from_slice(date));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let keep_alive = !close && framing != Framing::UntilClose;
    Ok(ResponseHead { framing, keep_alive })
}

fn write_line(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes `value` on the line of `name` being joined, or opens that line.
fn join<'a>(
    out: &mut Vec<u8>,
    joining: &mut Option<&'a HeaderName>,
    name: &'a HeaderName,
    value: &HeaderValue,
) {
    if joining.is_some() {
        out.extend_from_slice(b", ");
    } else {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        *joining = Some(name);
    }
    out.extend_from_slice(value.as_bytes());
}

/// Writes a response body's frames in its framing.
#[derive(Debug)]
pub struct BodyWriter {
    framing: Framing,
    /// Bytes still owed, for a length-framed body.
    remaining: u64,
    ended: bool,
}

/// Bytes of body to write: a prefix and suffix in the output buffer around `data`.
#[derive(Debug)]
pub struct Piece {
    /// The body bytes (possibly cut to what the length allows).
    pub data: Bytes,
    /// Written after `data` (a chunk's line end).
    pub suffix: &'static [u8],
}

impl BodyWriter {
    /// A writer for `framing`.
    pub fn new(framing: Framing) -> Self {
        let remaining = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        BodyWriter {
            framing,
            remaining,
            ended: false,
        }
    }

    /// Frames `data`: a chunk's size line goes into `out`, then the returned piece follows it
    /// (`None` when nothing is to be written: an empty frame, or a body longer than its length,
    /// whose excess is dropped as hyper drops it).
    pub fn data(&mut self, out: &mut Vec<u8>, mut data: Bytes) -> Option<Piece> {
        if data.is_empty() {
            return None;
        }
        match &self.framing {
            Framing::Length(_) => {
                if self.remaining == 0 {
                    return None;
                }
                if data.len() as u64 > self.remaining {
                    data.truncate(self.remaining as usize);
                }
                self.remaining -= data.len() as u64;
                Some(Piece { data, suffix: b"" })
            }
            Framing::Chunked { .. } => {
                // Writing to a Vec cannot fail.
                let _ = write!(out, "{:x}\r\n", data.len());
                Some(Piece {
                    data,
                    suffix: b"\r\n",
                })
            }
            Framing::UntilClose => Some(Piece { data, suffix: b"" }),
        }
    }

    /// Ends the body (with `trailers`, for a chunked one that announced them); false if the body
    /// ended short of its length, and the connection cannot be reused.
    pub fn finish(&mut self, out: &mut Vec<u8>, trailers: Option<&HeaderMap>) -> bool {
        self.ended = true;
        match &self.framing {
            Framing::Length(_) => self.remaining == 0,
            Framing::Chunked { trailers: allowed } => {
                out.extend_from_slice(b"0\r\n");
                if let Some(trailers) = trailers {
                    for (name, value) in trailers {
                        if allowed.contains(name) && trailer_allowed(name) {
                            write_line(out, name, value);
                        }
                    }
                }
                out.extend_from_slice(b"\r\n");
                true
            }
            Framing::UntilClose => true,
        }
    }

    /// Whether the framing ended: the connection may carry another response after this one.
    pub fn reusable(&self) -> bool {
        self.ended && self.framing != Framing::UntilClose && (self.remaining == 0)
    }
}

/// Fields a trailer may not carry (RFC 9110 §6.5.1, as hyper filters them).
fn trailer_allowed(name: &HeaderName) -> bool {
    !matches!(
        *name,
        AUTHORIZATION
            | CACHE_CONTROL
            | CONTENT_ENCODING
            | CONTENT_LENGTH
            | CONTENT_RANGE
            | CONTENT_TYPE
            | HOST
            | MAX_FORWARDS
            | SET_COOKIE
            | TRAILER
            | TRANSFER_ENCODING
            | TE
    )
}

/// The length of an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
const DATE_LEN: usize = 29;

thread_local! {
    /// The `date` value of the current second, formatted once per second per thread.
    static CACHED_DATE: RefCell<(u64, [u8; DATE_LEN])> = const { RefCell::new((u64::MAX, [0; DATE_LEN])) };
}

/// Calls `f` with the current time as an HTTP date.
fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED_DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == DATE_LEN {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = second;
            }
        }
        f(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use http::Response;

    use super::*;

    fn parse(text: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(text);
        let parsed = parse_request(&mut buf, 8192, &mut HeadScratch::default());
        (parsed, buf)
    }

    fn request(text: &str) -> (RequestHead, BytesMut) {
        match parse(text) {
            (Parsed::Request(head), rest) => (head, rest),
            (other, _) => panic!("expected a request from {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_request_without_a_body_is_parsed_and_leaves_the_next_one() {
        let (head, rest) =
            request("GET /a/b?c=d HTTP/1.1\r\nHost: svc:80\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next");
        let req = head.request;
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/a/b?c=d");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "svc:80");
        let two: Vec<_> = req.headers().get_all("x-two").iter().collect();
        assert_eq!(two, ["1", "2"]);
        assert!(!head.close);
        assert_eq!(&rest[..], b"GET /next");

        let (head, _) = request(
            "DELETE http://svc.example:8080/x HTTP/1.1\r\ncontent-length: 0\r\nConnection: keep-alive, Close\r\n\r\n",
        );
        assert_eq!(
            head.request.uri().authority().map(|a| a.as_str()),
            Some("svc.example:8080")
        );
        assert!(head.close, "connection: close is seen among other tokens");
    }

    #[test]
    fn a_head_is_parsed_only_when_whole() {
        let (parsed, rest) = parse("GET / HTTP/1.1\r\nhost: a\r\n");
        assert!(matches!(parsed, Parsed::Partial));
        assert_eq!(rest.len(), 25, "nothing is taken from an incomplete head");
    }

    #[test]
    fn requests_the_server_does_not_take_are_left_whole_for_hyper() {
        for text in [
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET /ws HTTP/1.1\r\nhost: a\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: a\r\nupgrade: h2c\r\n\r\n",
            "PUT / HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 0\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n",
            "GET / HTTP/1.0\r\nhost: a\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\r\nbad header\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: a\r\ncontent-length: x\r\n\r\n",
            "G\x01T / HTTP/1.1\r\n\r\n",
        ] {
            let (parsed, rest) = parse(text);
            assert!(
                matches!(parsed, Parsed::Other),
                "{text:?} should go to hyper, got {parsed:?}"
            );
            assert_eq!(&rest[..], text.as_bytes(), "{text:?} is left whole");
        }
        // Over the limit, whole or not.
        let long = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(9000));
        assert!(matches!(parse(&long).0, Parsed::Other));
        assert!(matches!(parse(&long[..8500]).0, Parsed::Other));
        // More headers than the parser keeps.
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "x: y\r\n".repeat(MAX_HEADERS + 1));
        assert!(matches!(parse(&many).0, Parsed::Other));
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> http::response::Parts {
        let mut builder = Response::builder().status(status);
        for (n, v) in headers {
            builder = builder.header(*n, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn encode(
        parts: &http::response::Parts,
        method: Method,
        length: BodyLength,
        keep_alive: bool,
    ) -> (String, ResponseHead) {
        let mut out = Vec::new();
        let head = encode_response(&mut out, parts, &method, length, keep_alive).unwrap();
        (String::from_utf8(out).unwrap(), head)
    }

    fn without_date(text: &str) -> String {
        text.lines()
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_response_head_carries_its_length_and_a_date() {
        let (text, head) = encode(
            &response(200, &[("server", "weir")]),
            Method::GET,
            BodyLength::Known(5),
            true,
        );
        assert_eq!(
            without_date(&text),
            "HTTP/1.1 200 OK\nserver: weir\ncontent-length: 5\n"
        );
        let date = text.lines().find_map(|l| l.strip_prefix("date: ")).unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);

        // The upstream's own length and date are kept as they are.
        let parts = response(
            404,
            &[("content-length", "3"), ("date", "Sun, 06 Nov 1994 08:49:37 GMT")],
        );
        let (text, _) = encode(&parts, Method::GET, BodyLength::Known(3), true);
        assert_eq!(
            text,
            "HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
        );
    }

    #[test]
    fn framing_follows_hypers_server() {
        let plain = response(200, &[]);
        // Unknown length: chunked.
        let (text, head) = encode(&plain, Method::GET, BodyLength::Unknown, true);
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert_eq!(head.framing, Framing::Chunked { trailers: vec![] });
        // An ended body: content-length 0, except for HEAD.
        let (text, head) = encode(&plain, Method::GET, BodyLength::Ended, true);
        assert!(text.contains("content-length: 0\r\n"), "{text}");
        assert_eq!(head.framing, Framing::Length(0));
        let (text, _) = encode(&plain, Method::HEAD, BodyLength::Ended, true);
        assert!(!text.contains("content-length"), "{text}");
        // HEAD keeps the length the upstream declared, and sends no body.
        let (text, head) = encode(
            &response(200, &[("content-length", "42")]),
            Method::HEAD,
            BodyLength::Ended,
            true,
        );
        assert!(text.contains("content-length: 42\r\n"), "{text}");
        assert_eq!(head.framing, Framing::Length(0));
        // 204 and 304: no body, no length added, no transfer coding.
        let (text, head) = encode(&response(204, &[]), Method::GET, BodyLength::Unknown, true);
        assert!(
            !text.contains("content-length") && !text.contains("transfer-encoding"),
            "{text}"
        );
        assert_eq!(head.framing, Framing::Length(0));
        let (_, head) = encode(
            &response(304, &[("transfer-encoding", "chunked")]),
            Method::GET,
            BodyLength::Unknown,
            true,
        );
        assert_eq!(head.framing, Framing::Length(0));
        // A declared length with a body of unknown length frames it.
        let (text, head) = encode(
            &response(200, &[("content-length", "7")]),
            Method::GET,
            BodyLength::Unknown,
            true,
        );
        assert!(
            text.contains("content-length: 7\r\n") && !text.contains("chunked"),
            "{text}"
        );
        assert_eq!(head.framing, Framing::Length(7));
        // A transfer coding that does not end in chunked gets it added.
        let (text, head) = encode(
            &response(200, &[("transfer-encoding", "gzip")]),
            Method::GET,
            BodyLength::Unknown,
            true,
        );
        assert!(text.contains("transfer-encoding: gzip, chunked\r\n"), "{text}");
        assert!(matches!(head.framing, Framing::Chunked { .. }));
        // Trailers announced by name.
        let (_, head) = encode(
            &response(200, &[("trailer", "grpc-status, x-sum")]),
            Method::GET,
            BodyLength::Unknown,
            true,
        );
        assert_eq!(
            head.framing,
            Framing::Chunked {
                trailers: vec![
                    HeaderName::from_static("grpc-status"),
                    HeaderName::from_static("x-sum")
                ]
            }
        );
    }

    #[test]
    fn a_closing_connection_says_so_once() {
        let (text, head) = encode(&response(200, &[]), Method::GET, BodyLength::Known(0), false);
        assert_eq!(text.matches("connection: close\r\n").count(), 1, "{text}");
        assert!(!head.keep_alive);
        let (text, head) = encode(
            &response(200, &[("connection", "close")]),
            Method::GET,
            BodyLength::Known(0),
            true,
        );
        assert_eq!(text.matches("connection: close").count(), 1, "{text}");
        assert!(
            !head.keep_alive,
            "the response's own connection: close ends the connection"
        );
        let (text, _) = encode(
            &response(200, &[("connection", "keep-alive"), ("connection", "x")]),
            Method::GET,
            BodyLength::Known(0),
            false,
        );
        assert!(
            text.contains("connection: keep-alive, x\r\n"),
            "values of one name on one line: {text}"
        );
        assert_eq!(text.matches("connection: close\r\n").count(), 1, "{text}");
    }

    #[test]
    fn bad_responses_are_refused_without_writing() {
        let mut out = b"kept".to_vec();
        let conflicting = response(200, &[("content-length", "1"), ("content-length", "2")]);
        assert_eq!(
            encode_response(&mut out, &conflicting, &Method::GET, BodyLength::Unknown, true).unwrap_err(),
            EncodeError::BadLength
        );
        let bad = response(200, &[("content-length", "-1")]);
        assert_eq!(
            encode_response(&mut out, &bad, &Method::GET, BodyLength::Unknown, true).unwrap_err(),
            EncodeError::BadLength
        );
        assert_eq!(
            encode_response(
                &mut out,
                &response(103, &[]),
                &Method::GET,
                BodyLength::Ended,
                true
            )
            .unwrap_err(),
            EncodeError::Informational
        );
        assert_eq!(out, b"kept");
    }

    #[test]
    fn bodies_are_written_in_their_framing() {
        let mut out = Vec::new();
        let mut length = BodyWriter::new(Framing::Length(5));
        let piece = length.data(&mut out, Bytes::from_static(b"hel")).unwrap();
        assert_eq!((&piece.data[..], piece.suffix), (&b"hel"[..], &b""[..]));
        assert!(!length.reusable());
        let piece = length.data(&mut out, Bytes::from_static(b"lo, world")).unwrap();
        assert_eq!(&piece.data[..], b"lo", "cut to the length");
        assert!(length.data(&mut out, Bytes::from_static(b"more")).is_none());
        assert!(length.finish(&mut out, None));
        assert!(length.reusable());
        assert!(out.is_empty());

        let mut short = BodyWriter::new(Framing::Length(5));
        short.data(&mut out, Bytes::from_static(b"hi"));
        assert!(!short.finish(&mut out, None), "a body short of its length");
        assert!(!short.reusable());

        let mut chunked = BodyWriter::new(Framing::Chunked {
            trailers: vec![
                HeaderName::from_static("x-sum"),
                HeaderName::from_static("content-type"),
            ],
        });
        let piece = chunked.data(&mut out, Bytes::from(vec![b'a'; 26])).unwrap();
        assert_eq!(out, b"1a\r\n");
        assert_eq!(piece.suffix, b"\r\n");
        assert!(
            chunked.data(&mut out, Bytes::new()).is_none(),
            "an empty frame is not a last chunk"
        );
        out.clear();
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("9"));
        trailers.insert("x-unannounced", HeaderValue::from_static("1"));
        trailers.insert("content-type", HeaderValue::from_static("text/plain"));
        assert!(chunked.finish(&mut out, Some(&trailers)));
        assert_eq!(
            out, b"0\r\nx-sum: 9\r\n\r\n",
            "only announced trailers a trailer may carry"
        );
        assert!(chunked.reusable());

        let mut until_close = BodyWriter::new(Framing::UntilClose);
        assert!(until_close.data(&mut out, Bytes::from_static(b"x")).is_some());
        until_close.finish(&mut out, None);
        assert!(!until_close.reusable());
    }
}
