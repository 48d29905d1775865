//! Bad input of every kind, sent as raw frames: each gets its typed error, nothing is
//! stored, the connection stays usable, and other connections never notice.

use std::time::Duration;

use serde_json::json;
use syncline_proto::frame;
use syncline_proto::{ErrorCode, Request, RequestFrame, Response};
use syncline_tests::{next_event, RawConnection, TestServer};

fn code(r: syncline_proto::ResponseFrame) -> ErrorCode {
    r.result.expect_err("an error").code
}

async fn still_healthy(raw: &mut RawConnection, id: u64) {
    let r = raw.call(id, Request::Ping).await;
    assert_eq!(r.id, id);
    assert_eq!(r.result, Ok(Response::Pong));
}

#[tokio::test]
async fn malformed_and_oversized_frames_get_errors_and_the_connection_lives() {
    let s = TestServer::start().await;
    // A bystander subscribed on its own connection.
    let bystander = s.backend().await;
    bystander.document("calm").set(&json!(0)).await.unwrap();
    let mut sub = bystander.document("calm").subscribe().await.unwrap();
    next_event(&mut sub).await;

    let mut raw = RawConnection::backend(&s.admin).await;
    // A well-framed body that is not a request.
    let mut garbage = 5u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xff, 0xfe, 0xfd, 0xfc, 0xfb]);
    raw.send_bytes(&garbage).await;
    let r = raw.response().await;
    assert_eq!((r.id, code(r)), (0, ErrorCode::InvalidArgument));
    still_healthy(&mut raw, 10).await;

    // A frame over the 64 KiB limit: refused by its length, skipped, then business as usual.
    let mut big = (100_000u32).to_be_bytes().to_vec();
    big.extend_from_slice(&vec![0u8; 100_000]);
    raw.send_bytes(&big).await;
    let r = raw.response().await;
    assert_eq!((r.id, code(r)), (0, ErrorCode::TooLarge));
    still_healthy(&mut raw, 11).await;

    // A second Hello.
    let hello = Request::Hello {
        credential: syncline_proto::Credential::Token("x".into()),
        service: None,
    };
    assert_eq!(code(raw.call(12, hello).await), ErrorCode::InvalidArgument);
    still_healthy(&mut raw, 13).await;

    bystander.document("calm").set(&json!(1)).await.unwrap();
    assert_eq!(next_event(&mut sub).await.revision, 1);
}

