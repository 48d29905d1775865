//! The drivers of W1 (`write`), W2 (`fanout`) and W3 (`conns`), one each, run against
//! any [`Peer`]; what they share with the Syncline-only workloads (`chat`, `write
//! --http`): the measured window ([`Sample`]), the writers' loop, opening many
//! connections at once, and the phases' time limits. Every loop is bounded in count
//! and time; all traffic is loopback.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::follow::{follow_all, Followers};
use super::measure::{self, Delivery, Drain, Outcome, Progress, SubscriberPackets, DRAIN};
use super::peer::{Ack, Order, Peer, Written};
use super::{err, Error};

/// Connections opened at once.
const OPEN_CONCURRENCY: usize = 256;
/// Longest wait for one connection (with its subscription) to open.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Fan-out writes awaiting their acknowledgement at once, where the system orders them.
const IN_FLIGHT: usize = 256;

/// How long opening the clients of a workload may take.
pub(super) const OPEN_LIMIT: Duration = Duration::from_secs(120);
/// How long a measured phase may overrun its planned duration (acks still in flight,
/// subscribers draining) before it is called stuck.
pub(super) const OVERRUN: Duration = Duration::from_secs(60);

/// How long a fan-out's writing phase may take. A saturated system acknowledges late and
/// its writer keeps a bounded number in flight, so the planned writes can take several
/// times the planned duration (1,000 subscribers at 1,000 writes/s on two cores: 40-75 s
/// for 10 s of writes); the rate reached is reported beside the rate offered.
fn writing_limit(duration: Duration) -> Duration {
    duration * 10 + OVERRUN
}

/// How long joining a workload's followers may take: each gives up by itself at the
/// drain's deadline; this is only the backstop past it.
pub(super) fn backstop(drain: &Drain) -> Duration {
    drain.deadline().saturating_duration_since(Instant::now()) + OVERRUN
}

/// The connection writer `w` of `writers` uses when they share `connections`: writers
/// are dealt round-robin, so the counts per connection differ by at most one.
pub fn connection_of(w: usize, connections: usize) -> usize {
    w % connections.max(1)
}

/// What the system under test and the harness had used when a measured window began.
pub(super) struct Sample {
    server_cpu: f64,
    node_cpu: Vec<f64>,
    client_cpu: f64,
    udp: (u64, u64),
}

impl Sample {
    pub(super) fn take<P: Peer>(peer: &P) -> Self {
        Sample {
            server_cpu: peer.server_cpu_seconds(),
            node_cpu: peer.node_cpu_seconds(),
            client_cpu: measure::self_cpu_seconds(),
            udp: udp_errors::<P>(),
        }
    }

    /// The result line of the window that began with this sample and ends now.
    pub(super) fn outcome<P: Peer>(
        &self,
        peer: &P,
        workload: &'static str,
        ops: f64,
        elapsed: Duration,
        (latency, delivery): (Histogram<u64>, Delivery),
        params: Value,
    ) -> Outcome {
        let udp = udp_errors::<P>();
        let mut extra = Map::new();
        // A cluster's nodes each (the first is the writer's): a node's own cost per
        // operation, beside the sum every system reports.
        let node_cpu: Vec<f64> = peer
            .node_cpu_seconds()
            .iter()
            .zip(&self.node_cpu)
            .map(|(now, before)| now - before)
            .collect();
        if !node_cpu.is_empty() {
            let per_op = |s: &f64| (s * 1e6 / ops.max(1.0) * 100.0).round() / 100.0;
            extra.insert(
                "node_cpu_us_per_op".into(),
                node_cpu.iter().map(per_op).collect(),
            );
        }
        Outcome {
            workload,
            system: P::SYSTEM,
            ops_per_s: ops / elapsed.as_secs_f64().max(1e-9),
            latency,
            delivery,
            server_cpu_s: peer.server_cpu_seconds() - self.server_cpu,
            client_cpu_s: measure::self_cpu_seconds() - self.client_cpu,
            cpu_ops: ops,
            server_rss_kib: peer.process().rss_kib().1,
            udp_rcvbuf_errors: udp.0.saturating_sub(self.udp.0),
            udp_in_errors: udp.1.saturating_sub(self.udp.1),
            elapsed,
            params,
            extra,
        }
    }
}

