//! The soak: mixed load over every object kind for a long time, to show that the server
//! stays healthy and its memory flat. Workers on backend connections set and update
//! documents, push to and trim lists, set and remove map items, and publish to streams,
//! each reconnecting after a random number of operations (connections come and go);
//! two watchers consume events of every kind; one stalled subscriber subscribes to the
//! busiest objects and never reads, so the server has to bound what it holds for it.
//! The server's RSS is sampled every second. Every loop is bounded in count and time;
//! all traffic is loopback.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use syncline_client::{Client, ClientConfig, ItemKey};
use tokio::task::JoinSet;

use super::server::ServerUnderTest;
use super::{err, Error};

/// Documents, streams and maps the workers share.
const DOCS: u64 = 8;
const STREAMS: u64 = 2;
const MAPS: u64 = 4;
/// Items a worker keeps in its own list and in its share of a map (then it removes).
const KEEP: usize = 32;
/// A worker reconnects after this many operations at most.
const MAX_OPS_PER_CONNECTION: u64 = 200;
/// Longest a single operation may take before it counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Errors quoted in the report.
const ERROR_SAMPLES: usize = 5;

#[derive(Clone, Debug)]
pub struct SoakParams {
    pub duration: Duration,
    pub workers: usize,
    pub seed: u64,
}

#[derive(Debug, Default)]
pub struct SoakReport {
    pub elapsed_s: f64,
    pub ops: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub connections_opened: u64,
    pub events_received: u64,
    pub stalled_subscriptions: usize,
    /// (seconds since the start, server RSS in KiB).
    pub rss_samples: Vec<(f64, u64)>,
    pub server_cpu_s: f64,
}

/// Mean of the samples whose time falls in `[from, to)` of the run (as fractions).
fn mean_between(samples: &[(f64, u64)], elapsed: f64, from: f64, to: f64) -> Option<f64> {
    let v: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= from * elapsed && *t < to * elapsed)
        .map(|(_, kib)| *kib)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<u64>() as f64 / v.len() as f64)
}

impl SoakReport {
    pub fn ops_per_s(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.ops as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    /// Mean RSS over the middle third of the run (after warm-up).
    pub fn rss_mid_mean_kib(&self) -> Option<f64> {
        mean_between(&self.rss_samples, self.elapsed_s, 1.0 / 3.0, 2.0 / 3.0)
    }

    /// Mean RSS over the last third.
    pub fn rss_last_mean_kib(&self) -> Option<f64> {
        mean_between(&self.rss_samples, self.elapsed_s, 2.0 / 3.0, 1.01)
    }

    /// Growth of the last third's mean RSS over the middle third's, in percent.
    pub fn rss_growth_pct(&self) -> Option<f64> {
        let (mid, last) = (self.rss_mid_mean_kib()?, self.rss_last_mean_kib()?);
        (mid > 0.0).then(|| (last - mid) / mid * 100.0)
    }

    pub fn rss_peak_kib(&self) -> u64 {
        self.rss_samples.iter().map(|(_, k)| *k).max().unwrap_or(0)
    }

    pub fn to_json(&self, params: &SoakParams, context: &Value) -> Value {
        let round = |x: f64| (x * 10.0).round() / 10.0;
        json!({
            "workload": "soak",
            "system": "syncline",
            "params": {
                "duration_s": params.duration.as_secs_f64(),
                "workers": params.workers,
                "seed": params.seed,
            },
            "elapsed_s": round(self.elapsed_s),
            "ops": self.ops,
            "ops_per_s": round(self.ops_per_s()),
            "errors": self.errors,
            "error_samples": self.error_samples,
            "connections_opened": self.connections_opened,
            "events_received": self.events_received,
            "stalled_subscriptions": self.stalled_subscriptions,
            "rss_samples": self.rss_samples.len(),
            "rss_first_kib": self.rss_samples.first().map(|s| s.1),
            "rss_mid_third_mean_kib": self.rss_mid_mean_kib().map(round),
            "rss_last_third_mean_kib": self.rss_last_mean_kib().map(round),
            "rss_growth_pct": self.rss_growth_pct().map(|g| (g * 100.0).round() / 100.0),
            "rss_peak_kib": self.rss_peak_kib(),
            "rss_kib_over_time": self.rss_samples.iter().map(|(t, k)| json!([round(*t), k])).collect::<Vec<_>>(),
            "server_cpu_s": round(self.server_cpu_s),
            "context": context,
        })
    }

    pub fn table(&self) -> String {
        let f = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.0}"));
        format!(
            "| workload | s | ops | ops/s | errors | connections | events | RSS first KiB | RSS mid-third KiB | RSS last-third KiB | growth % | RSS peak KiB |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
             | soak | {:.0} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            self.elapsed_s,
            self.ops,
            self.ops_per_s(),
            self.errors,
            self.connections_opened,
            self.events_received,
            self.rss_samples.first().map_or(0, |s| s.1),
            f(self.rss_mid_mean_kib()),
            f(self.rss_last_mean_kib()),
            self.rss_growth_pct().map_or("-".into(), |g| format!("{g:.2}")),
            self.rss_peak_kib(),
        )
    }
}

