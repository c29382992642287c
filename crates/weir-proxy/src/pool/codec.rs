//! The HTTP/1.1 wire format of Weir's own upstream client (RFC 9112), without I/O: request heads
//! written, response heads parsed with `httparse`, response bodies framed by length, by chunks
//! or by the connection's end.

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

/// At most this many response headers (Envoy's `max_headers_count` default).
pub const MAX_HEADERS: usize = 100;
/// At most this many bytes of response head (Envoy's 60 KiB header limit).
pub const MAX_HEAD_BYTES: usize = 60 * 1024;
/// A chunk-size line longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The head is not HTTP/1.x.
    #[error("the upstream sent a malformed response head: {0}")]
    Malformed(String),
    /// The head is over [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`].
    #[error("the upstream's response head is over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} headers")]
    TooLarge,
    /// `content-length` is not a number, or two of them differ.
    #[error("the upstream sent an invalid content-length")]
    BadLength,
    /// A chunk of a chunked body is malformed.
    #[error("the upstream sent a malformed chunked body: {0}")]
    BadChunk(&'static str),
}

/// Writes the head of a request without a body: request line in origin form, then its headers.
pub fn encode_head(out: &mut Vec<u8>, parts: &http::request::Parts) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // A body-less request whose method usually carries one says so (RFC 9110 §8.6).
    if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH)
        && !parts.headers.contains_key(CONTENT_LENGTH)
        && !parts.headers.contains_key(TRANSFER_ENCODING)
    {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (`HEAD`, `1xx`, `204`, `304`, or a length of 0).
    Empty,
    /// `content-length` bytes.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    /// The status.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The headers, as sent.
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Where a header's name and value sit in a response head.
pub type Span = (usize, usize, usize, usize);

/// What parsing heads on one connection keeps between messages: where the headers of the head
/// being parsed sit, and an emptied header map for the next head to fill (its allocation kept:
/// two allocations and two frees fewer per message).
#[derive(Debug, Default)]
pub struct HeadScratch {
    /// Where each header of the head being parsed sits.
    pub(crate) spans: Vec<Span>,
    spare: Option<HeaderMap>,
}

/// The largest map kept for reuse: room for more headers than heads usually carry, so a
/// connection that once saw a large head does not hold on to its map.
const RECYCLED_CAPACITY: usize = 32;

/// The least room a new map is made with (`HeaderMap` rounds to 12 from 7 up anyway): a map
/// made for a response of few headers is reused for a request, which needs room for the
/// headers the proxy adds too, and growing it would rehash every entry.
const LEAST_CAPACITY: usize = 12;

impl HeadScratch {
    /// Scratch space with room for `spans` headers.
    pub fn with_capacity(spans: usize) -> Self {
        HeadScratch {
            spans: Vec::with_capacity(spans),
            spare: None,
        }
    }

    /// A map with room for `n` headers: the spare one if there is one.
    pub(crate) fn header_map(&mut self, n: usize) -> HeaderMap {
        match self.spare.take() {
            Some(mut map) => {
                map.reserve(n);
                map
            }
            None => HeaderMap::with_capacity(n.max(LEAST_CAPACITY)),
        }
    }

    /// Keeps `headers`, emptied, for the next head (unless it grew past `RECYCLED_CAPACITY`).
    pub fn recycle(&mut self, mut headers: HeaderMap) {
        if headers.capacity() <= RECYCLED_CAPACITY {
            headers.clear();
            self.spare = Some(headers);
        }
    }
}

/// Notes where each parsed header sits in the buffer starting at address `base` (so the
/// values can share the buffer once it is split off).
pub fn record_spans(base: usize, headers: &[httparse::Header<'_>], spans: &mut Vec<Span>) {
    spans.extend(headers.iter().map(|h| {
        (
            h.name.as_ptr() as usize - base,
            h.name.len(),
            h.value.as_ptr() as usize - base,
            h.value.len(),
        )
    }));
}

/// A header name as `httparse` found it in a head (so made of token characters only): the
/// common names are recognised by their length and a few word-wide comparisons, the rest go
/// through [`HeaderName::from_bytes`] (which lowercases a copy and looks it up byte by byte).
pub fn wire_header_name(name: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    match common_name(name) {
        Some(known) => Ok(known),
        None => HeaderName::from_bytes(name),
    }
}

/// `name` if it is one of the header names nearly every head carries, in any letter case
/// (`name` made of token characters).
fn common_name(name: &[u8]) -> Option<HeaderName> {
    use http::header::{ACCEPT, CONTENT_TYPE, DATE, HOST, SERVER, USER_AGENT};
    let is = |lower: &[u8]| token_is(name, lower);
    Some(match name.len() {
        4 if is(b"host") => HOST,
        4 if is(b"date") => DATE,
        6 if is(b"server") => SERVER,
        6 if is(b"accept") => ACCEPT,
        10 if is(b"connection") => CONNECTION,
        10 if is(b"user-agent") => USER_AGENT,
        12 if is(b"content-type") => CONTENT_TYPE,
        14 if is(b"content-length") => CONTENT_LENGTH,
        17 if is(b"transfer-encoding") => TRANSFER_ENCODING,
        _ => return None,
    })
}

/// Whether `token` (token characters, RFC 9110 §5.6.2) is `lower` (4 bytes or more of lowercase
/// letters and `-`, the same length) in any letter case. Setting the bit 0x20 of a token
/// character gives a lowercase letter only for that letter or its capital, and `-` only for
/// `-` itself (the other byte that would, CR, is no token character), so eight bytes are
/// compared at once.
fn token_is(token: &[u8], lower: &[u8]) -> bool {
    let n = lower.len();
    if n < 8 {
        let word = |s: &[u8], at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&s[at..at + 4]);
            u32::from_le_bytes(b)
        };
        return (word(token, 0) | 0x2020_2020) == word(lower, 0)
            && (word(token, n - 4) | 0x2020_2020) == word(lower, n - 4);
    }
    let word = |s: &[u8], at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut at = 0;
    while at + 8 < n {
        if word(token, at) | 0x2020_2020_2020_2020 != word(lower, at) {
            return false;
        }
        at += 8;
    }
    word(token, n - 8) | 0x2020_2020_2020_2020 == word(lower, n - 8)
}

