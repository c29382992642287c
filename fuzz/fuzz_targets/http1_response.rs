//! Arbitrary bytes from an upstream through Weir's HTTP/1.1 response codec: the first byte picks
//! the request method (an answer to HEAD has no body) and how the rest is cut into reads; the
//! head is parsed, then the body decoded read by read, then the end of the connection. Anything
//! may be refused with an error — never a panic, and the decoder never hands out more bytes than
//! it was given.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use weir_proxy::pool::codec::{Decoded, Decoder, HeadScratch, parse_head};

fuzz_target!(|data: &[u8]| {
    let Some((&first, wire)) = data.split_first() else {
        return;
    };
    let method = if first & 1 == 0 { http::Method::GET } else { http::Method::HEAD };
    let step = usize::from(first >> 1).max(1);
    let mut buf = BytesMut::new();
    let mut scratch = HeadScratch::with_capacity(16);
    let mut reads = wire.chunks(step);
    let head = loop {
        match parse_head(&mut buf, &method, &mut scratch) {
            Ok(Some(head)) => break head,
            Err(_) => return,
            Ok(None) => match reads.next() {
                Some(read) => buf.extend_from_slice(read),
                None => return,
            },
        }
    };
    let mut decoder = Decoder::new(head.framing);
    let mut given = buf.len();
    let mut taken = 0;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(bytes)) => {
                assert!(!bytes.is_empty(), "empty data frame");
                taken += bytes.len();
                assert!(taken <= given, "the decoder handed out bytes it was not given");
            }
            Ok(Decoded::Trailers(_) | Decoded::End) | Err(_) => return,
            Ok(Decoded::NeedMore) => match reads.next() {
                Some(read) => {
                    given += read.len();
                    buf.extend_from_slice(read);
                }
                None => {
                    let _ = decoder.at_eof();
                    return;
                }
            },
        }
    }
});
