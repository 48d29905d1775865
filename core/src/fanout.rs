//! Subscriptions and the encode-once event hub.
//!
//! The commit task publishes each event once, as shared `Bytes`; the hub hands a cheap
//! clone to the outbox of every connection subscribed to the object. Each outbox is a
//! bounded queue: a subscriber that falls behind never slows the writer or anyone else.
//! When its queue is full the event is dropped for it and the subscription is marked
//! lagged; the connection's event writer then catches it up from the change log, or
//! with a fresh snapshot, so it never silently misses a change.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use syncline_proto::{
    ErrorCode, Event, EventKind, ItemInfo, ItemKey, ObjectKind, ObjectState, Order, WireError,
};

use crate::batch::{Batch, BatchQueue};
use crate::objects::items::item_info;
use crate::objects::{document, object_info};
use crate::store::{LogEntry, ObjectRecord, Store, StoreError};

/// Events queued per connection before its subscriptions are resynced instead.
pub const OUTBOX_DEPTH: usize = 1024;

/// An event as the hub publishes it: once, shared by every delivery of it.
#[derive(Debug)]
pub struct Published {
    /// The object revision after the change; `None` for stream messages, which are not
    /// revisions and are never replayed.
    pub revision: Option<u64>,
    pub body: Bytes,
    /// The object was removed: this is the subscription's last event.
    pub ends: bool,
    /// The event in a second encoding, made by the first edge that needs one (the
    /// WebSocket edge's JSON) and shared by every delivery after it, so that an edge
    /// with its own encoding still encodes each event once.
    rendered: std::sync::OnceLock<Bytes>,
}

impl Published {
    pub fn new(revision: Option<u64>, body: Bytes, ends: bool) -> Published {
        Published {
            revision,
            body,
            ends,
            rendered: std::sync::OnceLock::new(),
        }
    }

    /// The event in the edge's own encoding, rendered from `body` by the first caller.
    pub fn rendered(&self, render: impl FnOnce(&Bytes) -> Bytes) -> &Bytes {
        self.rendered.get_or_init(|| render(&self.body))
    }
}

/// An event on its way to one subscription. Small on purpose: every connection's
/// outbox allocates its queue in blocks of 32 of these up front.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub sub_id: u64,
    /// Which subscription under that id: ids can be reused after an unsubscribe, and
    /// deliveries still queued for the old one must not reach the new one.
    pub token: u64,
    pub event: Arc<Published>,
}

/// Why the core ends a session: an error code the edge renders (a QUIC close code, an
/// SSE error event) and a short reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    pub code: ErrorCode,
    pub reason: &'static str,
}

/// Requests from the connection's session to its event writer, in order.
#[derive(Debug)]
pub enum Control {
    /// Boxed: the channel allocates its slots in blocks of 32 up front, on every
    /// connection, so the variant's size is paid 32 times whether or not it is sent.
    Start(Box<StartSubscription>),
    Stop {
        sub_id: u64,
    },
    /// Deliver what is queued, then end the session.
    Close(Ending),
}

/// Start delivering: catch up from `since` (or send a snapshot), then live events.
#[derive(Debug)]
pub struct StartSubscription {
    pub sub_id: u64,
    pub token: u64,
    pub service_sid: String,
    pub object_sid: String,
    pub since: Option<u64>,
    /// Lists: newest items in the snapshot.
    pub window: u32,
}

/// One connection's event queue: what the hub and the session hand to the connection's
/// event writer. Deliveries, control requests and lagged subscriptions share one
/// [`BatchQueue`], so an idle connection pays only for this struct.
#[derive(Default)]
pub struct Outbox {
    queue: BatchQueue<Queued>,
}

/// Everything queued for an event writer, taken in one go (see [`Outbox::take`]). The
/// writer handles it in this order: control requests (in the order sent), lagged
/// subscriptions, then deliveries.
#[derive(Default)]
pub struct Queued {
    pub control: Vec<Control>,
    /// Subscriptions that lost events to a full queue: each is caught up again.
    pub lagged: Vec<u64>,
    pub events: Vec<Delivery>,
}

impl Batch for Queued {
    fn is_empty(&self) -> bool {
        self.control.is_empty() && self.lagged.is_empty() && self.events.is_empty()
    }

