//! Presence: ephemeral items live while their writer's identity has a live connection,
//! and go (`reason: disconnected`) when the last one ends, after the service's
//! debouncing window. Real servers, real QUIC clients, a real CLI process.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use syncline_client::{
    Client, ErrorCode, ItemKey, Reason, ServiceFlagsPatch, Subscription, SyncEventKind,
};
use syncline_proto::{Credential, ObjectKind, Request};
use syncline_tests::{
    assert_no_event, next_event, roster, syncline_bin, RawConnection, TestServer, WAIT,
};

/// Turns debouncing on with `window_ms`, or off.
async fn debounce(server: &TestServer, window_ms: Option<u32>) {
    let patch = ServiceFlagsPatch {
        reachability_debouncing_enabled: Some(window_ms.is_some()),
        reachability_debouncing_window_ms: window_ms,
        ..Default::default()
    };
    server
        .backend()
        .await
        .update_service(&server.admin.default_service_sid, patch)
        .await
        .expect("service updated");
}

fn names(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// Reads events until the roster is `expected`, failing if an identity in `connected`
/// loses its item on the way (it must never go while its owner is connected).
async fn roster_becomes(
    sub: &mut Subscription,
    expected: &BTreeSet<String>,
    connected: &BTreeSet<String>,
) {
    let deadline = Instant::now() + WAIT;
    while roster(sub) != *expected {
        assert!(
            Instant::now() < deadline,
            "roster {:?}, expected {expected:?}",
            roster(sub)
        );
        let event = next_event(sub).await;
        if let SyncEventKind::ItemRemoved {
            key: ItemKey::Key(k),
            reason,
            ..
        } = &event.kind
        {
            assert!(
                !connected.contains(k),
                "{k}'s item was removed ({reason:?}) while {k} was connected"
            );
        }
    }
}

async fn room(server: &TestServer) -> Subscription {
    let backend = server.backend().await;
    backend
        .map("room")
        .create(None)
        .await
        .expect("room created");
    watch_room(&backend).await
}

/// Subscribes to the room, with its replica filled (the snapshot taken in).
async fn watch_room(backend: &Client) -> Subscription {
    let mut sub = backend.map("room").subscribe().await.expect("subscribed");
    let first = next_event(&mut sub).await;
    assert_eq!(first.kind, SyncEventKind::Snapshot);
    sub
}

#[tokio::test]
async fn an_ephemeral_item_goes_when_its_owner_leaves_and_says_why() {
    let server = TestServer::start().await;
    let mut sub = room(&server).await;
    let alice = server.client_as("alice").await;
    alice
        .map("room")
        .set_ephemeral("alice", &json!({"status": "online"}))
        .await
        .expect("alice is present");
    // A plain item of the same identity is not ephemeral and stays.
    alice
        .map("room")
        .set("notes", &json!("kept"))
        .await
        .expect("plain set");
    roster_becomes(&mut sub, &names(&["alice", "notes"]), &names(&["alice"])).await;

    alice.close();
    // Debouncing is off by default: it goes as soon as the server sees the close.
    let event = next_event(&mut sub).await;
    match event.kind {
        SyncEventKind::ItemRemoved {
            key,
            reason,
            previous,
        } => {
            assert_eq!(key, ItemKey::Key("alice".into()));
            assert_eq!(reason, Reason::Disconnected);
            assert_eq!(previous, json!({"status": "online"}));
        }
        other => panic!("expected alice's item to be removed, got {other:?}"),
    }
    assert_eq!(roster(&sub), names(&["notes"]));
    let items = syncline_tests::server_items(
        &server.backend().await,
        syncline_client::ObjectKind::Map,
        "room",
    )
    .await;
    assert_eq!(items.len(), 1, "the server agrees: {items:?}");
}

/// A server debouncing with `window_ms`, a subscribed room, and Alice present in it.
async fn alice_present_with_window(window_ms: u32) -> (TestServer, Subscription, Client) {
    let server = TestServer::start().await;
    debounce(&server, Some(window_ms)).await;
    let mut sub = room(&server).await;
    let alice = server.client_as("alice").await;
    alice
        .map("room")
        .set_ephemeral("alice", &json!(1))
        .await
        .expect("alice is present");
    roster_becomes(&mut sub, &names(&["alice"]), &names(&["alice"])).await;
    (server, sub, alice)
}

#[tokio::test]
async fn a_reconnect_inside_the_window_keeps_the_item_and_sends_nothing() {
    let (server, mut sub, alice) = alice_present_with_window(1_500).await;
    alice.close();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _back = server.client_as("alice").await;
    // Well past the window: nothing happened, the item is there.
    assert_no_event(&mut sub, Duration::from_millis(2_500)).await;
    assert_eq!(roster(&sub), names(&["alice"]));
}

#[tokio::test]
async fn outside_the_window_the_item_goes_and_never_before_it() {
    let (_server, mut sub, alice) = alice_present_with_window(1_000).await;
    let left = Instant::now();
    alice.close();
    roster_becomes(&mut sub, &names(&[]), &names(&[])).await;
    assert!(
        left.elapsed() >= Duration::from_millis(1_000),
        "removed {:?} after the close, inside the 1 s window",
        left.elapsed()
    );
}

#[tokio::test]
async fn one_identity_on_two_connections_keeps_its_item_until_both_are_gone() {
    let server = TestServer::start().await;
    let mut sub = room(&server).await;
    let phone = server.client_as("alice").await;
    let laptop = server.client_as("alice").await;
    phone
        .map("room")
        .set_ephemeral("alice", &json!("phone"))
        .await
        .unwrap();
    roster_becomes(&mut sub, &names(&["alice"]), &names(&["alice"])).await;

    phone.close();
    assert_no_event(&mut sub, Duration::from_millis(1_000)).await;
    assert_eq!(roster(&sub), names(&["alice"]), "the laptop is still there");

    laptop.close();
    roster_becomes(&mut sub, &names(&[]), &names(&[])).await;
}

#[tokio::test]
async fn two_hundred_identities_joining_at_once_make_the_roster_and_leaving_unmakes_it() {
    let server = TestServer::start().await;
    let mut sub = room(&server).await;
    let mut joins = tokio::task::JoinSet::new();
    for i in 0..200 {
        let config = server.token_config(&server.token(&format!("user{i:03}"), 3600));
        joins.spawn(async move {
            let client = Client::connect(config).await.expect("connects");
            let me = format!("user{i:03}");
            client
                .map("room")
                .set_ephemeral(&me, &json!({"i": i}))
                .await
                .expect("joins");
            (i, client)
        });
    }
    let mut clients = Vec::new();
    while let Some(joined) = joins.join_next().await {
        clients.push(joined.expect("join task"));
    }
    clients.sort_by_key(|(i, _)| *i);
    let everyone: BTreeSet<String> = (0..200).map(|i| format!("user{i:03}")).collect();
    roster_becomes(&mut sub, &everyone, &everyone).await;

    // The odd ones leave; the even ones must keep their items throughout.
    let (stay, leave): (Vec<_>, Vec<_>) = clients.into_iter().partition(|(i, _)| i % 2 == 0);
    for (_, client) in &leave {
        client.close();
    }
    let staying: BTreeSet<String> = stay.iter().map(|(i, _)| format!("user{i:03}")).collect();
    roster_becomes(&mut sub, &staying, &staying).await;
    assert_no_event(&mut sub, Duration::from_millis(500)).await;
    assert_eq!(roster(&sub), staying);
}

#[tokio::test]
async fn only_an_identitys_connection_can_write_an_ephemeral_item() {
    let server = TestServer::start().await;
    let backend = server.backend().await;
    let err = backend
        .map("room")
        .set_ephemeral("system", &json!(1))
        .await
        .expect_err("an API key has no identity to be present");
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(
        server_has_no_map(&backend, "room").await,
        "nothing was created"
    );
    // The connection is healthy after the refusal.
    backend.map("room").set("k", &json!(1)).await.unwrap();
}

async fn server_has_no_map(backend: &Client, name: &str) -> bool {
    matches!(
        backend.map(name).info().await,
        Err(e) if e.code() == ErrorCode::NotFound
    )
}

#[tokio::test]
async fn a_plain_set_makes_an_ephemeral_item_stay_and_an_ephemeral_set_makes_it_go() {
    let server = TestServer::start().await;
    let mut sub = room(&server).await;
    let alice = server.client_as("alice").await;
    let bob = server.client_as("bob").await;
    alice
        .map("room")
        .set_ephemeral("seat", &json!("alice"))
        .await
        .unwrap();
    // Bob takes the seat with a plain set: it is nobody's now, and stays.
    bob.map("room").set("seat", &json!("bob")).await.unwrap();
    alice
        .map("room")
        .set_ephemeral("cursor", &json!(1))
        .await
        .unwrap();
    roster_becomes(&mut sub, &names(&["cursor", "seat"]), &names(&["cursor"])).await;
    alice.close();
    roster_becomes(&mut sub, &names(&["seat"]), &names(&[])).await;
    // An ephemeral set hands the item to its writer.
    bob.map("room")
        .set_ephemeral("seat", &json!("bob's"))
        .await
        .unwrap();
    bob.close();
    roster_becomes(&mut sub, &names(&[]), &names(&[])).await;
}

#[tokio::test]
async fn ephemeral_list_items_go_with_their_owner() {
    let server = TestServer::start().await;
    let backend = server.backend().await;
    backend.list("log").push(&json!("kept")).await.unwrap();
    let mut sub = backend.list("log").subscribe(None).await.unwrap();
    let alice = server.client_as("alice").await;
    alice
        .list("log")
        .push_ephemeral(&json!("typing"))
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while sub.collection().map_or(0, |c| c.items.len()) != 2 {
        assert!(Instant::now() < deadline);
        next_event(&mut sub).await;
    }
    alice.close();
    let event = next_event(&mut sub).await;
    assert!(
        matches!(
            event.kind,
            SyncEventKind::ItemRemoved {
                key: ItemKey::Index(1),
                reason: Reason::Disconnected,
                ..
            }
        ),
        "{event:?}"
    );
}

/// `syncline map set ... --ephemeral` as a child process acting as `identity`.
fn cli_presence(server: &TestServer, identity: &str) -> Child {
    Command::new(syncline_bin())
        .args([
            "map",
            "set",
            "room",
            identity,
            r#"{"via":"cli"}"#,
            "--ephemeral",
        ])
        .env_remove("SYNCLINE_CONFIG")
        .env_remove("SYNCLINE_SERVICE")
        .env("SYNCLINE_TOKEN", server.token(identity, 3600))
        .env("SYNCLINE_SERVER", &server.admin.server)
        .env("SYNCLINE_CA", &server.admin.ca_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn syncline map set --ephemeral")
}

#[tokio::test]
async fn the_cli_holds_an_ephemeral_item_until_it_is_interrupted_or_killed() {
    // A short idle timeout, so that a killed client is noticed within the test's patience.
    let server = TestServer::start_with(|o| o.idle_timeout = Duration::from_secs(3)).await;
    let mut sub = room(&server).await;
    let mut polite = cli_presence(&server, "polite");
    let mut killed = cli_presence(&server, "killed");
    let both = names(&["killed", "polite"]);
    roster_becomes(&mut sub, &both, &both).await;
    // Idle for longer than the idle timeout: the server's pings keep both alive.
    assert_no_event(&mut sub, Duration::from_secs(4)).await;

    // SIGTERM: the command closes its connection and exits cleanly.
    let pid = polite.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || polite.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "interrupted CLI exits 0: {exit:?}");
    roster_becomes(&mut sub, &names(&["killed"]), &names(&["killed"])).await;

    // SIGKILL: no close; the server notices after its idle timeout.
    killed.kill().unwrap();
    let _ = killed.wait();
    roster_becomes(&mut sub, &names(&[]), &names(&[])).await;
}

#[tokio::test]
async fn after_a_restart_ephemeral_items_wait_one_window_for_their_owners() {
    // Debouncing off: an owner leaving is removed at once, so this also shows that a
    // restart is not taken for everyone leaving; owners get the default 5 s window.
    let mut server = TestServer::start().await;
    // Raw connections: they do not reconnect by themselves as a client would, so
    // these owners stay away after the restart unless the test brings them back.
    let mut before_restart = Vec::new();
    for who in ["alice", "bob"] {
        let token = Credential::Token(server.token(who, 3600));
        let mut raw = RawConnection::authenticated(&server.admin, token).await;
        let set = Request::ItemSet {
            kind: ObjectKind::Map,
            object: "room".into(),
            key: ItemKey::Key(who.into()),
            data: "1".into(),
            if_match: None,
            ttl: None,
            ephemeral: true,
        };
        let answer = raw.call(2, set).await;
        assert!(answer.result.is_ok(), "{answer:?}");
        before_restart.push(raw);
    }
    // A graceful restart closes every connection: that is the server going away, not
    // the owners leaving, so both items are still there when it is back.
    server.restart().await;
    let restarted = Instant::now();
    let mut sub = watch_room(&server.backend().await).await;
    assert_eq!(roster(&sub), names(&["alice", "bob"]));
    // Alice comes back inside the window; Bob does not.
    let alice = server.client_as("alice").await;
    roster_becomes(&mut sub, &names(&["alice"]), &names(&["alice"])).await;
    assert!(
        restarted.elapsed() >= Duration::from_secs(3),
        "Bob's item went {:?} after the restart, inside his window",
        restarted.elapsed()
    );
    assert_no_event(&mut sub, Duration::from_millis(500)).await;
    drop(alice);
}

#[tokio::test]
async fn after_a_crash_ephemeral_items_of_owners_who_do_not_return_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = syncline_tests::ServerProcess::start(dir.path());
    {
        let token = syncline_tests::token(&process.admin, "ghost", 3600);
        let config = syncline_client::ClientConfig::with_token(
            &process.admin.server,
            &process.admin.ca_file,
            &token,
        )
        .unwrap();
        let ghost = Client::connect(config).await.unwrap();
        ghost
            .map("room")
            .set_ephemeral("ghost", &json!(1))
            .await
            .unwrap();
        process.kill();
    }
    let process = syncline_tests::ServerProcess::start(dir.path());
    let mut sub = watch_room(&syncline_tests::backend(&process.admin).await).await;
    // Debouncing is off, but after a restart owners get the default 5 s window.
    let restarted = Instant::now();
    assert_eq!(roster(&sub), names(&["ghost"]), "kept through the crash");
    roster_becomes(&mut sub, &names(&[]), &names(&[])).await;
    assert!(
        restarted.elapsed() >= Duration::from_secs(3),
        "removed {:?} after the restart, inside its window",
        restarted.elapsed()
    );
}

