//! Listener inspectors: what the first bytes of a connection say before a filter chain is
//! chosen — the TLS ClientHello's server name and ALPN (Envoy's TLS inspector), or whether it
//! is HTTP/1.x or HTTP/2 with prior knowledge (the HTTP inspector). The bytes read are replayed
//! to the chain through [`Rewind`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a ClientHello says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The SNI host name.
    pub server_name: Option<String>,
    /// ALPN protocols offered.
    pub alpn: Vec<String>,
}

/// The verdict on the bytes seen so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    /// Not TLS.
    NotTls,
    /// TLS, but more bytes are needed.
    NeedMore,
    /// A complete ClientHello.
    Hello(ClientHello),
}

/// The most bytes read before the inspectors give up (the TLS inspector stops sooner, at its
/// listener's `max_client_hello_size`).
pub const MAX_HELLO: usize = 64 * 1024;

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// Parses the start of a connection as a TLS ClientHello (possibly spread over several
/// records).
pub fn parse_client_hello(data: &[u8]) -> Tls {
    // Records: type 22 (handshake), version 3.x, length.
    let mut handshake = Vec::new();
    let mut r = Reader { buf: data };
    loop {
        let Some(header) = r.take(5) else {
            let rest = r.buf;
            let bad = rest.first().is_some_and(|b| *b != 22) || rest.get(1).is_some_and(|b| *b != 3);
            return if bad { Tls::NotTls } else { Tls::NeedMore };
        };
        if header[0] != 22 || header[1] != 3 {
            return Tls::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > 16384 + 2048 {
            return Tls::NotTls;
        }
        let Some(body) = r.take(len) else {
            return if data.len() >= MAX_HELLO {
                Tls::NotTls
            } else {
                Tls::NeedMore
            };
        };
        handshake.extend_from_slice(body);
        // Handshake header: type 1 (ClientHello), 24-bit length.
        if handshake.len() >= 4 {
            if handshake[0] != 1 {
                return Tls::NotTls;
            }
            let hello_len = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if handshake.len() >= 4 + hello_len {
                return match hello(&handshake[4..4 + hello_len]) {
                    Some(h) => Tls::Hello(h),
                    None => Tls::NotTls,
                };
            }
            if hello_len > MAX_HELLO {
                return Tls::NotTls;
            }
        }
    }
}

fn hello(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader { buf: body };
    r.take(2)?; // legacy version
    r.take(32)?; // random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut out = ClientHello::default();
    if r.buf.is_empty() {
        return Some(out);
    }
    let mut ext = Reader { buf: r.vec16()? };
    while !ext.buf.is_empty() {
        let kind = ext.u16()?;
        let data = ext.vec16()?;
        let mut e = Reader { buf: data };
        match kind {
            0 => {
                // server_name: list of (type, name).
                let mut list = Reader { buf: e.vec16()? };
                while !list.buf.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?;
                    if name_type == 0 {
                        let name = std::str::from_utf8(name).ok()?;
                        out.server_name = Some(name.to_ascii_lowercase());
                    }
                }
            }
            16 => {
                let mut list = Reader { buf: e.vec16()? };
                while !list.buf.is_empty() {
                    let p = list.vec8()?;
                    out.alpn.push(String::from_utf8_lossy(p).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(out)
}

/// The verdict of the HTTP inspector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpGuess {
    /// Not HTTP.
    NotHttp,
    /// More bytes are needed.
    NeedMore,
    /// HTTP/1.0.
    Http10,
    /// HTTP/1.1.
    Http11,
    /// HTTP/2 prior knowledge (`h2c`).
    H2c,
}

impl HttpGuess {
    /// The ALPN-style name Envoy's inspector reports.
    pub fn protocol(self) -> Option<&'static str> {
        match self {
            HttpGuess::Http10 => Some("http/1.0"),
            HttpGuess::Http11 => Some("http/1.1"),
            HttpGuess::H2c => Some("h2c"),
            _ => None,
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Looks at the first bytes for an HTTP request line or the HTTP/2 preface.
pub fn guess_http(data: &[u8]) -> HttpGuess {
    let n = data.len().min(H2_PREFACE.len());
    if data[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            HttpGuess::H2c
        } else {
            HttpGuess::NeedMore
        };
    }
    let line_end = data.iter().position(|b| *b == b'\n');
    let line = &data[..line_end.unwrap_or(data.len())];
    // Method: tokens only.
    let method_len = line.iter().position(|b| *b == b' ');
    let is_token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    match method_len {
        None if line.iter().all(is_token) && line_end.is_none() && line.len() < 16 => {
            return HttpGuess::NeedMore;
        }
        None => return HttpGuess::NotHttp,
        Some(0) => return HttpGuess::NotHttp,
        Some(m) if !line[..m].iter().all(is_token) => return HttpGuess::NotHttp,
        Some(_) => {}
    }
    let Some(_) = line_end else {
        return if data.len() > 8192 {
            HttpGuess::NotHttp
        } else {
            HttpGuess::NeedMore
        };
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.ends_with(b" HTTP/1.1") {
        HttpGuess::Http11
    } else if line.ends_with(b" HTTP/1.0") {
        HttpGuess::Http10
    } else {
        HttpGuess::NotHttp
    }
}

/// A stream that first replays bytes already read.
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    /// Replays `prefix`, then reads from `inner`.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Rewind { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls/openssl would send, with SNI and ALPN (built by hand).
    pub(crate) fn sample_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
        let mut exts = Vec::new();
        let name = sni.as_bytes();
        let mut sn = vec![0u8];
        sn.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sn.extend_from_slice(name);
        let mut sn_list = (sn.len() as u16).to_be_bytes().to_vec();
        sn_list.extend(sn);
        exts.extend_from_slice(&0u16.to_be_bytes());
        exts.extend_from_slice(&(sn_list.len() as u16).to_be_bytes());
        exts.extend(sn_list);
        let mut protos = Vec::new();
        for p in alpn {
            protos.push(p.len() as u8);
            protos.extend_from_slice(p.as_bytes());
        }
        let mut alpn_ext = (protos.len() as u16).to_be_bytes().to_vec();
        alpn_ext.extend(protos);
        exts.extend_from_slice(&16u16.to_be_bytes());
        exts.extend_from_slice(&(alpn_ext.len() as u16).to_be_bytes());
        exts.extend(alpn_ext);
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0);
        body.extend_from_slice(&2u16.to_be_bytes());
        body.extend_from_slice(&[0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut rec = vec![22, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    #[test]
    fn client_hello_gives_sni_and_alpn_even_in_pieces() {
        let hello = sample_hello("API.example.com", &["h2", "http/1.1"]);
        let want = Tls::Hello(ClientHello {
            server_name: Some("api.example.com".into()),
            alpn: vec!["h2".into(), "http/1.1".into()],
        });
        assert_eq!(parse_client_hello(&hello), want);
        for cut in [1, 3, 5, 20, hello.len() - 1] {
            assert_eq!(parse_client_hello(&hello[..cut]), Tls::NeedMore, "cut at {cut}");
        }
        assert_eq!(parse_client_hello(b"GET / HTTP/1.1\r\n"), Tls::NotTls);
        assert_eq!(parse_client_hello(&[22, 3, 1, 0, 0]), Tls::NotTls);
    }

    #[test]
    fn http_guesses() {
        assert_eq!(guess_http(b"GET / HTTP/1.1\r\nHost: a\r\n"), HttpGuess::Http11);
        assert_eq!(guess_http(b"POST /x HTTP/1.0\r\n"), HttpGuess::Http10);
        assert_eq!(guess_http(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), HttpGuess::H2c);
        assert_eq!(guess_http(b"PRI * HT"), HttpGuess::NeedMore);
        assert_eq!(guess_http(b"GET /"), HttpGuess::NeedMore);
        assert_eq!(guess_http(b"\x16\x03\x01"), HttpGuess::NotHttp);
        assert_eq!(guess_http(b"SSH-2.0-OpenSSH\r\n"), HttpGuess::NotHttp);
    }
}
