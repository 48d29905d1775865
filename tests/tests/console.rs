//! The web console at `/admin`: a login with an API key gives an HttpOnly, Secure,
//! SameSite=Strict cookie; nothing under `/admin/api/` answers without it; changes need
//! the console's header too (CSRF); its `v1/…` paths are the REST API as that key.
//! Driven by a raw HTTPS client, so what is checked is what a browser receives.

use serde_json::{json, Value};
use syncline_tests::{https_connect, TestServer, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An answer: status, headers (lowercased names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("JSON ({e}): {}", self.body))
    }
}

async fn send(
    s: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut tls = https_connect(&s.admin).await;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(body);
    tls.write_all(head.as_bytes()).await.expect("request sent");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut raw)).await;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.get(9..12))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    // The answers are small: chunked ones are one chunk, its size line first.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split_once("\r\n")
            .map(|(_, rest)| rest.rsplit_once("\r\n0\r\n").map_or(rest, |(b, _)| b))
            .unwrap_or(body)
            .to_owned()
    } else {
        body.to_owned()
    };
    Answer {
        status,
        headers,
        body,
    }
}

const CONSOLE: (&str, &str) = ("X-Syncline-Console", "1");

/// Logs in with the admin key; the cookie header to send back.
async fn login(s: &TestServer) -> String {
    let body = json!({"sid": s.admin.api_key_sid, "secret": s.admin.api_key_secret}).to_string();
    let a = send(
        s,
        "POST",
        "/admin/login",
        &[CONSOLE, ("Content-Type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let cookie = a.header("set-cookie").expect("a session cookie").to_owned();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/admin"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    cookie.split(';').next().expect("name=value").to_owned()
}

#[tokio::test]
async fn nothing_under_the_console_api_answers_without_a_login() {
    let s = TestServer::start().await;
    let page = send(&s, "GET", "/admin", &[], "").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Syncline console"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    for (method, path) in [
        ("GET", "/admin/api"),
        ("GET", "/admin/api/"),
        ("GET", "/admin/api/keys"),
        ("POST", "/admin/api/keys"),
        (
            "DELETE",
            "/admin/api/keys/SK00000000000000000000000000000000",
        ),
        ("GET", "/admin/api/metrics"),
        ("GET", "/admin/api/v1/Services"),
        ("GET", "/admin/api/no/such/path"),
        ("PUT", "/admin/api/whatever"),
    ] {
        let a = send(&s, method, path, &[CONSOLE], "").await;
        assert_eq!(a.status, 401, "{method} {path}: {}", a.body);
    }
    // A made-up cookie is no login either.
    let a = send(
        &s,
        "GET",
        "/admin/api/keys",
        &[("Cookie", "syncline_console=0123456789abcdef")],
        "",
    )
    .await;
    assert_eq!(a.status, 401);
}

#[tokio::test]
async fn a_wrong_secret_or_a_login_from_another_page_gets_no_cookie() {
    let s = TestServer::start().await;
    let wrong = json!({"sid": s.admin.api_key_sid, "secret": "not-the-secret"}).to_string();
    let a = send(&s, "POST", "/admin/login", &[CONSOLE], &wrong).await;
    assert_eq!(a.status, 401);
    assert!(a.header("set-cookie").is_none());
    let right = json!({"sid": s.admin.api_key_sid, "secret": s.admin.api_key_secret}).to_string();
    let a = send(&s, "POST", "/admin/login", &[], &right).await;
    assert_eq!(a.status, 403, "without the console's header");
    assert!(a.header("set-cookie").is_none());
}

#[tokio::test]
async fn a_logged_in_console_reads_through_the_rest_api_and_changes_need_its_header() {
    let s = TestServer::start().await;
    let cookie = login(&s).await;
    let with_cookie = ("Cookie", cookie.as_str());

    let services = send(&s, "GET", "/admin/api/v1/Services", &[with_cookie], "").await;
    assert_eq!(services.status, 200, "{}", services.body);
    let sids: Vec<String> = services.json()["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["sid"].as_str().map(str::to_owned))
        .collect();
    assert!(sids.contains(&s.admin.default_service_sid), "{sids:?}");

    let metrics = send(&s, "GET", "/admin/api/metrics", &[with_cookie], "").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.json()["connections"].is_u64());

    // A change without the console's header (a cross-site form could send the cookie
    // but not the header) is refused and does nothing.
    let path = "/admin/api/v1/Services/default/Documents";
    let forged = send(
        &s,
        "POST",
        path,
        &[
            with_cookie,
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        "UniqueName=forged",
    )
    .await;
    assert_eq!(forged.status, 403);
    let created = send(
        &s,
        "POST",
        path,
        &[
            with_cookie,
            CONSOLE,
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        "UniqueName=real&Data=%7B%22a%22%3A1%7D",
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let listed = send(&s, "GET", path, &[with_cookie], "").await;
    let names: Vec<&str> = listed.json()["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .filter_map(|d| d["unique_name"].as_str())
        .map(|n| if n == "real" { "real" } else { "other" })
        .collect();
    assert_eq!(names, vec!["real"], "the forged one was not created");

    let unknown = send(&s, "GET", "/admin/api/nothing-here", &[with_cookie], "").await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn keys_are_created_with_their_secret_shown_once_and_revoked_from_the_console() {
    let s = TestServer::start().await;
    let cookie = login(&s).await;
    let with_cookie = ("Cookie", cookie.as_str());
    let created = send(
        &s,
        "POST",
        "/admin/api/keys",
        &[with_cookie, CONSOLE, ("Content-Type", "application/json")],
        r#"{"friendly_name":"ci"}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let key = created.json();
    let sid = key["sid"].as_str().expect("sid").to_owned();
    let secret = key["secret"].as_str().expect("the secret, once").to_owned();

    let listed = send(&s, "GET", "/admin/api/keys", &[with_cookie], "").await;
    let listed = listed.json();
    let entry = listed["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["sid"] == sid.as_str())
        .expect("the new key is listed")
        .clone();
    assert_eq!(entry["secret"], Value::Null, "never shown again");
    assert_eq!(entry["friendly_name"], "ci");

    // The new key logs in to the console too, until it is revoked, which ends its login.
    let other = json!({"sid": sid, "secret": secret}).to_string();
    let other_login = send(&s, "POST", "/admin/login", &[CONSOLE], &other).await;
    assert_eq!(other_login.status, 200);
    let other_cookie = other_login
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a cookie")
        .to_owned();
    let with_other = ("Cookie", other_cookie.as_str());
    assert_eq!(
        send(&s, "GET", "/admin/api/metrics", &[with_other], "")
            .await
            .status,
        200
    );
    let forged = send(
        &s,
        "DELETE",
        &format!("/admin/api/keys/{sid}"),
        &[with_cookie],
        "",
    )
    .await;
    assert_eq!(forged.status, 403, "a revoke needs the console's header");
    let revoked = send(
        &s,
        "DELETE",
        &format!("/admin/api/keys/{sid}"),
        &[with_cookie, CONSOLE],
        "",
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert_eq!(revoked.json()["revoked"], true);
    assert_eq!(
        send(&s, "POST", "/admin/login", &[CONSOLE], &other)
            .await
            .status,
        401,
        "a revoked key logs in no more"
    );
    assert_eq!(
        send(&s, "GET", "/admin/api/metrics", &[with_other], "")
            .await
            .status,
        401,
        "and its console login ended with it"
    );
}

#[tokio::test]
async fn logging_out_ends_the_session() {
    let s = TestServer::start().await;
    let cookie = login(&s).await;
    let with_cookie = ("Cookie", cookie.as_str());
    assert_eq!(
        send(&s, "GET", "/admin/api/keys", &[with_cookie], "")
            .await
            .status,
        200
    );
    let out = send(&s, "POST", "/admin/logout", &[with_cookie, CONSOLE], "").await;
    assert_eq!(out.status, 204);
    assert!(out
        .header("set-cookie")
        .is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(
        send(&s, "GET", "/admin/api/keys", &[with_cookie], "")
            .await
            .status,
        401
    );
}
