//! Access tokens against a real server: every refused shape of token gets its typed
//! error and a closed connection, the server stays healthy, and live connections end
//! at `exp` + 60 s of clock skew (the same instant Hello starts refusing the token)
//! unless the token is refreshed.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use syncline_client::{AdminConfig, Client, ErrorCode};
use syncline_proto::{close_code, Credential, Request};
use syncline_tests::{RawConnection, TestServer, WAIT};

fn now() -> i64 {
    syncline_client::token::now_s() as i64
}

fn claims(admin: &AdminConfig) -> Value {
    json!({
        "jti": format!("{}-{}", admin.api_key_sid, now()),
        "iss": admin.api_key_sid,
        "sub": admin.account_sid,
        "exp": now() + 3600,
        "grants": {"identity": "alice", "data_sync": {"service_sid": admin.default_service_sid}},
    })
}

fn sign(alg: Algorithm, claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A token whose header says `alg` but which is HMAC-SHA256-signed with `secret`: the
/// classic algorithm-confusion forgery.
fn forged(header: Value, claims: &Value, secret: &str) -> String {
    let msg = format!("{}.{}", b64(&header), b64(claims));
    let sig = jsonwebtoken::crypto::sign(
        msg.as_bytes(),
        &EncodingKey::from_secret(secret.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{msg}.{sig}")
}

fn with(mut v: Value, path: &[&str], new: Value) -> Value {
    let mut cur = &mut v;
    for p in &path[..path.len() - 1] {
        cur = &mut cur[*p];
    }
    cur[path[path.len() - 1]] = new;
    v
}

async fn refused(s: &TestServer, token: &str) -> ErrorCode {
    match Client::connect(s.token_config(token)).await {
        Ok(_) => panic!("token was accepted"),
        Err(e) => e.code(),
    }
}

#[tokio::test]
async fn the_refusal_matrix() {
    let s = TestServer::start().await;
    let a = &s.admin;
    let secret = a.api_key_secret.as_str();
    let good = claims(a);
    let good_token = sign(Algorithm::HS256, &good, secret);
    let tampered = {
        let parts: Vec<&str> = good_token.split('.').collect();
        let evil = with(good.clone(), &["grants", "identity"], json!("mallory"));
        format!("{}.{}.{}", parts[0], b64(&evil), parts[2])
    };
    let cases: Vec<(&str, String, ErrorCode)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&good)
            ),
            ErrorCode::Unauthorized,
        ),
        (
            "HS512",
            sign(Algorithm::HS512, &good, secret),
            ErrorCode::Unauthorized,
        ),
        (
            "RS256 header, HMAC signature (key confusion)",
            forged(json!({"alg": "RS256", "typ": "JWT"}), &good, secret),
            ErrorCode::Unauthorized,
        ),
        (
            "wrong secret",
            sign(Algorithm::HS256, &good, "not-the-secret"),
            ErrorCode::Unauthorized,
        ),
        ("tampered claims", tampered, ErrorCode::Unauthorized),
        (
            "expired",
            sign(
                Algorithm::HS256,
                &with(good.clone(), &["exp"], json!(now() - 600)),
                secret,
            ),
            ErrorCode::TokenExpired,
        ),
        (
            "not yet valid",
            sign(
                Algorithm::HS256,
                &with(good.clone(), &["nbf"], json!(now() + 3600)),
                secret,
            ),
            ErrorCode::Unauthorized,
        ),
        (
            "lifetime over 24 h",
            sign(
                Algorithm::HS256,
                &with(good.clone(), &["exp"], json!(now() + 25 * 3600)),
                secret,
            ),
            ErrorCode::Unauthorized,
        ),
        (
            "unknown key (iss)",
            sign(
                Algorithm::HS256,
                &with(
                    good.clone(),
                    &["iss"],
                    json!("SK00000000000000000000000000000000"),
                ),
                secret,
            ),
            ErrorCode::Unauthorized,
        ),
        (
            "kid differs from iss",
            forged(
                json!({"alg": "HS256", "kid": "SKffffffffffffffffffffffffffffffff"}),
                &good,
                secret,
            ),
            ErrorCode::Unauthorized,
        ),
        (
            "another account (sub)",
            sign(
                Algorithm::HS256,
                &with(
                    good.clone(),
                    &["sub"],
                    json!("AC00000000000000000000000000000000"),
                ),
                secret,
            ),
            ErrorCode::Unauthorized,
        ),
        (
            "unknown service",
            sign(
                Algorithm::HS256,
                &with(
                    good.clone(),
                    &["grants", "data_sync", "service_sid"],
                    json!("IS00000000000000000000000000000000"),
                ),
                secret,
            ),
            ErrorCode::Unauthorized,
        ),
        (
            "chat grant only",
            sign(
                Algorithm::HS256,
                &with(
                    good.clone(),
                    &["grants"],
                    json!({"identity": "alice", "chat": {"service_sid": "IS1"}}),
                ),
                secret,
            ),
            ErrorCode::Unauthorized,
        ),
        (
            "empty identity",
            sign(
                Algorithm::HS256,
                &with(good.clone(), &["grants", "identity"], json!("")),
                secret,
            ),
            ErrorCode::Unauthorized,
        ),
        (
            "identity over 256 chars",
            sign(
                Algorithm::HS256,
                &with(
                    good.clone(),
                    &["grants", "identity"],
                    json!("x".repeat(257)),
                ),
                secret,
            ),
            ErrorCode::Unauthorized,
        ),
        ("malformed", "not.a.jwt".to_owned(), ErrorCode::Unauthorized),
        ("garbage", "%%%".to_owned(), ErrorCode::Unauthorized),
        (
            "oversized",
            sign(
                Algorithm::HS256,
                &with(good.clone(), &["pad"], json!("x".repeat(10_000))),
                secret,
            ),
            ErrorCode::Unauthorized,
        ),
    ];
    let backend = s.backend().await;
    backend
        .document("secret")
        .set(&json!({"v": 1}))
        .await
        .unwrap();
    for (name, token, want) in cases {
        assert_eq!(refused(&s, &token).await, want, "case: {name}");
        // Nothing changed, and the server still serves.
        let d = backend.document("secret").get().await.unwrap();
        assert_eq!((d.revision, d.data), (0, json!({"v": 1})), "case: {name}");
    }
    // The good token, and a Twilio-style header (cty), are accepted.
    let c = Client::connect(s.token_config(&good_token)).await.unwrap();
    assert_eq!(c.welcome().identity.as_deref(), Some("alice"));
    let mut twilio = Header::new(Algorithm::HS256);
    twilio.cty = Some("twilio-fpa;v=1".into());
    let t =
        jsonwebtoken::encode(&twilio, &good, &EncodingKey::from_secret(secret.as_bytes())).unwrap();
    Client::connect(s.token_config(&t))
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_refused_hello_closes_the_connection() {
    let s = TestServer::start().await;
    let mut raw = RawConnection::open(&s.admin).await;
    let r = raw
        .call(
            1,
            Request::Hello {
                credential: Credential::Token("bad".into()),
                service: None,
            },
        )
        .await;
    assert_eq!(r.result.unwrap_err().code, ErrorCode::Unauthorized);
    let closed = tokio::time::timeout(WAIT, raw.conn.closed()).await.unwrap();
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, close_code::UNAUTHORIZED.into())
        }
        other => panic!("unexpected close {other:?}"),
    }
}

