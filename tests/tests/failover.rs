//! Clients fail over: a client learns the installation's nodes from its node
//! (`Request::Nodes`), and when that node shuts down it goes to another and resumes its
//! subscriptions from their replicas' revisions, with no gap and no duplicate, its
//! queued writes going out there. Without etcd: a client whose configured server does
//! not answer, or presents a certificate it does not trust, goes to the next node it was
//! given. The cluster tests run two in-process nodes over a 1-member etcd from the
//! fixture, sharing one certificate; they skip without etcd unless
//! SYNCLINE_REQUIRE_ETCD=1.

use std::future::Future;
use std::path::Path;
use std::task::Poll;
use std::time::{Duration, Instant};

use serde_json::json;
use syncline_client::{
    Client, ClientConfig, ConnectionState, ItemKey, NodeInfo, ReconnectPolicy, Subscription,
    SyncEvent, SyncEventKind,
};
use syncline_proto::{Request, Response};
use syncline_server::{EtcdOptions, StoreChoice};
use syncline_tests::etcd::{require_etcd, EtcdCluster};
use syncline_tests::{assert_no_event, next_event, RawConnection, TestServer, WAIT};

/// A node of the installation under `prefix` in `etcd`; with `cert_of`, presenting that
/// node's certificate and key (so one CA file serves both nodes).
async fn node(etcd: &EtcdCluster, prefix: &str, cert_of: Option<&TestServer>) -> TestServer {
    let tls = cert_of.map(|n| {
        let cert = Path::new(&n.admin.ca_file).to_owned();
        let key = cert.with_file_name("key.pem");
        (cert, key)
    });
    TestServer::start_with(|o| {
        let mut options = EtcdOptions::new(etcd.endpoints());
        options.prefix = prefix.to_owned();
        o.store = StoreChoice::Etcd(Box::new(options));
        if let Some((cert, key)) = tls {
            o.cert = Some(cert);
            o.key = Some(key);
        }
    })
    .await
}

fn prefix() -> String {
    format!("/failover-{:016x}/", rand::random::<u64>())
}

/// Reconnects quickly, so the test does not wait out the default backoff.
fn quick(config: ClientConfig) -> ClientConfig {
    config.with_reconnect(ReconnectPolicy {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        ..ReconnectPolicy::default()
    })
}

/// The node's answer to `Nodes`, through a raw backend connection.
async fn nodes_of(admin: &syncline_client::AdminConfig) -> Vec<NodeInfo> {
    let mut raw = RawConnection::backend(admin).await;
    match raw.call(2, Request::Nodes).await.result {
        Ok(Response::Nodes(nodes)) => nodes,
        other => panic!("Nodes answered {other:?}"),
    }
}

