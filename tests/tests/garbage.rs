//! Garbage on a real connection's request stream: random bytes and mutated frames, sent
//! before and after `Hello`, get typed error answers or a clean close (a QUIC
//! application close with one of Syncline's close codes), never a hang or a crash; and
//! the server goes on serving a second, well-behaved connection after each one.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

use serde_json::json;
use syncline_proto::frame::{self, FrameDecoder};
use syncline_proto::{close_code, Request, RequestFrame, ResponseFrame};
use syncline_tests::{RawConnection, TestServer};

/// What a garbage stream got back.
#[derive(Debug, Default)]
struct Answer {
    errors: usize,
    oks: usize,
    /// The server finished its side of the request stream.
    ended: bool,
    closed_with: Option<u32>,
}

/// Sends `garbage`, finishes the stream, and reads what comes back until the server
/// closes, ends the stream, or says nothing more for a while.
async fn send_garbage(raw: &mut RawConnection, garbage: &[u8]) -> Answer {
    let _ = raw.send.write_all(garbage).await;
    let _ = raw.send.finish();
    let mut answer = Answer::default();
    let mut decoder = FrameDecoder::new(1 << 20);
    loop {
        let read = tokio::time::timeout(Duration::from_secs(2), raw.recv.read_chunk(1 << 16, true));
        match read.await {
            Err(_quiet) => break,
            Ok(Ok(Some(chunk))) => {
                decoder.extend(&chunk.bytes);
                while let Some(body) = decoder.next_frame().expect("the server frames its answers")
                {
                    let r: ResponseFrame =
                        frame::decode(&body, 1 << 20).expect("every answer is a typed frame");
                    match r.result {
                        Ok(_) => answer.oks += 1,
                        Err(e) => {
                            assert!(!e.message.is_empty(), "{e:?}");
                            answer.errors += 1;
                        }
                    }
                }
            }
            Ok(Ok(None)) => {
                answer.ended = true;
                break;
            }
            Ok(Err(quinn::ReadError::ConnectionLost(
                quinn::ConnectionError::ApplicationClosed(c),
            ))) => {
                let code = u32::try_from(c.error_code.into_inner()).expect("a small code");
                answer.closed_with = Some(code);
                break;
            }
            Ok(Err(e)) => panic!("not a clean close: {e}"),
        }
    }
    answer
}

fn garbage(rng: &mut StdRng) -> Vec<u8> {
    let valid = frame::encode(&RequestFrame {
        id: 3,
        request: Request::DocSet {
            document: "g".into(),
            data: r#"{"a":1}"#.into(),
            if_match: None,
            ttl: None,
        },
    })
    .to_vec();
    match rng.gen_range(0..3) {
        // Noise.
        0 => (0..rng.gen_range(0..400) + 1)
            .map(|_| rng.gen::<u8>())
            .collect(),
        // A frame length the server accepts around a random body.
        1 => {
            let n = rng.gen_range(0..200) + 1;
            let mut v = (n as u32).to_be_bytes().to_vec();
            v.extend((0..n).map(|_| rng.gen::<u8>()));
            v
        }
        // A valid frame with a few bytes changed.
        _ => {
            let mut v = valid;
            for _ in 0..=rng.gen_range(0..3) {
                let at = rng.gen_range(0..v.len());
                v[at] = rng.gen::<u8>();
            }
            v
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_request_stream_gets_typed_errors_or_a_clean_close_and_the_server_serves_on()
{
    let s = TestServer::start().await;
    let well_behaved = s.backend().await;
    let mut rng = StdRng::seed_from_u64(0x9a7b_a9e5);
    let known = [
        close_code::NORMAL,
        close_code::GOING_AWAY,
        close_code::UNAUTHORIZED,
        close_code::PROTOCOL_ERROR,
    ];
    let mut seen = Answer::default();
    for round in 0..24u64 {
        // Half before Hello, half after.
        let mut raw = if round % 2 == 0 {
            RawConnection::open(&s.admin).await
        } else {
            RawConnection::backend(&s.admin).await
        };
        let answer = send_garbage(&mut raw, &garbage(&mut rng)).await;
        if let Some(code) = answer.closed_with {
            assert!(known.contains(&code), "close code {code}: {answer:?}");
        }
        assert!(
            answer.errors > 0 || answer.ended || answer.closed_with.is_some(),
            "round {round}: garbage got neither a typed error nor an end: {answer:?}"
        );
        seen.errors += answer.errors;
        seen.oks += answer.oks;
        // The server serves on, on another connection.
        well_behaved
            .document("fine")
            .set(&json!({ "round": round }))
            .await
            .expect("a well-behaved write after garbage");
        let fresh = s.backend().await;
        assert_eq!(
            fresh.document("fine").get().await.expect("a read").data["round"],
            round
        );
    }
    assert!(seen.errors > 0, "some garbage got typed errors: {seen:?}");
}
