//! Measurements: latency histograms, per-subscriber delivery accounting (`Delivery`, and
//! the rules a system's order allows: `Ledger`), the result line (`Outcome`), and what
//! the kernel says about a process (CPU, RSS) and about UDP drops.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// Latencies in microseconds, 1 µs .. 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record((d.as_micros() as u64).clamp(1, 60_000_000));
}

pub fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Nanoseconds since the Unix epoch (payloads carry the send time in this unit).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Per-subscriber delivery check: each event's revision (or sequence) must be the last
/// one plus one.
#[derive(Debug, Default, Clone, Copy)]
pub struct Delivery {
    pub received: u64,
    pub missed: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    last: Option<u64>,
}

impl Delivery {
    pub fn start_at(&mut self, revision: u64) {
        self.last = Some(revision);
    }

    pub fn see(&mut self, revision: u64) {
        self.received += 1;
        match self.last {
            Some(last) if revision == last => self.duplicated += 1,
            Some(last) if revision < last => self.out_of_order += 1,
            Some(last) => {
                self.missed += revision - last - 1;
                self.last = Some(revision);
            }
            None => self.last = Some(revision),
        }
    }

    pub fn last(&self) -> Option<u64> {
        self.last
    }

    pub fn add(&mut self, o: &Delivery) {
        self.received += o.received;
        self.missed += o.missed;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
    }
}

/// One subscriber's delivery check, by the rule its system's order allows (chosen by
/// `peer::Order`): counts into a [`Delivery`], plus the resyncs it was given.
pub struct Ledger {
    delivery: Delivery,
    rule: Rule,
    resyncs: u64,
}

enum Rule {
    /// Each position is the last one plus one (a revision, a stream's sequence, the seq
    /// of a writer that sends in order). A subscriber that saw nothing at all has missed
    /// everything above `floor`.
    InSequence { floor: u64 },
    /// Each payload seq exactly once, in any order of seqs, while positions (the
    /// system's commit order) only increase.
    EachSeqOnce {
        seen: Vec<bool>,
        distinct: u64,
        last_at: u64,
    },
}

impl Ledger {
    /// Positions one by one from `start` (or, with `None`, from the subscription's first
    /// snapshot); `floor` is where the topic stood before the measured writes.
    pub fn in_sequence(start: Option<u64>, floor: u64) -> Self {
        let mut delivery = Delivery::default();
        if let Some(start) = start {
            delivery.start_at(start);
        }
        Ledger {
            delivery,
            rule: Rule::InSequence { floor },
            resyncs: 0,
        }
    }

    /// Every payload seq from 1 once, positions increasing.
    pub fn each_seq_once() -> Self {
        Ledger {
            delivery: Delivery::default(),
            rule: Rule::EachSeqOnce {
                seen: Vec::new(),
                distinct: 0,
                last_at: 0,
            },
            resyncs: 0,
        }
    }

    /// An event at position `at` carrying payload `seq`.
    pub fn see(&mut self, at: u64, seq: Option<u64>) {
        let d = &mut self.delivery;
        match &mut self.rule {
            Rule::InSequence { .. } => d.see(at),
            Rule::EachSeqOnce {
                seen,
                distinct,
                last_at,
            } => {
                let Some(seq) = seq else { return };
                d.received += 1;
                if at <= *last_at {
                    d.out_of_order += 1;
                } else {
                    *last_at = at;
                }
                let i = seq as usize;
                if seen.len() <= i {
                    seen.resize(i + 1, false);
                }
                if seen[i] {
                    d.duplicated += 1;
                } else if seq > 0 {
                    seen[i] = true;
                    *distinct += 1;
                }
            }
        }
    }

    /// A fresh state at `at`: the subscriber starts again from there, and unless it is
    /// the first, that is a resync (counted, not missed).
    pub fn snapshot(&mut self, at: u64) {
        if self.delivery.last().is_some() {
            self.resyncs += 1;
        }
        self.delivery.start_at(at);
    }

