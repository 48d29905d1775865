//! The bare-transport peer behind `--peer quinn`: W2 and W3 against
//! `syncline-bench-quinn` (`src/quinn_peer.rs`), a fan-out server with Syncline's QUIC
//! endpoint (`syncline_server::net::bind`: same TLS, transport settings and UDP
//! buffers), Syncline's framing and nothing else: no storage, no sessions, no
//! revisions. What Syncline adds on top of the transport is the difference between its
//! rows and these (`"system": "quinn"`).
//!
//! The clients are Syncline's too (`Client::endpoint_for`: the same TLS and transport
//! settings, the same 32 shared UDP endpoints as the Syncline workloads). A subscriber
//! opens a stream, says `sub` and waits for the server's `ok` on the one event stream
//! the server opens to it; the writer says `pub` and then sends one frame per event,
//! carrying `seq` and `sent_ns`, at the rate, without waiting (nothing is acknowledged:
//! there is no store). Delivery is checked by `seq`, which must arrive 1, 2, 3, ... on
//! every subscriber. Every phase has a deadline; all traffic is loopback.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use syncline_client::{Client, ClientConfig, Credential};
use syncline_proto::frame::FrameDecoder;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::measure::{self, Delivery, Drain, DrainClock, Outcome, Progress, DRAIN};
use super::workloads::{backstop, writing_limit, Followed, Followers, OPEN_LIMIT, OVERRUN};
use super::{err, Error};

/// Client UDP endpoints the connections are spread over (as for Syncline's workloads).
const ENDPOINTS: usize = 32;
/// Connections opened at once.
const OPEN_CONCURRENCY: usize = 256;
/// How long the server gets to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one subscriber to be registered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest frame a client accepts.
const MAX_FRAME: u32 = 64 * 1024;

/// A fresh `syncline-bench-quinn` on 127.0.0.1, killed when dropped.
pub struct QuinnUnderTest {
    config: ClientConfig,
    endpoints: Vec<quinn::Endpoint>,
    next: std::sync::atomic::AtomicUsize,
    process: measure::MeasuredProcess,
    _dir: tempfile::TempDir,
}

/// Fails at once if `syncline-bench-quinn` is not built (checked before any workload
/// runs).
pub fn preflight() -> Result<(), Error> {
    peer_bin().map(|_| ())
}

/// `syncline-bench-quinn` next to this executable (cargo builds it with the harness).
fn peer_bin() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    let mut dir = exe
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("syncline-bench-quinn");
    if bin.is_file() {
        return Ok(bin);
    }
    let release = if dir.ends_with("release") {
        " --release"
    } else {
        ""
    };
    // `cargo run` builds only the binary it runs; `cargo build` builds both.
    Err(format!(
        "{} is missing; build it with `cargo build{release} -p syncline-bench` \
         (same CARGO_TARGET_DIR as this tool)",
        bin.display()
    ))
}