/// The kernel's UDP error counters, for a system spoken to over QUIC; TCP systems have
/// no part in them.
fn udp_errors<P: Peer>() -> (u64, u64) {
    if P::QUIC {
        measure::udp_errors()
    } else {
        (0, 0)
    }
}

/// Opens one thing per item of `items` with `open`, `OPEN_CONCURRENCY` at a time, each
/// within `REQUEST_TIMEOUT`; returns them in the order of `items`.
pub(super) async fn open_all<I, T, F, Fut>(
    items: Vec<I>,
    progress: &Progress,
    open: F,
) -> Result<Vec<T>, Error>
where
    T: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: Future<Output = Result<T, Error>> + Send + 'static,
{
    let n = items.len();
    let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let mut set = JoinSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let (gate, opening) = (gate.clone(), open(item));
        set.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(err)?;
            let opened = tokio::time::timeout(REQUEST_TIMEOUT, opening)
                .await
                .map_err(|_| format!("opening connection {i} took over {REQUEST_TIMEOUT:?}"))??;
            Ok::<_, Error>((i, opened))
        });
    }
    let mut opened: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut done = 0;
    while let Some(r) = set.join_next().await {
        let (i, t) = r.map_err(err)??;
        opened[i] = Some(t);
        done += 1;
        if done % 100 == 0 {
            progress.update(done as f64 / n as f64, &format!("{done}/{n} opened"));
        }
    }
    Ok(opened.into_iter().flatten().collect())
}

/// A subscriber to `topic` for each ticket.
async fn subscribers<P: Peer>(
    peer: &Arc<P>,
    topic: &'static str,
    tickets: Vec<P::Ticket>,
    progress: &Progress,
) -> Result<Vec<(P::Link, P::Events)>, Error> {
    open_all(tickets, progress, |ticket| {
        let peer = peer.clone();
        async move { peer.subscribe(ticket, topic).await }
    })
    .await
}

/// The subscribers' QUIC packets so far, summed over their connections.
fn packets<'a, P: Peer>(links: impl IntoIterator<Item = &'a P::Link>) -> SubscriberPackets {
    SubscriberPackets::sum(links.into_iter().filter_map(P::transport_stats))
}

/// A fan-out's value: its `seq`, its send time, and `pad` (to about 150 bytes).
fn payload(seq: u64, pad: &str) -> Value {
    json!({"seq": seq, "sent_ns": measure::now_ns(), "pad": pad})
}

/// Opens `writers` connections and, where the system stores `topic`, writes its first
/// value (seq 0) before anyone subscribes; returns them and the position the topic is
/// at, where its subscribers start.
async fn open_writers<P: Peer>(
    peer: &P,
    writers: usize,
    topic: &str,
) -> Result<(Vec<P::Conn>, u64), Error> {
    let mut opened = Vec::with_capacity(writers);
    for _ in 0..writers.max(1) {
        opened.push(peer.connect().await?);
    }
    let floor = match P::ORDER {
        Order::Positions | Order::Commits => {
            let first = json!({"seq": 0, "sent_ns": 0});
            let ack = peer.publish(&mut opened[0], topic, first).await?;
            ack.at.unwrap_or(0)
        }
        // Pub/sub stores nothing: there is no first value to start from, and one sent
        // now could reach a subscriber that joins while it travels.
        Order::Sender => 0,
    };
    Ok((opened, floor))
}

