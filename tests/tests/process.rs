//! The real `syncline` binary: durability across SIGKILL, and the CLI as a user runs it
//! (JSON lines on stdout, `Code: message` on stderr, per-code exit status, `watch`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};
use syncline_tests::{backend, https_request, ServerProcess, WAIT};

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("syncline runs")
}

fn json_line(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    serde_json::from_str(text.trim()).expect("stdout is JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path());
    let client = backend(&server.admin).await;
    client.document("shared").set(&json!({})).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for k in 0..25 {
                let own = c
                    .document(&format!("own-{w}"))
                    .set(&json!({"k": k}))
                    .await
                    .unwrap();
                let shared = c
                    .document("shared")
                    .update(&json!({ format!("w{w}"): k }))
                    .await
                    .unwrap();
                acked.push(shared.revision);
                acked.push(own.revision);
            }
            acked
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every write above was acknowledged; now the server dies without a chance to flush.
    server.kill();
    drop(client);

    let server = ServerProcess::start(dir.path());
    let c = backend(&server.admin).await;
    for w in 0..8 {
        let d = c.document(&format!("own-{w}")).get().await.unwrap();
        assert_eq!((d.revision, d.data), (24, json!({"k": 24})));
    }
    let shared = c.document("shared").get().await.unwrap();
    assert_eq!(
        shared.revision, 200,
        "created at 0, then 200 acknowledged updates"
    );
    let expected: serde_json::Map<String, Value> =
        (0..8).map(|w| (format!("w{w}"), json!(24))).collect();
    assert_eq!(shared.data, Value::Object(expected));
    // Revisions carry on; none is reused.
    let next = c
        .document("shared")
        .update(&json!({"after": true}))
        .await
        .unwrap();
    assert_eq!(next.revision, 201);
}

/// A one-shot CLI command closes its connection before it exits: the server counts no
/// connection for it afterwards (it used to keep one until its 30 s idle timeout, and a
/// token identity's presence with it).
#[tokio::test(flavor = "multi_thread")]
async fn a_cli_command_leaves_no_connection_behind() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let out = run(server
        .cli()
        .args(["doc", "set", "room", r#"{"topic":"x"}"#]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (status, metrics) = https_request(&server.admin, "GET", "/metrics", None, "").await;
        assert_eq!(status, 200, "{metrics}");
        if metrics.contains("\nsyncline_connections 0\n") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the CLI's connection is still open: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `serve --cache-mib` bounds sled's page cache; a data set larger than the cache is
/// written and read back whole, across a restart (reads that miss the cache go to disk).
#[tokio::test(flavor = "multi_thread")]
async fn a_server_with_a_page_cache_smaller_than_its_data_keeps_all_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut server =
        ServerProcess::start_logging_with(dir.path(), &["--cache-mib", "1"], Stdio::null());
    let client = backend(&server.admin).await;
    let filler = "x".repeat(8 * 1024);
    // 200 documents of 8 KiB: 1.6 MiB of data against a 1 MiB cache.
    for i in 0..200 {
        client
            .document(&format!("d{i}"))
            .set(&json!({ "i": i, "filler": filler }))
            .await
            .unwrap();
    }
    drop(client);
    server.restart();
    let client = backend(&server.admin).await;
    for i in 0..200 {
        let d = client.document(&format!("d{i}")).get().await.unwrap();
        assert_eq!(d.data["i"], json!(i));
        assert_eq!(d.data["filler"].as_str().map(str::len), Some(filler.len()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_documents_print_json_lines_and_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let d = json_line(&run(server.cli().args([
        "doc",
        "set",
        "room",
        r#"{"topic":"rust"}"#,
    ])));
    assert_eq!(d["revision"], 0);
    assert_eq!(d["unique_name"], "room");
    assert_eq!(d["data"], json!({"topic": "rust"}));
    assert_eq!(d["created_by"], "system");
    assert!(d["sid"].as_str().unwrap().starts_with("ET"));
    assert!(d["date_updated"].as_str().unwrap().ends_with('Z'));
    let d = json_line(&run(server.cli().args([
        "doc",
        "update",
        "room",
        r#"{"n":1}"#,
    ])));
    assert_eq!(
        (d["revision"].clone(), d["data"].clone()),
        (json!(1), json!({"topic": "rust", "n": 1}))
    );
    let d = json_line(&run(server.cli().args(["doc", "get", "room"])));
    assert_eq!(d["revision"], 1);

    // Errors: one line on stderr naming the code, and the code's exit status.
    let out = run(server
        .cli()
        .args(["doc", "set", "room", "{}", "--if-match", "0"]));
    assert_eq!(out.status.code(), Some(15));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("Conflict:") && err.contains("current revision 1"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let out = run(server.cli().args(["doc", "get", "nowhere"]));
    assert_eq!(out.status.code(), Some(13));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("NotFound:"));
    let out = run(server.cli().args(["doc", "set", "room", "{oops"]));
    assert_eq!(out.status.code(), Some(17));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("InvalidArgument:"));
    let big = format!("\"{}\"", "x".repeat(17 * 1024));
    let out = run(server.cli().args(["doc", "set", "room", &big]));
    assert_eq!(out.status.code(), Some(16));

    // As an identity, with a token minted by the CLI.
    let token = run(server
        .cli()
        .args(["token", "--identity", "alice", "--ttl", "600"]));
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let d = json_line(&run(server
        .cli()
        .env("SYNCLINE_TOKEN", &token)
        .args(["doc", "set", "mine", "[1]"])));
    assert_eq!(d["created_by"], "alice");
    // A token holder without the config file names the server and the CA.
    let d = json_line(&run(server
        .cli()
        .env_remove("SYNCLINE_CONFIG")
        .current_dir(dir.path())
        .env("SYNCLINE_TOKEN", &token)
        .args(["--server", &server.admin.server, "--ca"])
        .arg(&server.admin.ca_file)
        .args(["doc", "get", "mine"])));
    assert_eq!(d["data"], json!([1]));
    let out = run(server
        .cli()
        .env("SYNCLINE_TOKEN", "garbage")
        .args(["doc", "get", "mine"]));
    assert_eq!(out.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("Unauthorized:"));

    let d = json_line(&run(server.cli().args(["doc", "delete", "room"])));
    assert_eq!(d["revision"], 2);
    let out = run(server.cli().args(["doc", "delete", "room"]));
    assert_eq!(out.status.code(), Some(13));
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_refuses_a_request_over_the_frame_limit_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    // ~100 KB of JSON: over the 64 KiB frame limit. Before, the server's refusal matched
    // no request and the command waited forever.
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(100 * 1024));
    let mut child = server
        .cli()
        .args(["doc", "set", "x", &big])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("syncline runs");
    let deadline = std::time::Instant::now() + WAIT;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("`syncline doc set` with 100 KB of JSON did not finish in {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert_eq!(out.status.code(), Some(16), "TooLarge's exit status");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("TooLarge:") && err.contains("the server's frame limit is 65536"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let out = run(server.cli().args(["doc", "get", "x"]));
    assert_eq!(out.status.code(), Some(13), "nothing was written");
}

/// Lines of a long-running command, read on a thread so the test can wait with a bound.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<Value> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(rx: &mpsc::Receiver<Value>) -> Value {
    rx.recv_timeout(WAIT).expect("a line in time")
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_watch_prints_state_then_events_and_resumes_with_since() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    json_line(&run(server.cli().args([
        "doc",
        "set",
        "feed",
        r#"{"v":0}"#,
    ])));
    let mut watch = server
        .cli()
        .args(["watch", "feed"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut watch);
    let first = next_line(&rx);
    assert_eq!(
        (first["revision"].clone(), first["data"].clone()),
        (json!(0), json!({"v": 0}))
    );
    assert!(
        first.get("event").is_none(),
        "the current-state line is a document line"
    );
    for v in 1..=3 {
        json_line(&run(server.cli().args([
            "doc",
            "set",
            "feed",
            &format!(r#"{{"v":{v}}}"#),
        ])));
        let e = next_line(&rx);
        assert_eq!(e["event"], "document_updated");
        assert_eq!(e["revision"], v);
        assert_eq!(e["data"], json!({"v": v}));
    }
    let _ = watch.kill();
    let _ = watch.wait();

    // Resume: only what came after revision 1, no current-state line.
    let mut watch = server
        .cli()
        .args(["watch", "feed", "--since", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut watch);
    for v in 2..=3 {
        let e = next_line(&rx);
        assert_eq!(
            (e["event"].clone(), e["revision"].clone()),
            (json!("document_updated"), json!(v))
        );
    }
    json_line(&run(server.cli().args(["doc", "delete", "feed"])));
    let e = next_line(&rx);
    assert_eq!(
        (e["event"].clone(), e["reason"].clone()),
        (json!("object_removed"), json!("write"))
    );
    // The object is gone, so watch ends by itself, successfully.
    let status = watch.wait().unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(10));
}

fn lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_lists_maps_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    for n in 0..3 {
        let item = json_line(&run(server.cli().args([
            "list",
            "push",
            "chat",
            &format!(r#"{{"n":{n}}}"#),
        ])));
        assert_eq!(
            (item["index"].clone(), item["data"].clone()),
            (json!(n), json!({"n": n}))
        );
        assert!(item["date_updated"].is_string());
    }
    let item = json_line(&run(server.cli().args([
        "list",
        "update",
        "chat",
        "1",
        r#"{"edited":true}"#,
    ])));
    assert_eq!(item["data"], json!({"n": 1, "edited": true}));
    let out = run(server
        .cli()
        .args(["list", "set", "chat", "1", "{}", "--if-match", "1"]));
    assert_eq!(
        out.status.code(),
        Some(15),
        "stale item revision is a Conflict"
    );
    let items = lines(&run(server
        .cli()
        .args(["list", "items", "chat", "--order", "desc", "--limit", "2"])));
    let idx: Vec<_> = items.iter().map(|i| i["index"].clone()).collect();
    assert_eq!(
        idx,
        vec![json!(2), json!(1)],
        "paging prints items only, one per line"
    );
    let items = lines(&run(server
        .cli()
        .args(["list", "items", "chat", "--from", "1"])));
    assert_eq!(items.len(), 2);
    json_line(&run(server.cli().args(["list", "remove", "chat", "0"])));
    assert_eq!(
        run(server.cli().args(["list", "get", "chat", "0"]))
            .status
            .code(),
        Some(13)
    );

    json_line(&run(server.cli().args([
        "map",
        "set",
        "roster",
        "bob",
        r#"{"online":true}"#,
    ])));
    json_line(&run(server.cli().args([
        "map",
        "set",
        "roster",
        "ann",
        r#"{"online":false}"#,
    ])));
    let item = json_line(&run(server.cli().args(["map", "get", "roster", "bob"])));
    assert_eq!(
        (item["key"].clone(), item["data"].clone()),
        (json!("bob"), json!({"online": true}))
    );
    let keys: Vec<_> = lines(&run(server.cli().args(["map", "items", "roster"])))
        .iter()
        .map(|i| i["key"].clone())
        .collect();
    assert_eq!(keys, vec![json!("ann"), json!("bob")]);
    let out = run(server.cli().args(["map", "get", "chat", "x"]));
    assert_eq!(
        out.status.code(),
        Some(17),
        "a map command on a list: InvalidArgument"
    );

    // watch on a map: the object's line, its items, then events.
    let mut watch = server
        .cli()
        .args(["watch", "roster"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut watch);
    let head = next_line(&rx);
    assert_eq!(
        (head["kind"].clone(), head["revision"].clone()),
        (json!("map"), json!(2))
    );
    assert_eq!(next_line(&rx)["key"], "ann");
    assert_eq!(next_line(&rx)["key"], "bob");
    json_line(&run(server.cli().args(["map", "remove", "roster", "ann"])));
    let e = next_line(&rx);
    assert_eq!(
        (e["event"].clone(), e["key"].clone(), e["reason"].clone()),
        (json!("item_removed"), json!("ann"), json!("write"))
    );
    let _ = watch.kill();
    let _ = watch.wait();

    // watch on a stream: its line, then messages as they come.
    json_line(&run(server.cli().args(["stream", "create", "typing"])));
    let mut watch = server
        .cli()
        .args(["watch", "typing"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut watch);
    assert_eq!(next_line(&rx)["kind"], "stream");
    let published = json_line(&run(server.cli().args([
        "stream",
        "publish",
        "typing",
        r#"{"who":"bob"}"#,
    ])));
    assert_eq!(published["sequence"], 1);
    let e = next_line(&rx);
    assert_eq!(
        (e["event"].clone(), e["data"].clone(), e["sequence"].clone()),
        (json!("message_published"), json!({"who": "bob"}), json!(1))
    );
    let _ = watch.kill();
    let _ = watch.wait();
    let out = run(server.cli().args([
        "stream",
        "publish",
        "typing",
        &format!("\"{}\"", "x".repeat(5000)),
    ]));
    assert_eq!(out.status.code(), Some(16));
    json_line(&run(server.cli().args(["list", "delete", "chat"])));
    assert_eq!(
        run(server.cli().args(["list", "get", "chat", "1"]))
            .status
            .code(),
        Some(13)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_services_keys_permissions_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let svc = json_line(&run(server.cli().args([
        "service",
        "create",
        "team",
        "--acl-enabled",
    ])));
    assert_eq!(
        (svc["unique_name"].clone(), svc["acl_enabled"].clone()),
        (json!("team"), json!(true))
    );
    let sid = svc["sid"].as_str().unwrap().to_owned();
    assert_eq!(lines(&run(server.cli().args(["service", "list"]))).len(), 2);
    let got = json_line(&run(server.cli().args(["service", "get", &sid])));
    assert_eq!(got["unique_name"], "team");

    // Backend writes in the service, a token of the service is refused until granted.
    json_line(&run(server.cli().args([
        "--service",
        "team",
        "doc",
        "set",
        "plan",
        "{}",
    ])));
    let token = String::from_utf8(
        run(server
            .cli()
            .args(["token", "--identity", "bob", "--service", "team"]))
        .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let as_bob = |args: &[&str]| run(server.cli().env("SYNCLINE_TOKEN", &token).args(args));
    assert_eq!(
        as_bob(&["doc", "get", "plan"]).status.code(),
        Some(12),
        "Forbidden"
    );
    let p = json_line(&run(server.cli().args([
        "--service",
        "team",
        "permission",
        "grant",
        "plan",
        "bob",
        "--read",
    ])));
    assert_eq!(
        p["rights"],
        json!({"read": true, "write": false, "manage": false})
    );
    assert!(as_bob(&["doc", "get", "plan"]).status.success());
    assert_eq!(
        as_bob(&["doc", "set", "plan", "[]"]).status.code(),
        Some(12)
    );
    let perms = lines(&run(server.cli().args([
        "--service",
        "team",
        "permission",
        "list",
        "plan",
    ])));
    assert_eq!(perms.len(), 1);
    json_line(&run(server.cli().args([
        "--service",
        "team",
        "permission",
        "revoke",
        "plan",
        "bob",
    ])));
    assert_eq!(as_bob(&["doc", "get", "plan"]).status.code(), Some(12));
    // Turning the ACL off opens the service to its tokens.
    let off = json_line(&run(server.cli().args([
        "service",
        "update",
        "team",
        "--acl-enabled",
        "false",
    ])));
    assert_eq!(off["acl_enabled"], false);
    assert!(as_bob(&["doc", "get", "plan"]).status.success());

    // Keys: the secret once, then never again; revoked keys sign nothing.
    let key = json_line(&run(server.cli().args(["key", "create"])));
    let (key_sid, secret) = (
        key["sid"].as_str().unwrap(),
        key["secret"].as_str().unwrap(),
    );
    assert!(key_sid.starts_with("SK") && secret.len() == 32);
    let listed = lines(&run(server.cli().args(["key", "list"])));
    assert!(listed.iter().all(|k| k.get("secret").is_none()));
    let revoked = json_line(&run(server.cli().args(["key", "revoke", key_sid])));
    assert_eq!(revoked["revoked"], true);
    assert_eq!(
        run(server
            .cli()
            .args(["key", "revoke", "SK00000000000000000000000000000000"]))
        .status
        .code(),
        Some(13)
    );

    json_line(&run(server.cli().args(["service", "delete", "team"])));
    assert_eq!(
        run(server.cli().args(["service", "get", "team"]))
            .status
            .code(),
        Some(13)
    );
    assert_eq!(
        as_bob(&["doc", "get", "plan"]).status.code(),
        Some(10),
        "the service is gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_refuses_far_future_ttls_and_shows_who_created_what_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    // The review's `doc set t '{}' --ttl 260000000000` was accepted, and every later
    // `get` of `t` panicked formatting the date. Now it is refused, and nothing exists.
    for ttl in ["260000000000", "18446744073709551615", "31536001"] {
        let out = run(server.cli().args(["doc", "set", "t", "{}", "--ttl", ttl]));
        assert_eq!(out.status.code(), Some(17), "InvalidArgument for ttl {ttl}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("InvalidArgument:") && err.contains("365 days"),
            "{err}"
        );
    }
    let out =
        run(server
            .cli()
            .args(["map", "set", "m", "k", "1", "--ttl", "18446744073709551615"]));
    assert_eq!(out.status.code(), Some(17));
    assert_eq!(
        run(server.cli().args(["doc", "get", "t"])).status.code(),
        Some(13)
    );
    let d = json_line(&run(server
        .cli()
        .args(["doc", "set", "t", "{}", "--ttl", "31536000"])));
    assert!(d["date_expires"].as_str().unwrap().ends_with('Z'));

    // A token holder claims a name first; the backend's write says so on stderr.
    let service = json_line(&run(server.cli().args([
        "service",
        "create",
        "squat",
        "--acl-enabled",
    ])));
    assert_eq!(service["token_create"], "own");
    let token_for = |identity: &str| {
        let out = run(server
            .cli()
            .args(["token", "--identity", identity, "--service", "squat"]));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (mallory, hank) = (token_for("mallory"), token_for("hank"));
    let as_token =
        |token: &str, args: &[&str]| run(server.cli().env("SYNCLINE_TOKEN", token).args(args));
    json_line(&as_token(
        &mallory,
        &["doc", "set", "announcements", r#"{"m":1}"#],
    ));
    let out = run(server.cli().args([
        "--service",
        "squat",
        "doc",
        "set",
        "announcements",
        r#"{"v":1}"#,
    ]));
    let d = json_line(&out);
    assert_eq!(d["created_by"], "mallory");
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(note.contains(r#"created by identity "mallory""#), "{note}");

    // A write grant without read: the answer has the revision and no data.
    json_line(&run(server.cli().args([
        "--service",
        "squat",
        "permission",
        "grant",
        "announcements",
        "hank",
        "--write",
    ])));
    let w = json_line(&as_token(
        &hank,
        &["doc", "update", "announcements", r#"{"n":1}"#],
    ));
    assert_eq!(w["revision"], 2);
    assert!(w.get("data").is_none(), "{w}");
    assert_eq!(w["data_withheld"], "no read access");

    // With `token_create none`, no new name can be claimed.
    let service = json_line(&run(server.cli().args([
        "service",
        "update",
        "squat",
        "--token-create",
        "none",
    ])));
    assert_eq!(service["token_create"], "none");
    let out = as_token(&mallory, &["doc", "set", "news", "{}"]);
    assert_eq!(out.status.code(), Some(12), "Forbidden");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_to_a_server_that_stopped_answering_fails_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let config = syncline_client::ClientConfig::from_admin(&server.admin)
        .unwrap()
        .with_request_timeout(Duration::from_millis(800));
    let client = syncline_client::Client::connect(config).await.unwrap();
    client.ping().await.unwrap();
    let pid = server.child.id().to_string();
    let signal = |sig: &str| {
        let status = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    };
    // The process is alive but answers nothing (as a server stuck on a dead disk).
    signal("-STOP");
    // `kill` returns once the signal is queued; a thread running on another core stops
    // a moment later, and under load a ping could slip through. Wait for state `T`.
    let stopped = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .map(|rest| rest.trim_start().starts_with('T'))
            })
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !stopped() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = std::time::Instant::now();
    let err = client.ping().await.unwrap_err();
    let took = started.elapsed();
    signal("-CONT");
    assert_eq!(err.code(), syncline_client::ErrorCode::Unavailable, "{err}");
    assert!(took < Duration::from_secs(10), "it waited {took:?}");
    // The same connection serves again once the server does.
    client.ping().await.unwrap();
}
