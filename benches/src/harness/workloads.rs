//! The workloads: `write` (W1), `fanout` (W2), `conns` (W3) and `chat` (W4). Each opens
//! its own connections to the server under test, runs for a bounded time, and returns
//! an [`Outcome`]. Every loop is bounded in count and time; all traffic is loopback.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use syncline_client::{
    AdminConfig, Client, ClientConfig, ObjectKind, SubscribeOptions, Subscription, SyncEventKind,
};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::measure::{self, Delivery, Drain, DrainClock, Outcome, Progress, DRAIN};
use super::server::ServerUnderTest;
use super::{err, Error};

/// Client UDP endpoints the connections are spread over: one socket receiving for a
/// thousand connections overflows its buffer on this machine.
const ENDPOINTS: usize = 32;
/// Connections opened at once.
const OPEN_CONCURRENCY: usize = 256;

/// Opens connections round-robin over a few shared endpoints.
struct Connector {
    admin: AdminConfig,
    endpoints: Vec<quinn::Endpoint>,
    next: AtomicU64,
}

impl Connector {
    fn new(admin: &AdminConfig) -> Result<Arc<Self>, Error> {
        let config = ClientConfig::from_admin(admin).map_err(err)?;
        let endpoints = (0..ENDPOINTS)
            .map(|_| Client::endpoint_for(&config).map_err(err))
            .collect::<Result<_, _>>()?;
        Ok(Arc::new(Connector {
            admin: admin.clone(),
            endpoints,
            next: AtomicU64::new(0),
        }))
    }

    fn endpoint(&self) -> quinn::Endpoint {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        self.endpoints[i % self.endpoints.len()].clone()
    }

    async fn backend(&self) -> Result<Client, Error> {
        let config = ClientConfig::from_admin(&self.admin).map_err(err)?;
        Client::connect_via(config, self.endpoint())
            .await
            .map_err(err)
    }

    /// A config with its own access token for each of `n` identities named `{prefix}{i}`:
    /// what a backend hands its apps before they connect, so minting is not counted as
    /// opening.
    fn identity_configs(&self, n: usize, prefix: &str) -> Result<Vec<ClientConfig>, Error> {
        let a = &self.admin;
        let now = syncline_client::token::now_s();
        (0..n)
            .map(|i| {
                let token = syncline_client::token::mint(
                    &a.api_key_sid,
                    &a.api_key_secret,
                    &a.account_sid,
                    &a.default_service_sid,
                    &format!("{prefix}{i}"),
                    3600,
                    now,
                );
                ClientConfig::with_token(&a.server, &a.ca_file, &token).map_err(err)
            })
            .collect()
    }

    /// Opens a connection with each of `configs` (see `identity_configs`),
    /// `OPEN_CONCURRENCY` at a time, each subscribed to `objects(i)` as soon as it is
    /// open (so that opening and subscribing overlap). `first_time`: each on its own
    /// endpoint, with no TLS session to resume (see `conns --first-time`).
    async fn identities(
        self: &Arc<Self>,
        configs: Vec<ClientConfig>,
        first_time: bool,
        objects: impl Fn(usize) -> Vec<String>,
        progress: &Progress,
    ) -> Result<Vec<(Client, Vec<Subscription>)>, Error> {
        let n = configs.len();
        let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
        let mut set = JoinSet::new();
        for (i, config) in configs.into_iter().enumerate() {
            let (me, gate) = (self.clone(), gate.clone());
            let objects = objects(i);
            set.spawn(async move {
                let _permit = gate.acquire_owned().await.map_err(err)?;
                let client = if first_time {
                    Client::connect(config).await
                } else {
                    Client::connect_via(config, me.endpoint()).await
                }
                .map_err(err)?;
                let mut subs = Vec::with_capacity(objects.len());
                for object in &objects {
                    subs.push(
                        client
                            .subscribe(object, SubscribeOptions::default())
                            .await
                            .map_err(err)?,
                    );
                }
                Ok::<_, Error>((i, (client, subs)))
            });
        }
        let mut clients: Vec<Option<(Client, Vec<Subscription>)>> = (0..n).map(|_| None).collect();
        let mut done = 0;
        while let Some(r) = set.join_next().await {
            let (i, c) = r.map_err(err)??;
            clients[i] = Some(c);
            done += 1;
            if done % 100 == 0 {
                progress.update(done as f64 / n as f64, &format!("{done}/{n} connected"));
            }
        }
        Ok(clients.into_iter().flatten().collect())
    }
}