    fn trim(&mut self) {
        crate::batch::trim(&mut self.events);
    }
}

impl Outbox {
    pub fn new() -> Arc<Outbox> {
        Arc::default()
    }

    /// Control messages are few (one per subscribe request, which is rate limited), so
    /// they are never refused.
    pub fn control(&self, c: Control) {
        self.queue.add(|q| q.control.push(c));
    }

    fn deliver(&self, d: Delivery) {
        self.queue.add(|q| {
            if q.events.len() < OUTBOX_DEPTH {
                q.events.push(d);
            } else if !q.lagged.contains(&d.sub_id) {
                q.lagged.push(d.sub_id);
            }
        });
    }

    /// Marks a subscription as having missed events: its writer catches it up.
    fn lag(&self, sub_id: u64) {
        self.queue.add(|q| {
            if !q.lagged.contains(&sub_id) {
                q.lagged.push(sub_id);
            }
        });
    }

    /// Events queued and not yet taken by the connection's writer.
    pub fn queued(&self) -> usize {
        self.queue.inspect(|q| q.events.len())
    }

    /// See [`BatchQueue::ready`].
    pub async fn ready(&self) {
        self.queue.ready().await
    }

    /// See [`BatchQueue::take`].
    pub fn take(&self, into: &mut Queued) {
        self.queue.take(into)
    }
}

/// A token no other subscription of this server run has.
pub fn new_token() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// One subscription as the hub knows it: where to deliver, and who it is for (so that
/// a permission change can find the subscriptions it affects).
#[derive(Clone)]
pub struct Subscriber {
    pub sub_id: u64,
    pub token: u64,
    pub service_sid: Arc<str>,
    /// The token holder's identity; `None` for the backend.
    pub identity: Option<Arc<str>>,
    outbox: Arc<Outbox>,
}

impl Subscriber {
    pub fn new(
        sub_id: u64,
        service_sid: &str,
        identity: Option<&str>,
        outbox: &Arc<Outbox>,
    ) -> Subscriber {
        Subscriber {
            sub_id,
            token: new_token(),
            service_sid: service_sid.into(),
            identity: identity.map(Into::into),
            outbox: outbox.clone(),
        }
    }
}

/// How an event becomes the bytes every subscriber of it gets: the wire's encoding,
/// which the server hands in (the core never names the wire), called once per event.
/// The bytes are opaque here; they go to the change log and to every outbox as they are.
pub type EventEncoder = fn(&Event) -> Bytes;

/// Object sid -> its subscribers, across all connections.
pub struct Hub {
    encode: EventEncoder,
    objects: RwLock<Subscriptions>,
    /// Stream sid -> sequence of its last message (since server start).
    sequences: Mutex<HashMap<String, u64>>,
}

#[derive(Default)]
struct Subscriptions {
    by_object: HashMap<String, Vec<Subscriber>>,
    /// The tokens of every registered subscription. `is_subscribed` runs at every
    /// subscription start; scanning the object's subscribers instead made 10,000
    /// subscribers of one object O(N²) while they connected.
    tokens: HashSet<u64>,
}

impl Subscriptions {
    /// Removes the object's subscriptions for which `pred` holds.
    fn remove_where(&mut self, object_sid: &str, pred: impl Fn(&Subscriber) -> bool) {
        let Some(subs) = self.by_object.get_mut(object_sid) else {
            return;
        };
        let tokens = &mut self.tokens;
        subs.retain(|s| {
            let remove = pred(s);
            if remove {
                tokens.remove(&s.token);
            }
            !remove
        });
        if subs.is_empty() {
            self.by_object.remove(object_sid);
        }
    }

    /// Removes all of the object's subscriptions and returns them.
    fn remove_object(&mut self, object_sid: &str) -> Vec<Subscriber> {
        let removed = self.by_object.remove(object_sid).unwrap_or_default();
        for s in &removed {
            self.tokens.remove(&s.token);
        }
        removed
    }
}