#[tokio::test]
async fn requests_before_hello_are_refused_and_close() {
    let s = TestServer::start().await;
    let mut raw = RawConnection::open(&s.admin).await;
    let r = raw
        .call(
            1,
            Request::DocGet {
                document: "x".into(),
            },
        )
        .await;
    assert_eq!(r.result.unwrap_err().code, ErrorCode::Unauthorized);
    tokio::time::timeout(WAIT, raw.conn.closed()).await.unwrap();
}

#[tokio::test]
async fn wrong_api_key_secret_is_unauthorized() {
    let s = TestServer::start().await;
    let mut admin = s.admin.clone();
    admin.api_key_secret = "wrong".into();
    let config = syncline_client::ClientConfig::from_admin(&admin).unwrap();
    let err = Client::connect(config).await.err().expect("refused");
    assert_eq!(err.code(), ErrorCode::Unauthorized);
}

#[tokio::test]
async fn a_token_cannot_choose_another_service() {
    let s = TestServer::start().await;
    let config = s
        .token_config(&s.token("alice", 60))
        .service("IS00000000000000000000000000000000");
    let err = Client::connect(config).await.err().expect("refused");
    assert_eq!(err.code(), ErrorCode::Forbidden);
}

/// A token whose `exp` is `ago` seconds in the past (negative: in the future).
fn expired_since(s: &TestServer, ago: i64) -> (String, i64) {
    let exp = now() - ago;
    let claims = with(claims(&s.admin), &["exp"], json!(exp));
    (
        sign(Algorithm::HS256, &claims, &s.admin.api_key_secret),
        exp,
    )
}

