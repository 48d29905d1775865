//! What the server counts about itself, and its Prometheus text rendering for
//! `GET /metrics`: requests by edge, kind and outcome; commit batch sizes and flush
//! latency; resyncs; HTTP responses by route and status; and, read when rendered,
//! connections, subscriptions and queued events. Updates are atomics (the HTTP table
//! takes a short lock), so counting costs the hot paths next to nothing.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use syncline_proto::{ErrorCode, WireError};

/// The transport a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Quic = 0,
    Http = 1,
}

const EDGES: [&str; 2] = ["quic", "http"];

/// What a request asked for, as counted.
pub const KINDS: [&str; 9] = [
    "hello",
    "ping",
    "read",
    "write",
    "publish",
    "admin",
    "subscribe",
    "unsubscribe",
    "update_token",
];

/// `ok`, then every error code.
const OUTCOMES: usize = 1 + ErrorCode::ALL.len();

fn outcome_index(result: Result<(), ErrorCode>) -> usize {
    match result {
        Ok(()) => 0,
        Err(code) => 1 + ErrorCode::ALL.iter().position(|c| *c == code).unwrap_or(0),
    }
}

fn outcome_name(i: usize) -> &'static str {
    match i {
        0 => "ok",
        n => ErrorCode::ALL.get(n - 1).map_or("unknown", |c| c.as_str()),
    }
}

/// A histogram with fixed bucket bounds (Prometheus `le`), lock-free.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum of observations, in millionths of the unit.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_micros
            .fetch_add((value * 1e6).max(0.0) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Writes per commit batch.
pub const BATCH_SIZE_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
/// Seconds per store apply + flush.
pub const FLUSH_SECONDS_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

pub struct Metrics {
    requests: Vec<AtomicU64>,
    pub resyncs: AtomicU64,
    http: Mutex<BTreeMap<(String, u16), u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: (0..EDGES.len() * KINDS.len() * OUTCOMES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            resyncs: AtomicU64::new(0),
            http: Mutex::new(BTreeMap::new()),
        }
    }
}

/// Gauges read when rendering.
pub struct Gauges {
    pub connections: usize,
    pub subscriptions: usize,
    pub queued_events: usize,
    /// Identities with a live connection, and those whose departure is pending.
    pub present: (usize, usize),
}

impl Metrics {
    /// Counts one request of `kind` (one of `KINDS`) on `edge` and how it ended.
    pub fn request<T>(&self, edge: Edge, kind: &str, result: &Result<T, WireError>) {
        let k = KINDS.iter().position(|n| *n == kind).unwrap_or(0);
        let o = outcome_index(result.as_ref().map(|_| ()).map_err(|e| e.code));
        let i = (edge as usize * KINDS.len() + k) * OUTCOMES + o;
        if let Some(c) = self.requests.get(i) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Counts one HTTP response of `route` (its pattern) with `status`.
    pub fn http_response(&self, route: &str, status: u16) {
        let mut table = match self.http.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        *table.entry((route.to_owned(), status)).or_insert(0) += 1;
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, gauges: &Gauges, commit: &CommitStats) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let gauge = |out: &mut String, name: &str, help: &str, v: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            &mut out,
            "syncline_connections",
            "Open QUIC connections.",
            gauges.connections.to_string(),
        );
        gauge(
            &mut out,
            "syncline_subscriptions",
            "Live subscriptions.",
            gauges.subscriptions.to_string(),
        );
        gauge(
            &mut out,
            "syncline_outbox_events",
            "Events queued for connections' event writers, all connections together.",
            gauges.queued_events.to_string(),
        );
        gauge(
            &mut out,
            "syncline_present_identities",
            "Identities (per service) with a live connection.",
            gauges.present.0.to_string(),
        );
        gauge(
            &mut out,
            "syncline_departing_identities",
            "Identities whose last connection ended and whose debouncing window runs.",
            gauges.present.1.to_string(),
        );
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            &mut out,
            "syncline_commit_batches_total",
            "Commit batches (one flush each when durable).",
            commit.batches.load(Relaxed),
        );
        counter(
            &mut out,
            "syncline_commit_writes_total",
            "Writes committed.",
            commit.writes.load(Relaxed),
        );
        counter(
            &mut out,
            "syncline_resyncs_total",
            "Subscriptions resynced with a snapshot after falling behind.",
            self.resyncs.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP syncline_requests_total Requests by edge, kind and outcome (ok or the error code; RateLimited counts refusals by the rate limit).\n# TYPE syncline_requests_total counter"
        );
        for (e, edge) in EDGES.iter().enumerate() {
            for (k, kind) in KINDS.iter().enumerate() {
                for o in 0..OUTCOMES {
                    let v = self.requests[(e * KINDS.len() + k) * OUTCOMES + o].load(Relaxed);
                    if v > 0 {
                        let outcome = outcome_name(o);
                        let _ = writeln!(
                            out,
                            "syncline_requests_total{{edge=\"{edge}\",kind=\"{kind}\",outcome=\"{outcome}\"}} {v}"
                        );
                    }
                }
            }
        }
        commit.batch_size.render(
            &mut out,
            "syncline_commit_batch_size",
            "Writes per commit batch.",
        );
        commit.flush_seconds.render(
            &mut out,
            "syncline_commit_flush_seconds",
            "Time to apply and flush one commit batch.",
        );
        let _ = writeln!(
            out,
            "# HELP syncline_http_responses_total HTTP responses by route and status.\n# TYPE syncline_http_responses_total counter"
        );
        let table = match self.http.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        for ((route, status), v) in table.iter() {
            let route = route.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "syncline_http_responses_total{{route=\"{route}\",status=\"{status}\"}} {v}"
            );
        }
        out
    }
}

