//! Offline writes and replica files: with `with_offline_writes`, writes issued while the
//! server is down are queued and applied in order once it is back, each conditional on
//! the revision it was based on (a moved base comes back as a conflict with both
//! values); the queue is bounded; without the opt-in nothing changes. A replica saved
//! to a file comes back in a new client, shows its state while the server is down and
//! resumes from its revision.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use syncline_client::{
    AttemptedWrite, Client, ClientConfig, ConnectionState, ErrorCode, ItemKey, ObjectKind, Replica,
    ServerValue, Subscription, SyncEventKind,
};
use syncline_tests::{next_event, server_items, TestServer, WAIT};

type Pending<T> = Pin<Box<dyn Future<Output = syncline_client::Result<T>> + Send>>;

/// The backend's config with offline writes on (`capacity` writes) and a short
/// `offline_wait`, so a write that were not queued would fail quickly.
fn offline_config(s: &TestServer, capacity: usize) -> ClientConfig {
    ClientConfig::from_admin(&s.admin)
        .unwrap()
        .with_offline_wait(Duration::from_millis(200))
        .with_offline_writes(capacity)
}

/// Issues a write: its first poll is where the client queues it, so writes issued one
/// after another through this are queued in that order. Fails if it was answered at once.
async fn issue<T>(mut write: Pending<T>) -> Pending<T> {
    if let Ok(r) = tokio::time::timeout(Duration::ZERO, &mut write).await {
        panic!(
            "the write was answered while the server is down: {:?}",
            r.err()
        );
    }
    write
}

/// Takes the server down and waits until `client` has seen its connection go.
async fn server_down(s: &mut TestServer, client: &Client) {
    s.shutdown().await;
    tokio::time::timeout(WAIT, client.closed())
        .await
        .expect("the client sees the connection end");
}

async fn answer<T>(write: Pending<T>) -> syncline_client::Result<T> {
    tokio::time::timeout(WAIT, write)
        .await
        .expect("the queued write is answered once the server is back")
}

/// Reads a subscription until its replica is at `revision`.
/// A collection subscription's replica as key -> value.
fn map_values(sub: &Subscription) -> std::collections::BTreeMap<ItemKey, Value> {
    let items = &sub.collection().expect("a collection replica").items;
    items
        .values()
        .map(|i| (i.key.clone(), i.data.clone()))
        .collect()
}

