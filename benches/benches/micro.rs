//! Criterion micro-benchmarks for Syncline's hot paths (see DESIGN.md, "Performance shape").
//!
//! What is measured:
//!
//! - `frame/*`: one request frame (`Request::DocSet` with ~200 bytes of JSON) through
//!   `frame::encode`, and back through `FrameDecoder` + `frame::decode`.
//! - `event_encode/*`: the per-subscriber cost of an event (`DocumentUpdated`, ~200-byte
//!   data and previous data) sent to 1,000 subscribers: encoded once plus 1,000
//!   `EventFrameHeader`s and shared `Bytes` clones, versus encoded 1,000 times.
//! - `commit/*`: the write path, `Committer::submit` of a `DocSet` request of a ~200-byte
//!   document into a `SledStore` in a temp dir, durable (flush per batch) and relaxed; one
//!   writer awaiting each write, and 64 concurrent writers per iteration (group commit).
//!   Writes replace existing documents, cycling over 1,024 of them (hammering a single
//!   key in relaxed mode deadlocks sled 0.34.7 within half a minute; see `Watchdog`).
//!   After each commit bench the writes per batch (one flush each when durable) are
//!   printed to stderr (from `Committer::stats`).
//! - `fanout/*`: `Hub::publish` of one encoded event to 1,000 subscribers, one outbox
//!   (connection) each, with the queues drained outside the timed section; and publish
//!   plus draining every queue (both sides of the hand-off, without task wake-ups: no
//!   writer task is waiting on the queues). The per-subscriber cost is mostly cache misses
//!   on each subscriber's channel, so it moves with heap layout (seen 35-90 µs per 1,000
//!   between builds of the same code on the 2-core bench VM).
//!
//! Run all of them (about two minutes on 2 cores):
//!
//! ```text
//! cargo bench -p syncline-bench
//! ```
//!
//! or a subset by name filter, e.g. `cargo bench -p syncline-bench -- commit/`.
//! The temp dir for the store follows `TMPDIR`; point it at the disk you want to measure.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use syncline_bench::{doc_json, SERVICE_SID};
use syncline_core::command::{Json, SetMode, WriteCommand};
use syncline_core::commit::{Committer, WriteOp};
use syncline_core::fanout::{Hub, Outbox, Queued, Subscriber};
use syncline_core::objects::WriteContext;
use syncline_core::store::Store;
use syncline_proto::frame::{self, encode_event};
use syncline_proto::{
    Event, EventFrameHeader, EventKind, FrameDecoder, Limits, Request, RequestFrame,
};
use syncline_store_sled::SledStore;

/// Subscribers per event in the encode-once and fan-out benches.
const SUBSCRIBERS: u64 = 1_000;
/// Concurrent writers per iteration in the group-commit benches.
const CONCURRENT: u64 = 64;
/// Documents the commit benches cycle over (a multiple of `CONCURRENT`, so the writers of
/// one iteration always hit distinct documents).
const DOCUMENTS: u64 = 1_024;

fn doc_event(n: u64) -> Event {
    Event {
        object_sid: "ET0123456789abcdef0123456789abcdef".into(),
        revision: 42 + n,
        origin: 7,
        actor: "alice@example.com".into(),
        kind: EventKind::DocumentUpdated {
            data: doc_json(n + 1),
            previous: Some(doc_json(n)),
            date_updated: 1_700_000_000_000 + n,
        },
    }
}

fn frames(c: &mut Criterion) {
    let max = Limits::default().max_frame_bytes;
    let req = RequestFrame {
        id: 12_345,
        request: Request::DocSet {
            document: "room-state".into(),
            data: doc_json(1),
            if_match: Some(41),
            ttl: None,
        },
    };
    let wire = frame::encode(&req);

    let mut g = c.benchmark_group("frame");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("encode_request_docset", |b| {
        b.iter(|| frame::encode(black_box(&req)))
    });
    g.bench_function("decode_request_docset", |b| {
        b.iter(|| {
            let mut dec = FrameDecoder::new(max);
            dec.extend(black_box(&wire));
            let body = dec.next_frame().unwrap().unwrap();
            frame::decode::<RequestFrame>(&body, max).unwrap()
        })
    });
    g.finish();

    let event = doc_event(1);
    let mut g = c.benchmark_group("event_encode");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(SUBSCRIBERS));
    g.bench_function("encode_once_plus_1000_headers", |b| {
        b.iter(|| {
            let body = encode_event(black_box(&event));
            for sub_id in 0..SUBSCRIBERS {
                let header = EventFrameHeader { sub_id }.encode(body.len());
                black_box((header, body.clone()));
            }
        })
    });
    g.bench_function("encode_1000_times", |b| {
        b.iter(|| {
            for sub_id in 0..SUBSCRIBERS {
                let body = encode_event(black_box(&event));
                let header = EventFrameHeader { sub_id }.encode(body.len());
                black_box((header, body));
            }
        })
    });
    g.finish();
}