/// Parses a response head from the front of `buf`, removing it; `Ok(None)` until it is whole.
/// `method` is the request's (an answer to `HEAD` has no body); `scratch` is kept by the
/// caller between responses.
pub fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
    scratch: &mut HeadScratch,
) -> Result<Option<Head>, ParseError> {
    let spans = &mut scratch.spans;
    // The values share the head's buffer instead of being copied, so where each header sits is
    // noted first; nothing is zeroed for headers that are not there.
    spans.clear();
    let (code, version, used) = {
        let base = buf.as_ptr() as usize;
        let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(used)) => {
                record_spans(base, response.headers, spans);
                (
                    response.code.unwrap_or_default(),
                    response.version.unwrap_or(1),
                    used,
                )
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => return Err(ParseError::TooLarge),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(ParseError::TooLarge),
            Err(e) => return Err(ParseError::Malformed(e.to_string())),
        }
    };
    if used > MAX_HEAD_BYTES {
        return Err(ParseError::TooLarge);
    }
    let status = StatusCode::from_u16(code).map_err(|e| ParseError::Malformed(e.to_string()))?;
    let head = buf.split_to(used).freeze();
    // Room for what the proxy adds to an answer (`x-envoy-upstream-service-time`, `server`, a
    // route's headers) without growing the map, which rehashes every entry.
    let mut headers = scratch.header_map(scratch.spans.len() + 4);
    let spans = &scratch.spans;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoded = false;
    let mut close = false;
    let mut keep_alive_token = false;
    for &(name_at, name_len, value_at, value_len) in spans.iter() {
        let name = wire_header_name(&head[name_at..name_at + name_len])
            .map_err(|e| ParseError::Malformed(e.to_string()))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_at + value_len))
            .map_err(|e| ParseError::Malformed(e.to_string()))?;
        if name == CONTENT_LENGTH {
            let n = parse_length(value.as_bytes())?;
            if length.is_some_and(|l| l != n) {
                return Err(ParseError::BadLength);
            }
            length = Some(n);
        } else if name == TRANSFER_ENCODING {
            transfer_encoded = true;
            chunked = ends_chunked(value.as_bytes());
        } else if name == CONNECTION {
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        headers.append(name, value);
    }
    let version = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let bodiless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::Empty
    } else if transfer_encoded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let keep_alive = !close
        && framing != Framing::UntilClose
        // Both a length and a transfer coding: the message may have been smuggled; not reused.
        && !(transfer_encoded && length.is_some())
        && (version == Version::HTTP_11 || keep_alive_token);
    Ok(Some(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// Whether a `transfer-encoding` value's last coding is `chunked` (only then is a message
/// chunked).
pub fn ends_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// A `content-length` value: digits only.
pub fn parse_length(value: &[u8]) -> Result<u64, ParseError> {
    // Digits only (no sign, no spaces inside), as RFC 9110 §8.6 has it; read in one pass (no
    // UTF-8 check and general parse for a few ASCII digits).
    if value.is_empty() {
        return Err(ParseError::BadLength);
    }
    value.iter().try_fold(0u64, |n, &b| {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return Err(ParseError::BadLength);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(digit)))
            .ok_or(ParseError::BadLength)
    })
}

