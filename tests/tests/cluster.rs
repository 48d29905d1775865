//! Cluster mode: several nodes over one real etcd are one installation. Writes through
//! one node reach subscribers on the others, access changes through one node reach
//! connections on the others, conditional writes through two nodes let one win, an
//! identity stays present while any node holds a connection of it, and a node killed
//! with SIGKILL takes its presence with it after its lease. With a 3-member etcd:
//! writes go on with one member killed, and are refused with `Unavailable` (never a
//! hang) without quorum, then resume. Every test skips without etcd unless
//! SYNCLINE_REQUIRE_ETCD=1.

use std::time::{Duration, Instant};

use serde_json::json;
use syncline_client::{
    Client, ClientConfig, ErrorCode, ItemKey, Reason, ServiceFlags, Subscription, SyncEventKind,
    WriteOptions,
};
use syncline_proto::{Credential, Request, Response, Rights};
use syncline_tests::etcd::{require_etcd, EtcdCluster};
use syncline_tests::{
    assert_no_event, next_event, roster, shared_etcd, RawConnection, ServerProcess, TestServer,
    WAIT,
};

const READ: Rights = Rights {
    read: true,
    write: false,
    manage: false,
};

fn prefix() -> String {
    format!("/cluster-{:016x}", rand::random::<u64>())
}

/// Two nodes of one new installation over the process's shared etcd.
async fn two_nodes() -> (TestServer, TestServer) {
    let endpoints = vec![shared_etcd()];
    let prefix = prefix();
    let a = TestServer::start_node(&endpoints, &prefix).await;
    let b = TestServer::start_node(&endpoints, &prefix).await;
    (a, b)
}

/// Two nodes of one new installation over the process's shared etcd, the second's
/// watch holding back each answer by `lag` (a node behind the other, as on a loaded
/// machine).
async fn nodes_with_a_lagging_second(lag: Duration) -> (TestServer, TestServer) {
    let endpoints = vec![shared_etcd()];
    let prefix = prefix();
    let a = TestServer::start_node(&endpoints, &prefix).await;
    let b = TestServer::start_node_with(&endpoints, &prefix, |etcd| etcd.watch_delay = lag).await;
    (a, b)
}

/// A new service of unique name `name` with its ACL on, made through `node`.
async fn guarded_service(node: &TestServer, name: &str) -> syncline_client::ServiceInfo {
    let flags = ServiceFlags {
        acl_enabled: true,
        ..Default::default()
    };
    node.backend()
        .await
        .create_service(Some(name), flags)
        .await
        .unwrap()
}

/// `identity` connected to `node` with a token of service `service_sid`.
async fn identity_in(node: &TestServer, service_sid: &str, identity: &str) -> Client {
    let token = syncline_client::token::mint(
        &node.admin.api_key_sid,
        &node.admin.api_key_secret,
        &node.admin.account_sid,
        service_sid,
        identity,
        3600,
        syncline_client::token::now_s(),
    );
    Client::connect(node.token_config(&token)).await.unwrap()
}

/// The error a connection made with `config` is refused with.
async fn connection_refused(config: ClientConfig) -> syncline_client::Error {
    Client::connect(config)
        .await
        .err()
        .expect("the connection is refused")
}

async fn subscribed_document(client: &Client, name: &str) -> Subscription {
    let mut sub = client.document(name).subscribe().await.expect("subscribed");
    assert_eq!(next_event(&mut sub).await.kind, SyncEventKind::Snapshot);
    sub
}

#[tokio::test]
async fn nodes_over_one_etcd_are_one_installation_and_list_each_other() {
    if !require_etcd() {
        return;
    }
    let (a, b) = two_nodes().await;
    assert_eq!(a.admin.account_sid, b.admin.account_sid);
    assert_eq!(a.admin.api_key_sid, b.admin.api_key_sid);
    assert_eq!(a.admin.default_service_sid, b.admin.default_service_sid);
    assert_ne!(a.admin.server, b.admin.server);
    for (me, other) in [(&a, &b), (&b, &a)] {
        let mut raw = RawConnection::backend(&me.admin).await;
        let nodes = match raw.call(2, Request::Nodes).await.result {
            Ok(Response::Nodes(nodes)) => nodes,
            other => panic!("expected the node list, got {other:?}"),
        };
        let addresses: Vec<&str> = nodes.iter().map(|n| n.quic.as_str()).collect();
        assert_eq!(
            addresses,
            [me.admin.server.as_str(), other.admin.server.as_str()],
            "each node answers itself first"
        );
        assert!(nodes.iter().all(|n| n.https.is_some() && !n.id.is_empty()));
    }
    // Backends ask over REST: GET /v1/Nodes, with the API key.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        b.admin.api_key_sid, b.admin.api_key_secret
    ));
    let (status, answer) = syncline_tests::https_request(
        &b.admin,
        "GET",
        "/v1/Nodes",
        Some(&format!("Basic {basic}")),
        "",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap();
    let listed: Vec<&str> = body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["quic"].as_str())
        .collect();
    assert_eq!(listed, [b.admin.server.as_str(), a.admin.server.as_str()]);
    let (status, _) = syncline_tests::https_request(&b.admin, "GET", "/v1/Nodes", None, "").await;
    assert_eq!(status, 401, "no credential, no node list");
    // A node listening on every interface says where others reach it.
    let prefix = prefix();
    let endpoints = [shared_etcd()];
    let advertised = TestServer::start_with(|o| {
        let mut etcd = syncline_server::EtcdOptions::new(endpoints.to_vec());
        etcd.prefix = prefix.clone();
        o.store = syncline_server::StoreChoice::Etcd(Box::new(etcd));
        o.advertise = Some("sync-1.example.net:7400".into());
        o.advertise_https = Some("https://sync-1.example.net:7401".into());
    })
    .await;
    let mut raw = RawConnection::backend(&advertised.admin).await;
    match raw.call(2, Request::Nodes).await.result {
        Ok(Response::Nodes(nodes)) => {
            assert_eq!(nodes[0].quic, "sync-1.example.net:7400");
            assert_eq!(
                nodes[0].https.as_deref(),
                Some("https://sync-1.example.net:7401")
            );
        }
        other => panic!("expected the node list, got {other:?}"),
    }
}