/// What the server and the harness used between two samples.
pub(super) struct ServerSample {
    cpu: f64,
    client_cpu: f64,
    udp: (u64, u64),
}

pub(super) fn sample(server: &ServerUnderTest) -> ServerSample {
    ServerSample {
        cpu: server.cpu_seconds(),
        client_cpu: measure::self_cpu_seconds(),
        udp: measure::udp_errors(),
    }
}

pub(super) fn outcome(
    server: &ServerUnderTest,
    before: &ServerSample,
    workload: &'static str,
    ops: f64,
    elapsed: Duration,
    (latency, delivery): (Histogram<u64>, Delivery),
    params: Value,
) -> Outcome {
    let after = sample(server);
    Outcome {
        workload,
        system: "syncline",
        ops_per_s: ops / elapsed.as_secs_f64().max(1e-9),
        latency,
        delivery,
        server_cpu_s: after.cpu - before.cpu,
        client_cpu_s: after.client_cpu - before.client_cpu,
        cpu_ops: ops,
        server_rss_kib: server.rss_kib().1,
        udp_rcvbuf_errors: after.udp.0.saturating_sub(before.udp.0),
        udp_in_errors: after.udp.1.saturating_sub(before.udp.1),
        elapsed,
        params,
        extra: Map::new(),
    }
}

/// How long opening the clients of a workload may take.
pub(super) const OPEN_LIMIT: Duration = Duration::from_secs(120);
/// How long a measured phase may overrun its planned duration (acks still in flight,
/// subscribers draining) before it is called stuck.
pub(super) const OVERRUN: Duration = Duration::from_secs(60);

