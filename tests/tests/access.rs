//! Services, API keys and per-identity ACLs, end to end: isolation between services, the
//! ACL across every operation of every kind (off, on, toggled live), grants and revokes
//! taking effect on live subscriptions, key revocation cutting live connections.

use std::time::Duration;

use serde_json::json;
use syncline_client::{
    Client, ClientConfig, ErrorCode, Rights, ServiceFlags, ServiceFlagsPatch, SubscribeOptions,
    SyncEventKind, WriteOptions,
};
use syncline_tests::{next_event, TestServer, WAIT};

const READ: Rights = Rights {
    read: true,
    write: false,
    manage: false,
};
const WRITE: Rights = Rights {
    read: false,
    write: true,
    manage: false,
};
const MANAGE: Rights = Rights {
    read: false,
    write: false,
    manage: true,
};

fn mint(s: &TestServer, key: (&str, &str), service: &str, identity: &str) -> String {
    syncline_client::token::mint(
        key.0,
        key.1,
        &s.admin.account_sid,
        service,
        identity,
        3600,
        syncline_client::token::now_s(),
    )
}

async fn as_identity(s: &TestServer, service: &str, identity: &str) -> Client {
    let token = mint(
        s,
        (&s.admin.api_key_sid, &s.admin.api_key_secret),
        service,
        identity,
    );
    Client::connect(s.token_config(&token)).await.unwrap()
}

async fn backend_in(s: &TestServer, service: &str) -> Client {
    let config = ClientConfig::from_admin(&s.admin).unwrap().service(service);
    Client::connect(config).await.unwrap()
}

/// Every read of every kind; `Ok` if all succeed, else the first error code.
async fn reads(c: &Client) -> Result<(), ErrorCode> {
    let e = |e: syncline_client::Error| e.code();
    c.document("doc").get().await.map_err(e)?;
    c.list("list").get(0).await.map_err(e)?;
    c.list("list").items(Default::default()).await.map_err(e)?;
    c.map("map").get("k").await.map_err(e)?;
    c.map("map").items(Default::default()).await.map_err(e)?;
    c.fetch("stream").await.map_err(e)?;
    for name in ["doc", "list", "map", "stream"] {
        c.subscribe(name, SubscribeOptions::default())
            .await
            .map_err(e)?;
    }
    Ok(())
}

/// Every data write of every kind; `Ok` if all succeed, else the first error code.
async fn writes(c: &Client) -> Result<(), ErrorCode> {
    let e = |e: syncline_client::Error| e.code();
    let w = WriteOptions::default();
    c.document("doc")
        .set(&json!({"by": "w"}))
        .await
        .map_err(e)?;
    c.document("doc")
        .update(&json!({"u": 1}))
        .await
        .map_err(e)?;
    c.list("list").push(&json!(1)).await.map_err(e)?;
    c.list("list").set(0, &json!(2), w).await.map_err(e)?;
    c.list("list")
        .update(0, &json!({"u": 1}), None)
        .await
        .map_err(e)?;
    let pushed = c.list("list").push(&json!(3)).await.map_err(e)?;
    if let Some(syncline_client::ItemKey::Index(i)) = pushed.key {
        c.list("list").remove(i, None).await.map_err(e)?;
    }
    c.map("map").set("k", &json!(1), w).await.map_err(e)?;
    c.map("map")
        .update("k", &json!({"u": 1}), None)
        .await
        .map_err(e)?;
    c.map("map").set("tmp", &json!(1), w).await.map_err(e)?;
    c.map("map").remove("tmp", None).await.map_err(e)?;
    c.stream("stream")
        .publish(&json!({"hi": 1}))
        .await
        .map_err(e)?;
    Ok(())
}

/// Creates one object of every kind as `c`.
async fn create_all(c: &Client) {
    c.document("doc").set(&json!({})).await.unwrap();
    c.list("list").push(&json!(0)).await.unwrap();
    c.map("map")
        .set("k", &json!(0), WriteOptions::default())
        .await
        .unwrap();
    c.stream("stream").create(None).await.unwrap();
}

async fn grant_all(backend: &Client, identity: &str, rights: Rights) {
    for name in ["doc", "list", "map", "stream"] {
        backend.grant(name, identity, rights).await.unwrap();
    }
}

