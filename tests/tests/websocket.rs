//! The WebSocket edge (`/v1/ws`, for browsers) is the QUIC protocol in JSON text
//! messages over the same core session and watch: the same answers, events, errors,
//! token rules, ACL and presence. Driven by a real WebSocket client over TLS, against
//! real servers on loopback.

use std::time::Duration;

use serde_json::json;
use syncline_proto::{
    Credential, ErrorCode, EventKind, ItemKey, ObjectKind, Request, Response, Rights, ServiceFlags,
    ServiceFlagsPatch,
};
use syncline_tests::{https_request, TestServer, WsClient, WAIT};

fn api_key(s: &TestServer) -> Credential {
    Credential::ApiKey {
        sid: s.admin.api_key_sid.clone(),
        secret: s.admin.api_key_secret.clone(),
    }
}

async fn as_identity(s: &TestServer, identity: &str) -> WsClient {
    let token = s.token(identity, 3600);
    WsClient::hello(&s.admin, Credential::Token(token)).await.0
}

fn doc_set(document: &str, data: serde_json::Value) -> Request {
    Request::DocSet {
        document: document.into(),
        data: data.to_string(),
        if_match: None,
        ttl: None,
    }
}

fn subscribe(sub_id: u64, object: &str, since: Option<u64>) -> Request {
    Request::Subscribe {
        sub_id,
        object: object.into(),
        since,
        window: None,
    }
}

#[tokio::test]
async fn a_browser_client_writes_and_watches_documents_alongside_quic_clients() {
    let s = TestServer::start().await;
    let (mut alice, welcome) =
        WsClient::hello(&s.admin, Credential::Token(s.token("alice", 3600))).await;
    assert_eq!(welcome.identity.as_deref(), Some("alice"));
    assert_eq!(welcome.service_sid, s.admin.default_service_sid);
    assert!(
        welcome.connection_id < 1 << 53,
        "connection ids (event origins) are exact as JavaScript numbers"
    );

    let written = alice
        .request(doc_set("board", json!({"title": "plan"})))
        .await
        .expect("DocSet answered");
    let Response::Written(w) = written else {
        panic!("Written, not {written:?}");
    };
    assert_eq!((w.kind, w.revision), (ObjectKind::Document, 0));

    let subscribed = alice
        .request(subscribe(1, "board", None))
        .await
        .expect("subscribed");
    assert!(matches!(subscribed, Response::Subscribed { sub_id: 1, .. }));
    let snapshot = alice.event().await;
    assert_eq!(snapshot.sub_id, 1);
    assert!(matches!(snapshot.event.kind, EventKind::Snapshot { .. }));

    // A QUIC client's change reaches the browser, marked as someone else's.
    let bob = s.client_as("bob").await;
    bob.document("board")
        .set(&json!({"title": "plan B"}))
        .await
        .expect("QUIC write");
    let update = alice.event().await;
    assert_eq!(update.event.revision, 1);
    assert_eq!(update.event.actor, "bob");
    assert_ne!(update.event.origin, welcome.connection_id);
    match update.event.kind {
        EventKind::DocumentUpdated { data, previous, .. } => {
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&data).ok(),
                Some(json!({"title": "plan B"}))
            );
            assert_eq!(previous.as_deref(), Some(r#"{"title":"plan"}"#));
        }
        other => panic!("DocumentUpdated, not {other:?}"),
    }

    // The browser's own change comes back with its connection id as the origin, and
    // the QUIC side reads it.
    alice
        .request(Request::DocUpdate {
            document: "board".into(),
            data: json!({"owner": "alice"}).to_string(),
            if_match: Some(1),
        })
        .await
        .expect("DocUpdate");
    let own = alice.event().await;
    assert_eq!(own.event.origin, welcome.connection_id);
    let read = bob.document("board").get().await.expect("QUIC read");
    assert_eq!(read.data, json!({"title": "plan B", "owner": "alice"}));

    // A stale revision is a Conflict carrying the current one, as on QUIC.
    let stale = alice
        .request(Request::DocUpdate {
            document: "board".into(),
            data: "{}".into(),
            if_match: Some(0),
        })
        .await
        .expect_err("stale");
    assert_eq!(
        (stale.code, stale.current_revision),
        (ErrorCode::Conflict, Some(2))
    );
}

