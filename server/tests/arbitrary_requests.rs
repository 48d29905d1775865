//! Arbitrary request bodies through request decoding and the QUIC edge's conversion
//! (`protocol::request::command`), and arbitrary bytes through the REST edge's form parsing:
//! never a panic, always a typed error when refused. A bounded, seeded loop
//! (`SYNCLINE_PROPTEST_SEED` picks another seed); the fuzz targets in `fuzz/` go deeper.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use syncline_proto::frame::{self, FrameError};
use syncline_proto::{ErrorCode, ItemKey, Limits, ObjectKind, Request, RequestFrame};
use syncline_server::http::form::Params;
use syncline_server::protocol::request;

fn seed() -> u64 {
    std::env::var("SYNCLINE_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_5678)
}

fn bodies() -> Vec<Vec<u8>> {
    let requests = [
        Request::DocSet {
            document: "d".into(),
            data: r#"{"a":1,"b":[true,null]}"#.into(),
            if_match: None,
            ttl: Some(10),
        },
        Request::DocUpdate {
            document: "d".into(),
            data: r#"{"a":null}"#.into(),
            if_match: Some(2),
        },
        Request::ListPush {
            list: "l".into(),
            data: "\"x\"".into(),
            ttl: None,
            ephemeral: false,
        },
        Request::ItemUpdate {
            kind: ObjectKind::Map,
            object: "m".into(),
            key: ItemKey::Key("k".into()),
            data: "{}".into(),
            if_match: None,
        },
        Request::Publish {
            stream: "s".into(),
            data: "[1,2,3]".into(),
        },
        Request::ItemCreate {
            kind: ObjectKind::Map,
            object: "m".into(),
            key: ItemKey::Key("k".into()),
            data: r#"{"a":[1]}"#.into(),
            ttl: Some(5),
            ephemeral: false,
        },
        Request::PermissionGrant {
            object: "d".into(),
            identity: "*".into(),
            rights: Default::default(),
        },
    ];
    requests
        .into_iter()
        .map(|request| frame::encode(&RequestFrame { id: 42, request })[4..].to_vec())
        .collect()
}

#[test]
fn random_and_mutated_requests_become_commands_or_typed_errors() {
    let limits = Limits::default();
    let mut rng = StdRng::seed_from_u64(seed());
    let bodies = bodies();
    let (mut decoded, mut commands) = (0, 0);
    for _ in 0..20_000 {
        let mut body = bodies[rng.gen_range(0..bodies.len())].clone();
        if rng.gen_range(0..4) == 0 {
            body = (0..rng.gen_range(0..200))
                .map(|_| rng.gen::<u8>())
                .collect();
        }
        for _ in 0..=rng.gen_range(0..3) {
            let at = rng.gen_range(0..body.len().max(1));
            match rng.gen_range(0..3) {
                0 if at < body.len() => body[at] = rng.gen::<u8>(),
                1 => body.insert(at, rng.gen::<u8>()),
                _ if at < body.len() => {
                    body.remove(at);
                }
                _ => {}
            }
        }
        let frame = match frame::decode::<RequestFrame>(&body, limits.max_frame_bytes) {
            Ok(f) => f,
            Err(FrameError::Malformed(m)) => {
                assert!(!m.is_empty());
                continue;
            }
            Err(e) => panic!("{e:?}"),
        };
        decoded += 1;
        match request::command(frame.request, &limits) {
            Ok(_) => commands += 1,
            Err(e) => {
                assert!(!e.message.is_empty());
                assert!(
                    matches!(e.code, ErrorCode::InvalidArgument | ErrorCode::TooLarge),
                    "{e:?}"
                );
            }
        }
    }
    // The mutations keep enough requests whole to reach the conversion.
    assert!(
        decoded > 500 && commands > 200,
        "{decoded} decoded, {commands} commands"
    );
}

#[test]
fn arbitrary_form_bodies_parse_and_name_the_bad_parameter() {
    let mut rng = StdRng::seed_from_u64(seed());
    let alphabet = b"=&%+TtlDataKey0123456789abcdefTRUEfalse\xff\x00 ";
    for _ in 0..5_000 {
        let query: Vec<u8> = (0..rng.gen_range(0..40))
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
            .collect();
        let body: Vec<u8> = (0..rng.gen_range(0..80))
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
            .collect();
        let p = Params::parse(&[&query, &body]);
        for name in ["Ttl", "Data", "Key", "PageSize", "AclEnabled"] {
            if let Err(e) = p.integer(name) {
                assert!(e.message.contains(name), "{}", e.message);
            }
            if let Err(e) = p.boolean(name) {
                assert!(e.message.contains(name), "{}", e.message);
            }
        }
    }
}
