//! The crash loop, short: five SIGKILL-and-restart cycles of the real server with
//! writers on every object kind, nothing lost or regressed, every documented field in
//! the JSON result; the same through a cluster of two nodes over a 3-member etcd; and a
//! missing server binary is an immediate, explicit error.

mod common;

use std::process::Command;

use serde_json::Value;

const FIELDS: [&str; 16] = [
    "workload",
    "system",
    "cycles",
    "writes_acknowledged",
    "writes_checked",
    "writes_in_flight",
    "in_flight_landed",
    "in_flight_not_landed",
    "lost",
    "regressions",
    "half_applied",
    "log_mismatches",
    "unexpected_errors",
    "max_restart_ms",
    "p50_restart_ms",
    "params",
];

#[test]
fn five_crash_cycles_lose_nothing_and_report_every_field() {
    common::build_server();
    let out = Command::new(common::bench_bin())
        .args(["crash", "--cycles", "5", "--json"])
        .output()
        .expect("syncline-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "crash failed:\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object on stdout: {stdout}");
    let r: Value = serde_json::from_str(lines[0]).expect("stdout is JSON");
    for f in FIELDS {
        assert!(r.get(f).is_some(), "{f} missing in {r}");
    }
    assert_eq!(r["workload"], "crash");
    assert_eq!(r["cycles"], 5);
    for f in [
        "lost",
        "regressions",
        "half_applied",
        "log_mismatches",
        "unexpected_errors",
    ] {
        assert_eq!(r[f], 0, "{f} in {r}");
    }
    assert!(r["error"].is_null(), "{r}");
    let acked = r["writes_acknowledged"].as_u64().unwrap_or(0);
    assert!(acked > 0, "no write was acknowledged: {r}");
    assert_eq!(
        r["writes_checked"], acked,
        "every acknowledged write is checked after its restart: {r}"
    );
    let max = r["max_restart_ms"].as_f64().unwrap_or(0.0);
    let p50 = r["p50_restart_ms"].as_f64().unwrap_or(0.0);
    assert!(p50 > 0.0 && max >= p50, "restart times measured: {r}");
}

/// Cluster mode, short: three cycles of two nodes over a 3-member etcd, a node killed
/// each cycle (and sometimes an etcd member); skipped without etcd unless
/// `SYNCLINE_REQUIRE_ETCD` is set.
#[test]
fn crash_cycles_through_a_cluster_over_etcd_lose_nothing() {
    if !syncline_tests::etcd::require_etcd() {
        return;
    }
    common::build_server();
    // Seeded so that the three cycles include etcd member kills.
    let out = Command::new(common::bench_bin())
        .args([
            "--store", "etcd", "--nodes", "2", "crash", "--cycles", "3", "--seed", "7", "--json",
        ])
        .output()
        .expect("syncline-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "crash failed:\n{stdout}\n{stderr}");
    let r: Value = serde_json::from_str(stdout.trim()).expect("stdout is one JSON object");
    assert_eq!(r["system"], "syncline-cluster", "{r}");
    assert_eq!(
        (&r["store"], &r["nodes"]),
        (&"etcd".into(), &2.into()),
        "{r}"
    );
    assert_eq!(
        (&r["cycles"], &r["node_kills"]),
        (&3.into(), &3.into()),
        "{r}"
    );
    assert!(r["etcd_member_kills"].as_u64().unwrap_or(0) >= 1, "{r}");
    for f in [
        "lost",
        "regressions",
        "half_applied",
        "log_mismatches",
        "unexpected_errors",
    ] {
        assert_eq!(r[f], 0, "{f} in {r}");
    }
    assert!(r["error"].is_null(), "{r}");
    let acked = r["writes_acknowledged"].as_u64().unwrap_or(0);
    assert!(acked > 0, "no write was acknowledged: {r}");
    assert_eq!(r["writes_checked"], acked, "{r}");
    assert!(r["p50_restart_ms"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
}

#[test]
fn without_the_server_binary_crash_fails_at_once_naming_the_build_command() {
    // A copy of the harness in a directory with no `syncline` next to it.
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("syncline-bench");
    std::fs::copy(common::bench_bin(), &copy).expect("copy the harness");
    let out = Command::new(&copy)
        .args(["crash", "--cycles", "1", "--json"])
        .output()
        .expect("the copy runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it must fail: {stderr}");
    assert!(
        stderr.contains("cargo build -p syncline-cli"),
        "the error names the build command: {stderr}"
    );
}
