//! The Redis peer behind `--peer redis` (cargo feature `redis`): a fresh `redis-server`
//! (Debian package `redis-server`; temp dir, 127.0.0.1, a free port, killed at the end)
//! made as durable as Syncline's default, `--appendonly yes --appendfsync always` (Redis
//! answers a write only after its append-only file was fsynced) and no snapshots, and
//! W1..W3 written against it with the `redis` crate, so the same parameters give result
//! lines with `"system": "redis"` next to Syncline's.
//!
//! - W1: each write is one Lua script (`EVALSHA`) that `SET`s the value and `INCR`s a
//!   per-key revision, returning the revision, as Syncline's write returns one. The
//!   writers share `connections` multiplexed connections (a clone of the crate's
//!   `MultiplexedConnection` pipelines its requests on the same socket).
//! - W2: `PUBLISH` to one channel with N subscriber connections (pub/sub needs a
//!   connection of its own per subscriber). The writer publishes in sequence order: all
//!   publishes due at a moment go out in one pipeline, with one pipeline in flight (a
//!   `PUBLISH` is answered once the message is in every subscriber's output buffer,
//!   without touching the disk), so every subscriber must see `seq` 1, 2, 3, ...
//!   exactly: the same accounting as Syncline's streams.
//!   Nothing is stored, as for Syncline's streams (Redis pub/sub has no history).
//! - W3: N subscribed connections; server RSS per connection and time to open them;
//!   then one `PUBLISH` that must reach them all.
//!
//! Every phase has a deadline; all traffic is loopback.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::measure::{self, Delivery, Drain, DrainClock, Outcome, Progress, DRAIN};
use super::workloads::{
    backstop, connection_of, writing_limit, Followed, Followers, OPEN_LIMIT, OVERRUN,
};
use super::{err, Error};

/// Connections opened at once.
const OPEN_CONCURRENCY: usize = 256;
/// How long Redis gets to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one request (a write, a publish, a subscription).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Sets the value and bumps the key's revision in one atomic step; returns the revision.
const WRITE_SCRIPT: &str =
    "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])";

/// A fresh redis-server on 127.0.0.1, killed when dropped.
pub struct RedisUnderTest {
    client: Client,
    process: measure::MeasuredProcess,
    dir: tempfile::TempDir,
}

/// A free loopback port (bound, then released for redis-server to take).
fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(err)?;
    Ok(l.local_addr().map_err(err)?.port())
}

/// The redis-server to start: `$REDIS_BIN`, else `redis-server` on the PATH.
fn redis_bin() -> String {
    std::env::var("REDIS_BIN").unwrap_or_else(|_| "redis-server".into())
}

/// Fails at once, naming the package, if there is no redis-server to start (checked
/// before any workload runs, so a long run does not end on it).
pub fn preflight() -> Result<(), Error> {
    let bin = redis_bin();
    match Command::new(&bin).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err(format!(
            "--peer redis: cannot run {bin}; install Redis with \
             `apt-get install redis-server`, or set REDIS_BIN"
        )),
    }
}

impl RedisUnderTest {
    /// Starts `redis-server` (or `$REDIS_BIN`) on 127.0.0.1 in a temp dir and waits
    /// until it answers `PING`.
    pub async fn start() -> Result<Self, Error> {
        let dir = tempfile::tempdir().map_err(err)?;
        let port = free_port()?;
        let bin = redis_bin();
        let child = Command::new(&bin)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            // No RDB snapshots: the append-only file is the durability.
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            // W3 opens 10,000 connections (Redis lowers this to its open-file limit,
            // which the harness raised before starting it).
            .args(["--maxclients", "20000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "starting {bin}: {e} (install Redis with `apt-get install redis-server`, \
                     or set REDIS_BIN)"
                )
            })?;
        let client = Client::open(format!("redis://127.0.0.1:{port}/")).map_err(err)?;
        let mut me = RedisUnderTest {
            client,
            process: measure::MeasuredProcess(Some(child)),
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = me.process.try_wait()? {
                return Err(format!("redis-server exited ({status}): {}", me.log_tail()));
            }
            let probe = async {
                let mut c = me.connection().await?;
                ::redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .map_err(err)
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
                return Ok(me);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server did not answer within {} s: {}",
                    START_TIMEOUT.as_secs(),
                    me.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines Redis logged (for errors).
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// A new multiplexed connection (its own socket; clones share it).
    pub async fn connection(&self) -> Result<MultiplexedConnection, Error> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Duration::from_secs(5))
            .set_response_timeout(REQUEST_TIMEOUT);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(err)
    }

    pub fn cpu_seconds(&self) -> f64 {
        self.process.cpu_seconds()
    }