/// Ends the bench run with a message if a commit bench stops making progress, instead of
/// letting `cargo bench` hang: sled 0.34.7 can deadlock under sustained overwrites of the
/// same keys (seen here after 5-30 s with one hot document in relaxed mode): its segment
/// accountant, locked, waits for a file truncation queued behind IO jobs that wait for that
/// lock (spacejam/sled#1412; fixed on sled's main branch by #1269, in no 0.34 release).
struct Watchdog {
    progress: Arc<AtomicU64>,
    armed: Arc<AtomicBool>,
}

/// How long a commit bench may go without a single write completing.
const STALL: Duration = Duration::from_secs(30);

impl Watchdog {
    fn start() -> Watchdog {
        let progress = Arc::new(AtomicU64::new(0));
        let armed = Arc::new(AtomicBool::new(false));
        let (p, a) = (progress.clone(), armed.clone());
        std::thread::spawn(move || {
            let mut last = p.load(Ordering::Relaxed);
            let mut since = Instant::now();
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let now = p.load(Ordering::Relaxed);
                if now != last || !a.load(Ordering::Relaxed) {
                    last = now;
                    since = Instant::now();
                } else if since.elapsed() >= STALL {
                    eprintln!(
                        "commit bench: no write completed for {STALL:?}; the store is stuck \
                         (sled 0.34.7 deadlock, see spacejam/sled#1412). Aborting."
                    );
                    std::process::exit(3);
                }
            }
        });
        Watchdog { progress, armed }
    }

    fn beat(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    fn arm(&self, on: bool) {
        self.progress.fetch_add(1, Ordering::Relaxed);
        self.armed.store(on, Ordering::Relaxed);
    }
}

/// A committer over a fresh sled store in a temp dir, on its own runtime.
struct WriteRig {
    rt: tokio::runtime::Runtime,
    committer: Option<Committer>,
    task: Option<tokio::task::JoinHandle<()>>,
    seq: u64,
    /// `Committer::stats` after the set-up writes.
    baseline: (u64, u64),
    _dir: tempfile::TempDir,
}

impl WriteRig {
    fn new(durable: bool) -> WriteRig {
        // Two workers, like the server on this machine; flushes run on the blocking pool.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 1000, durable).unwrap());
        let (committer, task) = {
            let _guard = rt.enter();
            // No service has a webhook_url here: what a write pays for webhooks is the
            // flag check.
            let poster = syncline_server::webhook_client::HyperPoster::new().unwrap();
            let webhooks = syncline_core::webhooks::Webhooks::new(
                store.clone(),
                "AC00000000000000000000000000000000".into(),
                "0".repeat(32),
                Default::default(),
                Arc::new(poster),
            );
            Committer::start(
                store,
                Arc::new(Hub::new(syncline_proto::frame::encode_event)),
                Default::default(),
                None,
                webhooks,
                Limits::default(),
            )
        };
        let mut rig = WriteRig {
            rt,
            committer: Some(committer),
            task: Some(task),
            seq: 0,
            baseline: (0, 0),
            _dir: dir,
        };
        // Create the documents up front, so every measured write replaces one.
        let c = rig.committer();
        let ops: Vec<_> = (0..DOCUMENTS).map(set_op).collect();
        rig.rt.block_on(async move {
            for op in ops {
                c.submit(ctx(), op).await.unwrap();
            }
        });
        rig.seq = DOCUMENTS;
        rig.baseline = rig.committer().stats();
        rig
    }

    fn committer(&self) -> Committer {
        self.committer.clone().expect("committer running")
    }

    /// Prints the commit task's batches since set-up (each one store write, and one
    /// flush when durable).
    fn report_batches(&self, name: &str) {
        let (batches, writes) = self.committer().stats();
        let (batches, writes) = (batches - self.baseline.0, writes - self.baseline.1);
        if batches > 0 {
            eprintln!(
                "{name}: {writes} writes in {batches} batches, {:.1} writes per batch",
                writes as f64 / batches as f64
            );
        }
    }
}

impl Drop for WriteRig {
    fn drop(&mut self) {
        self.committer.take();
        if let Some(task) = self.task.take() {
            let _ = self.rt.block_on(task);
        }
    }
}

fn ctx() -> WriteContext {
    WriteContext {
        service_sid: SERVICE_SID.into(),
        actor: "alice@example.com".into(),
        origin: 1,
        now_ms: syncline_server::now_ms(),
        guard: None,
        may_create: true,
    }
}

