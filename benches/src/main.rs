//! `syncline-bench`: the load harness. Starts a fresh release `syncline` server (or
//! drives one given by `--server`/`--config`), runs a workload, and prints a markdown
//! table for people and, with `--json`, one JSON object per result on stdout.
//!
//! ```text
//! cargo run --release -p syncline-bench -- write --writers 64 --duration 10
//! cargo run --release -p syncline-bench -- fanout --subscribers 1000 --rate 100
//! cargo run --release -p syncline-bench -- all --quick --json
//! cargo run --release -p syncline-bench --features etcd -- write --peer etcd
//! cargo build --release -p syncline-cli && cargo run --release -p syncline-bench -- crash --cycles 100
//! cargo build --release -p syncline-cli && cargo run --release -p syncline-bench -- soak --duration 600
//! cargo build --release -p syncline-cli && cargo run --release -p syncline-bench -- presence --identities 2000 --rooms 100
//! ```
//!
//! The `syncline` binary must already be built, in the same profile and target
//! directory (`cargo build --release -p syncline-cli`); the tool says so if not.
//!
//! `--peer etcd` (cargo feature `etcd`, off by default: it needs `protoc`) and
//! `--peer redis` (cargo feature `redis`) run `write`, `fanout` (document kind) and
//! `conns` against a fresh local etcd or Redis right after Syncline, with the same
//! parameters, and add a table comparing each with Syncline. Several peers can be
//! given at once (`--peer etcd --peer redis`, or `--peer etcd,redis`). `--peer quinn`
//! runs `fanout` and `conns` against a bare quinn fan-out server with Syncline's
//! endpoint and framing and no storage (`syncline-bench-quinn`, built with the harness).

mod harness;

// The harness is the app here, and plays a thousand clients in one process. With
// glibc's malloc, a tenth of its CPU per delivered event was the allocator; the
// server uses mimalloc for the same reason, and so do the peers' clients, which
// run in this process too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use syncline_client::ObjectKind;

use harness::crash::{self, CrashParams};
use harness::measure::{self, Outcome};
use harness::peer::Peer;
use harness::presence::{self, PresenceParams, PresenceServer, Target};
use harness::server::{ServerUnderTest, WRITE_RATE_LIMIT};
use harness::soak::{self, SoakParams};
use harness::syncline::Syncline;
use harness::syncline_ws::SynclineWs;
use harness::workloads;

#[derive(Parser, Debug)]
#[command(
    name = "syncline-bench",
    about = "Load tests for Syncline, on this machine"
)]
struct Cli {
    /// Drive this server instead of starting one (needs --config).
    #[arg(long, global = true, requires = "config")]
    server: Option<String>,
    /// admin.json of the server given by --server.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Print one JSON object per result on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// A few seconds per workload, small sizes: a smoke run (the test suite uses it).
    #[arg(long, global = true)]
    quick: bool,
    /// Seconds each workload runs (default 10; 2 with --quick).
    #[arg(long, global = true)]
    duration: Option<f64>,
    /// Acknowledge writes before they are flushed (the server's --relaxed mode).
    #[arg(long, global = true)]
    relaxed: bool,
    /// Also run the workload against these systems, one after another right after
    /// Syncline, to compare (each is started here, on 127.0.0.1; etcd and redis need
    /// their cargo features). Repeat the flag or separate with commas.
    #[arg(long, global = true, value_enum, value_delimiter = ',')]
    peer: Vec<PeerName>,
    /// `etcd`: after single-node Syncline (sled), run `write` and `fanout` again
    /// through a cluster of --nodes nodes over a fresh etcd (system
    /// `syncline-cluster`); a fan-out runs twice, subscribers on the writer's node and
    /// on the other nodes.
    #[arg(long, global = true, value_enum, default_value_t = StoreName::Sled)]
    store: StoreName,
    /// Nodes of the cluster with --store etcd.
    #[arg(long, global = true, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    nodes: u16,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StoreName {
    Sled,
    Etcd,
}

/// etcd's `--max-txn-ops` for the cluster the harness starts, and the nodes' bound.
const CLUSTER_MAX_TXN_OPS: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PeerName {
    /// etcd (Debian package `etcd-server`), one node, started by the harness.
    Etcd,
    /// Redis (Debian package `redis-server`), AOF with fsync on every write, started
    /// by the harness.
    Redis,
    /// A bare quinn fan-out server with Syncline's endpoint and framing and no storage
    /// (`syncline-bench-quinn`, built with the harness): the transport's own ceiling,
    /// for `fanout` and `conns`.
    Quinn,
}

