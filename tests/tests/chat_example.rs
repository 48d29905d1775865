//! The chat example (`examples/chat`: the `twilio` npm package and the JavaScript SDK on a
//! real server) and the web console, in a real headless Chromium, run with the rest of
//! the suite. They need Node.js ≥ 20 with npm and Debian's `chromium`; without Chromium
//! they are skipped here, unless `SYNCLINE_REQUIRE_BROWSER=1` (set by `.ci/run`, which
//! installs it) makes that a failure. Screenshots go to a temporary directory, so the
//! committed ones stay as they are.

use std::path::PathBuf;

fn has_chromium() -> bool {
    let bin = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    PathBuf::from(bin).exists()
}

#[test]
fn the_chat_example_and_the_console_pass_their_browser_tests() {
    if !has_chromium() {
        assert!(
            std::env::var_os("SYNCLINE_REQUIRE_BROWSER").is_none(),
            "SYNCLINE_REQUIRE_BROWSER is set but Chromium is not installed"
        );
        eprintln!("skipped: no Chromium at /usr/bin/chromium (apt-get install chromium)");
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/chat");
    let shots = tempfile::tempdir().expect("temp dir");
    let tested = syncline_tests::npm(&dir, &["test"], &[("SCREENSHOTS_DIR", shots.path())]);
    let stdout = String::from_utf8_lossy(&tested.stdout);
    assert!(
        tested.status.success(),
        "npm test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&tested.stderr)
    );
    assert!(
        stdout.contains("# skipped 0") && !stdout.contains("# tests 0"),
        "{stdout}"
    );
    for shot in ["chat-alice.png", "chat-bob.png", "console.png"] {
        assert!(shots.path().join(shot).is_file(), "{shot} was saved");
    }
}
