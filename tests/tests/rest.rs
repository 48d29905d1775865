//! The REST API (Twilio Sync v1) driven by Twilio's own Python helper library, its HTTP
//! client pointed at a real server on 127.0.0.1 (tests/python/twilio_rest.py), with the
//! QUIC side checked here: a QUIC write read over HTTP, HTTP writes and a stream message
//! reaching QUIC subscribers in revision order as `system`, and permissions granted over
//! HTTP holding for token holders over QUIC. Needs `python3` with `twilio` (installed
//! with pip when missing; `.ci/run` installs it up front).

use serde_json::json;
use std::time::Duration;
use syncline_client::{Client, ErrorCode, ServiceFlags, SyncEventKind};

use syncline_tests::{assert_no_event, ensure_python_libraries, next_event, TestServer};

const SCRIPT: &str = include_str!("../python/twilio_rest.py");

#[tokio::test(flavor = "multi_thread")]
async fn twilios_python_helper_drives_the_rest_api_and_quic_sees_the_same_objects() {
    ensure_python_libraries();
    let s = TestServer::start().await;
    let backend = s.backend().await;

    // What the script expects to find, and the QUIC subscribers that watch it work.
    backend
        .document("from-quic")
        .set(&json!({"written": "over QUIC"}))
        .await
        .unwrap();
    backend
        .document("py-watched")
        .set(&json!({"step": 0}))
        .await
        .unwrap();
    let mut watched = backend.document("py-watched").subscribe().await.unwrap();
    next_event(&mut watched).await;
    backend.stream("py-chat").create(None).await.unwrap();
    let mut chat = backend.stream("py-chat").subscribe().await.unwrap();
    next_event(&mut chat).await;
    let acl = backend
        .create_service(
            Some("py-acl"),
            ServiceFlags {
                acl_enabled: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let token = |identity: &str| {
        syncline_client::token::mint(
            &s.admin.api_key_sid,
            &s.admin.api_key_secret,
            &s.admin.account_sid,
            &acl.sid,
            identity,
            600,
            syncline_client::token::now_s(),
        )
    };

    let stdout = s.run_python(
        SCRIPT,
        &[
            ("ACL_SERVICE_SID", acl.sid.clone()),
            ("ALICE_TOKEN", token("alice")),
            ("EVE_TOKEN", token("eve")),
        ],
    );
    assert!(stdout.contains("all ok"), "{stdout}");

    // HTTP writes reached the QUIC subscriber like any write: in order, by `system`.
    for (revision, step) in [(1, 1), (2, 2)] {
        let e = next_event(&mut watched).await;
        assert_eq!((e.revision, e.actor.as_str()), (revision, "system"));
        match e.kind {
            SyncEventKind::DocumentUpdated { data, .. } => assert_eq!(data, json!({"step": step})),
            other => panic!("unexpected {other:?}"),
        }
    }
    // The TTL-only update that followed sent nothing: the data did not change.
    assert_no_event(&mut watched, Duration::from_millis(300)).await;
    let message = next_event(&mut chat).await;
    match message.kind {
        SyncEventKind::MessagePublished { data, .. } => assert_eq!(data, json!({"hello": "quic"})),
        other => panic!("unexpected {other:?}"),
    }

    // Permissions granted over HTTP hold over QUIC.
    let alice = Client::connect(s.token_config(&token("alice")))
        .await
        .unwrap();
    assert_eq!(
        alice.document("secret").get().await.unwrap().data,
        json!({"s": 1})
    );
    let refused = alice
        .document("secret")
        .set(&json!({"x": 1}))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Forbidden);
    assert_eq!(
        alice.list("secret-list").get(0).await.unwrap().data,
        json!({"i": 0})
    );
    alice
        .map("secret-map")
        .set("k", &json!({"by": "alice"}))
        .await
        .unwrap();
    let eve = Client::connect(s.token_config(&token("eve")))
        .await
        .unwrap();
    let refused = eve.document("secret").get().await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Forbidden);
}

const BURST: &str = r#"
import os, requests
s = requests.Session()
s.verify, s.trust_env = os.environ["CA_FILE"], False
auth = (os.environ["KEY_SID"], os.environ["KEY_SECRET"])
url = os.environ["HTTP_URL"] + "/v1/Services/default/Documents"
answers = [s.get(url, auth=auth) for _ in range(8)]
limited = [r for r in answers if r.status_code == 429]
assert len(limited) >= 3, [r.status_code for r in answers]
for r in limited:
    assert r.headers["Retry-After"] == "1" and r.json()["code"] == 54009, r.text
assert answers[0].status_code == 200
print("ok")
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_over_its_rate_gets_429_with_retry_after() {
    ensure_python_libraries();
    let s = TestServer::start_with(|o| {
        o.rate.per_second = 1.0;
        o.rate.burst = 3.0;
    })
    .await;
    let stdout = s.run_python(BURST, &[]);
    assert!(stdout.contains("ok"), "{stdout}");
}

const SLOW_CLIENTS: &str = r#"
import os, socket, ssl, threading, time
host, port = os.environ["HTTP_URL"][len("https://"):].rsplit(":", 1)
ctx = ssl.create_default_context(cafile=os.environ["CA_FILE"])
results = {}
def hold(label, payload):
    s = ctx.wrap_socket(socket.create_connection((host, int(port))), server_hostname=host)
    s.sendall(payload)
    s.settimeout(30)
    start = time.time()
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    results[label] = time.time() - start
cases = {
    "silent": b"",
    "half a header": b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
    "idle after a request": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "a body that never comes": b"POST /v1/Services HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
}
threads = [threading.Thread(target=hold, args=c) for c in cases.items()]
[t.start() for t in threads]
[t.join() for t in threads]
for label, took in results.items():
    assert took < 25, f"{label}: the server held the connection {took:.1f} s"
assert len(results) == len(cases), results
print("ok", results)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn slow_or_silent_https_clients_are_cut_off_by_the_timeouts() {
    let s = TestServer::start().await;
    let stdout = s.run_python(SLOW_CLIENTS, &[]);
    assert!(stdout.starts_with("ok"), "{stdout}");
    // The server is still fine.
    s.backend().await.ping().await.unwrap();
}

const ONE_TOKEN_EACH: &str = r#"
import os, requests
s = requests.Session()
s.verify, s.trust_env = os.environ["CA_FILE"], False
auth = (os.environ["KEY_SID"], os.environ["KEY_SECRET"])
lists = os.environ["HTTP_URL"] + "/v1/Services/default/Lists"
r = s.post(lists, auth=auth, data={"UniqueName": "counted"})
assert r.status_code == 201, r.text
# A listing runs two commands (the items, and the list's sid for the URLs) but is one
# request: with a burst of 4, the create and three listings fit, the fifth does not.
codes = [s.get(lists + "/counted/Items", auth=auth).status_code for _ in range(4)]
assert codes == [200, 200, 200, 429], codes
print("ok")
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_rest_request_takes_one_rate_limit_token_however_many_commands_it_runs() {
    ensure_python_libraries();
    let s = TestServer::start_with(|o| {
        o.rate.per_second = 0.01;
        o.rate.burst = 4.0;
    })
    .await;
    let stdout = s.run_python(ONE_TOKEN_EACH, &[]);
    assert!(stdout.contains("ok"), "{stdout}");
}