/// Why `--peer etcd` cannot run in a build without the `etcd` feature.
#[cfg(not(feature = "etcd"))]
const NO_ETCD: &str = "--peer etcd needs the etcd client, which this build leaves out: \
     build with `--features etcd`, e.g. \
     `cargo run --release -p syncline-bench --features etcd -- write --peer etcd` \
     (and etcd itself: `apt-get install etcd-server`)";

/// Why `--peer redis` cannot run in a build without the `redis` feature.
#[cfg(not(feature = "redis"))]
const NO_REDIS: &str = "--peer redis needs the redis client, which this build leaves out: \
     build with `--features redis`, e.g. \
     `cargo run --release -p syncline-bench --features redis -- write --peer redis` \
     (and Redis itself: `apt-get install redis-server`)";

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    Document,
    Map,
    List,
    Stream,
}

impl From<Kind> for ObjectKind {
    fn from(k: Kind) -> ObjectKind {
        match k {
            Kind::Document => ObjectKind::Document,
            Kind::Map => ObjectKind::Map,
            Kind::List => ObjectKind::List,
            Kind::Stream => ObjectKind::Stream,
        }
    }
}

#[derive(Subcommand, Debug, Clone)]
enum Workload {
    /// W1: writers sharing a few connections, as fast as acks come back.
    Write {
        #[arg(long, default_value_t = 64)]
        writers: usize,
        /// Connections the writers are spread over (round-robin; requests are
        /// multiplexed on each, as every system's own client does). The same for every
        /// system. Several values (`8,64`) run the workload once per value. Not for
        /// --http, where each writer has its own HTTP/1.1 connection.
        #[arg(long, value_delimiter = ',', default_value = "8")]
        connections: Vec<usize>,
        /// Write N shared documents (contention) instead of one per writer.
        #[arg(long)]
        shared: Option<usize>,
        /// Through the REST API (HTTPS, one API key and connection per writer) instead
        /// of QUIC: what the HTTP gateway costs.
        #[arg(long)]
        http: bool,
    },
    /// W2: subscribers on one object, one writer at a fixed rate.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 100)]
        rate: u32,
        #[arg(long, value_enum, default_value_t = Kind::Document)]
        kind: Kind,
        /// Also run it with WebSocket subscribers (system `syncline-ws`, on a fresh
        /// server right after the QUIC run; the writer stays on QUIC).
        #[arg(long)]
        ws: bool,
    },
    /// W3: many connections, each with its own token and one subscription.
    Conns {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Each connection as a device connecting for the first time (or after a server
        /// restart): its own UDP socket and no TLS session to resume, so every handshake
        /// is a full one. By default connections share 32 sockets, each with its TLS
        /// session store, as one app process reconnecting would. Not for `--peer quinn`;
        /// etcd and Redis run without TLS either way.
        #[arg(long)]
        first_time: bool,
        /// Also run it with WebSocket connections (system `syncline-ws`, on a fresh
        /// server right after the QUIC run).
        #[arg(long)]
        ws: bool,
    },
    /// W4: chat rooms (a List of messages, a Map roster, a Stream for typing).
    Chat {
        #[arg(long, default_value_t = 100)]
        rooms: usize,
        #[arg(long, default_value_t = 10)]
        members: usize,
        /// Messages per second, all rooms together.
        #[arg(long, default_value_t = 200)]
        rate: u32,
    },
    /// W5: presence at scale. Each identity (its own token and connection) holds an
    /// ephemeral item in its room's Map; identities drop (clean closes and silent
    /// vanishings in turn) and rejoin at --churn per second, each drop timed until its
    /// room's watcher sees the item removed; once everyone has left, the rooms must hold
    /// no item (ghosts). Starts its server with a short idle timeout. Exits non-zero on
    /// ghosts or errors. Not part of `all`.
    Presence {
        /// Identities, each with its own access token and connection (default 2,000;
        /// 200 with --quick).
        #[arg(long)]
        identities: Option<usize>,
        /// Rooms (Maps) the identities are dealt over (default 100; 10 with --quick).
        #[arg(long)]
        rooms: Option<usize>,
        /// Drops per second, all identities together.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        churn: u32,
        /// The idle timeout (ms) of the server started here: how long a client that
        /// vanished takes to be noticed (default 5,000; 2,000 with --quick). Not with
        /// --server.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1_000..=600_000))]
        idle_timeout_ms: Option<u64>,
        /// Turns the service's reachability debouncing on with this window (ms); by
        /// default the service keeps its setting (off on a fresh server).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1_000..=30_000))]
        debounce_ms: Option<u32>,
        /// Seed for the churn's choices (default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Every workload once (with --quick: the smoke run).
    All,
    /// Soak: mixed load over every object kind (--duration seconds, default 600),
    /// connections coming and going, one stalled subscriber; reports the server's RSS
    /// over time (last third against middle third), errors and ops/s. Exits non-zero
    /// on any error. Not part of `all`.
    Soak {
        /// Concurrent workers, each reconnecting every few hundred operations.
        #[arg(long, default_value_t = 8)]
        workers: usize,
        /// Seed for the workers' choices (default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Crash loop: writers on every object kind, SIGKILL at a random moment, restart on
    /// the same data directory, and a check that every acknowledged write survived.
    /// Exits non-zero if anything was lost or regressed. Not part of `all`. With
    /// `--store etcd --nodes K`: K nodes over a fresh 3-member etcd, writers spread
    /// over them; each cycle kills one node and, half the time, one etcd member.
    Crash {
        #[arg(long, default_value_t = 100)]
        cycles: u64,
        /// Concurrent writers, each on its own connection.
        #[arg(long, default_value_t = 4)]
        writers: usize,
        /// The kill comes 0..=this many ms after the writers start.
        #[arg(long, default_value_t = 300)]
        max_kill_ms: u64,
        /// Seed for the kill delays and the writers' choices (default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
    },
}

fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// The workloads to run, with --quick sizes applied.
fn plan(cli: &Cli) -> Vec<Workload> {
    let quick = cli.quick;
    let pick = |normal: usize, small: usize| if quick { small } else { normal };
    match &cli.workload {
        Workload::All => vec![
            Workload::Write {
                writers: pick(64, 8),
                connections: vec![pick(8, 2)],
                shared: None,
                http: false,
            },
            Workload::Write {
                writers: pick(64, 8),
                connections: vec![pick(64, 8)],
                shared: None,
                http: true,
            },
            Workload::Fanout {
                subscribers: pick(1000, 20),
                rate: 100,
                kind: Kind::Document,
                ws: true,
            },
            Workload::Fanout {
                subscribers: pick(1000, 10),
                rate: 50,
                kind: Kind::Map,
                ws: false,
            },
            Workload::Fanout {
                subscribers: pick(1000, 10),
                rate: 50,
                kind: Kind::List,
                ws: false,
            },
            Workload::Fanout {
                subscribers: pick(1000, 10),
                rate: 50,
                kind: Kind::Stream,
                ws: false,
            },
            Workload::Conns {
                connections: pick(10_000, 100),
                first_time: false,
                ws: true,
            },
            Workload::Chat {
                rooms: pick(100, 4),
                members: pick(10, 3),
                rate: pick(200, 40) as u32,
            },
        ],
        // One run per connection count, each its own result line.
        Workload::Write {
            writers,
            connections,
            shared,
            http: false,
        } => connections
            .iter()
            .map(|&c| Workload::Write {
                writers: *writers,
                connections: vec![c],
                shared: *shared,
                http: false,
            })
            .collect(),
        one => vec![one.clone()],
    }
}

/// The connection count of a planned `write` (one value after [`plan`]).
fn connections_of(connections: &[usize]) -> usize {
    connections.first().copied().unwrap_or(8)
}

/// A workload against Syncline, on `server` (stopped when this returns).
async fn run_one(
    server: ServerUnderTest,
    w: &Workload,
    duration: Duration,
) -> Result<Outcome, String> {
    let syncline = Syncline::new(server)?;
    let syncline = Arc::new(match w {
        Workload::Fanout { kind, .. } => syncline.with_kind((*kind).into()),
        Workload::Conns { first_time, .. } => syncline.with_first_time(*first_time),
        _ => syncline,
    });
    match w {
        Workload::Write {
            writers,
            shared,
            http: true,
            ..
        } => harness::http::write(&syncline, *writers, *shared, duration).await,
        Workload::Chat {
            rooms,
            members,
            rate,
        } => harness::chat::chat(&syncline, *rooms, *members, *rate, duration).await,
        _ => drive(&syncline, w, duration).await,
    }
}

/// The workload with WebSocket subscribers (`--ws`), on `server` (stopped when this
/// returns); `None` for workloads without the flag.
async fn run_ws(
    server: ServerUnderTest,
    w: &Workload,
    duration: Duration,
) -> Result<Outcome, String> {
    let quic = Syncline::new(server)?;
    let quic = match w {
        Workload::Fanout { kind, .. } => quic.with_kind((*kind).into()),
        _ => quic,
    };
    drive(&Arc::new(SynclineWs::new(quic)?), w, duration).await
}

/// The workload through a cluster: a fresh etcd, `--nodes` nodes over it (the writer
/// on the first), identities dealt over the nodes `deal` names. Its line says
/// `"system": "syncline-cluster"`, the nodes, and etcd's own CPU beside the nodes'.
#[cfg(not(feature = "etcd"))]
async fn run_cluster(_: &Cli, _: &Workload, _: &[usize], _: Duration) -> Result<Value, String> {
    Err(NO_ETCD.to_owned())
}

#[cfg(feature = "etcd")]
async fn run_cluster(
    cli: &Cli,
    w: &Workload,
    deal: &[usize],
    duration: Duration,
) -> Result<Value, String> {
    let context = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "git_revision": git_revision(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
    });
    let max_txn_ops = CLUSTER_MAX_TXN_OPS.to_string();
    let etcd = harness::etcd::EtcdUnderTest::start_with(&["--max-txn-ops", &max_txn_ops]).await?;
    let rate = matches!(w, Workload::Write { .. }).then_some(WRITE_RATE_LIMIT);
    let mut nodes = ServerUnderTest::spawn_cluster(
        usize::from(cli.nodes),
        etcd.endpoint(),
        CLUSTER_MAX_TXN_OPS,
        cli.relaxed,
        rate,
        &[],
    )?;
    let first = nodes.remove(0);
    let syncline = Syncline::new(first)?.with_nodes(nodes, deal.to_vec());
    let syncline = Arc::new(match w {
        Workload::Fanout { kind, .. } => syncline.with_kind((*kind).into()),
        _ => syncline,
    });
    let etcd_cpu = etcd.process().cpu_seconds();
    let outcome = drive(&syncline, w, duration).await?;
    let etcd_cpu_s = etcd.process().cpu_seconds() - etcd_cpu;
    let mut line = outcome.to_json(&context);
    line["system"] = json!("syncline-cluster");
    line["nodes"] = json!(cli.nodes);
    line["etcd_cpu_s"] = json!(etcd_cpu_s);
    Ok(line)
}

/// Whether the workload also runs with WebSocket subscribers.
fn with_ws(w: &Workload) -> bool {
    matches!(
        w,
        Workload::Fanout { ws: true, .. } | Workload::Conns { ws: true, .. }
    )
}

/// W1..W3 against any system: the same driver for each.
async fn drive<P: Peer>(
    peer: &Arc<P>,
    w: &Workload,
    duration: Duration,
) -> Result<Outcome, String> {
    match w {
        Workload::Write {
            writers,
            connections,
            shared,
            http: false,
        } => {
            let c = connections_of(connections);
            workloads::write(peer, *writers, c, *shared, duration).await
        }
        Workload::Fanout {
            subscribers, rate, ..
        } => workloads::fanout(peer, *subscribers, *rate, duration).await,
        Workload::Conns { connections, .. } => workloads::conns(peer, *connections).await,
        _ => Err(format!("{w:?} is not run against {}", P::SYSTEM)),
    }
}

/// The same workload against a peer, or `None` (said on stderr) for workloads the
/// peer does not have.
async fn run_peer(
    peer: PeerName,
    w: &Workload,
    duration: Duration,
) -> Result<Option<Outcome>, String> {
    let supported = match w {
        // A bare transport stores nothing: there is no write to compare.
        Workload::Write { http: false, .. } => peer != PeerName::Quinn,
        // `--first-time` gives each connection a socket of its own, which the bare quinn
        // peer's harness does not do; etcd and Redis run without TLS either way.
        Workload::Conns { first_time, .. } => !(*first_time && peer == PeerName::Quinn),
        Workload::Fanout {
            kind: Kind::Document,
            ..
        } => true,
        // Pub/sub and the bare transport store nothing, like Syncline's streams.
        Workload::Fanout {
            kind: Kind::Stream, ..
        } => peer != PeerName::Etcd,
        _ => false,
    };
    if !supported {
        eprintln!("--peer {peer:?}: no counterpart for {w:?}; skipped");
        return Ok(None);
    }
    // A fresh peer per workload, as for Syncline, stopped as soon as it is measured.
    let outcome = match peer {
        #[cfg(feature = "etcd")]
        PeerName::Etcd => {
            let etcd = harness::etcd::EtcdUnderTest::start().await?;
            drive(&Arc::new(etcd), w, duration).await
        }
        #[cfg(not(feature = "etcd"))]
        PeerName::Etcd => Err(NO_ETCD.into()),
        #[cfg(feature = "redis")]
        PeerName::Redis => {
            let redis = harness::redis::RedisUnderTest::start().await?;
            drive(&Arc::new(redis), w, duration).await
        }
        #[cfg(not(feature = "redis"))]
        PeerName::Redis => Err(NO_REDIS.into()),
        PeerName::Quinn => {
            let quinn = harness::quinn::QuinnUnderTest::start().await?;
            drive(&Arc::new(quinn), w, duration).await
        }
    };
    outcome.map(Some)
}

/// Peers that cannot run here, with the reason: left out of this build, or their
/// program is not installed (checked before anything starts).
fn missing_peers(peers: &[PeerName]) -> Vec<String> {
    peers
        .iter()
        .filter_map(|p| {
            let ready: Result<(), String> = match p {
                #[cfg(feature = "etcd")]
                PeerName::Etcd => harness::etcd::preflight(),
                #[cfg(not(feature = "etcd"))]
                PeerName::Etcd => Err(NO_ETCD.into()),
                #[cfg(feature = "redis")]
                PeerName::Redis => harness::redis::preflight(),
                #[cfg(not(feature = "redis"))]
                PeerName::Redis => Err(NO_REDIS.into()),
                PeerName::Quinn => harness::quinn::preflight(),
            };
            ready.err()
        })
        .collect()
}

fn table(results: &[Value]) -> String {
    let mut out = String::from(
        "| workload | system | params | ops/s | p50 ms | p99 ms | max ms | missed | dup | ooo | server CPU s | server CPU µs/op | client CPU µs/op | server RSS KiB | UDP drops |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["workload"].as_str().unwrap_or(""),
            r["system"].as_str().unwrap_or(""),
            r["params"],
            r["ops_per_s"],
            r["p50_ms"],
            r["p99_ms"],
            r["max_ms"],
            r["missed"],
            r["duplicated"],
            r["out_of_order"],
            r["server_cpu_s"],
            r["server_cpu_us_per_op"],
            r["client_cpu_us_per_op"],
            r["server_rss_kib"],
            r["udp_rcvbuf_errors"],
        ));
    }
    out
}

