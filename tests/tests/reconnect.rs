//! The client keeps going: it reconnects after a server restart and resumes its
//! subscriptions without duplicates or gaps, reports its connection state, stops at a
//! terminal refusal, bounds operations issued while disconnected, refreshes tokens
//! through its provider, and the CLI's `watch` rides out a restart, and a crash: after a
//! SIGKILL it hears of the restarted server within seconds, not at its idle timeout.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use syncline_client::{
    Client, ConnectionState, ErrorCode, ItemKey, ObjectKind, StateChanges, Subscription, SyncEvent,
    SyncEventKind,
};
use syncline_tests::{server_items, KillOnDrop, ServerProcess, TestServer, WAIT};

/// States from `changes` until one matches `stop` (included), failing after `WAIT`.
async fn states_until(
    changes: &mut StateChanges,
    stop: impl Fn(&ConnectionState) -> bool,
) -> Vec<ConnectionState> {
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(state) = changes.next().await {
            let done = stop(&state);
            seen.push(state);
            if done {
                return;
            }
        }
        panic!("the client went away after {seen:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("no matching state in time"));
    seen
}

fn is_connected(s: &ConnectionState) -> bool {
    *s == ConnectionState::Connected
}

/// Writes that carry on through a restart: a failed write (the server went away under
/// it) is tried again, so some may land twice; subscribers must still end equal to the
/// server.
async fn write_rounds(c: Client, rounds: u64) {
    for k in 0..rounds {
        for attempt in 0.. {
            let done = async {
                c.document("doc").set(&json!({ "k": k })).await?;
                c.list("list").push(&json!(k)).await?;
                c.map("map")
                    .set(&format!("key-{}", k % 7), &json!({ "k": k }))
                    .await?;
                Ok::<_, syncline_client::Error>(())
            }
            .await;
            match done {
                Ok(()) => break,
                Err(e) => {
                    assert!(attempt < 50, "round {k} kept failing: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Reads a subscription until its replica reaches `revision`, checking on the way that
/// revisions only grow (a snapshot may restate the revision it replaces, an event never).
async fn follow(sub: &mut Subscription, revision: u64, log: &mut Vec<SyncEvent>) {
    tokio::time::timeout(WAIT * 2, async {
        while sub.replica().revision() != Some(revision) {
            let e = sub
                .next()
                .await
                .expect("subscription open")
                .expect("event ok");
            if let Some(last) = log.last() {
                if e.kind == SyncEventKind::Snapshot {
                    assert!(e.revision >= last.revision, "{e:?} after {last:?}");
                } else {
                    assert!(
                        e.revision > last.revision,
                        "duplicate or out of order: {e:?} after {last:?}"
                    );
                }
            }
            log.push(e);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the replica did not reach revision {revision}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribers_ride_out_a_server_restart_mid_writes_and_end_equal_to_the_server() {
    let mut s = TestServer::start().await;
    let writer = s.backend().await;
    // Objects exist before anyone subscribes (subscribing needs them).
    write_rounds(writer.clone(), 1).await;
    let watcher = s.client_as("watcher").await;
    let mut doc = watcher.document("doc").subscribe().await.unwrap();
    let mut list = watcher.list("list").subscribe(Some(1000)).await.unwrap();
    let mut map = watcher.map("map").subscribe().await.unwrap();
    let mut changes = watcher.state_changes();

    let writes = tokio::spawn(write_rounds(writer.clone(), 60));
    // Restart once some writes have gone through, while the rest are still coming.
    tokio::time::timeout(WAIT, async {
        while writer.document("doc").get().await.map_or(0, |d| d.revision) < 10 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("writes start");
    s.restart().await;
    tokio::time::timeout(WAIT * 3, writes)
        .await
        .expect("writes finish")
        .unwrap();

    let states = states_until(&mut changes, is_connected).await;
    assert!(
        matches!(states[0], ConnectionState::Disconnected { .. }),
        "{states:?}"
    );

    let server_doc = writer.document("doc").get().await.unwrap();
    let mut log = Vec::new();
    follow(&mut doc, server_doc.revision, &mut log).await;
    assert_eq!(doc.document().unwrap().data, server_doc.data);
    assert_eq!(server_doc.data, json!({"k": 59}));

    for (sub, kind, name) in [
        (&mut list, ObjectKind::List, "list"),
        (&mut map, ObjectKind::Map, "map"),
    ] {
        let info = writer.fetch(name).await.unwrap();
        let mut log = Vec::new();
        follow(sub, info.revision, &mut log).await;
        let replica: std::collections::BTreeMap<ItemKey, Value> = sub
            .collection()
            .unwrap()
            .items
            .iter()
            .map(|(k, i)| (k.clone(), i.data.clone()))
            .collect();
        assert_eq!(replica, server_items(&writer, kind, name).await, "{name}");
    }
}

#[tokio::test]
async fn the_state_stream_sees_disconnected_then_connected_across_a_restart() {
    let mut s = TestServer::start().await;
    let c = s.backend().await;
    assert_eq!(c.state(), ConnectionState::Connected);
    let mut changes = c.state_changes();
    s.restart().await;
    let states = states_until(&mut changes, is_connected).await;
    assert!(
        matches!(states[0], ConnectionState::Disconnected { .. }),
        "{states:?}"
    );
    assert!(states.contains(&ConnectionState::Connecting), "{states:?}");
    c.ping().await.unwrap();
    assert_eq!(c.state(), ConnectionState::Connected);
}

#[tokio::test]
async fn a_revoked_key_ends_in_denied_and_the_client_stops_retrying() {
    let s = TestServer::start().await;
    let admin = s.backend().await;
    let key = admin.create_key(Some("mobile")).await.unwrap();
    let secret = key.secret.clone().expect("the secret is shown once");
    let token = syncline_client::token::mint(
        &key.sid,
        &secret,
        &s.admin.account_sid,
        &s.admin.default_service_sid,
        "alice",
        3600,
        syncline_client::token::now_s(),
    );
    let alice = Client::connect(s.token_config(&token)).await.unwrap();
    alice.document("d").set(&json!(1)).await.unwrap();
    let mut sub = alice.document("d").subscribe().await.unwrap();
    assert_eq!(
        syncline_tests::next_event(&mut sub).await.kind,
        SyncEventKind::Snapshot
    );
    let mut changes = alice.state_changes();

    admin.revoke_key(&key.sid).await.unwrap();
    let states = states_until(&mut changes, |s| {
        matches!(s, ConnectionState::Denied { .. })
    })
    .await;
    let Some(ConnectionState::Denied { code, .. }) = states.last() else {
        unreachable!()
    };
    assert_eq!(*code, ErrorCode::Unauthorized, "{states:?}");
    // No attempt after the refusal.
    if let Ok(more) = tokio::time::timeout(Duration::from_secs(1), changes.next()).await {
        panic!("a state after Denied: {more:?}");
    }
    assert!(alice.is_closed());
    assert_eq!(
        alice.ping().await.unwrap_err().code(),
        ErrorCode::Unauthorized
    );
    // The subscription ends with the refusal instead of waiting forever.
    let end = tokio::time::timeout(WAIT, sub.next()).await.expect("ends");
    assert_eq!(end.unwrap().unwrap_err().code(), ErrorCode::Unauthorized);
    assert!(sub.next().await.is_none());
}

#[tokio::test]
async fn an_operation_while_the_server_is_down_fails_with_unavailable_at_its_deadline() {
    let mut s = TestServer::start().await;
    let config = syncline_client::ClientConfig::from_admin(&s.admin)
        .unwrap()
        .with_offline_wait(Duration::from_millis(300));
    let c = Client::connect(config).await.unwrap();
    s.shutdown().await;
    tokio::time::timeout(WAIT, c.closed()).await.unwrap();

    let err = tokio::time::timeout(WAIT, c.ping())
        .await
        .expect("fails within its deadline, not later")
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    // A per-call deadline, through a handle.
    let err = tokio::time::timeout(
        WAIT,
        c.with_deadline(Duration::from_millis(200))
            .document("x")
            .get(),
    )
    .await
    .expect("fails within its deadline")
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    assert!(!c.is_closed(), "still trying to reconnect");

    // An operation with a deadline long enough to see the server back succeeds.
    let patient = {
        let c = c.with_deadline(WAIT);
        tokio::spawn(async move { c.document("x").set(&json!("back")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.start_again().await;
    let written = patient
        .await
        .unwrap()
        .expect("written once the server is back");
    assert_eq!(written.value.unwrap().data, json!("back"));
}

#[tokio::test]
async fn the_token_provider_is_called_before_each_token_expires_and_the_connection_carries_on() {
    let s = TestServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let admin = s.admin.clone();
    let counter = calls.clone();
    // 4-second tokens: the client refreshes them half-way, on its own schedule.
    let config = s.token_config("").with_token_provider(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let token = syncline_tests::token(&admin, "alice", 4);
        async move { Ok(token) }
    });
    let c = Client::connect(config).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "asked at connect");
    assert_eq!(c.welcome().identity.as_deref(), Some("alice"));
    let first_exp = c.welcome().token_expires_at.unwrap();
    let mut changes = c.state_changes();
    tokio::time::timeout(WAIT, async {
        while calls.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the provider is called again before each expiry");
    c.ping().await.unwrap();
    assert!(c.welcome().token_expires_at.unwrap() > first_exp);
    // Refreshed in place: the connection never dropped.
    if let Ok(s) = tokio::time::timeout(Duration::from_millis(100), changes.next()).await {
        panic!("the connection changed state: {s:?}");
    }
}

#[tokio::test]
async fn a_connection_closed_for_an_expired_token_comes_back_with_a_token_from_the_provider() {
    let s = TestServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let admin = s.admin.clone();
    let counter = calls.clone();
    // The first refresh fails (the backend is briefly unreachable, say), so the server
    // closes the connection at expiry; the reconnect asks the provider again.
    let config = s
        .token_config(&s.token_closing_in("alice", 3))
        .with_token_provider(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let token = syncline_tests::token(&admin, "alice", 3600);
            async move {
                match n {
                    0 => Err(syncline_client::Error::Connection("backend down".into())),
                    _ => Ok(token),
                }
            }
        });
    let c = Client::connect(config).await.unwrap();
    let mut changes = c.state_changes();
    let why = tokio::time::timeout(WAIT, c.closed()).await.unwrap();
    assert_eq!(why.code(), ErrorCode::TokenExpired);
    let states = states_until(&mut changes, is_connected).await;
    assert!(
        matches!(states[0], ConnectionState::Disconnected { .. }),
        "{states:?}"
    );
    assert!(calls.load(Ordering::SeqCst) >= 2);
    c.ping().await.unwrap();
    assert_eq!(c.welcome().identity.as_deref(), Some("alice"));
}

#[tokio::test]
async fn a_stream_subscriber_is_told_it_missed_messages_across_a_restart() {
    let mut s = TestServer::start().await;
    let publisher = s.backend().await;
    let watcher = s.client_as("watcher").await;
    publisher.stream("chat").create(None).await.unwrap();
    let mut sub = watcher.stream("chat").subscribe().await.unwrap();
    assert_eq!(
        syncline_tests::next_event(&mut sub).await.kind,
        SyncEventKind::Snapshot
    );
    for n in 0..3 {
        publisher.stream("chat").publish(&json!(n)).await.unwrap();
        syncline_tests::next_event(&mut sub).await;
    }
    assert_eq!(sub.last_sequence(), Some(3));
    s.restart().await;
    // Sequences restart with the server: what went by before is unknown.
    let e = syncline_tests::next_event(&mut sub).await;
    assert_eq!(e.kind, SyncEventKind::Missed { messages: None });
    tokio::time::timeout(WAIT, async {
        loop {
            match publisher.stream("chat").publish(&json!("after")).await {
                Ok(_) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("published after the restart");
    // A node of a cluster numbers messages cluster-wide (the stream's etcd key counts
    // them), so the sequence goes on across one node's restart.
    let after = if syncline_tests::etcd_mode() { 4 } else { 1 };
    match syncline_tests::next_event(&mut sub).await.kind {
        SyncEventKind::MessagePublished { data, sequence, .. } => {
            assert_eq!((data, sequence), (json!("after"), after))
        }
        other => panic!("{other:?}"),
    }
}

/// `syncline doc set feed {"v":V}` against `server`, as the backend.
fn set_feed(server: &ServerProcess, v: u64) {
    let out = server
        .cli()
        .args(["doc", "set", "feed", &format!(r#"{{"v":{v}}}"#)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `syncline watch feed` against `server` (ended when dropped), and its stdout lines,
/// read on a thread so that the test waits for each with a bound.
fn watch_feed(server: &ServerProcess) -> (KillOnDrop, mpsc::Receiver<String>) {
    let mut watch = server
        .cli()
        .args(["watch", "feed"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (KillOnDrop(watch), rx)
}

/// The watch's next line, as JSON, within `within`.
fn next_line(rx: &mpsc::Receiver<String>, within: Duration) -> Value {
    let line = rx.recv_timeout(within).expect("a line in time");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// Ends the watch with SIGINT: it exits successfully, having said on stderr that it
/// reconnected.
fn stop_watch(mut watch: KillOnDrop) {
    let child = &mut watch.0;
    assert!(
        child.try_wait().unwrap().is_none(),
        "watch is still running"
    );
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    // Bounded: a watch that ignored the signal fails the test instead of hanging it
    // (`KillOnDrop` then ends the process).
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "watch did not exit on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("reconnected"), "{stderr}");
}

/// A server process with `feed` at revision 1, and a `syncline watch feed` that has
/// printed revisions 0 and 1 (so its client has just heard from the server).
fn watch_of_feed_at_revision_1(dir: &Path) -> (ServerProcess, KillOnDrop, mpsc::Receiver<String>) {
    let server = ServerProcess::start(dir);
    set_feed(&server, 0);
    let (watch, rx) = watch_feed(&server);
    assert_eq!(next_line(&rx, WAIT)["revision"], 0);
    set_feed(&server, 1);
    assert_eq!(next_line(&rx, WAIT)["revision"], 1);
    (server, watch, rx)
}

/// `line` is the event of `set_feed(v)`.
fn assert_feed_updated(line: &Value, v: u64) {
    assert_eq!(
        (&line["event"], &line["revision"], &line["data"]),
        (&json!("document_updated"), &json!(v), &json!({ "v": v })),
        "{line}"
    );
}

#[test]
fn cli_watch_survives_a_server_restart_and_prints_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, watch, rx) = watch_of_feed_at_revision_1(dir.path());
    server.restart();
    // Written while the watcher is away or coming back: each printed once, in order.
    for v in 2..=4 {
        set_feed(&server, v);
    }
    for v in 2..=4 {
        assert_feed_updated(&next_line(&rx, WAIT * 2), v);
    }
    stop_watch(watch);
}

#[test]
fn cli_watch_prints_a_change_within_seconds_of_a_restart_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, watch, rx) = watch_of_feed_at_revision_1(dir.path());
    // The server dies without closing anything and comes back at once. The watch's
    // client is idle, so the next packet it sends is a keep-alive (every 2 s for
    // `watch`, cli/src/main.rs): it meets the new process, whose stateless reset, keyed
    // by the data directory's reset.key, the client trusts, so it reconnects then. A
    // process with fresh keys would drop that packet or send a reset the client ignores,
    // and the client would wait for its idle timeout (33 s after the restart when that
    // was tried).
    server.kill();
    let restarted = Instant::now();
    server.start_again();
    set_feed(&server, 2);
    let within = Duration::from_secs(5).saturating_sub(restarted.elapsed());
    let line = rx.recv_timeout(within).unwrap_or_else(|e| {
        panic!(
            "no line within 5 s of the restart ({e}): the watch's client did not take the \
             restarted server's stateless reset"
        )
    });
    let line: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_feed_updated(&line, 2);
    eprintln!(
        "the change was printed {:.2?} after the restart began",
        restarted.elapsed()
    );
    stop_watch(watch);
}