/// W1: `writers` writers, each writing a ~200-byte value as fast as acks come back,
/// multiplexed over `connections` connections (the way each system's client sends
/// concurrent requests on one connection).
pub async fn write<P: Peer>(
    peer: &Arc<P>,
    writers: usize,
    connections: usize,
    shared: Option<usize>,
    duration: Duration,
) -> Result<Outcome, Error> {
    let label = format!("{} write", P::SYSTEM);
    let progress = Progress::new(&label);
    let connections = connections.clamp(1, writers.max(1));
    let opened = measure::phase(
        &format!("{label}: opening connections"),
        OPEN_LIMIT,
        async {
            let mut opened = Vec::with_capacity(connections);
            for _ in 0..connections {
                opened.push(peer.connect().await?);
            }
            Ok(opened)
        },
    )
    .await?;
    let clients: Vec<P::Conn> = (0..writers)
        .map(|w| opened[connection_of(w, connections)].clone())
        .collect();
    let before = Sample::take(&**peer);
    let writer = peer.clone();
    let (latency, elapsed) = write_loop(
        clients,
        shared,
        duration,
        &progress,
        move |mut c: P::Conn, key: String, value: Value| {
            let peer = writer.clone();
            async move {
                peer.write(&mut c, &key, &value).await?;
                Ok(c)
            }
        },
    )
    .await?;
    let writes = latency.len() as f64;
    let mut o = before.outcome(
        &**peer,
        "write",
        writes,
        elapsed,
        (latency, Delivery::default()),
        json!({"writers": writers, "connections": connections, "shared": shared, "duration_s": duration.as_secs_f64()}),
    );
    o.add_cpu_per_1000_writes(writes);
    Ok(o)
}

/// W1's measured part, for every system and for `write --http`: each client writes a
/// ~200-byte JSON value to its own key (or one of `shared` keys) as fast as
/// acknowledgements come back, until `duration` is over. `write` sends one value and
/// hands the client back. Returns the acknowledgement latencies and the time the
/// writers took.
pub(super) async fn write_loop<C, F, Fut>(
    clients: Vec<C>,
    shared: Option<usize>,
    duration: Duration,
    progress: &Progress,
    write: F,
) -> Result<(Histogram<u64>, Duration), Error>
where
    C: Send + 'static,
    F: Fn(C, String, Value) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<C, Error>> + Send,
{
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = JoinSet::new();
    for (w, mut c) in clients.into_iter().enumerate() {
        let key = match shared {
            Some(n) => format!("shared-{}", w % n.max(1)),
            None => format!("writer-{w}"),
        };
        let write = write.clone();
        set.spawn(async move {
            let mut h = measure::histogram();
            let mut n = 0u64;
            let pad = "x".repeat(150);
            while Instant::now() < deadline {
                let value = json!({"writer": w, "n": n, "pad": pad});
                let t = Instant::now();
                c = write(c, key.clone(), value).await?;
                measure::record(&mut h, t.elapsed());
                n += 1;
            }
            Ok::<_, Error>(h)
        });
    }
    let ticker = progress.tick_for(duration);
    let joined = measure::phase("writing", duration + OVERRUN, async {
        let mut latency = measure::histogram();
        while let Some(r) = set.join_next().await {
            latency.add(r.map_err(err)??).map_err(err)?;
        }
        Ok(latency)
    })
    .await;
    ticker.abort();
    let latency = joined?;
    progress.finish();
    Ok((latency, start.elapsed()))
}

/// What a fan-out's writer got back: each write's acknowledgement latency and answer.
struct Acks {
    latency: Histogram<u64>,
    answers: Vec<Ack>,
}

impl Acks {
    fn new() -> Self {
        Acks {
            latency: measure::histogram(),
            answers: Vec::new(),
        }
    }

    /// Adds one call's answers, which took `took` from send to acknowledgement.
    fn add(&mut self, answers: Vec<Ack>, took: Duration) {
        for _ in &answers {
            measure::record(&mut self.latency, took);
        }
        self.answers.extend(answers);
    }

    /// The highest position the system gave a write, if it gave any.
    fn last_at(&self) -> Option<u64> {
        self.answers.iter().filter_map(|a| a.at).max()
    }

    /// What the writer saw, for the peer's own figures; `took`: from the first send to
    /// the last acknowledgement.
    fn written(self, workload: &'static str, subscribers: usize, took: Duration) -> Written {
        Written {
            workload,
            subscribers,
            per_s: self.answers.len() as f64 / took.as_secs_f64().max(1e-9),
            acks: self.latency,
            reached: self.answers.iter().filter_map(|a| a.reached).collect(),
        }
    }
}