    /// (current, peak) RSS in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        self.process.rss_kib()
    }
}

/// CPU used so far: Redis's and the harness's (server, client).
fn cpu(redis: &RedisUnderTest) -> (f64, f64) {
    (redis.cpu_seconds(), measure::self_cpu_seconds())
}

fn outcome(
    redis: &RedisUnderTest,
    cpu_before: (f64, f64),
    workload: &'static str,
    ops: f64,
    elapsed: Duration,
    (latency, delivery): (Histogram<u64>, Delivery),
    params: Value,
) -> Outcome {
    Outcome {
        workload,
        system: "redis",
        ops_per_s: ops / elapsed.as_secs_f64().max(1e-9),
        latency,
        delivery,
        server_cpu_s: redis.cpu_seconds() - cpu_before.0,
        client_cpu_s: measure::self_cpu_seconds() - cpu_before.1,
        cpu_ops: ops,
        server_rss_kib: redis.rss_kib().1,
        // Redis speaks TCP: the UDP counters are Syncline's concern only.
        udp_rcvbuf_errors: 0,
        udp_in_errors: 0,
        elapsed,
        params,
        extra: Map::new(),
    }
}

/// `PUBLISH`es `values` in order, pipelined in one round trip, with a time limit;
/// returns how many subscribers Redis handed each to.
async fn publish(
    c: &mut MultiplexedConnection,
    channel: &str,
    values: impl IntoIterator<Item = String>,
) -> Result<Vec<u64>, Error> {
    let mut pipe = ::redis::pipe();
    for value in values {
        pipe.cmd("PUBLISH").arg(channel).arg(value);
    }
    let send = pipe.query_async::<Vec<u64>>(c);
    match tokio::time::timeout(REQUEST_TIMEOUT, send).await {
        Ok(r) => r.map_err(err),
        Err(_) => Err(format!(
            "PUBLISH to {channel} took over {REQUEST_TIMEOUT:?}"
        )),
    }
}

/// W1 on Redis: `writers` writers each writing a ~200-byte value to its own key (or one
/// of `shared` keys) with a revision, as fast as acks come back, over `connections`
/// multiplexed connections.
pub async fn write(
    redis: &RedisUnderTest,
    writers: usize,
    connections: usize,
    shared: Option<usize>,
    duration: Duration,
) -> Result<Outcome, Error> {
    let progress = Progress::new("redis write");
    let connections = connections.clamp(1, writers.max(1));
    let (opened, sha) = measure::phase("redis write: opening connections", OPEN_LIMIT, async {
        let mut opened = Vec::with_capacity(connections);
        for _ in 0..connections {
            opened.push(redis.connection().await?);
        }
        let sha: String = ::redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(WRITE_SCRIPT)
            .query_async(&mut opened[0])
            .await
            .map_err(err)?;
        Ok((opened, sha))
    })
    .await?;
    let clients: Vec<MultiplexedConnection> = (0..writers)
        .map(|w| opened[connection_of(w, connections)].clone())
        .collect();
    let sha = Arc::new(sha);
    let cpu_before = cpu(redis);
    let (latency, elapsed) = super::workloads::write_loop(
        clients,
        shared,
        duration,
        &progress,
        move |mut c: MultiplexedConnection, key: String, value: Value| {
            let sha = sha.clone();
            async move {
                let revision = ::redis::cmd("EVALSHA")
                    .arg(sha.as_str())
                    .arg(2)
                    .arg(&key)
                    .arg(format!("{key}:revision"))
                    .arg(value.to_string())
                    .query_async::<i64>(&mut c)
                    .await
                    .map_err(|e| format!("redis write of {key}: {e}"))?;
                if revision < 1 {
                    return Err(format!("redis write of {key} returned revision {revision}"));
                }
                Ok(c)
            }
        },
    )
    .await?;
    let writes = latency.len() as f64;
    let mut o = outcome(
        redis,
        cpu_before,
        "write",
        writes,
        elapsed,
        (latency, Delivery::default()),
        json!({"writers": writers, "connections": connections, "shared": shared, "duration_s": duration.as_secs_f64()}),
    );
    o.add_cpu_per_1000_writes(writes);
    Ok(o)
}

/// A subscriber: its connection's stream of messages on the one channel it joined.
type Messages = std::pin::Pin<Box<dyn futures_util::Stream<Item = ::redis::Msg> + Send>>;

