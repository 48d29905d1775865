//! The one watch path, for every edge: a session's watch decides what each of its
//! subscriptions receives next. It starts subscriptions (catch-up from the change log or
//! a snapshot), drops events a subscription already has (by revision), resyncs
//! subscriptions that lagged, ends the session when the core says so (key revoked,
//! service deleted, token expired), and hands everything pending to the edge's sink in
//! one go. Edges only render: QUIC writes the encoded events as frames on
//! its event stream, SSE turns them into `text/event-stream` messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use syncline_proto::{ErrorCode, WireError};
use tracing::{debug, error};

use crate::fanout::{catch_up, ended_event, CatchUp, Control, Delivery, Queued, StartSubscription};
use crate::fanout::{Ending, Published};
use crate::session::Session;

/// Where a session's watch delivers: the edge's rendering of events. The watch pushes
/// what a wake-up produced, then flushes once; the sink keeps the only buffer (a
/// second one per session, in the watch, cost every idle connection its capacity).
#[async_trait::async_trait]
pub trait WatchSink: Send {
    /// Queues one event for subscription `sub_id`, as the server's encoder made it
    /// (once, shared with every other subscriber), for the next `flush`.
    fn push(&mut self, sub_id: u64, event: Bytes);
    /// Queues a live event from the hub, the same `Published` for every subscriber of
    /// it: an edge with an encoding of its own renders it once, into
    /// [`Published::rendered`], instead of once per subscriber.
    fn push_live(&mut self, sub_id: u64, event: &Published) {
        self.push(sub_id, event.body.clone());
    }
    /// Writes what was pushed, in order. `Err`: the peer is gone, and the watch stops.
    async fn flush(&mut self) -> Result<(), ()>;
    /// Ends the session's transport after what was written: the watch is over.
    async fn close(&mut self, ending: Ending);
    /// How often the watch calls `idle` (`None`, the default: never). A transport that
    /// notices dead peers itself (QUIC) needs no timer per session.
    fn idle_every(&self) -> Option<Duration> {
        None
    }
    /// Called every `idle_every` (SSE's keep-alive comment); `Err`: the peer is gone.
    async fn idle(&mut self) -> Result<(), ()> {
        Ok(())
    }
}