/// The frame `body` with its length prefix (Syncline's framing).
fn frame(body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// Reads frames off `recv` into `decoder` until one is complete; `None` at the end.
async fn next_frame(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Option<Bytes>, Error> {
    loop {
        if let Some(f) = decoder.next_frame().map_err(err)? {
            return Ok(Some(f));
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
            Ok(None) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A registered subscriber: its connection and the event stream the server opened.
pub struct Subscriber {
    conn: quinn::Connection,
    events: quinn::RecvStream,
    decoder: FrameDecoder,
}

impl QuinnUnderTest {
    /// Starts the peer in a temp dir and waits for the address it prints.
    pub async fn start() -> Result<Self, Error> {
        let dir = tempfile::tempdir().map_err(err)?;
        let bin = peer_bin()?;
        let mut child = Command::new(&bin)
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout from the quinn peer")?;
        let process = measure::MeasuredProcess(Some(child));
        // One line, read on a blocking thread; the timeout bounds the wait (if it fires,
        // the process is killed by `process`'s Drop and the read ends with it).
        let line = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        });
        let line = match tokio::time::timeout(START_TIMEOUT, line).await {
            Ok(r) => r.map_err(err)?.map_err(err)?,
            Err(_) => {
                return Err(format!(
                    "the quinn peer printed no address within {} s",
                    START_TIMEOUT.as_secs()
                ))
            }
        };
        let addr = line.trim();
        if addr.is_empty() {
            return Err("the quinn peer exited before it listened".into());
        }
        let config = ClientConfig::new(
            addr,
            dir.path().join("cert.pem"),
            Credential::Token(String::new()),
        )
        .map_err(err)?;
        let endpoints = (0..ENDPOINTS)
            .map(|_| Client::endpoint_for(&config).map_err(err))
            .collect::<Result<_, _>>()?;
        Ok(QuinnUnderTest {
            config,
            endpoints,
            next: Default::default(),
            process,
            _dir: dir,
        })
    }

    /// A new connection with its stream open and its role sent.
    async fn open(&self, role: &[u8]) -> Result<(quinn::Connection, quinn::SendStream), Error> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let endpoint = &self.endpoints[i % self.endpoints.len()];
        let conn = endpoint
            .connect(self.config.server, &self.config.server_name)
            .map_err(err)?
            .await
            .map_err(err)?;
        let (mut send, _recv) = conn.open_bi().await.map_err(err)?;
        send.write_all(&frame(role)).await.map_err(err)?;
        Ok((conn, send))
    }

    /// A subscriber, registered (the server said `ok`) when this returns.
    async fn subscriber(&self) -> Result<Subscriber, Error> {
        let (conn, send) = self.open(b"sub").await?;
        // The stream stays open: finishing it is not needed, and dropping it would
        // reset nothing the server reads after the role.
        drop(send);
        let mut events = conn.accept_uni().await.map_err(err)?;
        let mut decoder = FrameDecoder::new(MAX_FRAME);
        match next_frame(&mut events, &mut decoder).await? {
            Some(ok) if &ok[..] == b"ok" => Ok(Subscriber {
                conn,
                events,
                decoder,
            }),
            _ => Err("the quinn peer did not confirm a subscriber".into()),
        }
    }

    /// Opens `n` subscribers, `OPEN_CONCURRENCY` at a time.
    async fn subscribers(
        self: &Arc<Self>,
        n: usize,
        progress: &Progress,
    ) -> Result<Vec<Subscriber>, Error> {
        let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
        let mut set = JoinSet::new();
        for i in 0..n {
            let (me, gate) = (self.clone(), gate.clone());
            set.spawn(async move {
                let _permit = gate.acquire_owned().await.map_err(err)?;
                let s = tokio::time::timeout(REQUEST_TIMEOUT, me.subscriber())
                    .await
                    .map_err(|_| {
                        format!("opening subscriber {i} took over {REQUEST_TIMEOUT:?}")
                    })??;
                Ok::<_, Error>(s)
            });
        }
        let mut opened = Vec::with_capacity(n);
        while let Some(r) = set.join_next().await {
            opened.push(r.map_err(err)??);
            if opened.len() % 100 == 0 {
                progress.update(
                    opened.len() as f64 / n as f64,
                    &format!("{}/{n} subscribed", opened.len()),
                );
            }
        }
        Ok(opened)
    }

    pub fn cpu_seconds(&self) -> f64 {
        self.process.cpu_seconds()
    }

    /// (current, peak) RSS in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        self.process.rss_kib()
    }
}

/// Follows one subscriber until it has seen `seq` `total` or time runs out.
async fn follow(mut s: Subscriber, total: u64, clock: DrainClock) -> Followed {
    let expired = clock.expired();
    tokio::pin!(expired);
    let mut h = measure::histogram();
    let mut d = Delivery::default();
    d.start_at(0);
    while d.last().unwrap_or(0) < total {
        let next = tokio::select! {
            biased;
            f = next_frame(&mut s.events, &mut s.decoder) => f,
            () = &mut expired => break,
        };
        let Ok(Some(body)) = next else { break };
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
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

/// What was used so far: the peer's CPU, the harness's CPU, the UDP error counters.
struct Before {
    server_cpu: f64,
    client_cpu: f64,
    udp: (u64, u64),
}

fn before(q: &QuinnUnderTest) -> Before {
    Before {
        server_cpu: q.cpu_seconds(),
        client_cpu: measure::self_cpu_seconds(),
        udp: measure::udp_errors(),
    }
}

fn outcome(
    q: &QuinnUnderTest,
    before: Before,
    workload: &'static str,
    ops: f64,
    elapsed: Duration,
    (latency, delivery): (Histogram<u64>, Delivery),
    params: Value,
) -> Outcome {
    let udp = measure::udp_errors();
    Outcome {
        workload,
        system: "quinn",
        ops_per_s: ops / elapsed.as_secs_f64().max(1e-9),
        latency,
        delivery,
        server_cpu_s: q.cpu_seconds() - before.server_cpu,
        client_cpu_s: measure::self_cpu_seconds() - before.client_cpu,
        cpu_ops: ops,
        server_rss_kib: q.rss_kib().1,
        udp_rcvbuf_errors: udp.0.saturating_sub(before.udp.0),
        udp_in_errors: udp.1.saturating_sub(before.udp.1),
        elapsed,
        params,
        extra: Map::new(),
    }
}

fn subscriber_packets(connections: &[quinn::Connection]) -> measure::SubscriberPackets {
    measure::SubscriberPackets::sum(connections.iter().map(quinn::Connection::stats))
}

/// W2 on bare quinn: `subscribers` connections, one writer sending `rate` frames/s.
pub async fn fanout(
    q: QuinnUnderTest,
    subscribers: usize,
    rate: u32,
    duration: Duration,
) -> Result<Outcome, Error> {
    let q = Arc::new(q);
    let progress = Progress::new("quinn fanout");
    let (_writer_conn, mut writer) = measure::phase(
        "quinn fanout: opening the writer",
        OPEN_LIMIT,
        q.open(b"pub"),
    )
    .await?;
    let total = (duration.as_secs_f64() * f64::from(rate)).ceil() as u64;
    let opened = measure::phase(
        "quinn fanout: opening the subscribers",
        OPEN_LIMIT,
        q.subscribers(subscribers, &progress),
    )
    .await?;
    let drain = Drain::new(Instant::now() + writing_limit(duration) + DRAIN);
    let mut set = JoinSet::new();
    let connections: Vec<quinn::Connection> = opened.iter().map(|s| s.conn.clone()).collect();
    for s in opened {
        set.spawn(follow(s, total, drain.clock()));
    }
    let baseline = before(&q);
    let packets_before = subscriber_packets(&connections);
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let pad = "y".repeat(100);
    measure::phase("quinn fanout: sending", writing_limit(duration), async {
        for seq in 1..=total {
            tick.tick().await;
            let body = json!({"seq": seq, "sent_ns": measure::now_ns(), "pad": pad});
            writer
                .write_all(&frame(body.to_string().as_bytes()))
                .await
                .map_err(err)?;
            if seq % u64::from(rate.max(1)) == 0 {
                progress.update(seq as f64 / total as f64, "");
            }
        }
        Ok(())
    })
    .await?;
    drain.writers_done();
    let (seen, extra) = Followers::join("quinn fanout: delivering", set, backstop(&drain))
        .await?
        .split();
    progress.finish();
    let elapsed = start.elapsed();
    let delivered = seen.1.received as f64;
    let mut o = outcome(
        &q,
        baseline,
        "fanout",
        delivered,
        elapsed,
        seen,
        json!({"subscribers": subscribers, "rate": rate, "duration_s": duration.as_secs_f64(), "kind": "frames", "writes": total}),
    );
    o.extra.extend(extra);
    o.add_delivery_packets(
        subscriber_packets(&connections).since(packets_before),
        delivered,
    );
    Ok(o)
}

/// W3 on bare quinn: `connections` subscribed connections, then one frame that must
/// reach them all.
pub async fn conns(q: QuinnUnderTest, connections: usize) -> Result<Outcome, Error> {
    let q = Arc::new(q);
    let progress = Progress::new("quinn conns");
    let (_writer_conn, mut writer) = measure::phase(
        "quinn conns: opening the writer",
        OPEN_LIMIT,
        q.open(b"pub"),
    )
    .await?;
    // Let the peer settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_before, _) = q.rss_kib();
    let baseline = before(&q);
    let open_mark = measure::CpuMark::now(q.cpu_seconds());
    let start = Instant::now();
    let opened = measure::phase(
        "quinn conns: opening the connections",
        OPEN_LIMIT,
        q.subscribers(connections, &progress),
    )
    .await?;
    let open_s = start.elapsed().as_secs_f64();
    let open_cpu = open_mark.since(q.cpu_seconds());
    let subscribed: Vec<quinn::Connection> = opened.iter().map(|s| s.conn.clone()).collect();
    let open_datagrams = subscriber_packets(&subscribed).datagrams();
    let opened_n = opened.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_after, _) = q.rss_kib();
    let drain = Drain::new(Instant::now() + OPEN_LIMIT);
    let mut set = JoinSet::new();
    for s in opened {
        set.spawn(follow(s, 1, drain.clock()));
    }
    let packets_before = subscriber_packets(&subscribed);
    let write_at = Instant::now();
    let body = json!({"seq": 1, "sent_ns": measure::now_ns()});
    measure::phase("quinn conns: sending", OVERRUN, async {
        writer
            .write_all(&frame(body.to_string().as_bytes()))
            .await
            .map_err(err)
    })
    .await?;
    drain.writers_done();
    let (seen, extra) = Followers::join("quinn conns: delivering", set, backstop(&drain))
        .await?
        .split();
    progress.finish();
    let delivered_in = write_at.elapsed();
    let delivered = seen.1.received as f64;
    let mut o = outcome(
        &q,
        baseline,
        "conns",
        delivered,
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
    o.add_open_datagrams(open_datagrams, opened_n);
    o.add_delivery_packets(
        subscriber_packets(&subscribed).since(packets_before),
        delivered,
    );
    Ok(o)
}