#[tokio::test]
async fn writes_through_one_node_reach_subscribers_on_the_other_in_order() {
    if !require_etcd() {
        return;
    }
    let (a, b) = two_nodes().await;
    let writer = a.backend().await;
    let reader = b.backend().await;
    writer.document("doc").set(&json!(0)).await.unwrap();
    let mut doc = subscribed_document(&reader, "doc").await;
    writer.list("list").push(&json!("first")).await.unwrap();
    let mut list = reader.list("list").subscribe(None).await.unwrap();
    assert_eq!(next_event(&mut list).await.kind, SyncEventKind::Snapshot);
    for i in 1..=20 {
        writer.document("doc").set(&json!(i)).await.unwrap();
        writer.list("list").push(&json!(i)).await.unwrap();
    }
    for i in 1..=20u64 {
        let event = next_event(&mut doc).await;
        assert_eq!(event.revision, i, "every revision, in order");
        assert_eq!(doc.document().map(|d| d.data.clone()), Some(json!(i)));
    }
    for i in 1..=20 {
        match next_event(&mut list).await.kind {
            SyncEventKind::ItemAdded { item } => assert_eq!(item.data, json!(i)),
            other => panic!("expected an added item, got {other:?}"),
        }
    }
    // Reads through the other node see the writes as soon as they are acknowledged.
    assert_eq!(reader.document("doc").get().await.unwrap().data, json!(20));
    // A write through the subscriber's own node reaches it once, as its own.
    reader.document("doc").set(&json!("b")).await.unwrap();
    let own = next_event(&mut doc).await;
    assert_eq!(own.revision, 21);
    assert_no_event(&mut doc, Duration::from_millis(300)).await;
    // Deletion through A ends B's subscription with `object_removed`.
    writer.document("doc").delete().await.unwrap();
    match next_event(&mut doc).await.kind {
        SyncEventKind::Removed { .. } => {}
        other => panic!("expected the removal, got {other:?}"),
    }
}

