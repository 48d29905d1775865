//! Services, API keys and per-identity ACLs, end to end: isolation between services, the
//! ACL across every operation of every kind (off, on, toggled live), grants and revokes
//! taking effect on live subscriptions, key revocation cutting live connections.

use std::time::Duration;

use serde_json::json;
use syncline_client::{
    Client, ClientConfig, ErrorCode, ItemKey, Rights, ServiceFlags, ServiceFlagsPatch,
    SubscribeOptions, SyncEventKind, TokenCreate, WriteOptions,
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
    c.list("list").set_with(0, &json!(2), w).await.map_err(e)?;
    c.list("list")
        .update(0, &json!({"u": 1}))
        .await
        .map_err(e)?;
    let pushed = c.list("list").push(&json!(3)).await.map_err(e)?;
    if let Some(syncline_client::ItemKey::Index(i)) = pushed.key {
        c.list("list").remove(i).await.map_err(e)?;
    }
    c.map("map").set_with("k", &json!(1), w).await.map_err(e)?;
    c.map("map")
        .update("k", &json!({"u": 1}))
        .await
        .map_err(e)?;
    c.map("map")
        .set_with("tmp", &json!(1), w)
        .await
        .map_err(e)?;
    c.map("map").remove("tmp").await.map_err(e)?;
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
    c.map("map").set("k", &json!(0)).await.unwrap();
    c.stream("stream").create(None).await.unwrap();
}

async fn grant_all(backend: &Client, identity: &str, rights: Rights) {
    for name in ["doc", "list", "map", "stream"] {
        backend.grant(name, identity, rights).await.unwrap();
    }
}

/// Eight backends create a service of one unique name at once, each on its own
/// connection: exactly one gets it, the others hear `AlreadyExists`, and one service
/// holds the name.
#[tokio::test]
async fn concurrent_creations_of_one_service_name_let_exactly_one_win() {
    let s = TestServer::start().await;
    let mut backends = Vec::new();
    for _ in 0..8 {
        backends.push(s.backend().await);
    }
    let tries = backends.iter().map(|b| async move {
        b.create_service(Some("contested"), ServiceFlags::default())
            .await
    });
    let results = futures_util::future::join_all(tries).await;
    let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    for r in &results {
        if let Err(e) = r {
            assert_eq!(e.code(), ErrorCode::AlreadyExists, "{e}");
        }
    }
    let admin = s.backend().await;
    let named: Vec<_> = admin
        .services()
        .await
        .unwrap()
        .into_iter()
        .filter(|svc| svc.unique_name.as_deref() == Some("contested"))
        .collect();
    assert_eq!(named.len(), 1);
    assert_eq!(named[0].sid, won[0].sid);
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
    let in_other = s.backend_in("other").await;
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
    let backend = s.backend_in("secure").await;
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
    let backend = s.backend_in("live").await;
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
    let inside = s.backend_in("doomed").await;
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
    let fresh = s.backend_in("doomed").await;
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
    use syncline_core::store::Store;
    use syncline_store_sled::SledStore;
    let mut s = TestServer::start().await;
    let admin = s.backend().await;
    let svc = admin
        .create_service(Some("racy"), ServiceFlags::default())
        .await
        .unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let c = s.backend_in("racy").await;
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
    // Read what is stored, with the server gone: its sled database, or its etcd prefix.
    let store: std::sync::Arc<dyn Store> = match &s.options.store {
        syncline_server::StoreChoice::Sled => {
            std::sync::Arc::new(SledStore::open(&s.dir.path().join("db"), 1000, true).unwrap())
        }
        syncline_server::StoreChoice::Etcd(options) => {
            syncline_store_etcd::EtcdStore::connect(syncline_server::EtcdOptions::clone(options))
                .await
                .unwrap()
        }
    };
    let left = store.objects_of(&svc.sid).await.unwrap();
    assert!(left.is_empty(), "{} objects left behind", left.len());
}

