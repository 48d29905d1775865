//! W5, presence at scale, in quick mode against the real server binary: identities drop
//! (clean and silent) and rejoin, each drop's removal is seen by its room's watcher, and
//! once everyone has left no item is left behind.

mod common;

use std::process::Command;

use serde_json::Value;

#[test]
fn quick_presence_measures_drops_and_leaves_no_ghosts() {
    common::build_server();
    let out = Command::new(common::bench_bin())
        .args(["presence", "--quick", "--json", "--seed", "7"])
        .output()
        .expect("syncline-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "presence failed:\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line on stdout: {stdout}");
    let r: Value = serde_json::from_str(lines[0]).expect("stdout is JSON");
    assert_eq!(r["workload"], "presence", "{r}");
    assert_eq!(r["system"], "syncline", "{r}");
    assert_eq!(r["ghosts"], 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert!(
        r["drops"].as_u64().unwrap_or(0) > 0,
        "no drop measured: {r}"
    );
    // Drops alternate, so both kinds were timed.
    assert!(r["clean_drops"].as_u64().unwrap_or(0) > 0, "{r}");
    assert!(r["silent_drops"].as_u64().unwrap_or(0) > 0, "{r}");
    // Everyone connected at the end left, and was seen leaving in time.
    assert!(r["final_drops"].as_u64().unwrap_or(0) > 0, "{r}");
    assert_eq!(r["final_late"], 0, "{r}");
    // The settings the figures depend on are in the line.
    assert_eq!(r["server_idle_timeout_ms"], 2000, "{r}");
    assert!(r["debouncing_enabled"].is_boolean(), "{r}");
    assert!(stderr.contains("| ghosts |"), "no table:\n{stderr}");
}
