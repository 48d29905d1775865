//! Documents through a real server and real clients: revisions, conditional writes,
//! merge, mutate, delete, and the typed errors of each.

use serde_json::json;
use syncline_client::{ErrorCode, WriteOptions};
use syncline_tests::TestServer;

#[tokio::test]
async fn revisions_start_at_zero_and_count_every_change() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let doc = c.document("settings");
    let d0 = doc
        .set(&json!({"theme": "dark"}))
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert_eq!(d0.revision, 0);
    assert_eq!(d0.created_by, "system");
    assert!(d0.sid.starts_with("ET"));
    let d1 = doc
        .update(&json!({"lang": "en"}))
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert_eq!(d1.revision, 1);
    assert_eq!(d1.data, json!({"theme": "dark", "lang": "en"}));
    let d2 = doc.set(&json!([1, 2])).await.unwrap().into_value().unwrap();
    assert_eq!(d2.revision, 2);
    // By sid as well as by name.
    let by_sid = c.document(&d0.sid).get().await.unwrap();
    assert_eq!(by_sid, d2);
    assert_eq!(by_sid.unique_name.as_deref(), Some("settings"));
}

#[tokio::test]
async fn stale_if_match_is_a_conflict_and_changes_nothing() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let doc = c.document("counter");
    doc.set(&json!({"n": 1})).await.unwrap();
    doc.set(&json!({"n": 2})).await.unwrap();
    let stale = WriteOptions {
        if_match: Some(0),
        ttl: None,
    };
    let err = doc.set_with(&json!({"n": 99}), stale).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict);
    assert_eq!(err.current_revision(), Some(1));
    let err = doc
        .update_with(&json!({"n": 99}), WriteOptions::new().if_match(0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict);
    let err = doc
        .delete_with(WriteOptions::new().if_match(0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict);
    let now = doc.get().await.unwrap();
    assert_eq!((now.revision, now.data), (1, json!({"n": 2})));
    // The matching revision goes through.
    let ok = doc
        .set_with(
            &json!({"n": 3}),
            WriteOptions {
                if_match: Some(1),
                ttl: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(ok.revision, 2);
}

#[tokio::test]
async fn concurrent_mutate_loses_no_increment() {
    let s = TestServer::start().await;
    let a = s.backend().await;
    let b = s.client_as("bob").await;
    a.document("hits").set(&json!({"n": 0})).await.unwrap();
    let bump = |c: syncline_client::Client| async move {
        for _ in 0..15 {
            c.document("hits")
                .mutate(|cur| {
                    let n = cur.and_then(|v| v["n"].as_i64()).unwrap_or(0);
                    Some(json!({"n": n + 1}))
                })
                .await
                .unwrap();
        }
    };
    tokio::join!(bump(a.clone()), bump(b.clone()));
    let d = a.document("hits").get().await.unwrap();
    assert_eq!(d.data, json!({"n": 30}));
    assert_eq!(d.revision, 30);
}

/// Writers that all find the document missing must not overwrite each other's first
/// value: creating goes through `create` + `if_match`, so each increment lands.
#[tokio::test]
async fn concurrent_first_mutates_lose_no_increment() {
    let s = TestServer::start().await;
    let mut clients = Vec::new();
    for i in 0..8 {
        clients.push(s.client_as(&format!("writer{i}")).await);
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(clients.len()));
    let mut set = tokio::task::JoinSet::new();
    for c in clients {
        let start = start.clone();
        set.spawn(async move {
            start.wait().await;
            c.document("first")
                .mutate(|cur| {
                    let n = cur.and_then(|v| v["n"].as_i64()).unwrap_or(0);
                    Some(json!({"n": n + 1}))
                })
                .await
                .unwrap()
        });
    }
    while let Some(r) = set.join_next().await {
        assert!(r.unwrap().is_some());
    }
    let d = s.backend().await.document("first").get().await.unwrap();
    assert_eq!(d.data, json!({"n": 8}));
}

#[tokio::test]
async fn delete_then_recreate_is_a_new_document() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let doc = c.document("tmp");
    let first = doc.set(&json!(1)).await.unwrap().into_value().unwrap();
    doc.set(&json!(2)).await.unwrap();
    assert_eq!(
        doc.delete().await.unwrap(),
        2,
        "delete reports the final revision"
    );
    assert_eq!(doc.get().await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(doc.delete().await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(
        doc.update(&json!({})).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    let again = doc.set(&json!(3)).await.unwrap().into_value().unwrap();
    assert_ne!(again.sid, first.sid);
    assert_eq!(again.revision, 0);
    assert_eq!(
        c.document(&first.sid).get().await.unwrap_err().code(),
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn identities_write_as_themselves() {
    let s = TestServer::start().await;
    let alice = s.client_as("alice").await;
    let d = alice
        .document("note")
        .set(&json!({"x": 1}))
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert_eq!(d.created_by, "alice");
    assert_eq!(alice.welcome().identity.as_deref(), Some("alice"));
    assert_eq!(alice.welcome().service_sid, s.admin.default_service_sid);
}

#[tokio::test]
async fn ttl_hides_the_document_at_once_and_zero_clears_it() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let keep = c.document("keep");
    let d = keep
        .set_with(
            &json!(1),
            WriteOptions {
                if_match: None,
                ttl: Some(3600),
            },
        )
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert!(d.date_expires.is_some());
    let d = keep
        .set_with(
            &json!(2),
            WriteOptions {
                if_match: None,
                ttl: Some(0),
            },
        )
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert_eq!(d.date_expires, None);
    let brief = c.document("brief");
    brief
        .set_with(
            &json!(1),
            WriteOptions {
                if_match: None,
                ttl: Some(1),
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(brief.get().await.unwrap_err().code(), ErrorCode::NotFound);
    // Writing the name again creates a fresh document.
    assert_eq!(brief.set(&json!(2)).await.unwrap().revision, 0);
}

#[tokio::test]
async fn a_write_option_the_write_cannot_honour_is_refused_not_dropped() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let doc = c.document("opts");
    doc.set(&json!({"a": 1})).await.unwrap();
    let ttl = WriteOptions::new().ttl(60);
    let err = doc.update_with(&json!({"b": 2}), ttl).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
    let err = c
        .list("opts-list")
        .push_with(&json!(1), WriteOptions::new().if_match(0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
    // Nothing was written by either.
    assert_eq!(doc.get().await.unwrap().revision, 0);
    assert_eq!(
        c.fetch("opts-list").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    // The same options where they apply.
    let w = doc
        .update_with(&json!({"b": 2}), WriteOptions::new().if_match(0))
        .await
        .unwrap();
    assert_eq!(w.revision, 1);
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Default, PartialEq)]
struct Counter {
    visits: u64,
}

#[tokio::test]
async fn a_typed_document_reads_and_writes_its_type_as_json() {
    let s = TestServer::start().await;
    let c = s.backend().await;
    let doc = c.typed_document::<Counter>("counter");
    for _ in 0..3 {
        doc.mutate(|cur| {
            Some(Counter {
                visits: cur.unwrap_or_default().visits + 1,
            })
        })
        .await
        .unwrap();
    }
    let (counter, revision) = doc.get().await.unwrap();
    assert_eq!(counter, Counter { visits: 3 });
    // Stored as plain JSON, which untyped readers see as such.
    let plain = c.document("counter").get().await.unwrap();
    assert_eq!(plain.data, json!({"visits": 3}));
    assert_eq!(plain.revision, revision);
    assert_eq!(plain.data_as::<Counter>().unwrap(), counter);
    assert_eq!(doc.set(&Counter { visits: 9 }).await.unwrap(), revision + 1);
    // A value of another shape is an error, not a default.
    c.document("counter").set(&json!("nine")).await.unwrap();
    assert_eq!(
        doc.get().await.unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    let err = doc.mutate(|_| Some(Counter::default())).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert_eq!(
        c.document("counter").get().await.unwrap().data,
        json!("nine")
    );
}
