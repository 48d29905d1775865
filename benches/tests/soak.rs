//! The soak, short: 30 seconds of mixed load over every object kind against the real
//! server binary, with connections coming and going and a stalled subscriber: no
//! error, operations flowing, events delivered, and the server's memory not running
//! away (the last third's mean RSS against the middle third's).

mod common;

use std::process::Command;

use serde_json::Value;

#[test]
fn a_thirty_second_soak_has_no_errors_and_flat_memory() {
    common::build_server();
    let out = Command::new(common::bench_bin())
        .args(["soak", "--duration", "30", "--workers", "6", "--json"])
        .output()
        .expect("syncline-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "soak failed:\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object on stdout: {stdout}");
    let r: Value = serde_json::from_str(lines[0]).expect("stdout is JSON");
    assert_eq!(r["workload"], "soak");
    assert_eq!(r["errors"], 0, "{r}");
    assert!(
        r["ops"].as_u64().unwrap_or(0) > 500,
        "operations flowed: {r}"
    );
    assert!(
        r["events_received"].as_u64().unwrap_or(0) > 0,
        "events delivered: {r}"
    );
    assert!(
        r["connections_opened"].as_u64().unwrap_or(0) > 10,
        "connections came and went: {r}"
    );
    assert!(r["stalled_subscriptions"].as_u64().unwrap_or(0) > 0, "{r}");
    assert!(
        r["rss_samples"].as_u64().unwrap_or(0) >= 25,
        "sampled every second: {r}"
    );
    // Thirty seconds is mostly warm-up; this only catches memory running away. The
    // 600-second run in benches/RESULTS.md is the real measure.
    let growth = r["rss_growth_pct"].as_f64().expect("a growth figure");
    assert!(
        growth < 50.0,
        "RSS grew {growth:.1}% from the middle to the last third: {r}"
    );
}
