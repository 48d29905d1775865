//! Watches over HTTP (server-sent events) are core sessions like QUIC connections: they
//! end when the key that signed their token is revoked, when the token expires, and when
//! their service is deleted, and nothing written after that reaches them. And the REST
//! edge refuses the input QUIC refuses, with the same error (a 400 for what QUIC calls
//! `InvalidArgument`). Driven by a raw HTTPS client, so what is checked is the bytes a
//! curl user sees.

use std::time::Duration;

use base64::Engine;
use serde_json::json;
use syncline_proto::{ErrorCode, ServiceFlags};
use syncline_tests::{https_connect, https_request, TestServer, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

fn basic(s: &TestServer) -> String {
    let pair = format!("{}:{}", s.admin.api_key_sid, s.admin.api_key_secret);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// An open event stream and everything it has carried so far.
struct Watch {
    tls: TlsStream<TcpStream>,
    seen: String,
    ended: bool,
}

impl Watch {
    async fn open(s: &TestServer, path: &str, authorization: &str) -> Watch {
        let mut tls = https_connect(&s.admin).await;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {authorization}\r\nAccept: text/event-stream\r\n\r\n"
        );
        tls.write_all(request.as_bytes())
            .await
            .expect("request sent");
        let mut w = Watch {
            tls,
            seen: String::new(),
            ended: false,
        };
        w.until(|seen| seen.contains("event: snapshot")).await;
        assert!(w.seen.starts_with("HTTP/1.1 200"), "{}", w.seen);
        w
    }

    /// Reads until `done` holds for what was seen, or the stream ends; fails after `WAIT`.
    async fn until(&mut self, done: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut buf = vec![0; 16 * 1024];
        while !done(&self.seen) && !self.ended {
            let read = tokio::time::timeout_at(deadline, self.tls.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("nothing more in time; so far:\n{}", self.seen));
            match read {
                Ok(0) | Err(_) => self.ended = true,
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
            // The last chunk of a chunked body: the server ended the stream.
            if self.seen.ends_with("\r\n0\r\n\r\n") {
                self.ended = true;
            }
        }
    }

    /// Writes `value` to document `d` and checks that this ended stream never shows it.
    async fn misses_a_later_write(&mut self, backend: &syncline_client::Client, value: &str) {
        backend
            .document("d")
            .set(&json!({ "v": value }))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.until(|_| false).await;
        assert!(!self.seen.contains(value), "{}", self.seen);
    }

    /// Waits for the stream to end, and says how long that took.
    async fn end(&mut self) -> Duration {
        let started = tokio::time::Instant::now();
        self.until(|_| false).await;
        started.elapsed()
    }
}

/// One request as the backend (HTTP Basic with the admin key).
async fn request(s: &TestServer, method: &str, path: &str, body: &str) -> (u16, String) {
    https_request(&s.admin, method, path, Some(&basic(s)), body).await
}

#[tokio::test]
async fn an_http_event_stream_ends_within_two_seconds_of_its_keys_revocation_and_gets_nothing_after(
) {
    let s = TestServer::start().await;
    let backend = s.backend().await;
    backend
        .document("d")
        .set(&json!({"v": "before"}))
        .await
        .unwrap();
    let key = backend.create_key(Some("second")).await.unwrap();
    let token = syncline_client::token::mint(
        &key.sid,
        key.secret.as_deref().expect("a new key shows its secret"),
        &s.admin.account_sid,
        &s.admin.default_service_sid,
        "alice",
        3600,
        syncline_client::token::now_s(),
    );
    let path = format!(
        "/v1/Services/{}/Documents/d/Events",
        s.admin.default_service_sid
    );
    let mut watch = Watch::open(&s, &path, &format!("Bearer {token}")).await;

    backend.revoke_key(&key.sid).await.unwrap();
    let took = watch.end().await;
    assert!(took < Duration::from_secs(2), "ended after {took:?}");
    assert!(
        watch.seen.contains("event: end") && watch.seen.contains(ErrorCode::Unauthorized.as_str()),
        "the stream says why it ended: {}",
        watch.seen
    );
    watch
        .misses_a_later_write(&backend, "after the revocation")
        .await;
}

#[tokio::test]
async fn an_http_event_stream_on_a_short_token_ends_when_the_token_does() {
    let s = TestServer::start().await;
    let backend = s.backend().await;
    backend.document("d").set(&json!({"v": 1})).await.unwrap();
    // Accepted for 3 more seconds (its `exp` plus the clock skew the server allows).
    let token = s.token_closing_in("alice", 3);
    let path = format!(
        "/v1/Services/{}/Documents/d/Events",
        s.admin.default_service_sid
    );
    let mut watch = Watch::open(&s, &path, &format!("Bearer {token}")).await;
    let took = watch.end().await;
    assert!(
        took <= Duration::from_secs(5),
        "the stream outlived its token: {took:?}"
    );
    assert!(
        watch.seen.contains(ErrorCode::TokenExpired.as_str()),
        "{}",
        watch.seen
    );
    watch
        .misses_a_later_write(&backend, "after the expiry")
        .await;
}

#[tokio::test]
async fn an_http_event_stream_of_a_deleted_service_hears_its_object_go_and_ends() {
    let s = TestServer::start().await;
    let backend = s.backend().await;
    let svc = backend
        .create_service(Some("doomed"), ServiceFlags::default())
        .await
        .unwrap();
    let admin_in_svc = s.backend_in(&svc.sid).await;
    admin_in_svc
        .document("d")
        .set(&json!({"v": 1}))
        .await
        .unwrap();
    let path = format!("/v1/Services/{}/Documents/d/Events", svc.sid);
    let mut watch = Watch::open(&s, &path, &basic(&s)).await;
    backend.delete_service(&svc.sid).await.unwrap();
    let took = watch.end().await;
    assert!(took < Duration::from_secs(3), "ended after {took:?}");
    // The object's removal comes first and ends the stream; the session's own end
    // (naming the deletion) follows when it is queued in time, never before.
    let removed = watch.seen.find("event: object_removed");
    assert!(removed.is_some(), "{}", watch.seen);
    if let Some(end) = watch.seen.find("event: end") {
        assert!(removed < Some(end), "{}", watch.seen);
        assert!(
            watch.seen.contains("the service was deleted"),
            "{}",
            watch.seen
        );
    }
}

#[tokio::test]
async fn an_http_event_stream_ends_when_its_watcher_loses_read_or_its_object_goes() {
    let s = TestServer::start().await;
    let backend = s.backend().await;
    let flags = ServiceFlags {
        acl_enabled: true,
        ..ServiceFlags::default()
    };
    let svc = backend
        .create_service(Some("guarded"), flags)
        .await
        .unwrap();
    let in_svc = s.backend_in(&svc.sid).await;
    for name in ["granted", "doomed"] {
        in_svc.document(name).set(&json!({"v": 0})).await.unwrap();
        let read = syncline_proto::Rights {
            read: true,
            write: false,
            manage: false,
        };
        in_svc.grant(name, "alice", read).await.unwrap();
    }
    let token = syncline_client::token::mint(
        &s.admin.api_key_sid,
        &s.admin.api_key_secret,
        &s.admin.account_sid,
        &svc.sid,
        "alice",
        3600,
        syncline_client::token::now_s(),
    );
    let bearer = format!("Bearer {token}");

    let path = format!("/v1/Services/{}/Documents/granted/Events", svc.sid);
    let mut watch = Watch::open(&s, &path, &bearer).await;
    in_svc.revoke("granted", "alice").await.unwrap();
    watch.end().await;
    assert!(watch.ended, "the stream ended: {}", watch.seen);
    assert!(
        watch.seen.contains("event: subscription_ended"),
        "{}",
        watch.seen
    );

    let path = format!("/v1/Services/{}/Documents/doomed/Events", svc.sid);
    let mut watch = Watch::open(&s, &path, &bearer).await;
    in_svc.document("doomed").delete().await.unwrap();
    watch.end().await;
    assert!(watch.ended, "the stream ended: {}", watch.seen);
    assert!(
        watch.seen.contains("event: object_removed"),
        "{}",
        watch.seen
    );
}

#[tokio::test]
async fn rest_refuses_the_identities_and_keys_quic_refuses_with_a_400() {
    let s = TestServer::start().await;
    let backend = s.backend().await;
    backend.document("d").set(&json!({})).await.unwrap();
    backend.map("m").set("k", &json!(1)).await.unwrap();
    let service = &s.admin.default_service_sid;
    let long_identity = "x".repeat(300);

    // What QUIC answers for the same identity.
    let quic = backend.revoke("d", &long_identity).await.unwrap_err();
    assert!(
        format!("{quic:?}").contains("InvalidArgument"),
        "QUIC: {quic:?}"
    );

    let (status, body) = request(
        &s,
        "DELETE",
        &format!("/v1/Services/{service}/Documents/d/Permissions/{long_identity}"),
        "",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = request(
        &s,
        "POST",
        &format!("/v1/Services/{service}/Documents/d/Permissions/{long_identity}"),
        "Read=true&Write=false&Manage=false",
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // A map key longer than keys may be (QUIC: `TooLarge`), and an empty one
    // (`InvalidArgument`).
    for (key, quic_code, http_status) in [
        ("k".repeat(400), ErrorCode::TooLarge, 413),
        (String::new(), ErrorCode::InvalidArgument, 400),
    ] {
        let quic = backend.map("m").set(&key, &json!(1)).await.unwrap_err();
        assert!(
            format!("{quic:?}").contains(quic_code.as_str()),
            "QUIC, key of {} chars: {quic:?}",
            key.len()
        );
        let (status, body) = request(
            &s,
            "POST",
            &format!("/v1/Services/{service}/Maps/m/Items"),
            &format!("Key={key}&Data=%7B%7D"),
        )
        .await;
        assert_eq!(status, http_status, "key of {} chars: {body}", key.len());
    }
    // Still healthy: a good request goes through.
    let (status, body) = request(
        &s,
        "POST",
        &format!("/v1/Services/{service}/Maps/m/Items"),
        "Key=good&Data=%7B%7D",
    )
    .await;
    assert_eq!(status, 201, "{body}");
}