/// Counters the tasks share.
#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    errors: AtomicU64,
    connections: AtomicU64,
    events: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Tally {
    fn error(&self, what: &str, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() < ERROR_SAMPLES {
            s.push(format!("{what}: {e}"));
        }
    }
}

async fn connect(config: &ClientConfig, tally: &Tally) -> Result<Client, Error> {
    let c = tokio::time::timeout(OP_TIMEOUT, Client::connect(config.clone()))
        .await
        .map_err(|_| "connecting timed out".to_owned())?
        .map_err(err)?;
    tally.connections.fetch_add(1, Ordering::Relaxed);
    Ok(c)
}

/// One operation on one kind, chosen at random; the worker's own list and map keys
/// keep at most `KEEP` items each (the oldest goes first), so the data stays bounded.
async fn one_op(
    c: &Client,
    w: usize,
    n: u64,
    rng: &mut StdRng,
    list: &mut VecDeque<u64>,
    keys: &mut VecDeque<String>,
) -> Result<(), syncline_client::Error> {
    let pad = "p".repeat(rng.gen_range(0..400) as usize);
    match rng.gen_range(0..10) {
        0..=2 => {
            let doc = c.document(&format!("doc-{}", rng.gen_range(0..DOCS)));
            if rng.gen_range(0..2) == 0 {
                doc.set(&json!({ "w": w, "n": n, "pad": pad })).await?;
            } else {
                doc.update(&json!({ format!("w{w}"): n })).await?;
            }
        }
        3 => {
            c.document(&format!("doc-{}", rng.gen_range(0..DOCS)))
                .get()
                .await?;
        }
        4 | 5 => {
            let l = c.list(&format!("list-{w}"));
            if list.len() >= KEEP {
                if let Some(oldest) = list.pop_front() {
                    l.remove(oldest).await?;
                }
            } else {
                let written = l.push(&json!({ "n": n, "pad": pad })).await?;
                if let Some(ItemKey::Index(i)) = written.key {
                    list.push_back(i);
                }
            }
        }
        6 | 7 => {
            let m = c.map(&format!("map-{}", w as u64 % MAPS));
            if keys.len() >= KEEP {
                if let Some(oldest) = keys.pop_front() {
                    m.remove(&oldest).await?;
                }
            } else {
                let key = format!("w{w}-{n}");
                m.set(&key, &json!({ "n": n })).await?;
                keys.push_back(key);
            }
        }
        _ => {
            c.stream(&format!("stream-{}", rng.gen_range(0..STREAMS)))
                .publish(&json!({ "w": w, "n": n }))
                .await?;
        }
    }
    Ok(())
}

