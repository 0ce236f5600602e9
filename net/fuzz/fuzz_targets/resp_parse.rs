//! Fuzz the RESP request parser: any bytes, fed in any split, must never panic, and feeding the
//! same bytes whole or in two parts must yield the same requests, and an error in both or neither
//! (the error text may differ: an over-long header line is refused before its end is seen).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tessera_net::resp::{Limits, Parser};

fn run(parts: &[&[u8]], limits: &Limits) -> (Vec<Vec<bytes::Bytes>>, Option<String>) {
    let mut parser = Parser::new(limits.clone());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(args)) => out.push(args),
                Ok(None) => break,
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = usize::from(data[0]) % data.len();
    let input = &data[1..];
    let split = split.min(input.len());
    let limits = Limits {
        request_bytes_max: 4096,
        bulk_bytes_max: 1024,
        multibulk_len_max: 64,
        inline_bytes_max: 256,
    };
    let whole = run(&[input], &limits);
    let parts = run(&[&input[..split], &input[split..]], &limits);
    assert_eq!(whole.0, parts.0);
    assert_eq!(whole.1.is_some(), parts.1.is_some());
});
