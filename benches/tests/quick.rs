//! The harness's quick mode, run once for every workload so the harness cannot rot: each
//! result line has the documented fields, and nothing was missed, duplicated or reordered.

mod common;

use std::process::Command;

use serde_json::Value;

const FIELDS: [&str; 12] = [
    "workload",
    "system",
    "ops_per_s",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "missed",
    "duplicated",
    "out_of_order",
    "server_cpu_s",
    "server_rss_kib",
    "params",
];

#[test]
fn every_workload_runs_in_quick_mode_and_misses_nothing() {
    common::build_server();
    let out = Command::new(common::bench_bin())
        .args(["all", "--quick", "--json", "--duration", "1"])
        .output()
        .expect("syncline-bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "syncline-bench failed:\n{stderr}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each stdout line is JSON"))
        .collect();
    let workloads: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["workload"].as_str())
        .collect();
    for w in ["write", "fanout", "conns", "chat"] {
        assert!(workloads.contains(&w), "{w} missing from {workloads:?}");
    }
    for l in &lines {
        for f in FIELDS {
            assert!(l.get(f).is_some(), "{f} missing in {l}");
        }
        assert_eq!(l["system"], "syncline");
        for f in ["missed", "duplicated", "out_of_order"] {
            assert_eq!(l[f], 0, "{f} in {l}");
        }
        assert!(
            l["ops_per_s"].as_f64().unwrap_or(0.0) > 0.0,
            "no progress in {l}"
        );
        assert!(
            l["server_cpu_s"].as_f64().unwrap_or(0.0) > 0.0,
            "server CPU not measured in {l}"
        );
        assert!(
            l["server_rss_kib"].as_u64().unwrap_or(0) > 0,
            "server RSS not measured in {l}"
        );
    }
    let conns = lines
        .iter()
        .find(|l| l["workload"] == "conns")
        .expect("conns ran");
    for f in ["connections", "open_s", "rss_per_conn_kib"] {
        assert!(conns.get(f).is_some(), "{f} missing in {conns}");
    }
    assert!(
        stderr.contains("open-file limit"),
        "the fd limit change is reported"
    );
}
