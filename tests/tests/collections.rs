//! Lists, maps and streams through a real server: item operations and paging, indices
//! that are never reused, kinds that do not mix, item TTL, and subscriptions whose
//! replicas equal the server after every event.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use syncline_client::{
    ErrorCode, ItemKey, ObjectKind, Order, PageOptions, Reason, Replica, SyncEventKind,
    WriteOptions,
};
use syncline_tests::{assert_no_event, next_event, server_items, TestServer};

fn page(from: Option<ItemKey>, order: Order, limit: u32) -> PageOptions {
    PageOptions { from, order, limit }
}

fn replica_items(r: &Replica) -> BTreeMap<ItemKey, Value> {
    match r {
        Replica::List(c) | Replica::Map(c) => c
            .items
            .iter()
            .map(|(k, i)| (k.clone(), i.data.clone()))
            .collect(),
        other => panic!("not a collection: {other:?}"),
    }
}

#[tokio::test]
async fn list_items_indices_and_pages() {
    let s = TestServer::start().await;
    let c = s.client_as("alice").await;
    let list = c.list("chat");
    for n in 0..5 {
        let item = list
            .push(&json!({"n": n}))
            .await
            .unwrap()
            .into_value()
            .unwrap();
        assert_eq!(item.key, ItemKey::Index(n));
        assert_eq!(
            item.revision,
            n + 1,
            "item revision = object revision at the change"
        );
        assert_eq!(item.created_by, "alice");
    }
    let info = list.info().await.unwrap();
    assert_eq!(
        (info.kind, info.revision, info.created_by.as_str()),
        (ObjectKind::List, 5, "alice")
    );
    assert_eq!(list.get(2).await.unwrap().data, json!({"n": 2}));
    let updated = list
        .update_with(2, &json!({"edited": true}), WriteOptions::new().if_match(3))
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert_eq!(
        (updated.revision, updated.data),
        (6, json!({"n": 2, "edited": true}))
    );
    let err = list
        .set_with(
            2,
            &json!(0),
            WriteOptions {
                if_match: Some(3),
                ttl: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.current_revision()),
        (ErrorCode::Conflict, Some(6))
    );
    assert_eq!(list.remove(4).await.unwrap(), 7);
    assert_eq!(
        list.remove(4).await.unwrap_err().code(),
        ErrorCode::NotFound,
        "removing twice"
    );
    assert_eq!(list.get(4).await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(
        list.get(99).await.unwrap_err().code(),
        ErrorCode::NotFound,
        "index out of range"
    );
    let err = list.set(99, &json!(1)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    // The removed last index is not reused.
    assert_eq!(
        list.push(&json!("new")).await.unwrap().key,
        Some(ItemKey::Index(5))
    );

    let asc = list.items(page(None, Order::Asc, 2)).await.unwrap();
    let keys: Vec<_> = asc.items.iter().map(|i| i.key.clone()).collect();
    assert_eq!(keys, vec![ItemKey::Index(0), ItemKey::Index(1)]);
    assert_eq!(asc.next, Some(ItemKey::Index(2)));
    let rest = list.items(page(asc.next, Order::Asc, 10)).await.unwrap();
    let keys: Vec<_> = rest.items.iter().map(|i| i.key.clone()).collect();
    assert_eq!(
        keys,
        vec![ItemKey::Index(2), ItemKey::Index(3), ItemKey::Index(5)]
    );
    assert_eq!(rest.next, None);
    let desc = list
        .items(page(Some(ItemKey::Index(3)), Order::Desc, 2))
        .await
        .unwrap();
    let keys: Vec<_> = desc.items.iter().map(|i| i.key.clone()).collect();
    assert_eq!(keys, vec![ItemKey::Index(3), ItemKey::Index(2)]);
    assert_eq!(desc.next, Some(ItemKey::Index(1)));
    let err = list.items(page(None, Order::Asc, 1001)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn list_indices_survive_restarts() {
    let mut s = TestServer::start().await;
    let c = s.backend().await;
    for _ in 0..3 {
        c.list("log").push(&json!(1)).await.unwrap();
    }
    c.list("log").remove(2).await.unwrap();
    drop(c);
    s.restart().await;
    let c = s.backend().await;
    assert_eq!(
        c.list("log").push(&json!(2)).await.unwrap().key,
        Some(ItemKey::Index(3))
    );
    assert_eq!(c.list("log").info().await.unwrap().revision, 5);
}

#[tokio::test]
async fn map_items_by_key() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let map = c.map("roster");
    for (k, v) in [("zoe", 1), ("ann", 2), ("émile", 3), ("bob", 4)] {
        let item = map.set(k, &json!({"v": v})).await.unwrap();
        assert_eq!(item.key, Some(ItemKey::Key(k.into())));
    }
    // Upsert: set on an existing key replaces it.
    let item = map.set("bob", &json!({"v": 5})).await.unwrap();
    assert_eq!(item.revision, 5);
    assert_eq!(map.get("bob").await.unwrap().data, json!({"v": 5}));
    let merged = map
        .update("bob", &json!({"online": true}))
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert_eq!(merged.data, json!({"v": 5, "online": true}));
    let all = map.items(page(None, Order::Asc, 100)).await.unwrap();
    let keys: Vec<_> = all.items.iter().map(|i| i.key.to_string()).collect();
    assert_eq!(
        keys,
        vec!["ann", "bob", "zoe", "émile"],
        "ordered by key (code points)"
    );
    let desc = map
        .items(page(Some(ItemKey::Key("bob".into())), Order::Desc, 100))
        .await
        .unwrap();
    let keys: Vec<_> = desc.items.iter().map(|i| i.key.to_string()).collect();
    assert_eq!(keys, vec!["bob", "ann"]);
    map.remove("ann").await.unwrap();
    assert_eq!(
        map.get("ann").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        map.remove("ann").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        map.update("nobody", &json!({})).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    // Keys: 1..=320 characters of any Unicode.
    let longest = "ü".repeat(320);
    map.set(&longest, &json!(1)).await.unwrap();
    assert_eq!(map.get(&longest).await.unwrap().data, json!(1));
    let err = map.set(&"k".repeat(321), &json!(1)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::TooLarge);
    let err = map.set("", &json!(1)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    let err = map
        .set("big", &json!("x".repeat(16 * 1024)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::TooLarge);
    let err = map
        .set_with(
            "bob",
            &json!(0),
            WriteOptions {
                if_match: Some(1),
                ttl: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict);
    assert_eq!(
        map.get("bob").await.unwrap().data,
        json!({"v": 5, "online": true}),
        "nothing changed"
    );
}

#[tokio::test]
async fn a_map_item_create_writes_only_a_key_that_is_absent_and_leaves_an_existing_one_untouched() {
    let s = TestServer::start().await;
    let alice = s.backend().await;
    let bob = s.backend().await;
    // The map does not exist yet: the create makes it, by name, like `set`.
    let created = alice
        .map("seats")
        .create_item("12A", &json!({"by": "alice"}))
        .await
        .unwrap();
    assert_eq!(created.key, Some(ItemKey::Key("12A".into())));
    assert_eq!(created.revision, 1);
    assert_eq!(created.into_value().unwrap().data, json!({"by": "alice"}));
    let seats = bob.map("seats");
    let mut sub = seats.subscribe().await.unwrap();
    next_event(&mut sub).await;

    let e = seats
        .create_item("12A", &json!({"by": "bob"}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::AlreadyExists, "{e}");
    let kept = seats.get("12A").await.unwrap();
    assert_eq!((kept.revision, kept.data), (1, json!({"by": "alice"})));
    assert_eq!(seats.info().await.unwrap().revision, 1, "nothing written");
    assert_no_event(&mut sub, Duration::from_millis(200)).await;

    // Another key of the same map is free.
    let other = seats
        .create_item_with("12B", &json!({"by": "bob"}), WriteOptions::new().ttl(1))
        .await
        .unwrap();
    assert_eq!(other.revision, 2);
    assert_eq!(next_event(&mut sub).await.revision, 2);
    // There is no item to match: `if_match` is refused, not dropped.
    let e = seats
        .create_item_with("12C", &json!(1), WriteOptions::new().if_match(0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    // An expired item counts as absent.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let again = seats
        .create_item("12B", &json!({"by": "carol"}))
        .await
        .unwrap();
    assert_eq!(seats.get("12B").await.unwrap().data, json!({"by": "carol"}));
    assert!(again.revision > 2);
    // A name that is not a map is refused as for any map write.
    alice.list("queue").push(&json!(1)).await.unwrap();
    let e = alice
        .map("queue")
        .create_item("k", &json!(1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
}

#[tokio::test]
async fn kinds_do_not_mix() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    c.list("things").push(&json!(1)).await.unwrap();
    c.document("doc").set(&json!(1)).await.unwrap();
    fn code<T>(r: Result<T, syncline_client::Error>) -> ErrorCode {
        r.map(|_| ()).unwrap_err().code()
    }
    assert_eq!(
        code(c.map("things").set("k", &json!(1)).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(c.map("things").get("k").await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(c.document("things").get().await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(c.document("things").set(&json!(1)).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(c.list("doc").push(&json!(1)).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(c.stream("doc").publish(&json!(1)).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(c.list("doc").delete().await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(c.map("things").create(None).await),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(c.list("things").create(None).await),
        ErrorCode::AlreadyExists
    );
    // Nothing changed.
    assert_eq!(c.list("things").info().await.unwrap().revision, 1);
    assert_eq!(c.document("doc").get().await.unwrap().revision, 0);
    // Explicit creation, then the first push.
    let created = c.list("empty").create(Some(3600)).await.unwrap();
    assert_eq!((created.revision, created.kind), (0, ObjectKind::List));
    assert!(created.date_expires.is_some());
    assert_eq!(
        c.list("empty")
            .items(PageOptions::default())
            .await
            .unwrap()
            .items,
        vec![]
    );
    assert_eq!(
        c.list("empty").push(&json!(1)).await.unwrap().key,
        Some(ItemKey::Index(0))
    );
}

#[tokio::test]
async fn item_ttl_expires_with_an_event() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let map = c.map("presence");
    map.set_with(
        "ann",
        &json!({"here": true}),
        WriteOptions {
            if_match: None,
            ttl: Some(1),
        },
    )
    .await
    .unwrap();
    map.set("bob", &json!({"here": true})).await.unwrap();
    let mut sub = map.subscribe().await.unwrap();
    assert_eq!(next_event(&mut sub).await.kind, SyncEventKind::Snapshot);
    assert_eq!(replica_items(sub.replica()).len(), 2);
    let e = next_event(&mut sub).await;
    match &e.kind {
        SyncEventKind::ItemRemoved {
            key,
            previous,
            reason,
        } => {
            assert_eq!(
                (key, previous, *reason),
                (
                    &ItemKey::Key("ann".into()),
                    &json!({"here": true}),
                    Reason::Expired
                )
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(e.actor, "system");
    assert_eq!(
        map.get("ann").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        replica_items(sub.replica()),
        server_items(&c, ObjectKind::Map, "presence").await
    );
}

#[tokio::test]
async fn list_subscription_keeps_a_window_in_step() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let list = c.list("feed");
    for n in 0..150 {
        list.push(&json!(n)).await.unwrap();
    }
    let watcher = s.client_as("watcher").await;
    let mut sub = watcher.list("feed").subscribe(None).await.unwrap();
    assert_eq!(next_event(&mut sub).await.kind, SyncEventKind::Snapshot);
    let window = sub.collection().unwrap();
    assert_eq!(window.window_start, 50, "the newest 100 by default");
    assert_eq!(window.items.len(), 100);
    assert_eq!(window.info.revision, 150);
    list.push(&json!("new")).await.unwrap();
    list.set(120, &json!({"x": 1})).await.unwrap();
    list.remove(60).await.unwrap();
    list.set(10, &json!("old, outside the window"))
        .await
        .unwrap();
    let mut expected_rev = 150;
    for _ in 0..4 {
        let e = next_event(&mut sub).await;
        expected_rev += 1;
        assert_eq!(e.revision, expected_rev);
    }
    let server: BTreeMap<_, _> = server_items(&c, ObjectKind::List, "feed")
        .await
        .into_iter()
        .filter(|(k, _)| matches!(k, ItemKey::Index(i) if *i >= 50))
        .collect();
    assert_eq!(replica_items(sub.replica()), server);
    // A smaller window on request.
    let mut small = watcher.list("feed").subscribe(Some(3)).await.unwrap();
    next_event(&mut small).await;
    let keys: Vec<_> = small.collection().unwrap().items.keys().cloned().collect();
    assert_eq!(
        keys,
        vec![
            ItemKey::Index(148),
            ItemKey::Index(149),
            ItemKey::Index(150)
        ]
    );
}

#[tokio::test]
async fn big_map_snapshots_arrive_in_chunks() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let map = c.map("big");
    // ~300 KiB of items: many frames' worth.
    let blob = "b".repeat(1000);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let map = map.clone();
            let blob = blob.clone();
            tokio::spawn(async move {
                for k in 0..75 {
                    map.set(&format!("{w}-{k:03}"), &json!({"blob": blob}))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let mut sub = s
        .client_as("reader")
        .await
        .map("big")
        .subscribe()
        .await
        .unwrap();
    assert_eq!(next_event(&mut sub).await.kind, SyncEventKind::Snapshot);
    assert_eq!(replica_items(sub.replica()).len(), 300);
    assert_eq!(
        replica_items(sub.replica()),
        server_items(&c, ObjectKind::Map, "big").await
    );
}

#[tokio::test]
async fn removing_a_collection_ends_subscriptions_and_its_items() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    c.map("m").set("a", &json!(1)).await.unwrap();
    let mut sub = c.map("m").subscribe().await.unwrap();
    next_event(&mut sub).await;
    assert_eq!(c.map("m").delete().await.unwrap(), 2);
    let e = next_event(&mut sub).await;
    assert_eq!(
        e.kind,
        SyncEventKind::Removed {
            reason: Reason::Write
        }
    );
    assert!(sub.next().await.is_none());
    assert_eq!(
        c.map("m").get("a").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    // A new map under the name starts empty.
    c.map("m").set("b", &json!(2)).await.unwrap();
    let keys: Vec<_> = server_items(&c, ObjectKind::Map, "m")
        .await
        .into_keys()
        .collect();
    assert_eq!(keys, vec![ItemKey::Key("b".into())]);
}

#[tokio::test]
async fn collections_resume_from_their_revision() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let map = c.map("state");
    map.set("a", &json!(1)).await.unwrap();
    let mut sub = map.subscribe().await.unwrap();
    next_event(&mut sub).await;
    let kept = sub.replica().clone();
    drop(sub);
    map.set("b", &json!(2)).await.unwrap();
    map.remove("a").await.unwrap();
    let mut resumed = c.resume("state", kept, None).await.unwrap();
    let e = next_event(&mut resumed).await;
    assert!(matches!(e.kind, SyncEventKind::ItemAdded { .. }), "{e:?}");
    assert_eq!(e.revision, 2);
    let e = next_event(&mut resumed).await;
    assert!(matches!(
        e.kind,
        SyncEventKind::ItemRemoved {
            reason: Reason::Write,
            ..
        }
    ));
    assert_eq!(e.revision, 3);
    assert_eq!(
        replica_items(resumed.replica()),
        server_items(&c, ObjectKind::Map, "state").await
    );
}

#[tokio::test]
async fn streams_deliver_in_order_to_current_subscribers_only() {
    let s = TestServer::start().await;
    let alice = s.client_as("alice").await;
    let bob = s.client_as("bob").await;
    // Publishing creates the stream; nobody is listening yet, so this one is gone.
    assert_eq!(
        alice
            .stream("typing")
            .publish(&json!({"early": true}))
            .await
            .unwrap(),
        1
    );
    let mut sub = bob.stream("typing").subscribe().await.unwrap();
    assert_eq!(next_event(&mut sub).await.kind, SyncEventKind::Snapshot);
    for n in 0..20 {
        alice
            .stream("typing")
            .publish(&json!({"n": n}))
            .await
            .unwrap();
    }
    for n in 0..20u64 {
        let e = next_event(&mut sub).await;
        match e.kind {
            SyncEventKind::MessagePublished {
                data,
                sequence,
                missed,
            } => {
                assert_eq!((data, sequence, missed), (json!({"n": n}), n + 2, 0));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(e.actor, "alice");
        assert!(!e.is_local);
    }
    // Nothing is stored: a new subscriber gets no history.
    let mut late = alice.stream("typing").subscribe().await.unwrap();
    assert_eq!(next_event(&mut late).await.kind, SyncEventKind::Snapshot);
    assert_no_event(&mut late, Duration::from_millis(200)).await;
    // Limits: 4 KiB of JSON.
    let err = alice
        .stream("typing")
        .publish(&json!("x".repeat(4096)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::TooLarge);
    alice
        .stream("typing")
        .publish(&json!("x".repeat(4000)))
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut sub).await.kind,
        SyncEventKind::MessagePublished { .. }
    ));
    // The stream object is real: it has metadata and can be deleted.
    assert_eq!(
        alice.fetch("typing").await.unwrap().kind,
        ObjectKind::Stream
    );
    alice.stream("typing").delete().await.unwrap();
    assert!(matches!(
        next_event(&mut sub).await.kind,
        SyncEventKind::Removed { .. }
    ));
}

#[tokio::test]
async fn a_page_of_large_items_stops_at_its_byte_budget_and_says_where_to_go_on() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let big = json!("x".repeat(16 * 1024 - 100));
    let list = c.list("big");
    // 300 items of ~16 KiB: 4.8 MB, more than one page carries (4 MiB).
    for _ in 0..300 {
        list.push(&big).await.unwrap();
    }
    let first = list.items(page(None, Order::Asc, 1000)).await.unwrap();
    let n = first.items.len();
    assert!((200..300).contains(&n), "cut by bytes, not by count: {n}");
    assert_eq!(first.next, Some(ItemKey::Index(n as u64)));
    let rest = list
        .items(page(first.next, Order::Asc, 1000))
        .await
        .unwrap();
    assert_eq!((n + rest.items.len(), rest.next), (300, None));
}

#[tokio::test]
async fn a_ttl_alone_leaves_data_and_revisions_and_tells_no_subscriber() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let map = c.map("sessions");
    let written = map.set("s1", &json!({"user": "ann"})).await.unwrap();
    let doc = c.document("banner");
    doc.set(&json!("hello")).await.unwrap();
    let list = c.list("log");
    list.push(&json!(1)).await.unwrap();
    let mut sub = map.subscribe().await.unwrap();
    while !matches!(next_event(&mut sub).await.kind, SyncEventKind::Snapshot) {}

    map.set_item_ttl("s1", 60).await.unwrap();
    map.set_ttl(3600).await.unwrap();
    list.set_ttl(3600).await.unwrap();
    list.set_item_ttl(0, 60).await.unwrap();
    doc.set_ttl(3600).await.unwrap();
    c.stream("pings").publish(&json!({})).await.unwrap();
    c.stream("pings").set_ttl(3600).await.unwrap();

    let item = map.get("s1").await.unwrap();
    assert_eq!(
        (item.revision, item.data.clone()),
        (written.revision, json!({"user": "ann"}))
    );
    assert!(item.date_expires.is_some());
    assert!(list.get(0).await.unwrap().date_expires.is_some());
    let d = doc.get().await.unwrap();
    assert_eq!((d.revision, d.data), (0, json!("hello")));
    for name in ["sessions", "log", "banner", "pings"] {
        assert!(
            c.fetch(name).await.unwrap().date_expires.is_some(),
            "{name}"
        );
    }
    assert_no_event(&mut sub, Duration::from_millis(300)).await;
    assert_eq!(
        map.set_item_ttl("absent", 60).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
}