/// Polls `f` until it returns `Some`, for at most `WAIT`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next `n` events of `sub`, each one revision past the one before it (no gap, no
/// duplicate), none a snapshot (the node replayed what was missed).
async fn consecutive(sub: &mut Subscription, from: u64, n: usize) -> Vec<SyncEvent> {
    let mut events = Vec::new();
    for i in 0..n {
        let e = next_event(sub).await;
        assert_eq!(
            e.revision,
            from + 1 + i as u64,
            "event {i} after revision {from}: {e:?} (before it: {events:?})"
        );
        assert_ne!(e.kind, SyncEventKind::Snapshot, "{e:?}");
        events.push(e);
    }
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_of_a_node_that_shuts_down_moves_to_the_other_node_and_sees_every_change_once() {
    if !require_etcd() {
        return;
    }
    let etcd = EtcdCluster::start(1).await;
    let prefix = prefix();
    let mut a = node(&etcd, &prefix, None).await;
    let mut b = node(&etcd, &prefix, Some(&a)).await;
    let started = Instant::now();

    let setup = a.backend().await;
    setup
        .document("settings")
        .set(&json!({"step": 0}))
        .await
        .unwrap();
    setup.list("log").push(&json!({"i": 0})).await.unwrap();
    drop(setup);

    let config = quick(a.token_config(&a.token("alice", 3600))).with_offline_writes(16);
    let client = Client::connect(config).await.expect("connected to a");
    assert_eq!(client.node().map(|n| n.quic), Some(a.admin.server.clone()));
    // a lists b (its view of the cluster may take a moment to include b).
    let listed = eventually("a to list both nodes", || async {
        let nodes = client.nodes().await.expect("Nodes");
        (nodes.len() == 2).then_some(nodes)
    })
    .await;
    assert_eq!(listed[0].quic, a.admin.server);
    assert_eq!(listed[1].quic, b.admin.server);
    assert_eq!(client.node().map(|n| n.id), Some(listed[0].id.clone()));

    let mut doc = client.document("settings").subscribe().await.unwrap();
    assert_eq!(next_event(&mut doc).await.kind, SyncEventKind::Snapshot);
    let mut log = client.list("log").subscribe(None).await.unwrap();
    assert_eq!(next_event(&mut log).await.kind, SyncEventKind::Snapshot);
    let doc_at = doc.replica().revision().expect("doc revision");
    let log_at = log.replica().revision().expect("list revision");

    let mut changes = client.state_changes();
    let shut_down = Instant::now();
    a.shutdown().await;
    // Made right after a went: queued while the client is between nodes, sent directly
    // once it is on b (the next test holds it in the queue for sure).
    let own_write = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .document("settings")
                .update(&json!({"own": true}))
                .await
        }
    });
    // a said it was going away: the client leaves it, and is on b soon after.
    let states = tokio::time::timeout(WAIT, async {
        let mut seen = Vec::new();
        while let Some(state) = changes.next().await {
            seen.push(state.clone());
            if state == ConnectionState::Connected {
                return seen;
            }
        }
        panic!("the client went away after {seen:?}");
    })
    .await
    .expect("the client to reconnect");
    let failed_over = shut_down.elapsed();
    assert!(
        matches!(states[0], ConnectionState::Disconnected { .. }),
        "{states:?}"
    );
    assert_eq!(
        client.node().map(|n| n.quic),
        Some(b.admin.server.clone()),
        "the client is on b"
    );
    let written = tokio::time::timeout(WAIT, own_write)
        .await
        .expect("the client's write to go out")
        .unwrap()
        .expect("the client's write to succeed on b");
    assert_eq!(written.revision, doc_at + 1);

    let writer = b.backend().await;
    for i in 1..=3 {
        writer.list("log").push(&json!({ "i": i })).await.unwrap();
    }
    writer
        .document("settings")
        .update(&json!({"by": "b"}))
        .await
        .unwrap();
    writer.list("log").set(1, &json!({"i": 10})).await.unwrap();

    // Every change made since a went, each once, in order, replayed by b.
    let events = consecutive(&mut doc, doc_at, 2).await;
    assert!(events[0].is_local, "the first is the client's own write");
    assert!(!events[1].is_local);
    assert_eq!(
        doc.document().map(|d| d.data.clone()),
        Some(json!({"step": 0, "own": true, "by": "b"}))
    );
    let events = consecutive(&mut log, log_at, 4).await;
    let added: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            SyncEventKind::ItemAdded { item } => Some(item.data["i"].clone()),
            _ => None,
        })
        .collect();
    assert_eq!(added, [json!(1), json!(2), json!(3)]);
    assert_no_event(&mut doc, Duration::from_millis(300)).await;
    assert_no_event(&mut log, Duration::from_millis(100)).await;
    let items: Vec<_> = log
        .collection()
        .expect("a list replica")
        .items
        .values()
        .map(|i| (i.key.clone(), i.data.clone()))
        .collect();
    let on_b = writer
        .list("log")
        .items(Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|i| (i.key, i.data))
        .collect::<Vec<_>>();
    assert_eq!(items, on_b);
    assert_eq!(items[1], (ItemKey::Index(1), json!({"i": 10})));

    // b lists itself first, and a no more once it has left.
    let nodes = eventually("b to list itself alone", || async {
        let nodes = client.nodes().await.expect("Nodes through b");
        (nodes.len() == 1).then_some(nodes)
    })
    .await;
    assert_eq!(nodes[0].quic, b.admin.server);
    assert_eq!(nodes[0].https, b.admin.http_url);
    eprintln!(
        "failed over in {failed_over:?} (test body {:?})",
        started.elapsed()
    );

    client.shutdown().await;
    drop(writer);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_queued_while_no_node_answers_go_out_to_the_node_that_comes_back_first() {
    if !require_etcd() {
        return;
    }
    let etcd = EtcdCluster::start(1).await;
    let prefix = prefix();
    let mut a = node(&etcd, &prefix, None).await;
    let mut b = node(&etcd, &prefix, Some(&a)).await;
    let setup = a.backend().await;
    setup.document("draft").set(&json!({"v": 0})).await.unwrap();
    drop(setup);
    let config = quick(a.token_config(&a.token("alice", 3600))).with_offline_writes(16);
    let client = Client::connect(config).await.expect("connected to a");
    eventually("a to list both nodes", || async {
        (client.nodes().await.expect("Nodes").len() == 2).then_some(())
    })
    .await;
    let mut doc = client.document("draft").subscribe().await.unwrap();
    assert_eq!(next_event(&mut doc).await.kind, SyncEventKind::Snapshot);
    let doc_at = doc.replica().revision().expect("doc revision");

    // Both nodes down: the client has nowhere to go, and its writes wait in its queue.
    b.shutdown().await;
    a.shutdown().await;
    let mut changes = client.state_changes();
    tokio::time::timeout(WAIT, async {
        while client.state() == ConnectionState::Connected {
            changes.next().await;
        }
    })
    .await
    .expect("the client to notice");
    let queued = tokio::spawn({
        let client = client.clone();
        async move {
            let doc = client.document("draft");
            let patches: Vec<_> = (1..=3).map(|v| json!({ "v": v })).collect();
            let mut writes: Vec<_> = patches.iter().map(|p| Box::pin(doc.update(p))).collect();
            // A write joins the queue at its first poll: these join it in order.
            let mut early = Vec::new();
            for w in &mut writes {
                early.push(std::future::poll_fn(|cx| Poll::Ready(w.as_mut().poll(cx))).await);
            }
            let mut revisions = Vec::new();
            for (w, early) in writes.into_iter().zip(early) {
                let written = match early {
                    Poll::Ready(r) => r,
                    Poll::Pending => w.await,
                };
                revisions.push(written.expect("the queued write to succeed on b").revision);
            }
            revisions
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_ne!(client.state(), ConnectionState::Connected);
    assert!(!queued.is_finished(), "the writes wait");

    // b, the node a told of, comes back (same address): the queue goes out there, in
    // order, and the subscription resumes there.
    b.start_again().await;
    let revisions = tokio::time::timeout(WAIT, queued)
        .await
        .expect("the queued writes to go out")
        .unwrap();
    assert_eq!(revisions, [doc_at + 1, doc_at + 2, doc_at + 3]);
    assert_eq!(client.node().map(|n| n.quic), Some(b.admin.server.clone()));
    let events = consecutive(&mut doc, doc_at, 3).await;
    assert!(events.iter().all(|e| e.is_local), "{events:?}");
    assert_eq!(
        doc.document().map(|d| d.data.clone()),
        Some(json!({"v": 3}))
    );
    assert_no_event(&mut doc, Duration::from_millis(200)).await;

    client.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_lists_both_nodes_with_their_addresses_each_node_first_in_its_own_answer() {
    if !require_etcd() {
        return;
    }
    let etcd = EtcdCluster::start(1).await;
    let prefix = prefix();
    let mut a = node(&etcd, &prefix, None).await;
    let mut b = node(&etcd, &prefix, Some(&a)).await;
    for (me, other) in [(&a, &b), (&b, &a)] {
        let nodes = eventually("both nodes listed", || async {
            let nodes = nodes_of(&me.admin).await;
            (nodes.len() == 2).then_some(nodes)
        })
        .await;
        assert_eq!(nodes[0].quic, me.admin.server, "{nodes:?}");
        assert_eq!(nodes[0].https, me.admin.http_url, "{nodes:?}");
        assert_eq!(nodes[1].quic, other.admin.server, "{nodes:?}");
        assert_eq!(nodes[1].https, other.admin.http_url, "{nodes:?}");
        assert!(
            !nodes[0].id.is_empty() && nodes[0].id != nodes[1].id,
            "{nodes:?}"
        );
    }
    // Both present the same certificate: the one CA file reaches either.
    assert_eq!(a.admin.ca_file, b.admin.ca_file);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_server_lists_itself_alone_as_the_node_local() {
    let s = TestServer::start().await;
    let client = s.client_as("alice").await;
    let nodes = client.nodes().await.expect("Nodes");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0].quic, s.admin.server);
    assert_eq!(nodes[0].https, s.admin.http_url);
    if matches!(s.options.store, StoreChoice::Sled) {
        assert_eq!(nodes[0].id, "local");
    }
    assert_eq!(client.node(), Some(nodes[0].clone()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configured_server_that_does_not_answer_gives_way_to_the_next_node_given() {
    let s = TestServer::start().await;
    // A UDP socket that never answers: a node that is down (or its host unreachable).
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let policy = ReconnectPolicy {
        failover_after: Duration::from_millis(300),
        ..ReconnectPolicy::default()
    };
    let config = ClientConfig::with_token(&silent_addr, &s.admin.ca_file, &s.token("alice", 60))
        .unwrap()
        .with_nodes([s.admin.server.as_str()])
        .unwrap()
        .with_reconnect(policy);
    let started = Instant::now();
    let client = Client::connect(config)
        .await
        .expect("connected to the node given");
    let took = started.elapsed();
    // The silent server's attempt runs alongside, not before: well under its 10 s.
    assert!(took < Duration::from_secs(3), "connected after {took:?}");
    assert_eq!(client.node().map(|n| n.quic), Some(s.admin.server.clone()));
    client.ping().await.unwrap();

    // With every node silent, the first connection fails (no retry), in one round.
    let lone = ClientConfig::with_token(&silent_addr, &s.admin.ca_file, &s.token("alice", 60))
        .unwrap()
        .with_reconnect(ReconnectPolicy {
            connect_timeout: Duration::from_millis(500),
            ..policy
        });
    let e = Client::connect(lone).await.err().expect("no node answers");
    assert_eq!(e.code(), syncline_client::ErrorCode::Unavailable, "{e}");
    assert!(
        ClientConfig::with_token(&silent_addr, &s.admin.ca_file, "t")
            .unwrap()
            .with_nodes(["no port here"])
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_whose_certificate_is_not_trusted_is_a_failed_attempt_and_the_next_node_is_tried() {
    let trusted = TestServer::start().await;
    // Another installation, with its own self-signed certificate: the client's CA
    // (trusted's) does not cover it.
    let stranger = TestServer::start().await;
    let token = trusted.token("alice", 60);
    let config = ClientConfig::with_token(&stranger.admin.server, &trusted.admin.ca_file, &token)
        .unwrap()
        .with_nodes([trusted.admin.server.as_str()])
        .unwrap();
    let client = Client::connect(config)
        .await
        .expect("connected to the trusted node");
    assert_eq!(
        client.node().map(|n| n.quic),
        Some(trusted.admin.server.clone())
    );
    client.ping().await.unwrap();

    // Alone, the untrusted node is reported at once, as before.
    let alone =
        ClientConfig::with_token(&stranger.admin.server, &trusted.admin.ca_file, &token).unwrap();
    let e = Client::connect(alone)
        .await
        .err()
        .expect("certificate refused");
    assert!(e.to_string().contains("certificate"), "{e}");
}