/// How long a fan-out's writing phase may take. A saturated system acknowledges late and
/// its writer keeps a bounded number in flight, so the planned writes can take several
/// times the planned duration (1,000 subscribers at 1,000 writes/s on two cores: 40-75 s
/// for 10 s of writes); the rate reached is reported beside the rate offered.
pub(super) fn writing_limit(duration: Duration) -> Duration {
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

/// W1: `writers` writers, each writing a ~200-byte document as fast as acks come back,
/// multiplexed over `connections` connections (the client sends concurrent requests
/// on one connection).
pub async fn write(
    server: &ServerUnderTest,
    writers: usize,
    connections: usize,
    shared: Option<usize>,
    duration: Duration,
) -> Result<Outcome, Error> {
    let connector = Connector::new(&server.admin)?;
    let progress = Progress::new("write");
    let connections = connections.clamp(1, writers.max(1));
    let opened = measure::phase("write: opening connections", OPEN_LIMIT, async {
        let mut opened = Vec::with_capacity(connections);
        for _ in 0..connections {
            opened.push(connector.backend().await?);
        }
        Ok(opened)
    })
    .await?;
    let clients: Vec<Client> = (0..writers)
        .map(|w| opened[connection_of(w, connections)].clone())
        .collect();
    let before = sample(server);
    let (latency, elapsed) = write_loop(
        clients,
        shared,
        duration,
        &progress,
        |c: Client, key: String, value: Value| async move {
            c.document(&key).set(&value).await.map_err(err)?;
            Ok(c)
        },
    )
    .await?;
    let writes = latency.len() as f64;
    let mut o = outcome(
        server,
        &before,
        "write",
        writes,
        elapsed,
        (latency, Delivery::default()),
        json!({"writers": writers, "connections": connections, "shared": shared, "duration_s": duration.as_secs_f64()}),
    );
    o.add_cpu_per_1000_writes(writes);
    Ok(o)
}

/// W1's measured part, for Syncline and etcd alike: each client writes a ~200-byte JSON
/// value to its own key (or one of `shared` keys) as fast as acknowledgements come
/// back, until `duration` is over. `write` sends one value and hands the client back.
/// Returns the acknowledgement latencies and the time the writers took.
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
    Fut: std::future::Future<Output = Result<C, Error>> + Send,
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

/// The revision (or, for streams, the sequence) an event is at, and the payload's send time.
fn position(kind: ObjectKind, revision: u64, e: &SyncEventKind) -> Option<(u64, Option<u64>)> {
    let data = match e {
        SyncEventKind::DocumentUpdated { data, .. } => data,
        SyncEventKind::ItemAdded { item } | SyncEventKind::ItemUpdated { item, .. } => &item.data,
        SyncEventKind::MessagePublished { data, sequence, .. } => {
            return Some((*sequence, data["sent_ns"].as_u64()));
        }
        _ => return None,
    };
    let _ = kind;
    Some((revision, data["sent_ns"].as_u64()))
}

/// What one follower saw: latencies, delivery accounting, resyncs, and why it stopped
/// short (its subscription failed or ended), if it did.
pub(super) struct Followed {
    latency: Histogram<u64>,
    delivery: Delivery,
    resyncs: u64,
    failure: Option<String>,
}

impl Followed {
    /// A follower of a system without resyncs, whose shortfall is in `delivery`.
    pub(super) fn counted(latency: Histogram<u64>, delivery: Delivery) -> Self {
        Followed {
            latency,
            delivery,
            resyncs: 0,
            failure: None,
        }
    }
}

/// What all the followers of a workload saw together.
pub(super) struct Followers {
    latency: Histogram<u64>,
    delivery: Delivery,
    resyncs: u64,
    failed: u64,
    first_failure: Option<String>,
}

impl Followers {
    /// Waits for every follower in `set` (each gives up by itself; `limit` is only a
    /// backstop) and adds up what they saw.
    pub(super) async fn join(
        name: &str,
        mut set: JoinSet<Followed>,
        limit: Duration,
    ) -> Result<Followers, Error> {
        measure::phase(name, limit, async {
            let mut all = Followers {
                latency: measure::histogram(),
                delivery: Delivery::default(),
                resyncs: 0,
                failed: 0,
                first_failure: None,
            };
            while let Some(r) = set.join_next().await {
                let f = r.map_err(err)?;
                all.latency.add(f.latency).map_err(err)?;
                all.delivery.add(&f.delivery);
                all.resyncs += f.resyncs;
                if let Some(why) = f.failure {
                    all.failed += 1;
                    all.first_failure.get_or_insert(why);
                }
            }
            if let Some(why) = &all.first_failure {
                eprintln!(
                    "{name}: {} subscriptions failed; the first: {why}",
                    all.failed
                );
            }
            Ok(all)
        })
        .await
    }

    /// The latencies and delivery counts, and the extra fields of a result line
    /// (resyncs, failed subscriptions).
    pub(super) fn split(self) -> ((Histogram<u64>, Delivery), Map<String, Value>) {
        let mut extra = Map::new();
        extra.insert("resyncs".into(), json!(self.resyncs));
        extra.insert("subscriptions_failed".into(), json!(self.failed));
        ((self.latency, self.delivery), extra)
    }
}

/// Follows one subscription until it reaches `target` (sent when the writers are done)
/// or its `clock` runs out; whatever it did not reach by then counts as missed. `floor`
/// is the position the object was at before the measured writes: a follower that saw
/// nothing at all has missed everything above it.
async fn follow(
    mut sub: Subscription,
    kind: ObjectKind,
    mut target: watch::Receiver<Option<u64>>,
    clock: DrainClock,
    floor: u64,
) -> Followed {
    let expired = clock.expired();
    tokio::pin!(expired);
    let mut h = measure::histogram();
    let mut d = Delivery::default();
    let mut resyncs = 0;
    let mut failure = None;
    // Made once, like `expired`: a `changed()` per event would register with the
    // target's channel once per event, a cost the peers' followers (who know their
    // target up front) do not pay.
    let mut known = *target.borrow();
    let target_set = async {
        loop {
            if let Some(t) = *target.borrow_and_update() {
                return Some(t);
            }
            if target.changed().await.is_err() {
                return None;
            }
        }
    };
    tokio::pin!(target_set);
    loop {
        if let (Some(t), Some(last)) = (known, d.last()) {
            if last >= t {
                break;
            }
        }
        let next = tokio::select! {
            biased;
            e = sub.next() => e,
            t = &mut target_set, if known.is_none() => {
                known = t;
                if known.is_none() {
                    // The workload ended without a target: nothing more to wait for.
                    break;
                }
                continue;
            }
            () = &mut expired => break,
        };
        let e = match next {
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                failure = Some(e.to_string());
                break;
            }
            None => {
                failure = Some("the subscription ended".to_owned());
                break;
            }
        };
        if e.kind == SyncEventKind::Snapshot {
            let start = match sub.replica() {
                syncline_client::Replica::Stream(_) => sub.last_sequence(),
                r => r.revision(),
            };
            if d.last().is_some() {
                resyncs += 1;
            }
            d.start_at(start.unwrap_or(0));
            continue;
        }
        if let Some((pos, sent)) = position(kind, e.revision, &e.kind) {
            d.see(pos);
            if let Some(sent) = sent {
                measure::record(
                    &mut h,
                    Duration::from_nanos(measure::now_ns().saturating_sub(sent)),
                );
            }
        }
    }
    // Whatever was not reached by the end counts as missed.
    if let Some(t) = known {
        d.missed += t.saturating_sub(d.last().unwrap_or(floor));
    }
    Followed {
        latency: h,
        delivery: d,
        resyncs,
        failure,
    }
}