    /// Whether the subscriber has what it is owed: every position up to `target`, or
    /// (each seq once) `target` distinct seqs.
    pub fn reached(&self, target: u64) -> bool {
        match &self.rule {
            Rule::InSequence { .. } => self.delivery.last().is_some_and(|last| last >= target),
            Rule::EachSeqOnce { distinct, .. } => *distinct >= target,
        }
    }

    /// The counts, with whatever was owed (`target`, once known) and not reached
    /// counted as missed; and the resyncs.
    pub fn finish(mut self, target: Option<u64>) -> (Delivery, u64) {
        if let Some(t) = target {
            let reached = match self.rule {
                Rule::InSequence { floor } => self.delivery.last().unwrap_or(floor),
                Rule::EachSeqOnce { distinct, .. } => distinct,
            };
            self.delivery.missed += t.saturating_sub(reached);
        }
        (self.delivery, self.resyncs)
    }
}

/// How long followers wait, once every write is acknowledged, for what is still on its
/// way to them.
pub const DRAIN: Duration = Duration::from_secs(15);

/// When a workload's followers stop waiting: `DRAIN` after its writers are done, or at a
/// backstop if they never finish. A follower that stops short counts what it did not
/// see as missed, so giving up is never silent; and a writer slower than planned (a
/// saturated machine acknowledges late) does not make followers give up while writes
/// are still coming.
pub struct Drain {
    // tokio's clock, so that the test can pause it.
    deadline: tokio::sync::watch::Sender<tokio::time::Instant>,
}

/// One follower's view of a `Drain`.
pub struct DrainClock {
    deadline: tokio::sync::watch::Receiver<tokio::time::Instant>,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Drain {
    pub fn new(backstop: Instant) -> Self {
        Drain {
            deadline: tokio::sync::watch::channel(backstop.into()).0,
        }
    }

    pub fn clock(&self) -> DrainClock {
        let deadline = self.deadline.subscribe();
        let at = *deadline.borrow();
        DrainClock {
            deadline,
            timer: Box::pin(tokio::time::sleep_until(at)),
        }
    }

    /// Every write is acknowledged: followers get `DRAIN` from now.
    pub fn writers_done(&self) {
        self.deadline
            .send_replace(tokio::time::Instant::now() + DRAIN);
    }

    /// When the last follower will have stopped.
    pub fn deadline(&self) -> Instant {
        self.deadline.borrow().into_std()
    }
}

impl DrainClock {
    /// Resolves when the follower should stop waiting. Made once per follower and
    /// polled by reference in its `select!`: a new one per event would register with
    /// the deadline's channel once per event.
    pub async fn expired(mut self) {
        loop {
            tokio::select! {
                () = &mut self.timer => return,
                changed = self.deadline.changed() => {
                    if changed.is_err() {
                        // The workload is gone: the last deadline stands.
                        (&mut self.timer).await;
                        return;
                    }
                    let at = *self.deadline.borrow_and_update();
                    self.timer.as_mut().reset(at);
                }
            }
        }
    }
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesized command name; utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / if hz > 0.0 { hz } else { 100.0 })
}

/// What the subscribers' QUIC connections carried, summed over them: datagrams in and
/// out, and the probes among the frames received: IMMEDIATE_ACK (quinn puts one in every
/// data-space probe, sent when its probe timer fires before an acknowledgement came
/// back, once the peer supports ACK frequency) and PING (keep-alives, and probes in the
/// handshake spaces). A connection that reconnected restarts its counters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SubscriberPackets {
    pub received: u64,
    pub sent: u64,
    pub probes: u64,
}

impl SubscriberPackets {
    pub fn sum(stats: impl IntoIterator<Item = quinn::ConnectionStats>) -> Self {
        stats
            .into_iter()
            .fold(SubscriberPackets::default(), |sum, s| SubscriberPackets {
                received: sum.received + s.udp_rx.datagrams,
                sent: sum.sent + s.udp_tx.datagrams,
                probes: sum.probes + s.frame_rx.ping + s.frame_rx.immediate_ack,
            })
    }

