//! The etcd peer behind `--peer etcd` (cargo feature `etcd`): a fresh single-node etcd
//! (temp data dir, 127.0.0.1, default durable settings, killed at the end) and W1..W3
//! written against it with the `etcd-client` crate, so the same parameters give result
//! lines with `"system": "etcd"` next to Syncline's.
//!
//! W2's delivery accounting uses the `seq` each value carries, not `mod_revision`: etcd's
//! revision is global, and the writer keeps several puts in flight, so etcd may commit
//! seq 7 before seq 6. A watcher must see every seq exactly once (`missed`,
//! `duplicated`) and in etcd's own commit order (`out_of_order`: a `mod_revision` that
//! does not increase). Every loop is bounded in count and time; all traffic is loopback.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, EventType, WatchStream};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::measure::{self, Delivery, Drain, DrainClock, Outcome, Progress, DRAIN};
use super::workloads::{backstop, connection_of, writing_limit, Followed, Followers, OPEN_LIMIT};
use super::{err, Error};

/// Connections opened at once.
const OPEN_CONCURRENCY: usize = 256;
/// How long etcd gets to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one request (a put, a watch being created).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh etcd on 127.0.0.1, killed when dropped.
pub struct EtcdUnderTest {
    endpoint: String,
    process: measure::MeasuredProcess,
    data: tempfile::TempDir,
}

/// Two free loopback ports (bound together so they differ, then released).
fn free_ports() -> Result<(u16, u16), Error> {
    let a = TcpListener::bind("127.0.0.1:0").map_err(err)?;
    let b = TcpListener::bind("127.0.0.1:0").map_err(err)?;
    Ok((
        a.local_addr().map_err(err)?.port(),
        b.local_addr().map_err(err)?.port(),
    ))
}

/// Fails at once, naming the package, if there is no etcd to start (checked before
/// any workload runs, so a long run does not end on it).
pub fn preflight() -> Result<(), Error> {
    let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
    match Command::new(&bin).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err(format!(
            "--peer etcd: cannot run {bin}; install etcd with \
             `apt-get install etcd-server`, or set ETCD_BIN"
        )),
    }
}

