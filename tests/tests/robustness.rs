//! Clients that misbehave or race: reused subscription ids, connections that stop
//! reading, resuming a name that was deleted and re-created, subscription limits.

use std::time::Duration;

use serde_json::json;
use syncline_proto::{Credential, ErrorCode, EventKind, Request, Response};
use syncline_tests::{RawConnection, TestServer, WAIT};

fn set(doc: &str, v: u64) -> Request {
    Request::DocSet {
        document: doc.into(),
        data: json!({ "v": v }).to_string(),
        if_match: None,
        ttl: None,
    }
}

fn subscribe(sub_id: u64, object: &str) -> Request {
    Request::Subscribe {
        sub_id,
        object: object.into(),
        since: None,
        window: None,
    }
}

#[tokio::test]
async fn a_reused_sub_id_never_gets_the_old_objects_events() {
    let s = TestServer::start().await;
    let writer = s.backend().await;
    writer.document("a").set(&json!(0)).await.unwrap();
    writer.document("b").set(&json!(0)).await.unwrap();
    let b_sid = writer.document("b").get().await.unwrap().sid;
    let mut raw = RawConnection::backend(&s.admin).await;
    assert!(raw.call(1, subscribe(5, "a")).await.result.is_ok());
    // Keep events for `a` flowing while sub 5 is moved from `a` to `b`.
    let busy = {
        let doc = writer.document("a");
        tokio::spawn(async move {
            for v in 1..=300 {
                doc.set(&json!(v)).await.unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(raw
        .call(2, Request::Unsubscribe { sub_id: 5 })
        .await
        .result
        .is_ok());
    assert!(raw.call(3, subscribe(5, "b")).await.result.is_ok());
    busy.await.unwrap();
    writer.document("b").set(&json!("after")).await.unwrap();
    // Read everything up to b's update; after b's snapshot, nothing of `a` may come.
    let mut seen_b = false;
    loop {
        let (sub_id, e) = raw.events(1).await.remove(0);
        assert_eq!(sub_id, 5);
        if e.object_sid == b_sid {
            seen_b = true;
            if matches!(e.kind, EventKind::DocumentUpdated { .. }) {
                break;
            }
        } else {
            assert!(
                !seen_b,
                "an event of `a` arrived after `b`'s snapshot: {e:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_still_cut_off_at_token_expiry() {
    let s = TestServer::start().await;
    let token = s.token_closing_in("lazy", 2);
    let mut raw = RawConnection::authenticated(&s.admin, Credential::Token(token)).await;
    // Ask for far more than fits in flight and never read a single answer.
    let big = "x".repeat(15 * 1024);
    for id in 0..600u64 {
        let r = Request::DocSet {
            document: format!("d{}", id % 4),
            data: json!(big).to_string(),
            if_match: None,
            ttl: None,
        };
        let send = raw.send(100 + id, r);
        if tokio::time::timeout(Duration::from_millis(500), send)
            .await
            .is_err()
        {
            break; // flow control: the server stopped reading us
        }
    }
    let closed = tokio::time::timeout(WAIT, raw.conn.closed()).await;
    assert!(closed.is_ok(), "the connection outlived its token");
    // And the server shuts down promptly.
    let mut s = s;
    tokio::time::timeout(WAIT, s.shutdown())
        .await
        .expect("shutdown finishes");
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_client_that_stops_reading() {
    let mut s = TestServer::start().await;
    let mut raw = RawConnection::backend(&s.admin).await;
    raw.call(1, set("d", 0)).await;
    for id in 0..2000u64 {
        let send = raw.send(
            10 + id,
            Request::DocGet {
                document: "d".into(),
            },
        );
        if tokio::time::timeout(Duration::from_millis(300), send)
            .await
            .is_err()
        {
            break;
        }
    }
    tokio::time::timeout(WAIT, s.shutdown())
        .await
        .expect("shutdown finishes");
}

#[tokio::test]
async fn resuming_a_replica_of_a_deleted_object_is_not_found_even_if_the_name_is_reused() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let doc = c.document("phoenix");
    doc.set(&json!({"v": "old"})).await.unwrap();
    let mut sub = doc.subscribe().await.unwrap();
    syncline_tests::next_event(&mut sub).await;
    let kept = sub.document().unwrap().clone();
    drop(sub);
    doc.delete().await.unwrap();
    doc.set(&json!({"v": "new"})).await.unwrap();
    doc.set(&json!({"v": "new1"})).await.unwrap();
    let err = doc
        .resume(kept)
        .await
        .err()
        .expect("the old object is gone");
    assert_eq!(err.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn subscriptions_per_connection_are_bounded() {
    // A burst above the request rate limit, which is not what this test is about.
    let s = TestServer::start_with(|o| o.rate.burst = 5000.0).await;
    let mut raw = RawConnection::backend(&s.admin).await;
    raw.call(1, set("d", 0)).await;
    for sub_id in 0..1024u64 {
        raw.send(1000 + sub_id, subscribe(sub_id, "d")).await;
    }
    for _ in 0..1024 {
        assert!(matches!(
            raw.response().await.result,
            Ok(Response::Subscribed { .. })
        ));
    }
    let r = raw.call(5000, subscribe(99_999, "d")).await;
    assert_eq!(r.result.unwrap_err().code, ErrorCode::RateLimited);
    assert!(raw
        .call(5001, Request::Unsubscribe { sub_id: 0 })
        .await
        .result
        .is_ok());
    assert!(raw.call(5002, subscribe(99_999, "d")).await.result.is_ok());
}
