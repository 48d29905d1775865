//! Syncline as a [`Peer`]: the server under test (`server.rs`) and the clients the
//! workloads open on it: backends (the API key) and identities with access tokens of
//! their own, spread over a few shared UDP endpoints. A fan-out writes to an object of
//! any kind; subscribers are checked by revision (a stream's by sequence), resyncs
//! counted.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Map, Value};
use syncline_client::{
    Client, ClientConfig, ObjectKind, Replica, SubscribeOptions, Subscription, SyncEventKind,
};

use super::measure::{self, MeasuredProcess};
use super::peer::{Ack, Next, Order, Peer, Written};
use super::server::ServerUnderTest;
use super::{err, Error};

/// The client UDP endpoints connections are spread over, round-robin: one socket
/// receiving for a thousand connections overflows its buffer on this machine. The bare
/// quinn peer's clients share them the same way.
pub struct Endpoints {
    all: Vec<quinn::Endpoint>,
    next: AtomicUsize,
}

impl Endpoints {
    /// 32 endpoints with `config`'s TLS and transport settings.
    pub fn new(config: &ClientConfig) -> Result<Self, Error> {
        let all = (0..32)
            .map(|_| Client::endpoint_for(config).map_err(err))
            .collect::<Result<_, _>>()?;
        Ok(Endpoints {
            all,
            next: AtomicUsize::new(0),
        })
    }

    /// The endpoint for the next connection.
    pub fn next(&self) -> &quinn::Endpoint {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.all[i % self.all.len()]
    }
}

/// A Syncline server under test with the endpoints its clients share.
pub struct Syncline {
    server: ServerUnderTest,
    /// The other nodes of a cluster (`--nodes`): identities and subscribers are dealt
    /// over all nodes round-robin; backends (the writer) use the first.
    others: Vec<ServerUnderTest>,
    /// Which nodes identities are dealt over (empty: all).
    deal: Vec<usize>,
    endpoints: Endpoints,
    kind: ObjectKind,
    first_time: bool,
}

impl Syncline {
    /// Clients for `server`; a fan-out writes to a Document, connections share the
    /// endpoints (and resume each other's TLS sessions).
    pub fn new(server: ServerUnderTest) -> Result<Self, Error> {
        let config = ClientConfig::from_admin(&server.admin).map_err(err)?;
        Ok(Syncline {
            endpoints: Endpoints::new(&config)?,
            server,
            others: Vec::new(),
            deal: Vec::new(),
            kind: ObjectKind::Document,
            first_time: false,
        })
    }

    /// The other nodes of the first one's cluster (they serve its certificate, so the
    /// endpoints reach them too); identities go to the nodes `deal` selects, by index
    /// (0: the first node, where the writer is).
    pub fn with_nodes(mut self, others: Vec<ServerUnderTest>, deal: Vec<usize>) -> Self {
        self.others = others;
        self.deal = deal;
        self
    }

    /// Every node, the first one first.
    fn nodes(&self) -> impl Iterator<Item = &ServerUnderTest> {
        std::iter::once(&self.server).chain(&self.others)
    }

    /// A fan-out writes to an object of `kind`.
    pub fn with_kind(mut self, kind: ObjectKind) -> Self {
        self.kind = kind;
        self
    }

    /// `conns --first-time`: each subscriber on its own endpoint, with no TLS session
    /// to resume, as devices connecting for the first time or after a server restart.
    pub fn with_first_time(mut self, first_time: bool) -> Self {
        self.first_time = first_time;
        self
    }

    pub fn server(&self) -> &ServerUnderTest {
        &self.server
    }

    /// A backend connection (the API key: full access).
    pub async fn backend(&self) -> Result<Client, Error> {
        let config = ClientConfig::from_admin(&self.server.admin).map_err(err)?;
        Client::connect_via(config, self.endpoints.next().clone())
            .await
            .map_err(err)
    }

    /// A config with its own access token for each of `n` identities named `{prefix}{i}`:
    /// what a backend hands its apps before they connect, so minting is not counted as
    /// opening.
    pub fn identity_configs(&self, n: usize, prefix: &str) -> Result<Vec<ClientConfig>, Error> {
        let a = &self.server.admin;
        let all: Vec<&ServerUnderTest> = self.nodes().collect();
        let nodes: Vec<&ServerUnderTest> = match self.deal.as_slice() {
            [] => all,
            deal => deal.iter().filter_map(|&i| all.get(i).copied()).collect(),
        };
        if nodes.is_empty() {
            return Err("no node to deal identities over".into());
        }
        let now = syncline_client::token::now_s();
        (0..n)
            .map(|i| {
                let node = &nodes[i % nodes.len()].admin;
                let token = syncline_client::token::mint(
                    &a.api_key_sid,
                    &a.api_key_secret,
                    &a.account_sid,
                    &a.default_service_sid,
                    &format!("{prefix}{i}"),
                    3600,
                    now,
                );
                ClientConfig::with_token(&node.server, &node.ca_file, &token).map_err(err)
            })
            .collect()
    }