#[tokio::test]
async fn bad_documents_are_refused_and_nothing_is_stored() {
    let s = TestServer::start().await;
    let mut raw = RawConnection::backend(&s.admin).await;
    let set = |document: &str, data: &str| Request::DocSet {
        document: document.into(),
        data: data.into(),
        if_match: None,
        ttl: None,
    };
    let cases: Vec<(&str, Request, ErrorCode)> = vec![
        (
            "invalid JSON",
            set("d", "{not json"),
            ErrorCode::InvalidArgument,
        ),
        ("empty data", set("d", ""), ErrorCode::InvalidArgument),
        (
            "data over 16 KiB",
            set("d", &format!("\"{}\"", "x".repeat(16 * 1024))),
            ErrorCode::TooLarge,
        ),
        (
            "name over 320 chars",
            set(&"n".repeat(321), "{}"),
            ErrorCode::TooLarge,
        ),
        ("empty name", set("", "{}"), ErrorCode::InvalidArgument),
        (
            "unknown sid",
            set("ET00000000000000000000000000000000", "{}"),
            ErrorCode::NotFound,
        ),
        (
            "get unknown",
            Request::DocGet {
                document: "missing".into(),
            },
            ErrorCode::NotFound,
        ),
        (
            "update a missing document",
            Request::DocUpdate {
                document: "missing".into(),
                data: "{}".into(),
                if_match: None,
            },
            ErrorCode::NotFound,
        ),
        (
            "if_match on a missing document",
            Request::DocSet {
                document: "missing".into(),
                data: "{}".into(),
                if_match: Some(0),
                ttl: None,
            },
            ErrorCode::NotFound,
        ),
        (
            "unsubscribe unknown",
            Request::Unsubscribe { sub_id: 77 },
            ErrorCode::NotFound,
        ),
    ];
    for (i, (name, request, want)) in cases.into_iter().enumerate() {
        let r = raw.call(100 + i as u64, request).await;
        assert_eq!(r.id, 100 + i as u64, "case {name}");
        assert_eq!(code(r), want, "case {name}");
    }
    // Nothing was created along the way.
    let r = raw
        .call(
            1,
            Request::DocGet {
                document: "d".into(),
            },
        )
        .await;
    assert_eq!(code(r), ErrorCode::NotFound);

    // Exactly at the limits is fine.
    let at_limit = format!("\"{}\"", "x".repeat(16 * 1024 - 2));
    let name = "é".repeat(320);
    let r = raw.call(2, set(&name, &at_limit)).await;
    assert!(matches!(r.result, Ok(Response::Written(_))), "{r:?}");

    // A merge patch must be an object; the document is unchanged after the refusal.
    let r = raw.call(3, set("obj", r#"{"a":1}"#)).await;
    assert!(r.result.is_ok());
    let r = raw
        .call(
            4,
            Request::DocUpdate {
                document: "obj".into(),
                data: "[1]".into(),
                if_match: None,
            },
        )
        .await;
    assert_eq!(code(r), ErrorCode::InvalidArgument);
    let r = raw
        .call(
            5,
            Request::DocGet {
                document: "obj".into(),
            },
        )
        .await;
    match r.result {
        Ok(Response::Document(d)) => assert_eq!((d.revision, d.data.as_str()), (0, r#"{"a":1}"#)),
        other => panic!("{other:?}"),
    }
    // A merge that would grow the document past the limit is refused too.
    let half = format!("\"{}\"", "y".repeat(9000));
    let r = raw
        .call(
            6,
            Request::DocUpdate {
                document: "obj".into(),
                data: format!(r#"{{"b":{half}}}"#),
                if_match: None,
            },
        )
        .await;
    assert!(r.result.is_ok());
    let r = raw
        .call(
            7,
            Request::DocUpdate {
                document: "obj".into(),
                data: format!(r#"{{"c":{half}}}"#),
                if_match: None,
            },
        )
        .await;
    assert_eq!(code(r), ErrorCode::TooLarge);
}

#[tokio::test]
async fn subscription_ids_are_checked() {
    let s = TestServer::start().await;
    let mut raw = RawConnection::backend(&s.admin).await;
    raw.call(
        1,
        Request::DocSet {
            document: "x".into(),
            data: "1".into(),
            if_match: None,
            ttl: None,
        },
    )
    .await;
    let sub = |sub_id| Request::Subscribe {
        sub_id,
        object: "x".into(),
        since: None,
        window: None,
    };
    assert!(raw.call(2, sub(5)).await.result.is_ok());
    assert_eq!(code(raw.call(3, sub(5)).await), ErrorCode::InvalidArgument);
    assert!(raw
        .call(4, Request::Unsubscribe { sub_id: 5 })
        .await
        .result
        .is_ok());
    assert!(
        raw.call(5, sub(5)).await.result.is_ok(),
        "an id is free again after unsubscribe"
    );
}

#[tokio::test]
async fn request_floods_are_rate_limited_without_harm() {
    let s = TestServer::start_with(|o| {
        o.rate.per_second = 20.0;
        o.rate.burst = 10.0;
    })
    .await;
    let mut raw = RawConnection::backend(&s.admin).await;
    for id in 0..50 {
        raw.send(1000 + id, Request::Ping).await;
    }
    let mut limited = 0;
    for _ in 0..50 {
        match raw.response().await.result {
            Ok(Response::Pong) => {}
            Err(e) if e.code == ErrorCode::RateLimited => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(limited >= 30, "most of the flood is refused, got {limited}");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    still_healthy(&mut raw, 1).await;
}

/// JSON that is well-formed but that no reader can load back: nesting past serde_json's
/// recursion limit, a lone UTF-16 surrogate, a number beyond `f64`.
fn unloadable_json() -> Vec<String> {
    vec![
        format!("{}{}", "[".repeat(200), "]".repeat(200)),
        format!(r#"{{"a":{}1{}}}"#, r#"{"b":"#.repeat(150), "}".repeat(150)),
        r#""\ud800""#.into(),
        r#"{"name":"\udc00"}"#.into(),
        "1e400".into(),
        r#"{"n":-1e400}"#.into(),
    ]
}

#[tokio::test]
async fn json_that_readers_cannot_load_is_refused_on_every_write_path() {
    let s = TestServer::start().await;
    let backend = s.backend().await;
    backend
        .document("shared")
        .set(&json!({"ok": 1}))
        .await
        .unwrap();
    backend.list("log").push(&json!({"ok": 1})).await.unwrap();
    backend
        .map("room")
        .set("k", &json!({"ok": 1}))
        .await
        .unwrap();
    let mut watcher = backend.document("shared").subscribe().await.unwrap();
    next_event(&mut watcher).await;
    backend.stream("chat").create(None).await.unwrap();
    let mut chat = backend.stream("chat").subscribe().await.unwrap();
    next_event(&mut chat).await;

    let mut raw = RawConnection::backend(&s.admin).await;
    let map_key = || syncline_proto::ItemKey::Key("k".into());
    let mut id = 100;
    for data in unloadable_json() {
        let writes = [
            Request::DocSet {
                document: "shared".into(),
                data: data.clone(),
                if_match: None,
                ttl: None,
            },
            Request::DocSet {
                document: "new-doc".into(),
                data: data.clone(),
                if_match: None,
                ttl: None,
            },
            Request::DocUpdate {
                document: "shared".into(),
                data: format!(r#"{{"poison":{data}}}"#),
                if_match: None,
            },
            Request::ListPush {
                list: "log".into(),
                data: data.clone(),
                ttl: None,
                ephemeral: false,
            },
            Request::ItemSet {
                kind: syncline_proto::ObjectKind::Map,
                object: "room".into(),
                key: map_key(),
                data: data.clone(),
                if_match: None,
                ttl: None,
                ephemeral: false,
            },
            Request::ItemUpdate {
                kind: syncline_proto::ObjectKind::Map,
                object: "room".into(),
                key: map_key(),
                data: format!(r#"{{"poison":{data}}}"#),
                if_match: None,
            },
            Request::Publish {
                stream: "chat".into(),
                data: data.clone(),
            },
        ];
        for request in writes {
            id += 1;
            let r = raw.call(id, request.clone()).await;
            let err = r.result.expect_err("refused");
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{request:?}");
            assert!(
                err.message.contains("readers"),
                "names the rule: {}",
                err.message
            );
        }
    }
    still_healthy(&mut raw, 1).await;
    // Everything still reads back, and the watchers heard nothing and live on.
    assert_eq!(
        backend.document("shared").get().await.unwrap().data,
        json!({"ok": 1})
    );
    assert_eq!(
        backend.list("log").get(0).await.unwrap().data,
        json!({"ok": 1})
    );
    assert_eq!(
        backend.map("room").get("k").await.unwrap().data,
        json!({"ok": 1})
    );
    assert_eq!(
        backend.fetch("new-doc").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    backend
        .document("shared")
        .update(&json!({"after": 1}))
        .await
        .unwrap();
    assert_eq!(next_event(&mut watcher).await.revision, 1);
    backend
        .stream("chat")
        .publish(&json!({"after": 1}))
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut chat).await.kind,
        syncline_client::SyncEventKind::MessagePublished { .. }
    ));
}

#[tokio::test]
async fn an_item_create_writes_only_an_absent_map_key_and_refuses_bad_keys_and_lists() {
    use syncline_proto::{ItemKey, ObjectKind};
    let s = TestServer::start().await;
    let backend = s.backend().await;
    backend.list("log").push(&json!("first")).await.unwrap();
    let mut raw = RawConnection::backend(&s.admin).await;
    let create = |kind: ObjectKind, object: &str, key: ItemKey, data: &str| Request::ItemCreate {
        kind,
        object: object.into(),
        key,
        data: data.into(),
        ttl: None,
        ephemeral: false,
    };
    let key = |k: &str| ItemKey::Key(k.into());

    let r = raw
        .call(2, create(ObjectKind::Map, "m", key("k"), r#""first""#))
        .await;
    let Ok(Response::Written(w)) = r.result else {
        panic!("{r:?}")
    };
    assert_eq!((w.revision, w.key), (1, Some(key("k"))));
    let r = raw
        .call(3, create(ObjectKind::Map, "m", key("k"), r#""second""#))
        .await;
    assert_eq!((r.id, code(r)), (3, ErrorCode::AlreadyExists));
    assert_eq!(
        backend.map("m").get("k").await.unwrap().data,
        json!("first")
    );

    let refused = [
        create(ObjectKind::Map, "fresh", key(""), "1"),
        create(ObjectKind::Map, "fresh", ItemKey::Index(0), "1"),
        create(ObjectKind::Map, "fresh", key("k"), "{"),
        // A list item is only ever created by push.
        create(ObjectKind::List, "log", ItemKey::Index(0), "1"),
        create(ObjectKind::List, "log", ItemKey::Index(1), "1"),
        create(ObjectKind::List, "log", key("k"), "1"),
        create(ObjectKind::Document, "d", key("k"), "1"),
    ];
    let mut id = 10;
    for request in refused {
        id += 1;
        let r = raw.call(id, request.clone()).await;
        assert_eq!(r.id, id);
        let err = r.result.expect_err("refused");
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{request:?}: {err:?}");
        if let Request::ItemCreate {
            kind: ObjectKind::List,
            key: ItemKey::Index(_),
            ..
        } = request
        {
            assert!(err.message.contains("push"), "says why: {}", err.message);
        }
        still_healthy(&mut raw, 1000 + id).await;
    }
    // Nothing was written: no map "fresh", the list as it was.
    assert_eq!(
        backend.fetch("fresh").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    let log = backend.list("log");
    assert_eq!(log.info().await.unwrap().revision, 1);
    assert_eq!(log.get(0).await.unwrap().data, json!("first"));
}

#[tokio::test]
async fn ttls_beyond_a_year_are_refused() {
    let s = TestServer::start().await;
    let mut raw = RawConnection::backend(&s.admin).await;
    let year = syncline_proto::limits::MAX_TTL_S;
    let with_ttl = |ttl: u64| {
        vec![
            Request::DocSet {
                document: "t".into(),
                data: "{}".into(),
                if_match: None,
                ttl: Some(ttl),
            },
            Request::ListPush {
                list: "l".into(),
                data: "1".into(),
                ttl: Some(ttl),
                ephemeral: false,
            },
            Request::ItemSet {
                kind: syncline_proto::ObjectKind::Map,
                object: "m".into(),
                key: syncline_proto::ItemKey::Key("k".into()),
                data: "1".into(),
                if_match: None,
                ttl: Some(ttl),
                ephemeral: false,
            },
            Request::Create {
                kind: syncline_proto::ObjectKind::List,
                unique_name: Some(format!("c{ttl}")),
                ttl: Some(ttl),
            },
        ]
    };
    let mut id = 1;
    for ttl in [year + 1, 260_000_000_000, u64::MAX] {
        for request in with_ttl(ttl) {
            id += 1;
            let err = raw
                .call(id, request.clone())
                .await
                .result
                .expect_err("refused");
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{request:?}");
            assert!(err.message.contains("365 days"), "{}", err.message);
        }
    }
    for request in with_ttl(year) {
        id += 1;
        let r = raw.call(id, request.clone()).await;
        assert!(r.result.is_ok(), "a year is allowed: {request:?} {r:?}");
    }
}

/// A `DocSet` whose frame is far over the 64 KiB default frame limit.
fn huge_set(document: &str) -> Request {
    Request::DocSet {
        document: document.into(),
        data: format!("\"{}\"", "x".repeat(100_000)),
        if_match: None,
        ttl: None,
    }
}

#[tokio::test]
async fn an_oversized_frame_is_answered_with_its_request_id() {
    let s = TestServer::start().await;
    let mut raw = RawConnection::backend(&s.admin).await;
    // Ids of every varint width: the answer names the request, so a client can match it.
    for id in [7u64, 300, 70_000, u64::from(u32::MAX) + 5] {
        let big = frame::encode(&RequestFrame {
            id,
            request: huge_set("big"),
        });
        assert!(big.len() > 64 * 1024);
        raw.send_bytes(&big).await;
        let r = raw.response().await;
        assert_eq!((r.id, code(r)), (id, ErrorCode::TooLarge), "id {id}");
        still_healthy(&mut raw, id + 1).await;
    }
    // An undecodable body whose id is readable is answered to that id too.
    let mut bad = 3u32.to_be_bytes().to_vec();
    bad.extend_from_slice(&[77, 0xff, 0xfe]);
    raw.send_bytes(&bad).await;
    let r = raw.response().await;
    assert_eq!((r.id, code(r)), (77, ErrorCode::InvalidArgument));
    // Nothing was stored.
    let r = raw
        .call(
            5,
            Request::DocGet {
                document: "big".into(),
            },
        )
        .await;
    assert_eq!(code(r), ErrorCode::NotFound);
}

#[tokio::test]
async fn a_request_over_the_frame_limit_fails_at_once_in_the_client() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let big = json!({ "blob": "x".repeat(100 * 1024) });
    // Before, the server's refusal (id 0) matched no request and this waited forever.
    let err = tokio::time::timeout(Duration::from_secs(5), c.document("x").set(&big))
        .await
        .expect("refused promptly, not left waiting")
        .expect_err("refused");
    assert_eq!(err.code(), ErrorCode::TooLarge);
    // The message names the request's size (data, name and framing) and the limit.
    assert!(
        err.to_string()
            .starts_with("TooLarge: request is 102422 bytes, the server's frame limit is 65536"),
        "{err}"
    );
    // The connection carries on, and nothing was written.
    c.ping().await.unwrap();
    assert_eq!(
        c.document("x").get().await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    c.document("x").set(&json!({"small": 1})).await.unwrap();
}

#[tokio::test]
async fn the_client_learns_the_servers_frame_limit_from_welcome() {
    let s = TestServer::start_with(|o| o.limits.max_frame_bytes = 8 * 1024).await;
    let c = s.backend().await;
    assert_eq!(c.welcome().max_frame_bytes, 8 * 1024);
    // 10 KiB of data is within the 16 KiB data limit, but not within this frame limit.
    let err = c
        .document("d")
        .set(&json!("x".repeat(10 * 1024)))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), ErrorCode::TooLarge);
    assert!(err.to_string().contains("frame limit is 8192"), "{err}");
    c.document("d")
        .set(&json!("x".repeat(6 * 1024)))
        .await
        .unwrap();
}

/// Id 0 is reserved for notices (answers tied to no request): a request numbered 0 is
/// not run, and gets an `InvalidArgument` notice; the connection goes on.
#[tokio::test]
async fn a_request_numbered_zero_is_refused_with_a_notice_and_not_run() {
    let s = TestServer::start().await;
    let mut raw = RawConnection::backend(&s.admin).await;
    let set = Request::DocSet {
        document: "zero".into(),
        data: r#"{"a":1}"#.into(),
        if_match: None,
        ttl: None,
    };
    let r = raw.call(0, set).await;
    assert_eq!(r.id, 0);
    let e = r.result.expect_err("refused");
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert!(e.message.contains("id 0"), "{}", e.message);
    let get = raw
        .call(
            2,
            Request::DocGet {
                document: "zero".into(),
            },
        )
        .await;
    assert_eq!(
        code(get),
        ErrorCode::NotFound,
        "the refused write was not run"
    );
    still_healthy(&mut raw, 3).await;
}
