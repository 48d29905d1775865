//! The frame decoder (`proto/src/frame.rs`) on arbitrary byte streams fed in arbitrary
//! pieces. Checks, beyond "no panic": the incremental decoder says exactly what a
//! one-pass reference reading of the whole stream says (frames, refusals with their
//! heads), whatever the piece size; it never holds more than one frame's worth; every
//! body that decodes as a `RequestFrame` has the id `peek_request_id` reads and
//! re-encodes to the same value; response and event bodies decode or fail typed.
//!
//! Input: byte 0 picks the frame limit, byte 1 the piece size, the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncline_proto::frame::{self, FrameDecoder, FrameError, LEN_PREFIX, REFUSED_HEAD};
use syncline_proto::{EventFrameHeader, RequestFrame, ResponseFrame};

#[derive(Debug, PartialEq)]
enum Outcome {
    Frame(Vec<u8>),
    Refused { len: u32, head: Vec<u8> },
}

/// The stream read in one pass, as the decoder's contract describes it.
fn reference(stream: &[u8], max: u32) -> Vec<Outcome> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while stream.len() - at >= LEN_PREFIX {
        let len = u32::from_be_bytes([stream[at], stream[at + 1], stream[at + 2], stream[at + 3]]);
        let body = at + LEN_PREFIX;
        if len > max {
            let head_len = (len as usize).min(REFUSED_HEAD);
            if stream.len() - body < head_len {
                break;
            }
            out.push(Outcome::Refused {
                len,
                head: stream[body..body + head_len].to_vec(),
            });
            at = body.saturating_add(len as usize);
        } else {
            if stream.len() - body < len as usize {
                break;
            }
            out.push(Outcome::Frame(stream[body..body + len as usize].to_vec()));
            at = body + len as usize;
        }
        if at >= stream.len() {
            break;
        }
    }
    out
}

fn check_body(body: &[u8], max: u32) {
    match frame::decode::<RequestFrame>(body, max) {
        Ok(req) => {
            assert_eq!(frame::peek_request_id(body), Some(req.id));
            let again = frame::encode(&req);
            let back: RequestFrame =
                frame::decode(&again[LEN_PREFIX..], u32::MAX).expect("re-encoded request decodes");
            assert_eq!(back, req);
        }
        Err(FrameError::Malformed(_)) => {}
        Err(e) => panic!("decode gave {e:?}"),
    }
    if let Ok(resp) = frame::decode::<ResponseFrame>(body, max) {
        let again = frame::encode(&resp);
        let back: ResponseFrame =
            frame::decode(&again[LEN_PREFIX..], u32::MAX).expect("re-encoded response decodes");
        assert_eq!(back, resp);
    }
    if let Ok((header, event)) = EventFrameHeader::decode(body, max) {
        let encoded = frame::encode_event(&event);
        let mut wire = header.encode(encoded.len()).to_vec();
        wire.extend_from_slice(&encoded);
        let (h2, e2) = EventFrameHeader::decode(&wire[LEN_PREFIX..], u32::MAX).expect("event");
        assert_eq!((h2, e2), (header, event));
    }
}

fuzz_target!(|data: &[u8]| {
    let [limit, piece, stream @ ..] = data else {
        return;
    };
    let max = match limit % 5 {
        0 => 0,
        1 => 8,
        2 => 64,
        3 => 1024,
        _ => 64 * 1024,
    };
    let piece = usize::from(*piece % 32) + 1;
    let mut dec = FrameDecoder::new(max);
    let mut got = Vec::new();
    for chunk in stream.chunks(piece) {
        dec.extend(chunk);
        loop {
            match dec.next_frame() {
                Ok(Some(body)) => {
                    assert!(body.len() <= max as usize);
                    check_body(&body, max);
                    got.push(Outcome::Frame(body.to_vec()));
                }
                Ok(None) => break,
                Err(FrameError::TooLarge { len, max: m, head }) => {
                    assert_eq!(m, max);
                    assert!(len > max);
                    got.push(Outcome::Refused {
                        len,
                        head: head.to_vec(),
                    });
                }
                Err(e) => panic!("the decoder gave {e:?}"),
            }
        }
        // At most one incomplete frame (or a refused frame's head) is held.
        assert!(dec.pending() < LEN_PREFIX + (max as usize).max(REFUSED_HEAD));
    }
    assert_eq!(got, reference(stream, max));
});