impl EtcdUnderTest {
    /// Starts `etcd` (or `$ETCD_BIN`) as one node on 127.0.0.1 in a temp dir and waits
    /// until it answers.
    pub async fn start() -> Result<Self, Error> {
        let data = tempfile::tempdir().map_err(err)?;
        let (client_port, peer_port) = free_ports()?;
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(data.path().join("etcd.log")).map_err(err)?;
        let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        let child = Command::new(&bin)
            .args(["--name", "bench", "--data-dir"])
            .arg(data.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!("starting {bin}: {e} (install etcd with `apt-get install etcd-server`, or set ETCD_BIN)")
            })?;
        let mut me = EtcdUnderTest {
            endpoint: client_url,
            process: measure::MeasuredProcess(Some(child)),
            data,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = me
                .process
                .0
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("etcd exited ({status}): {}", me.log_tail()));
            }
            let probe = async {
                let mut c = me.client().await?;
                c.get("syncline-bench-ready", None).await.map_err(err)
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
                return Ok(me);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd did not answer within {} s: {}",
                    START_TIMEOUT.as_secs(),
                    me.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines etcd logged (for errors).
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.data.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// A new client, with its own connection (opened by its first request).
    pub async fn client(&self) -> Result<Client, Error> {
        let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
        Client::connect([&self.endpoint], Some(options))
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

/// One put with a time limit.
async fn put(c: &mut Client, key: &str, value: String) -> Result<i64, Error> {
    match tokio::time::timeout(REQUEST_TIMEOUT, c.put(key, value, None)).await {
        Ok(r) => Ok(r.map_err(err)?.header().map_or(0, |h| h.revision())),
        Err(_) => Err(format!("etcd put of {key} took over {REQUEST_TIMEOUT:?}")),
    }
}

/// CPU used so far: etcd's and the harness's (server, client).
fn cpu(etcd: &EtcdUnderTest) -> (f64, f64) {
    (etcd.cpu_seconds(), measure::self_cpu_seconds())
}

fn outcome(
    etcd: &EtcdUnderTest,
    cpu_before: (f64, f64),
    workload: &'static str,
    ops: f64,
    elapsed: Duration,
    (latency, delivery): (Histogram<u64>, Delivery),
    params: Value,
) -> Outcome {
    Outcome {
        workload,
        system: "etcd",
        ops_per_s: ops / elapsed.as_secs_f64().max(1e-9),
        latency,
        delivery,
        server_cpu_s: etcd.cpu_seconds() - cpu_before.0,
        client_cpu_s: measure::self_cpu_seconds() - cpu_before.1,
        cpu_ops: ops,
        server_rss_kib: etcd.rss_kib().1,
        // etcd speaks TCP: the UDP counters are Syncline's concern only.
        udp_rcvbuf_errors: 0,
        udp_in_errors: 0,
        elapsed,
        params,
        extra: Map::new(),
    }
}

/// W1 on etcd: `writers` writers each putting a ~200-byte value to its own key (or one
/// of `shared` keys) as fast as acks come back, over `connections` clients: a clone of
/// an etcd `Client` shares its gRPC channel (one HTTP/2 connection, requests
/// multiplexed on it), which is how etcd's own client shares a connection.
pub async fn write(
    etcd: &EtcdUnderTest,
    writers: usize,
    connections: usize,
    shared: Option<usize>,
    duration: Duration,
) -> Result<Outcome, Error> {
    let progress = Progress::new("etcd write");
    let connections = connections.clamp(1, writers.max(1));
    let opened = measure::phase("etcd write: opening connections", OPEN_LIMIT, async {
        let mut opened = Vec::with_capacity(connections);
        for _ in 0..connections {
            let mut c = etcd.client().await?;
            // Connections are opened lazily: open each before the clock starts.
            c.get("warm-up", None).await.map_err(err)?;
            opened.push(c);
        }
        Ok(opened)
    })
    .await?;
    let clients: Vec<Client> = (0..writers)
        .map(|w| opened[connection_of(w, connections)].clone())
        .collect();
    let cpu_before = cpu(etcd);
    let (latency, elapsed) = super::workloads::write_loop(
        clients,
        shared,
        duration,
        &progress,
        |mut c: Client, key: String, value: Value| async move {
            put(&mut c, &key, value.to_string()).await?;
            Ok(c)
        },
    )
    .await?;
    let writes = latency.len() as f64;
    let mut o = outcome(
        etcd,
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

/// Opens `n` clients, each with its own connection and one watch on `key` (created
/// before this returns), `OPEN_CONCURRENCY` at a time.
async fn watchers(
    etcd: &EtcdUnderTest,
    n: usize,
    key: &str,
    progress: &Progress,
) -> Result<Vec<(Client, WatchStream)>, Error> {
    let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut set = JoinSet::new();
    for i in 0..n {
        let gate = gate.clone();
        let key = key.to_owned();
        let endpoint = etcd.endpoint.clone();
        set.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(err)?;
            let open = async {
                let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
                let mut c = Client::connect([&endpoint], Some(options))
                    .await
                    .map_err(err)?;
                let mut ws = c.watch(key.as_str(), None).await.map_err(err)?;
                // The first response confirms the watch: nothing written after it is lost.
                match ws.message().await.map_err(err)? {
                    Some(r) if r.created() => Ok((i, c, ws)),
                    _ => Err(format!("etcd did not create the watch on {key}")),
                }
            };
            tokio::time::timeout(REQUEST_TIMEOUT, open)
                .await
                .map_err(|_| format!("opening watcher {i} took over {REQUEST_TIMEOUT:?}"))?
        });
    }
    let mut opened: Vec<Option<(Client, WatchStream)>> = (0..n).map(|_| None).collect();
    let mut done = 0;
    while let Some(r) = set.join_next().await {
        let (i, c, ws) = r.map_err(err)??;
        opened[i] = Some((c, ws));
        done += 1;
        if done % 100 == 0 {
            progress.update(done as f64 / n as f64, &format!("{done}/{n} watching"));
        }
    }
    Ok(opened.into_iter().flatten().collect())
}

/// Follows one watch until it has seen seqs `1..=total` or time runs out.
async fn follow(client: Client, mut ws: WatchStream, total: u64, clock: DrainClock) -> Followed {
    let expired = clock.expired();
    tokio::pin!(expired);
    let mut h = measure::histogram();
    let mut d = Delivery::default();
    let mut seen = vec![false; total as usize + 1];
    let mut distinct = 0u64;
    let mut last_revision = 0i64;
    while distinct < total {
        let next = tokio::select! {
            biased;
            m = ws.message() => m,
            () = &mut expired => break,
        };
        let Ok(Some(resp)) = next else { break };
        if resp.canceled() {
            break;
        }
        for e in resp.events() {
            let Some(kv) = e.kv().filter(|_| e.event_type() == EventType::Put) else {
                continue;
            };
            let v: Value = serde_json::from_slice(kv.value()).unwrap_or(Value::Null);
            let Some(seq) = v["seq"].as_u64() else {
                continue;
            };
            d.received += 1;
            if kv.mod_revision() <= last_revision {
                d.out_of_order += 1;
            } else {
                last_revision = kv.mod_revision();
            }
            match seen.get_mut(seq as usize) {
                Some(s) if *s => d.duplicated += 1,
                Some(s) if seq > 0 => {
                    *s = true;
                    distinct += 1;
                }
                _ => {}
            }
            if let Some(sent) = v["sent_ns"].as_u64().filter(|&s| s > 0) {
                measure::record(
                    &mut h,
                    Duration::from_nanos(measure::now_ns().saturating_sub(sent)),
                );
            }
        }
    }
    // Whatever was not seen by the end counts as missed.
    d.missed = total - distinct;
    drop(client);
    Followed::counted(h, d)
}

/// W2 on etcd: `subscribers` clients watching one key, one writer putting at `rate`/s.
pub async fn fanout(
    etcd: &EtcdUnderTest,
    subscribers: usize,
    rate: u32,
    duration: Duration,
) -> Result<Outcome, Error> {
    const KEY: &str = "fanout";
    let progress = Progress::new("etcd fanout");
    let writer = measure::phase("etcd fanout: opening the writer", OPEN_LIMIT, async {
        let mut writer = etcd.client().await?;
        put(
            &mut writer,
            KEY,
            json!({"seq": 0, "sent_ns": 0}).to_string(),
        )
        .await?;
        Ok(writer)
    })
    .await?;
    let total = (duration.as_secs_f64() * f64::from(rate)).ceil() as u64;
    let opened = measure::phase(
        "etcd fanout: opening the watchers",
        OPEN_LIMIT,
        watchers(etcd, subscribers, KEY, &progress),
    )
    .await?;
    let drain = Drain::new(Instant::now() + writing_limit(duration) + DRAIN);
    let mut set = JoinSet::new();
    for (c, ws) in opened {
        set.spawn(follow(c, ws, total, drain.clock()));
    }
    let cpu_before = cpu(etcd);
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    // As for Syncline: sent at the rate without waiting for each ack, a bounded number
    // in flight (on the writer's one connection).
    let in_flight = Arc::new(Semaphore::new(256));
    let pad = Arc::new("y".repeat(100));
    measure::phase("etcd fanout: writing", writing_limit(duration), async {
        let mut writes = JoinSet::new();
        for seq in 1..=total {
            tick.tick().await;
            let permit = in_flight.clone().acquire_owned().await.map_err(err)?;
            let mut writer = writer.clone();
            let pad = pad.clone();
            writes.spawn(async move {
                let value = json!({"seq": seq, "sent_ns": measure::now_ns(), "pad": *pad});
                let r = put(&mut writer, KEY, value.to_string()).await;
                drop(permit);
                r
            });
            if seq % u64::from(rate.max(1)) == 0 {
                progress.update(seq as f64 / total as f64, "");
            }
        }
        while let Some(r) = writes.join_next().await {
            r.map_err(err)??;
        }
        Ok(())
    })
    .await?;
    drain.writers_done();
    let (seen, extra) = Followers::join("etcd fanout: delivering", set, backstop(&drain))
        .await?
        .split();
    progress.finish();
    let elapsed = start.elapsed();
    let mut o = outcome(
        etcd,
        cpu_before,
        "fanout",
        seen.1.received as f64,
        elapsed,
        seen,
        json!({"subscribers": subscribers, "rate": rate, "duration_s": duration.as_secs_f64(), "kind": "document", "writes": total}),
    );
    o.extra.extend(extra);
    // etcd has no snapshot resync: a watcher that falls too far behind is cancelled.
    Ok(o)
}

/// W3 on etcd: `connections` clients, each with its own connection and one watch; then
/// one put that must reach them all.
pub async fn conns(etcd: &EtcdUnderTest, connections: usize) -> Result<Outcome, Error> {
    const KEY: &str = "conns";
    let progress = Progress::new("etcd conns");
    let mut writer = measure::phase("etcd conns: opening the writer", OPEN_LIMIT, async {
        let mut writer = etcd.client().await?;
        put(&mut writer, KEY, json!({"seq": 0}).to_string()).await?;
        Ok(writer)
    })
    .await?;
    // Let etcd settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_before, _) = etcd.rss_kib();
    let cpu_before = cpu(etcd);
    let open_mark = measure::CpuMark::now(etcd.cpu_seconds());
    let start = Instant::now();
    let opened = measure::phase(
        "etcd conns: opening the connections",
        OPEN_LIMIT,
        watchers(etcd, connections, KEY, &progress),
    )
    .await?;
    let open_s = start.elapsed().as_secs_f64();
    let open_cpu = open_mark.since(etcd.cpu_seconds());
    let opened_n = opened.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_after, _) = etcd.rss_kib();
    let drain = Drain::new(Instant::now() + OPEN_LIMIT);
    let mut set = JoinSet::new();
    for (c, ws) in opened {
        set.spawn(follow(c, ws, 1, drain.clock()));
    }
    let write_at = Instant::now();
    put(
        &mut writer,
        KEY,
        json!({"seq": 1, "sent_ns": measure::now_ns()}).to_string(),
    )
    .await?;
    drain.writers_done();
    let (seen, extra) = Followers::join("etcd conns: delivering", set, backstop(&drain))
        .await?
        .split();
    progress.finish();
    let delivered_in = write_at.elapsed();
    let mut o = outcome(
        etcd,
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
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// W1..W3 against a real etcd, small; skipped where no `etcd` binary is installed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workloads_run_against_a_local_etcd() {
        let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        if Command::new(&bin).arg("--version").output().is_err() {
            eprintln!("no {bin} here: skipped");
            return;
        }
        let etcd = EtcdUnderTest::start().await.unwrap();
        let pid = etcd.process.pid().unwrap();
        let w = write(&etcd, 4, 2, None, Duration::from_millis(300))
            .await
            .unwrap();
        let f = fanout(&etcd, 5, 50, Duration::from_millis(400))
            .await
            .unwrap();
        let c = conns(&etcd, 20).await.unwrap();
        for o in [&w, &f, &c] {
            let d = o.delivery;
            assert_eq!((d.missed, d.duplicated, d.out_of_order), (0, 0, 0));
            assert!(o.ops_per_s > 0.0 && o.server_rss_kib > 0, "{}", o.workload);
            assert_eq!(o.system, "etcd");
        }
        assert_eq!(f.delivery.received, 5 * 20);
        assert_eq!(c.delivery.received, 20);
        drop(etcd);
        assert!(
            measure::cpu_seconds(pid).is_none(),
            "etcd outlived its Drop"
        );
    }
}