/// A service with ACL on (and `token_create` as given), its backend, and token holders.
async fn acl_service(s: &TestServer, name: &str, token_create: TokenCreate) -> (String, Client) {
    let svc = s
        .backend()
        .await
        .create_service(
            Some(name),
            ServiceFlags {
                acl_enabled: true,
                token_create,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let backend = s.backend_in(name).await;
    (svc.sid, backend)
}

const READ_WRITE: Rights = Rights {
    read: true,
    write: true,
    manage: false,
};
const WRITE_MANAGE: Rights = Rights {
    read: false,
    write: true,
    manage: true,
};

fn ttl(seconds: u64) -> WriteOptions {
    WriteOptions {
        if_match: None,
        ttl: Some(seconds),
    }
}

#[tokio::test]
async fn a_write_with_a_ttl_needs_write_and_manage() {
    let s = TestServer::start().await;
    let (sid, backend) = acl_service(&s, "ttl-rights", TokenCreate::Own).await;
    backend
        .document("m")
        .set(&json!({"owner": "backend"}))
        .await
        .unwrap();
    backend.list("l").push(&json!(0)).await.unwrap();
    backend.map("p").set("k", &json!(0)).await.unwrap();
    let carol = as_identity(&s, &sid, "carol").await;
    let dave = as_identity(&s, &sid, "dave").await;
    let erin = as_identity(&s, &sid, "erin").await;
    for object in ["m", "l", "p"] {
        backend.grant(object, "carol", MANAGE).await.unwrap();
        backend.grant(object, "dave", WRITE).await.unwrap();
        backend.grant(object, "erin", WRITE_MANAGE).await.unwrap();
    }
    // Manage alone (the review's hole: `doc set m '{"hijacked":true}' --ttl 0`).
    for t in [0, 60] {
        let err = carol
            .document("m")
            .set_with(&json!({"hijacked": true}), ttl(t))
            .await;
        assert_eq!(
            err.unwrap_err().code(),
            ErrorCode::Forbidden,
            "manage-only set, ttl {t}"
        );
    }
    let err = carol
        .list("l")
        .set_with(0, &json!("hijacked"), ttl(0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Forbidden);
    let err = carol
        .map("p")
        .set_with("k", &json!("hijacked"), ttl(0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Forbidden);
    // Write alone changes data but not a TTL.
    let err = dave
        .document("m")
        .set_with(&json!({"dave": 1}), ttl(60))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Forbidden);
    assert_eq!(
        dave.list("l")
            .push_with(&json!(1), WriteOptions::new().ttl(60))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::Forbidden
    );
    assert_eq!(
        dave.map("p")
            .set_with("k", &json!(1), ttl(60))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::Forbidden
    );
    // Nothing the refusals touched changed.
    let m = backend.document("m").get().await.unwrap();
    assert_eq!(
        (m.revision, m.data, m.date_expires),
        (0, json!({"owner": "backend"}), None)
    );
    assert_eq!(backend.list("l").info().await.unwrap().revision, 1);
    assert_eq!(backend.map("p").get("k").await.unwrap().data, json!(0));
    // Each right for its own part, and both for both.
    dave.document("m").set(&json!({"dave": 1})).await.unwrap();
    dave.list("l").push(&json!(1)).await.unwrap();
    erin.document("m")
        .set_with(&json!({"erin": 1}), ttl(60))
        .await
        .unwrap();
    erin.list("l")
        .push_with(&json!(2), WriteOptions::new().ttl(60))
        .await
        .unwrap();
    erin.map("p")
        .set_with("k", &json!(2), ttl(60))
        .await
        .unwrap();
    let m = backend.document("m").get().await.unwrap();
    assert_eq!(m.data, json!({"erin": 1}));
    assert!(m.date_expires.is_some());
    carol.document("m").delete().await.unwrap();
}

#[tokio::test]
async fn write_without_read_gets_the_revision_and_no_data() {
    let s = TestServer::start().await;
    let (sid, backend) = acl_service(&s, "write-only", TokenCreate::Own).await;
    let secret = json!({"salary": 100, "ssn": "123"});
    backend.document("wo-doc").set(&secret).await.unwrap();
    backend.list("wo-list").push(&secret).await.unwrap();
    backend.map("wo-map").set("k", &secret).await.unwrap();
    let hank = as_identity(&s, &sid, "hank").await;
    let ivy = as_identity(&s, &sid, "ivy").await;
    for object in ["wo-doc", "wo-list", "wo-map"] {
        backend.grant(object, "hank", WRITE).await.unwrap();
        backend.grant(object, "ivy", READ_WRITE).await.unwrap();
    }
    // The review's hole: `doc update wo-doc '{"n":1}'` printed every key.
    let w = hank
        .document("wo-doc")
        .update(&json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!((w.revision, w.value), (1, None));
    let w = hank.document("wo-doc").set(&json!({"n": 2})).await.unwrap();
    assert_eq!((w.revision, w.value), (2, None));
    let w = hank.list("wo-list").push(&json!({"n": 1})).await.unwrap();
    assert_eq!(
        (w.revision, w.key.clone(), w.value),
        (2, Some(ItemKey::Index(1)), None)
    );
    let w = hank
        .list("wo-list")
        .update(0, &json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!((w.revision, w.value), (3, None));
    let w = hank.list("wo-list").set(0, &json!({"n": 2})).await.unwrap();
    assert_eq!(w.value, None);
    let w = hank
        .map("wo-map")
        .update("k", &json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!((w.revision, w.value), (2, None));
    let w = hank.map("wo-map").set("k2", &json!(1)).await.unwrap();
    assert_eq!(
        (w.key.clone(), w.value),
        (Some(ItemKey::Key("k2".into())), None)
    );
    // Reads stay refused.
    assert_eq!(
        hank.document("wo-doc").get().await.unwrap_err().code(),
        ErrorCode::Forbidden
    );
    // With read, the answer carries the value.
    let w = ivy
        .document("wo-doc")
        .update(&json!({"ivy": 1}))
        .await
        .unwrap();
    assert_eq!(w.value.unwrap().data, json!({"n": 2, "ivy": 1}));
    let w = ivy
        .map("wo-map")
        .update("k", &json!({"ivy": 1}))
        .await
        .unwrap();
    assert_eq!(w.value.unwrap().data["ivy"], json!(1));
}

/// Every path a token holder can take to an object, as (what, error code, message):
/// `Ok` entries mean the operation succeeded.
async fn probe(c: &Client, name: &str) -> Vec<(&'static str, Result<(), (ErrorCode, String)>)> {
    fn out<T>(r: Result<T, syncline_client::Error>) -> Result<(), (ErrorCode, String)> {
        r.map(|_| ()).map_err(|e| (e.code(), e.to_string()))
    }
    let if_match = |revision| WriteOptions {
        if_match: Some(revision),
        ttl: None,
    };
    let since = SubscribeOptions {
        since: Some(0),
        window: None,
    };
    vec![
        ("doc get", out(c.document(name).get().await)),
        (
            "doc set if_match 0",
            out(c.document(name).set_with(&json!({}), if_match(0)).await),
        ),
        (
            "doc set if_match 5",
            out(c.document(name).set_with(&json!({}), if_match(5)).await),
        ),
        ("doc update", out(c.document(name).update(&json!({})).await)),
        (
            "doc update if_match",
            out(c
                .document(name)
                .update_with(&json!({}), WriteOptions::new().if_match(0))
                .await),
        ),
        ("delete", out(c.delete(name).await)),
        (
            "delete if_match",
            out(c.delete_with(name, WriteOptions::new().if_match(0)).await),
        ),
        ("fetch", out(c.fetch(name).await)),
        ("list get", out(c.list(name).get(0).await)),
        (
            "list items",
            out(c.list(name).items(Default::default()).await),
        ),
        ("list set", out(c.list(name).set(0, &json!(1)).await)),
        ("list update", out(c.list(name).update(0, &json!({})).await)),
        ("list remove", out(c.list(name).remove(0).await)),
        ("map get", out(c.map(name).get("k").await)),
        (
            "map items",
            out(c.map(name).items(Default::default()).await),
        ),
        (
            "map set if_match",
            out(c.map(name).set_with("k", &json!(1), if_match(1)).await),
        ),
        ("map update", out(c.map(name).update("k", &json!({})).await)),
        (
            "map remove",
            out(c
                .map(name)
                .remove_with("k", WriteOptions::new().if_match(1))
                .await),
        ),
        (
            "subscribe",
            out(c.subscribe(name, SubscribeOptions::default()).await),
        ),
        ("resume", out(c.subscribe(name, since).await)),
    ]
}

#[tokio::test]
async fn refusals_do_not_tell_a_missing_object_from_one_without_access() {
    let s = TestServer::start().await;
    let (sid, backend) = acl_service(&s, "no-leak", TokenCreate::Own).await;
    // Taken names of every kind, none of them granted to mallory.
    backend
        .document("taken-doc")
        .set(&json!({"k": 1}))
        .await
        .unwrap();
    backend.list("taken-list").push(&json!(1)).await.unwrap();
    backend.map("taken-map").set("k", &json!(1)).await.unwrap();
    backend.stream("taken-stream").create(None).await.unwrap();
    let mallory = as_identity(&s, &sid, "mallory").await;
    let free = probe(&mallory, "free-name").await;
    for taken in ["taken-doc", "taken-list", "taken-map", "taken-stream"] {
        let answers = probe(&mallory, taken).await;
        for ((what, on_free), (_, on_taken)) in free.iter().zip(&answers) {
            assert_eq!(on_free, on_taken, "{what}: a free name vs {taken}");
            assert!(on_taken.is_err(), "{what} on {taken} succeeded");
        }
    }
    // None of those refusals created anything on the way (a conditional map set used to
    // create the map and then answer NotFound).
    let err = backend.fetch("free-name").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    // By sid too: a made-up sid and a real one without access answer alike.
    let real = backend.fetch("taken-doc").await.unwrap().sid;
    let made_up = format!("ET{}", "0".repeat(32));
    assert_eq!(
        probe(&mallory, &made_up).await,
        probe(&mallory, &real).await
    );
}

#[tokio::test]
async fn a_refused_write_creates_nothing() {
    let s = TestServer::start().await;
    let c = s.client_as("alice").await;
    // ACL off: here existence is no secret, and the answer is NotFound, but the map
    // must not be left behind by the refused write.
    let conditional = WriteOptions {
        if_match: Some(3),
        ttl: None,
    };
    let err = c
        .map("new-map")
        .set_with("k", &json!(1), conditional)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert_eq!(
        c.fetch("new-map").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    let err = c
        .document("new-doc")
        .set_with(&json!(1), conditional)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert_eq!(
        c.fetch("new-doc").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn with_token_create_none_only_the_backend_creates_objects() {
    let s = TestServer::start().await;
    let (sid, backend) = acl_service(&s, "no-squat", TokenCreate::None).await;
    let mallory = as_identity(&s, &sid, "mallory").await;
    let creations = [
        mallory
            .document("announcements")
            .set(&json!({"mine": true}))
            .await
            .map(|_| ()),
        mallory
            .list("announcements")
            .push(&json!(1))
            .await
            .map(|_| ()),
        mallory
            .map("announcements")
            .set("k", &json!(1))
            .await
            .map(|_| ()),
        mallory
            .stream("announcements")
            .publish(&json!(1))
            .await
            .map(|_| ()),
        mallory
            .stream("announcements")
            .create(None)
            .await
            .map(|_| ()),
        mallory
            .create(syncline_client::ObjectKind::Map, None, None)
            .await
            .map(|_| ()),
    ];
    for (i, r) in creations.into_iter().enumerate() {
        let err = r.unwrap_err();
        // The same refusal as for an object without access: it says nothing of the name.
        assert_eq!(
            (err.code(), err.to_string()),
            (ErrorCode::Forbidden, "Forbidden: forbidden".into()),
            "creation {i}"
        );
    }
    assert_eq!(
        backend.fetch("announcements").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    // The backend creates it and grants; then mallory writes like anyone granted.
    let w = backend
        .document("announcements")
        .set(&json!({"v": 1}))
        .await
        .unwrap();
    assert_eq!(
        (w.object_created_by.as_str(), w.created_by_identity()),
        ("system", None)
    );
    backend
        .grant("announcements", "mallory", READ_WRITE)
        .await
        .unwrap();
    let w = mallory
        .document("announcements")
        .update(&json!({"m": 1}))
        .await
        .unwrap();
    assert_eq!(w.object_created_by, "system");

    // Without ACL the refusal can say why: nothing is secret there.
    let open = s
        .backend()
        .await
        .create_service(
            Some("open-no-create"),
            ServiceFlags {
                token_create: TokenCreate::None,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let bob = as_identity(&s, &open.sid, "bob").await;
    let err = bob.document("d").set(&json!(1)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Forbidden);
    assert!(err.to_string().contains("token_create"), "{err}");
}

#[tokio::test]
async fn a_backend_writing_into_a_squatted_name_is_told_who_created_it() {
    let s = TestServer::start().await;
    let (sid, backend) = acl_service(&s, "squat", TokenCreate::Own).await;
    let mallory = as_identity(&s, &sid, "mallory").await;
    mallory
        .document("announcements")
        .set(&json!({"mine": true}))
        .await
        .unwrap();
    mallory.map("roster").set("m", &json!(1)).await.unwrap();
    let w = backend
        .document("announcements")
        .set(&json!({"v": 1}))
        .await
        .unwrap();
    assert_eq!(w.created_by_identity(), Some("mallory"));
    let w = backend.map("roster").set("k", &json!(1)).await.unwrap();
    assert_eq!(
        (
            w.object_created_by.as_str(),
            w.value.unwrap().created_by.as_str()
        ),
        ("mallory", "system")
    );
    // The backend closes the gap for the future: with `token_create: none` a new name
    // cannot be claimed, while what exists stays as it is.
    backend
        .update_service(
            &sid,
            ServiceFlagsPatch {
                token_create: Some(TokenCreate::None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let err = mallory.document("news").set(&json!(1)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Forbidden);
    mallory
        .document("announcements")
        .update(&json!({"still": "mine"}))
        .await
        .unwrap();
}

/// Twilio has no Permissions on Streams; Syncline's ACL covers streams, so its REST API
/// has them (`…/Streams/{S}/Permissions/{Identity}`), or a backend could not let a token
/// holder publish under `acl_enabled`.
#[tokio::test]
async fn stream_permissions_are_granted_and_revoked_over_rest() {
    use base64::Engine;
    let s = TestServer::start().await;
    let admin = s.backend().await;
    let on = ServiceFlagsPatch {
        acl_enabled: Some(true),
        ..Default::default()
    };
    admin.update_service("default", on).await.unwrap();
    admin.stream("typing").publish(&json!({})).await.unwrap();
    let bob = s.client_as("bob").await;
    assert_eq!(
        bob.stream("typing")
            .publish(&json!({"who": "bob"}))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::Forbidden
    );

    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            s.admin.api_key_sid, s.admin.api_key_secret
        ))
    );
    let path = "/v1/Services/default/Streams/typing/Permissions/bob";
    let (status, answer) = syncline_tests::https_request(
        &s.admin,
        "POST",
        path,
        Some(&basic),
        "Read=true&Write=true&Manage=false",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"stream_sid\""), "{answer}");
    bob.stream("typing")
        .publish(&json!({"who": "bob"}))
        .await
        .expect("bob may publish once granted");
    let (status, listed) = syncline_tests::https_request(
        &s.admin,
        "GET",
        "/v1/Services/default/Streams/typing/Permissions",
        Some(&basic),
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(listed.contains("\"identity\":\"bob\""), "{listed}");

    let (status, _) =
        syncline_tests::https_request(&s.admin, "DELETE", path, Some(&basic), "").await;
    assert_eq!(status, 204);
    assert_eq!(
        bob.stream("typing")
            .publish(&json!({}))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::Forbidden
    );
}