/// What the body decoder found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The trailers of a chunked body (the body ends with them).
    Trailers(HeaderMap),
    /// The body has ended.
    End,
    /// More bytes are needed from the connection.
    NeedMore,
}

/// Reads a response body out of the connection's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoder {
    /// This many bytes are left.
    Length(u64),
    /// A chunked body, at this point.
    Chunked(Chunk),
    /// Until the connection closes.
    UntilClose,
    /// Done.
    Done,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk, before the trailer section.
    Trailers,
}

impl Decoder {
    /// The decoder for a framing.
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(Chunk::Size),
            Framing::UntilClose => Decoder::UntilClose,
        }
    }

    /// Whether the body has been read whole.
    pub fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// Takes what it can of the body from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        loop {
            match self {
                Decoder::Done => return Ok(Decoded::End),
                Decoder::Length(0) => {
                    *self = Decoder::Done;
                    return Ok(Decoded::End);
                }
                Decoder::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    *left -= n as u64;
                    if *left == 0 {
                        *self = Decoder::Done;
                    }
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                Decoder::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                Decoder::Chunked(chunk) => match *chunk {
                    Chunk::Size => match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete((used, 0))) => {
                            let _ = buf.split_to(used);
                            *chunk = Chunk::Trailers;
                        }
                        Ok(httparse::Status::Complete((used, size))) => {
                            let _ = buf.split_to(used);
                            *chunk = Chunk::Data(size);
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                            return Err(ParseError::BadChunk("chunk-size line too long"));
                        }
                        Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                        Err(_) => return Err(ParseError::BadChunk("invalid chunk size")),
                    },
                    Chunk::Data(left) => {
                        if buf.is_empty() {
                            return Ok(Decoded::NeedMore);
                        }
                        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                        *chunk = if left == n as u64 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left - n as u64)
                        };
                        return Ok(Decoded::Data(buf.split_to(n).freeze()));
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            return Ok(Decoded::NeedMore);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err(ParseError::BadChunk("chunk data not followed by CRLF"));
                        }
                        let _ = buf.split_to(2);
                        *chunk = Chunk::Size;
                    }
                    Chunk::Trailers => {
                        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                        let (used, trailers) = match httparse::parse_headers(buf, &mut headers) {
                            Ok(httparse::Status::Complete((used, parsed))) => {
                                let mut trailers = HeaderMap::new();
                                for h in parsed.iter() {
                                    let name = HeaderName::from_bytes(h.name.as_bytes())
                                        .map_err(|_| ParseError::BadChunk("invalid trailer name"))?;
                                    let value = HeaderValue::from_bytes(h.value)
                                        .map_err(|_| ParseError::BadChunk("invalid trailer value"))?;
                                    trailers.append(name, value);
                                }
                                (used, trailers)
                            }
                            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                                return Err(ParseError::TooLarge);
                            }
                            Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                            Err(_) => return Err(ParseError::BadChunk("invalid trailer section")),
                        };
                        let _ = buf.split_to(used);
                        *self = Decoder::Done;
                        return Ok(if trailers.is_empty() {
                            Decoded::End
                        } else {
                            Decoded::Trailers(trailers)
                        });
                    }
                },
            }
        }
    }

    /// The connection ended: the end of a body read until close, an error for any other.
    pub fn at_eof(&mut self) -> Result<Decoded, ParseError> {
        match self {
            Decoder::UntilClose | Decoder::Done => {
                *self = Decoder::Done;
                Ok(Decoded::End)
            }
            _ => Err(ParseError::Malformed(
                "the connection closed in the middle of the body".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, method: Method) -> Result<Option<Head>, ParseError> {
        parse_head(&mut BytesMut::from(text), &method, &mut HeadScratch::default())
    }

    fn whole(text: &str) -> Head {
        head(text, Method::GET).unwrap().unwrap()
    }

    #[test]
    fn request_heads_are_written_in_origin_form() {
        let (parts, ()) = http::Request::post("http://svc.test/a/b?x=1")
            .header("host", "svc.test")
            .header("x-two", "1")
            .header("x-two", "2")
            .body(())
            .unwrap()
            .into_parts();
        let mut out = Vec::new();
        encode_head(&mut out, &parts);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a/b?x=1 HTTP/1.1\r\nhost: svc.test\r\nx-two: 1\r\nx-two: 2\r\ncontent-length: 0\r\n\r\n"
        );
        let (parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let mut out = Vec::new();
        encode_head(&mut out, &parts);
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
    }

    /// A map given back is emptied and filled again by the next head; one grown large is let
    /// go.
    #[test]
    fn header_maps_are_reused_emptied_and_large_ones_let_go() {
        let mut scratch = HeadScratch::default();
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nx-first: 1\r\ncontent-length: 0\r\n\r\n");
        let first = parse_head(&mut buf, &Method::GET, &mut scratch).unwrap().unwrap();
        let capacity = first.headers.capacity();
        scratch.recycle(first.headers);
        let mut buf = BytesMut::from("HTTP/1.1 204 No Content\r\nx-second: 2\r\n\r\n");
        let second = parse_head(&mut buf, &Method::GET, &mut scratch).unwrap().unwrap();
        assert_eq!(second.headers.len(), 1, "nothing of the first head is left");
        assert_eq!(second.headers["x-second"], "2");
        assert!(second.headers.get("x-first").is_none());
        assert_eq!(second.headers.capacity(), capacity, "the same allocation");
        assert!(scratch.spare.is_none(), "taken by the second head");

        let mut large = HeaderMap::with_capacity(RECYCLED_CAPACITY * 4);
        large.insert("x-a", "1".parse().unwrap());
        scratch.recycle(large);
        assert!(scratch.spare.is_none(), "a large map is not kept");
    }

    #[test]
    fn a_head_is_parsed_only_when_whole_and_leaves_the_body() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\ncontent-le");
        let mut scratch = HeadScratch::default();
        assert!(
            parse_head(&mut buf, &Method::GET, &mut scratch)
                .unwrap()
                .is_none()
        );
        buf.extend_from_slice(b"ngth: 5\r\nx-a: b\r\n\r\nhello");
        let h = parse_head(&mut buf, &Method::GET, &mut scratch).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.headers["x-a"], "b");
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            whole("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").framing,
            Framing::Chunked
        );
        assert_eq!(
            whole("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n").framing,
            Framing::Chunked
        );
        let until_close = whole("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
        assert_eq!(until_close.framing, Framing::UntilClose);
        assert!(!until_close.keep_alive);
        let no_length = whole("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(no_length.framing, Framing::UntilClose);
        assert!(!no_length.keep_alive);
        for status in ["204 No Content", "304 Not Modified", "100 Continue"] {
            let h = whole(&format!("HTTP/1.1 {status}\r\ncontent-length: 10\r\n\r\n"));
            assert_eq!(h.framing, Framing::Empty, "{status}");
        }
        let to_head = head("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", Method::HEAD)
            .unwrap()
            .unwrap();
        assert_eq!(to_head.framing, Framing::Empty);
        assert_eq!(
            whole("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").framing,
            Framing::Empty
        );
        // Both: the transfer coding wins, and the connection is not reused.
        let both = whole("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(both.framing, Framing::Chunked);
        assert!(!both.keep_alive);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        assert!(!whole("HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\n").keep_alive);
        assert!(!whole("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n").keep_alive);
        let kept = whole("HTTP/1.0 200 OK\r\ncontent-length: 1\r\nconnection: Keep-Alive\r\n\r\n");
        assert!(kept.keep_alive);
        assert_eq!(kept.version, Version::HTTP_10);
    }

    #[test]
    fn bad_heads_are_refused_with_their_reason() {
        assert!(matches!(
            head("HTTP/1.1 2x0 OK\r\n\r\n", Method::GET),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            head("SSH-2.0-OpenSSH\r\n\r\n", Method::GET),
            Err(ParseError::Malformed(_))
        ));
        assert_eq!(
            head(
                "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                Method::GET
            )
            .unwrap_err(),
            ParseError::BadLength
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", Method::GET).unwrap_err(),
            ParseError::BadLength
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        assert_eq!(
            head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), Method::GET).unwrap_err(),
            ParseError::TooLarge
        );
        let endless = format!("HTTP/1.1 200 OK\r\nx-big: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(head(&endless, Method::GET).unwrap_err(), ParseError::TooLarge);
    }

    /// `wire_header_name` gives what `HeaderName::from_bytes` gives for `name`.
    fn same_as_general_parser(name: &[u8]) {
        assert_eq!(
            wire_header_name(name).unwrap(),
            HeaderName::from_bytes(name).unwrap(),
            "{}",
            String::from_utf8_lossy(name)
        );
    }

    #[test]
    fn common_header_names_are_recognised_in_any_case_and_nothing_else_is_mistaken_for_them() {
        // Every token character (RFC 9110 §5.6.2).
        let tchars: Vec<u8> = (0x21u8..0x7f)
            .filter(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
            .collect();
        use http::header::{ACCEPT, CONTENT_TYPE, DATE, HOST, SERVER, USER_AGENT};
        let common = [
            (&b"host"[..], HOST),
            (b"date", DATE),
            (b"server", SERVER),
            (b"accept", ACCEPT),
            (b"connection", CONNECTION),
            (b"user-agent", USER_AGENT),
            (b"content-type", CONTENT_TYPE),
            (b"content-length", CONTENT_LENGTH),
            (b"transfer-encoding", TRANSFER_ENCODING),
        ];
        for (lower, known) in &common {
            assert_eq!(common_name(lower), Some(known.clone()));
            assert_eq!(common_name(&lower.to_ascii_uppercase()), Some(known.clone()));
            let title: Vec<u8> = lower
                .split(|b| *b == b'-')
                .map(|w| [&w[..1].to_ascii_uppercase()[..], &w[1..]].concat())
                .collect::<Vec<_>>()
                .join(&b'-');
            assert_eq!(common_name(&title), Some(known.clone()));
            // Any one byte changed to any other token character: the general parser's answer.
            for at in 0..lower.len() {
                for &c in &tchars {
                    let mut name = lower.to_vec();
                    name[at] = c;
                    same_as_general_parser(&name);
                    // Recognised only where it is that name in another case.
                    assert_eq!(
                        common_name(&name).is_some(),
                        name.eq_ignore_ascii_case(lower),
                        "{}",
                        String::from_utf8_lossy(&name)
                    );
                }
            }
        }
        for other in [
            &b"x-request-id"[..],
            b"X-Envoy-Upstream-Service-Time",
            b"te",
            b"a",
            b"content-length2",
        ] {
            assert_eq!(common_name(other), None);
            same_as_general_parser(other);
        }
        assert!(wire_header_name(b"").is_err());
    }

    #[test]
    fn a_content_length_is_digits_only_and_fits_64_bits() {
        assert_eq!(parse_length(b"0"), Ok(0));
        assert_eq!(parse_length(b"1234"), Ok(1234));
        assert_eq!(parse_length(b"007"), Ok(7));
        assert_eq!(parse_length(b"18446744073709551615"), Ok(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"+1",
            b"-1",
            b" 1",
            b"1 ",
            b"1a",
            b"1,2",
            b"\xd9\xa1",
        ] {
            assert_eq!(parse_length(bad), Err(ParseError::BadLength), "{bad:?}");
        }
    }

    fn drain(decoder: &mut Decoder, buf: &mut BytesMut) -> (Vec<u8>, Option<HeaderMap>, Decoded) {
        let mut data = Vec::new();
        loop {
            match decoder.decode(buf).unwrap() {
                Decoded::Data(b) => data.extend_from_slice(&b),
                Decoded::Trailers(t) => return (data, Some(t), Decoded::End),
                other => return (data, None, other),
            }
        }
    }

    #[test]
    fn a_length_body_ends_at_its_length_and_leaves_the_rest() {
        let mut d = Decoder::new(Framing::Length(5));
        let mut buf = BytesMut::from("hel");
        assert_eq!(
            drain(&mut d, &mut buf),
            (b"hel".to_vec(), None, Decoded::NeedMore)
        );
        buf.extend_from_slice(b"loHTTP/1.1");
        assert_eq!(drain(&mut d, &mut buf), (b"lo".to_vec(), None, Decoded::End));
        assert!(d.is_done());
        assert_eq!(&buf[..], b"HTTP/1.1");
        assert!(Decoder::new(Framing::Length(3)).at_eof().is_err());
    }

    #[test]
    fn a_chunked_body_is_decoded_across_reads_with_its_trailers() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\ngrpc-status: 0\r\n\r\nNEXT";
        // Fed one byte at a time: every state must wait for more rather than fail.
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        for b in wire.iter() {
            buf.extend_from_slice(&[*b]);
            loop {
                match d.decode(&mut buf).unwrap() {
                    Decoded::Data(x) => data.extend_from_slice(&x),
                    Decoded::Trailers(t) => trailers = Some(t),
                    Decoded::End | Decoded::NeedMore => break,
                }
            }
            if d.is_done() {
                break;
            }
        }
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
        assert!(d.is_done());
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from("3\r\nabc\r\n0\r\n\r\nNEXT");
        assert_eq!(drain(&mut d, &mut buf), (b"abc".to_vec(), None, Decoded::End));
        assert_eq!(&buf[..], b"NEXT", "the next response is left alone");
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for wire in [
            "zz\r\nhello\r\n",
            "3\r\nabcX\r\n",
            "3\r\nabc\r\n0\r\nbad trailer\r\n\r\n",
        ] {
            let mut d = Decoder::new(Framing::Chunked);
            let mut buf = BytesMut::from(wire);
            let failed = (0..10).any(|_| d.decode(&mut buf).is_err());
            assert!(failed, "{wire:?}");
        }
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from("f".repeat(MAX_CHUNK_LINE + 1).as_str());
        assert!(d.decode(&mut buf).is_err());
    }

    #[test]
    fn a_body_until_close_ends_with_the_connection() {
        let mut d = Decoder::new(Framing::UntilClose);
        let mut buf = BytesMut::from("some");
        assert_eq!(
            drain(&mut d, &mut buf),
            (b"some".to_vec(), None, Decoded::NeedMore)
        );
        assert_eq!(d.at_eof().unwrap(), Decoded::End);
        assert!(d.is_done());
    }
}