/// Writes one update of the fan-out object and returns its revision (streams: sequence).
async fn fanout_write(c: &Client, kind: ObjectKind, data: &Value) -> Result<u64, Error> {
    Ok(match kind {
        ObjectKind::Document => c.document("fanout").set(data).await.map_err(err)?.revision,
        ObjectKind::Map => c.map("fanout").set("k", data).await.map_err(err)?.revision,
        ObjectKind::List => c.list("fanout").push(data).await.map_err(err)?.revision,
        ObjectKind::Stream => c.stream("fanout").publish(data).await.map_err(err)?,
    })
}

/// W2: `subscribers` connections on one object, one writer at `rate` updates/s.
pub async fn fanout(
    server: &ServerUnderTest,
    subscribers: usize,
    rate: u32,
    duration: Duration,
    kind: ObjectKind,
) -> Result<Outcome, Error> {
    let connector = Connector::new(&server.admin)?;
    let progress = Progress::new("fanout");
    // The server allows 500 requests/s per connection: a higher rate is spread over
    // several writer connections (the server still orders the writes by revision).
    let writers = measure::phase("fanout: opening the writers", OPEN_LIMIT, async {
        let mut writers = Vec::new();
        for _ in 0..(rate as usize).div_ceil(400).max(1) {
            writers.push(connector.backend().await?);
        }
        let floor = fanout_write(&writers[0], kind, &json!({"seq": 0, "sent_ns": 0})).await?;
        Ok((writers, floor))
    })
    .await?;
    let (writers, floor) = writers;
    let clients = measure::phase(
        "fanout: opening the subscribers",
        OPEN_LIMIT,
        connector.identities(
            connector.identity_configs(subscribers, "sub")?,
            false,
            |_| vec!["fanout".into()],
            &progress,
        ),
    )
    .await?;
    let (target_tx, target_rx) = watch::channel(None);
    let drain = Drain::new(Instant::now() + writing_limit(duration) + DRAIN);
    let mut set = JoinSet::new();
    let mut connections = Vec::with_capacity(clients.len());
    for (client, subs) in clients {
        for sub in subs {
            set.spawn(follow(sub, kind, target_rx.clone(), drain.clock(), floor));
        }
        connections.push(client);
    }
    let before = sample(server);
    let packets_before = subscriber_packets(&connections);
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let total = (duration.as_secs_f64() * f64::from(rate)).ceil() as u64;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    // Writes are sent at the rate without waiting for each acknowledgement (a durable
    // ack takes longer than 1 ms), a bounded number in flight.
    let in_flight = Arc::new(Semaphore::new(256));
    let pad = Arc::new("y".repeat(100));
    let last = measure::phase("fanout: writing", writing_limit(duration), async {
        let mut writes = JoinSet::new();
        for seq in 1..=total {
            tick.tick().await;
            let permit = in_flight.clone().acquire_owned().await.map_err(err)?;
            let writer = writers[seq as usize % writers.len()].clone();
            let pad = pad.clone();
            writes.spawn(async move {
                let sent = Instant::now();
                let data = json!({"seq": seq, "sent_ns": measure::now_ns(), "pad": *pad});
                let r = fanout_write(&writer, kind, &data).await;
                drop(permit);
                r.map(|revision| (revision, sent.elapsed()))
            });
            if seq % u64::from(rate.max(1)) == 0 {
                progress.update(seq as f64 / total as f64, "");
            }
        }
        let mut last = 0;
        let mut acks = measure::histogram();
        while let Some(r) = writes.join_next().await {
            let (revision, took) = r.map_err(err)??;
            last = last.max(revision);
            measure::record(&mut acks, took);
        }
        Ok((last, acks))
    })
    .await?;
    let (last, acks) = last;
    // Below the offered rate when acknowledgements come back slower than `in_flight`
    // allows: reported, so a run that offered 1,000/s and wrote 300/s says so.
    let writes_per_s = total as f64 / start.elapsed().as_secs_f64().max(1e-9);
    drain.writers_done();
    target_tx.send_replace(Some(last));
    // Each follower gives up by itself; the phase's own limit is only a backstop.
    let (seen, extra) = Followers::join("fanout: delivering", set, backstop(&drain))
        .await?
        .split();
    progress.finish();
    let elapsed = start.elapsed();
    let delivered = seen.1.received as f64;
    let mut o = outcome(
        server,
        &before,
        "fanout",
        delivered,
        elapsed,
        seen,
        json!({"subscribers": subscribers, "rate": rate, "duration_s": duration.as_secs_f64(), "kind": kind.name(), "writes": total}),
    );
    o.extra.extend(extra);
    // The writer's acknowledgement latency splits an event's latency into the commit's
    // share and the fan-out's.
    o.extra
        .insert("write_p50_ms".into(), json!(measure::ms(&acks, 0.5)));
    o.extra
        .insert("write_p99_ms".into(), json!(measure::ms(&acks, 0.99)));
    o.extra.insert("writes_per_s".into(), json!(writes_per_s));
    o.add_delivery_packets(
        subscriber_packets(&connections).since(packets_before),
        delivered,
    );
    drop(connections);
    Ok(o)
}

