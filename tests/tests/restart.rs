//! Restarts: data, revisions and the change log survive a graceful restart, and a
//! shutdown tells connected clients the server is going away after finishing their writes.

use serde_json::json;
use syncline_client::{ErrorCode, SyncEventKind};
use syncline_tests::{next_event, TestServer, WAIT};

#[tokio::test]
async fn restart_keeps_documents_revisions_and_history() {
    let mut s = TestServer::start().await;
    let c = s.backend().await;
    for v in 0..5 {
        c.document("persist").set(&json!({"v": v})).await.unwrap();
    }
    let sid_before = c.document("persist").get().await.unwrap().sid;
    drop(c);
    s.restart().await;
    let c = s.backend().await;
    let d = c.document("persist").get().await.unwrap();
    assert_eq!(
        (d.revision, &d.data, &d.sid),
        (4, &json!({"v": 4}), &sid_before)
    );
    // Resume across the restart from the change log, not a snapshot.
    let mut sub = c.document("persist").subscribe_since(2).await.unwrap();
    let e = next_event(&mut sub).await;
    assert_eq!(e.revision, 3);
    assert!(matches!(e.kind, SyncEventKind::DocumentUpdated { .. }));
    assert_eq!(next_event(&mut sub).await.revision, 4);
    assert_eq!(
        c.document("persist").set(&json!(5)).await.unwrap().revision,
        5
    );
    // The installation is the same one: same account, key and default service.
    let admin_before = s.admin.clone();
    s.restart().await;
    assert_eq!(s.admin.account_sid, admin_before.account_sid);
    assert_eq!(s.admin.api_key_sid, admin_before.api_key_sid);
    assert_eq!(
        s.admin.default_service_sid,
        admin_before.default_service_sid
    );
}

#[tokio::test]
async fn shutdown_tells_clients_and_keeps_acknowledged_writes() {
    let mut s = TestServer::start().await;
    let c = s.backend().await;
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            let mut acked = None;
            for k in 0..10_000u64 {
                match c.document("busy").set(&json!({"k": k})).await {
                    Ok(d) => acked = Some((d.revision, k)),
                    Err(_) => break,
                }
            }
            acked
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    s.shutdown().await;
    let why = tokio::time::timeout(WAIT, c.closed()).await.unwrap();
    assert_eq!(why.code(), ErrorCode::Unavailable, "{why}");
    assert!(why.to_string().contains("shutting down"), "{why}");
    let (revision, k) = writer
        .await
        .unwrap()
        .expect("some writes were acknowledged");
    s.restart().await;
    let d = s.backend().await.document("busy").get().await.unwrap();
    assert!(
        d.revision >= revision,
        "acknowledged revision {revision} survived"
    );
    assert!(d.data["k"].as_u64().unwrap() >= k);
}