#[tokio::test]
async fn the_connection_ends_at_exp_plus_the_skew_with_token_expired() {
    let s = TestServer::start().await;
    // exp + 60 s of skew is 2..3 s from now.
    let (token, exp) = expired_since(&s, 58);
    let c = Client::connect(s.token_config(&token)).await.unwrap();
    assert_eq!(c.welcome().token_expires_at, Some(exp as u64));
    c.ping().await.unwrap();
    let why = tokio::time::timeout(WAIT, c.closed()).await.unwrap();
    assert_eq!(why.code(), ErrorCode::TokenExpired);
    assert!(now() > exp + 60, "closed only once exp + skew has passed");
    assert_eq!(c.ping().await.unwrap_err().code(), ErrorCode::TokenExpired);
}

#[tokio::test]
async fn a_token_past_exp_within_the_skew_works_every_time() {
    let s = TestServer::start().await;
    // Before, Hello accepted it and the connection was closed at once (at exp): the same
    // command succeeded, or failed with TokenExpired or "connection lost".
    tokio::time::timeout(WAIT, async {
        for round in 0..5 {
            let (token, exp) = expired_since(&s, 30);
            let c = Client::connect(s.token_config(&token))
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(c.welcome().token_expires_at, Some(exp as u64));
            tokio::time::sleep(Duration::from_millis(200)).await;
            c.ping()
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            c.document("skew")
                .set(&json!({ "round": round }))
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
    })
    .await
    .expect("rounds in time");
}

#[tokio::test]
async fn a_token_past_exp_plus_the_skew_is_refused_at_hello() {
    let s = TestServer::start().await;
    let (token, _) = expired_since(&s, 61);
    assert_eq!(refused(&s, &token).await, ErrorCode::TokenExpired);
    // As the answer to Hello itself, and the connection is closed with the expiry code.
    let mut raw = RawConnection::open(&s.admin).await;
    let r = raw
        .call(
            5,
            Request::Hello {
                credential: Credential::Token(token),
                service: None,
            },
        )
        .await;
    assert_eq!(r.id, 5);
    assert_eq!(r.result.unwrap_err().code, ErrorCode::TokenExpired);
    match tokio::time::timeout(WAIT, raw.conn.closed()).await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, close_code::TOKEN_EXPIRED.into())
        }
        other => panic!("unexpected close {other:?}"),
    }
}

#[tokio::test]
async fn update_token_within_the_skew_keeps_the_connection_until_exp_plus_the_skew() {
    let s = TestServer::start().await;
    let c = s.client_as("alice").await;
    let (token, exp) = expired_since(&s, 57);
    assert_eq!(c.update_token(&token).await.unwrap(), exp as u64);
    // Open for exp + 60 s (3..4 s from now), then closed with TokenExpired.
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.ping().await.unwrap();
    let why = tokio::time::timeout(WAIT, c.closed()).await.unwrap();
    assert_eq!(why.code(), ErrorCode::TokenExpired);
    assert!(now() > exp + 60);
    let (token, _) = expired_since(&s, 61);
    let c = s.client_as("alice").await;
    assert_eq!(
        c.update_token(&token).await.unwrap_err().code(),
        ErrorCode::TokenExpired
    );
}

