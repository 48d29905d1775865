//! What the harness tests share: the `syncline` server binary, built once up front. A
//! test may rely on `CARGO_BIN_EXE_*` only for binaries of its own package, and the
//! harness no longer runs cargo itself, so the test builds the server it will drive.

use std::path::PathBuf;

/// The harness binary under test.
pub fn bench_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_syncline-bench"))
}

/// Builds `syncline` next to the harness binary (same target dir, same profile), once
/// per test binary, the way the end-to-end tests do.
pub fn build_server() {
    syncline_tests::syncline_bin();
}