/// `a / b` as a short ratio, or `-` when it means nothing.
fn ratio(a: &Value, b: &Value) -> String {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if a > 0.0 && b > 0.0 => format!("{:.2}×", a / b),
        _ => "-".into(),
    }
}

/// Syncline next to one peer, one row per workload both ran: throughput, tail latency,
/// server and client CPU per operation, server memory, each with the ratio
/// syncline ÷ peer (ops/s: higher is better for Syncline; the others: lower is).
fn comparison(pairs: &[(Value, Value)]) -> String {
    let Some(peer) = pairs.first().and_then(|(_, p)| p["system"].as_str()) else {
        return String::new();
    };
    let mut out = format!(
        "| workload | params | ops/s syncline | ops/s {peer} | ratio | p99 ms syncline | p99 ms {peer} | ratio | server CPU µs/op syncline | server CPU µs/op {peer} | ratio | client CPU µs/op syncline | client CPU µs/op {peer} | ratio | server RSS KiB syncline | server RSS KiB {peer} | ratio |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for (s, p) in pairs {
        out.push_str(&format!(
            "| {} | {} |",
            s["workload"].as_str().unwrap_or(""),
            s["params"]
        ));
        for f in [
            "ops_per_s",
            "p99_ms",
            "server_cpu_us_per_op",
            "client_cpu_us_per_op",
            "server_rss_kib",
        ] {
            out.push_str(&format!(" {} | {} | {} |", s[f], p[f], ratio(&s[f], &p[f])));
        }
        out.push('\n');
    }
    out.push_str(&format!("\nratio = syncline ÷ {peer}\n"));
    out
}

