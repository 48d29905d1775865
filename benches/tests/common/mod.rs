//! What the harness tests share: the `syncline` server binary, built once up front. A
//! test may rely on `CARGO_BIN_EXE_*` only for binaries of its own package, and the
//! harness no longer runs cargo itself, so the test builds the server it will drive.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The harness binary under test.
pub fn bench_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_syncline-bench"))
}

/// Builds `syncline` into the directory next to the harness binary (same target dir,
/// same profile), once per test binary; cargo makes this a no-op when it is current.
pub fn build_server() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let bench = bench_bin();
        let profile_dir = bench.parent().expect("the harness binary has a directory");
        let target_dir = profile_dir
            .parent()
            .expect("the profile directory sits in the target directory");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "syncline-server", "--bin", "syncline"])
            .arg("--target-dir")
            .arg(target_dir);
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        // cargo runs tests with this package's CARGO_PKG_*, OUT_DIR and the like set.
        // Build scripts (ring's) rerun when those change, so passing them on would
        // rebuild ring and everything above it here, and again in the next `cargo test`.
        for (key, _) in std::env::vars_os() {
            let Some(k) = key.to_str() else { continue };
            let set_for_this_package = k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_BIN_EXE_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&k);
            if set_for_this_package {
                cmd.env_remove(k);
            }
        }
        eprintln!("building the server binary the harness drives: {cmd:?}");
        let status = cmd.status().expect("cargo runs");
        assert!(
            status.success(),
            "building the syncline binary failed; `cargo build -p syncline-server` shows why"
        );
        assert!(
            profile_dir.join("syncline").is_file(),
            "no syncline binary in {} after the build",
            profile_dir.display()
        );
    });
}
