//! Subscriptions: snapshots, ordered deltas to other connections, `is_local`, resume
//! from a revision (replay or snapshot), removal and expiry events, and replicas that
//! equal the server after every event.

use std::time::Duration;

use serde_json::json;
use syncline_client::{Reason, SyncEventKind, WriteOptions};
use syncline_tests::{assert_no_event, next_event, TestServer};

#[tokio::test]
async fn two_clients_see_each_others_writes_in_order() {
    let s = TestServer::start().await;
    let alice = s.client_as("alice").await;
    let bob = s.client_as("bob").await;
    alice
        .document("board")
        .set(&json!({"turn": 0}))
        .await
        .unwrap();
    let mut a_sub = alice.document("board").subscribe().await.unwrap();
    let mut b_sub = bob.document("board").subscribe().await.unwrap();
    for sub in [&mut a_sub, &mut b_sub] {
        let e = next_event(sub).await;
        assert_eq!(e.kind, SyncEventKind::Snapshot);
        assert_eq!(sub.document().unwrap().data, json!({"turn": 0}));
    }
    for i in 1..=20 {
        let writer = if i % 2 == 0 { &alice } else { &bob };
        writer
            .document("board")
            .update(&json!({"turn": i}))
            .await
            .unwrap();
    }
    for (sub, me) in [(&mut a_sub, "alice"), (&mut b_sub, "bob")] {
        for i in 1..=20u64 {
            let e = next_event(sub).await;
            assert_eq!(e.revision, i, "revision order without gaps");
            let writer = if i % 2 == 0 { "alice" } else { "bob" };
            assert_eq!(e.actor, writer);
            assert_eq!(e.is_local, writer == me, "is_local marks own writes");
            match &e.kind {
                SyncEventKind::DocumentUpdated { data, previous } => {
                    assert_eq!(data, &json!({"turn": i}));
                    assert_eq!(previous, &Some(json!({"turn": i - 1})));
                }
                other => panic!("unexpected {other:?}"),
            }
            let replica = sub.document().unwrap();
            assert_eq!((replica.revision, &replica.data), (i, &json!({"turn": i})));
        }
        assert_no_event(sub, Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn concurrent_writers_every_subscriber_gets_each_revision_once() {
    let s = TestServer::start().await;
    let backend = s.backend().await;
    backend.document("hot").set(&json!({})).await.unwrap();
    let mut subs = Vec::new();
    for i in 0..3 {
        let c = s.client_as(&format!("watcher{i}")).await;
        let sub = c.document("hot").subscribe().await.unwrap();
        subs.push((c, sub));
    }
    let mut writers = Vec::new();
    for w in 0..4 {
        let c = s.client_as(&format!("writer{w}")).await;
        writers.push(tokio::spawn(async move {
            for k in 0..25 {
                c.document("hot")
                    .update(&json!({format!("w{w}"): k}))
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let server_state = backend.document("hot").get().await.unwrap();
    assert_eq!(server_state.revision, 100);
    for (_c, sub) in &mut subs {
        assert_eq!(next_event(sub).await.kind, SyncEventKind::Snapshot);
        let mut last = sub.document().unwrap().revision;
        while last < 100 {
            let e = next_event(sub).await;
            assert_eq!(e.revision, last + 1, "no gaps, no duplicates");
            last = e.revision;
        }
        assert_eq!(sub.document().unwrap().data, server_state.data);
    }
}

#[tokio::test]
async fn resume_replays_only_what_was_missed() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let doc = c.document("log");
    doc.set(&json!({"v": 0})).await.unwrap();
    let mut sub = doc.subscribe().await.unwrap();
    next_event(&mut sub).await;
    let replica = sub.document().unwrap().clone();
    drop(sub);
    for v in 1..=5 {
        doc.set(&json!({"v": v})).await.unwrap();
    }
    let mut resumed = doc.resume(replica).await.unwrap();
    for v in 1..=5u64 {
        let e = next_event(&mut resumed).await;
        assert_eq!(e.revision, v);
        assert!(matches!(e.kind, SyncEventKind::DocumentUpdated { .. }));
    }
    assert_eq!(resumed.document().unwrap().data, json!({"v": 5}));
    // Up to date already: nothing is replayed, later changes still come.
    let mut current = doc.subscribe_since(5).await.unwrap();
    assert_no_event(&mut current, Duration::from_millis(200)).await;
    doc.set(&json!({"v": 6})).await.unwrap();
    assert_eq!(next_event(&mut current).await.revision, 6);
}

#[tokio::test]
async fn resume_past_the_kept_history_gets_a_snapshot() {
    let s = TestServer::start_with(|o| o.log_retention = 3).await;
    let c = s.backend().await;
    let doc = c.document("short-memory");
    for v in 0..=10 {
        doc.set(&json!({"v": v})).await.unwrap();
    }
    // Revisions 1..=7 are gone from the log (only the last 3 are kept).
    let mut sub = doc.subscribe_since(2).await.unwrap();
    let e = next_event(&mut sub).await;
    assert_eq!(e.kind, SyncEventKind::Snapshot);
    assert_eq!(e.revision, 10);
    assert_eq!(sub.document().unwrap().data, json!({"v": 10}));
    // Within the kept history: a replay.
    let mut sub = doc.subscribe_since(8).await.unwrap();
    assert_eq!(next_event(&mut sub).await.revision, 9);
    assert_eq!(next_event(&mut sub).await.revision, 10);
    // All of it, 8..=10: in cluster mode that crosses the end of the object's 3-slot
    // change-log ring (slots 2, 0, 1), and still replays in order.
    let mut sub = doc.subscribe_since(7).await.unwrap();
    for revision in 8..=10 {
        let e = next_event(&mut sub).await;
        assert_ne!(e.kind, SyncEventKind::Snapshot);
        assert_eq!(e.revision, revision);
    }
    // A revision from the future cannot be resumed: snapshot.
    let mut sub = doc.subscribe_since(99).await.unwrap();
    assert_eq!(next_event(&mut sub).await.kind, SyncEventKind::Snapshot);
}

#[tokio::test]
async fn deleting_ends_subscriptions_with_a_removal_event() {
    let s = TestServer::start().await;
    let alice = s.client_as("alice").await;
    let doc = alice.document("gone");
    doc.set(&json!(1)).await.unwrap();
    let mut sub = doc.subscribe().await.unwrap();
    next_event(&mut sub).await;
    doc.delete().await.unwrap();
    let e = next_event(&mut sub).await;
    assert_eq!(
        e.kind,
        SyncEventKind::Removed {
            reason: Reason::Write
        }
    );
    assert_eq!(e.revision, 1);
    assert!(e.is_local);
    assert!(sub.document().is_none());
    assert!(sub.next().await.is_none(), "the subscription has ended");
}

#[tokio::test]
async fn expiry_is_announced_by_the_reaper() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let doc = c.document("ephemeral");
    doc.set_with(
        &json!({"hi": 1}),
        WriteOptions {
            if_match: None,
            ttl: Some(1),
        },
    )
    .await
    .unwrap();
    let mut sub = doc.subscribe().await.unwrap();
    next_event(&mut sub).await;
    let e = next_event(&mut sub).await;
    assert_eq!(
        e.kind,
        SyncEventKind::Removed {
            reason: Reason::Expired
        }
    );
    assert_eq!(e.actor, "system");
    assert!(!e.is_local);
}

#[tokio::test]
async fn subscribing_to_nothing_is_not_found() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let err = c.document("nope").subscribe().await.err().expect("refused");
    assert_eq!(err.code(), syncline_client::ErrorCode::NotFound);
    // The connection is fine afterwards.
    c.ping().await.unwrap();
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_is_resynced_not_starved() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let doc = c.document("firehose");
    doc.set(&json!({"n": 0})).await.unwrap();
    let reader = s.backend().await;
    let mut sub = reader.document("firehose").subscribe().await.unwrap();
    // Far more changes than the server queues per connection plus what the client
    // buffers, written while the subscriber reads nothing.
    // One connection per writer: each stays under the per-connection rate limit.
    let mut writers = Vec::new();
    for w in 0..16 {
        let doc = s.backend().await.document("firehose");
        writers.push(tokio::spawn(async move {
            for k in 0..800 {
                doc.update(&json!({ format!("w{w}"): k })).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let last = doc.get().await.unwrap();
    assert_eq!(last.revision, 12_800);
    let mut resyncs = 0u64;
    let mut prev: Option<u64> = None;
    while sub.document().map(|r| r.revision) != Some(last.revision) {
        let e = next_event(&mut sub).await;
        if let Some(p) = prev {
            assert!(e.revision > p, "never backwards: {} after {p}", e.revision);
            if e.kind != SyncEventKind::Snapshot {
                assert_eq!(e.revision, p + 1, "deltas have no gaps");
            }
        }
        if prev.is_some() && e.kind == SyncEventKind::Snapshot {
            resyncs += 1;
        }
        prev = Some(e.revision);
    }
    assert_eq!(sub.document().unwrap().data, last.data);
    // The backlog (12,800 events) is more than the server queues for a connection plus
    // what the client buffers, so the server must have resynced at least once.
    assert!(resyncs > 0, "expected a resync snapshot");
}

/// The client takes `previous` from its replica when the replica holds the value one
/// revision behind, and from the wire otherwise (here: a list item outside the
/// subscription's window): both must give the value the change replaced.
#[tokio::test]
async fn previous_is_the_replaced_value_from_the_replica_or_from_the_wire() {
    let s = TestServer::start().await;
    let backend = s.backend().await;
    let map = backend.map("prefs");
    map.set("theme", &json!({"v": 0})).await.unwrap();
    map.set("other", &json!({"v": 100})).await.unwrap();
    let mut map_sub = map.subscribe().await.unwrap();
    assert_eq!(next_event(&mut map_sub).await.kind, SyncEventKind::Snapshot);
    let doc = backend.document("prefs-doc");
    doc.set(&json!({"v": 0})).await.unwrap();
    let mut doc_sub = doc.subscribe().await.unwrap();
    assert_eq!(next_event(&mut doc_sub).await.kind, SyncEventKind::Snapshot);
    let list = backend.list("prefs-list");
    for v in [0, 100, 200] {
        list.push(&json!({"v": v})).await.unwrap();
    }
    let mut list_sub = list.subscribe(Some(1)).await.unwrap();
    assert_eq!(
        next_event(&mut list_sub).await.kind,
        SyncEventKind::Snapshot
    );
    assert_eq!(
        list_sub.collection().unwrap().items.len(),
        1,
        "a window of one"
    );
    for v in 1..=3 {
        map.update("theme", &json!({"v": v})).await.unwrap();
        doc.update(&json!({"v": v})).await.unwrap();
        list.update(0, &json!({"v": v})).await.unwrap();
    }
    for v in 1..=3 {
        for (sub, what) in [(&mut map_sub, "map item"), (&mut list_sub, "list item")] {
            match next_event(sub).await.kind {
                SyncEventKind::ItemUpdated { item, previous } => {
                    assert_eq!(item.data, json!({"v": v}), "{what}");
                    assert_eq!(previous, json!({"v": v - 1}), "{what}");
                }
                other => panic!("unexpected {other:?} ({what})"),
            }
        }
        match next_event(&mut doc_sub).await.kind {
            SyncEventKind::DocumentUpdated { data, previous } => {
                assert_eq!(data, json!({"v": v}));
                assert_eq!(previous, Some(json!({"v": v - 1})));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
