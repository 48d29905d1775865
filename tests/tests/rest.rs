//! The REST API (Twilio Sync v1) driven by Twilio's own Python helper library, its HTTP
//! client pointed at a real server on 127.0.0.1 (tests/python/twilio_rest.py), with the
//! QUIC side checked here: a QUIC write read over HTTP, HTTP writes and a stream message
//! reaching QUIC subscribers in revision order as `system`, and permissions granted over
//! HTTP holding for token holders over QUIC. Needs `python3` with `twilio` (installed
//! with pip when missing; `.ci/run` installs it up front).

use std::process::Command;

use serde_json::json;
use syncline_client::{Client, ErrorCode, ServiceFlags, SyncEventKind};
use syncline_tests::{ensure_python_libraries, next_event, TestServer};

const SCRIPT: &str = include_str!("../python/twilio_rest.py");

#[tokio::test(flavor = "multi_thread")]
async fn twilios_python_helper_drives_the_rest_api_and_quic_sees_the_same_objects() {
    ensure_python_libraries();
    let s = TestServer::start().await;
    let http_url = s
        .admin
        .http_url
        .clone()
        .expect("the test server serves HTTPS");
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

    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .env("HTTP_URL", &http_url)
        .env("CA_FILE", &s.admin.ca_file)
        .env("KEY_SID", &s.admin.api_key_sid)
        .env("KEY_SECRET", &s.admin.api_key_secret)
        .env("ACCOUNT_SID", &s.admin.account_sid)
        .env("SERVICE_SID", &s.admin.default_service_sid)
        .env("ACL_SERVICE_SID", &acl.sid)
        .env("ALICE_TOKEN", token("alice"))
        .env("EVE_TOKEN", token("eve"))
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the script failed after:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
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
        .set("k", &json!({"by": "alice"}), Default::default())
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
    let out = Command::new("python3")
        .args(["-c", BURST])
        .env("HTTP_URL", s.admin.http_url.clone().expect("HTTPS"))
        .env("CA_FILE", &s.admin.ca_file)
        .env("KEY_SID", &s.admin.api_key_sid)
        .env("KEY_SECRET", &s.admin.api_key_secret)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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
    let out = Command::new("python3")
        .args(["-c", SLOW_CLIENTS])
        .env("HTTP_URL", s.admin.http_url.clone().expect("HTTPS"))
        .env("CA_FILE", &s.admin.ca_file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The server is still fine.
    s.backend().await.ping().await.unwrap();
}
