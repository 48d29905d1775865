//! `/openapi.json` against a real server: the document is public, OpenAPI 3.1 and lists
//! every path; every operation it lists is served and no other method is; and
//! schemathesis, fuzzing every operation from the document with the admin API key,
//! finds no server error and no answer the document does not describe
//! (tests/python/openapi_fuzz.py). Needs `python3` with `schemathesis` (installed with
//! pip when missing; `.ci/run` installs it up front).

use syncline_tests::{ensure_schemathesis, TestServer};

const SCRIPT: &str = include_str!("../python/openapi_fuzz.py");

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_openapi_document() {
    ensure_schemathesis();
    let s = TestServer::start().await;
    let stdout = s.run_python(SCRIPT, &[]);
    assert!(stdout.contains("all ok"), "{stdout}");
}
