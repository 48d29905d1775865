//! The `Peer` trait: what the workloads W1..W3 need of a system under test (Syncline,
//! etcd, Redis, bare quinn), and the words they speak with it: `Order` (who orders a
//! fan-out's writes, which decides how they are sent and checked), `Ack`, `Next`,
//! `Written`.

use std::future::Future;

use hdrhistogram::Histogram;
use serde_json::{Map, Value};

use super::measure::{Ledger, MeasuredProcess};
use super::Error;

/// A system the workloads run against: its server process (CPU and RSS are read from
/// `/proc`), how clients write to it, subscribe to it and read their events. Each
/// implementation owns what its system really does differently; the drivers in
/// `workloads.rs` do the rest the same way for every system.
pub trait Peer: Send + Sync + Sized + 'static {
    /// The result line's `system`.
    const SYSTEM: &'static str;
    /// Its clients speak QUIC: the line reports the kernel's UDP drops and the
    /// subscribers' packets (TCP systems report 0 drops and no packets).
    const QUIC: bool;
    /// Who puts a fan-out's writes in order.
    const ORDER: Order;

    /// A connection writes go over; clones share it.
    type Conn: Clone + Send + Sync + 'static;
    /// What one subscriber needs before it connects, made before any clock starts.
    type Ticket: Send + 'static;
    /// What the driver keeps of a subscribed connection while its follower reads the
    /// events: it keeps the connection open and has its transport's counters.
    type Link: Send + Sync + 'static;
    /// One subscription's events, read by its follower.
    type Events: Send + 'static;

    /// The server process under measurement.
    fn process(&self) -> &MeasuredProcess;

    /// CPU seconds the system under test has used: its process's, or all its nodes'.
    fn server_cpu_seconds(&self) -> f64 {
        self.process().cpu_seconds()
    }

    /// Each node's CPU seconds, for a system of several (a cluster); empty otherwise.
    fn node_cpu_seconds(&self) -> Vec<f64> {
        Vec::new()
    }

    /// What a fan-out writes to, for its line's `params.kind`.
    fn kind(&self) -> &'static str;

    /// For `conns`' `params.first_time`: whether each connection came as a first-time
    /// device (its own socket, a full TLS handshake). `None` where the system has no
    /// such choice.
    fn first_time(&self) -> Option<bool> {
        None
    }

    /// How many connections a fan-out writing `rate` values/s writes over.
    fn writers_for(_rate: u32) -> usize {
        1
    }

    /// Opens a connection that writes (open by the time this returns).
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, Error>> + Send;

    /// W1: stores `value` under `key`, acknowledged once the system says it is durable.
    fn write(
        &self,
        conn: &mut Self::Conn,
        key: &str,
        value: &Value,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// W2, W3: sends `value` to `topic`'s subscribers.
    fn publish(
        &self,
        conn: &mut Self::Conn,
        topic: &str,
        value: Value,
    ) -> impl Future<Output = Result<Ack, Error>> + Send;

    /// Sends `values` to `topic`'s subscribers in this order (an `Order::Sender`
    /// writer's writes due at one moment): one after another, unless the system
    /// pipelines them.
    fn publish_all(
        &self,
        conn: &mut Self::Conn,
        topic: &str,
        values: Vec<Value>,
    ) -> impl Future<Output = Result<Vec<Ack>, Error>> + Send {
        async move {
            let mut acks = Vec::with_capacity(values.len());
            for value in values {
                acks.push(self.publish(conn, topic, value).await?);
            }
            Ok(acks)
        }
    }

    /// What `n` subscribers to `topic` need before they connect.
    fn tickets(&self, n: usize, topic: &str) -> Result<Vec<Self::Ticket>, Error>;

    /// Opens a connection subscribed to `topic`: nothing published after this returns
    /// is lost to it.
    fn subscribe(
        &self,
        ticket: Self::Ticket,
        topic: &str,
    ) -> impl Future<Output = Result<(Self::Link, Self::Events), Error>> + Send;

    /// Waits for a subscription's next event; what carries no payload of the workload
    /// is passed over.
    fn next(events: &mut Self::Events) -> impl Future<Output = Next> + Send;

    /// The QUIC connection's counters, for a system whose clients speak QUIC.
    fn transport_stats(_link: &Self::Link) -> Option<quinn::ConnectionStats> {
        None
    }

    /// Adds what this system's writer reports to a fan-out's or `conns`' line, beyond
    /// what every system's line has.
    fn writer_figures(&self, _written: &Written, _extra: &mut Map<String, Value>) {}
}

