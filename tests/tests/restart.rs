//! Restarts: data, revisions and the change log survive a graceful restart, a shutdown
//! tells connected clients the server is going away after finishing their writes, and the
//! stateless-reset key is made once and kept.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;
use syncline_client::{ErrorCode, SyncEventKind};
use syncline_server::Server;
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

#[tokio::test]
async fn the_stateless_reset_key_is_made_on_first_start_and_kept_across_restarts() {
    let mut s = TestServer::start().await;
    let path = s.dir.path().join("reset.key");
    let key = std::fs::read(&path).expect("reset.key made on first start");
    assert_eq!(key.len(), 32);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the server's user reads it");
    s.restart().await;
    s.restart().await;
    assert_eq!(
        std::fs::read(&path).unwrap(),
        key,
        "the same key after restarts"
    );

    // A damaged key stops the start, naming the file, and is left as it is.
    s.shutdown().await;
    std::fs::write(&path, b"damaged").unwrap();
    let Err(e) = Server::start(s.options.clone()).await else {
        panic!("a server started with a damaged reset.key");
    };
    let message = e.to_string();
    assert!(
        message.contains("reset.key") && message.contains("32 bytes"),
        "{message}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"damaged");
}