    /// Connects with `config` (see `identity_configs`) and subscribes to each of
    /// `objects` as soon as the connection is open.
    pub async fn member(
        &self,
        config: ClientConfig,
        objects: &[String],
    ) -> Result<(Client, Vec<Subscription>), Error> {
        let client = if self.first_time {
            Client::connect(config).await
        } else {
            Client::connect_via(config, self.endpoints.next().clone()).await
        }
        .map_err(err)?;
        let mut subs = Vec::with_capacity(objects.len());
        for object in objects {
            subs.push(
                client
                    .subscribe(object, SubscribeOptions::default())
                    .await
                    .map_err(err)?,
            );
        }
        Ok((client, subs))
    }
}

/// The position an event is at (a revision; a stream message's sequence), and the
/// payload's send time; `None` for events that carry no written value.
fn position(revision: u64, e: &SyncEventKind) -> Option<(u64, Option<u64>)> {
    let data = match e {
        SyncEventKind::DocumentUpdated { data, .. } => data,
        SyncEventKind::ItemAdded { item } | SyncEventKind::ItemUpdated { item, .. } => &item.data,
        SyncEventKind::MessagePublished { data, sequence, .. } => {
            return Some((*sequence, data["sent_ns"].as_u64()));
        }
        _ => return None,
    };
    Some((revision, data["sent_ns"].as_u64()))
}

impl Peer for Syncline {
    const SYSTEM: &'static str = "syncline";
    const QUIC: bool = true;
    const ORDER: Order = Order::Positions;

    type Conn = Client;
    type Ticket = ClientConfig;
    type Link = Client;
    type Events = Subscription;

    fn process(&self) -> &MeasuredProcess {
        self.server.process()
    }

    fn server_cpu_seconds(&self) -> f64 {
        self.nodes().map(ServerUnderTest::cpu_seconds).sum()
    }

    fn node_cpu_seconds(&self) -> Vec<f64> {
        if self.others.is_empty() {
            return Vec::new();
        }
        self.nodes().map(ServerUnderTest::cpu_seconds).collect()
    }

    fn kind(&self) -> &'static str {
        self.kind.name()
    }

    fn first_time(&self) -> Option<bool> {
        Some(self.first_time)
    }

    /// The server allows 500 requests/s per connection: a higher rate is spread over
    /// several writer connections (the server still orders the writes by revision).
    fn writers_for(rate: u32) -> usize {
        (rate as usize).div_ceil(400).max(1)
    }

    async fn connect(&self) -> Result<Client, Error> {
        self.backend().await
    }

    async fn write(&self, c: &mut Client, key: &str, value: &Value) -> Result<(), Error> {
        c.document(key).set(value).await.map_err(err)?;
        Ok(())
    }

    /// One update of `topic`, as the fan-out's kind has it; answered with its revision
    /// (a stream: its sequence).
    async fn publish(&self, c: &mut Client, topic: &str, data: Value) -> Result<Ack, Error> {
        let at = match self.kind {
            ObjectKind::Document => c.document(topic).set(&data).await.map_err(err)?.revision,
            ObjectKind::Map => c.map(topic).set("k", &data).await.map_err(err)?.revision,
            ObjectKind::List => c.list(topic).push(&data).await.map_err(err)?.revision,
            ObjectKind::Stream => c.stream(topic).publish(&data).await.map_err(err)?,
        };
        Ok(Ack::at(at))
    }

    fn tickets(&self, n: usize, topic: &str) -> Result<Vec<ClientConfig>, Error> {
        self.identity_configs(n, topic)
    }

    async fn subscribe(
        &self,
        config: ClientConfig,
        topic: &str,
    ) -> Result<(Client, Subscription), Error> {
        let (client, mut subs) = self.member(config, &[topic.to_owned()]).await?;
        let sub = subs.pop().ok_or("no subscription")?;
        Ok((client, sub))
    }

    async fn next(sub: &mut Subscription) -> Next {
        loop {
            let e = match sub.next().await {
                Some(Ok(e)) => e,
                Some(Err(e)) => return Next::Ended(e.to_string()),
                None => return Next::Ended("the subscription ended".to_owned()),
            };
            if e.kind == SyncEventKind::Snapshot {
                let at = match sub.replica() {
                    Replica::Stream(_) => sub.last_sequence(),
                    r => r.revision(),
                };
                return Next::Snapshot {
                    at: at.unwrap_or(0),
                };
            }
            if let Some((at, sent_ns)) = position(e.revision, &e.kind) {
                return Next::Event {
                    at,
                    seq: None,
                    sent_ns,
                };
            }
        }
    }

    fn transport_stats(link: &Client) -> Option<quinn::ConnectionStats> {
        link.transport_stats()
    }

    /// A fan-out's writer: its acknowledgement latency splits an event's latency into
    /// the commit's share and the fan-out's; and the rate it reached.
    fn writer_figures(&self, written: &Written, extra: &mut Map<String, Value>) {
        if written.workload == "fanout" {
            extra.insert(
                "write_p50_ms".into(),
                json!(measure::ms(&written.acks, 0.5)),
            );
            extra.insert(
                "write_p99_ms".into(),
                json!(measure::ms(&written.acks, 0.99)),
            );
            extra.insert("writes_per_s".into(), json!(written.per_s));
        }
    }
}