fn main() {
    let cli = Cli::parse();
    let fd_limit = measure::raise_fd_limit();
    eprintln!("syncline-bench: open-file limit raised to {fd_limit}");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async {
        tokio::select! {
            code = run(&cli) => code,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted; stopping");
                130
            }
        }
    });
    // Dropping the runtime ends every task; the spawned server is killed by its Drop.
    drop(runtime);
    std::process::exit(code);
}

async fn run(cli: &Cli) -> i32 {
    let duration =
        Duration::from_secs_f64(cli.duration.unwrap_or(if cli.quick { 2.0 } else { 10.0 }));
    let context = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "git_revision": git_revision(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
    });
    if let Workload::Crash {
        cycles,
        writers,
        max_kill_ms,
        seed,
    } = &cli.workload
    {
        if cli.server.is_some() || !cli.peer.is_empty() {
            eprintln!(
                "error: crash starts and kills its own server; --server and --peer do not apply"
            );
            return 2;
        }
        let params = CrashParams {
            cycles: *cycles,
            writers: *writers,
            max_kill_ms: *max_kill_ms,
            seed: seed.unwrap_or_else(|| measure::now_ns() % 1_000_000_007),
            relaxed: cli.relaxed,
            etcd: cli.store == StoreName::Etcd,
            // --nodes defaults to 2 for every workload; on sled there is one server.
            nodes: if cli.store == StoreName::Etcd {
                usize::from(cli.nodes)
            } else {
                1
            },
        };
        return run_crash(cli, &params, &context).await;
    }
    if let Workload::Soak { workers, seed } = &cli.workload {
        if !cli.peer.is_empty() {
            eprintln!("error: soak runs against Syncline only; --peer does not apply");
            return 2;
        }
        let params = SoakParams {
            duration: Duration::from_secs_f64(cli.duration.unwrap_or(600.0)),
            workers: (*workers).max(1),
            seed: seed.unwrap_or_else(|| measure::now_ns() % 1_000_000_007),
        };
        return run_soak(cli, &params, &context).await;
    }
    if let Workload::Presence {
        identities,
        rooms,
        churn,
        idle_timeout_ms,
        debounce_ms,
        seed,
    } = &cli.workload
    {
        if !cli.peer.is_empty() {
            eprintln!("error: presence runs against Syncline only; --peer does not apply");
            return 2;
        }
        if cli.server.is_some() && idle_timeout_ms.is_some() {
            eprintln!(
                "error: --idle-timeout-ms is for the server the harness starts, not --server"
            );
            return 2;
        }
        let pick = |normal: usize, small: usize| if cli.quick { small } else { normal };
        let params = PresenceParams {
            identities: identities.unwrap_or(pick(2000, 200)),
            rooms: rooms.unwrap_or(pick(100, 10)),
            churn: *churn,
            duration,
            seed: seed.unwrap_or_else(|| measure::now_ns() % 1_000_000_007),
            debounce_ms: *debounce_ms,
            idle_timeout_ms: match cli.server {
                Some(_) => None,
                None => Some(idle_timeout_ms.unwrap_or(pick(5000, 2000) as u64)),
            },
        };
        return run_presence(cli, &params, &context).await;
    }
    let missing = missing_peers(&cli.peer);
    if !missing.is_empty() {
        for m in missing {
            eprintln!("error: {m}");
        }
        return 2;
    }
    let mut results = Vec::new();
    let mut pairs = Vec::new();
    for w in plan(cli) {
        // A fresh server per workload, so that one's state does not skew the next.
        let server = match &cli.server {
            Some(addr) => cli
                .config
                .as_deref()
                .ok_or_else(|| "--server needs --config".to_owned())
                .and_then(|c| ServerUnderTest::external(c, Some(addr))),
            // W1's writers share connections: the default per-connection rate limit
            // would cap them, not the server (recorded in the result line).
            None if matches!(w, Workload::Write { .. }) => {
                ServerUnderTest::spawn_with(cli.relaxed, Some(WRITE_RATE_LIMIT))
            }
            None => ServerUnderTest::spawn(cli.relaxed),
        };
        let server = match server {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        // Syncline stops when run_one returns: the peers never share the machine with it.
        let line = match run_one(server, &w, duration).await {
            Ok(o) => {
                let mut line = o.to_json(&context);
                line["relaxed"] = json!(cli.relaxed);
                if cli.server.is_none() && matches!(w, Workload::Write { .. }) {
                    line["server_rate_limit"] = json!(WRITE_RATE_LIMIT);
                }
                if cli.json {
                    println!("{line}");
                }
                results.push(line.clone());
                line
            }
            Err(e) => {
                eprintln!("error in {w:?}: {e}");
                return 1;
            }
        };
        if cli.store == StoreName::Etcd && cli.server.is_none() {
            let runs: &[(&str, &[usize])] = match &w {
                Workload::Write { http: false, .. } => &[("writer's node", &[0])],
                Workload::Fanout { .. } if cli.nodes > 1 => &[
                    ("writer's node", &[0]),
                    (
                        "other nodes",
                        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
                    ),
                ],
                Workload::Fanout { .. } => &[("writer's node", &[0])],
                _ => &[],
            };
            for (subscribers_on, deal) in runs {
                match run_cluster(cli, &w, deal, duration).await {
                    Ok(mut cluster_line) => {
                        let o = &mut cluster_line;
                        o["relaxed"] = json!(cli.relaxed);
                        o["subscribers_on"] = json!(subscribers_on);
                        if cli.json {
                            println!("{cluster_line}");
                        }
                        results.push(cluster_line.clone());
                        pairs.push((line.clone(), cluster_line));
                    }
                    Err(e) => {
                        eprintln!("error in {w:?} through a cluster: {e}");
                        return 1;
                    }
                }
            }
        }
        // WebSocket subscribers on a fresh server, alone on the machine like the rest.
        if with_ws(&w) {
            let server = match &cli.server {
                Some(_) => Err("--ws spawns its own server; --server does not apply".to_owned()),
                None => ServerUnderTest::spawn(cli.relaxed),
            };
            match server {
                Ok(server) => match run_ws(server, &w, duration).await {
                    Ok(o) => {
                        let mut ws_line = o.to_json(&context);
                        ws_line["relaxed"] = json!(cli.relaxed);
                        if cli.json {
                            println!("{ws_line}");
                        }
                        results.push(ws_line.clone());
                        pairs.push((line.clone(), ws_line));
                    }
                    Err(e) => {
                        eprintln!("error in {w:?} with WebSocket subscribers: {e}");
                        return 1;
                    }
                },
                Err(e) => {
                    eprintln!("error: {e}");
                    return 1;
                }
            }
        }
        // Each peer in turn, alone on the machine like Syncline was.
        for &peer in &cli.peer {
            match run_peer(peer, &w, duration).await {
                Ok(Some(o)) => {
                    let mut peer_line = o.to_json(&context);
                    // The peer keeps its durable settings whatever --relaxed says.
                    peer_line["relaxed"] = json!(false);
                    if cli.json {
                        println!("{peer_line}");
                    }
                    results.push(peer_line.clone());
                    pairs.push((line.clone(), peer_line));
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("error in {w:?} against {peer:?}: {e}");
                    return 1;
                }
            }
        }
    }
    let mut tables = table(&results);
    // One comparison table per peer, in the order the peers were given.
    let mut systems: Vec<&str> = Vec::new();
    for (_, p) in &pairs {
        let system = p["system"].as_str().unwrap_or("");
        if !systems.contains(&system) {
            systems.push(system);
        }
    }
    for system in systems {
        let of_peer: Vec<(Value, Value)> = pairs
            .iter()
            .filter(|(_, p)| p["system"] == system)
            .cloned()
            .collect();
        tables.push('\n');
        tables.push_str(&comparison(&of_peer));
    }
    if !cli.json {
        println!("{tables}");
    } else {
        eprintln!("{tables}");
    }
    0
}

