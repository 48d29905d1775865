//! Arbitrary bytes to the frame decoder and the message decoders: random streams and
//! mutated valid frames, fed in random pieces, never panic and only give typed errors
//! (`TooLarge` for a length over the limit, `Malformed` for a body that is not the
//! message). A bounded, seeded loop (`SYNCLINE_PROPTEST_SEED` picks another seed), short
//! enough for every test run; the fuzz targets in `fuzz/` go deeper.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use syncline_proto::frame::{self, FrameDecoder, FrameError, LEN_PREFIX};
use syncline_proto::{
    Credential, EventFrameHeader, ItemKey, ObjectKind, Order, Request, RequestFrame, ResponseFrame,
};

fn seed() -> u64 {
    std::env::var("SYNCLINE_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234)
}

fn valid_requests() -> Vec<RequestFrame> {
    let requests = vec![
        Request::Hello {
            credential: Credential::ApiKey {
                sid: "SK00000000000000000000000000000000".into(),
                secret: "s".into(),
            },
            service: Some("default".into()),
        },
        Request::Ping,
        Request::DocSet {
            document: "room".into(),
            data: r#"{"a":[1,2,{"b":null}]}"#.into(),
            if_match: Some(3),
            ttl: Some(60),
        },
        Request::ItemSet {
            kind: ObjectKind::Map,
            object: "m".into(),
            key: ItemKey::Key("k".into()),
            data: "1".into(),
            if_match: None,
            ttl: None,
            ephemeral: true,
        },
        Request::Items {
            kind: ObjectKind::List,
            object: "l".into(),
            from: Some(ItemKey::Index(300)),
            order: Order::Desc,
            limit: 10,
        },
        Request::Subscribe {
            sub_id: 9,
            object: "room".into(),
            since: Some(1 << 40),
            window: Some(5),
        },
    ];
    requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| RequestFrame {
            id: [1, 250, 251, 70_000, 1 << 33, u64::MAX][i % 6],
            request,
        })
        .collect()
}

/// Flips, overwrites, inserts, deletes or truncates a few bytes of `v`.
fn mutate(rng: &mut StdRng, mut v: Vec<u8>) -> Vec<u8> {
    for _ in 0..=rng.gen_range(0..4) {
        let at = rng.gen_range(0..v.len() + 1);
        match rng.gen_range(0..6) {
            0 if at < v.len() => v[at] ^= 1 << rng.gen_range(0..8),
            1 if at < v.len() => v[at] = [0, 0xff, 0xfb, 0xfc, 0xfd, 0x80][rng.gen_range(0..6)],
            2 => {
                let n = rng.gen_range(0..8) + 1;
                let extra = (0..n).map(|_| rng.gen::<u8>()).collect::<Vec<u8>>();
                v.splice(at..at, extra);
            }
            3 if at < v.len() => {
                let end = (at + rng.gen_range(0..8) + 1).min(v.len());
                v.drain(at..end);
            }
            4 => v.truncate(at),
            _ => {}
        }
    }
    v
}

/// Every decoder over one body: a value or a typed error, never a panic.
fn decode_everything(body: &[u8], max: u32) {
    for result in [
        frame::decode::<RequestFrame>(body, max).map(|_| ()),
        frame::decode::<ResponseFrame>(body, max).map(|_| ()),
        EventFrameHeader::decode(body, max).map(|_| ()),
    ] {
        match result {
            Ok(()) | Err(FrameError::Malformed(_)) => {}
            Err(e) => panic!("a body decode gave {e:?}"),
        }
    }
    if let Ok(req) = frame::decode::<RequestFrame>(body, max) {
        assert_eq!(frame::peek_request_id(body), Some(req.id));
    }
}

/// Feeds `stream` to a decoder in random pieces; every outcome is typed.
fn feed(rng: &mut StdRng, stream: &[u8], max: u32) {
    let mut dec = FrameDecoder::new(max);
    let mut at = 0;
    while at < stream.len() {
        let n = (rng.gen_range(0..64) + 1).min(stream.len() - at);
        dec.extend(&stream[at..at + n]);
        at += n;
        loop {
            match dec.next_frame() {
                Ok(Some(body)) => {
                    assert!(body.len() <= max as usize);
                    decode_everything(&body, max);
                }
                Ok(None) => break,
                Err(FrameError::TooLarge { len, max: m, head }) => {
                    assert!(len > m && m == max && head.len() <= frame::REFUSED_HEAD);
                }
                Err(e) => panic!("the frame decoder gave {e:?}"),
            }
        }
    }
}

#[test]
fn random_and_mutated_frames_never_panic_and_fail_typed() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let valid: Vec<Vec<u8>> = valid_requests()
        .iter()
        .map(|r| frame::encode(r).to_vec())
        .collect();
    for round in 0..20_000 {
        let max = [16, 256, 64 * 1024][round % 3];
        let stream = match rng.gen_range(0..3) {
            0 => {
                let n = rng.gen_range(0..300);
                (0..n).map(|_| rng.gen::<u8>()).collect::<Vec<u8>>()
            }
            1 => {
                let v = valid[rng.gen_range(0..valid.len())].clone();
                mutate(&mut rng, v)
            }
            _ => {
                // Valid frames and mutated ones, back to back.
                let mut s = Vec::new();
                for _ in 0..=rng.gen_range(0..3) {
                    let v = valid[rng.gen_range(0..valid.len())].clone();
                    s.extend(if rng.gen_range(0..2) == 0 {
                        v
                    } else {
                        mutate(&mut rng, v)
                    });
                }
                s
            }
        };
        feed(&mut rng, &stream, max);
        // The body alone, as if the framing had been right.
        if stream.len() > LEN_PREFIX {
            decode_everything(&stream[LEN_PREFIX..], max);
        }
        decode_everything(&stream, max);
    }
}

#[test]
fn unmutated_frames_still_decode_after_the_random_ones() {
    // The generator's valid frames are valid: the loop above is not testing only noise.
    for r in valid_requests() {
        let wire = frame::encode(&r);
        let mut dec = FrameDecoder::new(64 * 1024);
        dec.extend(&wire);
        let body = dec.next_frame().expect("no error").expect("a frame");
        assert_eq!(frame::decode::<RequestFrame>(&body, 64 * 1024), Ok(r));
    }
}
