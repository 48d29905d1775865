//! The JavaScript SDK's own tests (`clients/js`, node's test runner against real servers
//! they start) run with the rest of the suite, on the `syncline` binary this build made.
//! They need Node.js ≥ 20 and npm (`.ci/run` checks); the SDK's dev dependencies are
//! installed from its lock file on first use. The browser test runs where Chromium is
//! installed; `SYNCLINE_REQUIRE_BROWSER=1` (set by `.ci/run`) fails the run if it skipped.

use std::path::PathBuf;
use std::process::Command;

fn npm(dir: &PathBuf, args: &[&str]) -> std::process::Output {
    Command::new("npm")
        .args(args)
        .current_dir(dir)
        .env("SYNCLINE_BIN", syncline_tests::syncline_bin())
        .output()
        .unwrap_or_else(|e| {
            panic!("npm {args:?} did not start ({e}): install Node.js 20 or later with npm")
        })
}

#[test]
fn the_javascript_sdk_passes_its_tests_against_a_real_server() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/js");
    if !dir.join("node_modules").is_dir() {
        let installed = npm(&dir, &["ci", "--no-audit", "--no-fund"]);
        assert!(
            installed.status.success(),
            "npm ci failed:\n{}",
            String::from_utf8_lossy(&installed.stderr)
        );
    }
    let tested = npm(&dir, &["test"]);
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
}
