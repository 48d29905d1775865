//! What the core counts about itself: requests by edge, kind and outcome; commit batch
//! sizes and flush latency; resyncs; HTTP responses by route and status; and, read when
//! a snapshot is taken, sessions, subscriptions and queued events. Updates are atomics
//! (the HTTP table takes a short lock), so counting costs the hot paths next to
//! nothing. The server renders a `Snapshot` for `GET /metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use syncline_proto::{ErrorCode, WireError};

/// The transport a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Quic = 0,
    Http = 1,
    WebSocket = 2,
}

const EDGES: [&str; 3] = ["quic", "http", "websocket"];

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

    fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(bound, count)| {
                cumulative += count.load(Relaxed);
                (*bound, cumulative)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum: self.sum_micros.load(Relaxed) as f64 / 1e6,
            count: self.count.load(Relaxed),
        }
    }
}

/// A histogram as read now: (upper bound, observations at or under it), cumulative.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
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

/// Gauges, read when a snapshot is taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Gauges {
    /// Live sessions: QUIC connections and SSE streams.
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

    /// Everything counted, read now, with the gauges given.
    pub fn snapshot(&self, gauges: Gauges, commit: &CommitStats) -> Snapshot {
        let mut requests = Vec::new();
        for (e, edge) in EDGES.iter().enumerate() {
            for (k, kind) in KINDS.iter().enumerate() {
                for o in 0..OUTCOMES {
                    let count = self.requests[(e * KINDS.len() + k) * OUTCOMES + o].load(Relaxed);
                    if count > 0 {
                        requests.push(RequestCount {
                            edge,
                            kind,
                            outcome: outcome_name(o),
                            count,
                        });
                    }
                }
            }
        }
        let http = match self.http.lock() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        Snapshot {
            gauges,
            commit_batches: commit.batches.load(Relaxed),
            commit_writes: commit.writes.load(Relaxed),
            commit_recomputed: commit.recomputed.load(Relaxed),
            resyncs: self.resyncs.load(Relaxed),
            requests,
            batch_size: commit.batch_size.snapshot(),
            flush_seconds: commit.flush_seconds.snapshot(),
            http,
        }
    }
}

/// Requests of one (edge, kind, outcome) so far.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestCount {
    pub edge: &'static str,
    pub kind: &'static str,
    /// `ok`, or the error code.
    pub outcome: &'static str,
    pub count: u64,
}

/// What the core has counted, read at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub gauges: Gauges,
    pub commit_batches: u64,
    pub commit_writes: u64,
    pub commit_recomputed: u64,
    pub resyncs: u64,
    /// Only the combinations that happened.
    pub requests: Vec<RequestCount>,
    /// Writes per commit batch.
    pub batch_size: HistogramSnapshot,
    /// Seconds per store apply and flush.
    pub flush_seconds: HistogramSnapshot,
    /// (route pattern, status) -> responses.
    pub http: BTreeMap<(String, u16), u64>,
}

/// What the commit task has done so far: batches (one flush each when durable) and the
/// writes in them. Their ratio says whether group commit is grouping.
pub struct CommitStats {
    pub batches: std::sync::atomic::AtomicU64,
    pub writes: std::sync::atomic::AtomicU64,
    /// Batches computed again because what they read may have changed under them
    /// (another node's write: cluster mode only).
    pub recomputed: std::sync::atomic::AtomicU64,
    /// Writes per batch, and seconds per store apply (and flush, when durable).
    pub batch_size: Histogram,
    pub flush_seconds: Histogram,
}

impl Default for CommitStats {
    fn default() -> Self {
        CommitStats {
            batches: Default::default(),
            writes: Default::default(),
            recomputed: Default::default(),
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
    fn a_snapshot_holds_what_was_counted() {
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
        let s = m.snapshot(gauges.clone(), &commit);
        assert_eq!(s.gauges, gauges);
        assert_eq!(
            s.requests,
            vec![
                RequestCount {
                    edge: "quic",
                    kind: "write",
                    outcome: "ok",
                    count: 2
                },
                RequestCount {
                    edge: "http",
                    kind: "read",
                    outcome: "NotFound",
                    count: 1
                },
            ]
        );
        assert_eq!(s.batch_size.count, 1);
        assert!(s.batch_size.buckets.contains(&(4.0, 1)));
        assert!(s.flush_seconds.buckets.contains(&(0.001, 1)));
        assert_eq!(
            s.http.get(&("/v1/Services/{service}".into(), 200)),
            Some(&1)
        );
    }
}
