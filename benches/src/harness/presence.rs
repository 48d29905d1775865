//! W5, `presence` (Syncline only): presence at scale. Each room is a Map (`room-<r>`);
//! each identity `user-<i>` (its own access token, its own connection) joins room
//! `i % rooms` with an ephemeral item `user-<i>`, and one watcher per room (a backend)
//! follows the room and notes when each item comes and goes. For the run's duration
//! identities drop at a bounded rate (`churn` per second), alternately with a clean
//! close and by vanishing (their UDP socket stops carrying datagrams, both ways, before
//! the client is dropped: the server hears nothing and finds out at its idle timeout);
//! each drop is timed from the drop to the moment its room's watcher sees the item
//! removed, and the identity then joins again after a short random pause. At the end
//! every identity still connected leaves (even ones clean, odd ones silent; those in
//! the middle of a drop finish timing it and do not rejoin), and once the windows have
//! passed the rooms are read afresh: any item still there is a ghost (its owner has no
//! connection).
//!
//! An identity rejoins only once its removal was seen, so each drop is one measure: a
//! reconnect inside the debouncing window (which cancels the removal) is not what this
//! measures.
//!
//! The servers are a slice of [`Target`]s: identities and watchers are dealt over them
//! round-robin (an identity's successive connections too), so the same code drives one
//! node or several. Every loop is bounded in count and time; all traffic goes to the
//! targets' addresses (127.0.0.1 for a server started here).

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, UdpPoller};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use syncline_client::{
    AdminConfig, Client, ClientConfig, Credential, ItemKey, PageOptions, Reason, ServiceFlagsPatch,
    Subscription, SyncEventKind,
};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use super::measure::{self, Delivery, MeasuredProcess, Outcome, Progress};
use super::server::syncline_bin;
use super::syncline::Endpoints;
use super::workloads::{OPEN_LIMIT, OVERRUN};
use super::{err, Error};

/// Identities connecting at once.
const JOIN_CONCURRENCY: usize = 256;
/// Longest one join (connect, Hello, the ephemeral set) may take.
const JOIN_LIMIT: Duration = Duration::from_secs(30);
/// What a removal may take past the server's idle timeout and debouncing window before
/// the drop counts as late (its removal never seen).
const REMOVAL_MARGIN: Duration = Duration::from_secs(10);
/// The idle timeout assumed for a server not started here (`syncline serve`'s default).
const ASSUMED_IDLE_TIMEOUT_MS: u64 = 30_000;
/// Longest pause between an identity's removal and its next join.
const MAX_REJOIN_PAUSE_MS: u64 = 500;
/// Receive and send buffers of each identity's own UDP socket (it carries one
/// connection with little traffic).
const IDENTITY_UDP_BUFFER: usize = 256 * 1024;
/// Errors quoted in the result line.
const ERROR_SAMPLES: usize = 5;

#[derive(Clone, Debug)]
pub struct PresenceParams {
    pub identities: usize,
    pub rooms: usize,
    /// Drops per second during the run, all identities together.
    pub churn: u32,
    pub duration: Duration,
    pub seed: u64,
    /// Turn the service's reachability debouncing on with this window (ms); `None`
    /// leaves the service's setting as it is (the line reports what was in effect).
    pub debounce_ms: Option<u32>,
    /// The idle timeout the servers run with, when known (they were started here).
    pub idle_timeout_ms: Option<u64>,
}

/// One server the workload's connections go to: its admin config (address, CA, API key,
/// service) and its process when it runs here (CPU and memory are read from it).
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub admin: &'a AdminConfig,
    pub process: &'a MeasuredProcess,
}

/// A fresh `syncline serve` for this workload: 127.0.0.1, a temp data dir, killed when
/// dropped, as `ServerUnderTest::spawn`, plus `--idle-timeout-ms` so that a vanished
/// client is noticed in seconds rather than the default 30.
pub struct PresenceServer {
    pub admin: AdminConfig,
    pub process: MeasuredProcess,
    _data: tempfile::TempDir,
}