#[tokio::test]
async fn requests_in_flight_when_the_token_expires_get_token_expired() {
    let s = TestServer::start_with(|o| {
        o.rate.per_second = 100_000.0;
        o.rate.burst = 100_000.0;
    })
    .await;
    let (token, _) = expired_since(&s, 58);
    let c = Client::connect(s.token_config(&token)).await.unwrap();
    // Keep requests in flight across the close; each caller stops at its first error.
    let mut callers = Vec::new();
    for _ in 0..8 {
        let c = c.clone();
        callers.push(tokio::spawn(async move {
            let mut ok = 0u32;
            loop {
                match c.ping().await {
                    Ok(()) => ok += 1,
                    Err(e) => return (ok, e.code(), e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }
    for caller in callers {
        let (ok, code, message) = tokio::time::timeout(WAIT, caller)
            .await
            .expect("every caller gets an answer in time")
            .unwrap();
        assert!(ok > 0, "requests worked until the expiry");
        assert_eq!(code, ErrorCode::TokenExpired, "{message}");
    }
}

#[tokio::test]
async fn update_token_keeps_the_connection_and_its_subscriptions() {
    let s = TestServer::start().await;
    let backend = s.backend().await;
    backend.document("live").set(&json!(0)).await.unwrap();
    let c = Client::connect(s.token_config(&s.token("alice", 2)))
        .await
        .unwrap();
    let mut sub = c.document("live").subscribe().await.unwrap();
    syncline_tests::next_event(&mut sub).await;
    // Another identity's token is refused, and changes nothing.
    let err = c.update_token(&s.token("bob", 3600)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unauthorized);
    let exp = c.update_token(&s.token("alice", 3600)).await.unwrap();
    assert!(exp > syncline_client::token::now_s() + 3000);
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.ping().await.unwrap();
    backend.document("live").set(&json!(1)).await.unwrap();
    assert_eq!(syncline_tests::next_event(&mut sub).await.revision, 1);
}

#[tokio::test]
async fn the_client_says_when_the_token_is_about_to_expire_and_when_it_has() {
    use syncline_client::TokenState;
    let s = TestServer::start().await;
    // 182 s: valid now, about to expire (3 minutes left) in 2 s.
    let c = Client::connect(s.token_config(&s.token("alice", 182)))
        .await
        .unwrap();
    let mut events = c.token_events();
    assert_eq!(*events.borrow_and_update(), TokenState::Valid);
    tokio::time::timeout(WAIT, events.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*events.borrow_and_update(), TokenState::AboutToExpire);
    // Refreshing makes it valid again, and the connection carries on.
    c.update_token(&s.token("alice", 3600)).await.unwrap();
    tokio::time::timeout(WAIT, events.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*events.borrow_and_update(), TokenState::Valid);
    // A 2 s token goes about-to-expire at once, then expired.
    let short = Client::connect(s.token_config(&s.token("bob", 2)))
        .await
        .unwrap();
    let mut events = short.token_events();
    tokio::time::timeout(WAIT, events.wait_for(|s| *s == TokenState::Expired))
        .await
        .unwrap()
        .unwrap();
    // API-key connections have no token to expire.
    assert_eq!(
        *s.backend().await.token_events().borrow(),
        TokenState::Valid
    );
}

/// Between a token's expiry and its connection's close (the server first delivers what
/// it had queued, for up to 2 s, to a client that here reads no events) the connection
/// does nothing more: a request sent then is refused with `TokenExpired`.
#[tokio::test]
async fn a_request_after_the_token_expired_is_refused_while_the_connection_drains() {
    let s = TestServer::start().await;
    let backend = s.backend().await;
    backend.document("big").set(&json!({})).await.unwrap();
    // Accepted through second `last` (its `exp` plus the server's clock skew), or the
    // next one if the clock ticked over while it was minted.
    let last = syncline_client::token::now_s() + 2;
    let token = s.token_closing_in("alice", 2);
    let mut raw = RawConnection::authenticated(&s.admin, Credential::Token(token)).await;
    let subscribe = Request::Subscribe {
        sub_id: 1,
        object: "big".into(),
        since: None,
        window: None,
    };
    assert!(raw.call(2, subscribe).await.result.is_ok());
    // More than the event stream's flow-control window, unread: the server's delivery
    // of it stalls, so the session's end waits its full grace.
    let filler = "x".repeat(15 * 1024);
    for i in 0..200 {
        backend
            .document("big")
            .set(&json!({ "i": i, "filler": filler }))
            .await
            .unwrap();
    }
    // Past the token's last accepted second, either way: the session's end has begun
    // and waits up to 2 s for the stalled delivery (here 0.2-1.2 s into it).
    while syncline_client::token::now_s() <= last + 1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = raw.call(3, Request::Ping).await;
    assert_eq!(answer.id, 3, "the answer to the request, not a notice");
    let refused = match answer.result {
        Err(e) => e.code,
        Ok(r) => panic!("answered {r:?} after the token expired"),
    };
    assert_eq!(refused, ErrorCode::TokenExpired);
}