#[tokio::test]
async fn services_are_isolated() {
    let s = TestServer::start().await;
    let admin = s.backend().await;
    let other = admin
        .create_service(Some("other"), ServiceFlags::default())
        .await
        .unwrap();
    assert!(other.sid.starts_with("IS"));
    assert_eq!(admin.service("other").await.unwrap(), other);
    assert_eq!(admin.services().await.unwrap().len(), 2);
    let dup = admin
        .create_service(Some("other"), ServiceFlags::default())
        .await
        .unwrap_err();
    assert_eq!(dup.code(), ErrorCode::AlreadyExists);

    admin
        .document("shared-name")
        .set(&json!("default"))
        .await
        .unwrap();
    let in_other = backend_in(&s, "other").await;
    assert_eq!(
        in_other
            .document("shared-name")
            .get()
            .await
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
    in_other
        .document("shared-name")
        .set(&json!("other"))
        .await
        .unwrap();
    assert_eq!(
        admin.document("shared-name").get().await.unwrap().data,
        json!("default")
    );
    // A token of the other service sees only its own service.
    let bob = as_identity(&s, &other.sid, "bob").await;
    assert_eq!(bob.welcome().service_sid, other.sid);
    assert_eq!(
        bob.document("shared-name").get().await.unwrap().data,
        json!("other")
    );
    let default_sid = admin.document("shared-name").get().await.unwrap().sid;
    assert_eq!(
        bob.document(&default_sid).get().await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    // Asking for another service with a token is refused outright.
    let token = mint(
        &s,
        (&s.admin.api_key_sid, &s.admin.api_key_secret),
        &other.sid,
        "bob",
    );
    let err = Client::connect(s.token_config(&token).service("default"))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), ErrorCode::Forbidden);
}

#[tokio::test]
async fn acl_off_gives_every_identity_full_access() {
    let s = TestServer::start().await;
    create_all(&s.client_as("alice").await).await;
    let bob = s.client_as("bob").await;
    assert_eq!(reads(&bob).await, Ok(()));
    assert_eq!(writes(&bob).await, Ok(()));
    assert!(bob.document("doc").delete().await.is_ok());
}