#[tokio::test]
async fn stream_messages_reach_subscribers_on_every_node_in_one_order() {
    if !require_etcd() {
        return;
    }
    let (a, b) = two_nodes().await;
    let on_a = a.backend().await;
    let on_b = b.backend().await;
    on_a.stream("chat").create(None).await.unwrap();
    let mut sub_a = on_a.stream("chat").subscribe().await.unwrap();
    let mut sub_b = on_b.stream("chat").subscribe().await.unwrap();
    for sub in [&mut sub_a, &mut sub_b] {
        assert_eq!(next_event(sub).await.kind, SyncEventKind::Snapshot);
    }
    let mut sequences = Vec::new();
    for i in 0..10 {
        let publisher = if i % 2 == 0 { &on_a } else { &on_b };
        sequences.push(publisher.stream("chat").publish(&json!(i)).await.unwrap());
    }
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    for sub in [&mut sub_a, &mut sub_b] {
        for (i, sequence) in sequences.iter().enumerate() {
            match next_event(sub).await.kind {
                SyncEventKind::MessagePublished {
                    data, sequence: s, ..
                } => {
                    assert_eq!((data, s), (json!(i), *sequence));
                }
                other => panic!("expected message {i}, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn conditional_writes_through_two_nodes_let_exactly_one_win() {
    if !require_etcd() {
        return;
    }
    let (a, b) = two_nodes().await;
    let on_a = a.backend().await;
    let on_b = b.backend().await;
    on_a.document("counter").set(&json!(0)).await.unwrap();
    for round in 0..20u64 {
        let at = WriteOptions {
            if_match: Some(round),
            ..Default::default()
        };
        let (doc_a, doc_b) = (on_a.document("counter"), on_b.document("counter"));
        let (value_a, value_b) = (
            json!({"by": "a", "round": round}),
            json!({"by": "b", "round": round}),
        );
        let (ra, rb) = tokio::join!(doc_a.set_with(&value_a, at), doc_b.set_with(&value_b, at));
        let won = usize::from(ra.is_ok()) + usize::from(rb.is_ok());
        assert_eq!(won, 1, "round {round}: {ra:?} / {rb:?}");
        let lost = if ra.is_ok() { rb } else { ra };
        assert_eq!(lost.unwrap_err().code(), ErrorCode::Conflict);
        assert_eq!(
            on_b.document("counter").get().await.unwrap().revision,
            round + 1
        );
    }
    // Unconditional increments through both nodes lose nothing either.
    let bump = |c: Client| async move {
        for _ in 0..10 {
            // A mutate that lost every one of its attempts applied nothing and says
            // `Conflict`: it is asked again (bounded), and no increment may be lost.
            let mut tries = 0;
            loop {
                let bumped = c
                    .document("total")
                    .mutate(|v| Some(json!(v.and_then(|v| v.as_i64()).unwrap_or(0) + 1)))
                    .await;
                match bumped {
                    Ok(_) => break,
                    Err(e) if e.code() == ErrorCode::Conflict && tries < 5 => tries += 1,
                    Err(e) => panic!("increment refused: {e:?}"),
                }
            }
        }
    };
    tokio::join!(bump(on_a.clone()), bump(on_b.clone()));
    assert_eq!(on_a.document("total").get().await.unwrap().data, json!(20));
}

/// A node remembers what it last wrote of each object, to skip reading it again; that
/// copy goes stale when another node writes the object. A conditional write is still
/// judged on the current revision: here A wrote the document, B changed it twice, and
/// a write through A that names B's revision goes through (A's watch lags 500 ms, so A
/// has not heard of B's writes), and one naming A's own last revision after B wrote
/// again is refused with the current one.
#[tokio::test]
async fn a_conditional_write_on_a_stale_copy_is_judged_on_the_current_revision() {
    if !require_etcd() {
        return;
    }
    let (b, a) = nodes_with_a_lagging_second(Duration::from_millis(500)).await;
    let (on_a, on_b) = (a.backend().await, b.backend().await);
    for round in 0..3 {
        let name = format!("doc-{round}");
        on_a.document(&name).set(&json!("a")).await.unwrap();
        on_b.document(&name).set(&json!("b1")).await.unwrap();
        let current = on_b
            .document(&name)
            .set(&json!("b2"))
            .await
            .unwrap()
            .revision;
        let written = on_a
            .document(&name)
            .set_with(&json!("from a"), WriteOptions::new().if_match(current))
            .await
            .unwrap();
        assert_eq!(written.revision, current + 1);
        // And the other way round: B writes again, A names its own last revision.
        let current = on_b
            .document(&name)
            .set(&json!("b3"))
            .await
            .unwrap()
            .revision;
        let stale = on_a
            .document(&name)
            .set_with(
                &json!("from a, stale"),
                WriteOptions::new().if_match(written.revision),
            )
            .await
            .unwrap_err();
        assert_eq!(stale.code(), ErrorCode::Conflict, "{stale:?}");
        assert_eq!(stale.current_revision(), Some(current), "{stale:?}");
    }
}

/// Batches `node` computed again after losing a race (its `/metrics`).
async fn recomputed(node: &TestServer) -> u64 {
    let (status, text) =
        syncline_tests::https_request(&node.admin, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("syncline_commit_recomputed_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no recomputed counter in {text}"))
}

/// A node's copy of what it last wrote is dropped when its watch brings another node's
/// change of the object, so its next write starts from what is stored: no transaction
/// is lost to a stale copy (`syncline_commit_recomputed_total` stays where it was).
#[tokio::test]
async fn a_node_drops_its_copy_of_what_another_node_changed_and_loses_no_race() {
    if !require_etcd() {
        return;
    }
    let (a, b) = two_nodes().await;
    let (on_a, on_b) = (a.backend().await, b.backend().await);
    on_a.document("shared").set(&json!("a")).await.unwrap();
    let mut seen_by_a = subscribed_document(&on_a, "shared").await;
    for round in 0..5 {
        let revision = on_b
            .document("shared")
            .set(&json!(round))
            .await
            .unwrap()
            .revision;
        // A's watch has brought B's write once A's subscriber has it.
        while next_event(&mut seen_by_a).await.revision < revision {}
        let before = recomputed(&a).await;
        let mine = on_a.document("shared").set(&json!("a")).await.unwrap();
        assert_eq!(mine.revision, revision + 1);
        assert_eq!(recomputed(&a).await, before, "round {round}");
        next_event(&mut seen_by_a).await;
    }
}

#[tokio::test]
async fn revoking_a_key_or_a_grant_through_one_node_takes_effect_on_the_other() {
    if !require_etcd() {
        return;
    }
    let (a, b) = two_nodes().await;
    let admin_a = a.backend().await;
    let svc = guarded_service(&a, "guarded").await;
    let backend_a = a.backend_in("guarded").await;
    backend_a.document("board").set(&json!(0)).await.unwrap();
    backend_a.grant("board", "bob", READ).await.unwrap();
    // Bob, connected to node B, reads the board; A revokes; B ends his subscription.
    let bob = identity_in(&b, &svc.sid, "bob").await;
    let mut sub = subscribed_document(&bob, "board").await;
    let revoked = Instant::now();
    backend_a.revoke("board", "bob").await.unwrap();
    match next_event(&mut sub).await.kind {
        SyncEventKind::Ended(e) => assert_eq!(e.code, ErrorCode::Forbidden),
        other => panic!("expected the subscription to end, got {other:?}"),
    }
    assert!(
        revoked.elapsed() < Duration::from_secs(1),
        "{:?}",
        revoked.elapsed()
    );
    assert_eq!(
        bob.document("board").get().await.unwrap_err().code(),
        ErrorCode::Forbidden
    );

    // A key created and revoked through A: a connection of it on B is closed.
    let key = admin_a.create_key(Some("mobile")).await.unwrap();
    let mut as_key = b.admin.clone();
    as_key.api_key_sid = key.sid.clone();
    as_key.api_key_secret = key.secret.clone().expect("secret shown once");
    let on_b = Client::connect(ClientConfig::from_admin(&as_key).unwrap())
        .await
        .unwrap();
    on_b.ping().await.unwrap();
    let revoked = Instant::now();
    admin_a.revoke_key(&key.sid).await.unwrap();
    let why = tokio::time::timeout(WAIT, on_b.closed()).await.unwrap();
    assert_eq!(why.code(), ErrorCode::Unauthorized);
    assert!(
        revoked.elapsed() < Duration::from_secs(1),
        "{:?}",
        revoked.elapsed()
    );
}

/// What one node just made (a service, a key, a grant) is there at once through the
/// other, even when that one's watch lags (by 100 ms per answer here, as on a loaded
/// machine): a node whose caches miss something catches up with etcd before it says
/// "no".
#[tokio::test]
async fn a_service_key_or_grant_made_through_one_node_is_usable_at_once_through_a_lagging_other() {
    if !require_etcd() {
        return;
    }
    let (a, b) = nodes_with_a_lagging_second(Duration::from_millis(100)).await;
    let admin_a = a.backend().await;
    let admin_b = b.backend().await;
    for round in 0..3 {
        let name = format!("fresh-{round}");
        let svc = guarded_service(&a, &name).await;
        // A token of the new service, on B.
        let bob = identity_in(&b, &svc.sid, "bob").await;
        // The backend names it on B by its unique name.
        let backend_b = b.backend_in(&name).await;
        backend_b
            .document("board")
            .set(&json!(round))
            .await
            .unwrap();
        // A grant through A lets Bob read through B at once, and B lists it.
        let backend_a = a.backend_in(&name).await;
        backend_a.grant("board", "bob", READ).await.unwrap();
        assert_eq!(
            bob.document("board").get().await.unwrap().data,
            json!(round)
        );
        let listed = backend_b.permissions("board").await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|p| p.identity.as_str())
                .collect::<Vec<_>>(),
            ["bob"]
        );
        // A key made through A signs in on B.
        let key = admin_a.create_key(Some("fresh")).await.unwrap();
        let mut as_key = b.admin.clone();
        as_key.api_key_sid = key.sid.clone();
        as_key.api_key_secret = key.secret.clone().expect("secret shown once");
        let on_b = Client::connect(ClientConfig::from_admin(&as_key).unwrap())
            .await
            .unwrap();
        on_b.ping().await.unwrap();
        // And B can revoke it at once.
        admin_b.revoke_key(&key.sid).await.unwrap();
    }
    // A name that no node ever made is still unknown, after the catch-up.
    let config = ClientConfig::from_admin(&b.admin)
        .unwrap()
        .service("never-made");
    assert_eq!(connection_refused(config).await.code(), ErrorCode::NotFound);
}

/// The access decision is part of the commit in a cluster too: right after a revoke
/// through one node, a write through another whose watch lags (300 ms per answer here,
/// so its cached grant is stale) is refused, and changes nothing; it is not let
/// through on the stale grant. Three rounds of grant, allowed write, revoke, refused
/// write.
#[tokio::test]
async fn a_write_through_a_lagging_node_right_after_a_revoke_through_another_is_refused() {
    if !require_etcd() {
        return;
    }
    let (a, b) = nodes_with_a_lagging_second(Duration::from_millis(300)).await;
    let svc = guarded_service(&a, "guarded").await;
    let backend_a = a.backend_in("guarded").await;
    backend_a
        .document("board")
        .set(&json!("start"))
        .await
        .unwrap();
    let bob = identity_in(&b, &svc.sid, "bob").await;
    let write = Rights {
        read: true,
        write: true,
        manage: false,
    };
    for round in 0..3 {
        backend_a.grant("board", "bob", write).await.unwrap();
        bob.document("board").set(&json!(round)).await.unwrap();
        backend_a.revoke("board", "bob").await.unwrap();
        let refused = bob
            .document("board")
            .set(&json!("after the revoke"))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            ErrorCode::Forbidden,
            "round {round}: {refused:?}"
        );
        assert_eq!(
            backend_a.document("board").get().await.unwrap().data,
            json!(round)
        );
    }
}

/// What a node's caches miss is looked up in etcd with a read, never a write: refused
/// reads and writes under ACL, an unknown API key, a token signed by an unknown key,
/// an unknown service name, each asked for again and again, leave etcd's revision
/// where it was (a write would move it).
#[tokio::test]
async fn misses_and_refusals_cost_etcd_reads_not_writes() {
    if !require_etcd() {
        return;
    }
    let etcd = EtcdCluster::start(1).await;
    let node = TestServer::start_node(&etcd.endpoints(), &prefix()).await;
    let svc = guarded_service(&node, "guarded").await;
    node.backend_in("guarded")
        .await
        .document("board")
        .set(&json!("secret"))
        .await
        .unwrap();
    let mint = |key_sid: &str| {
        syncline_client::token::mint(
            key_sid,
            &node.admin.api_key_secret,
            &node.admin.account_sid,
            &svc.sid,
            "bob",
            3600,
            syncline_client::token::now_s(),
        )
    };
    let bob = identity_in(&node, &svc.sid, "bob").await;
    let mut client = etcd.client().await;
    let mut revision = async || {
        client
            .get("revision-probe", None)
            .await
            .unwrap()
            .header()
            .map_or(0, |h| h.revision())
    };
    let before = revision().await;
    let unknown_key = "SK0123456789abcdef0123456789abcdef";
    for round in 0..10 {
        let refused = bob.document("board").get().await.unwrap_err();
        assert_eq!(refused.code(), ErrorCode::Forbidden, "{refused:?}");
        let refused = bob.document("board").set(&json!(round)).await.unwrap_err();
        assert_eq!(refused.code(), ErrorCode::Forbidden, "{refused:?}");
        let mut as_unknown = node.admin.clone();
        as_unknown.api_key_sid = unknown_key.into();
        let as_unknown = ClientConfig::from_admin(&as_unknown).unwrap();
        assert_eq!(
            connection_refused(as_unknown).await.code(),
            ErrorCode::Unauthorized
        );
        let signed_by_unknown = node.token_config(&mint(unknown_key));
        assert_eq!(
            connection_refused(signed_by_unknown).await.code(),
            ErrorCode::Unauthorized
        );
        let config = ClientConfig::from_admin(&node.admin)
            .unwrap()
            .service("never-made");
        assert_eq!(connection_refused(config).await.code(), ErrorCode::NotFound);
    }
    assert_eq!(
        revision().await,
        before,
        "a miss or a refusal wrote to etcd"
    );
}

/// Two nodes create a service of one unique name at the same moment, round after
/// round: each time exactly one wins, and both nodes then name the same service.
#[tokio::test]
async fn one_service_name_created_through_two_nodes_at_once_goes_to_exactly_one() {
    if !require_etcd() {
        return;
    }
    let (a, b) = two_nodes().await;
    let (admin_a, admin_b) = (a.backend().await, b.backend().await);
    for round in 0..5 {
        let name = format!("contested-{round}");
        let (on_a, on_b) = tokio::join!(
            admin_a.create_service(Some(&name), ServiceFlags::default()),
            admin_b.create_service(Some(&name), ServiceFlags::default()),
        );
        let winner = match (&on_a, &on_b) {
            (Ok(w), Err(e)) | (Err(e), Ok(w)) => {
                assert_eq!(e.code(), ErrorCode::AlreadyExists, "{e}");
                w.sid.clone()
            }
            other => panic!("expected exactly one creation, got {other:?}"),
        };
        assert_eq!(admin_a.service(&name).await.unwrap().sid, winner);
        assert_eq!(admin_b.service(&name).await.unwrap().sid, winner);
    }
}

/// A node whose watch is cut off while another node writes, and comes back after etcd
/// compacted that history, cannot resume where it was: it reloads its caches and its
/// subscribers catch up (the latest state, in order), with no silent gap. Node B talks
/// to one etcd member only, which is killed, then restarted after the compaction.
#[tokio::test]
async fn a_node_whose_watch_resumes_past_a_compaction_catches_its_subscribers_up() {
    if !require_etcd() {
        return;
    }
    let mut etcd = EtcdCluster::start(3).await;
    let endpoints = etcd.endpoints();
    let prefix = prefix();
    let a = TestServer::start_node(&endpoints[..2], &prefix).await;
    let b = TestServer::start_node(&endpoints[2..], &prefix).await;
    let writer = a.backend().await;
    writer.document("doc").set(&json!(0)).await.unwrap();
    let mut sub = subscribed_document(&b.backend().await, "doc").await;
    etcd.kill(2);
    for i in 1..=20 {
        set_through_an_election(&writer, "doc", json!(i)).await;
    }
    let mut client = etcd.member_client(0).await;
    let now = client
        .get("compaction-probe", None)
        .await
        .unwrap()
        .header()
        .map_or(0, |h| h.revision());
    client.compact(now, None).await.unwrap();
    etcd.restart(2).await;
    // B's subscriber reaches the last value, never going back; it may skip values (a
    // catch-up from a snapshot), but never sees one out of order.
    let mut last = 0;
    while last < 20 {
        next_event(&mut sub).await;
        if let Some(d) = sub.document() {
            let v = d.data.as_i64().expect("a number");
            assert!(v >= last, "went back from {last} to {v}");
            last = v;
        }
    }
    // And B serves writes again, which reach its subscriber.
    let through_b = b.backend().await;
    through_b.document("doc").set(&json!(21)).await.unwrap();
    while last < 21 {
        next_event(&mut sub).await;
        if let Some(d) = sub.document() {
            last = d.data.as_i64().expect("a number");
        }
    }
}

/// Sets document `name` to `value` with one etcd member just killed: if it led, a
/// write sent during the election (1-2 s) may be refused with `Unavailable` (never sent
/// twice, having maybe reached the old leader, so it may still land: the same value
/// again is harmless); it is sent again until it goes through, within `WAIT`.
async fn set_through_an_election(client: &Client, name: &str, value: serde_json::Value) {
    let deadline = Instant::now() + WAIT;
    loop {
        match client.document(name).set(&value).await {
            Ok(_) => return,
            Err(e) if e.code() == ErrorCode::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("setting {name} to {value} with one member down: {e:?}"),
        }
    }
}

/// The map "room", made and subscribed to through `node`'s backend (its snapshot read).
async fn watched_room(node: &TestServer) -> Subscription {
    let watcher = node.backend().await;
    watcher.map("room").create(None).await.unwrap();
    let mut sub = watcher.map("room").subscribe().await.unwrap();
    next_event(&mut sub).await;
    sub
}

/// `who` puts its ephemeral item in the empty room, and the room's subscriber `sub`
/// sees it there alone.
async fn enter_room(client: &Client, sub: &mut Subscription, who: &str) {
    client
        .map("room")
        .set_ephemeral(who, &json!("here"))
        .await
        .unwrap();
    roster_becomes(sub, &[who]).await;
}

async fn roster_becomes(sub: &mut Subscription, expected: &[&str]) {
    let deadline = Instant::now() + WAIT;
    let expected: std::collections::BTreeSet<String> =
        expected.iter().map(|n| n.to_string()).collect();
    while roster(sub) != expected {
        assert!(
            Instant::now() < deadline,
            "roster {:?}, expected {expected:?}",
            roster(sub)
        );
        next_event(sub).await;
    }
}

#[tokio::test]
async fn an_identity_on_two_nodes_stays_present_until_both_connections_end() {
    if !require_etcd() {
        return;
    }
    let (a, b) = two_nodes().await;
    let mut sub = watched_room(&a).await;
    let alice_a = a.client_as("alice").await;
    let alice_b = b.client_as("alice").await;
    enter_room(&alice_a, &mut sub, "alice").await;
    // Her connection to A ends: she is still connected to B, so her item stays.
    alice_a.close();
    assert_no_event(&mut sub, Duration::from_millis(1500)).await;
    assert!(roster(&sub).contains("alice") && roster(&sub).len() == 1);
    alice_b.ping().await.unwrap();
    // Her last connection ends: the item goes, once.
    alice_b.close();
    match next_event(&mut sub).await.kind {
        SyncEventKind::ItemRemoved { key, reason, .. } => {
            assert_eq!(key, ItemKey::Key("alice".into()));
            assert_eq!(reason, Reason::Disconnected);
        }
        other => panic!("expected alice's item to go, got {other:?}"),
    }
    assert_no_event(&mut sub, Duration::from_millis(500)).await;
}

/// "No node holds the identity" is part of a departure's commit: an identity that
/// leaves node A and, within the debouncing window, connects to node B keeps its item
/// even when A has not heard of the new connection by the window's end (A's watch lags
/// 2 s per answer here): A's transaction finds B's presence entry, and A decides again
/// once it has caught up.
#[tokio::test]
async fn an_identity_that_moves_to_another_node_within_the_window_keeps_its_item_though_the_first_has_not_heard(
) {
    if !require_etcd() {
        return;
    }
    let endpoints = vec![shared_etcd()];
    let prefix = prefix();
    let a = TestServer::start_node_with(&endpoints, &prefix, |etcd| {
        etcd.watch_delay = Duration::from_secs(2);
    })
    .await;
    let b = TestServer::start_node(&endpoints, &prefix).await;
    // Through A, so that A's own cache has the window at once.
    let window = syncline_client::ServiceFlagsPatch {
        reachability_debouncing_enabled: Some(true),
        reachability_debouncing_window_ms: Some(2000),
        ..Default::default()
    };
    a.backend()
        .await
        .update_service(&a.admin.default_service_sid, window)
        .await
        .unwrap();
    let mut sub = watched_room(&b).await;
    let alice_a = a.client_as("alice").await;
    enter_room(&alice_a, &mut sub, "alice").await;
    alice_a.close();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alice_b = b.client_as("alice").await;
    // A's window ends 2 s after she left it; B's entry reaches A's mirror only later.
    assert_no_event(&mut sub, Duration::from_secs(5)).await;
    assert_eq!(roster(&sub).into_iter().collect::<Vec<_>>(), ["alice"]);
    alice_b.ping().await.unwrap();
}

#[tokio::test]
async fn a_node_killed_takes_its_clients_presence_with_it_after_its_lease() {
    if !require_etcd() {
        return;
    }
    let prefix = prefix();
    let etcd_args = |ttl: &str| {
        vec![
            "--store".to_owned(),
            "etcd".into(),
            "--etcd-endpoints".into(),
            shared_etcd(),
            "--etcd-prefix".into(),
            prefix.clone(),
            "--node-ttl-s".into(),
            ttl.into(),
        ]
    };
    let a_dir = tempfile::tempdir().unwrap();
    let args = etcd_args("2");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = ServerProcess::start_logging_with(a_dir.path(), &args, std::process::Stdio::null());
    let b = TestServer::start_node(&[shared_etcd()], &prefix).await;
    let watcher = b.backend().await;
    watcher.map("room").create(None).await.unwrap();
    let mut sub = watcher.map("room").subscribe().await.unwrap();
    next_event(&mut sub).await;
    let token = syncline_tests::token(&a.admin, "carol", 3600);
    let config = ClientConfig::new(&a.admin.server, &a.admin.ca_file, Credential::Token(token));
    let carol = Client::connect(config.unwrap()).await.unwrap();
    carol
        .map("room")
        .set_ephemeral("carol", &json!("here"))
        .await
        .unwrap();
    roster_becomes(&mut sub, &["carol"]).await;
    let killed = Instant::now();
    a.kill();
    match next_event(&mut sub).await.kind {
        SyncEventKind::ItemRemoved { key, reason, .. } => {
            assert_eq!(key, ItemKey::Key("carol".into()));
            assert_eq!(reason, Reason::Disconnected);
        }
        other => panic!("expected carol's item to go with her node, got {other:?}"),
    }
    // Not before the lease (2 s) could end; well within WAIT after it.
    assert!(
        killed.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        killed.elapsed()
    );
    drop(carol);
}

#[tokio::test]
async fn with_one_of_three_etcd_members_killed_writes_go_on_and_without_quorum_they_are_refused_then_resume(
) {
    if !require_etcd() {
        return;
    }
    let mut etcd = EtcdCluster::start(3).await;
    let prefix = prefix();
    let node = TestServer::start_node(&etcd.endpoints(), &prefix).await;
    let backend = node.backend().await;
    backend.document("doc").set(&json!(1)).await.unwrap();
    let mut sub = subscribed_document(&node.backend().await, "doc").await;
    etcd.kill(0);
    // After the election, if any, writes go on with two members.
    for i in 2..=5 {
        set_through_an_election(&backend, "doc", json!(i)).await;
    }
    etcd.kill(1);
    let refused = Instant::now();
    let err = backend
        .document("doc")
        .set(&json!("lost"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err:?}");
    // Refused within the request timeout (3 s here, 10 s by default), not a hang.
    assert!(
        refused.elapsed() < Duration::from_secs(10),
        "{:?}",
        refused.elapsed()
    );
    etcd.restart(1).await;
    let deadline = Instant::now() + WAIT;
    loop {
        match backend.document("doc").set(&json!(6)).await {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "writes did not resume: {e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // Every acknowledged write reached the subscriber, in order; the refused one never did.
    let mut seen = Vec::new();
    while seen.last() != Some(&json!(6)) {
        next_event(&mut sub).await;
        if let Some(d) = sub.document() {
            seen.push(d.data.clone());
        }
    }
    // A write refused for want of an answer may still land: etcd had it in its log and
    // commits it once the quorum is back (the refusal says so: "it may still be
    // applied"); then it comes in its place, before 6. A write refused during the
    // election and sent again may have landed twice: the same value in a row.
    assert!(
        err.to_string().contains("may still be applied") || !seen.contains(&json!("lost")),
        "{err:?} / {seen:?}"
    );
    seen.retain(|v| *v != json!("lost"));
    seen.dedup();
    assert_eq!(seen, [2, 3, 4, 5, 6].map(|i| json!(i)));
}

/// etcd's space quota: past it etcd raises its NOSPACE alarm and refuses whatever would
/// grow its database. Tried: a write to an existing document, a list push and a new
/// document, through QUIC and through REST, each refused with `Unavailable` saying the
/// space is full (nothing half-applied: the transaction is all or nothing); the
/// connection stays up, reads and the subscription go on; once the operator frees
/// space (delete, compact, defragment, disarm the alarm) writes work again and the
/// subscriber sees exactly the acknowledged ones.
#[tokio::test]
async fn at_etcds_space_quota_writes_are_refused_as_full_reads_go_on_and_writes_resume_once_space_is_freed(
) {
    if !require_etcd() {
        return;
    }
    let etcd = EtcdCluster::start_with(1, &["--quota-backend-bytes", "8388608"]).await;
    let node = TestServer::start_node(&etcd.endpoints(), &prefix()).await;
    let backend = node.backend().await;
    backend.document("kept").set(&json!(1)).await.unwrap();
    backend.list("log").push(&json!("first")).await.unwrap();
    let mut sub = subscribed_document(&node.backend().await, "kept").await;

    // Something else sharing the etcd fills it, until etcd refuses it too.
    let mut etcd_client = etcd.client().await;
    let filler = vec![b'x'; 256 * 1024];
    let mut filled = 0;
    loop {
        assert!(
            filled < 200,
            "an 8 MiB quota never reached with 50 MiB written"
        );
        match etcd_client
            .put(format!("/filler/{filled}"), filler.clone(), None)
            .await
        {
            Ok(_) => filled += 1,
            Err(e) => {
                assert!(e.to_string().contains("space exceeded"), "{e}");
                break;
            }
        }
    }

    let full = |e: syncline_client::Error| {
        assert_eq!(e.code(), ErrorCode::Unavailable, "{e:?}");
        assert!(e.to_string().contains("full"), "{e}");
    };
    full(
        backend
            .document("kept")
            .set(&json!("lost"))
            .await
            .unwrap_err(),
    );
    full(backend.list("log").push(&json!("lost")).await.unwrap_err());
    full(
        backend
            .document("new")
            .set(&json!("lost"))
            .await
            .unwrap_err(),
    );
    let (status, answer) = syncline_tests::https_request(
        &node.admin,
        "POST",
        "/v1/Services/default/Documents/kept",
        Some(&syncline_tests::basic_auth(&node.admin)),
        "Data=%22lost%22",
    )
    .await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("full"), "{answer}");
    // Reads go on, on the same connection, and nothing refused is there.
    assert_eq!(backend.document("kept").get().await.unwrap().data, json!(1));
    let items = backend
        .list("log")
        .items(Default::default())
        .await
        .unwrap()
        .items;
    assert_eq!(
        items.iter().map(|i| i.data.clone()).collect::<Vec<_>>(),
        [json!("first")]
    );
    assert_eq!(
        backend.document("new").get().await.unwrap_err().code(),
        ErrorCode::NotFound
    );

    // What an operator does: free space, compact, defragment, disarm the alarm.
    etcd_client
        .delete(
            "/filler/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let now = etcd_client
        .get("compaction-probe", None)
        .await
        .unwrap()
        .header()
        .map_or(0, |h| h.revision());
    etcd_client
        .compact(
            now,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
    etcd_client.defragment().await.unwrap();
    // As `etcdctl alarm disarm` does: each raised alarm, named by its member.
    let raised = etcd_client
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap();
    assert!(!raised.alarms().is_empty(), "the NOSPACE alarm was raised");
    for alarm in raised.alarms() {
        let mut on = etcd_client::AlarmOptions::new();
        on.with_member(alarm.member_id());
        etcd_client
            .alarm(
                etcd_client::AlarmAction::Deactivate,
                alarm.alarm(),
                Some(on),
            )
            .await
            .unwrap();
    }
    backend.document("kept").set(&json!(2)).await.unwrap();
    backend.document("new").set(&json!("made")).await.unwrap();
    match next_event(&mut sub).await.kind {
        SyncEventKind::DocumentUpdated { data, .. } => assert_eq!(data, json!(2)),
        other => panic!("expected the write after the space came back, got {other:?}"),
    }
    assert_no_event(&mut sub, Duration::from_millis(300)).await;
}

/// etcd keeps every revision until compacted, and each write adds some: left alone it
/// reaches its space quota. The cluster compacts it (one node, each interval, to the
/// revision of one interval before) and goes on working: writes, subscriptions, and a
/// resume from before the compaction (which reads Syncline's own change log).
#[tokio::test]
async fn the_cluster_compacts_etcds_history_by_itself_and_goes_on_working() {
    if !require_etcd() {
        return;
    }
    let etcd = EtcdCluster::start(1).await;
    let prefix = prefix();
    let every =
        |o: &mut syncline_server::EtcdOptions| o.compaction_interval = Duration::from_millis(300);
    let a = TestServer::start_node_with(&etcd.endpoints(), &prefix, every).await;
    let b = TestServer::start_node_with(&etcd.endpoints(), &prefix, every).await;
    let writer = a.backend().await;
    writer.document("doc").set(&json!(1)).await.unwrap();
    let mut sub = subscribed_document(&b.backend().await, "doc").await;
    let first = writer
        .document("doc")
        .set(&json!(2))
        .await
        .unwrap()
        .revision;

    // etcd's first revisions become unreadable: compacted.
    let mut client = etcd.client().await;
    let deadline = Instant::now() + WAIT;
    loop {
        match client
            .get("any", Some(etcd_client::GetOptions::new().with_revision(2)))
            .await
        {
            Err(e) if e.to_string().contains("compacted") => break,
            other => {
                assert!(Instant::now() < deadline, "never compacted: {other:?}");
                writer.document("other").set(&json!("more")).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    for v in 3..=5 {
        writer.document("doc").set(&json!(v)).await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.last() != Some(&json!(5)) {
        next_event(&mut sub).await;
        seen.push(sub.document().expect("a document").data.clone());
    }
    assert_eq!(seen, [2, 3, 4, 5].map(|i| json!(i)));
    // A subscriber resuming from revision `first` gets the three changes since.
    let mut resumed = b
        .backend()
        .await
        .document("doc")
        .subscribe_since(first)
        .await
        .unwrap();
    for v in 3..=5 {
        match next_event(&mut resumed).await.kind {
            SyncEventKind::DocumentUpdated { data, .. } => assert_eq!(data, json!(v)),
            other => panic!("expected the replay of {v}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_object_expires_once_for_the_whole_cluster() {
    if !require_etcd() {
        return;
    }
    let (a, b) = two_nodes().await;
    let on_a = a.backend().await;
    let on_b = b.backend().await;
    on_a.document("brief")
        .set_with(&json!("soon gone"), WriteOptions::new().ttl(1))
        .await
        .unwrap();
    let mut sub_a = subscribed_document(&on_a, "brief").await;
    let mut sub_b = subscribed_document(&on_b, "brief").await;
    for sub in [&mut sub_a, &mut sub_b] {
        match next_event(sub).await.kind {
            SyncEventKind::Removed { reason } => assert_eq!(reason, Reason::Expired),
            other => panic!("expected the expiry, got {other:?}"),
        }
    }
    assert_eq!(
        on_b.document("brief").get().await.unwrap_err().code(),
        ErrorCode::NotFound
    );
}

/// A CA, then a certificate it signed for `names`: (cert PEM, key PEM).
fn signed(ca: &rcgen::Certificate, ca_key: &rcgen::KeyPair, names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, ca, ca_key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn a_node_reaches_an_etcd_that_wants_tls_and_a_client_certificate() {
    if !require_etcd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_file = file("ca.pem", &ca.pem());
    let (server_cert, server_key) = signed(&ca, &ca_key, &["127.0.0.1", "localhost"]);
    let (client_cert, client_key) = signed(&ca, &ca_key, &["syncline-node"]);
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (client_port, peer_port) = (free(), free());
    let url = format!("https://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let etcd = std::process::Command::new(std::env::var("ETCD_BIN").unwrap_or("etcd".into()))
        .args(["--name", "tls", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("tls={peer}")])
        .arg("--cert-file")
        .arg(file("server.pem", &server_cert))
        .arg("--key-file")
        .arg(file("server.key", &server_key))
        .arg("--trusted-ca-file")
        .arg(&ca_file)
        .args([
            "--client-cert-auth",
            "--logger",
            "zap",
            "--log-level",
            "error",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcd starts");
    let _etcd = syncline_tests::KillOnDrop(etcd);
    let tls = syncline_server::EtcdTls {
        ca_file: ca_file.clone(),
        client: Some((
            file("client.pem", &client_cert),
            file("client.key", &client_key),
        )),
    };
    let node_dir = tempfile::tempdir().unwrap();
    let mut options = TestServer::options(node_dir.path());
    let mut etcd_options = syncline_server::EtcdOptions::new(vec![url.clone()]);
    etcd_options.tls = Some(tls);
    options.store = syncline_server::StoreChoice::Etcd(Box::new(etcd_options.clone()));
    // etcd takes a moment to listen; the node's first connection is retried until then.
    let deadline = Instant::now() + WAIT;
    let server = loop {
        match syncline_server::Server::start(options.clone()).await {
            Ok(server) => break server,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the node never reached etcd: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let backend = syncline_tests::backend(server.admin()).await;
    backend.document("over-tls").set(&json!(1)).await.unwrap();
    assert_eq!(
        backend.document("over-tls").get().await.unwrap().data,
        json!(1)
    );
    server.shutdown().await;
    // Without its client certificate, etcd refuses the node: starting fails, clearly.
    let mut refused = TestServer::options(node_dir.path());
    etcd_options.tls = Some(syncline_server::EtcdTls {
        ca_file,
        client: None,
    });
    etcd_options.request_timeout = Duration::from_secs(2);
    refused.store = syncline_server::StoreChoice::Etcd(Box::new(etcd_options));
    let err = match syncline_server::Server::start(refused).await {
        Ok(_) => panic!("a node without a client certificate must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("etcd") || err.contains("storage"), "{err}");
}

#[tokio::test]
async fn a_node_starts_and_serves_while_one_of_three_etcd_members_is_down() {
    if !require_etcd() {
        return;
    }
    let mut etcd = EtcdCluster::start(3).await;
    etcd.kill(0);
    // The dead member is first in the list the node is given.
    let node = TestServer::start_node(&etcd.endpoints(), &prefix()).await;
    let backend = node.backend().await;
    for i in 0..5 {
        backend.document("doc").set(&json!(i)).await.unwrap();
    }
    assert_eq!(backend.document("doc").get().await.unwrap().revision, 4);
}
