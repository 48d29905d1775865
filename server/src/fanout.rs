//! Subscriptions and the encode-once event hub.
//!
//! The commit task publishes each event once, as shared `Bytes`; the hub hands a cheap
//! clone to the outbox of every connection subscribed to the object. Each outbox is a
//! bounded queue: a subscriber that falls behind never slows the writer or anyone else.
//! When its queue is full the event is dropped for it and the subscription is marked
//! lagged; the connection's event writer then catches it up from the change log, or
//! with a fresh snapshot, so it never silently misses a change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use syncline_proto::{Event, EventKind, ObjectState, WireError};
use tokio::sync::{mpsc, Notify};

use crate::objects::document;
use crate::store::{LogEntry, Store, StoreError};

/// Events queued per connection before its subscriptions are resynced instead.
pub const OUTBOX_DEPTH: usize = 1024;

/// An event on its way to one subscription.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub sub_id: u64,
    pub revision: u64,
    pub body: Bytes,
    /// The object was removed: this is the subscription's last event.
    pub ends: bool,
}

/// Requests from the connection's session to its event writer, in order.
#[derive(Debug)]
pub enum Control {
    /// Start delivering: catch up from `since` (or send a snapshot), then live events.
    Start {
        sub_id: u64,
        service_sid: String,
        object_sid: String,
        since: Option<u64>,
    },
    Stop {
        sub_id: u64,
    },
}

/// The sending side of one connection's event queue, shared with the hub.
pub struct Outbox {
    events: mpsc::Sender<Delivery>,
    control: mpsc::UnboundedSender<Control>,
    lagged: Mutex<Vec<u64>>,
    wake: Notify,
}

/// The receiving side, owned by the connection's event writer.
pub struct OutboxReceiver {
    pub events: mpsc::Receiver<Delivery>,
    pub control: mpsc::UnboundedReceiver<Control>,
    pub outbox: Arc<Outbox>,
}

impl Outbox {
    pub fn new() -> (Arc<Outbox>, OutboxReceiver) {
        let (etx, erx) = mpsc::channel(OUTBOX_DEPTH);
        let (ctx, crx) = mpsc::unbounded_channel();
        let outbox = Arc::new(Outbox {
            events: etx,
            control: ctx,
            lagged: Mutex::new(Vec::new()),
            wake: Notify::new(),
        });
        let rx = OutboxReceiver {
            events: erx,
            control: crx,
            outbox: outbox.clone(),
        };
        (outbox, rx)
    }

    /// Control messages are few (one per subscribe request, which is rate limited), so
    /// their channel is unbounded; a closed writer means the connection is going away.
    pub fn control(&self, c: Control) {
        let _ = self.control.send(c);
    }

    fn deliver(&self, d: Delivery) {
        match self.events.try_send(d) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(d)) => {
                if let Ok(mut lagged) = self.lagged.lock() {
                    if !lagged.contains(&d.sub_id) {
                        lagged.push(d.sub_id);
                    }
                }
                self.wake.notify_one();
            }
        }
    }

    /// Subscriptions that lost events since the last call.
    pub fn take_lagged(&self) -> Vec<u64> {
        self.lagged
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }

    pub async fn lag_notified(&self) {
        self.wake.notified().await
    }
}

#[derive(Clone)]
struct Subscriber {
    sub_id: u64,
    outbox: Arc<Outbox>,
}

/// Object sid -> its subscribers, across all connections.
#[derive(Default)]
pub struct Hub {
    objects: RwLock<HashMap<String, Vec<Subscriber>>>,
}

impl Hub {
    pub fn subscribe(&self, object_sid: &str, sub_id: u64, outbox: &Arc<Outbox>) {
        if let Ok(mut objects) = self.objects.write() {
            objects
                .entry(object_sid.to_owned())
                .or_default()
                .push(Subscriber {
                    sub_id,
                    outbox: outbox.clone(),
                });
        }
    }