    /// Datagrams both ways.
    pub fn datagrams(self) -> u64 {
        self.received + self.sent
    }

    /// What was carried after `before` was taken.
    pub fn since(self, before: SubscriberPackets) -> Self {
        SubscriberPackets {
            received: self.received.saturating_sub(before.received),
            sent: self.sent.saturating_sub(before.sent),
            probes: self.probes.saturating_sub(before.probes),
        }
    }
}

/// A point to measure CPU from: the system under test's and the harness's.
#[derive(Clone, Copy)]
pub struct CpuMark {
    server: f64,
    client: f64,
}

impl CpuMark {
    /// Marks now, given the system under test's CPU seconds so far.
    pub fn now(server_cpu_s: f64) -> Self {
        CpuMark {
            server: server_cpu_s,
            client: self_cpu_seconds(),
        }
    }

    /// The server's and the harness's CPU seconds since the mark.
    pub fn since(self, server_cpu_s: f64) -> (f64, f64) {
        (server_cpu_s - self.server, self_cpu_seconds() - self.client)
    }
}

/// CPU seconds (user + system) this process (the harness, every client in it) has
/// used, from `getrusage(RUSAGE_SELF)`: finer than `/proc/self/stat`'s clock ticks.
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given; RUSAGE_SELF is valid.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return 0.0;
        }
        u
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs one phase of a workload with a time limit: a phase that hangs (a peer that
/// stopped answering, a subscriber that never confirms) ends the run with an error
/// naming the phase instead of holding the harness forever.
pub async fn phase<T>(
    name: &str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{name}: {e}")),
        Err(_) => Err(format!(
            "{name}: did not finish within {:.0} s",
            limit.as_secs_f64()
        )),
    }
}

/// (current RSS, peak RSS) in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The kernel's UDP receive-error counters (`RcvbufErrors`, `InErrors`), system-wide.
pub fn udp_errors() -> (u64, u64) {
    let Ok(snmp) = std::fs::read_to_string("/proc/net/snmp") else {
        return (0, 0);
    };
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return (0, 0);
    };
    let pairs: Vec<(&str, u64)> = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter_map(|(n, v)| v.parse().ok().map(|v| (n, v)))
        .collect();
    let get = |n: &str| pairs.iter().find(|(k, _)| *k == n).map_or(0, |(_, v)| *v);
    (get("RcvbufErrors"), get("InErrors"))
}

/// Raises the open-file limit to its hard maximum; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid, initialized struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur
    }
}

/// A server process under measurement (Syncline's or a peer's), killed when dropped;
/// `None` for an external server, whose CPU and memory are not measured.
pub struct MeasuredProcess(pub Option<std::process::Child>);

impl MeasuredProcess {
    pub fn pid(&self) -> Option<u32> {
        self.0.as_ref().map(std::process::Child::id)
    }

    pub fn cpu_seconds(&self) -> f64 {
        self.pid().and_then(cpu_seconds).unwrap_or(0.0)
    }

    /// (current, peak) RSS in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        self.pid().and_then(rss_kib).unwrap_or((0, 0))
    }

    /// Sends SIGKILL (what `Child::kill` sends on Unix): no shutdown, no flush.
    pub fn sigkill(&mut self) -> Result<(), String> {
        match self.0.as_mut() {
            Some(c) => c.kill().map_err(|e| format!("SIGKILL to the server: {e}")),
            None => Err("an external server cannot be killed from here".into()),
        }
    }

    /// The exit status if the process has ended (reaping it), without blocking.
    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>, String> {
        match self.0.as_mut() {
            Some(c) => c
                .try_wait()
                .map_err(|e| format!("waiting for the server: {e}")),
            None => Ok(None),
        }
    }
}