/// The soak: a table (stderr with --json) and, with --json, one JSON object. Exit code
/// 1 if any operation failed or the run could not start.
async fn run_soak(cli: &Cli, params: &SoakParams, context: &Value) -> i32 {
    let server = match &cli.server {
        Some(addr) => cli
            .config
            .as_deref()
            .ok_or_else(|| "--server needs --config".to_owned())
            .and_then(|c| ServerUnderTest::external(c, Some(addr))),
        None => ServerUnderTest::spawn(cli.relaxed),
    };
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    eprintln!(
        "soak: {:.0} s, {} workers, seed {}",
        params.duration.as_secs_f64(),
        params.workers,
        params.seed
    );
    let report = match soak::soak(&server, params).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if cli.json {
        println!("{}", report.to_json(params, context));
        eprintln!("{}", report.table());
    } else {
        println!("{}", report.table());
    }
    for e in &report.error_samples {
        eprintln!("error: {e}");
    }
    if report.errors == 0 {
        0
    } else {
        1
    }
}

/// W5: a table (stderr with --json) and, with --json, the result line. Exit code 1 if
/// the rooms kept ghosts, a connection failed, or a watcher stopped.
/// W5 through a cluster of `--nodes` over a fresh etcd, each node with
/// `--idle-timeout-ms idle_ms`.
#[cfg(not(feature = "etcd"))]
async fn presence_cluster(_: &Cli, _: &PresenceParams, _: u64) -> Result<measure::Outcome, String> {
    Err(NO_ETCD.to_owned())
}

