//! Followers: one task per subscription, reading its events until it has what it is
//! owed (its target, known once the writers are done) or its drain clock runs out, with
//! each event's latency recorded and its delivery checked by its system's rule
//! (`measure::Ledger`); and the sum of what they all saw.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::measure::{self, Delivery, Drain, DrainClock, Ledger};
use super::peer::{Next, Peer};
use super::{err, Error};

/// What one follower saw: latencies, delivery accounting, resyncs, and why it stopped
/// short (its subscription failed or ended), if it did.
pub struct Followed {
    latency: Histogram<u64>,
    delivery: Delivery,
    resyncs: u64,
    failure: Option<String>,
}

/// Spawns a follower for each subscription in `opened`, each with a fresh ledger of
/// `P::ORDER` from `floor`; returns the links (the caller keeps the connections open
/// until it has measured) and the followers.
pub fn follow_all<P: Peer>(
    opened: Vec<(P::Link, P::Events)>,
    floor: u64,
    target: &watch::Receiver<Option<u64>>,
    drain: &Drain,
) -> (Vec<P::Link>, JoinSet<Followed>) {
    let mut links = Vec::with_capacity(opened.len());
    let mut set = JoinSet::new();
    for (link, events) in opened {
        set.spawn(follow::<P>(
            events,
            P::ORDER.ledger(floor),
            target.clone(),
            drain.clock(),
        ));
        links.push(link);
    }
    (links, set)
}

/// Follows one subscription until it reaches `target` (sent when the writers are done)
/// or its `clock` runs out; whatever it did not reach by then counts as missed.
pub async fn follow<P: Peer>(
    mut events: P::Events,
    mut ledger: Ledger,
    mut target: watch::Receiver<Option<u64>>,
    clock: DrainClock,
) -> Followed {
    let expired = clock.expired();
    tokio::pin!(expired);
    let mut h = measure::histogram();
    let mut failure = None;
    // Made once, like `expired`: a `changed()` per event would register with the
    // target's channel once per event.
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
        if known.is_some_and(|t| ledger.reached(t)) {
            break;
        }
        let next = tokio::select! {
            biased;
            e = P::next(&mut events) => e,
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
        match next {
            Next::Event { at, seq, sent_ns } => {
                ledger.see(at, seq);
                if let Some(sent) = sent_ns.filter(|&s| s > 0) {
                    measure::record(
                        &mut h,
                        Duration::from_nanos(measure::now_ns().saturating_sub(sent)),
                    );
                }
            }
            Next::Snapshot { at } => ledger.snapshot(at),
            Next::Ended(why) => {
                failure = Some(why);
                break;
            }
        }
    }
    let (delivery, resyncs) = ledger.finish(known);
    Followed {
        latency: h,
        delivery,
        resyncs,
        failure,
    }
}

/// What all the followers of a workload saw together.
pub struct Followers {
    latency: Histogram<u64>,
    delivery: Delivery,
    resyncs: u64,
    failed: u64,
    first_failure: Option<String>,
}

impl Followers {
    /// Waits for every follower in `set` (each gives up by itself; `limit` is only a
    /// backstop) and adds up what they saw.
    pub async fn join(
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
    pub fn split(self) -> ((Histogram<u64>, Delivery), Map<String, Value>) {
        let mut extra = Map::new();
        extra.insert("resyncs".into(), json!(self.resyncs));
        extra.insert("subscriptions_failed".into(), json!(self.failed));
        ((self.latency, self.delivery), extra)
    }
}
