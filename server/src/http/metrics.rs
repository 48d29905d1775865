//! `GET /metrics`: the core's counters (`syncline_core::metrics::Snapshot`) in the
//! Prometheus text exposition format, version 0.0.4.

use std::fmt::Write;

use syncline_core::metrics::{HistogramSnapshot, Snapshot};

/// The Prometheus text of `s`.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let g = &s.gauges;
    for (name, help, v) in [
        (
            "syncline_connections",
            "Live sessions: QUIC connections and server-sent event streams.",
            g.connections,
        ),
        (
            "syncline_subscriptions",
            "Live subscriptions.",
            g.subscriptions,
        ),
        (
            "syncline_outbox_events",
            "Events queued for sessions' watches, all sessions together.",
            g.queued_events,
        ),
        (
            "syncline_present_identities",
            "Identities (per service) with a live connection.",
            g.present.0,
        ),
        (
            "syncline_departing_identities",
            "Identities whose last connection ended and whose debouncing window runs.",
            g.present.1,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    for (name, help, v) in [
        (
            "syncline_commit_batches_total",
            "Commit batches (one flush each when durable).",
            s.commit_batches,
        ),
        (
            "syncline_commit_writes_total",
            "Writes committed.",
            s.commit_writes,
        ),
        (
            "syncline_commit_recomputed_total",
            "Commit batches computed again because another node changed what they read (cluster mode).",
            s.commit_recomputed,
        ),
        (
            "syncline_resyncs_total",
            "Subscriptions resynced with a snapshot after falling behind.",
            s.resyncs,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP syncline_requests_total Requests by edge, kind and outcome (ok or the error code; RateLimited counts refusals by the rate limit).\n# TYPE syncline_requests_total counter"
    );
    for r in &s.requests {
        let _ = writeln!(
            out,
            "syncline_requests_total{{edge=\"{}\",kind=\"{}\",outcome=\"{}\"}} {}",
            r.edge, r.kind, r.outcome, r.count
        );
    }
    histogram(
        &mut out,
        "syncline_commit_batch_size",
        "Writes per commit batch.",
        &s.batch_size,
    );
    histogram(
        &mut out,
        "syncline_commit_flush_seconds",
        "Time to apply and flush one commit batch.",
        &s.flush_seconds,
    );
    let _ = writeln!(
        out,
        "# HELP syncline_http_responses_total HTTP responses by route and status.\n# TYPE syncline_http_responses_total counter"
    );
    for ((route, status), v) in &s.http {
        let route = route.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(
            out,
            "syncline_http_responses_total{{route=\"{route}\",status=\"{status}\"}} {v}"
        );
    }
    out
}

fn histogram(out: &mut String, name: &str, help: &str, h: &HistogramSnapshot) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, cumulative) in &h.buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let count = h.count;
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}\n{name}_count {count}", h.sum);
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_core::metrics::{Gauges, RequestCount};

    #[test]
    fn a_snapshot_renders_as_prometheus_text_with_every_sample_declared() {
        let s = Snapshot {
            gauges: Gauges {
                connections: 2,
                subscriptions: 5,
                queued_events: 0,
                present: (3, 1),
            },
            commit_batches: 1,
            commit_writes: 3,
            commit_recomputed: 0,
            resyncs: 0,
            requests: vec![
                RequestCount {
                    edge: "quic",
                    kind: "write",
                    outcome: "ok",
                    count: 2,
                },
                RequestCount {
                    edge: "http",
                    kind: "read",
                    outcome: "NotFound",
                    count: 1,
                },
            ],
            batch_size: HistogramSnapshot {
                buckets: vec![(1.0, 0), (2.0, 0), (4.0, 1)],
                sum: 3.0,
                count: 1,
            },
            flush_seconds: HistogramSnapshot {
                buckets: vec![(0.0005, 0), (0.001, 1)],
                sum: 0.0007,
                count: 1,
            },
            http: [(("/v1/Services/{service}".to_owned(), 200), 1)]
                .into_iter()
                .collect(),
        };
        let text = render(&s);
        assert!(
            text.contains("syncline_requests_total{edge=\"quic\",kind=\"write\",outcome=\"ok\"} 2")
        );
        assert!(text.contains(
            "syncline_requests_total{edge=\"http\",kind=\"read\",outcome=\"NotFound\"} 1"
        ));
        assert!(text.contains("syncline_commit_batch_size_bucket{le=\"4\"} 1"));
        assert!(text.contains("syncline_commit_batch_size_bucket{le=\"+Inf\"} 1"));
        assert!(text.contains("syncline_commit_flush_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("syncline_commit_flush_seconds_count 1"));
        assert!(text.contains("syncline_connections 2"));
        assert!(text.contains("syncline_present_identities 3"));
        assert!(text.contains("syncline_departing_identities 1"));
        assert!(text.contains(
            "syncline_http_responses_total{route=\"/v1/Services/{service}\",status=\"200\"} 1"
        ));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {family} ")), "{line}");
        }
    }
}