impl Drop for MeasuredProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One workload's result: the fields every result line has, plus extras.
pub struct Outcome {
    pub workload: &'static str,
    /// The system measured: `syncline`, or a peer such as `etcd`.
    pub system: &'static str,
    pub ops_per_s: f64,
    pub latency: Histogram<u64>,
    pub delivery: Delivery,
    pub server_cpu_s: f64,
    /// The harness's own CPU over the same window (every client connection is in it).
    pub client_cpu_s: f64,
    /// What CPU is divided by for the per-op figures: acknowledged writes (W1),
    /// delivered events (W2, W4), connections opened (W3).
    pub cpu_ops: f64,
    pub server_rss_kib: u64,
    pub udp_rcvbuf_errors: u64,
    pub udp_in_errors: u64,
    pub elapsed: Duration,
    pub params: Value,
    pub extra: Map<String, Value>,
}

impl Outcome {
    /// For W3: how many connections opened, in how long, and the server's RSS growth
    /// per connection (RSS after − RSS before, over the connections asked for).
    /// `open_cpu` is the server's and the harness's CPU while the connections opened
    /// (the whole-run figures also cover the write's delivery).
    pub fn add_conns_figures(
        &mut self,
        opened: usize,
        open_s: f64,
        connections: usize,
        (rss_before, rss_after): (u64, u64),
        (open_server_cpu_s, open_client_cpu_s): (f64, f64),
    ) {
        // W3's CPU figures are per connection opened.
        self.cpu_ops = opened as f64;
        let per_conn = rss_after.saturating_sub(rss_before) as f64 / connections.max(1) as f64;
        let us_per_conn = |s: f64| (s * 1e6 / opened.max(1) as f64).round();
        for (name, value) in [
            ("connections", json!(opened)),
            ("open_s", json!((open_s * 100.0).round() / 100.0)),
            (
                "open_server_cpu_us_per_conn",
                json!(us_per_conn(open_server_cpu_s)),
            ),
            (
                "open_client_cpu_us_per_conn",
                json!(us_per_conn(open_client_cpu_s)),
            ),
            ("rss_per_conn_kib", json!((per_conn * 10.0).round() / 10.0)),
            ("server_rss_before_kib", json!(rss_before)),
            ("server_rss_after_kib", json!(rss_after)),
        ] {
            self.extra.insert(name.into(), value);
        }
    }

    /// For W3 over QUIC: UDP datagrams each client connection sent and received while
    /// the connections opened (handshake, Hello, subscription, and whatever probes and
    /// acknowledgements the transport added).
    pub fn add_open_datagrams(&mut self, datagrams: u64, opened: usize) {
        let per_conn = datagrams as f64 / opened.max(1) as f64;
        self.extra.insert(
            "open_datagrams_per_conn".into(),
            json!((per_conn * 10.0).round() / 10.0),
        );
    }

    /// For deliveries over QUIC (W2, W3's write): datagrams the subscribers received and
    /// sent (their acknowledgements) per delivered event, and probes per 1,000
    /// deliveries. Fewer than one datagram per delivery means events shared packets.
    pub fn add_delivery_packets(&mut self, packets: SubscriberPackets, deliveries: f64) {
        let per =
            |n: u64, scale: f64| (n as f64 * scale / deliveries.max(1.0) * 1000.0).round() / 1000.0;
        for (name, value) in [
            ("datagrams_per_delivery", per(packets.received, 1.0)),
            ("acks_per_delivery", per(packets.sent, 1.0)),
            ("probes_per_1000_deliveries", per(packets.probes, 1000.0)),
        ] {
            self.extra.insert(name.into(), json!(value));
        }
    }

    /// For write workloads: the server's CPU seconds per 1,000 acknowledged writes.
    pub fn add_cpu_per_1000_writes(&mut self, writes: f64) {
        let per_1000 = if writes > 0.0 {
            self.server_cpu_s * 1000.0 / writes
        } else {
            0.0
        };
        self.extra.insert(
            "server_cpu_s_per_1000_writes".into(),
            json!((per_1000 * 1e4).round() / 1e4),
        );
    }