async fn catch_up(sub: &mut Subscription, revision: u64) {
    tokio::time::timeout(WAIT, async {
        while sub.replica().revision() != Some(revision) {
            sub.next().await.expect("open").expect("event ok");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the replica did not reach revision {revision}"));
}

#[tokio::test]
async fn writes_made_while_the_server_is_down_are_applied_in_order_once_it_is_back() {
    let mut s = TestServer::start().await;
    let c = Client::connect(offline_config(&s, 16)).await.unwrap();
    c.document("doc").set(&json!({"v": 0})).await.unwrap();
    c.map("map").set("a", &json!(0)).await.unwrap();
    let mut doc_sub = c.document("doc").subscribe().await.unwrap();
    let mut map_sub = c.map("map").subscribe().await.unwrap();
    next_event(&mut doc_sub).await;
    next_event(&mut map_sub).await;

    server_down(&mut s, &c).await;
    let (doc, map, list) = (c.document("doc"), c.map("map"), c.list("list"));
    let d1 = issue({
        let doc = doc.clone();
        Box::pin(async move { doc.set(&json!({"v": 1})).await })
    })
    .await;
    // Builds on the queued set, not on the replica's revision (which that set moves).
    let d2 = issue({
        let doc = doc.clone();
        Box::pin(async move { doc.update(&json!({"b": 2})).await })
    })
    .await;
    let m1 = issue({
        let map = map.clone();
        Box::pin(async move { map.set("a", &json!(1)).await })
    })
    .await;
    let m2 = issue({
        let map = map.clone();
        Box::pin(async move { map.set("a", &json!(2)).await })
    })
    .await;
    // A key the replica does not hold: based on its absence.
    let m3 = issue({
        let map = map.clone();
        Box::pin(async move { map.set("new", &json!(3)).await })
    })
    .await;
    // No base needed: an append overwrites nothing.
    let l1 = issue({
        let list = list.clone();
        Box::pin(async move { list.push(&json!("first")).await })
    })
    .await;
    // Longer than offline_wait: queued writes do not fail with it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.start_again().await;
    // Issued after the server is back (queued or not): still after the queued ones.
    let after = {
        let doc = doc.clone();
        tokio::spawn(async move { doc.update(&json!({"after": true})).await })
    };

    let mut revisions = Vec::new();
    for w in [d1, d2] {
        revisions.push(answer(w).await.expect("document write applied").revision);
    }
    let after = tokio::time::timeout(WAIT, after)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    revisions.push(after.revision);
    assert_eq!(
        revisions,
        vec![1, 2, 3],
        "one revision each, in issue order"
    );
    let mut map_revisions = Vec::new();
    for w in [m1, m2, m3] {
        map_revisions.push(answer(w).await.expect("map write applied").revision);
    }
    // The map's creation with "a" made revision 1.
    assert_eq!(map_revisions, vec![2, 3, 4]);
    answer(l1).await.expect("push applied");

    let backend = s.backend().await;
    let server_doc = backend.document("doc").get().await.unwrap();
    assert_eq!(server_doc.data, json!({"v": 1, "b": 2, "after": true}));
    let values: Vec<(ItemKey, Value)> = server_items(&backend, ObjectKind::Map, "map")
        .await
        .into_iter()
        .collect();
    assert_eq!(
        values,
        vec![
            (ItemKey::Key("a".into()), json!(2)),
            (ItemKey::Key("new".into()), json!(3)),
        ]
    );
    // The subscriptions resume and see the queued writes like any others.
    catch_up(&mut doc_sub, server_doc.revision).await;
    assert_eq!(doc_sub.document().unwrap().data, server_doc.data);
    catch_up(&mut map_sub, 4).await;
    let replica: Vec<(ItemKey, Value)> = map_values(&map_sub).into_iter().collect();
    assert_eq!(replica, values);
}

#[tokio::test]
async fn a_queued_write_whose_base_moved_comes_back_as_a_conflict_with_both_values() {
    let mut s = TestServer::start().await;
    let c = Client::connect(offline_config(&s, 16)).await.unwrap();
    let other = s.backend().await;
    other.document("doc").set(&json!("base")).await.unwrap();
    other.map("map").set("k", &json!("base")).await.unwrap();
    other.map("map").set("gone", &json!("base")).await.unwrap();
    let mut doc_sub = c.document("doc").subscribe().await.unwrap();
    let mut map_sub = c.map("map").subscribe().await.unwrap();
    next_event(&mut doc_sub).await;
    next_event(&mut map_sub).await;
    // The app's view is the replica it has read: it writes on top of these revisions.
    let doc_base = doc_sub.replica().revision().unwrap();
    let k_base = map_sub.collection().unwrap().items[&ItemKey::Key("k".into())].revision;

    // Another client writes after that view (this client's subscriptions are not read,
    // so their replicas, the queued writes' bases, stay where the app saw them).
    other.document("doc").set(&json!("theirs")).await.unwrap();
    other.map("map").set("k", &json!("theirs")).await.unwrap();
    other.map("map").remove("gone").await.unwrap();

    server_down(&mut s, &c).await;
    let doc = c.document("doc");
    let map = c.map("map");
    let d = issue({
        let doc = doc.clone();
        Box::pin(async move { doc.set(&json!("mine")).await })
    })
    .await;
    let k = issue({
        let map = map.clone();
        Box::pin(async move { map.set("k", &json!("mine")).await })
    })
    .await;
    let g = issue({
        let map = map.clone();
        Box::pin(async move { map.update("gone", &json!({"mine": true})).await })
    })
    .await;
    s.start_again().await;

    let e = answer(d).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict, "{e}");
    let conflict = e.write_conflict().expect("a conflict with both values");
    assert_eq!(conflict.object, "doc");
    assert_eq!(conflict.attempted, AttemptedWrite::Set(json!("mine")));
    assert_eq!(conflict.base_revision, Some(doc_base));
    let ServerValue::Document(now) = &conflict.current else {
        panic!("{conflict:?}")
    };
    assert_eq!(now.data, json!("theirs"));
    assert_eq!(e.current_revision(), Some(doc_base + 1));

    let e = answer(k).await.unwrap_err();
    let conflict = e.write_conflict().expect("a conflict with both values");
    assert_eq!(conflict.key, Some(ItemKey::Key("k".into())));
    assert_eq!(conflict.base_revision, Some(k_base));
    assert_eq!(conflict.attempted, AttemptedWrite::Set(json!("mine")));
    assert_eq!(conflict.current.data(), Some(&json!("theirs")));

    let e = answer(g).await.unwrap_err();
    let conflict = e.write_conflict().expect("a conflict with both values");
    assert_eq!(conflict.current, ServerValue::Deleted, "{e}");
    assert_eq!(
        conflict.attempted,
        AttemptedWrite::Update(json!({"mine": true}))
    );

    // The server kept the other client's values.
    let backend = s.backend().await;
    assert_eq!(
        backend.document("doc").get().await.unwrap().data,
        json!("theirs")
    );
    assert_eq!(
        backend.map("map").get("k").await.unwrap().data,
        json!("theirs")
    );
    assert_eq!(
        backend.map("map").get("gone").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn a_queued_map_item_create_whose_key_another_client_created_meanwhile_is_a_conflict_and_theirs_stays(
) {
    let mut s = TestServer::start().await;
    let c = Client::connect(offline_config(&s, 16)).await.unwrap();
    let other = s.backend().await;
    other.map("map").set("a", &json!(0)).await.unwrap();
    let mut map_sub = c.map("map").subscribe().await.unwrap();
    next_event(&mut map_sub).await;
    // After the app's view (its subscription is not read, so its replica, the queued
    // writes' base, still holds no "new" and no "merge"), another client creates them.
    other.map("map").set("new", &json!("theirs")).await.unwrap();
    other
        .map("map")
        .set("merge", &json!({"theirs": 1}))
        .await
        .unwrap();

    server_down(&mut s, &c).await;
    let map = c.map("map");
    // Based on "new" being absent.
    let created = issue({
        let map = map.clone();
        Box::pin(async move { map.set("new", &json!("mine")).await })
    })
    .await;
    // A write that changes only what exists, based on its absence: not sent.
    let merged = issue({
        let map = map.clone();
        Box::pin(async move { map.update("merge", &json!({"mine": 1})).await })
    })
    .await;
    let removed = issue({
        let map = map.clone();
        Box::pin(async move { map.remove("nobody").await })
    })
    .await;
    // The app's own create, then a set that builds on it (not on the replica's "absent").
    let own = issue({
        let map = map.clone();
        Box::pin(async move { map.create_item("fresh", &json!(1)).await })
    })
    .await;
    let own_then = issue({
        let map = map.clone();
        Box::pin(async move { map.set("fresh", &json!(2)).await })
    })
    .await;
    s.start_again().await;

    let e = answer(created).await.unwrap_err();
    let conflict = e.write_conflict().expect("a conflict with both values");
    assert_eq!(conflict.key, Some(ItemKey::Key("new".into())));
    assert_eq!(
        conflict.base_revision, None,
        "based on the item not existing"
    );
    assert_eq!(conflict.attempted, AttemptedWrite::Set(json!("mine")));
    assert_eq!(conflict.current.data(), Some(&json!("theirs")));

    let e = answer(merged).await.unwrap_err();
    let conflict = e.write_conflict().expect("a conflict with both values");
    assert_eq!(conflict.current.data(), Some(&json!({"theirs": 1})));
    let e = answer(removed).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");

    answer(own).await.expect("the app's create applied");
    answer(own_then).await.expect("built on the create");

    let backend = s.backend().await;
    let values = server_items(&backend, ObjectKind::Map, "map").await;
    let get = |k: &str| values.get(&ItemKey::Key(k.into())).cloned();
    assert_eq!(get("new"), Some(json!("theirs")), "not overwritten");
    assert_eq!(get("merge"), Some(json!({"theirs": 1})), "not merged into");
    assert_eq!(get("fresh"), Some(json!(2)));
    assert_eq!(get("nobody"), None);
}

#[tokio::test]
async fn a_queued_set_of_a_deleted_document_recreates_it_unless_another_client_did_first() {
    let mut s = TestServer::start().await;
    let c = Client::connect(offline_config(&s, 16)).await.unwrap();
    let other = s.backend().await;
    for name in ["quiet", "contested"] {
        other.document(name).set(&json!("old")).await.unwrap();
    }
    let mut quiet = c.document("quiet").subscribe().await.unwrap();
    let mut contested = c.document("contested").subscribe().await.unwrap();
    for sub in [&mut quiet, &mut contested] {
        next_event(sub).await;
    }
    // Both deleted, and the subscriptions see it: the app's view is "no document".
    for (name, sub) in [("quiet", &mut quiet), ("contested", &mut contested)] {
        other.document(name).delete().await.unwrap();
        let e = next_event(sub).await;
        assert!(matches!(e.kind, SyncEventKind::Removed { .. }), "{e:?}");
    }
    other
        .document("contested")
        .set(&json!("theirs"))
        .await
        .unwrap();

    server_down(&mut s, &c).await;
    let q = issue({
        let doc = c.document("quiet");
        Box::pin(async move { doc.set(&json!("mine")).await })
    })
    .await;
    let k = issue({
        let doc = c.document("contested");
        Box::pin(async move { doc.set(&json!("mine")).await })
    })
    .await;
    s.start_again().await;

    assert_eq!(
        answer(q).await.unwrap().into_value().unwrap().data,
        json!("mine")
    );
    let e = answer(k).await.unwrap_err();
    let conflict = e.write_conflict().expect("a conflict with both values");
    assert_eq!(
        conflict.base_revision, None,
        "based on the document not existing"
    );
    assert_eq!(conflict.current.data(), Some(&json!("theirs")));
    let backend = s.backend().await;
    assert_eq!(
        backend.document("contested").get().await.unwrap().data,
        json!("theirs")
    );
}

#[tokio::test]
async fn a_connected_client_with_the_opt_in_writes_as_before() {
    let s = TestServer::start().await;
    let c = Client::connect(offline_config(&s, 16)).await.unwrap();
    let doc = c.document("doc");
    doc.set(&json!(1)).await.unwrap();
    // No subscription, no base needed: sent at once, unconditional.
    assert_eq!(doc.set(&json!(2)).await.unwrap().revision, 1);
    // A stale if_match is the server's plain Conflict, not a queued write's.
    let e = doc
        .set_with(&json!(3), syncline_client::WriteOptions::new().if_match(0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict);
    assert!(matches!(e, syncline_client::Error::Server(_)), "{e:?}");
    assert_eq!(e.current_revision(), Some(1));
}

#[tokio::test]
async fn a_full_queue_refuses_the_next_write_at_once_with_unavailable() {
    let mut s = TestServer::start().await;
    // A long offline_wait, so that "at once" cannot be mistaken for "after the wait".
    let config = offline_config(&s, 2).with_offline_wait(Duration::from_secs(5));
    let c = Client::connect(config).await.unwrap();
    server_down(&mut s, &c).await;
    let list = c.list("list");
    let mut queued = Vec::new();
    for n in 0..2 {
        let list = list.clone();
        queued.push(issue(Box::pin(async move { list.push(&json!(n)).await })).await);
    }
    let started = Instant::now();
    let e = list.push(&json!(2)).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    assert!(
        e.to_string().contains("queue is full (2 writes wait"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once, not after offline_wait: {:?}",
        started.elapsed()
    );

    s.start_again().await;
    let mut indices = Vec::new();
    for w in queued {
        indices.push(answer(w).await.unwrap().key);
    }
    assert_eq!(
        indices,
        vec![Some(ItemKey::Index(0)), Some(ItemKey::Index(1))]
    );
}

#[tokio::test]
async fn a_write_with_no_known_base_is_refused_at_once_rather_than_queued_blind() {
    let mut s = TestServer::start().await;
    let c = Client::connect(offline_config(&s, 16)).await.unwrap();
    c.document("doc").set(&json!(1)).await.unwrap();
    server_down(&mut s, &c).await;
    // Nothing subscribed, no if_match: sent later, it could overwrite what it never saw.
    let e = c.document("doc").set(&json!(2)).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    assert!(e.to_string().contains("no known base revision"), "{e}");
    // With the app's own if_match it is queued, and applies when that still holds.
    let doc = c.document("doc");
    let w = issue(Box::pin(async move {
        doc.set_with(&json!(2), syncline_client::WriteOptions::new().if_match(0))
            .await
    }))
    .await;
    s.start_again().await;
    assert_eq!(answer(w).await.unwrap().revision, 1);
}

#[tokio::test]
async fn without_the_opt_in_a_write_while_the_server_is_down_fails_after_offline_wait() {
    let mut s = TestServer::start().await;
    let config = ClientConfig::from_admin(&s.admin)
        .unwrap()
        .with_offline_wait(Duration::from_millis(300));
    let c = Client::connect(config).await.unwrap();
    c.document("doc").set(&json!(1)).await.unwrap();
    let mut sub = c.document("doc").subscribe().await.unwrap();
    next_event(&mut sub).await;
    server_down(&mut s, &c).await;
    let started = Instant::now();
    let e = tokio::time::timeout(WAIT, c.document("doc").set(&json!(2)))
        .await
        .expect("fails in time")
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    s.start_again().await;
    // Nothing was kept to be sent later.
    let backend = s.backend().await;
    assert_eq!(backend.document("doc").get().await.unwrap().data, json!(1));
}

#[tokio::test]
async fn a_replica_saved_to_a_file_shows_its_state_offline_and_a_new_client_resumes_from_it() {
    let mut s = TestServer::start().await;
    let files = tempfile::tempdir().unwrap();
    let (doc_file, map_file) = (files.path().join("doc.json"), files.path().join("map.json"));
    let writer = s.backend().await;
    writer.document("doc").set(&json!({"n": 1})).await.unwrap();
    writer.map("map").set("a", &json!(1)).await.unwrap();
    writer.map("map").set("b", &json!(2)).await.unwrap();
    let (saved_doc, saved_map) = {
        let app = s.backend().await;
        let mut doc = app.document("doc").subscribe().await.unwrap();
        let mut map = app.map("map").subscribe().await.unwrap();
        next_event(&mut doc).await;
        next_event(&mut map).await;
        writer.document("doc").set(&json!({"n": 2})).await.unwrap();
        catch_up(&mut doc, 1).await;
        doc.replica().save(&doc_file).unwrap();
        map.replica().save(&map_file).unwrap();
        (doc.replica().clone(), map.replica().clone())
    };
    // The app is gone; others write; then the server goes down too.
    writer.document("doc").set(&json!({"n": 3})).await.unwrap();
    writer.map("map").remove("a").await.unwrap();
    writer.map("map").set("c", &json!(3)).await.unwrap();
    let server_doc = writer.document("doc").get().await.unwrap();
    let server_map = server_items(&writer, ObjectKind::Map, "map").await;
    s.shutdown().await;

    // The app restarts offline: its last state at once.
    let doc_replica = Replica::load(&doc_file).unwrap();
    let map_replica = Replica::load(&map_file).unwrap();
    assert_eq!(doc_replica, saved_doc);
    assert_eq!(map_replica, saved_map);
    let app = Client::start(offline_config(&s, 16)).unwrap();
    let mut doc = tokio::time::timeout(WAIT, app.resume("doc", doc_replica, None))
        .await
        .expect("resumed at once, offline")
        .unwrap();
    let mut map = tokio::time::timeout(WAIT, app.resume("map", map_replica, None))
        .await
        .expect("resumed at once, offline")
        .unwrap();
    assert_ne!(app.state(), ConnectionState::Connected);
    assert_eq!(
        (
            doc.document().unwrap().revision,
            &doc.document().unwrap().data
        ),
        (1, &json!({"n": 2}))
    );
    let Replica::Map(m) = map.replica() else {
        panic!("{:?}", map.replica())
    };
    assert_eq!((m.info.revision, m.items.len()), (2, 2));
    // A write based on the loaded replica: item "b" at its revision, which still holds.
    let w = issue({
        let map = app.map("map");
        Box::pin(async move { map.set("b", &json!(20)).await })
    })
    .await;

    s.start_again().await;
    // Only what changed since the saved revisions, each once, no snapshot.
    let e = next_event(&mut doc).await;
    assert_eq!(e.revision, 2);
    assert!(
        matches!(e.kind, SyncEventKind::DocumentUpdated { .. }),
        "{e:?}"
    );
    assert_eq!(doc.document().unwrap(), &server_doc);
    assert_eq!(answer(w).await.unwrap().revision, 5);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let e = next_event(&mut map).await;
        seen.push((e.revision, e.kind.name()));
    }
    assert_eq!(
        seen,
        vec![(3, "item_removed"), (4, "item_added"), (5, "item_updated")]
    );
    syncline_tests::assert_no_event(&mut map, Duration::from_millis(200)).await;
    let mut expected = server_map;
    expected.insert(ItemKey::Key("b".into()), json!(20));
    assert_eq!(map_values(&map), expected);
}

#[tokio::test]
async fn a_damaged_or_newer_replica_file_is_refused_with_a_clear_error() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    c.document("doc").set(&json!({"n": 1})).await.unwrap();
    let mut sub = c.document("doc").subscribe().await.unwrap();
    next_event(&mut sub).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replica.json");
    sub.replica().save(&path).unwrap();
    let good = std::fs::read_to_string(&path).unwrap();
    // Saving leaves only the file itself (the temporary one was renamed over it).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let refused = |contents: &str| {
        std::fs::write(&path, contents).unwrap();
        let e = Replica::load(&path).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
        e.to_string()
    };
    let e = refused(&good[..good.len() / 2]);
    assert!(e.contains("not a replica file (not JSON"), "{e}");
    let e = refused(r#"{"some": "other json"}"#);
    assert!(e.contains("not a replica file"), "{e}");
    let mut newer: Value = serde_json::from_str(&good).unwrap();
    newer["version"] = json!(syncline_client::REPLICA_FORMAT_VERSION + 1);
    let e = refused(&newer.to_string());
    assert!(
        e.contains("written by a newer client: format version 2"),
        "{e}"
    );
    let mut damaged: Value = serde_json::from_str(&good).unwrap();
    damaged["replica"]["Document"]["revision"] = json!("seven");
    let e = refused(&damaged.to_string());
    assert!(e.contains("damaged replica file"), "{e}");

    let e = Replica::load(dir.path().join("missing.json")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    assert!(e.to_string().contains("missing.json"), "{e}");
}