#[tokio::test]
async fn a_resumed_subscription_gets_only_what_it_missed() {
    let s = TestServer::start().await;
    let mut ws = as_identity(&s, "alice").await;
    for n in 0..4 {
        ws.request(Request::ListPush {
            list: "log".into(),
            data: json!({ "n": n }).to_string(),
            ttl: None,
            ephemeral: false,
        })
        .await
        .expect("pushed");
    }
    // Creating the list was revision 0 and each push one more: a replica at revision
    // 2 missed the last two pushes, and only they come.
    ws.request(subscribe(9, "log", Some(2)))
        .await
        .expect("subscribed");
    let mut missed = Vec::new();
    while missed.len() < 2 {
        let e = ws.event().await;
        match e.event.kind {
            EventKind::ItemAdded { item } => missed.push((e.event.revision, item.data)),
            other => panic!("ItemAdded, not {other:?}"),
        }
    }
    assert_eq!(
        missed,
        vec![(3, r#"{"n":2}"#.to_owned()), (4, r#"{"n":3}"#.to_owned())]
    );
    ws.request(Request::Ping).await.expect("pong");
    assert!(ws.notices.is_empty());
}

#[tokio::test]
async fn bad_messages_get_typed_errors_and_the_connection_goes_on() {
    let s = TestServer::start().await;
    let mut ws = as_identity(&s, "alice").await;

    // Not JSON: a notice (id 0), since no id can be read.
    ws.send_text("{not json".into()).await;
    // JSON with a readable id but a request missing a field: answered under its id.
    ws.send_text(r#"{"id":41,"request":{"DocSet":{"document":"d"}}}"#.into())
        .await;
    let missing = ws.answer(41).await.expect_err("refused");
    assert_eq!(missing.code, ErrorCode::InvalidArgument);
    assert!(missing.message.contains("data"), "{}", missing.message);
    assert_eq!(ws.notices.len(), 1, "the unreadable message got a notice");
    assert_eq!(ws.notices[0].code, ErrorCode::InvalidArgument);

    // An unknown request.
    ws.send_text(r#"{"id":42,"request":{"Teleport":{}}}"#.into())
        .await;
    assert_eq!(
        ws.answer(42).await.expect_err("refused").code,
        ErrorCode::InvalidArgument
    );

    // Data that is not JSON text, and a message over the frame limit.
    let bad_data = ws
        .request(Request::DocSet {
            document: "d".into(),
            data: "{oops".into(),
            if_match: None,
            ttl: None,
        })
        .await
        .expect_err("refused");
    assert_eq!(bad_data.code, ErrorCode::InvalidArgument);
    let huge = "x".repeat(70 * 1024);
    let too_large = ws
        .request(doc_set("d", json!({ "blob": huge })))
        .await
        .expect_err("refused");
    assert_eq!(too_large.code, ErrorCode::TooLarge);

    // Request id 0 is the notices': refused without running.
    ws.send_text(r#"{"id":0,"request":"Ping"}"#.into()).await;
    // A binary message: requests are text.
    {
        use futures_util::SinkExt;
        ws.socket
            .send(tokio_tungstenite::tungstenite::Message::Binary(
                vec![1, 2, 3].into(),
            ))
            .await
            .expect("sent");
    }
    assert_eq!(ws.request(Request::Ping).await, Ok(Response::Pong));
    assert_eq!(ws.notices.len(), 3, "{:?}", ws.notices);
    assert!(ws
        .notices
        .iter()
        .all(|n| n.code == ErrorCode::InvalidArgument));

    // Nothing was written by any of it.
    let absent = ws
        .request(Request::DocGet {
            document: "d".into(),
        })
        .await
        .expect_err("absent");
    assert_eq!(absent.code, ErrorCode::NotFound);
}

#[tokio::test]
async fn a_connection_must_authenticate_first_and_a_bad_token_closes_it() {
    let s = TestServer::start().await;
    let mut ws = WsClient::connect(&s.admin).await;
    let refused = ws.request(Request::Ping).await.expect_err("refused");
    assert_eq!(refused.code, ErrorCode::Unauthorized);
    assert_eq!(ws.closed().await.map(|c| c.0), Some(4002));

    let mut ws = WsClient::connect(&s.admin).await;
    let refused = ws
        .request(Request::Hello {
            credential: Credential::Token("not.a.token".into()),
            service: None,
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code, ErrorCode::Unauthorized);
    assert_eq!(ws.closed().await.map(|c| c.0), Some(4002));
}

#[tokio::test]
async fn an_upgrade_without_the_subprotocol_or_a_plain_get_is_refused_with_json() {
    let s = TestServer::start().await;
    match WsClient::open(&s.admin, None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 400);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(body.contains("syncline.v1"), "{body}");
        }
        other => panic!("refused with 400, not {:?}", other.map(|_| "an upgrade")),
    }
    let (status, answer) = https_request(&s.admin, "GET", "/v1/ws", None, "").await;
    assert!((400..500).contains(&status), "{status}: {answer}");
    assert!(answer.contains("\"code\":\"InvalidArgument\""), "{answer}");
}

#[tokio::test]
async fn the_acl_decides_what_a_browser_may_read_and_write() {
    let s = TestServer::start().await;
    let (mut backend, _) = WsClient::hello(&s.admin, api_key(&s)).await;
    backend
        .request(Request::ServiceUpdate {
            service: s.admin.default_service_sid.clone(),
            flags: ServiceFlagsPatch {
                acl_enabled: Some(true),
                ..Default::default()
            },
        })
        .await
        .expect("ACL on");
    backend
        .request(doc_set("secret", json!({"x": 1})))
        .await
        .expect("backend writes");
    backend
        .request(Request::PermissionGrant {
            object: "secret".into(),
            identity: "reader".into(),
            rights: Rights {
                read: true,
                write: false,
                manage: false,
            },
        })
        .await
        .expect("granted");

    let mut stranger = as_identity(&s, "stranger").await;
    let e = stranger
        .request(Request::DocGet {
            document: "secret".into(),
        })
        .await
        .expect_err("no access");
    assert_eq!(e.code, ErrorCode::Forbidden);

    let mut reader = as_identity(&s, "reader").await;
    assert!(matches!(
        reader
            .request(Request::DocGet {
                document: "secret".into()
            })
            .await,
        Ok(Response::Document(_))
    ));
    let e = reader
        .request(doc_set("secret", json!({"x": 2})))
        .await
        .expect_err("read only");
    assert_eq!(e.code, ErrorCode::Forbidden);

    // Losing `read` ends the live subscription with the reason.
    reader
        .request(subscribe(3, "secret", None))
        .await
        .expect("subscribed");
    assert!(matches!(
        reader.event().await.event.kind,
        EventKind::Snapshot { .. }
    ));
    backend
        .request(Request::PermissionRevoke {
            object: "secret".into(),
            identity: "reader".into(),
        })
        .await
        .expect("revoked");
    match reader.event().await.event.kind {
        EventKind::SubscriptionEnded { error } => assert_eq!(error.code, ErrorCode::Forbidden),
        other => panic!("SubscriptionEnded, not {other:?}"),
    }
}

#[tokio::test]
async fn revoking_the_key_that_signed_the_token_closes_the_socket_with_4002() {
    let s = TestServer::start().await;
    let (mut backend, _) = WsClient::hello(&s.admin, api_key(&s)).await;
    let Ok(Response::Key(key)) = backend
        .request(Request::KeyCreate {
            friendly_name: None,
        })
        .await
    else {
        panic!("a key");
    };
    let token = syncline_client::token::mint(
        &key.sid,
        key.secret.as_deref().expect("the secret, once"),
        &s.admin.account_sid,
        &s.admin.default_service_sid,
        "carol",
        600,
        syncline_client::token::now_s(),
    );
    let (mut carol, _) = WsClient::hello(&s.admin, Credential::Token(token)).await;
    backend
        .request(Request::KeyRevoke {
            sid: key.sid.clone(),
        })
        .await
        .expect("revoked");
    let (code, _) = carol.closed().await.expect("a close frame");
    assert_eq!(code, 4002);
}

#[tokio::test]
async fn an_expired_token_gets_a_notice_then_a_4003_close() {
    let s = TestServer::start().await;
    let token = s.token_closing_in("dave", 2);
    let (mut dave, _) = WsClient::hello(&s.admin, Credential::Token(token)).await;
    let (code, _) = dave.closed().await.expect("a close frame");
    assert_eq!(code, 4003);
    assert!(
        dave.notices
            .iter()
            .any(|n| n.code == ErrorCode::TokenExpired),
        "{:?}",
        dave.notices
    );
}

#[tokio::test]
async fn a_server_shutting_down_closes_with_4001() {
    let mut s = TestServer::start().await;
    let mut ws = as_identity(&s, "erin").await;
    if let Some(server) = s.server.take() {
        server.shutdown().await;
    }
    assert_eq!(ws.closed().await.map(|c| c.0), Some(4001));
}

/// A socket that stops reading (a browser tab frozen, a laptop closed) answers no
/// pings: the server drops it after its idle timeout, and its identity's presence ends.
/// One that keeps reading answers them and stays present.
#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_idle_timeout_and_a_live_one_stays() {
    let idle = Duration::from_millis(1500);
    let s = TestServer::start_with(|o| o.idle_timeout = idle).await;
    let (mut backend, _) = WsClient::hello(&s.admin, api_key(&s)).await;
    backend
        .request(Request::ServiceUpdate {
            service: s.admin.default_service_sid.clone(),
            flags: ServiceFlagsPatch {
                reachability_debouncing_enabled: Some(false),
                ..Default::default()
            },
        })
        .await
        .expect("no debouncing");
    let present = |key: &str| Request::ItemSet {
        kind: ObjectKind::Map,
        object: "room".into(),
        key: ItemKey::Key(key.into()),
        data: "{}".into(),
        if_match: None,
        ttl: None,
        ephemeral: true,
    };
    let mut frozen = as_identity(&s, "frozen").await;
    frozen.request(present("frozen")).await.expect("present");
    let mut awake = as_identity(&s, "awake").await;
    awake.request(present("awake")).await.expect("present");
    backend
        .request(subscribe(1, "room", None))
        .await
        .expect("subscribed");

    // `frozen` is never read again; `awake` and the backend read (and so answer pings),
    // `awake` for three idle timeouts.
    let awake = tokio::spawn(async move {
        let until = tokio::time::Instant::now() + idle * 3;
        while tokio::time::Instant::now() < until {
            assert_eq!(awake.request(Request::Ping).await, Ok(Response::Pong));
            tokio::time::sleep(idle / 4).await;
        }
        awake
    });
    let started = tokio::time::Instant::now();
    let removed = loop {
        let e = backend.event().await;
        if let EventKind::ItemRemoved { key, reason, .. } = e.event.kind {
            break (key, reason, started.elapsed());
        }
    };
    assert_eq!(removed.0, ItemKey::Key("frozen".into()));
    assert_eq!(removed.1, syncline_proto::Reason::Disconnected);
    assert!(
        removed.2 < WAIT,
        "noticed within the idle timeout and a margin"
    );

    // Past three timeouts, the reading client is still connected and present (the
    // backend keeps reading meanwhile, or it would be dropped too).
    while !awake.is_finished() {
        assert_eq!(backend.request(Request::Ping).await, Ok(Response::Pong));
        tokio::time::sleep(idle / 4).await;
    }
    let awake = awake
        .await
        .expect("the reading client was answered throughout");
    let items = backend
        .request(Request::Items {
            kind: ObjectKind::Map,
            object: "room".into(),
            from: None,
            order: syncline_proto::Order::Asc,
            limit: 10,
        })
        .await
        .expect("items");
    let Response::Items { items, .. } = items else {
        panic!("Items");
    };
    let keys: Vec<_> = items.into_iter().map(|i| i.key).collect();
    assert_eq!(keys, vec![ItemKey::Key("awake".into())]);
    drop((frozen, awake));
}

#[tokio::test]
async fn websocket_requests_are_counted_under_their_own_edge() {
    let s = TestServer::start().await;
    let mut ws = as_identity(&s, "frank").await;
    ws.request(doc_set("counted", json!(1)))
        .await
        .expect("written");
    let (status, metrics) = https_request(&s.admin, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .contains(r#"syncline_requests_total{edge="websocket",kind="write",outcome="ok"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_service_created_over_websocket_is_usable_by_tokens_of_it() {
    let s = TestServer::start().await;
    let (mut backend, _) = WsClient::hello(&s.admin, api_key(&s)).await;
    let Ok(Response::Service(service)) = backend
        .request(Request::ServiceCreate {
            unique_name: Some("chat".into()),
            flags: ServiceFlags::default(),
        })
        .await
    else {
        panic!("a service");
    };
    let token = syncline_client::token::mint(
        &s.admin.api_key_sid,
        &s.admin.api_key_secret,
        &s.admin.account_sid,
        &service.sid,
        "gina",
        600,
        syncline_client::token::now_s(),
    );
    let (mut gina, welcome) = WsClient::hello(&s.admin, Credential::Token(token)).await;
    assert_eq!(welcome.service_sid, service.sid);
    // Publishing creates the stream; a subscriber gets the messages after it.
    gina.request(Request::Publish {
        stream: "typing".into(),
        data: "{}".into(),
    })
    .await
    .expect("published");
    gina.request(subscribe(1, "typing", None))
        .await
        .expect("subscribed");
    assert!(matches!(
        gina.event().await.event.kind,
        EventKind::Snapshot { .. }
    ));
    gina.request(Request::Publish {
        stream: "typing".into(),
        data: json!({"who": "gina"}).to_string(),
    })
    .await
    .expect("published");
    match gina.event().await.event.kind {
        EventKind::MessagePublished { data, sequence } => {
            assert_eq!((data.as_str(), sequence), (r#"{"who":"gina"}"#, 2));
        }
        other => panic!("MessagePublished, not {other:?}"),
    }
}

#[tokio::test]
async fn a_socket_over_its_request_rate_is_refused_with_rate_limited_and_recovers() {
    let s = TestServer::start_with(|o| {
        o.rate.per_second = 20.0;
        o.rate.burst = 10.0;
    })
    .await;
    let mut ws = as_identity(&s, "hasty").await;
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(ws.send(Request::Ping).await);
    }
    let mut limited = 0;
    for id in ids {
        match ws.answer(id).await {
            Ok(Response::Pong) => {}
            Err(e) if e.code == ErrorCode::RateLimited => limited += 1,
            other => panic!("Pong or RateLimited, not {other:?}"),
        }
    }
    assert!(limited > 0, "40 requests at once exceed a burst of 10");
    // The bucket refills: the socket is still usable.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(ws.request(Request::Ping).await, Ok(Response::Pong));
}

#[tokio::test]
async fn a_ttl_alone_changes_without_a_new_revision_or_an_event() {
    let s = TestServer::start().await;
    let mut ws = as_identity(&s, "tina").await;
    let Ok(Response::Written(written)) = ws
        .request(Request::ItemSet {
            kind: ObjectKind::Map,
            object: "cart".into(),
            key: ItemKey::Key("apple".into()),
            data: json!({"n": 1}).to_string(),
            if_match: None,
            ttl: None,
            ephemeral: false,
        })
        .await
    else {
        panic!("item set");
    };
    let revision = written.revision;
    ws.request(subscribe(1, "cart", None))
        .await
        .expect("subscribed");
    loop {
        if let EventKind::SnapshotItems { done: true, .. } = ws.event().await.event.kind {
            break;
        }
    }

    let set_ttl = |key: Option<ItemKey>, ttl: u64| Request::SetTtl {
        kind: ObjectKind::Map,
        object: "cart".into(),
        key,
        ttl,
    };
    let Ok(Response::Object(map)) = ws.request(set_ttl(None, 3600)).await else {
        panic!("the map's metadata");
    };
    assert_eq!(map.revision, revision, "no new revision");
    let expires = map.date_expires.expect("an expiry");
    assert!(expires > syncline_server::now_ms() + 3_500_000);
    let Ok(Response::Written(item)) = ws
        .request(set_ttl(Some(ItemKey::Key("apple".into())), 60))
        .await
    else {
        panic!("the item written");
    };
    let Some(syncline_proto::WrittenValue::Item(item)) = item.value else {
        panic!("the item's value");
    };
    assert_eq!(
        (item.revision, item.data.as_str()),
        (revision, r#"{"n":1}"#)
    );
    assert!(item.date_expires.is_some());

    // Past the maximum, or on a missing item: refused.
    let e = ws
        .request(set_ttl(None, 400 * 86_400))
        .await
        .expect_err("too long");
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    let e = ws
        .request(set_ttl(Some(ItemKey::Key("pear".into())), 60))
        .await
        .expect_err("absent");
    assert_eq!(e.code, ErrorCode::NotFound);

    // Nothing reached the subscriber: the next event is the next real change.
    ws.request(Request::ItemRemove {
        kind: ObjectKind::Map,
        object: "cart".into(),
        key: ItemKey::Key("apple".into()),
        if_match: None,
    })
    .await
    .expect("removed");
    let next = ws.event().await;
    assert!(
        matches!(next.event.kind, EventKind::ItemRemoved { .. }),
        "{next:?}"
    );
    assert_eq!(next.event.revision, revision + 1);
}

/// Past the protocol's frame limit a message is answered (`TooLarge`, tested above);
/// past 4 MiB the WebSocket layer does not read it at all, and the socket closes with
/// RFC 6455's 1009.
#[tokio::test]
async fn a_message_past_four_mebibytes_closes_the_socket_with_1009() {
    use futures_util::SinkExt;
    let s = TestServer::start().await;
    let mut ws = as_identity(&s, "big").await;
    let huge = format!(
        r#"{{"id":9,"request":{{"DocGet":{{"document":"{}"}}}}}}"#,
        "x".repeat(5 << 20)
    );
    let _ = ws
        .socket
        .send(tokio_tungstenite::tungstenite::Message::Text(huge.into()))
        .await;
    assert_eq!(ws.closed().await.map(|c| c.0), Some(1009));
    // The server goes on for everyone else.
    let mut other = as_identity(&s, "small").await;
    assert_eq!(other.request(Request::Ping).await, Ok(Response::Pong));
}