fn subscriber_packets(clients: &[Client]) -> measure::SubscriberPackets {
    measure::SubscriberPackets::sum(clients.iter().filter_map(Client::transport_stats))
}

/// W3: `connections` connections, each with its own token and one subscription.
pub async fn conns(
    server: &ServerUnderTest,
    connections: usize,
    first_time: bool,
) -> Result<Outcome, Error> {
    let connector = Connector::new(&server.admin)?;
    let progress = Progress::new("conns");
    let writer = measure::phase("conns: opening the writer", OPEN_LIMIT, async {
        let writer = connector.backend().await?;
        let floor = writer
            .document("conns")
            .set(&json!({"seq": 0}))
            .await
            .map_err(err)?
            .revision;
        Ok((writer, floor))
    })
    .await?;
    let (writer, floor) = writer;
    let configs = connector.identity_configs(connections, "conn")?;
    // Let the server settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_before, _) = server.rss_kib();
    let before = sample(server);
    let open_mark = measure::CpuMark::now(server.cpu_seconds());
    let start = Instant::now();
    let clients = measure::phase(
        "conns: opening the connections",
        OPEN_LIMIT,
        connector.identities(configs, first_time, |_| vec!["conns".into()], &progress),
    )
    .await?;
    let (target_tx, target_rx) = watch::channel(None);
    let drain = Drain::new(Instant::now() + OPEN_LIMIT);
    let (clients, subs): (Vec<Client>, Vec<Vec<Subscription>>) = clients.into_iter().unzip();
    let open_s = start.elapsed().as_secs_f64();
    let open_cpu = open_mark.since(server.cpu_seconds());
    let open_datagrams = subscriber_packets(&clients).datagrams();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_after, _) = server.rss_kib();
    let mut set = JoinSet::new();
    for sub in subs.into_iter().flatten() {
        set.spawn(follow(
            sub,
            ObjectKind::Document,
            target_rx.clone(),
            drain.clock(),
            floor,
        ));
    }
    let packets_before = subscriber_packets(&clients);
    let write_at = Instant::now();
    let written = measure::phase("conns: writing", OPEN_LIMIT, async {
        writer
            .document("conns")
            .set(&json!({"seq": 1, "sent_ns": measure::now_ns()}))
            .await
            .map_err(err)
    })
    .await?;
    drain.writers_done();
    target_tx.send_replace(Some(written.revision));
    let (seen, extra) = Followers::join("conns: delivering the write", set, backstop(&drain))
        .await?
        .split();
    progress.finish();
    let delivered_in = write_at.elapsed();
    let delivered = seen.1.received as f64;
    let mut o = outcome(
        server,
        &before,
        "conns",
        delivered,
        delivered_in,
        seen,
        json!({"connections": connections, "first_time": first_time}),
    );
    o.extra.extend(extra);
    o.add_conns_figures(
        clients.len(),
        open_s,
        connections,
        (rss_before, rss_after),
        open_cpu,
    );
    o.add_open_datagrams(open_datagrams, clients.len());
    o.add_delivery_packets(
        subscriber_packets(&clients).since(packets_before),
        delivered,
    );
    Ok(o)
}