/// Resolves at each tick of `every`, or never.
async fn tick(every: &mut Option<tokio::time::Interval>) {
    match every {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

struct Subscription {
    token: u64,
    service_sid: String,
    object_sid: String,
    window: u32,
    /// Revision the subscriber is known to have; later events only.
    delivered: u64,
}

struct Writer<'a> {
    session: &'a Session,
    subs: HashMap<u64, Subscription>,
    sink: &'a mut dyn WatchSink,
    /// Something was pushed since the last flush.
    pushed: bool,
}

impl Writer<'_> {
    fn push(&mut self, sub_id: u64, event: Bytes) {
        self.sink.push(sub_id, event);
        self.pushed = true;
    }

    /// Brings a subscription up to date from `since` (or from nothing).
    async fn start(&mut self, start: StartSubscription) {
        let StartSubscription {
            sub_id,
            token,
            service_sid,
            object_sid,
            since,
            window,
        } = start;
        let shared = self.session.shared();
        // Ended by an access change before it started (its end notice had nowhere to
        // go): say so instead of sending state the subscriber may no longer read.
        if !shared.hub.is_subscribed(token) {
            self.end(
                sub_id,
                &object_sid,
                WireError::new(ErrorCode::Forbidden, "forbidden"),
            );
            return;
        }
        // Boxed: inline, the store reads' state would be part of the watch's task for
        // its whole life (its size is paid by every connection).
        let caught = Box::pin(catch_up(
            &*shared.store,
            &shared.hub,
            &service_sid,
            &object_sid,
            since,
            window,
            crate::now_ms(),
        ))
        .await;
        let delivered = match caught {
            Ok(CatchUp::Replay { events, revision }) => {
                for e in events {
                    self.push(sub_id, e.event);
                }
                revision
            }
            Ok(CatchUp::Snapshot { events, revision }) => {
                for event in &events {
                    let encoded = shared.hub.encode(event);
                    self.push(sub_id, encoded);
                }
                revision
            }
            Ok(CatchUp::Gone) => {
                self.end(sub_id, &object_sid, WireError::not_found("object"));
                return;
            }
            Err(e) => {
                error!(error = %e, sub_id, "catch-up read failed; ending subscription");
                self.end(sub_id, &object_sid, e.client_error("storage read failed"));
                return;
            }
        };
        self.subs.insert(
            sub_id,
            Subscription {
                token,
                service_sid,
                object_sid,
                window,
                delivered,
            },
        );
    }

    /// Queues a delivery from the hub, unless its subscription already has it (or has
    /// not started: it will start from a state that includes it).
    fn accept(&mut self, d: Delivery) {
        let Some(s) = self.subs.get_mut(&d.sub_id).filter(|s| s.token == d.token) else {
            return;
        };
        if let Some(revision) = d.event.revision {
            if revision <= s.delivered {
                return;
            }
            s.delivered = revision;
        }
        if d.event.ends {
            self.subs.remove(&d.sub_id);
            self.session.forget_subscription(d.sub_id);
        }
        self.sink.push_live(d.sub_id, &d.event);
        self.pushed = true;
    }

    fn end(&mut self, sub_id: u64, object_sid: &str, error: WireError) {
        self.subs.remove(&sub_id);
        self.session.forget_subscription(sub_id);
        let event = ended_event(object_sid, 0, error);
        let encoded = self.session.shared().hub.encode(&event);
        self.push(sub_id, encoded);
    }

    async fn resync(&mut self, sub_id: u64) {
        let Some(s) = self.subs.remove(&sub_id) else {
            return;
        };
        debug!(
            sub_id,
            from = s.delivered,
            "resyncing a lagged subscription"
        );
        self.session
            .shared()
            .metrics
            .resyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.start(StartSubscription {
            sub_id,
            token: s.token,
            service_sid: s.service_sid,
            object_sid: s.object_sid,
            since: Some(s.delivered),
            window: s.window,
        })
        .await;
    }
}

/// Runs the session's watch until the core ends the session (then `sink.close`) or the
/// sink's peer is gone.
pub async fn run(session: Arc<Session>, sink: &mut dyn WatchSink) {
    let outbox = session.outbox.clone();
    let mut idle = sink
        .idle_every()
        .map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
    let mut writer = Writer {
        session: &session,
        subs: HashMap::new(),
        sink,
        pushed: false,
    };
    let mut close: Option<Ending> = None;
    let mut queued = Queued::default();
    loop {
        tokio::select! {
            _ = outbox.ready() => {}
            _ = tick(&mut idle) => {
                if writer.sink.idle().await.is_err() {
                    return;
                }
                continue;
            }
        }
        outbox.take(&mut queued);
        for control in queued.control.drain(..) {
            match control {
                Control::Start(start) => writer.start(*start).await,
                Control::Stop { sub_id } => {
                    writer.subs.remove(&sub_id);
                }
                // Goes after this batch: what the hub queued before the end was asked
                // for goes out first, and subscriptions that overflowed the queue are
                // brought up to date (or told they ended) rather than left short.
                Control::Close(ending) => close = Some(ending),
            }
        }
        for sub_id in queued.lagged.drain(..) {
            writer.resync(sub_id).await;
        }
        for d in queued.events.drain(..) {
            writer.accept(d);
        }
        if writer.pushed {
            writer.pushed = false;
            if writer.sink.flush().await.is_err() {
                debug!("watch sink closed");
                // The sink may be done (SSE after its subscription's last event) with
                // the transport still up: an end asked for in this batch still goes.
                if let Some(ending) = close {
                    writer.sink.close(ending).await;
                }
                return;
            }
        }
        if let Some(ending) = close {
            writer.sink.close(ending).await;
            return;
        }
    }
}
