//! The JavaScript SDK's own tests (`clients/js`, node's test runner against real servers
//! they start) run with the rest of the suite, on the `syncline` binary this build made.
//! They need Node.js ≥ 20 and npm (`.ci/run` checks); the SDK's dev dependencies are
//! installed from its lock file on first use. The browser test runs where Chromium is
//! installed; `SYNCLINE_REQUIRE_BROWSER=1` (set by `.ci/run`) fails the run if it skipped.

use std::path::PathBuf;

#[test]
fn the_javascript_sdk_passes_its_tests_against_a_real_server() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/js");
    let tested = syncline_tests::npm(&dir, &["test"], &[]);
    let stdout = String::from_utf8_lossy(&tested.stdout);
    assert!(
        tested.status.success(),
        "npm test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&tested.stderr)
    );
    // node's test runner prints its totals; a run that found no tests is no pass.
    assert!(
        !stdout.contains("# tests 0"),
        "no JavaScript tests ran:\n{stdout}"
    );
    // CI installs Chromium (`.ci/run`): there the browser test must run, not skip.
    if std::env::var_os("SYNCLINE_REQUIRE_BROWSER").is_some() {
        assert!(
            stdout.contains("# skipped 0"),
            "a JavaScript test was skipped:\n{stdout}"
        );
    }
}