/// The hub's tables hold plain data whose every change is one insert or removal, so a
/// panic while one was locked cannot leave it half-changed: go on with it (and say so)
/// rather than silently dropping a subscription or an event.
fn recover<G>(r: Result<G, std::sync::PoisonError<G>>) -> G {
    r.unwrap_or_else(|poisoned| {
        tracing::error!("a hub lock was poisoned by a panic; carrying on with its data");
        poisoned.into_inner()
    })
}

impl Hub {
    pub fn new(encode: EventEncoder) -> Hub {
        Hub {
            encode,
            objects: Default::default(),
            sequences: Default::default(),
        }
    }

    /// The event as every subscriber gets it.
    pub fn encode(&self, event: &Event) -> Bytes {
        (self.encode)(event)
    }

    pub fn subscribe(&self, object_sid: &str, subscriber: Subscriber) {
        let mut subs = recover(self.objects.write());
        subs.tokens.insert(subscriber.token);
        subs.by_object
            .entry(object_sid.to_owned())
            .or_default()
            .push(subscriber);
    }

    /// Live subscriptions, all objects together.
    pub fn subscription_count(&self) -> usize {
        recover(self.objects.read()).tokens.len()
    }

    /// The subscriptions (with their object sid) for which `pred` holds.
    pub fn matching(&self, pred: impl Fn(&str, &Subscriber) -> bool) -> Vec<(String, Subscriber)> {
        recover(self.objects.read())
            .by_object
            .iter()
            .flat_map(|(sid, subs)| subs.iter().map(move |s| (sid, s)))
            .filter(|(sid, s)| pred(sid, s))
            .map(|(sid, s)| (sid.clone(), s.clone()))
            .collect()
    }

    /// Ends one subscription now with `event` as its last event (access was revoked).
    pub fn end(&self, object_sid: &str, subscriber: &Subscriber, event: &Event) {
        recover(self.objects.write()).remove_where(object_sid, |s| s.token == subscriber.token);
        subscriber.outbox.deliver(Delivery {
            sub_id: subscriber.sub_id,
            token: subscriber.token,
            event: Arc::new(Published::new(None, self.encode(event), true)),
        });
    }

    pub fn unsubscribe(&self, object_sid: &str, sub_id: u64, outbox: &Arc<Outbox>) {
        recover(self.objects.write()).remove_where(object_sid, |s| {
            s.sub_id == sub_id && Arc::ptr_eq(&s.outbox, outbox)
        });
    }

    /// Hands the encoded event to every subscriber of the object. `ends` drops them all
    /// afterwards (the object is gone).
    pub fn publish(&self, object_sid: &str, revision: u64, body: &Bytes, ends: bool) {
        if ends {
            recover(self.sequences.lock()).remove(object_sid);
        }
        self.deliver(object_sid, Some(revision), body, ends);
    }

    /// Publishes a stream message: numbers it and hands it to the current subscribers,
    /// under one lock so that sequence order is delivery order. `encode` builds the
    /// event bytes for the sequence number. Returns the sequence.
    pub fn publish_message(&self, stream_sid: &str, encode: impl FnOnce(u64) -> Bytes) -> u64 {
        let mut seqs = recover(self.sequences.lock());
        let seq = seqs.entry(stream_sid.to_owned()).or_insert(0);
        *seq += 1;
        let sequence = *seq;
        let body = encode(sequence);
        self.deliver(stream_sid, None, &body, false);
        sequence
    }

    /// Hands a stream message numbered elsewhere (by the cluster's store) to the
    /// current subscribers, and remembers its sequence for snapshots.
    pub fn deliver_message(&self, stream_sid: &str, sequence: u64, body: &Bytes) {
        let mut seqs = recover(self.sequences.lock());
        let last = seqs.entry(stream_sid.to_owned()).or_insert(0);
        *last = (*last).max(sequence);
        self.deliver(stream_sid, None, body, false);
    }

    /// Every subscription catches up again: events may have been missed (the cluster's
    /// watch resumed past a compaction).
    pub fn lag_all(&self) {
        let subs = recover(self.objects.read());
        for s in subs.by_object.values().flatten() {
            s.outbox.lag(s.sub_id);
        }
    }

    /// Sequence of the stream's last message (0 if none since server start).
    pub fn sequence(&self, stream_sid: &str) -> u64 {
        recover(self.sequences.lock())
            .get(stream_sid)
            .copied()
            .unwrap_or(0)
    }

