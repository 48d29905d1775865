//! Webhooks through a real server: a real HTTP receiver on 127.0.0.1 records what the
//! server POSTs (Twilio's Sync webhook parameters), Twilio's own Python helper checks
//! the signatures, and writers are timed against a receiver that never answers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use syncline_client::{Client, ServiceFlagsPatch};
use syncline_tests::{ensure_python_libraries, TestServer, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the receiver answers.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    /// 200 to everything.
    Answer,
    /// 500 to the first request, 200 after.
    FailFirst,
    /// Reads each request, records it, and never answers.
    Hang,
}

#[derive(Clone, Debug)]
struct Hook {
    path: String,
    signature: String,
    params: Vec<(String, String)>,
}

impl Hook {
    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn event_type(&self) -> &str {
        self.get("EventType").unwrap_or("")
    }
}

/// A small HTTP/1.1 server that records every request (keep-alive included).
struct Receiver {
    url: String,
    hooks: Arc<Mutex<Vec<Hook>>>,
}

impl Receiver {
    async fn start(mode: Mode) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let hooks = Arc::new(Mutex::new(Vec::new()));
        let served = Arc::new(AtomicUsize::new(0));
        let recorded = hooks.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, mode, recorded.clone(), served.clone()));
            }
        });
        Receiver {
            url: format!("http://{addr}/hooks/sync?tenant=t1"),
            hooks,
        }
    }

    fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for what arrived, and returns it.
    async fn wait_until(&self, what: &str, pred: impl Fn(&[Hook]) -> bool) -> Vec<Hook> {
        let deadline = Instant::now() + WAIT;
        loop {
            let hooks = self.hooks();
            if pred(&hooks) {
                return hooks;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {:#?}",
                hooks.iter().map(|h| h.event_type()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_for(&self, n: usize) -> Vec<Hook> {
        self.wait_until(&format!("{n} webhooks"), |h| h.len() >= n)
            .await
    }
}

async fn serve(
    mut sock: TcpStream,
    mode: Mode,
    hooks: Arc<Mutex<Vec<Hook>>>,
    served: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let header = |name: &str| {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
        let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        hooks.lock().unwrap().push(Hook {
            path,
            signature: header("x-twilio-signature").unwrap_or_default(),
            params: form_urlencoded::parse(&body).into_owned().collect(),
        });
        let n = served.fetch_add(1, Ordering::SeqCst);
        let status = match mode {
            Mode::Hang => std::future::pending::<&str>().await,
            Mode::FailFirst if n == 0 => "500 Internal Server Error",
            _ => "200 OK",
        };
        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        if sock.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn hook_service(backend: &Client, url: &str, from_backend: bool) {
    backend
        .update_service(
            "default",
            ServiceFlagsPatch {
                webhook_url: Some(Some(url.to_owned())),
                webhooks_from_backend: Some(from_backend),
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

fn of_type<'a>(hooks: &'a [Hook], t: &str) -> Vec<&'a Hook> {
    hooks.iter().filter(|h| h.event_type() == t).collect()
}

/// Checks every hook's signature with twilio-python's `RequestValidator`, and that a
/// changed parameter fails it.
fn validate_with_twilio(s: &TestServer, url: &str, hooks: &[Hook]) {
    ensure_python_libraries();
    let token = s
        .admin
        .auth_token
        .clone()
        .expect("admin.json has the auth token");
    assert_eq!(token.len(), 32);
    assert!(token
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let list: Vec<_> = hooks
        .iter()
        .map(|h| {
            let params: serde_json::Map<_, _> = h
                .params
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            json!({ "params": params, "signature": h.signature })
        })
        .collect();
    let script = r#"
import json, os
from twilio.request_validator import RequestValidator
v = RequestValidator(os.environ["AUTH_TOKEN"])
url = os.environ["HOOK_URL"]
hooks = json.loads(os.environ["HOOKS"])
for h in hooks:
    assert v.validate(url, h["params"], h["signature"]), h
    tampered = dict(h["params"], EventType="tampered")
    assert not v.validate(url, tampered, h["signature"]), h
    assert not RequestValidator("0" * 32).validate(url, h["params"], h["signature"]), h
print("valid", len(hooks))
"#;
    let out = s.run_python(
        script,
        &[
            ("AUTH_TOKEN", token),
            ("HOOK_URL", url.to_owned()),
            ("HOOKS", serde_json::Value::Array(list).to_string()),
        ],
    );
    assert_eq!(out.trim(), format!("valid {}", hooks.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_clients_changes_reach_the_webhook_with_twilios_parameters_and_signatures_twilio_accepts(
) {
    let s = TestServer::start().await;
    let r = Receiver::start(Mode::Answer).await;
    let backend = s.backend().await;
    hook_service(&backend, &r.url, false).await;
    let alice = s.client_as("alice").await;

    let doc = alice.document("prefs");
    doc.set(&json!({"theme": "dark"})).await.unwrap();
    doc.update(&json!({"size": 2})).await.unwrap();
    let list = alice.list("todo");
    list.push(&json!({"t": "milk"})).await.unwrap();
    list.set(0, &json!({"t": "eggs"})).await.unwrap();
    list.remove(0).await.unwrap();
    let map = alice.map("users");
    map.set("bob", &json!({"age": 3})).await.unwrap();
    map.update("bob", &json!({"age": 4})).await.unwrap();
    map.remove("bob").await.unwrap();
    let stream = alice.stream("chat");
    stream.publish(&json!({"msg": "hi"})).await.unwrap();
    doc.delete().await.unwrap();
    list.delete().await.unwrap();
    map.delete().await.unwrap();
    stream.delete().await.unwrap();

    let hooks = r.wait_for(16).await;
    let types: Vec<&str> = hooks.iter().map(Hook::event_type).collect();
    // Lanes are per object, so only each object's own order is fixed.
    let order_of = |prefix: &str| -> Vec<&str> {
        types
            .iter()
            .copied()
            .filter(|t| t.starts_with(prefix))
            .collect()
    };
    assert_eq!(
        order_of("document_"),
        ["document_created", "document_updated", "document_removed"]
    );
    assert_eq!(
        order_of("list_"),
        [
            "list_created",
            "list_item_added",
            "list_item_updated",
            "list_item_removed",
            "list_removed"
        ]
    );
    assert_eq!(
        order_of("map_"),
        [
            "map_created",
            "map_item_added",
            "map_item_updated",
            "map_item_removed",
            "map_removed"
        ]
    );
    assert_eq!(
        order_of("stream_"),
        [
            "stream_created",
            "stream_message_published",
            "stream_removed"
        ]
    );
    assert_eq!(hooks.len(), 16, "{types:?}");

    for h in &hooks {
        assert_eq!(h.path, "/hooks/sync?tenant=t1");
        assert_eq!(h.get("AccountSid"), Some(s.admin.account_sid.as_str()));
        assert_eq!(
            h.get("ServiceSid"),
            Some(s.admin.default_service_sid.as_str())
        );
        assert_eq!(h.get("Identity"), Some("alice"), "{h:?}");
        let date = h.get("DateCreated").expect("DateCreated");
        assert!(
            date.len() == 20 && date.ends_with('Z') && date.as_bytes()[10] == b'T',
            "{date}"
        );
    }
    let created = of_type(&hooks, "document_created")[0];
    assert!(created.get("DocumentSid").unwrap().starts_with("ET"));
    assert_eq!(created.get("DocumentUniqueName"), Some("prefs"));
    assert_eq!(created.get("DocumentRevision"), Some("0"));
    assert_eq!(created.get("DocumentData"), Some(r#"{"theme":"dark"}"#));
    let updated = of_type(&hooks, "document_updated")[0];
    assert_eq!(updated.get("DocumentRevision"), Some("1"));
    assert_eq!(
        updated.get("DocumentData"),
        Some(r#"{"size":2,"theme":"dark"}"#)
    );
    let removed = of_type(&hooks, "document_removed")[0];
    assert_eq!(removed.get("DocumentData"), None);
    assert_eq!(removed.get("Reason"), Some("write"));

    let added = of_type(&hooks, "list_item_added")[0];
    assert!(added.get("ListSid").unwrap().starts_with("ES"));
    assert_eq!(added.get("ListUniqueName"), Some("todo"));
    assert_eq!(added.get("ItemIndex"), Some("0"));
    assert_eq!(added.get("ItemData"), Some(r#"{"t":"milk"}"#));
    assert_eq!(added.get("ListRevision"), Some("1"));
    let item_removed = of_type(&hooks, "list_item_removed")[0];
    assert_eq!(item_removed.get("ItemIndex"), Some("0"));
    assert_eq!(item_removed.get("Reason"), Some("write"));

    let map_added = of_type(&hooks, "map_item_added")[0];
    assert!(map_added.get("MapSid").unwrap().starts_with("MP"));
    assert_eq!(map_added.get("MapUniqueName"), Some("users"));
    assert_eq!(map_added.get("ItemKey"), Some("bob"));
    assert_eq!(map_added.get("ItemData"), Some(r#"{"age":3}"#));
    let map_updated = of_type(&hooks, "map_item_updated")[0];
    assert_eq!(map_updated.get("ItemData"), Some(r#"{"age":4}"#));

    let message = of_type(&hooks, "stream_message_published")[0];
    assert!(message.get("StreamSid").unwrap().starts_with("TO"));
    assert_eq!(message.get("StreamUniqueName"), Some("chat"));
    assert_eq!(message.get("MessageData"), Some(r#"{"msg":"hi"}"#));
    assert_eq!(message.get("MessageSequence"), Some("1"));

    validate_with_twilio(&s, &r.url, &hooks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_changes_are_sent_only_when_webhooks_from_backend_is_on() {
    let s = TestServer::start().await;
    let r = Receiver::start(Mode::Answer).await;
    let backend = s.backend().await;
    hook_service(&backend, &r.url, false).await;
    let alice = s.client_as("alice").await;

    backend
        .document("quiet")
        .set(&json!({"by": "backend"}))
        .await
        .unwrap();
    // REST is the backend too.
    s.run_python(
        r#"
import os, requests
r = requests.post(os.environ["HTTP_URL"] + "/v1/Services/default/Documents",
                  data={"UniqueName": "rest-quiet", "Data": '{"a": 1}'},
                  auth=(os.environ["KEY_SID"], os.environ["KEY_SECRET"]), verify=os.environ["CA_FILE"])
assert r.status_code == 201, r.text
"#,
        &[],
    );
    // A token write afterwards: once it is in, the backend's would have been too.
    alice.document("marker").set(&json!(1)).await.unwrap();
    let hooks = r.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hooks_after = r.hooks();
    assert_eq!(hooks_after.len(), hooks.len());
    assert!(
        hooks_after
            .iter()
            .all(|h| h.get("Identity") == Some("alice")),
        "{hooks_after:#?}"
    );

    hook_service(&backend, &r.url, true).await;
    backend
        .document("loud")
        .set(&json!({"by": "backend"}))
        .await
        .unwrap();
    let hooks = r
        .wait_until("the backend's change", |h| {
            h.iter()
                .any(|h| h.get("DocumentUniqueName") == Some("loud"))
        })
        .await;
    let loud = hooks
        .iter()
        .find(|h| h.get("DocumentUniqueName") == Some("loud"))
        .unwrap();
    assert_eq!(loud.get("Identity"), Some("system"));
    assert_eq!(loud.event_type(), "document_created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_objects_events_arrive_in_order_under_concurrent_writes_to_several_objects() {
    let s = TestServer::start().await;
    let r = Receiver::start(Mode::Answer).await;
    hook_service(&s.backend().await, &r.url, false).await;
    let mut writers = Vec::new();
    const OBJECTS: usize = 6;
    const WRITES: u64 = 25;
    for w in 0..OBJECTS {
        let client = s.client_as(&format!("writer{w}")).await;
        writers.push(tokio::spawn(async move {
            let doc = client.document(&format!("doc{w}"));
            let list = client.list(&format!("list{w}"));
            for n in 0..WRITES {
                doc.set(&json!({"n": n})).await.unwrap();
                list.push(&json!({"n": n})).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    // Per object: a creation, then WRITES changes (the list's creation is its own).
    let total = OBJECTS * (2 * WRITES as usize + 1);
    let hooks = r.wait_for(total).await;
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    for h in &hooks {
        let (sid, revision) = match (h.get("DocumentSid"), h.get("ListSid")) {
            (Some(sid), _) => (sid, h.get("DocumentRevision")),
            (_, Some(sid)) => (sid, h.get("ListRevision")),
            _ => panic!("{h:?}"),
        };
        let revision: i64 = revision.unwrap().parse().unwrap();
        let before = last.insert(sid.to_owned(), revision).unwrap_or(-1);
        assert!(
            revision > before,
            "{sid}: revision {revision} after {before} ({})",
            h.event_type()
        );
    }
    // Items arrive in index order too.
    for w in 0..OBJECTS {
        let name = format!("list{w}");
        let indices: Vec<u64> = hooks
            .iter()
            .filter(|h| h.get("ListUniqueName") == Some(name.as_str()))
            .filter_map(|h| h.get("ItemIndex"))
            .map(|i| i.parse().unwrap())
            .collect();
        assert_eq!(indices, (0..WRITES).collect::<Vec<_>>());
    }
}

/// Two nodes of one cluster: every change is posted once, by the node that committed
/// it, whichever node its writer is connected to (each node hears of every change
/// through the cluster's watch, and only the committer posts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_each_change_is_posted_once_by_the_node_that_committed_it() {
    if !syncline_tests::etcd::require_etcd() {
        return;
    }
    let endpoints = [syncline_tests::shared_etcd()];
    let prefix = format!("/hooks-{:016x}", rand::random::<u64>());
    let a = TestServer::start_node(&endpoints, &prefix).await;
    let b = TestServer::start_node(&endpoints, &prefix).await;
    let r = Receiver::start(Mode::Answer).await;
    hook_service(&a.backend().await, &r.url, false).await;
    let on_a = a.client_as("ann").await;
    let on_b = b.client_as("ben").await;
    const WRITES: u64 = 10;
    for n in 0..WRITES {
        on_a.document("shared")
            .set(&json!({"by": "a", "n": n}))
            .await
            .unwrap();
        on_b.document("shared")
            .set(&json!({"by": "b", "n": n}))
            .await
            .unwrap();
    }
    // The first write creates the document (`document_created`), every other one
    // updates it.
    let total = 2 * WRITES as usize;
    let hooks = r.wait_for(total).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hooks_after = r.hooks();
    assert_eq!(
        hooks_after.len(),
        total,
        "no change posted twice: {hooks_after:?}"
    );
    let mut revisions: Vec<i64> = hooks
        .iter()
        .filter_map(|h| h.get("DocumentRevision"))
        .map(|r| r.parse().unwrap())
        .collect();
    revisions.sort();
    revisions.dedup();
    assert_eq!(revisions.len(), total, "one post per revision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_answers_500_once_gets_the_event_again() {
    let s = TestServer::start_with(|o| o.webhooks.backoff = Duration::from_millis(20)).await;
    let r = Receiver::start(Mode::FailFirst).await;
    hook_service(&s.backend().await, &r.url, false).await;
    let alice = s.client_as("alice").await;
    alice
        .document("retried")
        .set(&json!({"x": 1}))
        .await
        .unwrap();
    let hooks = r.wait_for(2).await;
    assert_eq!(hooks[0].params, hooks[1].params, "the same event, again");
    assert_eq!(hooks[0].signature, hooks[1].signature);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(r.hooks().len(), 2, "delivered once it was accepted");
    let service = s.backend().await.service("default").await.unwrap();
    assert_eq!(service.webhooks_dropped, 0);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn timed_writes(client: &Client, name: &str, n: u64) -> Vec<Duration> {
    let doc = client.document(name);
    let mut took = Vec::new();
    for i in 0..n {
        let started = Instant::now();
        doc.set(&json!({"i": i})).await.unwrap();
        took.push(started.elapsed());
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_leaves_write_latency_alone_and_the_overflow_is_counted() {
    let s = TestServer::start_with(|o| {
        o.webhooks.queue_capacity = 8;
        o.webhooks.lanes = 2;
    })
    .await;
    let r = Receiver::start(Mode::Hang).await;
    let backend = s.backend().await;
    let alice = s.client_as("alice").await;
    const N: u64 = 120;

    let without = median(timed_writes(&alice, "plain", N).await);
    hook_service(&backend, &r.url, false).await;
    let with = median(timed_writes(&alice, "hooked", N).await);
    assert!(
        with < without * 3 + Duration::from_millis(20),
        "median write with a stuck receiver {with:?}, without webhooks {without:?}"
    );
    // The receiver got the first event of each lane and holds it; the rest queued
    // behind it, and all but the newest few were dropped.
    r.wait_for(1).await;
    let info = backend.service("default").await.unwrap();
    assert!(
        info.webhooks_dropped >= N - 8,
        "dropped {} of {N}",
        info.webhooks_dropped
    );
    // The REST Service resource shows the count too.
    let out = s.run_python(
        r#"
import os, requests
r = requests.get(os.environ["HTTP_URL"] + "/v1/Services/default",
                 auth=(os.environ["KEY_SID"], os.environ["KEY_SECRET"]), verify=os.environ["CA_FILE"])
r.raise_for_status()
print(r.json()["webhooks_dropped"])
"#,
        &[],
    );
    let rest: u64 = out.trim().parse().expect("a count");
    assert!(rest >= info.webhooks_dropped, "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reachability_follows_identities_connections_debounced_and_only_when_enabled() {
    let s = TestServer::start().await;
    let r = Receiver::start(Mode::Answer).await;
    let backend = s.backend().await;
    hook_service(&backend, &r.url, false).await;
    let service = s.admin.default_service_sid.clone();

    // Flag off: Bob's coming and going sends nothing (his departure, at once without
    // debouncing, is over well before the flag changes).
    s.client_as("bob").await.close();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    backend
        .update_service(
            "default",
            ServiceFlagsPatch {
                reachability_webhooks_enabled: Some(true),
                reachability_debouncing_enabled: Some(true),
                reachability_debouncing_window_ms: Some(1_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let alice = s.client_as("alice").await;
    let connected = r.wait_for(1).await;
    // A second connection, and a reconnect inside the window, change nothing.
    let second = s.client_as("alice").await;
    alice.close();
    second.close();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let back = s.client_as("alice").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(r.hooks().len(), 1, "{:?}", r.hooks());
    back.close();
    let hooks = r.wait_for(2).await;
    let types: Vec<&str> = hooks.iter().map(Hook::event_type).collect();
    assert_eq!(types, ["endpoint_connected", "endpoint_disconnected"]);
    assert_eq!(connected[0].get("Identity"), Some("alice"));
    for h in &hooks {
        assert_eq!(h.get("Identity"), Some("alice"));
        assert_eq!(h.get("ServiceSid"), Some(service.as_str()));
        assert_eq!(h.get("AccountSid"), Some(s.admin.account_sid.as_str()));
    }
    validate_with_twilio(&s, &r.url, &hooks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_auth_token_needs_the_server_stopped_and_the_next_start_signs_with_the_new_one(
) {
    if syncline_tests::etcd_mode() {
        // `syncline auth-token rotate` works on a sled data directory, offline.
        eprintln!(
            "SKIPPED: rotation is offline on a sled data directory (SYNCLINE_TEST_STORE=etcd)"
        );
        return;
    }
    let mut s = TestServer::start().await;
    let old = s
        .admin
        .auth_token
        .clone()
        .expect("an auth token from the first start");
    let dir = s.options.data_dir.clone();
    assert!(
        syncline_server::config::rotate_auth_token(&dir)
            .await
            .is_err(),
        "the running server holds the store"
    );
    s.shutdown().await;
    let new = syncline_server::config::rotate_auth_token(&dir)
        .await
        .expect("rotates offline");
    assert_ne!(new, old);
    let on_disk = syncline_client::AdminConfig::load(&dir.join("admin.json")).unwrap();
    assert_eq!(on_disk.auth_token.as_deref(), Some(new.as_str()));

    s.restart().await;
    assert_eq!(s.admin.auth_token.as_deref(), Some(new.as_str()));
    let r = Receiver::start(Mode::Answer).await;
    hook_service(&s.backend().await, &r.url, false).await;
    s.client_as("alice")
        .await
        .document("d")
        .set(&json!(1))
        .await
        .unwrap();
    let hooks = r.wait_for(1).await;
    validate_with_twilio(&s, &r.url, &hooks);
}