/// Opens `n` subscriber connections on `channel`, `OPEN_CONCURRENCY` at a time; each is
/// subscribed (Redis confirmed it) before this returns.
async fn subscribers(
    redis: &RedisUnderTest,
    n: usize,
    channel: &str,
    progress: &Progress,
) -> Result<Vec<Messages>, Error> {
    let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut set = JoinSet::new();
    for i in 0..n {
        let gate = gate.clone();
        let channel = channel.to_owned();
        let client = redis.client.clone();
        set.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(err)?;
            let open = async {
                let mut pubsub = client.get_async_pubsub().await.map_err(err)?;
                pubsub.subscribe(&channel).await.map_err(err)?;
                let messages: Messages = Box::pin(pubsub.into_on_message());
                Ok::<_, Error>((i, messages))
            };
            tokio::time::timeout(REQUEST_TIMEOUT, open)
                .await
                .map_err(|_| format!("opening subscriber {i} took over {REQUEST_TIMEOUT:?}"))?
        });
    }
    let mut opened: Vec<Option<Messages>> = (0..n).map(|_| None).collect();
    let mut done = 0;
    while let Some(r) = set.join_next().await {
        let (i, m) = r.map_err(err)??;
        opened[i] = Some(m);
        done += 1;
        if done % 100 == 0 {
            progress.update(done as f64 / n as f64, &format!("{done}/{n} subscribed"));
        }
    }
    Ok(opened.into_iter().flatten().collect())
}

/// Follows one subscriber until it has seen `seq` `total` or time runs out. The writer
/// publishes in `seq` order, so any other order is counted as such.
async fn follow(mut messages: Messages, total: u64, clock: DrainClock) -> Followed {
    let expired = clock.expired();
    tokio::pin!(expired);
    let mut h = measure::histogram();
    let mut d = Delivery::default();
    d.start_at(0);
    while d.last().unwrap_or(0) < total {
        let next = tokio::select! {
            biased;
            m = messages.next() => m,
            () = &mut expired => break,
        };
        let Some(msg) = next else { break };
        let v: Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap_or(Value::Null);
        let Some(seq) = v["seq"].as_u64() else {
            continue;
        };
        d.see(seq);
        if let Some(sent) = v["sent_ns"].as_u64().filter(|&s| s > 0) {
            measure::record(
                &mut h,
                Duration::from_nanos(measure::now_ns().saturating_sub(sent)),
            );
        }
    }
    // Whatever was not reached by the end counts as missed.
    d.missed += total.saturating_sub(d.last().unwrap_or(0));
    Followed::counted(h, d)
}

/// W2 on Redis: `subscribers` connections subscribed to one channel, one writer
/// publishing at `rate`/s.
pub async fn fanout(
    redis: &RedisUnderTest,
    subscribers_n: usize,
    rate: u32,
    duration: Duration,
) -> Result<Outcome, Error> {
    const CHANNEL: &str = "fanout";
    let progress = Progress::new("redis fanout");
    let mut writer = measure::phase(
        "redis fanout: opening the writer",
        OPEN_LIMIT,
        redis.connection(),
    )
    .await?;
    let total = (duration.as_secs_f64() * f64::from(rate)).ceil() as u64;
    let opened = measure::phase(
        "redis fanout: opening the subscribers",
        OPEN_LIMIT,
        subscribers(redis, subscribers_n, CHANNEL, &progress),
    )
    .await?;
    let drain = Drain::new(Instant::now() + writing_limit(duration) + DRAIN);
    let mut set = JoinSet::new();
    for m in opened {
        set.spawn(follow(m, total, drain.clock()));
    }
    let cpu_before = cpu(redis);
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let pad = "y".repeat(100);
    // Publishes that reached fewer subscribers than are subscribed (should stay 0).
    let short = measure::phase("redis fanout: publishing", writing_limit(duration), async {
        let mut short = 0u64;
        let mut sent = 0u64;
        while sent < total {
            // Every publish due by now goes out in one pipeline, one pipeline in flight:
            // that keeps publish order equal to `seq` (one connection, in order) and
            // keeps the rate when a round trip to 1,000 subscribers takes longer than a
            // tick, as Redis's own clients would pipeline.
            let due =
                ((start.elapsed().as_secs_f64() / interval.as_secs_f64()) as u64 + 1).min(total);
            if due <= sent {
                tokio::time::sleep_until((start + interval.mul_f64(sent as f64)).into()).await;
                continue;
            }
            let values = (sent + 1..=due).map(|seq| {
                json!({"seq": seq, "sent_ns": measure::now_ns(), "pad": pad}).to_string()
            });
            let reached = publish(&mut writer, CHANNEL, values).await?;
            short += reached
                .iter()
                .filter(|&&n| n < subscribers_n as u64)
                .count() as u64;
            let before = sent;
            sent = due;
            let per_second = u64::from(rate.max(1));
            if sent / per_second > before / per_second {
                progress.update(sent as f64 / total as f64, "");
            }
        }
        Ok(short)
    })
    .await?;
    drain.writers_done();
    let (seen, extra) = Followers::join("redis fanout: delivering", set, backstop(&drain))
        .await?
        .split();
    progress.finish();
    let elapsed = start.elapsed();
    let mut o = outcome(
        redis,
        cpu_before,
        "fanout",
        seen.1.received as f64,
        elapsed,
        seen,
        json!({"subscribers": subscribers_n, "rate": rate, "duration_s": duration.as_secs_f64(), "kind": "pubsub", "writes": total}),
    );
    o.extra.extend(extra);
    // Redis has no resync: a subscriber past its output-buffer limit is disconnected.
    o.extra.insert("publishes_short".into(), json!(short));
    Ok(o)
}