    fn deliver(&self, object_sid: &str, revision: Option<u64>, body: &Bytes, ends: bool) {
        let event = Arc::new(Published::new(revision, body.clone(), ends));
        let send = |s: &Subscriber| {
            s.outbox.deliver(Delivery {
                sub_id: s.sub_id,
                token: s.token,
                event: event.clone(),
            })
        };
        if ends {
            let removed = recover(self.objects.write()).remove_object(object_sid);
            removed.iter().for_each(send);
        } else {
            // Delivery never blocks (a full outbox marks the subscriber lagged), so it is
            // done under the read lock, without copying the subscriber list.
            let subs = recover(self.objects.read());
            subs.by_object
                .get(object_sid)
                .into_iter()
                .flatten()
                .for_each(send);
        }
    }

    /// Whether this very subscription (by token) is still registered.
    pub fn is_subscribed(&self, token: u64) -> bool {
        recover(self.objects.read()).tokens.contains(&token)
    }

    pub fn subscriber_count(&self, object_sid: &str) -> usize {
        recover(self.objects.read())
            .by_object
            .get(object_sid)
            .map_or(0, Vec::len)
    }
}

/// How a subscription catches up to the present.
#[derive(Debug)]
pub enum CatchUp {
    /// The missed events, in order (possibly none).
    Replay {
        events: Vec<LogEntry>,
        revision: u64,
    },
    /// The whole current state: a `Snapshot` event, then for collections `SnapshotItems`
    /// chunks. The caller had nothing, or what it missed is no longer kept.
    Snapshot { events: Vec<Event>, revision: u64 },
    /// The object does not exist (any more).
    Gone,
}

/// Most events replayed to catch a subscriber up; a longer gap gets a snapshot, which
/// is cheaper to send and bounds the memory one subscriber can ask for.
pub const MAX_REPLAY: u64 = 256;

/// Item bytes per `SnapshotItems` chunk, so each chunk fits in one wire message.
const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;
/// Items read per store call while building a snapshot.
const SNAPSHOT_PAGE: usize = 1000;
/// Times a collection snapshot is re-read when a write lands while it is being read.
const SNAPSHOT_ATTEMPTS: usize = 8;

/// Decides how a subscriber that has seen up to `since` catches up with the object.
pub async fn catch_up(
    store: &dyn Store,
    hub: &Hub,
    service_sid: &str,
    object_sid: &str,
    since: Option<u64>,
    window: u32,
    now_ms: u64,
) -> Result<CatchUp, StoreError> {
    let Some(record) = live(store, service_sid, object_sid, now_ms).await? else {
        return Ok(CatchUp::Gone);
    };
    if let Some(since) = since {
        let gap = record.revision.checked_sub(since);
        if gap.is_some_and(|g| g <= MAX_REPLAY) && record.kind != ObjectKind::Stream {
            if let Some(events) = store.log_range(object_sid, since, record.revision).await? {
                return Ok(CatchUp::Replay {
                    events,
                    revision: record.revision,
                });
            }
        }
    }
    snapshot(store, hub, service_sid, record, window, now_ms).await
}

async fn live(
    store: &dyn Store,
    service_sid: &str,
    object_sid: &str,
    now_ms: u64,
) -> Result<Option<ObjectRecord>, StoreError> {
    Ok(store
        .object(service_sid, object_sid)
        .await?
        .filter(|r| !r.is_expired(now_ms)))
}

fn snapshot_event(record: &ObjectRecord, kind: EventKind) -> Event {
    Event {
        object_sid: record.sid.clone(),
        revision: record.revision,
        origin: 0,
        actor: crate::objects::SYSTEM_ACTOR.into(),
        kind,
    }
}