    pub fn to_json(&self, context: &Value) -> Value {
        let mut v = json!({
            "workload": self.workload,
            "system": self.system,
            "ops_per_s": (self.ops_per_s * 10.0).round() / 10.0,
            "p50_ms": ms(&self.latency, 0.5),
            "p99_ms": ms(&self.latency, 0.99),
            "max_ms": if self.latency.is_empty() { 0.0 } else { self.latency.max() as f64 / 1000.0 },
            "samples": self.latency.len(),
            "missed": self.delivery.missed,
            "duplicated": self.delivery.duplicated,
            "out_of_order": self.delivery.out_of_order,
            "server_cpu_s": (self.server_cpu_s * 1000.0).round() / 1000.0,
            "client_cpu_s": (self.client_cpu_s * 1000.0).round() / 1000.0,
            "server_cpu_us_per_op": per_op_us(self.server_cpu_s, self.cpu_ops),
            "client_cpu_us_per_op": per_op_us(self.client_cpu_s, self.cpu_ops),
            "cpu_ops": self.cpu_ops,
            "server_rss_kib": self.server_rss_kib,
            "udp_rcvbuf_errors": self.udp_rcvbuf_errors,
            "udp_in_errors": self.udp_in_errors,
            "elapsed_s": (self.elapsed.as_secs_f64() * 100.0).round() / 100.0,
            "params": self.params,
        });
        if let (Value::Object(m), Value::Object(c)) = (&mut v, context) {
            m.extend(self.extra.clone());
            m.extend(c.clone());
        }
        v
    }
}