#[tokio::test]
async fn acl_on_across_every_operation_of_every_kind() {
    let s = TestServer::start().await;
    let admin = s.backend().await;
    let svc = admin
        .create_service(
            Some("secure"),
            ServiceFlags {
                acl_enabled: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let backend = backend_in(&s, "secure").await;
    let alice = as_identity(&s, &svc.sid, "alice").await;
    let bob = as_identity(&s, &svc.sid, "bob").await;
    create_all(&alice).await;

    // The creator and the backend can do everything; another identity nothing.
    assert_eq!(reads(&alice).await, Ok(()));
    assert_eq!(writes(&alice).await, Ok(()));
    assert_eq!(reads(&backend).await, Ok(()));
    assert_eq!(writes(&backend).await, Ok(()));
    assert_eq!(reads(&bob).await, Err(ErrorCode::Forbidden));
    assert_eq!(writes(&bob).await, Err(ErrorCode::Forbidden));
    assert_eq!(
        bob.document("doc").delete().await.unwrap_err().code(),
        ErrorCode::Forbidden
    );
    // A refusal reveals nothing: a missing object is Forbidden too, with the same words.
    let missing = bob.document("no-such-doc").get().await.unwrap_err();
    let existing = bob.document("doc").get().await.unwrap_err();
    assert_eq!(
        (missing.code(), missing.to_string()),
        (existing.code(), existing.to_string())
    );
    let taken = bob.list("doc").create(None).await.unwrap_err();
    assert_eq!(
        taken.code(),
        ErrorCode::Forbidden,
        "AlreadyExists would reveal the name"
    );
    // Bob may still create his own objects.
    bob.document("bobs").set(&json!(1)).await.unwrap();
    assert_eq!(
        alice.document("bobs").get().await.unwrap_err().code(),
        ErrorCode::Forbidden
    );

    // read: reads only.
    grant_all(&backend, "bob", READ).await;
    assert_eq!(reads(&bob).await, Ok(()));
    assert_eq!(writes(&bob).await, Err(ErrorCode::Forbidden));
    // write: writes, and (as the grant sets exactly what is given) no more reads.
    grant_all(&backend, "bob", WRITE).await;
    assert_eq!(writes(&bob).await, Ok(()));
    assert_eq!(reads(&bob).await, Err(ErrorCode::Forbidden));
    assert_eq!(
        bob.document("doc").delete().await.unwrap_err().code(),
        ErrorCode::Forbidden
    );
    let ttl = WriteOptions {
        if_match: None,
        ttl: Some(60),
    };
    let err = bob
        .document("doc")
        .set_with(&json!(1), ttl)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        ErrorCode::Forbidden,
        "changing the TTL needs manage"
    );
    // manage: delete.
    backend.grant("doc", "bob", MANAGE).await.unwrap();
    bob.document("doc").delete().await.unwrap();
    // `*` grants to every identity; revoke takes it away.
    backend.grant("map", "*", READ).await.unwrap();
    let carol = as_identity(&s, &svc.sid, "carol").await;
    carol.map("map").get("k").await.unwrap();
    backend.revoke("map", "*").await.unwrap();
    assert_eq!(
        carol.map("map").get("k").await.unwrap_err().code(),
        ErrorCode::Forbidden
    );
    let perms = backend.permissions("list").await.unwrap();
    assert_eq!(perms.len(), 1);
    assert_eq!(
        (perms[0].identity.as_str(), perms[0].rights),
        ("bob", WRITE)
    );
    // Objects the backend creates are reachable by no token without a grant.
    backend.document("system-doc").set(&json!(1)).await.unwrap();
    assert_eq!(
        alice.document("system-doc").get().await.unwrap_err().code(),
        ErrorCode::Forbidden
    );
    // Tokens cannot administer.
    assert_eq!(
        alice.grant("doc", "alice", READ).await.unwrap_err().code(),
        ErrorCode::Forbidden
    );
    assert_eq!(
        alice.services().await.unwrap_err().code(),
        ErrorCode::Forbidden
    );
}

#[tokio::test]
async fn revoking_read_ends_a_live_subscription_at_once() {
    let s = TestServer::start().await;
    let admin = s.backend().await;
    let svc = admin
        .create_service(
            Some("live"),
            ServiceFlags {
                acl_enabled: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let backend = backend_in(&s, "live").await;
    backend.document("board").set(&json!(0)).await.unwrap();
    backend.grant("board", "bob", READ).await.unwrap();
    let bob = as_identity(&s, &svc.sid, "bob").await;
    let mut sub = bob.document("board").subscribe().await.unwrap();
    assert_eq!(next_event(&mut sub).await.kind, SyncEventKind::Snapshot);
    backend.document("board").set(&json!(1)).await.unwrap();
    assert_eq!(next_event(&mut sub).await.revision, 1);
    backend.revoke("board", "bob").await.unwrap();
    match next_event(&mut sub).await.kind {
        SyncEventKind::Ended(e) => assert_eq!(e.code, ErrorCode::Forbidden),
        other => panic!("expected the subscription to end, got {other:?}"),
    }
    backend.document("board").set(&json!(2)).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), sub.next())
        .await
        .ok()
        .flatten()
        .is_none());
    // A grant to `*` restores it for a new subscription.
    backend.grant("board", "*", READ).await.unwrap();
    let mut again = bob.document("board").subscribe().await.unwrap();
    assert_eq!(next_event(&mut again).await.revision, 2);
}

#[tokio::test]
async fn toggling_acl_live_ends_subscriptions_without_access() {
    let s = TestServer::start().await;
    let admin = s.backend().await;
    let svc = admin
        .create_service(Some("toggle"), ServiceFlags::default())
        .await
        .unwrap();
    let alice = as_identity(&s, &svc.sid, "alice").await;
    let bob = as_identity(&s, &svc.sid, "bob").await;
    alice.document("notes").set(&json!(0)).await.unwrap();
    let mut a_sub = alice.document("notes").subscribe().await.unwrap();
    let mut b_sub = bob.document("notes").subscribe().await.unwrap();
    next_event(&mut a_sub).await;
    next_event(&mut b_sub).await;
    let on = ServiceFlagsPatch {
        acl_enabled: Some(true),
        ..Default::default()
    };
    assert!(
        admin
            .update_service("toggle", on)
            .await
            .unwrap()
            .acl_enabled
    );
    match next_event(&mut b_sub).await.kind {
        SyncEventKind::Ended(e) => assert_eq!(e.code, ErrorCode::Forbidden),
        other => panic!("bob should lose the subscription, got {other:?}"),
    }
    assert_eq!(
        bob.document("notes").get().await.unwrap_err().code(),
        ErrorCode::Forbidden
    );
    // Alice created it and keeps it.
    alice.document("notes").set(&json!(1)).await.unwrap();
    assert_eq!(next_event(&mut a_sub).await.revision, 1);
    let off = ServiceFlagsPatch {
        acl_enabled: Some(false),
        ..Default::default()
    };
    admin.update_service("toggle", off).await.unwrap();
    assert_eq!(bob.document("notes").get().await.unwrap().revision, 1);
    let bad = ServiceFlagsPatch {
        reachability_debouncing_window_ms: Some(10),
        ..Default::default()
    };
    assert_eq!(
        admin
            .update_service("toggle", bad)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::InvalidArgument
    );
}