/// Who puts a fan-out's writes in order; it decides how the writer sends them and how a
/// subscriber's deliveries are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// The system, one position after another: each write's acknowledgement gives its
    /// position (Syncline's revision, a stream's sequence), and a subscriber must see
    /// every position from its first snapshot to the last write's, with resyncs
    /// counted. Several writes are in flight at once. The topic is stored: it gets a
    /// first value before anyone subscribes.
    Positions,
    /// The system, with gaps (etcd's revision is global): a subscriber must see every
    /// payload `seq` exactly once, its positions (`mod_revision`) increasing. Several
    /// writes are in flight at once, so the system may commit seq 7 before seq 6. The
    /// topic is stored, as for `Positions`. (Only etcd's, which builds with the `etcd` feature.)
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    Commits,
    /// The writer: it sends in `seq` order, one call at a time carrying every write
    /// due by then (Redis's `PUBLISH`, the bare transport: pub/sub, nothing stored),
    /// and a subscriber must see seq 1, 2, 3, ... in that order.
    Sender,
}

impl Order {
    /// A fresh subscriber's ledger; `floor` is the topic's position before the measured
    /// writes.
    pub fn ledger(self, floor: u64) -> Ledger {
        match self {
            Order::Positions => Ledger::in_sequence(None, floor),
            Order::Commits => Ledger::each_seq_once(),
            Order::Sender => Ledger::in_sequence(Some(0), 0),
        }
    }

    /// What every subscriber is owed once `writes` writes were acknowledged, the last
    /// (highest) at `last_at`.
    pub fn target(self, last_at: Option<u64>, floor: u64, writes: u64) -> u64 {
        match self {
            Order::Positions => last_at.unwrap_or(floor),
            Order::Commits | Order::Sender => writes,
        }
    }
}

/// What a system answered to one published value.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ack {
    /// Its position in the system's order, where the answer says.
    pub at: Option<u64>,
    /// How many subscribers the system handed it to, where the answer says.
    pub reached: Option<u64>,
}

impl Ack {
    /// An answer that gives the write's position.
    pub fn at(at: u64) -> Self {
        Ack {
            at: Some(at),
            reached: None,
        }
    }
}

/// A subscription's next step.
#[derive(Debug)]
pub enum Next {
    /// An update at `at` in the system's order, with its payload's `seq` (where the
    /// check needs it) and send time.
    Event {
        at: u64,
        seq: Option<u64>,
        sent_ns: Option<u64>,
    },
    /// A fresh state at `at` in place of everything before it (Syncline's snapshot).
    Snapshot { at: u64 },
    /// The subscription ended or failed, and why.
    Ended(String),
}

/// What a workload's writer saw of its measured writes.
pub struct Written {
    /// `fanout` or `conns`.
    pub workload: &'static str,
    /// Subscribers asked for.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub subscribers: usize,
    /// Writes per second reached (below the rate offered when acknowledgements come
    /// back slower than the writes in flight allow).
    pub per_s: f64,
    /// Per write, the time from its send to its acknowledgement.
    pub acks: Histogram<u64>,
    /// Per write where the system says, how many subscribers it reached (Redis's
    /// `PUBLISH`, which builds with the `redis` feature).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub reached: Vec<u64>,
}