/// W3 on Redis: `connections` subscribed connections; then one publish that must
/// reach them all.
pub async fn conns(redis: &RedisUnderTest, connections: usize) -> Result<Outcome, Error> {
    const CHANNEL: &str = "conns";
    let progress = Progress::new("redis conns");
    let mut writer = measure::phase(
        "redis conns: opening the writer",
        OPEN_LIMIT,
        redis.connection(),
    )
    .await?;
    // Let Redis settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_before, _) = redis.rss_kib();
    let cpu_before = cpu(redis);
    let open_mark = measure::CpuMark::now(redis.cpu_seconds());
    let start = Instant::now();
    let opened = measure::phase(
        "redis conns: opening the connections",
        OPEN_LIMIT,
        subscribers(redis, connections, CHANNEL, &progress),
    )
    .await?;
    let open_s = start.elapsed().as_secs_f64();
    let open_cpu = open_mark.since(redis.cpu_seconds());
    let opened_n = opened.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_after, _) = redis.rss_kib();
    let drain = Drain::new(Instant::now() + OPEN_LIMIT);
    let mut set = JoinSet::new();
    for m in opened {
        set.spawn(follow(m, 1, drain.clock()));
    }
    let write_at = Instant::now();
    let value = json!({"seq": 1, "sent_ns": measure::now_ns()});
    let reached = measure::phase(
        "redis conns: publishing",
        REQUEST_TIMEOUT + OVERRUN,
        publish(&mut writer, CHANNEL, [value.to_string()]),
    )
    .await?;
    drain.writers_done();
    let (seen, extra) = Followers::join("redis conns: delivering", set, backstop(&drain))
        .await?
        .split();
    progress.finish();
    let delivered_in = write_at.elapsed();
    let mut o = outcome(
        redis,
        cpu_before,
        "conns",
        seen.1.received as f64,
        delivered_in,
        seen,
        json!({"connections": connections}),
    );
    o.extra.extend(extra);
    o.add_conns_figures(
        opened_n,
        open_s,
        connections,
        (rss_before, rss_after),
        open_cpu,
    );
    o.extra.insert(
        "publish_reached".into(),
        json!(reached.first().copied().unwrap_or(0)),
    );
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// W1..W3 against a real Redis, small; skipped where no `redis-server` is installed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workloads_run_against_a_local_redis() {
        let bin = std::env::var("REDIS_BIN").unwrap_or_else(|_| "redis-server".into());
        if Command::new(&bin).arg("--version").output().is_err() {
            eprintln!("no {bin} here: skipped");
            return;
        }
        let redis = RedisUnderTest::start().await.unwrap();
        let pid = redis.process.pid().unwrap();
        let w = write(&redis, 4, 2, None, Duration::from_millis(300))
            .await
            .unwrap();
        let f = fanout(&redis, 5, 50, Duration::from_millis(400))
            .await
            .unwrap();
        let c = conns(&redis, 20).await.unwrap();
        for o in [&w, &f, &c] {
            let d = o.delivery;
            assert_eq!((d.missed, d.duplicated, d.out_of_order), (0, 0, 0));
            assert!(o.ops_per_s > 0.0 && o.server_rss_kib > 0, "{}", o.workload);
            assert!(o.client_cpu_s > 0.0, "{}", o.workload);
            assert_eq!(o.system, "redis");
        }
        assert_eq!(w.params["connections"], 2);
        assert_eq!(f.delivery.received, 5 * 20);
        assert_eq!(f.extra["publishes_short"], 0);
        assert_eq!(c.delivery.received, 20);
        assert_eq!(c.cpu_ops, 20.0);
        drop(redis);
        assert!(
            measure::cpu_seconds(pid).is_none(),
            "redis-server outlived its Drop"
        );
    }
}