/// The `n`th write: document `n % DOCUMENTS`, with data that differs from the last write.
fn set_op(n: u64) -> WriteOp {
    let data = Json::parse(doc_json(n), Limits::default().max_data_bytes)
        .unwrap_or_else(|e| panic!("the bench's document is not valid: {e}"));
    WriteOp::Client(WriteCommand::DocSet {
        document: format!("doc-{}", n % DOCUMENTS),
        data,
        if_match: None,
        ttl: None,
        mode: SetMode::Upsert,
    })
}

fn commit(c: &mut Criterion) {
    let dog = Watchdog::start();
    let mut g = c.benchmark_group("commit");
    for (durable, mode) in [(false, "relaxed"), (true, "durable")] {
        // One writer: each write waits for its own batch (and flush).
        commit_bench(&mut g, &dog, durable, 1, &format!("docset_1_writer_{mode}"));
        // 64 writers at once, each on a different document: group commit should put
        // them in few batches and flushes.
        let name = format!("docset_{CONCURRENT}_concurrent_{mode}");
        commit_bench(&mut g, &dog, durable, CONCURRENT, &name);
    }
    g.finish();
}

/// One commit bench: per iteration, `writers` concurrent `DocSet`s, all awaited (1 = a
/// lone writer awaiting each write). The store is set up on first use, so a bench that
/// is filtered out costs nothing.
fn commit_bench(
    g: &mut BenchmarkGroup<'_, WallTime>,
    dog: &Watchdog,
    durable: bool,
    writers: u64,
    name: &str,
) {
    let mut rig: Option<WriteRig> = None;
    // Fewer, longer samples where one iteration takes milliseconds.
    let slow = durable || writers > 1;
    g.measurement_time(Duration::from_secs(if slow { 5 } else { 3 }));
    g.sample_size(if slow { 20 } else { 50 });
    g.throughput(Throughput::Elements(writers));
    g.bench_function(name, |b| {
        let rig = rig.get_or_insert_with(|| WriteRig::new(durable));
        b.iter_custom(|iters| {
            let c = rig.committer();
            let start_seq = rig.seq;
            rig.seq += iters * writers;
            dog.arm(true);
            let took = rig.rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let first = start_seq + i * writers;
                    if writers == 1 {
                        c.submit(ctx(), set_op(first)).await.unwrap();
                        dog.beat();
                        continue;
                    }
                    let mut pending = tokio::task::JoinSet::new();
                    for w in 0..writers {
                        let (c, op) = (c.clone(), set_op(first + w));
                        pending.spawn(async move { c.submit(ctx(), op).await });
                    }
                    while let Some(r) = pending.join_next().await {
                        r.unwrap().unwrap();
                        dog.beat();
                    }
                }
                start.elapsed()
            });
            dog.arm(false);
            took
        })
    });
    if let Some(rig) = rig {
        rig.report_batches(&format!("commit/{name}"));
    }
}

fn fanout(c: &mut Criterion) {
    let object = "ET0123456789abcdef0123456789abcdef";
    let hub = Hub::new(syncline_proto::frame::encode_event);
    let mut receivers: Vec<(Arc<Outbox>, Queued)> = (0..SUBSCRIBERS)
        .map(|sub_id| {
            let outbox = Outbox::new();
            hub.subscribe(object, Subscriber::new(sub_id, SERVICE_SID, None, &outbox));
            (outbox, Queued::default())
        })
        .collect();
    let body: Bytes = encode_event(&doc_event(1));
    // Publishes between drains: well under the outbox depth, so nothing lags.
    let chunk = (syncline_core::fanout::OUTBOX_DEPTH / 2) as u64;

    let mut g = c.benchmark_group("fanout");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(SUBSCRIBERS));
    g.bench_function("publish_to_1000_subscribers", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = chunk.min(iters - done);
                let start = Instant::now();
                for rev in done..done + n {
                    hub.publish(object, rev, black_box(&body), false);
                }
                total += start.elapsed();
                done += n;
                drain(&mut receivers);
            }
            total
        })
    });
    // Both sides: publish, then every subscriber's writer takes its delivery off the queue.
    g.bench_function("publish_and_drain_1000_subscribers", |b| {
        b.iter(|| {
            hub.publish(object, 0, black_box(&body), false);
            drain(&mut receivers);
        })
    });
    g.finish();
    assert_eq!(hub.subscriber_count(object), SUBSCRIBERS as usize);
}

/// Empties every subscriber queue, as the connections' event writers would.
fn drain(receivers: &mut [(Arc<Outbox>, Queued)]) {
    for (outbox, queued) in receivers.iter_mut() {
        outbox.take(queued);
        assert!(queued.lagged.is_empty(), "a subscriber lagged");
        queued.events.clear();
    }
}

criterion_group!(benches, frames, fanout, commit);
criterion_main!(benches);
