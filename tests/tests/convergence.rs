//! Property test: random operation sequences from several clients on a map, a list and a
//! document; every subscriber's replica must equal the server's state at the end, and
//! every subscriber must see the events in revision order without gaps or duplicates.
//! Seeds are fixed so a failure reproduces; `SYNCLINE_PROPTEST_SEEDS=N` runs more.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

use serde_json::{json, Value};
use syncline_client::{Client, ItemKey, ObjectKind, Replica, Subscription, SyncEventKind};
use syncline_tests::{next_event, server_items, TestServer};

/// Random writes by one client; errors such as NotFound (the item was removed by
/// another client) are part of the game.
async fn random_ops(c: Client, seed: u64, ops: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    for n in 0..ops {
        let key = format!("k{}", rng.gen_range(0..8));
        let index = rng.gen_range(0..12);
        let value = json!({ "n": n, "by": seed });
        let _ = match rng.gen_range(0..8) {
            0 | 1 => c.map("m").set(&key, &value).await.map(|_| ()),
            2 => c
                .map("m")
                .update(&key, &json!({"touched": n}))
                .await
                .map(|_| ()),
            3 => c.map("m").remove(&key).await.map(|_| ()),
            4 => c.list("l").push(&value).await.map(|_| ()),
            5 => c.list("l").set(index, &value).await.map(|_| ()),
            6 => c.list("l").remove(index).await.map(|_| ()),
            _ => c.document("d").update(&json!({ key: n })).await.map(|_| ()),
        };
    }
}

/// Reads events until the replica reaches `revision`, checking order on the way.
async fn follow(sub: &mut Subscription, revision: u64) {
    let mut last = sub.replica().revision();
    while sub.replica().revision() != Some(revision) {
        let e = next_event(sub).await;
        if let Some(prev) = last {
            if e.kind == SyncEventKind::Snapshot {
                assert!(
                    e.revision >= prev,
                    "snapshot went back: {} < {prev}",
                    e.revision
                );
            } else {
                assert_eq!(e.revision, prev + 1, "gap or duplicate in {:?}", sub.kind());
            }
        }
        last = Some(e.revision);
    }
}

fn items_of(r: &Replica) -> BTreeMap<ItemKey, Value> {
    match r {
        Replica::List(c) | Replica::Map(c) => c
            .items
            .iter()
            .map(|(k, i)| (k.clone(), i.data.clone()))
            .collect(),
        other => panic!("not a collection: {other:?}"),
    }
}

async fn run_seed(seed: u64) {
    let s = TestServer::start().await;
    let setup = s.backend().await;
    setup.map("m").create(None).await.unwrap();
    setup.list("l").create(None).await.unwrap();
    setup.document("d").set(&json!({})).await.unwrap();
    // Two watchers, each on its own connection, subscribed before the writes start.
    let mut watchers = Vec::new();
    for w in 0..2 {
        let c = s.client_as(&format!("watcher{w}")).await;
        let mut m = c.map("m").subscribe().await.unwrap();
        let mut l = c.list("l").subscribe(Some(1000)).await.unwrap();
        let mut d = c.document("d").subscribe().await.unwrap();
        for sub in [&mut m, &mut l, &mut d] {
            assert_eq!(next_event(sub).await.kind, SyncEventKind::Snapshot);
        }
        watchers.push((c, m, l, d));
    }
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let s = &s;
            async move {
                let c = s.client_as(&format!("writer{w}")).await;
                random_ops(c, seed.wrapping_mul(31).wrapping_add(w + 1), 60).await;
            }
        })
        .collect();
    futures_join_all(writers).await;

    let map_rev = setup.map("m").info().await.unwrap().revision;
    let list_rev = setup.list("l").info().await.unwrap().revision;
    let doc = setup.document("d").get().await.unwrap();
    let map_items = server_items(&setup, ObjectKind::Map, "m").await;
    let list_items = server_items(&setup, ObjectKind::List, "l").await;
    for (_c, m, l, d) in &mut watchers {
        follow(m, map_rev).await;
        follow(l, list_rev).await;
        follow(d, doc.revision).await;
        assert_eq!(items_of(m.replica()), map_items, "seed {seed}: map replica");
        assert_eq!(
            items_of(l.replica()),
            list_items,
            "seed {seed}: list replica"
        );
        assert_eq!(
            d.document().unwrap().data,
            doc.data,
            "seed {seed}: document replica"
        );
    }
}

/// Runs futures concurrently on this task (no extra crate needed).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: Vec<F>) {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut pending: Vec<_> = set.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for slot in pending.iter_mut() {
            if let Some(f) = slot {
                if f.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    all_done = false;
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_converge_under_random_concurrent_writes() {
    let seeds: u64 = std::env::var("SYNCLINE_PROPTEST_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    for seed in 1..=seeds {
        run_seed(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)).await;
    }
}