/// A worker: connect, run a random number of operations, disconnect, again, until
/// `deadline`. It cleans its list and map share up at the end.
async fn worker(config: ClientConfig, w: usize, seed: u64, deadline: Instant, tally: Arc<Tally>) {
    let mut rng = StdRng::seed_from_u64(seed ^ (w as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let (mut list, mut keys) = (VecDeque::new(), VecDeque::new());
    let mut n = 0u64;
    while Instant::now() < deadline {
        let c = match connect(&config, &tally).await {
            Ok(c) => c,
            Err(e) => {
                tally.error("connect", e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ops = 1 + rng.gen_range(0..MAX_OPS_PER_CONNECTION);
        for _ in 0..ops {
            if Instant::now() >= deadline {
                break;
            }
            n += 1;
            let op = one_op(&c, w, n, &mut rng, &mut list, &mut keys);
            match tokio::time::timeout(OP_TIMEOUT, op).await {
                Ok(Ok(())) => {
                    tally.ops.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => tally.error("operation", e),
                Err(_) => tally.error("operation", "timed out"),
            }
        }
        drop(c);
    }
}

/// A watcher: subscribed to one object of each kind, reading every event.
async fn watcher(config: ClientConfig, deadline: Instant, tally: Arc<Tally>) {
    let c = match connect(&config, &tally).await {
        Ok(c) => c,
        Err(e) => return tally.error("watcher connect", e),
    };
    let mut subs = Vec::new();
    for sub in [
        c.document("doc-0").subscribe().await,
        c.list("list-0").subscribe(None).await,
        c.map("map-0").subscribe().await,
        c.stream("stream-0").subscribe().await,
    ] {
        match sub {
            Ok(s) => subs.push(s),
            Err(e) => tally.error("watcher subscribe", e),
        }
    }
    let mut set = JoinSet::new();
    for mut s in subs {
        let tally = tally.clone();
        set.spawn(async move {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, s.next()).await {
                    Err(_) => return,
                    Ok(Some(_)) => {
                        tally.events.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) => return tally.error("watcher", "subscription ended"),
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// Creates what the workers share, so that subscriptions find it.
async fn setup(config: &ClientConfig, tally: &Tally) -> Result<(), Error> {
    let c = connect(config, tally).await?;
    for d in 0..DOCS {
        c.document(&format!("doc-{d}"))
            .set(&json!({}))
            .await
            .map_err(err)?;
    }
    for s in 0..STREAMS {
        c.stream(&format!("stream-{s}"))
            .publish(&json!({ "hello": s }))
            .await
            .map_err(err)?;
    }
    c.list("list-0").push(&json!("start")).await.map_err(err)?;
    c.map("map-0").set("start", &json!(0)).await.map_err(err)?;
    Ok(())
}

pub async fn soak(server: &ServerUnderTest, params: &SoakParams) -> Result<SoakReport, Error> {
    let config = ClientConfig::from_admin(&server.admin).map_err(err)?;
    let tally = Arc::new(Tally::default());
    setup(&config, &tally).await?;
    // The stalled subscriber: subscribed to the busiest objects, never reading.
    let stalled_client = connect(&config, &tally).await?;
    let mut stalled = Vec::new();
    for d in 0..DOCS {
        stalled.push(
            stalled_client
                .document(&format!("doc-{d}"))
                .subscribe()
                .await
                .map_err(err)?,
        );
    }
    stalled.push(stalled_client.map("map-0").subscribe().await.map_err(err)?);
    stalled.push(
        stalled_client
            .list("list-0")
            .subscribe(None)
            .await
            .map_err(err)?,
    );
    stalled.push(
        stalled_client
            .stream("stream-0")
            .subscribe()
            .await
            .map_err(err)?,
    );

    let start = Instant::now();
    let deadline = start + params.duration;
    let cpu_before = server.cpu_seconds();
    let mut set = JoinSet::new();
    for w in 0..params.workers {
        set.spawn(worker(
            config.clone(),
            w,
            params.seed,
            deadline,
            tally.clone(),
        ));
    }
    for _ in 0..2 {
        set.spawn(watcher(config.clone(), deadline, tally.clone()));
    }
    let mut rss = Vec::new();
    let mut next_sample = start;
    let mut last_report = start;
    while Instant::now() < deadline {
        rss.push((start.elapsed().as_secs_f64(), server.rss_kib().0));
        if last_report.elapsed() >= Duration::from_secs(30) {
            last_report = Instant::now();
            eprintln!(
                "soak: {:.0}/{:.0} s, {} ops, {} errors, RSS {} KiB",
                start.elapsed().as_secs_f64(),
                params.duration.as_secs_f64(),
                tally.ops.load(Ordering::Relaxed),
                tally.errors.load(Ordering::Relaxed),
                server.rss_kib().0
            );
        }
        next_sample += Duration::from_secs(1);
        tokio::time::sleep_until(next_sample.min(deadline).into()).await;
    }
    rss.push((start.elapsed().as_secs_f64(), server.rss_kib().0));
    // Workers finish the operation they are in (bounded by OP_TIMEOUT).
    while set.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let stalled_subscriptions = stalled.len();
    drop(stalled);
    drop(stalled_client);
    let error_samples = tally
        .samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(SoakReport {
        elapsed_s: elapsed,
        ops: tally.ops.load(Ordering::Relaxed),
        errors: tally.errors.load(Ordering::Relaxed),
        error_samples,
        connections_opened: tally.connections.load(Ordering::Relaxed),
        events_received: tally.events.load(Ordering::Relaxed),
        stalled_subscriptions,
        rss_samples: rss,
        server_cpu_s: server.cpu_seconds() - cpu_before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_growth_compares_the_last_third_with_the_middle_third() {
        let r = SoakReport {
            elapsed_s: 9.0,
            rss_samples: (0..9)
                .map(|t| (t as f64, [50, 90, 99, 100, 100, 100, 110, 110, 110][t]))
                .collect(),
            ..SoakReport::default()
        };
        assert_eq!(r.rss_mid_mean_kib(), Some(100.0));
        assert_eq!(r.rss_last_mean_kib(), Some(110.0));
        assert_eq!(r.rss_growth_pct(), Some(10.0));
        assert_eq!(r.rss_peak_kib(), 110);
        assert_eq!(SoakReport::default().rss_growth_pct(), None);
    }
}