#[cfg(feature = "etcd")]
async fn presence_cluster(
    cli: &Cli,
    params: &PresenceParams,
    idle_ms: u64,
) -> Result<measure::Outcome, String> {
    let max_txn_ops = CLUSTER_MAX_TXN_OPS.to_string();
    let etcd = harness::etcd::EtcdUnderTest::start_with(&["--max-txn-ops", &max_txn_ops]).await?;
    let nodes = ServerUnderTest::spawn_cluster(
        usize::from(cli.nodes),
        etcd.endpoint(),
        CLUSTER_MAX_TXN_OPS,
        cli.relaxed,
        None,
        &["--idle-timeout-ms".to_owned(), idle_ms.to_string()],
    )?;
    let targets: Vec<Target> = nodes
        .iter()
        .map(|n| Target {
            admin: &n.admin,
            process: n.process(),
        })
        .collect();
    let mut outcome = presence::presence(&targets, params).await?;
    outcome.system = "syncline-cluster";
    Ok(outcome)
}

async fn run_presence(cli: &Cli, params: &PresenceParams, context: &Value) -> i32 {
    eprintln!(
        "presence: {} identities in {} rooms, {} drops/s for {:.0} s, seed {}",
        params.identities,
        params.rooms,
        params.churn,
        params.duration.as_secs_f64(),
        params.seed
    );
    let outcome = match (&cli.server, params.idle_timeout_ms) {
        (Some(addr), _) => {
            let server = cli
                .config
                .as_deref()
                .ok_or_else(|| "--server needs --config".to_owned())
                .and_then(|c| ServerUnderTest::external(c, Some(addr)));
            match server {
                Ok(s) => {
                    let target = Target {
                        admin: &s.admin,
                        process: s.process(),
                    };
                    presence::presence(&[target], params).await
                }
                Err(e) => Err(e),
            }
        }
        // Every node over a fresh etcd; identities and watchers dealt over them.
        (None, idle) if cli.store == StoreName::Etcd => {
            presence_cluster(cli, params, idle.unwrap_or(5000)).await
        }
        // The server stops when it drops, at the end of this arm.
        (None, idle) => match PresenceServer::spawn(cli.relaxed, idle.unwrap_or(5000)) {
            Ok(s) => presence::presence(&[s.target()], params).await,
            Err(e) => Err(e),
        },
    };
    let mut line = match outcome {
        Ok(o) => o.to_json(context),
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    line["relaxed"] = json!(cli.relaxed);
    if cli.store == StoreName::Etcd && cli.server.is_none() {
        line["nodes"] = json!(cli.nodes);
    }
    let table = presence::table(std::slice::from_ref(&line));
    if cli.json {
        println!("{line}");
        eprintln!("{table}");
    } else {
        println!("{table}");
    }
    match presence::verdict(&line) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// The crash loop: a table (stderr with --json) and, with --json, one JSON object.
/// Exit code 1 if anything was lost, regressed or half-applied, or a phase failed.
async fn run_crash(cli: &Cli, params: &CrashParams, context: &Value) -> i32 {
    // Fail before anything starts if the server binary is not there.
    if let Err(e) = harness::server::syncline_bin() {
        eprintln!("error: {e}");
        return 1;
    }
    // And, in cluster mode, if there is no etcd to start.
    if params.etcd {
        #[cfg(feature = "etcd")]
        let ready = harness::etcd::preflight();
        #[cfg(not(feature = "etcd"))]
        let ready: Result<(), String> = Err(NO_ETCD.to_owned());
        if let Err(e) = ready {
            eprintln!("error: {}", e.replace("--peer etcd", "--store etcd"));
            return 1;
        }
    }
    eprintln!(
        "crash: {} cycles, {} writers, kill within {} ms, seed {}, store {} ({} node{})",
        params.cycles,
        params.writers,
        params.max_kill_ms,
        params.seed,
        params.store(),
        params.nodes,
        if params.nodes == 1 { "" } else { "s" }
    );
    let report = crash::crash(params).await;
    if cli.json {
        println!("{}", report.to_json(params, context));
        eprintln!("{}", report.table());
    } else {
        println!("{}", report.table());
    }
    if let Some(e) = &report.error {
        eprintln!("error: {e}");
    }
    if report.clean() {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_pairs_systems_with_ratios() {
        let s = json!({"workload": "write", "system": "syncline", "params": {"writers": 2},
            "ops_per_s": 2000.0, "p99_ms": 2.0, "server_cpu_us_per_op": 1.0,
            "client_cpu_us_per_op": 3.0, "server_rss_kib": 1000});
        let e = json!({"workload": "write", "system": "etcd", "params": {"writers": 2},
            "ops_per_s": 1000.0, "p99_ms": 4.0, "server_cpu_us_per_op": 0.0,
            "client_cpu_us_per_op": 6.0, "server_rss_kib": 4000});
        let t = comparison(&[(s, e)]);
        assert!(t.contains("ops/s etcd"), "{t}");
        assert!(t.contains("| 2000.0 | 1000.0 | 2.00× |"), "{t}");
        assert!(t.contains("| 2.0 | 4.0 | 0.50× |"), "{t}");
        assert!(t.contains("| 1.0 | 0.0 | - |"), "{t}");
        assert!(t.contains("| 3.0 | 6.0 | 0.50× |"), "{t}");
        assert!(t.contains("| 1000 | 4000 | 0.25× |"), "{t}");
        assert_eq!(comparison(&[]), "");
    }

    #[test]
    fn write_runs_once_per_connection_count_and_peers_repeat() {
        let cli = Cli::parse_from([
            "syncline-bench",
            "write",
            "--connections",
            "8,64",
            "--peer",
            "etcd",
            "--peer",
            "redis",
        ]);
        let counts: Vec<usize> = plan(&cli)
            .iter()
            .map(|w| match w {
                Workload::Write { connections, .. } => connections_of(connections),
                _ => 0,
            })
            .collect();
        assert_eq!(counts, [8, 64]);
        assert_eq!(cli.peer, [PeerName::Etcd, PeerName::Redis]);
        let cli = Cli::parse_from(["syncline-bench", "--peer", "etcd,redis", "conns"]);
        assert_eq!(cli.peer, [PeerName::Etcd, PeerName::Redis]);
        let cli = Cli::parse_from(["syncline-bench", "write"]);
        assert!(
            matches!(&plan(&cli)[..], [Workload::Write { connections, .. }] if connections == &[8])
        );
    }
}