impl PresenceServer {
    pub fn spawn(relaxed: bool, idle_timeout_ms: u64) -> Result<Self, Error> {
        let data = tempfile::tempdir().map_err(err)?;
        let mut cmd = Command::new(syncline_bin()?);
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--idle-timeout-ms",
            &idle_timeout_ms.to_string(),
            "--data",
        ])
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        if relaxed {
            cmd.arg("--relaxed");
        }
        let child = cmd.spawn().map_err(|e| format!("starting syncline: {e}"))?;
        let mut process = MeasuredProcess(Some(child));
        let admin = wait_for_admin(&data.path().join("admin.json"), &mut process)?;
        Ok(PresenceServer {
            admin,
            process,
            _data: data,
        })
    }

    pub fn target(&self) -> Target<'_> {
        Target {
            admin: &self.admin,
            process: &self.process,
        }
    }
}

/// The server's `admin.json` once it has written it (within 30 s, unless it exits).
fn wait_for_admin(path: &Path, process: &mut MeasuredProcess) -> Result<AdminConfig, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(a) = AdminConfig::load(path) {
            return Ok(a);
        }
        if let Some(status) = process.try_wait()? {
            return Err(format!("the server exited ({status}) before it listened"));
        }
        if Instant::now() > deadline {
            return Err("the server did not start within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A UDP socket that can be cut: from then on every datagram it is given to send is
/// dropped and every datagram it receives is discarded, as when a device loses its
/// network. The client's own close, sent after the cut, never leaves the process.
#[derive(Debug)]
struct Cuttable {
    inner: Arc<dyn AsyncUdpSocket>,
    cut: AtomicBool,
}

impl Cuttable {
    /// A socket of the family of `server`'s address, on an ephemeral port.
    fn bind(server: SocketAddr) -> Result<Arc<Cuttable>, Error> {
        let any: SocketAddr = if server.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = syncline_client::udp::bind_udp(any, IDENTITY_UDP_BUFFER, IDENTITY_UDP_BUFFER)
            .map_err(|e| format!("binding a UDP socket: {e}"))?
            .socket;
        let inner = quinn::TokioRuntime.wrap_udp_socket(socket).map_err(err)?;
        Ok(Arc::new(Cuttable {
            inner,
            cut: AtomicBool::new(false),
        }))
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

impl AsyncUdpSocket for Cuttable {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if self.is_cut() {
            // Gone into the void: quinn believes it was sent.
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(_)) if self.is_cut() => continue,
                Poll::Ready(Err(_)) if self.is_cut() => return Poll::Pending,
                other => return other,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// How a connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `Client::close`: the server hears the QUIC close at once.
    Clean,
    /// The socket is cut, then the client dropped: the server hears nothing.
    Silent,
}

impl Mode {
    /// Even: clean; odd: silent.
    fn of_parity(n: usize) -> Mode {
        match n % 2 {
            0 => Mode::Clean,
            _ => Mode::Silent,
        }
    }
}

/// The client side of one target: its address and keys, the TLS settings every
/// identity's endpoint shares (so rejoins resume TLS sessions), and the endpoints its
/// backends (watchers, setup, the final read) share.
struct Node {
    admin: AdminConfig,
    backend: ClientConfig,
    tls: quinn::ClientConfig,
    endpoints: Endpoints,
}

impl Node {
    fn new(target: &Target<'_>) -> Result<Node, Error> {
        let backend = ClientConfig::from_admin(target.admin).map_err(err)?;
        Ok(Node {
            admin: target.admin.clone(),
            tls: backend.quinn_config().map_err(err)?,
            endpoints: Endpoints::new(&backend)?,
            backend,
        })
    }

    async fn backend(&self) -> Result<Client, Error> {
        Client::connect_via(self.backend.clone(), self.endpoints.next().clone())
            .await
            .map_err(err)
    }

    /// Identity `i` connected on its own cuttable socket, its item set in its room.
    async fn join(&self, token: &str, i: usize, rooms: usize) -> Result<Session, Error> {
        let mut config = self.backend.clone();
        config.credential = Credential::Token(token.to_owned());
        let socket = Cuttable::bind(config.server)?;
        let abstract_socket: Arc<dyn AsyncUdpSocket> = socket.clone();
        let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            None,
            abstract_socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(err)?;
        endpoint.set_default_client_config(self.tls.clone());
        let client = Client::connect_via(config, endpoint).await.map_err(err)?;
        client
            .map(&room_name(i % rooms))
            .set_ephemeral(
                &user_key(i),
                &json!({"i": i, "joined_ns": measure::now_ns()}),
            )
            .await
            .map_err(err)?;
        Ok(Session { client, socket })
    }
}

/// An identity's live connection and its socket.
struct Session {
    client: Client,
    socket: Arc<Cuttable>,
}

impl Session {
    fn end(self, mode: Mode) {
        if mode == Mode::Silent {
            self.socket.cut();
        }
        // Clean: the close goes out at once. Silent: into the cut socket; closing only
        // stops the client from reconnecting by itself.
        self.client.close();
    }
}

fn room_name(r: usize) -> String {
    format!("room-{r}")
}

fn user_key(i: usize) -> String {
    format!("user-{i}")
}

/// The identity of item key `user-<i>`.
fn user_of(key: &ItemKey) -> Option<usize> {
    match key {
        ItemKey::Key(k) => k.strip_prefix("user-")?.parse().ok(),
        ItemKey::Index(_) => None,
    }
}

/// What a room's watcher last saw of one identity's item, and when.
#[derive(Clone, Copy, Debug)]
struct Seen {
    present: bool,
    at: Instant,
}

/// Figures the identities record into (one histogram each for the whole run: one per
/// identity would cost 2,000 × 256 KiB).
struct Figures {
    clean: Histogram<u64>,
    silent: Histogram<u64>,
    late_clean: u64,
    late_silent: u64,
    /// Items removed while their owner was connected and had not been told to drop.
    unexpected_removals: u64,
    joins: u64,
    errors: u64,
    error_samples: Vec<String>,
}

impl Figures {
    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES {
            self.error_samples.push(e);
        }
    }
}

/// What the identities share.
struct Shared {
    nodes: Vec<Node>,
    rooms: usize,
    tokens: Vec<String>,
    board: Vec<watch::Sender<Seen>>,
    /// Joined and waiting for an order; the churn takes an identity by swapping it out.
    ready: Vec<AtomicBool>,
    joined_once: AtomicUsize,
    gate: Semaphore,
    figures: Mutex<Figures>,
    removal_limit: Duration,
    seed: u64,
}

impl Shared {
    fn figures(&self) -> std::sync::MutexGuard<'_, Figures> {
        self.figures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The last drop of an identity, when every identity leaves: when the watcher saw its
/// item go (`None`: not within the removal limit).
struct FinalDrop {
    removed: Option<Instant>,
}

/// One identity: join, wait for an order (or the end), drop as told, time the removal,
/// pause, join again. Returns its final drop.
async fn identity(
    shared: Arc<Shared>,
    i: usize,
    mut orders: mpsc::Receiver<Mode>,
    mut ending: watch::Receiver<bool>,
) -> Option<FinalDrop> {
    let mut rng =
        StdRng::seed_from_u64(shared.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut seen = shared.board[i].subscribe();
    let mut first = true;
    for attempt in 0usize.. {
        if *ending.borrow() {
            return None;
        }
        let node = &shared.nodes[(i + attempt) % shared.nodes.len()];
        let joined = {
            let _permit = shared.gate.acquire().await.ok()?;
            tokio::time::timeout(JOIN_LIMIT, node.join(&shared.tokens[i], i, shared.rooms)).await
        };
        let session = match joined {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                shared.figures().error(format!("user-{i} joining: {e}"));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(_) => {
                shared
                    .figures()
                    .error(format!("user-{i} did not join within {JOIN_LIMIT:?}"));
                continue;
            }
        };
        shared.figures().joins += 1;
        // The drop is timed against the watcher's view: it must have seen the item come.
        // (Each wait's answer is dropped at once: it holds the board's read lock.)
        let shown = tokio::time::timeout(shared.removal_limit, seen.wait_for(|s| s.present))
            .await
            .is_ok_and(|r| r.is_ok());
        if !shown {
            shared.figures().error(format!(
                "the watcher did not see user-{i} join within {:?}",
                shared.removal_limit
            ));
            session.end(Mode::Clean);
            continue;
        }
        if first {
            first = false;
            shared.joined_once.fetch_add(1, Ordering::Relaxed);
        }
        shared.ready[i].store(true, Ordering::SeqCst);
        let order = tokio::select! {
            order = orders.recv() => order,
            _ = ending.wait_for(|e| *e) => None,
        };
        shared.ready[i].store(false, Ordering::SeqCst);
        let last = order.is_none();
        let mode = order.unwrap_or(Mode::of_parity(i));
        let before = *seen.borrow_and_update();
        let at = Instant::now();
        session.end(mode);
        if !before.present {
            // Removed while connected (the server lost the connection, say): not a
            // drop of ours to time.
            shared.figures().unexpected_removals += 1;
            if last {
                return Some(FinalDrop { removed: Some(at) });
            }
            continue;
        }
        let removed = tokio::time::timeout(shared.removal_limit, seen.wait_for(|s| !s.present))
            .await
            .ok()
            .and_then(|r| r.ok().map(|s| s.at));
        if last {
            return Some(FinalDrop { removed });
        }
        {
            let mut f = shared.figures();
            match (mode, removed) {
                (Mode::Clean, Some(r)) => {
                    measure::record(&mut f.clean, r.saturating_duration_since(at))
                }
                (Mode::Silent, Some(r)) => {
                    measure::record(&mut f.silent, r.saturating_duration_since(at))
                }
                (Mode::Clean, None) => f.late_clean += 1,
                (Mode::Silent, None) => f.late_silent += 1,
            }
        }
        let pause = Duration::from_millis(rng.gen_range(0..=MAX_REJOIN_PAUSE_MS));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = ending.wait_for(|e| *e) => return None,
        }
    }
    None
}

/// What a room's watcher counted.
#[derive(Default)]
struct Watched {
    events: u64,
    resyncs: u64,
    /// Removals with another reason than `disconnected`.
    other_removals: u64,
    failure: Option<String>,
}

/// Follows room `r` until `stop`, publishing each of its identities' comings and goings
/// to the board with the time the watcher heard of them.
async fn watch_room(
    shared: Arc<Shared>,
    r: usize,
    mut sub: Subscription,
    mut stop: watch::Receiver<bool>,
) -> Watched {
    let mut w = Watched::default();
    let mut snapshots = 0u64;
    let mark = |i: usize, present: bool| {
        if let Some(b) = shared.board.get(i) {
            b.send_if_modified(|s| {
                let changed = s.present != present;
                if changed {
                    *s = Seen {
                        present,
                        at: Instant::now(),
                    };
                }
                changed
            });
        }
    };
    loop {
        let event = tokio::select! {
            e = sub.next() => e,
            _ = stop.wait_for(|s| *s) => return w,
        };
        let event = match event {
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                w.failure = Some(format!("room-{r}'s watcher: {e}"));
                return w;
            }
            None => {
                w.failure = Some(format!("room-{r}'s subscription ended"));
                return w;
            }
        };
        w.events += 1;
        match &event.kind {
            SyncEventKind::Snapshot => {
                snapshots += 1;
                if snapshots > 1 {
                    w.resyncs += 1;
                }
                let here: Vec<usize> = sub
                    .collection()
                    .map(|c| c.items.keys().filter_map(user_of).collect())
                    .unwrap_or_default();
                for i in (r..shared.board.len()).step_by(shared.rooms) {
                    mark(i, here.contains(&i));
                }
            }
            SyncEventKind::ItemAdded { item } | SyncEventKind::ItemUpdated { item, .. } => {
                if let Some(i) = user_of(&item.key) {
                    mark(i, true);
                }
            }
            SyncEventKind::ItemRemoved { key, reason, .. } => {
                if *reason != Reason::Disconnected {
                    w.other_removals += 1;
                }
                if let Some(i) = user_of(key) {
                    mark(i, false);
                }
            }
            SyncEventKind::Removed { .. } | SyncEventKind::Ended(_) => {
                w.failure = Some(format!("room-{r} went away: {:?}", event.kind));
                return w;
            }
            _ => {}
        }
    }
}

/// Items still in the rooms, read afresh from the servers (room `r` from node
/// `r % nodes`), with a few of their keys.
async fn read_ghosts(nodes: &[Node], rooms: usize) -> Result<(u64, Vec<String>), Error> {
    let mut backends = Vec::with_capacity(nodes.len());
    for n in nodes {
        backends.push(n.backend().await?);
    }
    let mut ghosts = 0;
    let mut samples = Vec::new();
    for r in 0..rooms {
        let map = backends[r % backends.len()].map(&room_name(r));
        let mut from = None;
        loop {
            let page = map
                .items(PageOptions {
                    from: from.take(),
                    limit: 1000,
                    ..PageOptions::default()
                })
                .await
                .map_err(err)?;
            for item in &page.items {
                ghosts += 1;
                if samples.len() < ERROR_SAMPLES {
                    samples.push(format!("room-{r}/{}", item.key));
                }
            }
            match page.next {
                Some(next) => from = Some(next),
                None => break,
            }
        }
    }
    for b in backends {
        b.close();
    }
    Ok((ghosts, samples))
}

/// W5 over `targets` (one server, or later the nodes of a cluster).
pub async fn presence(targets: &[Target<'_>], params: &PresenceParams) -> Result<Outcome, Error> {
    let (identities, rooms) = (params.identities.max(1), params.rooms.max(1));
    let nodes: Vec<Node> = targets.iter().map(Node::new).collect::<Result<_, _>>()?;
    let first = nodes.first().ok_or("presence needs at least one server")?;
    let progress = Progress::new("presence");

    // The service's debouncing, set if asked, then read back: the line says what was in
    // effect.
    let setup = first.backend().await?;
    let sid = first.admin.default_service_sid.clone();
    if let Some(ms) = params.debounce_ms {
        let patch = ServiceFlagsPatch {
            reachability_debouncing_enabled: Some(true),
            reachability_debouncing_window_ms: Some(ms),
            ..ServiceFlagsPatch::default()
        };
        setup.update_service(&sid, patch).await.map_err(err)?;
    }
    let service = setup.service(&sid).await.map_err(err)?;
    let debouncing = service.reachability_debouncing_enabled;
    let window_ms = service.reachability_debouncing_window_ms;
    let idle_ms = params.idle_timeout_ms.unwrap_or(ASSUMED_IDLE_TIMEOUT_MS);
    let removal_limit =
        Duration::from_millis(idle_ms + if debouncing { u64::from(window_ms) } else { 0 })
            + REMOVAL_MARGIN;

    measure::phase("presence: creating the rooms", OPEN_LIMIT, async {
        for r in 0..rooms {
            match setup.map(&room_name(r)).create(None).await {
                Ok(_) => {}
                // A server given by --server may have them from an earlier run.
                Err(e) if e.code() == syncline_client::ErrorCode::AlreadyExists => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    })
    .await?;
    setup.close();

    let now = syncline_client::token::now_s();
    let ttl = params.duration.as_secs() + 3600;
    let tokens = (0..identities)
        .map(|i| {
            let a = &first.admin;
            syncline_client::token::mint(
                &a.api_key_sid,
                &a.api_key_secret,
                &a.account_sid,
                &a.default_service_sid,
                &user_key(i),
                ttl,
                now,
            )
        })
        .collect();
    let start = Instant::now();
    let shared = Arc::new(Shared {
        rooms,
        tokens,
        board: (0..identities)
            .map(|_| {
                watch::channel(Seen {
                    present: false,
                    at: start,
                })
                .0
            })
            .collect(),
        ready: (0..identities).map(|_| AtomicBool::new(false)).collect(),
        joined_once: AtomicUsize::new(0),
        gate: Semaphore::new(JOIN_CONCURRENCY),
        figures: Mutex::new(Figures {
            clean: measure::histogram(),
            silent: measure::histogram(),
            late_clean: 0,
            late_silent: 0,
            unexpected_removals: 0,
            joins: 0,
            errors: 0,
            error_samples: Vec::new(),
        }),
        removal_limit,
        seed: params.seed,
        nodes,
    });

    // Watchers first, so that every join is seen.
    let (stop_watchers, stop_rx) = watch::channel(false);
    let mut watchers = JoinSet::new();
    let mut watcher_clients = Vec::with_capacity(rooms);
    measure::phase("presence: opening the watchers", OPEN_LIMIT, async {
        for r in 0..rooms {
            let node = &shared.nodes[r % shared.nodes.len()];
            let client = node.backend().await?;
            let sub = client.map(&room_name(r)).subscribe().await.map_err(err)?;
            watchers.spawn(watch_room(shared.clone(), r, sub, stop_rx.clone()));
            watcher_clients.push(client);
        }
        Ok(())
    })
    .await?;

    let (ending_tx, ending) = watch::channel(false);
    let mut orders = Vec::with_capacity(identities);
    let mut members = JoinSet::new();
    for i in 0..identities {
        let (tx, rx) = mpsc::channel(1);
        orders.push(tx);
        members.spawn(identity(shared.clone(), i, rx, ending.clone()));
    }
    measure::phase("presence: joining", OPEN_LIMIT, async {
        loop {
            let joined = shared.joined_once.load(Ordering::Relaxed);
            progress.update(
                joined as f64 / identities as f64,
                &format!("{joined}/{identities} joined"),
            );
            if joined == identities {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?;

    // The churn: one drop per tick, of a joined identity picked at random, clean and
    // silent in turn.
    let (cpu_before, client_before, udp_before) = (
        server_cpu(targets),
        measure::self_cpu_seconds(),
        measure::udp_errors(),
    );
    let churn_start = Instant::now();
    let mut rng = StdRng::seed_from_u64(params.seed);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(
        1.0 / f64::from(params.churn.max(1)),
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut ordered, mut skipped) = (0usize, 0u64);
    let ticker = progress.tick_for(params.duration);
    while churn_start.elapsed() < params.duration {
        tick.tick().await;
        let picked = (0..16)
            .map(|_| rng.gen_range(0..identities))
            .find(|&i| shared.ready[i].swap(false, Ordering::SeqCst));
        match picked {
            Some(i) if orders[i].try_send(Mode::of_parity(ordered)).is_ok() => ordered += 1,
            _ => skipped += 1,
        }
    }
    let churn_elapsed = churn_start.elapsed();
    ticker.abort();

    // Everyone leaves: drops in progress finish their measure, then each identity drops
    // (half clean, half silent) and waits for its removal.
    ending_tx.send_replace(true);
    let end_at = Instant::now();
    let finals: Vec<FinalDrop> = measure::phase(
        "presence: leaving",
        JOIN_LIMIT + removal_limit * 2 + OVERRUN,
        async {
            let mut finals = Vec::with_capacity(identities);
            while let Some(f) = members.join_next().await {
                if let Some(f) = f.map_err(err)? {
                    finals.push(f);
                }
            }
            Ok(finals)
        },
    )
    .await?;
    drop(orders);
    let (ghosts, ghost_samples) = measure::phase(
        "presence: reading the rooms",
        OPEN_LIMIT,
        read_ghosts(&shared.nodes, rooms),
    )
    .await?;
    stop_watchers.send_replace(true);
    let mut watched = Watched::default();
    let mut watcher_failures = Vec::new();
    while let Some(w) = watchers.join_next().await {
        let w = w.map_err(err)?;
        watched.events += w.events;
        watched.resyncs += w.resyncs;
        watched.other_removals += w.other_removals;
        watcher_failures.extend(w.failure);
    }
    for c in watcher_clients {
        c.close();
    }
    progress.finish();

    let final_late = finals.iter().filter(|f| f.removed.is_none()).count();
    let final_clear = finals
        .iter()
        .filter_map(|f| f.removed)
        .max()
        .map_or(Duration::ZERO, |last| {
            last.saturating_duration_since(end_at)
        });
    let udp = measure::udp_errors();
    let f = shared.figures();
    let mut all = f.clean.clone();
    all.add(&f.silent).map_err(err)?;
    let drops = all.len();
    let late = f.late_clean + f.late_silent;
    let mut delivery = Delivery::default();
    delivery.missed = late;
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let mut extra = Map::new();
    for (name, value) in [
        ("drops", json!(drops)),
        ("clean_drops", json!(f.clean.len())),
        ("silent_drops", json!(f.silent.len())),
        ("clean_p50_ms", json!(measure::ms(&f.clean, 0.5))),
        ("clean_p99_ms", json!(measure::ms(&f.clean, 0.99))),
        ("silent_p50_ms", json!(measure::ms(&f.silent, 0.5))),
        ("silent_p99_ms", json!(measure::ms(&f.silent, 0.99))),
        ("late_clean", json!(f.late_clean)),
        ("late_silent", json!(f.late_silent)),
        ("removal_limit_ms", json!(removal_limit.as_millis() as u64)),
        ("ghosts", json!(ghosts)),
        ("ghost_samples", json!(ghost_samples)),
        ("final_drops", json!(finals.len())),
        ("final_late", json!(final_late)),
        (
            "final_clear_ms",
            json!(round(final_clear.as_secs_f64() * 1000.0)),
        ),
        ("debouncing_enabled", json!(debouncing)),
        ("debouncing_window_ms", json!(window_ms)),
        ("server_idle_timeout_ms", json!(params.idle_timeout_ms)),
        (
            "silent_drop",
            json!("udp socket cut (sends dropped, receives discarded), then the client dropped"),
        ),
        ("joins", json!(f.joins)),
        ("churn_skipped", json!(skipped)),
        ("unexpected_removals", json!(f.unexpected_removals)),
        ("other_removals", json!(watched.other_removals)),
        ("watcher_events", json!(watched.events)),
        ("watcher_resyncs", json!(watched.resyncs)),
        ("watcher_failures", json!(watcher_failures)),
        ("errors", json!(f.errors)),
        ("error_samples", json!(f.error_samples)),
        ("nodes", json!(targets.len())),
    ] {
        extra.insert(name.into(), value);
    }
    Ok(Outcome {
        workload: "presence",
        system: "syncline",
        ops_per_s: drops as f64 / churn_elapsed.as_secs_f64().max(1e-9),
        latency: all,
        delivery,
        server_cpu_s: server_cpu(targets) - cpu_before,
        client_cpu_s: measure::self_cpu_seconds() - client_before,
        cpu_ops: drops as f64,
        server_rss_kib: targets.iter().map(|t| t.process.rss_kib().1).sum(),
        udp_rcvbuf_errors: udp.0.saturating_sub(udp_before.0),
        udp_in_errors: udp.1.saturating_sub(udp_before.1),
        elapsed: churn_elapsed,
        params: json!({
            "identities": identities,
            "rooms": rooms,
            "churn": params.churn,
            "duration_s": params.duration.as_secs_f64(),
            "seed": params.seed,
        }),
        extra,
    })
}

/// The servers' CPU seconds so far, together.
fn server_cpu(targets: &[Target<'_>]) -> f64 {
    targets.iter().map(|t| t.process.cpu_seconds()).sum()
}

/// Why a result line fails the run: ghosts, errors, or a watcher that stopped.
pub fn verdict(line: &Value) -> Result<(), String> {
    let n = |f: &str| line[f].as_u64().unwrap_or(0);
    let mut wrong = Vec::new();
    if n("ghosts") > 0 {
        wrong.push(format!("{} ghosts: {}", n("ghosts"), line["ghost_samples"]));
    }
    if n("errors") > 0 {
        wrong.push(format!("{} errors: {}", n("errors"), line["error_samples"]));
    }
    if line["watcher_failures"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        wrong.push(format!("watchers failed: {}", line["watcher_failures"]));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

/// The presence table: drops timed by kind, late removals, ghosts, and the settings the
/// figures depend on.
pub fn table(results: &[Value]) -> String {
    let mut out = String::from(
        "| workload | system | params | drops | clean p50 ms | clean p99 ms | silent p50 ms | silent p99 ms | late | ghosts | debouncing | idle timeout ms | final clear ms | server CPU s | server RSS KiB |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|\n",
    );
    for r in results {
        let debouncing = if r["debouncing_enabled"] == true {
            format!("{} ms", r["debouncing_window_ms"])
        } else {
            "off".to_owned()
        };
        let idle = r["server_idle_timeout_ms"]
            .as_u64()
            .map_or("?".to_owned(), |v| v.to_string());
        out.push_str(&format!(
            "| {} | {} | {} | {} ({} clean, {} silent) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["workload"].as_str().unwrap_or(""),
            r["system"].as_str().unwrap_or(""),
            r["params"],
            r["drops"],
            r["clean_drops"],
            r["silent_drops"],
            r["clean_p50_ms"],
            r["clean_p99_ms"],
            r["silent_p50_ms"],
            r["silent_p99_ms"],
            r["missed"],
            r["ghosts"],
            debouncing,
            idle,
            r["final_clear_ms"],
            r["server_cpu_s"],
            r["server_rss_kib"],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_keys_name_their_identity() {
        assert_eq!(user_of(&ItemKey::Key(user_key(42))), Some(42));
        assert_eq!(user_of(&ItemKey::Key("someone".into())), None);
        assert_eq!(user_of(&ItemKey::Index(3)), None);
        assert_eq!(Mode::of_parity(0), Mode::Clean);
        assert_eq!(Mode::of_parity(1), Mode::Silent);
    }

    #[test]
    fn a_line_with_ghosts_or_errors_fails() {
        let ok = json!({"ghosts": 0, "errors": 0, "watcher_failures": []});
        assert!(verdict(&ok).is_ok());
        let ghosts = json!({"ghosts": 2, "ghost_samples": ["room-1/user-3"], "errors": 0});
        assert!(verdict(&ghosts).unwrap_err().contains("2 ghosts"));
        let failed = json!({"ghosts": 0, "errors": 0, "watcher_failures": ["room-0 ended"]});
        assert!(verdict(&failed).is_err());
        let t = table(&[
            json!({"workload": "presence", "system": "syncline", "ghosts": 0,
            "debouncing_enabled": false, "server_idle_timeout_ms": 2000}),
        ]);
        assert!(
            t.contains("| ghosts |") && t.contains("| off | 2000 |"),
            "{t}"
        );
    }
}