/// Sends `total` values (seq 1..=total) to `topic` at `rate`/s over `writers` (write
/// `seq` on `writers[seq % len]`), without waiting for each acknowledgement: where the
/// system orders the writes, up to `IN_FLIGHT` of them await their acks at once; where
/// the writer does (`Order::Sender`), one call at a time carries every write due by
/// then, so they leave in seq order and the rate holds when a round trip takes longer
/// than a tick.
async fn send_at_rate<P: Peer>(
    peer: &Arc<P>,
    writers: &[P::Conn],
    topic: &'static str,
    rate: u32,
    total: u64,
    progress: &Progress,
) -> Result<Acks, Error> {
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let per_second = u64::from(rate.max(1));
    let in_order = P::ORDER == Order::Sender;
    let in_flight = Arc::new(Semaphore::new(if in_order { 1 } else { IN_FLIGHT }));
    let pad: Arc<str> = "y".repeat(100).into();
    let mut calls = JoinSet::new();
    let mut sent = 0u64;
    while sent < total {
        // Write n is due n - 1 intervals after the start; a late one goes at once.
        tokio::time::sleep_until((start + interval.mul_f64(sent as f64)).into()).await;
        let permit = in_flight.clone().acquire_owned().await.map_err(err)?;
        let due = if in_order {
            ((start.elapsed().as_secs_f64() / interval.as_secs_f64()) as u64 + 1).min(total)
        } else {
            sent + 1
        };
        let seqs = sent + 1..=due;
        let mut writer = writers[(sent + 1) as usize % writers.len()].clone();
        let (peer, pad) = (peer.clone(), pad.clone());
        calls.spawn(async move {
            let t = Instant::now();
            let values = seqs.map(|seq| payload(seq, &pad)).collect();
            let answers = peer.publish_all(&mut writer, topic, values).await;
            drop(permit);
            answers.map(|a| (a, t.elapsed()))
        });
        if due / per_second > sent / per_second {
            progress.update(due as f64 / total as f64, "");
        }
        sent = due;
    }
    let mut acks = Acks::new();
    while let Some(r) = calls.join_next().await {
        let (answers, took) = r.map_err(err)??;
        acks.add(answers, took);
    }
    Ok(acks)
}

/// W2: `subscribers` connections on one topic, one writer at `rate` updates/s.
pub async fn fanout<P: Peer>(
    peer: &Arc<P>,
    subscribers: usize,
    rate: u32,
    duration: Duration,
) -> Result<Outcome, Error> {
    const TOPIC: &str = "fanout";
    let label = format!("{} fanout", P::SYSTEM);
    let progress = Progress::new(&label);
    let (writers, floor) = measure::phase(
        &format!("{label}: opening the writers"),
        OPEN_LIMIT,
        open_writers(&**peer, P::writers_for(rate), TOPIC),
    )
    .await?;
    let tickets = peer.tickets(subscribers, TOPIC)?;
    let opened = measure::phase(
        &format!("{label}: opening the subscribers"),
        OPEN_LIMIT,
        self::subscribers(peer, TOPIC, tickets, &progress),
    )
    .await?;
    let total = (duration.as_secs_f64() * f64::from(rate)).ceil() as u64;
    let (target_tx, target_rx) = watch::channel(None);
    let drain = Drain::new(Instant::now() + writing_limit(duration) + DRAIN);
    let (links, set) = follow_all::<P>(opened, floor, &target_rx, &drain);
    let before = Sample::take(&**peer);
    let packets_before = packets::<P>(&links);
    let start = Instant::now();
    let acks = measure::phase(
        &format!("{label}: writing"),
        writing_limit(duration),
        send_at_rate(peer, &writers, TOPIC, rate, total, &progress),
    )
    .await?;
    let last_at = acks.last_at();
    let written = acks.written("fanout", subscribers, start.elapsed());
    drain.writers_done();
    target_tx.send_replace(Some(P::ORDER.target(last_at, floor, total)));
    let (seen, extra) = Followers::join(&format!("{label}: delivering"), set, backstop(&drain))
        .await?
        .split();
    progress.finish();
    let elapsed = start.elapsed();
    let delivered = seen.1.received as f64;
    let mut o = before.outcome(
        &**peer,
        "fanout",
        delivered,
        elapsed,
        seen,
        json!({"subscribers": subscribers, "rate": rate, "duration_s": duration.as_secs_f64(), "kind": peer.kind(), "writes": total}),
    );
    o.extra.extend(extra);
    peer.writer_figures(&written, &mut o.extra);
    if P::QUIC {
        o.add_delivery_packets(packets::<P>(&links).since(packets_before), delivered);
    }
    drop(links);
    Ok(o)
}

