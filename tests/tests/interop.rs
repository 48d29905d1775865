//! Tokens minted by other people's libraries: Twilio's Python helper (`AccessToken` +
//! `SyncGrant`, the format Syncline adopts) and plain PyJWT per the documented claims are
//! accepted with the right identity and service; a Twilio token with only a chat grant
//! is refused. Needs `python3` with `twilio` and `PyJWT`; the test installs them with pip
//! when they are missing (`.ci/run` installs them up front).

use std::process::Command;

use syncline_client::{Client, ErrorCode};
use syncline_tests::{ensure_python_libraries, TestServer};

const MINT: &str = r#"
import os, sys, time, jwt
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import SyncGrant, ChatGrant
account, key, secret, service = (os.environ[k] for k in ("ACCOUNT", "KEY", "SECRET", "SERVICE"))
which = sys.argv[1]
if which == "twilio-sync":
    t = AccessToken(account, key, secret, identity="alice@example.com", ttl=3600)
    t.add_grant(SyncGrant(service_sid=service))
    print(t.to_jwt())
elif which == "twilio-chat-only":
    t = AccessToken(account, key, secret, identity="alice", ttl=3600)
    t.add_grant(ChatGrant(service_sid="IS" + "0" * 32))
    print(t.to_jwt())
elif which == "pyjwt":
    now = int(time.time())
    claims = {"jti": f"{key}-{now}", "iss": key, "sub": account, "nbf": now, "exp": now + 600,
              "grants": {"identity": "bob", "data_sync": {"service_sid": service}}}
    print(jwt.encode(claims, secret, algorithm="HS256", headers={"cty": "twilio-fpa;v=1"}))
"#;

fn mint(s: &TestServer, which: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", MINT, which])
        .env("ACCOUNT", &s.admin.account_sid)
        .env("KEY", &s.admin.api_key_sid)
        .env("SECRET", &s.admin.api_key_secret)
        .env("SERVICE", &s.admin.default_service_sid)
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "minting failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn tokens_from_twilio_and_pyjwt_work_and_other_grants_do_not() {
    ensure_python_libraries();
    let s = TestServer::start().await;

    let twilio = Client::connect(s.token_config(&mint(&s, "twilio-sync")))
        .await
        .unwrap();
    assert_eq!(
        twilio.welcome().identity.as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(twilio.welcome().service_sid, s.admin.default_service_sid);
    let d = twilio
        .document("hello")
        .set(&serde_json::json!(1))
        .await
        .unwrap();
    assert_eq!(d.object_created_by, "alice@example.com");

    let pyjwt = Client::connect(s.token_config(&mint(&s, "pyjwt")))
        .await
        .unwrap();
    assert_eq!(pyjwt.welcome().identity.as_deref(), Some("bob"));
    assert_eq!(pyjwt.document("hello").get().await.unwrap().revision, 0);

    let chat = Client::connect(s.token_config(&mint(&s, "twilio-chat-only"))).await;
    assert_eq!(chat.err().expect("refused").code(), ErrorCode::Unauthorized);
}