async fn snapshot(
    store: &dyn Store,
    hub: &Hub,
    service_sid: &str,
    mut record: ObjectRecord,
    window: u32,
    now_ms: u64,
) -> Result<CatchUp, StoreError> {
    let info = object_info(&record);
    let state = match record.kind {
        ObjectKind::Document => ObjectState::Document(document::info(&record)),
        ObjectKind::Stream => ObjectState::Stream {
            sequence: hub.sequence(&record.sid),
            info,
        },
        ObjectKind::List | ObjectKind::Map => {
            // Items are read in pages, not atomically with the record: read until the
            // record's revision is the same before and after, so the items match it.
            let mut attempt = 0;
            loop {
                attempt += 1;
                let (window_start, items) = read_items(store, &record, window, now_ms).await?;
                let Some(again) = live(store, service_sid, &record.sid, now_ms).await? else {
                    return Ok(CatchUp::Gone);
                };
                if again.revision == record.revision || attempt >= SNAPSHOT_ATTEMPTS {
                    // After the last attempt the snapshot may hold items newer than its
                    // revision; the events that follow re-apply them, which replicas
                    // absorb (applying an item event is idempotent).
                    return Ok(collection_snapshot(&again, window_start, items));
                }
                record = again;
            }
        }
    };
    let revision = record.revision;
    Ok(CatchUp::Snapshot {
        events: vec![snapshot_event(&record, EventKind::Snapshot { state })],
        revision,
    })
}

/// A list's newest `window` items (and the index the window starts at), or all of a map's.
async fn read_items(
    store: &dyn Store,
    record: &ObjectRecord,
    window: u32,
    now_ms: u64,
) -> Result<(u64, Vec<ItemInfo>), StoreError> {
    let mut items = Vec::new();
    if record.kind == ObjectKind::List {
        let newest = store
            .items(&record.sid, None, Order::Desc, window as usize)
            .await?;
        let window_start = if newest.len() < window as usize {
            0
        } else {
            match newest.last() {
                Some((ItemKey::Index(i), _)) => *i,
                _ => 0,
            }
        };
        for (k, r) in newest.iter().rev() {
            if !r.is_expired(now_ms) {
                items.push(item_info(k, r));
            }
        }
        return Ok((window_start, items));
    }
    let mut from: Option<ItemKey> = None;
    loop {
        let page = store
            .items(&record.sid, from.as_ref(), Order::Asc, SNAPSHOT_PAGE + 1)
            .await?;
        let more = page.len() > SNAPSHOT_PAGE;
        for (k, r) in page.iter().take(SNAPSHOT_PAGE) {
            if !r.is_expired(now_ms) {
                items.push(item_info(k, r));
            }
        }
        if !more {
            return Ok((0, items));
        }
        from = page.into_iter().nth(SNAPSHOT_PAGE).map(|(k, _)| k);
    }
}

fn collection_snapshot(record: &ObjectRecord, window_start: u64, items: Vec<ItemInfo>) -> CatchUp {
    let info = object_info(record);
    let state = if record.kind == ObjectKind::List {
        ObjectState::List { info, window_start }
    } else {
        ObjectState::Map { info }
    };
    let mut events = vec![snapshot_event(record, EventKind::Snapshot { state })];
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for item in items {
        bytes += item.data.len() + 64;
        chunk.push(item);
        if bytes >= SNAPSHOT_CHUNK_BYTES {
            let items = std::mem::take(&mut chunk);
            events.push(snapshot_event(
                record,
                EventKind::SnapshotItems { items, done: false },
            ));
            bytes = 0;
        }
    }
    events.push(snapshot_event(
        record,
        EventKind::SnapshotItems {
            items: chunk,
            done: true,
        },
    ));
    CatchUp::Snapshot {
        events,
        revision: record.revision,
    }
}