/// What the commit task has done so far: batches (one flush each when durable) and the
/// writes in them. Their ratio says whether group commit is grouping.
pub struct CommitStats {
    pub batches: std::sync::atomic::AtomicU64,
    pub writes: std::sync::atomic::AtomicU64,
    /// Writes per batch, and seconds per store apply (and flush, when durable).
    pub batch_size: Histogram,
    pub flush_seconds: Histogram,
}

impl Default for CommitStats {
    fn default() -> Self {
        CommitStats {
            batches: Default::default(),
            writes: Default::default(),
            batch_size: Histogram::new(BATCH_SIZE_BOUNDS),
            flush_seconds: Histogram::new(FLUSH_SECONDS_BOUNDS),
        }
    }
}

impl CommitStats {
    pub fn flush_took(&self, writes: usize, took: std::time::Duration) {
        self.batch_size.observe(writes as f64);
        self.flush_seconds.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_in_prometheus_text() {
        let m = Metrics::default();
        m.request(Edge::Quic, "write", &Ok::<(), WireError>(()));
        m.request(Edge::Quic, "write", &Ok::<(), WireError>(()));
        m.request::<()>(Edge::Http, "read", &Err(WireError::not_found("document")));
        let commit = CommitStats::default();
        commit.flush_took(3, std::time::Duration::from_micros(700));
        m.http_response("/v1/Services/{service}", 200);
        let gauges = Gauges {
            connections: 2,
            subscriptions: 5,
            queued_events: 0,
            present: (3, 1),
        };
        let text = m.render(&gauges, &commit);
        assert!(
            text.contains("syncline_requests_total{edge=\"quic\",kind=\"write\",outcome=\"ok\"} 2")
        );
        assert!(text.contains(
            "syncline_requests_total{edge=\"http\",kind=\"read\",outcome=\"NotFound\"} 1"
        ));
        assert!(text.contains("syncline_commit_batch_size_bucket{le=\"4\"} 1"));
        assert!(text.contains("syncline_commit_flush_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("syncline_commit_flush_seconds_count 1"));
        assert!(text.contains("syncline_connections 2"));
        assert!(text.contains("syncline_present_identities 3"));
        assert!(text.contains("syncline_departing_identities 1"));
        assert!(text.contains(
            "syncline_http_responses_total{route=\"/v1/Services/{service}\",status=\"200\"} 1"
        ));
        // Every sample line belongs to a declared metric.
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