    pub fn unsubscribe(&self, object_sid: &str, sub_id: u64, outbox: &Arc<Outbox>) {
        if let Ok(mut objects) = self.objects.write() {
            if let Some(subs) = objects.get_mut(object_sid) {
                subs.retain(|s| !(s.sub_id == sub_id && Arc::ptr_eq(&s.outbox, outbox)));
                if subs.is_empty() {
                    objects.remove(object_sid);
                }
            }
        }
    }

    /// Hands the encoded event to every subscriber of the object. `ends` drops them all
    /// afterwards (the object is gone).
    pub fn publish(&self, object_sid: &str, revision: u64, body: &Bytes, ends: bool) {
        let subs = if ends {
            self.objects
                .write()
                .ok()
                .and_then(|mut o| o.remove(object_sid))
        } else {
            self.objects
                .read()
                .ok()
                .and_then(|o| o.get(object_sid).cloned())
        };
        for s in subs.into_iter().flatten() {
            s.outbox.deliver(Delivery {
                sub_id: s.sub_id,
                revision,
                body: body.clone(),
                ends,
            });
        }
    }

    pub fn subscriber_count(&self, object_sid: &str) -> usize {
        self.objects
            .read()
            .map(|o| o.get(object_sid).map_or(0, Vec::len))
            .unwrap_or(0)
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
    /// The whole current state: the caller had nothing, or what it missed is no longer kept.
    Snapshot { event: Event, revision: u64 },
    /// The object does not exist (any more).
    Gone,
}

/// Decides how a subscriber that has seen up to `since` catches up with the object.
pub async fn catch_up(
    store: &dyn Store,
    service_sid: &str,
    object_sid: &str,
    since: Option<u64>,
    now_ms: u64,
) -> Result<CatchUp, StoreError> {
    let Some(record) = store.object(service_sid, object_sid).await? else {
        return Ok(CatchUp::Gone);
    };
    if record.is_expired(now_ms) {
        return Ok(CatchUp::Gone);
    }
    if let Some(since) = since {
        if since <= record.revision {
            if let Some(events) = store.log_range(object_sid, since, record.revision).await? {
                return Ok(CatchUp::Replay {
                    events,
                    revision: record.revision,
                });
            }
        }
    }
    let event = Event {
        object_sid: record.sid.clone(),
        revision: record.revision,
        origin: 0,
        actor: crate::objects::SYSTEM_ACTOR.into(),
        kind: EventKind::Snapshot {
            state: ObjectState::Document(document::info(&record)),
        },
    };
    Ok(CatchUp::Snapshot {
        event,
        revision: record.revision,
    })
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
        let hub = Hub::default();
        let (outbox, mut rx) = Outbox::new();
        hub.subscribe("ET1", 1, &outbox);
        hub.subscribe("ET1", 2, &outbox);
        let body = Bytes::from_static(b"event");
        for rev in 0..(OUTBOX_DEPTH as u64) {
            hub.publish("ET1", rev, &body, false);
        }
        // The queue holds OUTBOX_DEPTH deliveries; both subscriptions overflowed.
        let mut lagged = outbox.take_lagged();
        lagged.sort();
        assert_eq!(lagged, vec![1, 2]);
        assert!(outbox.take_lagged().is_empty());
        let first = rx.events.recv().await.unwrap();
        assert_eq!((first.sub_id, first.revision), (1, 0));
        // The same bytes, not a copy.
        assert_eq!(first.body.as_ptr(), body.as_ptr());
    }

    #[tokio::test]
    async fn removal_ends_all_subscriptions() {
        let hub = Hub::default();
        let (outbox, mut rx) = Outbox::new();
        hub.subscribe("ET1", 1, &outbox);
        hub.publish("ET1", 5, &Bytes::from_static(b"gone"), true);
        assert_eq!(hub.subscriber_count("ET1"), 0);
        let d = rx.events.recv().await.unwrap();
        assert!(d.ends);
        hub.publish("ET1", 6, &Bytes::from_static(b"x"), false);
        assert!(rx.events.try_recv().is_err());
    }
}