/// W4: `rooms` × `members`: each room a List of messages, a Map roster and a Stream for
/// typing; members post `rate` messages/s in total.
pub async fn chat(
    server: &ServerUnderTest,
    rooms: usize,
    members: usize,
    rate: u32,
    duration: Duration,
) -> Result<Outcome, Error> {
    let connector = Connector::new(&server.admin)?;
    let progress = Progress::new("chat");
    measure::phase("chat: creating the rooms", OPEN_LIMIT, async {
        let setup = connector.backend().await?;
        for r in 0..rooms {
            setup
                .list(&format!("room-{r}"))
                .create(None)
                .await
                .map_err(err)?;
            setup
                .map(&format!("roster-{r}"))
                .create(None)
                .await
                .map_err(err)?;
            setup
                .stream(&format!("typing-{r}"))
                .create(None)
                .await
                .map_err(err)?;
        }
        Ok(())
    })
    .await?;
    let room_objects = |r: usize| {
        [
            (format!("room-{r}"), ObjectKind::List),
            (format!("roster-{r}"), ObjectKind::Map),
            (format!("typing-{r}"), ObjectKind::Stream),
        ]
    };
    let opened = measure::phase(
        "chat: opening the members",
        OPEN_LIMIT,
        connector.identities(
            connector.identity_configs(rooms * members, "member")?,
            false,
            |i| room_objects(i / members).map(|(name, _)| name).to_vec(),
            &progress,
        ),
    )
    .await?;
    let (target_tx, target_rx) = watch::channel::<Option<u64>>(None);
    let drain = Drain::new(Instant::now() + duration + OVERRUN + DRAIN);
    // One follower per (room, object) per member; targets are per object, so each
    // follower gets its own watch channel fed at the end.
    let mut targets: Vec<(String, watch::Sender<Option<u64>>)> = Vec::new();
    let mut set = JoinSet::new();
    let mut clients = Vec::with_capacity(opened.len());
    for (i, (client, subs)) in opened.into_iter().enumerate() {
        for ((name, kind), sub) in room_objects(i / members).into_iter().zip(subs) {
            let (tx, rx) = watch::channel(None);
            targets.push((name, tx));
            // Nothing exists before the first post: a follower that saw nothing
            // missed every revision up to its object's last.
            set.spawn(follow(sub, kind, rx, drain.clock(), 0));
        }
        clients.push(client);
    }
    drop((target_tx, target_rx));
    let before = sample(server);
    let start = Instant::now();
    let total = (duration.as_secs_f64() * f64::from(rate)).ceil() as u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let posting = measure::phase("chat: posting", duration + OVERRUN, async {
        for n in 0..total {
            tick.tick().await;
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let who = (rng % clients.len() as u64) as usize;
            let room = who / members;
            let c = &clients[who];
            let sent = json!({"from": who, "n": n, "sent_ns": measure::now_ns()});
            let list = format!("room-{room}");
            let rev = c.list(&list).push(&sent).await.map_err(err)?.revision;
            last.insert(list, rev);
            if n % 2 == 0 {
                let typing = format!("typing-{room}");
                let seq = c.stream(&typing).publish(&sent).await.map_err(err)?;
                last.insert(typing, seq);
            }
            if n % 5 == 0 {
                let roster = format!("roster-{room}");
                let rev = c
                    .map(&roster)
                    .set(&format!("m{who}"), &sent)
                    .await
                    .map_err(err)?
                    .revision;
                last.insert(roster, rev);
            }
            if n % u64::from(rate.max(1)) == 0 {
                progress.update(n as f64 / total as f64, "");
            }
        }
        Ok(())
    });
    posting.await?;
    drain.writers_done();
    for (name, tx) in &targets {
        // Objects nobody wrote to are at revision 0 (sequence 0): nothing to wait for.
        tx.send_replace(Some(last.get(name).copied().unwrap_or(0)));
    }
    let (seen, extra) = Followers::join("chat: delivering", set, backstop(&drain))
        .await?
        .split();
    progress.finish();
    let mut o = outcome(
        server,
        &before,
        "chat",
        seen.1.received as f64,
        start.elapsed(),
        seen,
        json!({"rooms": rooms, "members": members, "rate": rate, "duration_s": duration.as_secs_f64(), "messages": total}),
    );
    o.extra.extend(extra);
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