#[tokio::test]
async fn revoking_a_key_cuts_its_tokens_live_and_later() {
    let s = TestServer::start().await;
    let admin = s.backend().await;
    let key = admin.create_key(Some("mobile")).await.unwrap();
    let secret = key.secret.clone().expect("the secret is shown once");
    assert!(
        admin
            .keys()
            .await
            .unwrap()
            .iter()
            .all(|k| k.secret.is_none()),
        "never again"
    );
    let token = mint(
        &s,
        (&key.sid, &secret),
        &s.admin.default_service_sid,
        "alice",
    );
    let alice = Client::connect(s.token_config(&token)).await.unwrap();
    alice.ping().await.unwrap();
    // The key itself can act as a backend, too.
    let mut as_key = s.admin.clone();
    as_key.api_key_sid = key.sid.clone();
    as_key.api_key_secret = secret.clone();
    let key_backend = Client::connect(ClientConfig::from_admin(&as_key).unwrap())
        .await
        .unwrap();
    key_backend.ping().await.unwrap();

    assert!(admin.revoke_key(&key.sid).await.unwrap().revoked);
    for c in [&alice, &key_backend] {
        let why = tokio::time::timeout(WAIT, c.closed()).await.unwrap();
        assert_eq!(why.code(), ErrorCode::Unauthorized);
    }
    let err = Client::connect(s.token_config(&token)).await.err().unwrap();
    assert_eq!(err.code(), ErrorCode::Unauthorized);
    // The admin key is safe from accidents.
    let err = admin.revoke_key(&s.admin.api_key_sid).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    admin.ping().await.unwrap();
}

#[tokio::test]
async fn deleting_a_service_removes_everything_in_it() {
    let s = TestServer::start().await;
    let admin = s.backend().await;
    let svc = admin
        .create_service(Some("doomed"), ServiceFlags::default())
        .await
        .unwrap();
    let inside = backend_in(&s, "doomed").await;
    create_all(&inside).await;
    let watcher = as_identity(&s, &svc.sid, "watcher").await;
    let mut sub = watcher.map("map").subscribe().await.unwrap();
    next_event(&mut sub).await;
    admin.delete_service("doomed").await.unwrap();
    let e = next_event(&mut sub).await;
    assert!(matches!(e.kind, SyncEventKind::Removed { .. }), "{e:?}");
    assert_eq!(
        admin.service("doomed").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    let why = tokio::time::timeout(WAIT, watcher.closed()).await.unwrap();
    assert_eq!(why.code(), ErrorCode::Unauthorized);
    let token = mint(
        &s,
        (&s.admin.api_key_sid, &s.admin.api_key_secret),
        &svc.sid,
        "late",
    );
    let err = Client::connect(s.token_config(&token)).await.err().unwrap();
    assert_eq!(err.code(), ErrorCode::Unauthorized);
    // Re-created under the same name, it starts empty.
    admin
        .create_service(Some("doomed"), ServiceFlags::default())
        .await
        .unwrap();
    let fresh = backend_in(&s, "doomed").await;
    assert_eq!(
        fresh.fetch("map").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    let err = admin.delete_service("default").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
}

/// Writes racing a service deletion either land before it (and are deleted with the
/// service, events and all) or are refused: nothing is left behind under the deleted
/// service. Four writers create documents as fast as they can while it is deleted.
#[tokio::test]
async fn writes_racing_a_service_deletion_leave_nothing_behind() {
    use syncline_server::store::{SledStore, Store};
    let mut s = TestServer::start().await;
    let admin = s.backend().await;
    let svc = admin
        .create_service(Some("racy"), ServiceFlags::default())
        .await
        .unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let c = backend_in(&s, "racy").await;
        writers.spawn(async move {
            for i in 0..5_000 {
                if c.document(&format!("w{w}-{i}"))
                    .set(&json!(i))
                    .await
                    .is_err()
                {
                    return i;
                }
            }
            5_000
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin.delete_service("racy").await.unwrap();
    while let Some(written) = writers.join_next().await {
        assert!(written.unwrap() < 5_000, "a writer was never stopped");
    }
    s.shutdown().await;
    let store = SledStore::open(&s.dir.path().join("db"), 1000, true).unwrap();
    let left = store.objects_of(&svc.sid).await.unwrap();
    assert!(left.is_empty(), "{} objects left behind", left.len());
}