/// The event that ends a subscription with an error (no data, no revision to speak of).
pub fn ended_event(object_sid: &str, revision: u64, error: WireError) -> Event {
    Event {
        object_sid: object_sid.to_owned(),
        revision,
        origin: 0,
        actor: crate::objects::SYSTEM_ACTOR.into(),
        kind: EventKind::SubscriptionEnded { error },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_outbox_marks_lagged_instead_of_blocking() {
        let hub = Hub::new(|e| Bytes::from(format!("{e:?}")));
        let outbox = Outbox::new();
        hub.subscribe("ET1", Subscriber::new(1, "IS1", None, &outbox));
        hub.subscribe("ET1", Subscriber::new(2, "IS1", None, &outbox));
        let body = Bytes::from_static(b"event");
        for rev in 0..(OUTBOX_DEPTH as u64) {
            hub.publish("ET1", rev, &body, false);
        }
        // The queue holds OUTBOX_DEPTH deliveries; both subscriptions overflowed.
        assert_eq!(outbox.queued(), OUTBOX_DEPTH);
        outbox.ready().await;
        let mut queued = Queued::default();
        outbox.take(&mut queued);
        queued.lagged.sort();
        assert_eq!(queued.lagged, vec![1, 2]);
        assert_eq!(queued.events.len(), OUTBOX_DEPTH);
        let first = &queued.events[0];
        assert_eq!((first.sub_id, first.event.revision), (1, Some(0)));
        // The same bytes, not a copy.
        assert_eq!(first.event.body.as_ptr(), body.as_ptr());
        // Taken means gone: the next batch starts empty.
        let mut next = Queued::default();
        outbox.take(&mut next);
        assert!(next.is_empty() && outbox.queued() == 0);
    }

    #[tokio::test]
    async fn a_poisoned_hub_still_registers_and_delivers() {
        let hub = Arc::new(Hub::new(|e| Bytes::from(format!("{e:?}"))));
        let poisoner = hub.clone();
        let panicked = std::thread::spawn(move || {
            let _held = poisoner.objects.write();
            let _seqs = poisoner.sequences.lock();
            panic!("a panic while the hub is locked");
        })
        .join();
        assert!(panicked.is_err() && hub.objects.is_poisoned());
        let outbox = Outbox::new();
        hub.subscribe("ET1", Subscriber::new(1, "IS1", None, &outbox));
        assert_eq!(hub.subscriber_count("ET1"), 1, "not dropped without a word");
        hub.publish("ET1", 1, &Bytes::from_static(b"e"), false);
        outbox.ready().await;
        let mut queued = Queued::default();
        outbox.take(&mut queued);
        let revisions: Vec<_> = queued.events.iter().map(|d| d.event.revision).collect();
        assert_eq!(revisions, vec![Some(1)]);
        assert_eq!(hub.publish_message("TO1", |_| Bytes::from_static(b"m")), 1);
    }

    #[test]
    fn is_subscribed_follows_every_way_a_subscription_ends() {
        let hub = Hub::new(|e| Bytes::from(format!("{e:?}")));
        let outbox = Outbox::new();
        let [a, b, c, d] = [1, 2, 3, 4].map(|id| Subscriber::new(id, "IS1", None, &outbox));
        hub.subscribe("ET1", a.clone());
        hub.subscribe("ET1", b.clone());
        hub.subscribe("ET2", c.clone());
        hub.subscribe("ET3", d.clone());
        assert!([&a, &b, &c, &d].iter().all(|s| hub.is_subscribed(s.token)));
        assert_eq!(hub.subscription_count(), 4);

        hub.unsubscribe("ET1", a.sub_id, &outbox);
        assert!(!hub.is_subscribed(a.token) && hub.is_subscribed(b.token));
        hub.end("ET2", &c, &ended_event("ET2", 0, WireError::not_found("x")));
        assert!(!hub.is_subscribed(c.token));
        hub.publish("ET1", 9, &Bytes::from_static(b"gone"), true);
        assert!(!hub.is_subscribed(b.token), "the object's removal ends it");
        assert!(
            hub.is_subscribed(d.token),
            "other objects' subscriptions stay"
        );
        assert_eq!(hub.subscription_count(), 1);
        assert_eq!(hub.subscriber_count("ET1"), 0);
    }

    #[tokio::test]
    async fn removal_ends_all_subscriptions() {
        let hub = Hub::new(|e| Bytes::from(format!("{e:?}")));
        let outbox = Outbox::new();
        hub.subscribe("ET1", Subscriber::new(1, "IS1", None, &outbox));
        hub.publish("ET1", 5, &Bytes::from_static(b"gone"), true);
        assert_eq!(hub.subscriber_count("ET1"), 0);
        let mut queued = Queued::default();
        outbox.take(&mut queued);
        assert!(queued.events.len() == 1 && queued.events[0].event.ends);
        queued.events.clear();
        hub.publish("ET1", 6, &Bytes::from_static(b"x"), false);
        outbox.take(&mut queued);
        assert!(queued.is_empty(), "an ended subscription gets nothing more");
    }
}
