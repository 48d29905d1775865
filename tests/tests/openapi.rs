//! `/openapi.json` against a real server: the document is public, OpenAPI 3.1 and lists
//! every path; every operation it lists is served and no other method is; and
//! schemathesis, fuzzing every operation from the document with the admin API key,
//! finds no server error and no answer the document does not describe
//! (tests/python/openapi_fuzz.py). Needs `python3` with `schemathesis` (installed with
//! pip when missing; `.ci/run` installs it up front).

use std::process::Command;

use syncline_tests::{ensure_schemathesis, TestServer};

const SCRIPT: &str = include_str!("../python/openapi_fuzz.py");

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_openapi_document() {
    ensure_schemathesis();
    let s = TestServer::start().await;
    let http_url = s
        .admin
        .http_url
        .clone()
        .expect("the test server serves HTTPS");
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .env("HTTP_URL", &http_url)
        .env("CA_FILE", &s.admin.ca_file)
        .env("KEY_SID", &s.admin.api_key_sid)
        .env("KEY_SECRET", &s.admin.api_key_secret)
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the OpenAPI checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all ok"), "{stdout}");
}
