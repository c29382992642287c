//! Arbitrary bytes from a downstream client through Weir's own HTTP/1.1 server codec: the first
//! byte picks how the rest is cut into reads; request heads are parsed one after another (a
//! pipelined connection) until one is left to hyper or the bytes run out. A head taken must
//! leave exactly the bytes after it; a head left to hyper must leave the buffer untouched; then
//! an answer to each request taken is written with a few header shapes. Never a panic.
#![no_main]

use bytes::BytesMut;
use http::{HeaderValue, Response};
use libfuzzer_sys::fuzz_target;
use weir_proxy::lean_server::codec::{BodyLength, BodyWriter, Parsed, encode_response, parse_request};
use weir_proxy::pool::codec::HeadScratch;

fuzz_target!(|data: &[u8]| {
    let Some((&first, wire)) = data.split_first() else {
        return;
    };
    let step = usize::from(first >> 2).max(1);
    let mut buf = BytesMut::new();
    let mut scratch = HeadScratch::with_capacity(16);
    let mut reads = wire.chunks(step);
    let mut out = Vec::new();
    loop {
        let before = buf.clone();
        match parse_request(&mut buf, 4096, &mut scratch) {
            Parsed::Request(head) => {
                assert!(before.ends_with(&buf), "a parsed head left bytes that were not after it");
                assert!(buf.len() < before.len(), "a head took no bytes");
                // Its answer, with the request's own headers echoed back as response headers.
                let mut response = Response::new(());
                *response.headers_mut() = head.request.headers().clone();
                if first & 1 == 1 {
                    response.headers_mut().append("content-length", HeaderValue::from_static("3"));
                }
                let (parts, ()) = response.into_parts();
                let length = match first & 3 {
                    0 => BodyLength::Ended,
                    1 => BodyLength::Known(3),
                    _ => BodyLength::Unknown,
                };
                out.clear();
                if let Ok(written) = encode_response(&mut out, &parts, head.request.method(), length, !head.close) {
                    assert!(out.ends_with(b"\r\n\r\n"), "an unterminated head");
                    let mut writer = BodyWriter::new(written.framing);
                    let _ = writer.data(&mut out, bytes::Bytes::from_static(b"abc"));
                    writer.finish(&mut out, Some(head.request.headers()));
                }
            }
            Parsed::Other => {
                assert_eq!(before, buf, "a head left to hyper was changed");
                return;
            }
            Parsed::Partial => match reads.next() {
                Some(read) => buf.extend_from_slice(read),
                None => return,
            },
        }
    }
});