#[tokio::test]
async fn the_cli_keeps_its_item_through_a_server_restart() {
    let mut server = TestServer::start().await;
    let mut sub = room(&server).await;
    let mut cli = cli_presence(&server, "alice");
    roster_becomes(&mut sub, &names(&["alice"]), &names(&["alice"])).await;

    // Same port after the restart: the CLI's client reconnects by itself, inside the
    // window its owner gets after a restart, and sets its item again.
    server.restart().await;
    let mut sub = watch_room(&server.backend().await).await;
    assert_eq!(roster(&sub), names(&["alice"]));
    // Past the 5 s restart window: the item never went.
    assert_no_event_but_sets(&mut sub, Duration::from_secs(7)).await;
    assert_eq!(roster(&sub), names(&["alice"]));
    assert_eq!(
        cli.try_wait().unwrap(),
        None,
        "the CLI still holds its item"
    );
    cli.kill().unwrap();
    let _ = cli.wait();
}

/// Waits `quiet`, failing on any event other than an item being set again.
async fn assert_no_event_but_sets(sub: &mut Subscription, quiet: Duration) {
    let until = Instant::now() + quiet;
    while let Ok(event) = tokio::time::timeout_at(until.into(), next_event(sub)).await {
        assert!(
            matches!(event.kind, SyncEventKind::ItemUpdated { .. }),
            "{event:?}"
        );
    }
}