/// CPU microseconds per operation, to 0.01 µs; 0 when there were no operations.
fn per_op_us(cpu_s: f64, ops: f64) -> f64 {
    if ops > 0.0 {
        (cpu_s * 1e6 / ops * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// A progress line on stderr, redrawn in place when stderr is a terminal.
#[derive(Clone)]
pub struct Progress {
    label: String,
    start: Instant,
    tty: bool,
}

impl Progress {
    pub fn new(label: &str) -> Self {
        use std::io::IsTerminal;
        let tty = std::io::stderr().is_terminal();
        if !tty {
            eprintln!("{label} ...");
        }
        Progress {
            label: label.to_owned(),
            start: Instant::now(),
            tty,
        }
    }

    pub fn update(&self, done: f64, note: &str) {
        if self.tty {
            let filled = (done.clamp(0.0, 1.0) * 30.0) as usize;
            eprint!(
                "\r{:<10} [{}{}] {:>5.1}s {note}   ",
                self.label,
                "#".repeat(filled),
                " ".repeat(30 - filled),
                self.start.elapsed().as_secs_f64()
            );
        }
    }

    /// Redraws the bar every 250 ms as time passes toward `duration`, until aborted.
    pub fn tick_for(&self, duration: Duration) -> tokio::task::JoinHandle<()> {
        let p = self.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                p.update(start.elapsed().as_secs_f64() / duration.as_secs_f64(), "");
            }
        })
    }

    pub fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn followers_wait_past_the_planned_end_for_slow_writers_then_drain_once_they_finish() {
        let start = tokio::time::Instant::now();
        let drain = Drain::new(start.into_std() + Duration::from_secs(300));
        let expired = drain.clock().expired();
        tokio::pin!(expired);
        // The writers run late: at 100 s (long past a 10 s plan) the follower still waits.
        let waited = tokio::time::timeout(Duration::from_secs(100), &mut expired).await;
        assert!(waited.is_err(), "gave up while writes were still coming");
        drain.writers_done();
        expired.await;
        let stopped_after = tokio::time::Instant::now() - start;
        assert_eq!(stopped_after, Duration::from_secs(100) + DRAIN);
        // A clock taken after the writers are done starts from the new deadline.
        drain.clock().expired().await;
        assert_eq!(
            tokio::time::Instant::now() - start,
            Duration::from_secs(100) + DRAIN
        );
    }

    #[test]
    fn subscriber_packets_sum_connections_and_count_probes_since_a_mark() {
        let stats = |rx: u64, tx: u64, pings: u64, immediate_acks: u64| {
            let mut s = quinn::ConnectionStats::default();
            s.udp_rx.datagrams = rx;
            s.udp_tx.datagrams = tx;
            s.frame_rx.ping = pings;
            s.frame_rx.immediate_ack = immediate_acks;
            s
        };
        let before = SubscriberPackets::sum([stats(10, 4, 1, 0), stats(12, 5, 0, 0)]);
        let after = SubscriberPackets::sum([stats(30, 9, 1, 2), stats(20, 6, 1, 1)]);
        assert_eq!(
            after.since(before),
            SubscriberPackets {
                received: 28,
                sent: 6,
                probes: 4,
            }
        );
        assert_eq!(after.datagrams(), 65);
    }

    #[tokio::test(start_paused = true)]
    async fn followers_stop_at_the_backstop_when_the_writers_never_finish() {
        let start = tokio::time::Instant::now();
        let drain = Drain::new(start.into_std() + Duration::from_secs(30));
        drain.clock().expired().await;
        assert_eq!(tokio::time::Instant::now() - start, Duration::from_secs(30));
    }

    #[test]
    fn per_op_is_microseconds_and_zero_without_ops() {
        assert_eq!(per_op_us(2.0, 1_000_000.0), 2.0);
        assert_eq!(per_op_us(1.0, 0.0), 0.0);
    }

    #[tokio::test]
    async fn a_phase_past_its_limit_is_named() {
        let e = phase("opening", Duration::from_millis(10), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<(), String>(())
        })
        .await
        .unwrap_err();
        assert!(e.contains("opening") && e.contains("within"), "{e}");
        let e = phase("writing", Duration::from_secs(1), async {
            Err::<(), _>("refused".to_owned())
        })
        .await
        .unwrap_err();
        assert_eq!(e, "writing: refused");
    }

    #[test]
    fn delivery_accounting() {
        let mut d = Delivery::default();
        d.start_at(5);
        for r in [6, 7, 7, 9, 8, 10] {
            d.see(r);
        }
        assert_eq!(
            (d.received, d.missed, d.duplicated, d.out_of_order),
            (6, 1, 1, 1)
        );
        assert_eq!(d.last(), Some(10));
    }

    #[test]
    fn a_ledger_in_sequence_counts_resyncs_and_misses_up_to_the_target() {
        // From the first snapshot: it is the start, a later one is a resync.
        let mut l = Ledger::in_sequence(None, 3);
        l.snapshot(3);
        l.see(4, None);
        l.snapshot(7);
        l.see(8, None);
        assert!(!l.reached(10) && l.reached(8));
        let (d, resyncs) = l.finish(Some(10));
        assert_eq!((d.received, d.missed, resyncs), (2, 2, 1));
        // One that saw nothing missed everything above the floor.
        let (d, _) = Ledger::in_sequence(None, 3).finish(Some(10));
        assert_eq!(d.missed, 7);
        // From 0, as a writer's seqs: a first event at 2 missed seq 1.
        let mut l = Ledger::in_sequence(Some(0), 0);
        l.see(2, Some(2));
        assert_eq!(l.finish(Some(2)).0.missed, 1);
    }

    #[test]
    fn a_ledger_of_each_seq_once_takes_seqs_in_any_order_but_positions_rising() {
        let mut l = Ledger::each_seq_once();
        // etcd committed seq 2 before seq 1: fine. Seq 2 again is a duplicate, and its
        // position going back is out of order.
        for (at, seq) in [(10, 2), (11, 1), (11, 2), (14, 4)] {
            l.see(at, Some(seq));
        }
        assert!(!l.reached(4) && l.reached(3));
        let (d, _) = l.finish(Some(4));
        assert_eq!(
            (d.received, d.missed, d.duplicated, d.out_of_order),
            (4, 1, 1, 1)
        );
    }

    #[test]
    fn proc_readers_work_on_this_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        let spin = (0..2_000_000u64).fold(0u64, |a, x| a.wrapping_add(x * x));
        assert!(spin > 0 && self_cpu_seconds() > 0.0);
        let (rss, peak) = rss_kib(pid).unwrap();
        assert!(rss > 0 && peak >= rss);
    }
}