/// W3: `connections` connections, each with its own subscription (and, where the
/// system has them, its own identity and token); then one write that must reach them
/// all.
pub async fn conns<P: Peer>(peer: &Arc<P>, connections: usize) -> Result<Outcome, Error> {
    const TOPIC: &str = "conns";
    let label = format!("{} conns", P::SYSTEM);
    let progress = Progress::new(&label);
    let (mut writers, floor) = measure::phase(
        &format!("{label}: opening the writer"),
        OPEN_LIMIT,
        open_writers(&**peer, 1, TOPIC),
    )
    .await?;
    let tickets = peer.tickets(connections, TOPIC)?;
    // Let the server settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_before, _) = peer.process().rss_kib();
    let before = Sample::take(&**peer);
    let open_mark = measure::CpuMark::now(peer.server_cpu_seconds());
    let start = Instant::now();
    let opened = measure::phase(
        &format!("{label}: opening the connections"),
        OPEN_LIMIT,
        subscribers(peer, TOPIC, tickets, &progress),
    )
    .await?;
    let open_s = start.elapsed().as_secs_f64();
    let open_cpu = open_mark.since(peer.server_cpu_seconds());
    let opened_n = opened.len();
    let open_datagrams = packets::<P>(opened.iter().map(|(link, _)| link)).datagrams();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_after, _) = peer.process().rss_kib();
    let (target_tx, target_rx) = watch::channel(None);
    let drain = Drain::new(Instant::now() + OPEN_LIMIT);
    let (links, set) = follow_all::<P>(opened, floor, &target_rx, &drain);
    let packets_before = packets::<P>(&links);
    let write_at = Instant::now();
    let answer = measure::phase(&format!("{label}: writing"), OPEN_LIMIT, async {
        let value = json!({"seq": 1, "sent_ns": measure::now_ns()});
        peer.publish(&mut writers[0], TOPIC, value).await
    })
    .await?;
    let mut acks = Acks::new();
    acks.add(vec![answer], write_at.elapsed());
    let last_at = acks.last_at();
    let written = acks.written("conns", connections, write_at.elapsed());
    drain.writers_done();
    target_tx.send_replace(Some(P::ORDER.target(last_at, floor, 1)));
    let (seen, extra) = Followers::join(
        &format!("{label}: delivering the write"),
        set,
        backstop(&drain),
    )
    .await?
    .split();
    progress.finish();
    let delivered_in = write_at.elapsed();
    let delivered = seen.1.received as f64;
    let mut params = json!({"connections": connections});
    if let Some(first_time) = peer.first_time() {
        params["first_time"] = json!(first_time);
    }
    let mut o = before.outcome(&**peer, "conns", delivered, delivered_in, seen, params);
    o.extra.extend(extra);
    o.add_conns_figures(
        opened_n,
        open_s,
        connections,
        (rss_before, rss_after),
        open_cpu,
    );
    peer.writer_figures(&written, &mut o.extra);
    if P::QUIC {
        o.add_open_datagrams(open_datagrams, opened_n);
        o.add_delivery_packets(packets::<P>(&links).since(packets_before), delivered);
    }
    drop(links);
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::connection_of;

    #[test]
    fn writers_are_dealt_evenly_over_the_connections() {
        for (writers, connections) in [(64, 8), (64, 64), (64, 5), (3, 1)] {
            let mut per = vec![0; connections];
            for w in 0..writers {
                per[connection_of(w, connections)] += 1;
            }
            let (lo, hi) = (per.iter().min(), per.iter().max());
            assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{per:?}");
            assert!(per.iter().all(|&n| n > 0), "{per:?}");
        }
        assert_eq!(connection_of(5, 0), 0, "no connections means one");
    }
}
